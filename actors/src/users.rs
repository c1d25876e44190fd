//! Console users and their sessions: create, change, delete, log in and out.
//!
//! Passwords are hashed with Argon2id (the `argon2` crate's defaults: 19 MiB,
//! two passes), on a blocking thread. A session is a random cookie whose
//! SHA-256 the store keeps with the user's role and a CSRF token; changing a
//! user's password or role, or deleting it, ends its sessions.

use argon2::password_hash::{rand_core::OsRng, PasswordHash as Phc, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::Engine;
use bida_domain::access::{
    check_user_role, normalized_username, KeyHash, PasswordHash, Role, User, UserCommand, UserError,
};
use bida_domain::ValidationErrors;
use bida_store::Store;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::brokers::{admin_error, AdminError};
use crate::commands::Commands;

/// Shortest password a user may have.
pub const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 1024;
/// The user a fresh installation gets.
const FIRST_ADMIN: &str = "admin";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// How long a login lasts.
    pub session_hours: u32,
    /// Mark the session cookie `Secure` (sent over HTTPS only). Turn it on
    /// when the console is served through TLS.
    pub secure_cookies: bool,
    /// Logins one client address may try per minute.
    pub login_attempts_per_minute: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            session_hours: 12,
            secure_cookies: false,
            login_attempts_per_minute: 10,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UserView {
    pub username: String,
    pub role: Role,
    pub created_at: Option<DateTime<Utc>>,
}

/// A logged-in browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub username: String,
    pub role: Role,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// What a login hands the browser: the cookie's value, once.
#[derive(Clone, Debug)]
pub struct Login {
    pub token: String,
    pub session: Session,
}

fn user_error(e: cqrs_es::AggregateError<UserError>) -> AdminError {
    match e {
        cqrs_es::AggregateError::UserError(UserError::Invalid(message)) => {
            AdminError::Invalid(ValidationErrors::single("role", message))
        }
        other => admin_error(other, |e| matches!(e, UserError::NotFound)),
    }
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn check_password(password: &str) -> Result<(), AdminError> {
    let length = password.chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        Ok(())
    } else {
        Err(AdminError::Invalid(ValidationErrors::single(
            "password",
            format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        )))
    }
}

async fn hash_password(password: &str) -> Result<PasswordHash, AdminError> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| PasswordHash(hash.to_string()))
            .map_err(|e| AdminError::Internal(format!("cannot hash the password: {e}")))
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))?
}

/// Whether `password` is the one `hash` was made of; without a hash (no such
/// user) a hash is still checked, so the answer takes as long either way.
async fn password_matches(password: &str, hash: Option<&PasswordHash>) -> bool {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let known = hash.map(|h| h.0.clone());
    let password = password.to_string();
    // Hashing, the decoy's included, is slow on purpose: off the async workers.
    tokio::task::spawn_blocking(move || {
        let hash = known.as_deref().unwrap_or_else(|| {
            DECOY.get_or_init(|| {
                let salt = SaltString::generate(&mut OsRng);
                Argon2::default()
                    .hash_password(b"no such user", &salt)
                    .map(|h| h.to_string())
                    .unwrap_or_default()
            })
        });
        let matches =
            Phc::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok());
        known.is_some() && matches
    })
    .await
    .unwrap_or(false)
}

#[derive(Clone)]
pub struct UserService {
    store: Store,
    users: Commands<User>,
    session_length: TimeDelta,
}

impl UserService {
    pub fn new(store: Store, config: &ConsoleConfig) -> Self {
        Self {
            users: Commands::new(&store),
            store,
            session_length: TimeDelta::hours(i64::from(config.session_hours.max(1))),
        }
    }

    pub async fn create(&self, username: &str, role: Role, password: &str) -> Result<UserView, AdminError> {
        let username = normalized_username(username).map_err(AdminError::Invalid)?;
        check_user_role(role).map_err(AdminError::Invalid)?;
        check_password(password)?;
        let password = hash_password(password).await?;
        self.users
            .execute(
                &username,
                UserCommand::Create {
                    role,
                    password,
                    at: Utc::now(),
                },
            )
            .await
            .map_err(user_error)?;
        self.user(&username).await
    }

