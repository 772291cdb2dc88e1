//! A MongoDB that cannot be reached answers lookups with transient errors, soon: the task
//! pauses and retries instead of dead-lettering the record or waiting for the driver's
//! 30-second default. No server is needed: a port nobody listens on, and a listener that
//! accepts connections and never says a word.

use std::time::{Duration, Instant};

use serde::Deserialize;
use sluice_connectors::mongo::{MongoConfig, MongoLookup};
use sluice_engine::lookup::Lookup;

#[derive(Clone, Debug, Deserialize)]
struct Drug {
    #[allow(dead_code)]
    ndc: String,
}

async fn lookup_at(port: u16) -> MongoLookup<String, Drug> {
    let client = MongoConfig::new(format!("mongodb://app:hunter2@127.0.0.1:{port}"))
        .unwrap()
        .with_server_selection_timeout(Duration::from_millis(500))
        .with_connect_timeout(Duration::from_millis(500))
        .with_request_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    MongoLookup::by_field(&client, "reference", "drug_reference", "ndc")
}

#[tokio::test]
async fn nothing_listening_is_a_transient_error_within_the_selection_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // the listener is dropped: nothing listens there now
    let drugs = lookup_at(port).await;
    let started = Instant::now();
    let error = drugs.lookup(&"60214410090".to_string()).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let message = error.message();
    assert!(
        message.starts_with("mongodb reference.drug_reference: no server available within 500 ms"),
        "{message}"
    );
    assert!(message.contains("127.0.0.1"), "{message}");
    for secret in ["hunter2", "60214410090"] {
        assert!(!message.contains(secret), "{message}");
    }
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_transient_error_too() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection, answering nothing.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let drugs = lookup_at(port).await;
    let started = Instant::now();
    let error = drugs.lookup(&"60214410090".to_string()).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(!error.message().contains("hunter2"), "{error}");
    silent.abort();
}
