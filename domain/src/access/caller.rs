use ipnet::IpNet;
use std::net::IpAddr;

use super::{Need, Role};

/// Who a valid key says is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    /// The app the key belongs to; `None` for installation-wide keys.
    pub app_id: Option<String>,
    pub role: Role,
    /// The app's allowed networks; empty: anywhere.
    pub networks: Vec<IpNet>,
    /// The built-in topics alone the key publishes on, if it is so limited.
    pub topics: Option<Vec<String>>,
}

impl Caller {
    pub fn may(&self, need: Need) -> bool {
        self.role.may(need)
    }

    /// Whether the key may publish on built-in topic `topic`.
    pub fn may_publish_on(&self, topic: &str) -> bool {
        self.topics
            .as_ref()
            .is_none_or(|topics| topics.iter().any(|t| t == topic))
    }

    /// Whether the key may write to brokers (`/v1/brokers/{id}/messages`):
    /// not one limited to topics.
    pub fn may_write_to_brokers(&self) -> bool {
        self.topics.is_none()
    }

    /// Whether a request from `address` may use this key.
    pub fn may_call_from(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.networks.is_empty() || self.networks.iter().any(|net| net.contains(&address))
    }

    /// The app whose tasks alone this caller may see, if it is limited to one.
    pub fn only_app(&self) -> Option<&str> {
        if self.role.sees_own_app_only() {
            // A producer always has an app (keys check it when issued); one
            // without sees nothing rather than everything.
            Some(self.app_id.as_deref().unwrap_or(""))
        } else {
            None
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.1.2.3`) is that IPv4 address.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(networks: &[&str]) -> Caller {
        Caller {
            key_id: "k".into(),
            app_id: Some("a".into()),
            role: Role::Producer,
            networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            topics: None,
        }
    }

    #[test]
    fn networks_limit_where_a_key_works() {
        let open = caller(&[]);
        assert!(open.may_call_from("203.0.113.9".parse().unwrap()));
        let office = caller(&["10.1.0.0/16", "2001:db8::/32"]);
        assert!(office.may_call_from("10.1.2.3".parse().unwrap()));
        assert!(office.may_call_from("::ffff:10.1.2.3".parse().unwrap()));
        assert!(office.may_call_from("2001:db8::1".parse().unwrap()));
        assert!(!office.may_call_from("10.2.0.1".parse().unwrap()));
        assert!(!office.may_call_from("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn producers_see_their_own_app_only() {
        assert_eq!(caller(&[]).only_app(), Some("a"));
        let admin = Caller {
            role: Role::Admin,
            ..caller(&[])
        };
        assert_eq!(admin.only_app(), None);
    }
}
