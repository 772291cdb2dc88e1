//! The metrics a delivery records: names and labels, never a path, query or payload.

use std::time::Duration;

use sluice_connectors::http::{Deliverer, DeliveryRequest, Endpoint};

use crate::server::{Reply, TestServer, config};

#[tokio::test]
async fn deliveries_are_counted_by_endpoint_outcome_class_and_status_class() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // The test runs on one thread (a current-thread runtime), where this recorder is
    // the default while the guard lives.
    let _guard = metrics::set_default_local_recorder(&recorder);

    let server = TestServer::start().await;
    server.script([Reply::Status(200), Reply::Status(503), Reply::Status(404)]);
    let deliverer = Deliverer::new(config()).unwrap();
    let secret_path = "/hooks/patient-12345?token=s3cr3t";
    let endpoint = Endpoint::new(&server.url(secret_path))
        .unwrap()
        .with_id("pharmacy-acme");
    let request = DeliveryRequest::new("evt-m", r#"{"ssn":"078-05-1120"}"#).unwrap();
    for _ in 0..3 {
        deliverer.deliver(&endpoint, &request).await;
    }
    let unnamed = Endpoint::new("http://10.0.0.1/internal?key=k3y").unwrap();
    Deliverer::new(Default::default())
        .unwrap()
        .deliver(&unnamed, &request)
        .await;
    tokio::time::sleep(Duration::from_millis(10)).await;

    let text = handle.render();
    for line in [
        r#"sluice_http_deliveries_total{endpoint="pharmacy-acme",outcome="delivered",class="none",status_class="2xx"} 1"#,
        r#"sluice_http_deliveries_total{endpoint="pharmacy-acme",outcome="retryable",class="server-error",status_class="5xx"} 1"#,
        r#"sluice_http_deliveries_total{endpoint="pharmacy-acme",outcome="permanent",class="client-error",status_class="4xx"} 1"#,
        r#"sluice_http_deliveries_total{endpoint="10.0.0.1",outcome="permanent",class="forbidden-destination",status_class="none"} 1"#,
        r#"sluice_http_attempt_duration_seconds_count{endpoint="pharmacy-acme"} 3"#,
        r#"sluice_http_attempt_duration_seconds_count{endpoint="10.0.0.1"} 0"#,
        r#"sluice_http_requests_in_flight{endpoint="pharmacy-acme"} 0"#,
        r#"sluice_http_circuit_state{endpoint="pharmacy-acme"} 0"#,
        r#"sluice_http_endpoint_disabled{endpoint="pharmacy-acme"} 0"#,
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    for leak in [
        "patient-12345",
        "s3cr3t",
        "k3y",
        "078-05-1120",
        "evt-m",
        "/hooks",
        "internal",
    ] {
        assert!(!text.contains(leak), "`{leak}` in:\n{text}");
    }
}
