//! Which secrets sign a delivery: those of the task's app, read from the
//! app's events and kept in memory for a few seconds (a rotation reaches
//! every node within that; the old secret keeps signing meanwhile).

use bida_domain::access::App;
use bida_store::Store;
use chrono::Utc;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::secrets::{signature, Sealer};

/// How long a node signs with the secrets it read.
const FRESH: Duration = Duration::from_secs(5);

type Secrets = Arc<Vec<String>>;

pub struct Signer {
    store: Store,
    sealer: Sealer,
    known: Mutex<HashMap<String, (Instant, Secrets)>>,
}

impl Signer {
    pub fn new(store: Store, sealer: Sealer) -> Self {
        Self {
            store,
            sealer,
            known: Mutex::default(),
        }
    }

    async fn secrets_of(&self, app_id: &str) -> Secrets {
        if let Some((read, secrets)) = self.known.lock().ok().and_then(|k| k.get(app_id).cloned()) {
            if read.elapsed() < FRESH {
                return secrets;
            }
        }
        let secrets: Secrets = match self.store.load_aggregate::<App>(app_id).await {
            Ok(Some((app, _))) => Arc::new(
                app.signing_secrets(Utc::now())
                    .into_iter()
                    .filter_map(|sealed| match self.sealer.open(sealed) {
                        Ok(secret) => Some(secret),
                        Err(e) => {
                            tracing::error!(app = app_id, error = %e, "cannot open a signing secret");
                            None
                        }
                    })
                    .collect(),
            ),
            Ok(None) => Secrets::default(),
            Err(e) => {
                // Sending unsigned would be refused by a verifying endpoint
                // anyway; the attempt goes unsigned and is retried.
                tracing::warn!(app = app_id, error = %e, "cannot read the app's signing secrets");
                return Secrets::default();
            }
        };
        if let Ok(mut known) = self.known.lock() {
            known.insert(app_id.to_string(), (Instant::now(), secrets.clone()));
        }
        secrets
    }

    /// The `webhook-signature` of a delivery of `app_id`'s task, if the app
    /// has a secret.
    pub async fn sign(&self, app_id: &str, message_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
        let secrets = self.secrets_of(app_id).await;
        signature(&secrets, message_id, timestamp, body)
    }
}
