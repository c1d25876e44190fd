//! Who made a change, recorded in the metadata of every event it causes.
//!
//! The API sets the requester for the whole of a request's handling
//! ([`acting_as`]); the command paths read it ([`metadata`]). A task-local
//! rather than a parameter: every command of every service records it, and a
//! service method added later cannot forget to pass it on. Work a request
//! hands to another task (an actor) is recorded without a requester, which is
//! what it is: the node acting on its own.

use bida_domain::access::Caller;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;

/// A request's author.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Requester {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

impl Requester {
    pub fn new(caller: &Caller, client_ip: Option<IpAddr>) -> Self {
        Self {
            key_id: caller.key_id.clone(),
            app_id: caller.app_id.clone(),
            role: caller.role.as_str().to_string(),
            client_ip: client_ip.map(|ip| ip.to_string()),
        }
    }

    /// A command given on the command line of the host, not over the API.
    pub fn command_line() -> Self {
        Self {
            key_id: "command-line".into(),
            app_id: None,
            role: "admin".into(),
            client_ip: None,
        }
    }

    fn fields(&self) -> HashMap<String, String> {
        let mut fields = HashMap::from([
            ("key_id".to_string(), self.key_id.clone()),
            ("role".to_string(), self.role.clone()),
        ]);
        if let Some(app) = &self.app_id {
            fields.insert("app_id".into(), app.clone());
        }
        if let Some(ip) = &self.client_ip {
            fields.insert("client_ip".into(), ip.clone());
        }
        fields
    }
}

tokio::task_local! {
    static REQUESTER: Requester;
}

/// Runs `work` on behalf of `requester`.
pub async fn acting_as<F: Future>(requester: Requester, work: F) -> F::Output {
    REQUESTER.scope(requester, work).await
}

/// The metadata of events made now: the requester, if there is one.
pub fn metadata() -> HashMap<String, String> {
    REQUESTER.try_with(Requester::fields).unwrap_or_default()
}

/// [`metadata`] as the JSON text the store keeps; `None` without a requester.
pub fn metadata_json() -> Option<String> {
    let fields = metadata();
    (!fields.is_empty()).then(|| serde_json::to_string(&fields).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bida_domain::access::Role;

    #[tokio::test]
    async fn metadata_names_the_requester_inside_its_scope_only() {
        assert!(metadata().is_empty());
        let caller = Caller {
            key_id: "k1".into(),
            app_id: Some("shop".into()),
            role: Role::Operator,
            networks: Vec::new(),
            topics: None,
        };
        let inside = acting_as(Requester::new(&caller, "10.0.0.7".parse().ok()), async { metadata() }).await;
        assert_eq!(inside["key_id"], "k1");
        assert_eq!(inside["app_id"], "shop");
        assert_eq!(inside["role"], "operator");
        assert_eq!(inside["client_ip"], "10.0.0.7");
        assert!(metadata_json().is_none());
    }
}
