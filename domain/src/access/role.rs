use serde::{Deserialize, Serialize};
use std::fmt;

/// What a key may do. Roles are ordered by power except `Producer`, which is
/// a narrow role of its own: submit tasks and read its own app's tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Everything, including apps and keys.
    Admin,
    /// Brokers, consumers, tasks and replay; no apps or keys.
    Operator,
    /// Read only.
    Viewer,
    /// Submit tasks and read its own app's tasks, nothing else.
    Producer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Viewer, Role::Producer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Producer => "producer",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn may(self, need: Need) -> bool {
        match need {
            Need::Administer => self == Role::Admin,
            Need::Operate => matches!(self, Role::Admin | Role::Operator),
            Need::Read => matches!(self, Role::Admin | Role::Operator | Role::Viewer),
            Need::Submit => matches!(self, Role::Admin | Role::Operator | Role::Producer),
            Need::ReadTasks => true,
        }
    }

    /// Whether what this role reads is limited to its own app's tasks.
    pub fn sees_own_app_only(self) -> bool {
        self == Role::Producer
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route requires of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Need {
    /// Apps and keys.
    Administer,
    /// Changes to brokers, consumers and tasks.
    Operate,
    /// Reading brokers, consumers, statistics, nodes.
    Read,
    /// Submitting tasks.
    Submit,
    /// Reading tasks (a producer reads its own app's only).
    ReadTasks,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_table_says() {
        let table = [
            (Need::Administer, [true, false, false, false]),
            (Need::Operate, [true, true, false, false]),
            (Need::Read, [true, true, true, false]),
            (Need::Submit, [true, true, false, true]),
            (Need::ReadTasks, [true, true, true, true]),
        ];
        for (need, granted) in table {
            for (role, expected) in Role::ALL.into_iter().zip(granted) {
                assert_eq!(role.may(need), expected, "{role} {need:?}");
            }
        }
    }

    #[test]
    fn roles_round_trip_as_text() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
