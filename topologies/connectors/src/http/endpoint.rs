//! Where a delivery goes ([`Endpoint`]) and what it carries ([`DeliveryRequest`]).
//!
//! An endpoint is known by its [`EndpointId`]: a configured id, or else the URL's host.
//! The id is what limits, breakers and metrics are kept by, and the only part of an
//! endpoint that metric labels show: a URL's path and query can hold tokens or patient
//! identifiers, so they never leave the request.
//!
//! Errors name the rule that was broken, never the URL or header value that broke it.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use super::signing::{IDEMPOTENCY_KEY, Secret, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

/// The name limits, breakers and metrics know an endpoint by.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(Arc<str>);

impl EndpointId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        EndpointId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointId({:?})", &*self.0)
    }
}

/// Why an endpoint or a request cannot be used. Names the field and the rule, never the
/// value (a URL or a header may carry a token).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the url is not a valid absolute URL")]
    InvalidUrl,
    #[error("the url's scheme must be http or https")]
    NotHttp,
    #[error("the url has no host")]
    NoHost,
    #[error("the url must not carry a user name or password")]
    Credentials,
    #[error("the event id must be 1 to 255 visible ASCII characters")]
    InvalidEventId,
    #[error("a header name is not a valid HTTP header name")]
    InvalidHeaderName,
    #[error("the value of header {0} is not a valid HTTP header value")]
    InvalidHeaderValue(String),
    #[error("header {0} is set by the deliverer and cannot be given")]
    ReservedHeader(String),
}

/// A receiver of deliveries: its URL, id and signing secrets.
#[derive(Clone)]
pub struct Endpoint {
    id: EndpointId,
    url: Url,
    secrets: Vec<Secret>,
    headers: HeaderMap,
}

