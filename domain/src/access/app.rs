use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ValidationErrors;

/// Most networks one app may list.
pub const MAX_NETWORKS: usize = 100;
const MAX_NAME: usize = 100;

/// A network in CIDR notation (`10.1.0.0/16`, `2001:db8::/32`), as the API
/// document describes `allowed_networks` items.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(
    value_type = String,
    pattern = r"^(((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$"
)]
pub struct Cidr(pub String);

/// An app: a system that submits tasks or owns consumers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppSpec {
    /// 1 to 100 characters, not only spaces, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 100,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
    /// Networks its keys may be used from (CIDR, `10.1.0.0/16`); empty: anywhere.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Cidr>, max_items = 100))]
    pub allowed_networks: Vec<IpNet>,
}

impl AppSpec {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if !crate::validation::is_printable_name(&self.name, MAX_NAME) {
            errors.add("name", format!("must be 1 to {MAX_NAME} characters of printable text"));
        }
        if self.allowed_networks.len() > MAX_NETWORKS {
            errors.add("allowed_networks", format!("at most {MAX_NETWORKS} networks"));
        }
        errors.finish(())
    }
}

/// A signing secret as the event store keeps it: encrypted with the
/// installation's secret key (`secret_key`), never in plain text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedSecret(pub String);

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedSecret(…)")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum AppCommand {
    Create {
        spec: AppSpec,
        at: DateTime<Utc>,
    },
    Update {
        spec: AppSpec,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
    /// A new signing secret; the current one keeps signing beside it until
    /// `previous_until` (`None`: it stops at once).
    RotateSecret {
        sealed_secret: SealedSecret,
        previous_until: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AppEvent {
    AppCreated {
        spec: AppSpec,
        at: DateTime<Utc>,
    },
    AppUpdated {
        spec: AppSpec,
        at: DateTime<Utc>,
    },
    AppDeleted {
        at: DateTime<Utc>,
    },
    SigningSecretRotated {
        sealed_secret: SealedSecret,
        previous_until: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for AppEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AppCreated { .. } => "AppCreated",
            Self::AppUpdated { .. } => "AppUpdated",
            Self::AppDeleted { .. } => "AppDeleted",
            Self::SigningSecretRotated { .. } => "SigningSecretRotated",
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
    /// Signing secrets, the newest first, each with the end of its overlap
    /// (`None` for the current one).
    secrets: Vec<(SealedSecret, Option<DateTime<Utc>>)>,
}

impl App {
    /// The spec of an app that exists and was not deleted.
    pub fn live(&self) -> Option<&AppSpec> {
        self.spec.as_ref().filter(|_| !self.deleted)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// The secrets that sign deliveries at `now`: the current one first.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&SealedSecret> {
        self.secrets
            .iter()
            .filter(|(_, until)| until.is_none_or(|until| now < until))
            .map(|(secret, _)| secret)
            .collect()
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
            AppCommand::RotateSecret {
                sealed_secret,
                previous_until,
                at,
            } => {
                self.check_live()?;
                Ok(vec![AppEvent::SigningSecretRotated {
                    sealed_secret,
                    previous_until,
                    at,
                }])
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
            AppEvent::SigningSecretRotated {
                sealed_secret,
                previous_until,
                at,
            } => {
                // Secrets whose overlap is over are of no more use.
                self.secrets.retain(|(_, until)| until.is_none_or(|until| *at < until));
                for (_, until) in &mut self.secrets {
                    if until.is_none() {
                        *until = Some(previous_until.unwrap_or(*at));
                    }
                }
                self.secrets.insert(0, (sealed_secret.clone(), None));
            }
        }
    }
}

decided_aggregate!(App, "app", AppCommand, AppEvent, AppError);

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
    fn a_rotated_secret_signs_beside_the_new_one_until_its_overlap_ends() {
        let t0 = Utc::now();
        let hour = chrono::TimeDelta::hours(1);
        let mut app = App::default();
        app.apply_event(&AppEvent::AppCreated {
            spec: spec("shop"),
            at: t0,
        });
        let rotate = |secret: &str, previous_until, at| AppEvent::SigningSecretRotated {
            sealed_secret: SealedSecret(secret.into()),
            previous_until,
            at,
        };
        app.apply_event(&rotate("one", None, t0));
        assert_eq!(app.signing_secrets(t0), vec![&SealedSecret("one".into())]);
        app.apply_event(&rotate("two", Some(t0 + hour), t0));
        let both: Vec<&str> = app.signing_secrets(t0).iter().map(|s| s.0.as_str()).collect();
        assert_eq!(both, ["two", "one"]);
        let later: Vec<&str> = app
            .signing_secrets(t0 + hour * 2)
            .iter()
            .map(|s| s.0.as_str())
            .collect();
        assert_eq!(later, ["two"]);
        // Rotating without overlap retires the current secret at once.
        app.apply_event(&rotate("three", None, t0));
        let now: Vec<&str> = app.signing_secrets(t0).iter().map(|s| s.0.as_str()).collect();
        assert_eq!(now, ["three", "one"], "one keeps its own overlap; two stopped at once");
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

#[cfg(test)]
mod cidr_tests {
    /// Every spelling the document's pattern admits must parse (a sample).
    #[test]
    fn documented_cidr_forms_parse() {
        for text in [
            "0.0.0.0/0",
            "10.1.2.3/16",
            "255.255.255.255/32",
            "::/0",
            "::1/128",
            "1::/8",
            "1:2:3:4:5:6:7::/64",
            "1::8/64",
            "1:2::7:8/99",
            "::2:3:4:5:6:7:8/120",
            "abcd:ef01:2345:6789:ABCD:EF01:2345:6789/128",
        ] {
            assert!(text.parse::<ipnet::IpNet>().is_ok(), "{text}");
        }
    }
}
