//! Who may do what: apps (tenants), their API keys, console users, and the
//! roles keys and users carry.
//!
//! A key is stored only as a hash; the caller a key names is a `Caller`, and
//! every route states the `Need` it requires of one.

mod app;
mod caller;
mod key;
mod role;
mod user;

#[cfg(feature = "openapi")]
pub use app::Cidr;
pub use app::{App, AppCommand, AppError, AppEvent, AppSpec, SealedSecret, MAX_NETWORKS};
pub use caller::Caller;
pub use key::{ApiKey, KeyCommand, KeyError, KeyEvent, KeyHash, KeyIssue, KEY_PREFIX};
pub use role::{Need, Role};
pub use user::{check_user_role, normalized_username, PasswordHash, User, UserCommand, UserError, UserEvent};
