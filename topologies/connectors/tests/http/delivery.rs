//! What one delivery sends, and how each kind of answer is classified.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use sha2::Sha256;
use sluice_connectors::http::retry::SVIX_DELAYS;
use sluice_connectors::http::{
    Deliverer, DeliveryRequest, Disposition, Endpoint, ErrorClass, HttpConfig, Outcome,
    RetrySchedule, Secret,
};

use crate::server::{Reply, TestServer, config};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A receiver's check of a Standard Webhooks request, written from the spec and apart
/// from the crate's signer: some `v1` signature in the header must be the HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under the secret's decoded bytes.
fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .any(|(version, signature)| version == "v1" && signature == expected)
}

fn header<'a>(request: &'a crate::server::Recorded, name: &str) -> &'a str {
    request.headers[name].to_str().unwrap()
}

fn event(id: &str) -> DeliveryRequest {
    DeliveryRequest::new(id, r#"{"orderId":"ord-1","status":"active"}"#).unwrap()
}

#[test]
fn the_receivers_check_accepts_the_specs_test_vector() {
    // The Standard Webhooks reference library's test vector.
    assert!(verify(
        SECRET,
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        "1649367553",
        br#"{"email":"test@example.com","username":"test_user"}"#,
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    ));
    assert!(!verify(
        SECRET,
        "msg_other",
        "1649367553",
        b"{}",
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    ));
}

#[tokio::test]
async fn a_2xx_is_delivered_by_one_signed_post_the_receiver_verifies() {
    let server = TestServer::start().await;
    let deliverer = Deliverer::new(config()).unwrap();
    let endpoint = Endpoint::new(&server.url("/hooks/orders"))
        .unwrap()
        .with_secrets(vec![Secret::parse(SECRET).unwrap()]);
    let request = event("evt-0001").with_header("x-tenant", "acme").unwrap();

    let delivery = deliverer.deliver(&endpoint, &request).await;

    assert_eq!(delivery.outcome, Outcome::Delivered);
    assert_eq!(delivery.status.map(|s| s.as_u16()), Some(200));
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let got = &requests[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/hooks/orders");
    assert_eq!(got.body, request.body());
    assert_eq!(header(got, "content-type"), "application/json");
    assert_eq!(header(got, "x-tenant"), "acme");
    assert_eq!(header(got, "webhook-id"), "evt-0001");
    assert_eq!(header(got, "idempotency-key"), "evt-0001");
    let timestamp: u64 = header(got, "webhook-timestamp").parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(timestamp) <= 300,
        "within the receivers' 5 minutes"
    );
    assert!(verify(
        SECRET,
        "evt-0001",
        header(got, "webhook-timestamp"),
        &got.body,
        header(got, "webhook-signature")
    ));
}

#[tokio::test]
async fn during_rotation_a_receiver_with_either_secret_verifies() {
    let server = TestServer::start().await;
    let deliverer = Deliverer::new(config()).unwrap();
    let new_secret = format!("whsec_{}", STANDARD.encode([42u8; 32]));
    let endpoint = Endpoint::new(&server.url("/")).unwrap().with_secrets(vec![
        Secret::parse(SECRET).unwrap(),
        Secret::parse(&new_secret).unwrap(),
    ]);
    deliverer.deliver(&endpoint, &event("evt-rot")).await;

    let got = &server.requests()[0];
    let signatures = header(got, "webhook-signature");
    assert_eq!(signatures.split(' ').count(), 2);
    let ts = header(got, "webhook-timestamp");
    assert!(verify(SECRET, "evt-rot", ts, &got.body, signatures));
    assert!(verify(&new_secret, "evt-rot", ts, &got.body, signatures));
}

#[tokio::test]
async fn an_endpoint_without_secrets_gets_an_unsigned_request_with_its_event_id() {
    let server = TestServer::start().await;
    let deliverer = Deliverer::new(config()).unwrap();
    let endpoint = Endpoint::new(&server.url("/")).unwrap();
    deliverer.deliver(&endpoint, &event("evt-plain")).await;

    let got = &server.requests()[0];
    assert_eq!(header(got, "idempotency-key"), "evt-plain");
    assert_eq!(header(got, "webhook-id"), "evt-plain");
    assert!(!got.headers.contains_key("webhook-signature"));
    assert!(!got.headers.contains_key("webhook-timestamp"));
}

/// The issue's "must show": 500 four times, then 200. Each failure's disposition is the
/// next tier of Svix's schedule; the fifth attempt is the one 2xx, and every attempt
/// carried the same webhook-id.
#[tokio::test]
async fn four_500s_then_200_is_one_2xx_after_the_first_four_tiers() {
    let server = TestServer::start().await;
    server.script(std::iter::repeat_n(Reply::Status(500), 4));
    let deliverer = Deliverer::new(config()).unwrap();
    let schedule = RetrySchedule::default();
    let mut rng = SmallRng::seed_from_u64(4);
    let endpoint = Endpoint::new(&server.url("/"))
        .unwrap()
        .with_secrets(vec![Secret::parse(SECRET).unwrap()]);
    let request = event("evt-flaky");

    let mut retries = vec![];
    let mut retries_done = 0;
    loop {
        let delivery = deliverer.deliver(&endpoint, &request).await;
        match schedule.dispose(&delivery.outcome, retries_done, None, &mut rng) {
            Disposition::Retry { tier, delay } => {
                assert_eq!(
                    delivery.outcome,
                    Outcome::Retryable {
                        class: ErrorClass::ServerError,
                        retry_after: None
                    }
                );
                retries.push((tier, delay));
                retries_done += 1;
            }
            Disposition::Delivered => break,
            other => panic!("{other:?}"),
        }
    }

    assert_eq!(retries.len(), 4);
    for (n, (tier, delay)) in retries.iter().enumerate() {
        assert_eq!(*tier, n as u32 + 1);
        let base = SVIX_DELAYS[n];
        assert!(
            *delay >= base.mul_f64(0.8) && *delay <= base.mul_f64(1.2),
            "{n}: {delay:?}"
        );
    }
    let requests = server.requests();
    let answered: Vec<u16> = requests.iter().map(|r| r.answered).collect();
    assert_eq!(answered, [500, 500, 500, 500, 200]);
    assert!(
        requests
            .iter()
            .all(|r| header(r, "webhook-id") == "evt-flaky")
    );
}

#[tokio::test]
async fn a_429s_retry_after_is_honoured() {
    let server = TestServer::start().await;
    server.script([
        Reply::RetryAfter(429, "120".to_owned()),
        Reply::RetryAfter(
            503,
            httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(900)),
        ),
    ]);
    let deliverer = Deliverer::new(config()).unwrap();
    let endpoint = Endpoint::new(&server.url("/")).unwrap();
    let schedule = RetrySchedule::default();
    let mut rng = SmallRng::seed_from_u64(1);

    let delivery = deliverer.deliver(&endpoint, &event("evt-429")).await;
    assert_eq!(
        delivery.outcome,
        Outcome::Retryable {
            class: ErrorClass::TooManyRequests,
            retry_after: Some(Duration::from_secs(120))
        }
    );
    assert_eq!(
        schedule.dispose(&delivery.outcome, 0, None, &mut rng),
        Disposition::Retry {
            tier: 1,
            delay: Duration::from_secs(120)
        }
    );

    let delivery = deliverer.deliver(&endpoint, &event("evt-429")).await;
    let Outcome::Retryable {
        class: ErrorClass::ServerError,
        retry_after: Some(after),
    } = delivery.outcome
    else {
        panic!("{:?}", delivery.outcome);
    };
    assert!(
        after > Duration::from_secs(890) && after <= Duration::from_secs(900),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_400_is_dead_lettered_at_once() {
    let server = TestServer::start().await;
    server.always(Reply::Status(400));
    let deliverer = Deliverer::new(config()).unwrap();
    let endpoint = Endpoint::new(&server.url("/")).unwrap();

    let delivery = deliverer.deliver(&endpoint, &event("evt-400")).await;

    let class = ErrorClass::ClientError;
    assert_eq!(delivery.outcome, Outcome::Permanent { class });
    assert_eq!(
        RetrySchedule::default().dispose(
            &delivery.outcome,
            0,
            None,
            &mut SmallRng::seed_from_u64(0)
        ),
        Disposition::DeadLetter {
            class,
            exhausted: false
        }
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_410_disables_the_endpoint_until_it_is_enabled_again() {
    let server = TestServer::start().await;
    server.script([Reply::Status(410)]);
    let deliverer = Deliverer::new(config()).unwrap();
    let endpoint = Endpoint::new(&server.url("/"))
        .unwrap()
        .with_id("gone-endpoint");
    let disabled = Outcome::EndpointDisabled {
        class: ErrorClass::Gone,
    };

    assert_eq!(
        deliverer.deliver(&endpoint, &event("evt-1")).await.outcome,
        disabled
    );
    assert_eq!(
        deliverer.deliver(&endpoint, &event("evt-2")).await.outcome,
        disabled
    );
    assert_eq!(
        server.requests().len(),
        1,
        "a disabled endpoint gets no request"
    );

    deliverer.enable(endpoint.id());
    let delivery = deliverer.deliver(&endpoint, &event("evt-2")).await;
    assert_eq!(delivery.outcome, Outcome::Delivered);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_stalled_endpoint_times_out_and_is_retried() {
    let server = TestServer::start().await;
    server.always(Reply::Stall(Duration::from_secs(10)));
    let deliverer = Deliverer::new(HttpConfig {
        timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        ..config()
    })
    .unwrap();
    let endpoint = Endpoint::new(&server.url("/")).unwrap();

    let delivery = deliverer.deliver(&endpoint, &event("evt-stall")).await;

    assert_eq!(
        delivery.outcome,
        Outcome::Retryable {
            class: ErrorClass::Timeout,
            retry_after: None
        }
    );
    assert_eq!(delivery.status, None);
    assert!(
        delivery.elapsed >= Duration::from_millis(300) && delivery.elapsed < Duration::from_secs(3)
    );
    let next = RetrySchedule::default().dispose(
        &delivery.outcome,
        0,
        None,
        &mut SmallRng::seed_from_u64(0),
    );
    assert_eq!(
        next,
        Disposition::Retry {
            tier: 1,
            delay: Duration::from_secs(60)
        },
        "a timeout waits the throttled minimum"
    );
}

#[tokio::test]
async fn a_closed_port_is_retried() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let deliverer = Deliverer::new(config()).unwrap();
    let endpoint = Endpoint::new(&format!("http://127.0.0.1:{port}/")).unwrap();

    let delivery = deliverer.deliver(&endpoint, &event("evt-closed")).await;

    assert_eq!(
        delivery.outcome,
        Outcome::Retryable {
            class: ErrorClass::Connect,
            retry_after: None
        }
    );
}

#[tokio::test]
async fn the_response_body_is_read_up_to_the_cap() {
    let server = TestServer::start().await;
    server.script([Reply::Body(100 * 1024), Reply::Body(1024)]);
    let deliverer = Deliverer::new(HttpConfig {
        response_max_bytes: 1024,
        ..config()
    })
    .unwrap();
    let endpoint = Endpoint::new(&server.url("/")).unwrap();

    let big = deliverer.deliver(&endpoint, &event("evt-big")).await;
    assert_eq!(big.outcome, Outcome::Delivered);
    assert_eq!((big.body.len(), big.truncated), (1024, true));

    let fits = deliverer.deliver(&endpoint, &event("evt-fits")).await;
    assert_eq!((fits.body.len(), fits.truncated), (1024, false));
}

#[tokio::test]
async fn deliveries_to_an_endpoint_reuse_a_kept_alive_connection() {
    let server = TestServer::start().await;
    let deliverer = Deliverer::new(config()).unwrap();
    let endpoint = Endpoint::new(&server.url("/")).unwrap();
    for n in 0..5 {
        let delivery = deliverer
            .deliver(&endpoint, &event(&format!("evt-{n}")))
            .await;
        assert_eq!(delivery.outcome, Outcome::Delivered);
    }
    assert_eq!(server.requests().len(), 5);
    assert_eq!(server.connections(), 1);
}