impl Endpoint {
    /// An endpoint at `url` (http or https, with a host, without credentials), known by its
    /// host until [`Endpoint::with_id`] names it.
    pub fn new(url: &str) -> Result<Self, RequestError> {
        let url = Url::parse(url).map_err(|_| RequestError::InvalidUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RequestError::NotHttp);
        }
        // Credentials in the URL would go out as a Basic authorization the endpoint's
        // owner may not know about, and a URL that holds them is one nobody may print.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RequestError::Credentials);
        }
        let host = url.host_str().ok_or(RequestError::NoHost)?;
        if host.is_empty() {
            return Err(RequestError::NoHost);
        }
        let id = EndpointId::new(host.trim_start_matches('[').trim_end_matches(']'));
        Ok(Endpoint {
            id,
            url,
            secrets: Vec::new(),
            headers: HeaderMap::new(),
        })
    }

    /// Names the endpoint (its id in metrics, limits and breakers).
    pub fn with_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.id = EndpointId::new(id);
        self
    }

    /// Signs every request with these secrets (Standard Webhooks); more than one while a
    /// secret is rotated. Without secrets requests go unsigned.
    pub fn with_secrets(mut self, secrets: Vec<Secret>) -> Self {
        self.secrets = secrets;
        self
    }

    /// Sends this header with every request to the endpoint (a request's own header of
    /// the same name wins).
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, RequestError> {
        let (name, value) = checked_header(name, value)?;
        self.headers.insert(name, value);
        Ok(self)
    }

    pub fn id(&self) -> &EndpointId {
        &self.id
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl fmt::Debug for Endpoint {
    // The id only: the URL's path and query and the secrets stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

/// One event to deliver: its id, body and headers.
#[derive(Clone)]
pub struct DeliveryRequest {
    event_id: String,
    body: Bytes,
    headers: HeaderMap,
}

impl DeliveryRequest {
    /// An event with this id (the `webhook-id` and `Idempotency-Key`, the same on every
    /// attempt) and this body (sent as `application/json` unless a header says otherwise).
    pub fn new(event_id: &str, body: impl Into<Bytes>) -> Result<Self, RequestError> {
        let valid = !event_id.is_empty()
            && event_id.len() <= 255
            && event_id.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(RequestError::InvalidEventId);
        }
        Ok(DeliveryRequest {
            event_id: event_id.to_owned(),
            body: body.into(),
            headers: HeaderMap::new(),
        })
    }

    /// Adds a header of the event's own. The headers the deliverer sets (the signature
    /// headers, `Idempotency-Key`, and the framing headers) are refused.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, RequestError> {
        let (name, value) = checked_header(name, value)?;
        self.headers.append(name, value);
        Ok(self)
    }

    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl fmt::Debug for DeliveryRequest {
    // No body, no header values: they are patient data and credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryRequest")
            .field("event_id", &self.event_id)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Headers the deliverer sets itself: the signature would not cover a replaced
/// `webhook-id`, and the framing headers are the HTTP stack's.
const RESERVED: &[&str] = &[
    WEBHOOK_ID,
    WEBHOOK_TIMESTAMP,
    WEBHOOK_SIGNATURE,
    IDEMPOTENCY_KEY,
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

fn checked_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), RequestError> {
    let name =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| RequestError::InvalidHeaderName)?;
    if RESERVED.contains(&name.as_str()) {
        return Err(RequestError::ReservedHeader(name.as_str().to_owned()));
    }
    let value = HeaderValue::from_str(value)
        .map_err(|_| RequestError::InvalidHeaderValue(name.as_str().to_owned()))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_known_by_its_host_unless_named() {
        let e = Endpoint::new("https://hooks.example.com:8443/v1/orders?token=abc").unwrap();
        assert_eq!(e.id().as_str(), "hooks.example.com");
        assert_eq!(e.with_id("pharmacy-42").id().as_str(), "pharmacy-42");
        let v6 = Endpoint::new("http://[2606:4700::1111]/").unwrap();
        assert_eq!(v6.id().as_str(), "2606:4700::1111");
    }

    #[test]
    fn only_http_urls_with_a_host_and_no_credentials_are_endpoints() {
        for (url, err) in [
            ("not a url", RequestError::InvalidUrl),
            ("/relative/path", RequestError::InvalidUrl),
            ("ftp://example.com/", RequestError::NotHttp),
            ("file:///etc/passwd", RequestError::NotHttp),
            ("https://user:pw@example.com/", RequestError::Credentials),
        ] {
            assert_eq!(Endpoint::new(url).unwrap_err(), err, "{url}");
        }
    }

    #[test]
    fn errors_and_debug_output_never_show_a_url_or_a_value() {
        let secret = "s3cr3t-token";
        let err = Endpoint::new(&format!("gopher://{secret}.example.com/")).unwrap_err();
        assert!(!err.to_string().contains(secret));
        let err = DeliveryRequest::new("evt-1", "{}")
            .unwrap()
            .with_header("authorization", &format!("Bearer {secret}\n"))
            .unwrap_err();
        assert_eq!(
            err,
            RequestError::InvalidHeaderValue("authorization".into())
        );
        assert!(!err.to_string().contains(secret));

        let endpoint = Endpoint::new(&format!("https://example.com/hook?token={secret}")).unwrap();
        assert!(!format!("{endpoint:?}").contains(secret));
        let request = DeliveryRequest::new("evt-1", format!("{{\"ssn\":\"{secret}\"}}")).unwrap();
        assert!(!format!("{request:?}").contains(secret));
    }

    #[test]
    fn the_deliverers_own_headers_cannot_be_given() {
        let request = DeliveryRequest::new("evt-1", "{}").unwrap();
        for name in [
            "webhook-id",
            "Webhook-Signature",
            "Idempotency-Key",
            "Host",
            "Content-Length",
        ] {
            assert!(
                matches!(
                    request.clone().with_header(name, "x"),
                    Err(RequestError::ReservedHeader(_))
                ),
                "{name}"
            );
        }
        assert!(request.with_header("x-tenant", "acme").is_ok());
    }

    #[test]
    fn an_event_id_must_fit_a_header() {
        for id in ["", "has space", "line\nbreak", &"x".repeat(256)] {
            assert_eq!(
                DeliveryRequest::new(id, "{}").unwrap_err(),
                RequestError::InvalidEventId
            );
        }
        assert!(DeliveryRequest::new("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "{}").is_ok());
    }
}
