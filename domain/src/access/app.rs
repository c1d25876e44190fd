use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ValidationErrors;

/// Most networks one app may list.
pub const MAX_NETWORKS: usize = 100;
const MAX_NAME: usize = 100;

/// An app: a system that submits tasks or owns consumers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppSpec {
    pub name: String,
    /// Networks its keys may be used from (CIDR, `10.1.0.0/16`); empty: anywhere.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub allowed_networks: Vec<IpNet>,
}

impl AppSpec {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = self.name.trim();
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            errors.add("name", format!("must be 1 to {MAX_NAME} bytes of printable text"));
        }
        if self.allowed_networks.len() > MAX_NETWORKS {
            errors.add("allowed_networks", format!("at most {MAX_NETWORKS} networks"));
        }
        errors.finish(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum AppCommand {
    Create { spec: AppSpec, at: DateTime<Utc> },
    Update { spec: AppSpec, at: DateTime<Utc> },
    Delete { at: DateTime<Utc> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AppEvent {
    AppCreated { spec: AppSpec, at: DateTime<Utc> },
    AppUpdated { spec: AppSpec, at: DateTime<Utc> },
    AppDeleted { at: DateTime<Utc> },
}

impl DomainEvent for AppEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AppCreated { .. } => "AppCreated",
            Self::AppUpdated { .. } => "AppUpdated",
            Self::AppDeleted { .. } => "AppDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    #[error("the app already exists")]
    AlreadyCreated,
    #[error("no such app")]
    NotFound,
    #[error("the app was deleted")]
    Deleted,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct App {
    spec: Option<AppSpec>,
    deleted: bool,
}

impl App {
    /// The spec of an app that exists and was not deleted.
    pub fn live(&self) -> Option<&AppSpec> {
        self.spec.as_ref().filter(|_| !self.deleted)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    pub fn decide(&self, command: AppCommand) -> Result<Vec<AppEvent>, AppError> {
        match command {
            AppCommand::Create { spec, at } => match self.spec {
                Some(_) => Err(AppError::AlreadyCreated),
                None => Ok(vec![AppEvent::AppCreated { spec, at }]),
            },
            AppCommand::Update { spec, at } => {
                self.check_live()?;
                Ok(vec![AppEvent::AppUpdated { spec, at }])
            }
            AppCommand::Delete { at } => {
                self.check_live()?;
                Ok(vec![AppEvent::AppDeleted { at }])
            }
        }
    }

    fn check_live(&self) -> Result<(), AppError> {
        match (&self.spec, self.deleted) {
            (None, _) => Err(AppError::NotFound),
            (Some(_), true) => Err(AppError::Deleted),
            (Some(_), false) => Ok(()),
        }
    }

    pub fn apply_event(&mut self, event: &AppEvent) {
        match event {
            AppEvent::AppCreated { spec, .. } | AppEvent::AppUpdated { spec, .. } => self.spec = Some(spec.clone()),
            AppEvent::AppDeleted { .. } => self.deleted = true,
        }
    }
}

impl Aggregate for App {
    const TYPE: &'static str = "app";
    type Command = AppCommand;
    type Event = AppEvent;
    type Error = AppError;
    type Services = ();

    async fn handle(&mut self, command: Self::Command, _: &(), sink: &EventSink<Self>) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.apply_event(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn spec(name: &str) -> AppSpec {
        AppSpec {
            name: name.into(),
            allowed_networks: vec!["10.1.0.0/16".parse().unwrap()],
        }
    }

    #[test]
    fn an_app_is_created_changed_and_deleted_once() {
        let at = Utc::now();
        let created = AppEvent::AppCreated { spec: spec("shop"), at };
        TestFramework::<App>::with(())
            .given_no_previous_events()
            .when(AppCommand::Create { spec: spec("shop"), at })
            .then_expect_events(vec![created.clone()]);
        TestFramework::<App>::with(())
            .given(vec![created.clone()])
            .when(AppCommand::Create { spec: spec("shop"), at })
            .then_expect_error(AppError::AlreadyCreated);
        TestFramework::<App>::with(())
            .given(vec![created.clone()])
            .when(AppCommand::Update {
                spec: spec("store"),
                at,
            })
            .then_expect_events(vec![AppEvent::AppUpdated {
                spec: spec("store"),
                at,
            }]);
        TestFramework::<App>::with(())
            .given(vec![created, AppEvent::AppDeleted { at }])
            .when(AppCommand::Delete { at })
            .then_expect_error(AppError::Deleted);
        TestFramework::<App>::with(())
            .given_no_previous_events()
            .when(AppCommand::Update { spec: spec("x"), at })
            .then_expect_error(AppError::NotFound);
    }

    #[test]
    fn names_and_networks_are_checked() {
        assert!(spec("shop").validate().is_ok());
        assert!(spec(" ").validate().is_err());
        assert!(spec("a\u{7}b").validate().is_err());
        let many = AppSpec {
            name: "x".into(),
            allowed_networks: vec!["10.0.0.0/8".parse().unwrap(); MAX_NETWORKS + 1],
        };
        assert!(many.validate().is_err());
    }
}
