//! The `bida` binary: command line, configuration and wiring.

mod cli;
mod config;
mod gauges;
mod serve;

use anyhow::Context;
use bida_projections::{RunnerConfig, TaskList};
use bida_store::{Store, StoreLocation};
use clap::Parser;
use std::process::ExitCode;
use std::time::Instant;

use cli::{Cli, Command, KeysCommand, ProjectionsCommand, UsersCommand};
use config::Config;

/// Delivering a message allocates and frees many small buffers on several
/// threads (JSON, HTTP, SQL arguments); glibc's malloc spent a seventh of
/// Bida's CPU on them in `perf` profiles, mimalloc much less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Health { url, timeout } = &cli.command {
        // Not the node's configuration: only whether it answers.
        return health(url, std::time::Duration::from_secs(*timeout));
    }
    let overrides = match &cli.command {
        Command::Serve(args) | Command::Config(args) => args.overrides(),
        Command::Migrate(db)
        | Command::Export { database: db, .. }
        | Command::Projections(ProjectionsCommand::Rebuild { database: db, .. })
        | Command::Projections(ProjectionsCommand::Status { database: db })
        | Command::Keys(KeysCommand::Create { database: db, .. })
        | Command::Users(UsersCommand::Create { database: db, .. })
        | Command::Users(UsersCommand::Password { database: db, .. }) => db.overrides(),
        Command::Health { .. } => unreachable!("answered above"),
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bida: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("bida: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    init_logging(&config.log);
    let outcome = match cli.command {
        Command::Serve(_) => match bida_telemetry::install(&config.telemetry, &config.node_name) {
            Ok(telemetry) => {
                let outcome = actix_rt::System::new().block_on(serve::serve(config, telemetry.metrics_text()));
                // Flushes pending spans and metrics (blocking: outside the runtime).
                telemetry.shutdown();
                outcome
            }
            Err(e) => Err(anyhow::anyhow!(e)),
        },
        Command::Config(_) => print_config(&config),
        Command::Migrate(_) => run_async(migrate(config)),
        Command::Export { to, .. } => run_async(export(config, to)),
        Command::Projections(ProjectionsCommand::Rebuild { name, .. }) => run_async(rebuild(config, name)),
        Command::Projections(ProjectionsCommand::Status { .. }) => run_async(status(config)),
        Command::Keys(KeysCommand::Create { role, name, .. }) => run_async(create_key(config, role, name)),
        Command::Users(UsersCommand::Create { username, role, .. }) => {
            run_async(create_user(config, username, Some(role)))
        }
        Command::Users(UsersCommand::Password { username, .. }) => run_async(create_user(config, username, None)),
        Command::Health { .. } => unreachable!("answered above"),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bida: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn health(url: &str, timeout: std::time::Duration) -> ExitCode {
    let asked = run_async(async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let response = client.get(url).send().await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "{url}: HTTP {status} {body}");
        println!("{url}: {body}");
        Ok(())
    });
    match asked {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bida: not ready: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: a file, journald or a
    // log shipper gets plain lines (and `NO_COLOR` is honoured).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn run_async(work: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(work)
}

/// The effective configuration, keys and secrets shown as `***`.
fn print_config(config: &Config) -> anyhow::Result<()> {
    let mut shown = config.clone();
    let hide = |value: &mut Option<String>| {
        if value.is_some() {
            *value = Some("***".into());
        }
    };
    hide(&mut shown.secret_key);
    hide(&mut shown.auth.bootstrap_admin_key);
    print!(
        "{}",
        toml::to_string(&shown).context("cannot render the configuration")?
    );
    Ok(())
}

async fn open(config: &Config) -> anyhow::Result<Store> {
    let location = config.store_location();
    Store::open_at(&location, &config.store)
        .await
        .with_context(|| format!("cannot open {location}"))
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = open(&config).await?;
    let ready = store.readiness().await;
    println!("database ready: {}", ready.is_ready());
    Ok(())
}

/// `bida export --to`: this store's events into a new one.
async fn export(config: Config, to: String) -> anyhow::Result<()> {
    let source = open(&config).await?;
    let target_location = if to.starts_with("postgres://") || to.starts_with("postgresql://") {
        StoreLocation::Postgres(to)
    } else {
        StoreLocation::Embedded(to.into())
    };
    let target = Store::open_at(&target_location, &config.store)
        .await
        .with_context(|| format!("cannot open {target_location}"))?;
    let started = std::time::Instant::now();
    let copied = source
        .copy_into(&target, |n| eprintln!("{n} events copied"))
        .await
        .with_context(|| format!("cannot copy into {target_location}"))?;
    println!(
        "{copied} events copied into {target_location} in {:.1} s; start Bida on it (the task list is folded again at start)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn rebuild(config: Config, name: Option<String>) -> anyhow::Result<()> {
    let names: Vec<&str> = match &name {
        Some(name) if bida_projections::ALL.contains(&name.as_str()) => vec![name.as_str()],
        Some(name) => anyhow::bail!(
            "no projection named {name}; known: {}",
            bida_projections::ALL.join(", ")
        ),
        None => bida_projections::ALL.to_vec(),
    };
    let store = open(&config).await?;
    let runner = RunnerConfig {
        page: config.projections.page,
        ..RunnerConfig::default()
    };
    for name in names {
        let started = Instant::now();
        let folded = match name {
            "task_list" => bida_projections::rebuild(&store, &TaskList, &runner).await?,
            other => anyhow::bail!("projection {other} has no rebuild"),
        };
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{name}: folded {folded} events in {seconds:.2} s ({:.0} events/s)",
            folded as f64 / seconds.max(1e-9)
        );
    }
    Ok(())
}

async fn status(config: Config) -> anyhow::Result<()> {
    let store = open(&config).await?;
    for name in bida_projections::ALL {
        let lag = bida_projections::lag(&store, name).await?;
        println!("{name}: {lag} events behind");
    }
    Ok(())
}

/// Makes a console user (`role` given) or sets one's password; the password
/// is the first line of standard input.
async fn create_user(config: Config, username: String, role: Option<String>) -> anyhow::Result<()> {
    use bida_actors::audit::{acting_as, Requester};
    use bida_actors::users::UserService;
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    let store = open(&config).await?;
    let users = UserService::new(store, &config.console);
    let work = async {
        match &role {
            Some(role) => {
                let role = bida_domain::access::Role::parse(role)
                    .with_context(|| format!("no role named {role}; use admin, operator or viewer"))?;
                users.create(&username, role, password).await
            }
            None => users.change_password(&username, password).await,
        }
        .map_err(|e| anyhow::anyhow!(e))
    };
    let user = acting_as(Requester::command_line(), work).await?;
    match role {
        Some(_) => eprintln!("created the console user {} ({})", user.username, user.role),
        None => eprintln!("set the password of {}; its sessions ended", user.username),
    }
    Ok(())
}

async fn create_key(config: Config, role: String, name: String) -> anyhow::Result<()> {
    use bida_actors::access::{AccessService, KeyRequest};
    use bida_actors::audit::{acting_as, Requester};
    let role = bida_domain::access::Role::parse(&role)
        .with_context(|| format!("no role named {role}; use admin, operator or viewer"))?;
    let store = open(&config).await?;
    let access = AccessService::new(store, &config.auth, None);
    let issued = acting_as(
        Requester::command_line(),
        access.issue(
            None,
            KeyRequest {
                name,
                role,
                topics: None,
            },
        ),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    eprintln!(
        "created {} key {} ({}); it is shown only now:",
        issued.view.role, issued.view.id, issued.view.name
    );
    println!("{}", issued.key);
    Ok(())
}