    pub async fn user(&self, username: &str) -> Result<UserView, AdminError> {
        let username = normalized_username(username).map_err(AdminError::Invalid)?;
        match self.store.load_aggregate::<User>(&username).await? {
            Some((user, _)) => view(&username, &user),
            None => None,
        }
        .ok_or_else(|| AdminError::NotFound(format!("no user {username}")))
    }

    /// Every user, by username.
    pub async fn users(&self) -> Result<Vec<UserView>, AdminError> {
        Ok(self
            .store
            .load_all::<User>()
            .await?
            .iter()
            .filter_map(|(name, user, _)| view(name, user))
            .collect())
    }

    pub async fn change_password(&self, username: &str, password: &str) -> Result<UserView, AdminError> {
        check_password(password)?;
        let password = hash_password(password).await?;
        self.change(
            username,
            UserCommand::ChangePassword {
                password,
                at: Utc::now(),
            },
        )
        .await
    }

    pub async fn change_role(&self, username: &str, role: Role) -> Result<UserView, AdminError> {
        self.change(username, UserCommand::ChangeRole { role, at: Utc::now() })
            .await
    }

    pub async fn delete(&self, username: &str) -> Result<(), AdminError> {
        let username = normalized_username(username).map_err(AdminError::Invalid)?;
        self.users
            .execute(&username, UserCommand::Delete { at: Utc::now() })
            .await
            .map_err(user_error)?;
        self.store.end_sessions_of(&username).await?;
        Ok(())
    }

    async fn change(&self, username: &str, command: UserCommand) -> Result<UserView, AdminError> {
        let username = normalized_username(username).map_err(AdminError::Invalid)?;
        self.users.execute(&username, command).await.map_err(user_error)?;
        // Whoever was logged in as this user logs in again, with the change.
        self.store.end_sessions_of(&username).await?;
        self.user(&username).await
    }

    /// On a first start with no users, an `admin` with a generated password,
    /// printed once to the log.
    pub async fn bootstrap(&self) -> Result<(), AdminError> {
        if !self.users().await?.is_empty() {
            return Ok(());
        }
        let password = random_token();
        match self.create(FIRST_ADMIN, Role::Admin, &password).await {
            Ok(_) => {
                tracing::warn!(
                    "created the console's first user; its password is shown only now, keep it: \
                     username `{FIRST_ADMIN}`, password `{password}` (log in at / ; make others with \
                     `bida users create` or on the console's Users page)"
                );
                Ok(())
            }
            // Another node made it first, or someone made it meanwhile.
            Err(AdminError::Rejected(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A new session for a user whose password is right; `None` otherwise
    /// (no such user or a wrong password: the caller cannot tell which).
    pub async fn log_in(
        &self,
        username: &str,
        password: &str,
        client_ip: Option<&str>,
    ) -> Result<Option<Login>, AdminError> {
        let Ok(username) = normalized_username(username) else {
            password_matches(password, None).await;
            return Ok(None);
        };
        let user = self
            .store
            .load_aggregate::<User>(&username)
            .await?
            .map(|(user, _)| user);
        let (hash, role) = match &user {
            Some(user) => (user.password(), user.role()),
            None => (None, None),
        };
        if !password_matches(password, hash).await {
            return Ok(None);
        }
        let Some(role) = role else { return Ok(None) };
        let token = random_token();
        let session = Session {
            username: username.clone(),
            role,
            csrf: random_token(),
            expires_at: Utc::now() + self.session_length,
        };
        self.store
            .start_session(
                KeyHash::of(&token).as_str(),
                &username,
                role.as_str(),
                &session.csrf,
                session.expires_at,
                client_ip,
            )
            .await?;
        Ok(Some(Login { token, session }))
    }

    /// The session a cookie names, unless it ended or expired.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, AdminError> {
        let Some(row) = self.store.session(KeyHash::of(token).as_str()).await? else {
            return Ok(None);
        };
        Ok(Role::parse(&row.role).map(|role| Session {
            username: row.username,
            role,
            csrf: row.csrf,
            expires_at: row.expires_at,
        }))
    }

    pub async fn log_out(&self, token: &str) -> Result<(), AdminError> {
        self.store.end_session(KeyHash::of(token).as_str()).await?;
        Ok(())
    }
}

fn view(username: &str, user: &User) -> Option<UserView> {
    Some(UserView {
        username: username.to_string(),
        role: user.role()?,
        created_at: user.created_at(),
    })
}
