//! Per-endpoint protection end to end: the circuit breaker, the limits, auto-disable.

use std::time::Duration;

use sluice_connectors::http::{
    BreakerConfig, CircuitState, Deliverer, DeliveryRequest, Endpoint, ErrorClass, HttpConfig,
    Outcome, RateLimit,
};

use crate::server::{Reply, TestServer, config};

fn event(n: usize) -> DeliveryRequest {
    DeliveryRequest::new(&format!("evt-{n}"), "{}").unwrap()
}

#[tokio::test]
async fn the_circuit_opens_refuses_without_requests_and_a_successful_probe_closes_it() {
    let server = TestServer::start().await;
    server.always(Reply::Status(503));
    let cooldown = Duration::from_millis(300);
    let deliverer = Deliverer::new(HttpConfig {
        breaker: BreakerConfig {
            consecutive_failures: 3,
            cooldown,
            ..BreakerConfig::default()
        },
        ..config()
    })
    .unwrap();
    let endpoint = Endpoint::new(&server.url("/")).unwrap().with_id("flaky");

    for n in 0..3 {
        let outcome = deliverer.deliver(&endpoint, &event(n)).await.outcome;
        assert_eq!(outcome.class(), Some(ErrorClass::ServerError));
    }
    assert_eq!(deliverer.circuit_state(endpoint.id()), CircuitState::Open);

    let refused = deliverer.deliver(&endpoint, &event(3)).await;
    let Outcome::Retryable {
        class: ErrorClass::CircuitOpen,
        retry_after: Some(rest),
    } = refused.outcome
    else {
        panic!("{:?}", refused.outcome);
    };
    assert!(rest <= cooldown);
    assert_eq!(server.requests().len(), 3, "an open circuit sends nothing");

    tokio::time::sleep(cooldown).await;
    server.always(Reply::Status(200));
    assert_eq!(
        deliverer.circuit_state(endpoint.id()),
        CircuitState::HalfOpen
    );
    let probe = deliverer.deliver(&endpoint, &event(4)).await;
    assert_eq!(probe.outcome, Outcome::Delivered);
    assert_eq!(deliverer.circuit_state(endpoint.id()), CircuitState::Closed);
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn a_failed_probe_opens_the_circuit_again() {
    let server = TestServer::start().await;
    server.always(Reply::Status(500));
    let cooldown = Duration::from_millis(200);
    let deliverer = Deliverer::new(HttpConfig {
        breaker: BreakerConfig {
            consecutive_failures: 1,
            cooldown,
            ..BreakerConfig::default()
        },
        ..config()
    })
    .unwrap();
    let endpoint = Endpoint::new(&server.url("/")).unwrap();

    deliverer.deliver(&endpoint, &event(0)).await;
    tokio::time::sleep(cooldown).await;
    deliverer.deliver(&endpoint, &event(1)).await;
    assert_eq!(deliverer.circuit_state(endpoint.id()), CircuitState::Open);
    let refused = deliverer.deliver(&endpoint, &event(2)).await.outcome;
    assert_eq!(refused.class(), Some(ErrorClass::CircuitOpen));
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn the_concurrency_limit_bounds_the_requests_in_flight() {
    let server = TestServer::start().await;
    server.always(Reply::Stall(Duration::from_millis(150)));
    let deliverer = Deliverer::new(HttpConfig {
        endpoint_concurrency: 2,
        ..config()
    })
    .unwrap();
    let endpoint = Endpoint::new(&server.url("/")).unwrap();

    let deliveries = (0..6).map(|n| {
        let (deliverer, endpoint) = (deliverer.clone(), endpoint.clone());
        async move { deliverer.deliver(&endpoint, &event(n)).await }
    });
    let outcomes: Vec<_> = spawn_all(deliveries).await;

    assert!(outcomes.iter().all(|d| d.outcome == Outcome::Delivered));
    assert_eq!(server.requests().len(), 6);
    assert_eq!(server.max_in_flight(), 2);
}

/// Runs futures as tasks of their own, all at once, and collects their outputs in order.
async fn spawn_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[tokio::test]
async fn the_rate_limit_refuses_a_request_whose_turn_is_too_far_off() {
    let server = TestServer::start().await;
    let deliverer = Deliverer::new(HttpConfig {
        rate_limit: Some(RateLimit {
            per_second: 1.try_into().unwrap(),
            burst: 1.try_into().unwrap(),
        }),
        rate_max_wait: Duration::from_millis(100),
        ..config()
    })
    .unwrap();
    let endpoint = Endpoint::new(&server.url("/")).unwrap();

    assert_eq!(
        deliverer.deliver(&endpoint, &event(0)).await.outcome,
        Outcome::Delivered
    );
    let limited = deliverer.deliver(&endpoint, &event(1)).await.outcome;
    let Outcome::Retryable {
        class: ErrorClass::RateLimited,
        retry_after: Some(wait),
    } = limited
    else {
        panic!("{limited:?}");
    };
    assert!(
        wait > Duration::from_millis(800) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    assert_eq!(server.requests().len(), 1);
    assert_eq!(
        deliverer.circuit_state(endpoint.id()),
        CircuitState::Closed,
        "our own limit is no failure"
    );
}

#[tokio::test]
async fn an_endpoint_failing_longer_than_disable_after_is_disabled() {
    let server = TestServer::start().await;
    server.always(Reply::Status(502));
    let deliverer = Deliverer::new(HttpConfig {
        disable_after: Duration::from_millis(100),
        ..config()
    })
    .unwrap();
    let endpoint = Endpoint::new(&server.url("/")).unwrap();

    let first = deliverer.deliver(&endpoint, &event(0)).await.outcome;
    assert_eq!(first.class(), Some(ErrorClass::ServerError));
    tokio::time::sleep(Duration::from_millis(120)).await;
    let disabled = Outcome::EndpointDisabled {
        class: ErrorClass::FailingTooLong,
    };
    assert_eq!(
        deliverer.deliver(&endpoint, &event(1)).await.outcome,
        disabled
    );
    assert_eq!(
        deliverer.deliver(&endpoint, &event(2)).await.outcome,
        disabled
    );
    assert_eq!(server.requests().len(), 2);
    assert_eq!(
        deliverer.disabled(endpoint.id()),
        Some(ErrorClass::FailingTooLong)
    );
}
