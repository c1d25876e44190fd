use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use crate::config::{reference, Overrides};

/// Bida (必达): a callback center. It takes messages from its HTTP API, delivers
/// each one to the endpoint it is meant for, retries with backoff until the
/// response says success, dead-letters what cannot be delivered, and lets an
/// operator replay it.
#[derive(Debug, Parser)]
#[command(name = "bida", version, after_long_help = reference())]
pub struct Cli {
    /// TOML configuration file (see CONFIGURATION below).
    #[arg(long, short, global = true, env = "BIDA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: the HTTP API, delivery, the durable scheduler and projections.
    #[command(after_long_help = reference())]
    Serve(ServeArgs),
    /// Create the database if missing and apply migrations, then exit.
    Migrate(DatabaseArgs),
    /// Print the effective configuration as TOML.
    Config(ServeArgs),
    /// Copy this store's history (every event, and each task's schedule) into
    /// another, new store: the embedded store into PostgreSQL when one node
    /// is no longer enough. Stop the node first; start it on the target after.
    Export {
        /// The target: a PostgreSQL URL (postgres://...) or an embedded store's directory; it must hold no events yet
        #[arg(long, value_name = "URL|DIR")]
        to: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Read models.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Console users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Ask a running node whether it is ready (exit 0) or not (exit 1): the
    /// container image's health check, which has no curl.
    Health {
        /// The node's readiness probe
        #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
        url: String,
        /// Seconds to wait for the answer
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Make a console user; its password is read from standard input (one
    /// line), so it stays out of the shell's history and the process list.
    Create {
        #[arg(long)]
        username: String,
        /// admin, operator or viewer
        #[arg(long, default_value = "viewer")]
        role: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Set a console user's password (read from standard input); its sessions end.
    Password {
        #[arg(long)]
        username: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key and print it once (Bida keeps only its hash).
    Create {
        /// admin, operator or viewer (producer keys belong to an app: POST /v1/apps/{id}/keys)
        #[arg(long, default_value = "admin")]
        role: String,
        /// What the key is for
        #[arg(long, default_value = "command-line")]
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTP API [env: BIDA_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address of the gRPC interface; "" for none [env: BIDA_GRPC_LISTEN] [default: 127.0.0.1:50051]
    #[arg(long, value_name = "ADDR")]
    pub grpc_listen: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// This node's name [env: BIDA_NODE_NAME] [default: the host name]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, for production and several nodes [env: BIDA_DATABASE_URL] [default: none, the embedded store]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The embedded store's directory, when no database URL is given [env: BIDA_DATA_DIR] [default: bida-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Replay the event stream from position 0 into fresh read models.
    Rebuild {
        /// Which projection (all when omitted): task_list
        name: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Show how far each projection lags behind the event stream.
    Status {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

impl ServeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            grpc_listen: self.grpc_listen.clone(),
            database_url: self.database.database_url.clone(),
            data_dir: self.database.data_dir.clone(),
            node_name: self.node_name.clone(),
        }
    }
}

impl DatabaseArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            database_url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
            ..Overrides::default()
        }
    }
}
