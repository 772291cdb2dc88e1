//! Standard Webhooks signatures, and the secrets behind them.
//!
//! A signed request carries three headers:
//!
//! | header | value |
//! |---|---|
//! | `webhook-id` | the event id: the same on every attempt, so receivers de-duplicate on it |
//! | `webhook-timestamp` | the attempt's time in Unix seconds (receivers refuse it 5 minutes off) |
//! | `webhook-signature` | `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per secret, space-separated |
//!
//! An endpoint's secret is written `whsec_` followed by the base64 of 24 to 64 random bytes;
//! the HMAC key is those bytes. While a secret is rotated the endpoint holds the old and the
//! new one, and the request is signed with each: a receiver that knows either accepts it.
//!
//! A [`Secret`] never shows its value: `Debug` and `Display` print `<redacted>`, and a
//! secret that cannot be read is refused with a message that says what is wrong with it,
//! never what it is.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The event id, the same on every attempt.
pub const WEBHOOK_ID: &str = "webhook-id";
/// The attempt's time in Unix seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The signatures, space-separated.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// The event id again, for receivers that de-duplicate on this header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

const PREFIX: &str = "whsec_";
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;

/// An endpoint's signing secret: the HMAC key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

/// Why a secret was refused. Never carries any part of the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret must be `whsec_` followed by base64; this one is not base64")]
    NotBase64,
    #[error("a webhook secret must hold 24 to 64 bytes; this one holds {0}")]
    Length(usize),
}

impl Secret {
    /// Reads a secret written `whsec_<base64>` (the prefix may be left out).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        let key = STANDARD
            .decode(encoded.trim())
            .map_err(|_| SecretError::NotBase64)?;
        Self::from_bytes(key)
    }

    /// A secret made of these key bytes.
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, SecretError> {
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret { key })
    }

    /// The `v1,<base64>` signature of one message under this secret.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Self, SecretError> {
        Secret::parse(text)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The `webhook-signature` value: one signature per secret, space-separated, in the order
/// the secrets are given.
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: u64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector of the Standard Webhooks reference library (Rust, `test_sign`).
    const VECTOR_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const VECTOR_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const VECTOR_TIMESTAMP: u64 = 1649367553;
    const VECTOR_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const VECTOR_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn signs_the_specs_test_vector() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        assert_eq!(
            secret.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
            VECTOR_SIGNATURE
        );
    }

    #[test]
    fn the_prefix_is_optional() {
        let bare = Secret::parse(VECTOR_SECRET.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(bare, Secret::parse(VECTOR_SECRET).unwrap());
    }

    #[test]
    fn during_rotation_every_secret_signs_in_order() {
        let old = Secret::parse(VECTOR_SECRET).unwrap();
        let new = Secret::from_bytes(vec![7; 32]).unwrap();
        let header = signature_header(
            &[old, new.clone()],
            VECTOR_ID,
            VECTOR_TIMESTAMP,
            VECTOR_BODY,
        );
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], VECTOR_SIGNATURE);
        assert_eq!(parts[1], new.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn a_secret_never_shows_its_value() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let key = VECTOR_SECRET.strip_prefix("whsec_").unwrap();
        for shown in [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{:?}", Some(&secret)),
        ] {
            assert!(shown.contains("<redacted>"), "{shown}");
            assert!(!shown.contains(key), "{shown}");
        }
    }

    #[test]
    fn a_bad_secret_is_refused_without_its_value_in_the_error() {
        let not_base64 = "whsec_not*base64!";
        let err = Secret::parse(not_base64).unwrap_err();
        assert_eq!(err, SecretError::NotBase64);
        assert!(!err.to_string().contains("not*base64"));

        let short = format!("whsec_{}", STANDARD.encode([1u8; 8]));
        assert_eq!(Secret::parse(&short).unwrap_err(), SecretError::Length(8));
        assert_eq!(
            Secret::from_bytes(vec![0; 65]).unwrap_err(),
            SecretError::Length(65)
        );
    }
}
