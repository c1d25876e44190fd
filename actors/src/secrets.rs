//! Secrets at rest and on the wire: signing secrets are sealed
//! (XChaCha20-Poly1305) with the installation's `secret_key` before they
//! reach the event store, so a database dump holds no usable secret; and
//! deliveries are signed the Standard Webhooks way, which the official
//! libraries of every language verify unchanged.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bida_domain::access::SealedSecret;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Standard Webhooks' prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// What a sealed text starts with; the rest is base64url (no character a
/// URL would need to escape, so a sealed password stays in its URL).
const SEALED_VERSION: &str = "sealed.v1.";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret_key must be 32 bytes in base64 (`openssl rand -base64 32`)")]
    BadKey,
    #[error("a sealed secret cannot be opened with this secret_key (was it changed?)")]
    Unreadable,
}

/// Seals and opens secrets with the installation's key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(…)")
    }
}

impl Sealer {
    /// From `secret_key`: 32 bytes, base64.
    pub fn from_base64(key: &str) -> Result<Self, SecretError> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| SecretError::BadKey)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SecretError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SecretError::BadKey);
        }
        Ok(Self { cipher })
    }

    pub fn seal(&self, secret: &str) -> SealedSecret {
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let sealed = self
            .cipher
            .encrypt(nonce, secret.as_bytes())
            .expect("XChaCha20-Poly1305 encrypts any length we use");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        SealedSecret(format!("{SEALED_VERSION}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    pub fn open(&self, sealed: &SealedSecret) -> Result<String, SecretError> {
        let encoded = sealed.0.strip_prefix(SEALED_VERSION).ok_or(SecretError::Unreadable)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| SecretError::Unreadable)?;
        if bytes.len() < 24 {
            return Err(SecretError::Unreadable);
        }
        let (nonce, sealed) = bytes.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| SecretError::Unreadable)?;
        String::from_utf8(plain).map_err(|_| SecretError::Unreadable)
    }
}

impl Sealer {
    /// A credential as the event store keeps it.
    pub fn seal_text(&self, plain: &str) -> String {
        self.seal(plain).0
    }

    /// A credential as a connection needs it; text that was never sealed
    /// (stored before `secret_key` was set) comes back as it is.
    pub fn open_text(&self, stored: &str) -> String {
        if !stored.starts_with(SEALED_VERSION) {
            return stored.to_string();
        }
        self.open(&SealedSecret(stored.to_string())).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot open a stored credential");
            stored.to_string()
        })
    }
}

/// A broker as a connection needs it: credentials opened.
pub fn opened(broker: &bida_domain::broker::Broker, sealer: Option<&Sealer>) -> bida_domain::broker::Broker {
    match sealer {
        Some(sealer) => broker.map_secrets(|text| sealer.open_text(text)),
        None => broker.clone(),
    }
}

/// A new signing secret: `whsec_` and 256 random bits, base64.
pub fn new_signing_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The `webhook-signature` value for a message signed with each secret
/// (space-separated `v1,<base64>`), or `None` when no secret is usable.
pub fn signature(secrets: &[String], message_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let signatures: Vec<String> = secrets
        .iter()
        .filter_map(|secret| {
            let key = STANDARD
                .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
                .ok()?;
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).ok()?;
            mac.update(format!("{message_id}.{timestamp}.").as_bytes());
            mac.update(body);
            Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
        })
        .collect();
    (!signatures.is_empty()).then(|| signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_hide_the_text() {
        let secret = new_signing_secret();
        let sealed = sealer().seal(&secret);
        assert!(!sealed.0.contains(&secret[SECRET_PREFIX.len()..]));
        assert_ne!(sealed, sealer().seal(&secret), "a new nonce each time");
        assert_eq!(sealer().open(&sealed).unwrap(), secret);
        let other = Sealer::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(Sealer::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn broker_passwords_are_sealed_inside_their_urls_and_open_again() {
        use bida_domain::broker::{BrokerSpec, Connection};
        let spec = BrokerSpec {
            name: "mq".into(),
            connection: Connection::Rabbitmq(bida_domain::kinds::rabbitmq::RabbitmqConnection {
                url: "amqp://guest:p%40ss+w%2Frd@mq:5672/%2f".into(),
                management_url: Some("http://admin:hunter2@mq:15672/".into()),
            }),
        };
        let sealed = spec.map_secrets(|text| sealer().seal_text(text));
        let text = format!("{sealed:?}");
        assert!(!text.contains("hunter2") && !text.contains("p%40ss"), "{text}");
        assert!(text.contains("sealed.v1."));
        assert_eq!(sealed.map_secrets(|text| sealer().open_text(text)), spec);
        // Never sealed: left as it is.
        assert_eq!(spec.map_secrets(|text| sealer().open_text(text)), spec);
    }

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let body = br#"{"test": 2432232314}"#;
        let signed = signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
