//! Console users: people who log in with a username and a password. A user's
//! id is its username (lower case), so the event store itself keeps usernames
//! unique and a login finds its user without an index.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use std::fmt;

use super::Role;
use crate::ValidationErrors;

const MAX_USERNAME: usize = 64;

/// A password as kept: an Argon2id hash in PHC format, never the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(pub String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(…)")
    }
}

/// A username as the console takes it: letters, digits, `.`, `_` and `-`,
/// 1 to 64 characters, starting with a letter or digit; kept in lower case.
pub fn normalized_username(raw: &str) -> Result<String, ValidationErrors> {
    let name = raw.trim().to_ascii_lowercase();
    let well_formed = !name.is_empty()
        && name.len() <= MAX_USERNAME
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if well_formed {
        Ok(name)
    } else {
        Err(ValidationErrors::single(
            "username",
            format!("must be 1 to {MAX_USERNAME} letters, digits, `.`, `_` or `-`, starting with a letter or digit"),
        ))
    }
}

/// Console users have the API's roles except producer (a producer is a
/// system that submits tasks, not a person at a console).
pub fn check_user_role(role: Role) -> Result<Role, ValidationErrors> {
    if role == Role::Producer {
        Err(ValidationErrors::single(
            "role",
            "a console user is an admin, operator or viewer",
        ))
    } else {
        Ok(role)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum UserCommand {
    Create {
        role: Role,
        password: PasswordHash,
        at: DateTime<Utc>,
    },
    ChangePassword {
        password: PasswordHash,
        at: DateTime<Utc>,
    },
    ChangeRole {
        role: Role,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserCreated {
        role: Role,
        password: PasswordHash,
        at: DateTime<Utc>,
    },
    PasswordChanged {
        password: PasswordHash,
        at: DateTime<Utc>,
    },
    RoleChanged {
        role: Role,
        at: DateTime<Utc>,
    },
    UserDeleted {
        at: DateTime<Utc>,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserCreated { .. } => "UserCreated",
            Self::PasswordChanged { .. } => "PasswordChanged",
            Self::RoleChanged { .. } => "RoleChanged",
            Self::UserDeleted { .. } => "UserDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("a user with this username exists")]
    Exists,
    #[error("no such user")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    role: Option<Role>,
    password: Option<PasswordHash>,
    created_at: Option<DateTime<Utc>>,
    deleted: bool,
}

impl User {
    /// The user's role, unless there is no such user (or it was deleted).
    pub fn role(&self) -> Option<Role> {
        self.role.filter(|_| !self.deleted)
    }

    pub fn password(&self) -> Option<&PasswordHash> {
        self.password.as_ref().filter(|_| !self.deleted)
    }

    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    pub fn is_live(&self) -> bool {
        self.role().is_some()
    }

    pub fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        let live = self.is_live();
        match command {
            // A deleted user's name may be given to someone new.
            UserCommand::Create { role, password, at } if !live => {
                check_user_role(role).map_err(|e| UserError::Invalid(e.to_string()))?;
                Ok(vec![UserEvent::UserCreated { role, password, at }])
            }
            UserCommand::Create { .. } => Err(UserError::Exists),
            _ if !live => Err(UserError::NotFound),
            UserCommand::ChangePassword { password, at } => Ok(vec![UserEvent::PasswordChanged { password, at }]),
            UserCommand::ChangeRole { role, at } => {
                check_user_role(role).map_err(|e| UserError::Invalid(e.to_string()))?;
                Ok(vec![UserEvent::RoleChanged { role, at }])
            }
            UserCommand::Delete { at } => Ok(vec![UserEvent::UserDeleted { at }]),
        }
    }

    pub fn apply_event(&mut self, event: &UserEvent) {
        match event {
            UserEvent::UserCreated { role, password, at } => {
                *self = Self {
                    role: Some(*role),
                    password: Some(password.clone()),
                    created_at: Some(*at),
                    deleted: false,
                };
            }
            UserEvent::PasswordChanged { password, .. } => self.password = Some(password.clone()),
            UserEvent::RoleChanged { role, .. } => self.role = Some(*role),
            UserEvent::UserDeleted { .. } => self.deleted = true,
        }
    }
}

decided_aggregate!(User, "console_user", UserCommand, UserEvent, UserError);

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(text: &str) -> PasswordHash {
        PasswordHash(format!("$argon2id$test${text}"))
    }

    fn apply(events: Vec<UserEvent>) -> User {
        let mut user = User::default();
        events.iter().for_each(|e| user.apply_event(e));
        user
    }

    #[test]
    fn usernames_are_one_spelling_in_lower_case() {
        assert_eq!(normalized_username(" Alice.Ops ").unwrap(), "alice.ops");
        for bad in ["", "-x", "a b", "ä", &"a".repeat(65), "a/b"] {
            assert!(normalized_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_user_lives_from_creation_to_deletion_and_may_come_back() {
        let at = Utc::now();
        let created = User::default()
            .decide(UserCommand::Create {
                role: Role::Operator,
                password: hash("1"),
                at,
            })
            .unwrap();
        let mut user = apply(created);
        assert_eq!(user.role(), Some(Role::Operator));
        let again = UserCommand::Create {
            role: Role::Admin,
            password: hash("2"),
            at,
        };
        assert_eq!(user.decide(again.clone()), Err(UserError::Exists));
        for event in user.decide(UserCommand::Delete { at }).unwrap() {
            user.apply_event(&event);
        }
        assert_eq!(user.role(), None);
        assert!(user.password().is_none(), "a deleted user cannot log in");
        assert_eq!(
            user.decide(UserCommand::ChangePassword {
                password: hash("3"),
                at
            }),
            Err(UserError::NotFound)
        );
        for event in user.decide(again).unwrap() {
            user.apply_event(&event);
        }
        assert_eq!(user.role(), Some(Role::Admin));
        assert_eq!(user.password(), Some(&hash("2")));
    }

    #[test]
    fn producers_are_systems_not_console_users() {
        let create = UserCommand::Create {
            role: Role::Producer,
            password: hash("1"),
            at: Utc::now(),
        };
        assert!(matches!(User::default().decide(create), Err(UserError::Invalid(_))));
    }
}
