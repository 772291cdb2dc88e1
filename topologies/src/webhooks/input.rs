//! The input: one webhook to deliver, as the platform writes it to `api.webhooks.outbound`
//! (bare, or as the payload of the platform's envelope):
//!
//! ```json
//! {"url": "https://…", "headers": {"x-tenant": "t1"}, "payload": {…},
//!  "retryConfig": {"maxRetries": 5}, "retryCount": 0}
//! ```
//!
//! In place of `url`, a webhook may name a configured endpoint, `"endpointId":
//! "acme-rx"`: its URL, headers and secrets come from the worker's
//! [`EndpointDirectory`]. `"secretRef": "acme"` signs with the secrets the secrets file
//! holds under that name; without it, an endpoint's own `secretRef` applies, else the
//! worker's `webhooks.signing.secrets`.
//!
//! [`Webhook::parse`] checks it and names what is wrong (a field and the rule it breaks,
//! never a value: URLs carry tokens in their paths and queries, payloads carry patient
//! data). The source has already refused what is not JSON.

use sluice_connectors::http::{DeliveryRequest, Endpoint, EndpointDirectory, RequestError, Secret};
use sluice_engine::{JsonEvent, ProcessError};

/// A webhook that can be delivered.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// The event as read, written back (with a new `retryCount`) to a retry tier and as
    /// is to the dead-letter topic.
    pub event: JsonEvent,
    pub endpoint: Endpoint,
    /// The event's own headers (name, value), checked as deliverable.
    pub headers: Vec<(String, String)>,
    /// The body sent: the `payload` field as JSON.
    pub body: Vec<u8>,
    /// `retryConfig.maxRetries`, when given.
    pub max_retries: Option<u32>,
    /// `retryCount`: how many retries were made before this attempt (0 on the first).
    pub retry_count: u32,
}

impl Webhook {
    /// Checks one input, finding a named endpoint or secret in `directory`; a webhook
    /// with a URL and no `secretRef` is signed with `secrets`. The error names the field
    /// and the rule.
    pub fn parse(
        event: JsonEvent,
        directory: &EndpointDirectory,
        secrets: &[Secret],
    ) -> Result<Webhook, ProcessError> {
        let object = event
            .payload
            .as_object()
            .ok_or_else(|| ProcessError::validation("the webhook is not a JSON object"))?;
        let text = |field: &str| match object.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(value) => value
                .as_str()
                .map(Some)
                .ok_or_else(|| ProcessError::validation(format!("field {field} is not a string"))),
        };
        let mut endpoint = match (text("url")?, text("endpointId")?) {
            (Some(_), Some(_)) => {
                return Err(ProcessError::validation(
                    "fields url and endpointId are both given: give one",
                ));
            }
            (None, None) => return Err(ProcessError::missing_field("url (or endpointId)")),
            (Some(url), None) => Endpoint::new(url)
                .map_err(|e| url_error(&e))?
                .with_secrets(secrets.to_vec()),
            // Ids are names from the worker's configuration, not event data: an unknown
            // one may be named.
            (None, Some(id)) => directory.endpoint(id).cloned().ok_or_else(|| {
                ProcessError::validation(format!(
                    "field endpointId {id:?} names no endpoint of webhooks.endpoints.file"
                ))
            })?,
        };
        if let Some(reference) = text("secretRef")? {
            let referenced = directory.secrets(reference).ok_or_else(|| {
                ProcessError::validation(format!(
                    "field secretRef {reference:?} names no secret of webhooks.secrets.file"
                ))
            })?;
            endpoint = endpoint.with_secrets(referenced.to_vec());
        }
        let mut headers = Vec::new();
        match object.get("headers") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(map)) => {
                for (name, value) in map {
                    let value = value.as_str().ok_or_else(|| {
                        ProcessError::validation("field headers is not a map of strings")
                    })?;
                    headers.push((name.clone(), value.to_string()));
                }
            }
            Some(_) => {
                return Err(ProcessError::validation(
                    "field headers is not a map of strings",
                ));
            }
        }
        // Headers the deliverer could not send (or sets itself) are the input's fault:
        // refused now, not at every attempt.
        let mut check = DeliveryRequest::new("check", Vec::new()).expect("a valid id");
        for (name, value) in &headers {
            check = check
                .with_header(name, value)
                .map_err(|e| ProcessError::validation(format!("field headers: {e}")))?;
        }
        let payload = object
            .get("payload")
            .ok_or_else(|| ProcessError::missing_field("payload"))?;
        let body = serde_json::to_vec(payload).expect("a JSON value serializes");
        let max_retries = match object.get("retryConfig") {
            None | Some(serde_json::Value::Null) => None,
            Some(config) => match config.get("maxRetries") {
                None | Some(serde_json::Value::Null) => None,
                Some(n) => Some(count(n, "retryConfig.maxRetries")?),
            },
        };
        let retry_count = match object.get("retryCount") {
            None | Some(serde_json::Value::Null) => 0,
            Some(n) => count(n, "retryCount")?,
        };
        Ok(Webhook {
            endpoint,
            headers,
            body,
            max_retries,
            retry_count,
            event,
        })
    }

    /// The event as it goes to retry tier: `retryCount` set to `retries`.
    pub fn with_retry_count(&self, retries: u32) -> JsonEvent {
        let mut event = self.event.clone();
        if let Some(object) = event.payload.as_object_mut() {
            object.insert("retryCount".into(), retries.into());
        }
        event
    }
}

