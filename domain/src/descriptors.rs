//! Descriptor sets uploaded for gRPC deliveries to servers without
//! reflection: each set is an aggregate named by its content's SHA-256, so
//! uploading the same set twice is one set. Checking that the bytes are a
//! usable `FileDescriptorSet` is the node's job (it has the protobuf code);
//! the aggregate keeps what was accepted.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The id of a set: the hex SHA-256 of its bytes.
pub fn descriptor_set_id(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Debug, PartialEq)]
pub enum DescriptorSetCommand {
    Upload {
        /// The encoded `FileDescriptorSet`, base64.
        set: String,
        /// The services it describes (`orders.v1.Callbacks`).
        services: Vec<String>,
        files: Vec<String>,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DescriptorSetEvent {
    DescriptorSetUploaded {
        set: String,
        services: Vec<String>,
        files: Vec<String>,
        at: DateTime<Utc>,
    },
    DescriptorSetDeleted {
        at: DateTime<Utc>,
    },
}

impl DomainEvent for DescriptorSetEvent {
    fn event_type(&self) -> String {
        match self {
            Self::DescriptorSetUploaded { .. } => "DescriptorSetUploaded",
            Self::DescriptorSetDeleted { .. } => "DescriptorSetDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorSetError {
    /// The same bytes are uploaded already: nothing to record.
    #[error("this descriptor set is uploaded already")]
    Exists,
    #[error("no such descriptor set")]
    NotFound,
}

/// An uploaded set while it is there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DescriptorSet {
    set: Option<String>,
    services: Vec<String>,
    files: Vec<String>,
    uploaded_at: Option<DateTime<Utc>>,
}

impl DescriptorSet {
    /// The encoded set (base64) while it is there.
    pub fn set(&self) -> Option<&str> {
        self.set.as_deref()
    }

    pub fn services(&self) -> &[String] {
        &self.services
    }

    pub fn files(&self) -> &[String] {
        &self.files
    }

    pub fn uploaded_at(&self) -> Option<DateTime<Utc>> {
        self.uploaded_at
    }

    pub fn decide(&self, command: DescriptorSetCommand) -> Result<Vec<DescriptorSetEvent>, DescriptorSetError> {
        match command {
            DescriptorSetCommand::Upload {
                set,
                services,
                files,
                at,
            } => match self.set {
                Some(_) => Err(DescriptorSetError::Exists),
                None => Ok(vec![DescriptorSetEvent::DescriptorSetUploaded {
                    set,
                    services,
                    files,
                    at,
                }]),
            },
            DescriptorSetCommand::Delete { at } => {
                self.set.as_ref().ok_or(DescriptorSetError::NotFound)?;
                Ok(vec![DescriptorSetEvent::DescriptorSetDeleted { at }])
            }
        }
    }

    pub fn apply_event(&mut self, event: &DescriptorSetEvent) {
        match event {
            DescriptorSetEvent::DescriptorSetUploaded {
                set,
                services,
                files,
                at,
            } => {
                self.set = Some(set.clone());
                self.services = services.clone();
                self.files = files.clone();
                self.uploaded_at = Some(*at);
            }
            DescriptorSetEvent::DescriptorSetDeleted { .. } => *self = Self::default(),
        }
    }
}

decided_aggregate!(
    DescriptorSet,
    "descriptor_set",
    DescriptorSetCommand,
    DescriptorSetEvent,
    DescriptorSetError
);

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn uploaded(at: DateTime<Utc>) -> DescriptorSetEvent {
        DescriptorSetEvent::DescriptorSetUploaded {
            set: "CgA=".into(),
            services: vec!["orders.v1.Callbacks".into()],
            files: vec!["orders.proto".into()],
            at,
        }
    }

    #[test]
    fn a_set_is_uploaded_once_and_can_be_uploaded_again_after_its_deletion() {
        let at = Utc::now();
        let upload = DescriptorSetCommand::Upload {
            set: "CgA=".into(),
            services: vec!["orders.v1.Callbacks".into()],
            files: vec!["orders.proto".into()],
            at,
        };
        TestFramework::<DescriptorSet>::with(())
            .given_no_previous_events()
            .when(upload.clone())
            .then_expect_events(vec![uploaded(at)]);
        TestFramework::<DescriptorSet>::with(())
            .given(vec![uploaded(at)])
            .when(upload.clone())
            .then_expect_error(DescriptorSetError::Exists);
        TestFramework::<DescriptorSet>::with(())
            .given(vec![uploaded(at), DescriptorSetEvent::DescriptorSetDeleted { at }])
            .when(DescriptorSetCommand::Delete { at })
            .then_expect_error(DescriptorSetError::NotFound);
        TestFramework::<DescriptorSet>::with(())
            .given(vec![uploaded(at), DescriptorSetEvent::DescriptorSetDeleted { at }])
            .when(upload)
            .then_expect_events(vec![uploaded(at)]);
    }

    #[test]
    fn ids_are_the_content_s_sha256() {
        assert_eq!(
            descriptor_set_id(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
