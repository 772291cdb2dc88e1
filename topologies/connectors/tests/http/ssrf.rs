//! The SSRF guard end to end: destinations nobody allowed get no connection at all.

use std::time::Duration;

use sluice_connectors::http::{
    Deliverer, DeliveryRequest, Endpoint, ErrorClass, HttpConfig, Outcome,
};

use crate::server::{Reply, TestServer, config};

fn unguarded() -> Deliverer {
    // The defaults: nothing allowed.
    Deliverer::new(HttpConfig::default()).unwrap()
}

fn event() -> DeliveryRequest {
    DeliveryRequest::new("evt-ssrf", "{}").unwrap()
}

const FORBIDDEN: Outcome = Outcome::Permanent {
    class: ErrorClass::ForbiddenDestination,
};

async fn assert_refused_without_a_connection(server: &TestServer, url: &str) {
    let delivery = unguarded()
        .deliver(&Endpoint::new(url).unwrap(), &event())
        .await;
    assert_eq!(delivery.outcome, FORBIDDEN, "{url}");
    assert_eq!(delivery.status, None);
    assert_eq!(delivery.elapsed, Duration::ZERO, "no request was sent");
    assert_eq!(
        server.connections(),
        0,
        "{url}: the server saw a connection"
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn ipv4_loopback_is_refused_without_a_connection() {
    let server = TestServer::start().await;
    assert_refused_without_a_connection(&server, &server.url("/hook")).await;
}

#[tokio::test]
async fn ipv6_loopback_is_refused_without_a_connection() {
    let server = TestServer::start_on("[::1]:0").await;
    let url = format!("http://[::1]:{}/hook", server.addr.port());
    assert_refused_without_a_connection(&server, &url).await;
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_without_a_connection() {
    let server = TestServer::start().await;
    let url = format!("http://localhost:{}/hook", server.addr.port());
    assert_refused_without_a_connection(&server, &url).await;
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused_before_any_connection() {
    // Nothing listens there for us, and nothing may be sent there: the refusal must come
    // before a connection is even tried, which a zero elapsed time and no status show.
    for url in [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/hook",
        "http://[fd00::1]/hook",
    ] {
        let delivery = unguarded()
            .deliver(&Endpoint::new(url).unwrap(), &event())
            .await;
        assert_eq!(delivery.outcome, FORBIDDEN, "{url}");
        assert_eq!(
            (delivery.status, delivery.elapsed),
            (None, Duration::ZERO),
            "{url}"
        );
    }
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_a_permanent_answer_and_never_followed() {
    let server = TestServer::start().await;
    server.always(Reply::Redirect("http://10.0.0.1/internal"));
    let deliverer = Deliverer::new(config()).unwrap();

    let delivery = deliverer
        .deliver(&Endpoint::new(&server.url("/hook")).unwrap(), &event())
        .await;

    assert_eq!(
        delivery.outcome,
        Outcome::Permanent {
            class: ErrorClass::Redirect
        }
    );
    assert_eq!(delivery.status.map(|s| s.as_u16()), Some(302));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_allowed_name_is_connected_to_at_its_checked_address() {
    // The client resolves nothing itself: `localhost` reaches the server only through the
    // addresses the guard checked and pinned.
    let server = TestServer::start().await;
    let deliverer = Deliverer::new(config()).unwrap();
    let url = format!("http://localhost:{}/hook", server.addr.port());

    let delivery = deliverer
        .deliver(&Endpoint::new(&url).unwrap(), &event())
        .await;

    assert_eq!(delivery.outcome, Outcome::Delivered);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_retryable() {
    let delivery = unguarded()
        .deliver(
            &Endpoint::new("http://no-such-host.invalid/hook").unwrap(),
            &event(),
        )
        .await;
    assert_eq!(
        delivery.outcome,
        Outcome::Retryable {
            class: ErrorClass::Dns,
            retry_after: None
        }
    );
}