fn count(value: &serde_json::Value, field: &str) -> Result<u32, ProcessError> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ProcessError::validation(format!("field {field} is not a whole number")))
}

fn url_error(error: &RequestError) -> ProcessError {
    ProcessError::validation(match error {
        RequestError::NotHttp => "field url is not an http(s) URL".to_string(),
        RequestError::NoHost => "field url has no host".to_string(),
        RequestError::Credentials => "field url carries credentials".to_string(),
        _ => "field url is not a valid URL".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<Webhook, String> {
        let directory = EndpointDirectory::default();
        Webhook::parse(JsonEvent::from_value(value).unwrap(), &directory, &[])
            .map_err(|e| e.message)
    }

    #[test]
    fn a_webhook_reads_its_url_headers_payload_and_retry_fields() {
        let hook = parse(json!({"url": "https://hooks.example.com/p?token=SECRET",
            "headers": {"x-tenant": "t1"}, "payload": {"a": 1},
            "retryConfig": {"maxRetries": 3}, "retryCount": 2}))
        .unwrap();
        assert_eq!(hook.endpoint.id().as_str(), "hooks.example.com");
        assert_eq!(hook.headers, [("x-tenant".to_string(), "t1".to_string())]);
        assert_eq!(hook.body, br#"{"a":1}"#);
        assert_eq!((hook.max_retries, hook.retry_count), (Some(3), 2));
        let moved = hook.with_retry_count(3);
        assert_eq!(moved.payload["retryCount"], 3);
        assert_eq!(moved.payload["url"], hook.event.payload["url"]);
    }

    #[test]
    fn a_webhook_may_name_a_configured_endpoint_and_a_secret_reference() {
        let key = |k: &str| Secret::parse(k).unwrap();
        let (one, two) = (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        );
        let directory = EndpointDirectory::default()
            .with_endpoint(
                Endpoint::new("https://rx.acme.example/hooks?token=T")
                    .unwrap()
                    .with_id("acme-rx")
                    .with_secrets(vec![key(one)]),
            )
            .with_secrets("rotating", vec![key(two), key(one)]);
        let parse = |value: serde_json::Value| {
            Webhook::parse(
                JsonEvent::from_value(value).unwrap(),
                &directory,
                &[key(two)],
            )
            .unwrap()
        };
        let named = parse(json!({"endpointId": "acme-rx", "payload": {}}));
        assert_eq!(named.endpoint.id().as_str(), "acme-rx");
        assert_eq!(named.endpoint.url().host_str(), Some("rx.acme.example"));
        assert_eq!(named.endpoint.secrets(), [key(one)]);
        let referenced =
            parse(json!({"endpointId": "acme-rx", "secretRef": "rotating", "payload": {}}));
        assert_eq!(referenced.endpoint.secrets(), [key(two), key(one)]);
        // A URL is signed with the worker's secrets unless a reference says otherwise.
        let by_url = parse(json!({"url": "https://other.example/", "payload": {}}));
        assert_eq!(by_url.endpoint.id().as_str(), "other.example");
        assert_eq!(by_url.endpoint.secrets(), [key(two)]);
    }

    #[test]
    fn bad_input_is_named_by_field_and_rule_never_by_value() {
        let secret = "https://SECRET-HOST.example/PATH";
        let cases = [
            (
                json!({"payload": {}}),
                "missing required field url (or endpointId)",
            ),
            (
                json!({"url": secret, "endpointId": "a", "payload": {}}),
                "fields url and endpointId are both given: give one",
            ),
            (
                json!({"endpointId": "nobody", "payload": {}}),
                "field endpointId \"nobody\" names no endpoint of webhooks.endpoints.file",
            ),
            (
                json!({"url": secret, "secretRef": "gone", "payload": {}}),
                "field secretRef \"gone\" names no secret of webhooks.secrets.file",
            ),
            (
                json!({"url": 7, "payload": {}}),
                "field url is not a string",
            ),
            (
                json!({"url": "ftp://h.example/x", "payload": {}}),
                "field url is not an http(s) URL",
            ),
            (
                json!({"url": "not a url SECRET", "payload": {}}),
                "field url is not a valid URL",
            ),
            (
                json!({"url": secret, "headers": ["SECRET"], "payload": {}}),
                "field headers is not a map of strings",
            ),
            (
                json!({"url": secret, "headers": {"x": 1}, "payload": {}}),
                "field headers is not a map of strings",
            ),
            (json!({"url": secret}), "missing required field payload"),
            (
                json!({"url": secret, "payload": {}, "retryCount": "SECRET"}),
                "field retryCount is not a whole number",
            ),
            (json!(["SECRET"]), "the webhook is not a JSON object"),
        ];
        for (input, reason) in cases {
            let message = parse(input.clone()).unwrap_err();
            assert_eq!(message, reason, "{input}");
            assert!(!message.contains("SECRET"), "{message}");
        }
        let reserved = parse(json!({"url": secret, "headers": {"webhook-id": "x"}, "payload": {}}))
            .unwrap_err();
        assert!(reserved.starts_with("field headers: "), "{reserved}");
    }
}
