use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

use super::Role;
use crate::ValidationErrors;

/// Every key starts with this, so a leaked one is recognisable (secret scanners).
pub const KEY_PREFIX: &str = "bida_";
const MAX_NAME: usize = 100;

/// The SHA-256 of a key, hex. Keys are 256 random bits, so a fast hash is
/// enough (a password hash would only slow every request down).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn of(key: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push_str(&format!("{byte:02x}"));
        }
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.0[..self.0.len().min(8)])
    }
}

/// What is recorded of a new key: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyIssue {
    pub name: String,
    pub role: Role,
    /// `None`: an installation-wide key (the bootstrap key, say).
    pub app_id: Option<String>,
    /// The key's first characters, to recognise it by.
    pub prefix: String,
    pub hash: KeyHash,
    /// Publishes on these built-in topics only (and writes to no broker);
    /// `None`: no such limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<crate::topic::TopicName>>,
}

impl KeyIssue {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if !crate::validation::is_printable_name(&self.name, MAX_NAME) {
            errors.add("name", format!("must be 1 to {MAX_NAME} characters of printable text"));
        }
        if self.topics.as_ref().is_some_and(|t| t.is_empty() || t.len() > 100) {
            errors.add("topics", "names 1 to 100 topics the key may publish on");
        }
        if self.role == Role::Producer && self.app_id.is_none() {
            errors.add(
                "role",
                "a producer key belongs to an app; create it under /v1/apps/{id}/keys",
            );
        }
        errors.finish(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum KeyCommand {
    Issue { issue: KeyIssue, at: DateTime<Utc> },
    Revoke { at: DateTime<Utc> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeyEvent {
    KeyIssued { issue: KeyIssue, at: DateTime<Utc> },
    KeyRevoked { at: DateTime<Utc> },
}

impl DomainEvent for KeyEvent {
    fn event_type(&self) -> String {
        match self {
            Self::KeyIssued { .. } => "KeyIssued",
            Self::KeyRevoked { .. } => "KeyRevoked",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key already exists")]
    AlreadyIssued,
    #[error("no such key")]
    NotFound,
    #[error("the key is already revoked")]
    Revoked,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    issue: Option<KeyIssue>,
    issued_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn issue(&self) -> Option<&KeyIssue> {
        self.issue.as_ref()
    }

    pub fn issued_at(&self) -> Option<DateTime<Utc>> {
        self.issued_at
    }

    pub fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.revoked_at
    }

    /// The key as issued, unless it was revoked.
    pub fn valid(&self) -> Option<&KeyIssue> {
        self.issue.as_ref().filter(|_| self.revoked_at.is_none())
    }

    pub fn decide(&self, command: KeyCommand) -> Result<Vec<KeyEvent>, KeyError> {
        match command {
            KeyCommand::Issue { issue, at } => match self.issue {
                Some(_) => Err(KeyError::AlreadyIssued),
                None => Ok(vec![KeyEvent::KeyIssued { issue, at }]),
            },
            KeyCommand::Revoke { at } => match (&self.issue, self.revoked_at) {
                (None, _) => Err(KeyError::NotFound),
                (Some(_), Some(_)) => Err(KeyError::Revoked),
                (Some(_), None) => Ok(vec![KeyEvent::KeyRevoked { at }]),
            },
        }
    }

    pub fn apply_event(&mut self, event: &KeyEvent) {
        match event {
            KeyEvent::KeyIssued { issue, at } => {
                self.issue = Some(issue.clone());
                self.issued_at = Some(*at);
            }
            KeyEvent::KeyRevoked { at } => self.revoked_at = Some(*at),
        }
    }
}

decided_aggregate!(ApiKey, "api_key", KeyCommand, KeyEvent, KeyError);

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn issue(role: Role, app: Option<&str>) -> KeyIssue {
        KeyIssue {
            topics: None,
            name: "ci".into(),
            role,
            app_id: app.map(str::to_string),
            prefix: "bida_abcdefg".into(),
            hash: KeyHash::of("bida_abcdefg-secret"),
        }
    }

    #[test]
    fn a_key_is_issued_once_and_revoked_once() {
        let at = Utc::now();
        let issued = KeyEvent::KeyIssued {
            issue: issue(Role::Viewer, None),
            at,
        };
        TestFramework::<ApiKey>::with(())
            .given(vec![issued.clone()])
            .when(KeyCommand::Revoke { at })
            .then_expect_events(vec![KeyEvent::KeyRevoked { at }]);
        TestFramework::<ApiKey>::with(())
            .given(vec![issued.clone(), KeyEvent::KeyRevoked { at }])
            .when(KeyCommand::Revoke { at })
            .then_expect_error(KeyError::Revoked);
        TestFramework::<ApiKey>::with(())
            .given(vec![issued])
            .when(KeyCommand::Issue {
                issue: issue(Role::Admin, None),
                at,
            })
            .then_expect_error(KeyError::AlreadyIssued);
        TestFramework::<ApiKey>::with(())
            .given_no_previous_events()
            .when(KeyCommand::Revoke { at })
            .then_expect_error(KeyError::NotFound);
    }

    #[test]
    fn a_revoked_key_is_not_valid() {
        let mut key = ApiKey::default();
        key.apply_event(&KeyEvent::KeyIssued {
            issue: issue(Role::Operator, None),
            at: Utc::now(),
        });
        assert!(key.valid().is_some());
        key.apply_event(&KeyEvent::KeyRevoked { at: Utc::now() });
        assert!(key.valid().is_none());
    }

    #[test]
    fn producers_need_an_app() {
        assert!(issue(Role::Producer, None).validate().is_err());
        assert!(issue(Role::Producer, Some("app")).validate().is_ok());
        assert!(issue(Role::Admin, None).validate().is_ok());
    }

    #[test]
    fn hashes_are_sha256_hex_and_hide_in_debug() {
        let hash = KeyHash::of("abc");
        assert_eq!(
            hash.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!format!("{hash:?}").contains("ba7816bf8f01"));
    }
}
