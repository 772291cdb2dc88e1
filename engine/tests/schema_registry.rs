//! The schema-registry client and `AvroSerde::registered`, against a registry test double.
//!
//! Each test is the spec of one behaviour. The double ([`RegistryDouble`], in the project's
//! tests/support/registry_double.rs, shared with the worker tests) serves the Confluent
//! REST endpoints the client uses over real HTTP on 127.0.0.1, so requests, escaping, status
//! codes and error bodies all go through the wire; it counts requests per endpoint so that
//! tests can assert what the client's caches save.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use sluice_engine::Serde;
use sluice_engine::serde::AvroSerde;
use sluice_engine::serde::registry::{RegistryError, SchemaRegistryClient, error_codes};

#[path = "../../tests/support/registry_double.rs"]
mod registry_double;
use registry_double::*;

// ---------------------------------------------------------------------------------------------
// Schemas and types of the tests
// ---------------------------------------------------------------------------------------------

const ADMISSION_V1: &str = r#"{
    "type": "record", "name": "Admission", "namespace": "sluice.test",
    "fields": [
        {"name": "patient_id", "type": "string"},
        {"name": "ward", "type": "string"}
    ]
}"#;

/// v1 plus a field with a default: a BACKWARD-compatible evolution.
const ADMISSION_V2: &str = r#"{
    "type": "record", "name": "Admission", "namespace": "sluice.test",
    "fields": [
        {"name": "patient_id", "type": "string"},
        {"name": "ward", "type": "string"},
        {"name": "priority", "type": "int", "default": 3}
    ]
}"#;

/// v1 plus a field without a default: v1 data gives this reader no value for it.
const ADMISSION_NEW_FIELD_WITHOUT_DEFAULT: &str = r#"{
    "type": "record", "name": "Admission", "namespace": "sluice.test",
    "fields": [
        {"name": "patient_id", "type": "string"},
        {"name": "ward", "type": "string"},
        {"name": "priority", "type": "int"}
    ]
}"#;

/// v1 with `ward` turned from a string into an int: strings cannot be read as ints.
const ADMISSION_WARD_AS_INT: &str = r#"{
    "type": "record", "name": "Admission", "namespace": "sluice.test",
    "fields": [
        {"name": "patient_id", "type": "string"},
        {"name": "ward", "type": "int"}
    ]
}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AdmissionV1 {
    patient_id: String,
    ward: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AdmissionV2 {
    patient_id: String,
    ward: String,
    priority: i32,
}

fn schema(text: &str) -> Schema {
    Schema::parse_str(text).unwrap()
}

fn admission_v1(n: usize) -> AdmissionV1 {
    AdmissionV1 {
        patient_id: format!("P-{n:04}"),
        ward: "cardiology".to_string(),
    }
}

/// Records written by a v1 serde registered on `double` through its own client.
async fn v1_records(double: &RegistryDouble, subject: &str, count: usize) -> Vec<Vec<u8>> {
    let writer = AvroSerde::<AdmissionV1>::registered(
        Arc::new(double.client()),
        subject,
        schema(ADMISSION_V1),
    )
    .await
    .unwrap();
    (0..count)
        .map(|n| {
            writer
                .serialize("admissions", &admission_v1(n))
                .unwrap()
                .unwrap()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_returns_an_id_and_re_registering_the_same_schema_returns_it_again() {
    let double = RegistryDouble::start().await;
    let client = double.client();

    let id = client
        .register("admissions-value", &schema(ADMISSION_V1))
        .await
        .unwrap();
    let again = client
        .register("admissions-value", &schema(ADMISSION_V1))
        .await
        .unwrap();
    assert_eq!(again, id);
    assert_eq!(
        double.requests(REGISTER),
        1,
        "the repeat is answered from the cache"
    );

    // A client without the cache gets the same id from the registry itself.
    let from_registry = double
        .client()
        .register("admissions-value", &schema(ADMISSION_V1))
        .await
        .unwrap();
    assert_eq!(from_registry, id);
    assert_eq!(double.requests(REGISTER), 2);

    // A different schema is a different id.
    let other = client
        .register("other-value", &schema(r#""string""#))
        .await
        .unwrap();
    assert_ne!(other, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_by_id_is_fetched_once_then_served_from_the_cache() {
    let double = RegistryDouble::start().await;
    let id = double
        .client()
        .register("admissions-value", &schema(ADMISSION_V1))
        .await
        .unwrap();

    let client = double.client();
    for _ in 0..5 {
        let fetched = client.schema_by_id(id).await.unwrap();
        assert_eq!(*fetched, schema(ADMISSION_V1));
    }
    assert_eq!(double.requests(SCHEMA_BY_ID), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_schema_id_gives_error_40403_and_is_asked_again_next_time() {
    let double = RegistryDouble::start().await;
    let client = double.client();

    let err = client.schema_by_id(999).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(
        err.error_code(),
        Some(error_codes::SCHEMA_NOT_FOUND),
        "{err}"
    );

    // Failures are not cached: the schema may be registered in between.
    let _ = client.schema_by_id(999).await.unwrap_err();
    assert_eq!(double.requests(SCHEMA_BY_ID), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_returns_the_newest_version() {
    let double = RegistryDouble::start().await;
    let client = double.client();
    let v1 = client
        .register("admissions-value", &schema(ADMISSION_V1))
        .await
        .unwrap();
    let v2 = client
        .register("admissions-value", &schema(ADMISSION_V2))
        .await
        .unwrap();
    assert_ne!(v1, v2);

    let latest = client.latest("admissions-value").await.unwrap();
    assert_eq!(latest.subject, "admissions-value");
    assert_eq!(latest.id, v2);
    assert_eq!(latest.version, 2);
    assert_eq!(*latest.schema, schema(ADMISSION_V2));
    assert_eq!(double.requests(LATEST), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_field_with_a_default_is_a_compatible_evolution() {
    let double = RegistryDouble::start().await;
    let client = double.client();
    client
        .register("admissions-value", &schema(ADMISSION_V1))
        .await
        .unwrap();

    let compatible = client
        .check_compatibility("admissions-value", &schema(ADMISSION_V2))
        .await
        .unwrap();
    assert!(compatible);
    assert_eq!(double.requests(COMPATIBILITY), 1);

    let v2 = client
        .register("admissions-value", &schema(ADMISSION_V2))
        .await;
    assert!(v2.is_ok(), "{v2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_field_without_a_default_is_rejected_with_409() {
    let double = RegistryDouble::start().await;
    let client = double.client();
    client
        .register("admissions-value", &schema(ADMISSION_V1))
        .await
        .unwrap();
    let evolved = schema(ADMISSION_NEW_FIELD_WITHOUT_DEFAULT);

    let compatible = client
        .check_compatibility("admissions-value", &evolved)
        .await
        .unwrap();
    assert!(!compatible);

    let err = client
        .register("admissions-value", &evolved)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert_eq!(
        err.error_code(),
        Some(error_codes::INCOMPATIBLE_SCHEMA),
        "{err}"
    );
    assert!(err.to_string().contains("incompatible"), "{err}");
    assert!(
        err.to_string()
            .contains("/subjects/admissions-value/versions"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_field_type_is_rejected_with_409() {
    let double = RegistryDouble::start().await;
    let client = double.client();
    client
        .register("admissions-value", &schema(ADMISSION_V1))
        .await
        .unwrap();
    let evolved = schema(ADMISSION_WARD_AS_INT);

    assert!(
        !client
            .check_compatibility("admissions-value", &evolved)
            .await
            .unwrap()
    );
    let err = client
        .register("admissions-value", &evolved)
        .await
        .unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(error_codes::INCOMPATIBLE_SCHEMA),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_subject_gives_error_40401() {
    let double = RegistryDouble::start().await;
    let client = double.client();

    let err = client.latest("nobody-value").await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(
        err.error_code(),
        Some(error_codes::SUBJECT_NOT_FOUND),
        "{err}"
    );
    assert!(
        err.to_string().contains("Subject 'nobody-value' not found"),
        "{err}"
    );

    let err = client
        .check_compatibility("nobody-value", &schema(ADMISSION_V1))
        .await
        .unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(error_codes::SUBJECT_NOT_FOUND),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_finds_a_registered_schema_and_registers_nothing() {
    let double = RegistryDouble::start().await;
    let id = double
        .client()
        .register("admissions-value", &schema(ADMISSION_V1))
        .await
        .unwrap();

    let client = double.client();
    assert_eq!(
        client
            .lookup("admissions-value", &schema(ADMISSION_V1))
            .await
            .unwrap(),
        id
    );
    let err = client
        .lookup("admissions-value", &schema(ADMISSION_V2))
        .await
        .unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(error_codes::SCHEMA_NOT_FOUND),
        "{err}"
    );
    assert_eq!(client.latest("admissions-value").await.unwrap().version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_names_are_escaped_into_one_path_segment() {
    let double = RegistryDouble::start().await;
    let client = double.client();
    let subject = "ward/7 admissions?v=1#value";

    let id = client
        .register(subject, &schema(ADMISSION_V1))
        .await
        .unwrap();
    let latest = client.latest(subject).await.unwrap();
    assert_eq!(
        latest.subject, subject,
        "the double received the subject intact"
    );
    assert_eq!(latest.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_credentials_are_sent_with_every_request() {
    let double = RegistryDouble::start().await;
    let client = double.client().with_basic_auth("svc", "hunter2");
    client
        .register("admissions-value", &schema(ADMISSION_V1))
        .await
        .unwrap();

    let authorization = double.state.last_authorization.lock().unwrap().clone();
    // base64("svc:hunter2")
    assert_eq!(authorization.as_deref(), Some("Basic c3ZjOmh1bnRlcjI="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_fails_fast_with_an_error_naming_it() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = SchemaRegistryClient::new(&format!("http://127.0.0.1:{closed_port}"))
        .unwrap()
        .with_timeout(Duration::from_secs(60));

    let started = Instant::now();
    let err = client
        .register("admissions-value", &schema(ADMISSION_V1))
        .await
        .unwrap_err();
    // Fast means not waiting out the timeout: the refusal ends the call, however busy
    // the machine is.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, RegistryError::Transport { .. }),
        "connection refused is a transport error: {err}"
    );
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{closed_port}")), "{text}");
    assert!(
        text.starts_with("could not reach the schema registry"),
        "{text}"
    );

    let serde = AvroSerde::<AdmissionV1>::registered(
        Arc::new(client),
        "admissions-value",
        schema(ADMISSION_V1),
    )
    .await;
    assert!(matches!(serde, Err(RegistryError::Transport { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_never_answers_times_out_at_the_configured_bound() {
    // Accepts connections and holds them without ever answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = SchemaRegistryClient::new(&format!("http://{address}"))
        .unwrap()
        .with_timeout(Duration::from_millis(300));

    let started = Instant::now();
    let err = client.schema_by_id(1).await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, RegistryError::Timeout { .. }), "{err}");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    // Bounded, not a hang: the upper bound leaves a busy machine room to schedule.
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert!(err.to_string().contains("/schemas/ids/1"), "{err}");
    silent.abort();
}

// ---------------------------------------------------------------------------------------------
// AvroSerde::registered
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_serde_reads_v1_records_with_the_default_and_fetches_v1_exactly_once() {
    let double = RegistryDouble::start().await;
    let records = v1_records(&double, "admissions-value", 200).await;
    let v1_id = u32::from_be_bytes(records[0][1..5].try_into().unwrap());

    // The reader is another process: its own client, empty caches.
    let reader = AvroSerde::<AdmissionV2>::registered(
        Arc::new(double.client()),
        "admissions-value",
        schema(ADMISSION_V2),
    )
    .await
    .unwrap();
    assert_ne!(reader.schema_id(), v1_id);
    assert_eq!(*reader.schema(), schema(ADMISSION_V2));

    // Decoding happens on plain threads, as on stream threads; four at once, all missing
    // the v1 schema at first.
    let reader = Arc::new(reader);
    let records = Arc::new(records);
    let decoders: Vec<_> = (0..4)
        .map(|thread| {
            let (reader, records) = (Arc::clone(&reader), Arc::clone(&records));
            std::thread::spawn(move || {
                for n in (thread..records.len()).step_by(4) {
                    let admission = reader.deserialize("admissions", Some(&records[n])).unwrap();
                    assert_eq!(
                        admission,
                        AdmissionV2 {
                            patient_id: format!("P-{n:04}"),
                            ward: "cardiology".to_string(),
                            priority: 3,
                        }
                    );
                }
            })
        })
        .collect();
    for decoder in decoders {
        tokio::task::spawn_blocking(move || decoder.join().unwrap())
            .await
            .unwrap();
    }
    assert_eq!(double.requests(SCHEMA_BY_ID), 1);

    // Its own records go through without the registry.
    let own = AdmissionV2 {
        patient_id: "P-9".into(),
        ward: "icu".into(),
        priority: 1,
    };
    let bytes = reader.serialize("admissions", &own).unwrap();
    assert_eq!(
        reader.deserialize("admissions", bytes.as_deref()).unwrap(),
        own
    );
    assert_eq!(double.requests(SCHEMA_BY_ID), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_serde_reads_v2_records_by_dropping_the_new_field() {
    let double = RegistryDouble::start().await;
    let v1 = Arc::new(
        AvroSerde::<AdmissionV1>::registered(
            Arc::new(double.client()),
            "admissions-value",
            schema(ADMISSION_V1),
        )
        .await
        .unwrap(),
    );
    let v2 = AvroSerde::<AdmissionV2>::registered(
        Arc::new(double.client()),
        "admissions-value",
        schema(ADMISSION_V2),
    )
    .await
    .unwrap();
    let bytes = v2
        .serialize(
            "admissions",
            &AdmissionV2 {
                patient_id: "P-1".into(),
                ward: "icu".into(),
                priority: 1,
            },
        )
        .unwrap();

    let read = tokio::task::spawn_blocking(move || v1.deserialize("admissions", bytes.as_deref()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read,
        AdmissionV1 {
            patient_id: "P-1".into(),
            ward: "icu".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_miss_on_a_multi_thread_runtime_worker_blocks_in_place() {
    let double = RegistryDouble::start().await;
    let records = v1_records(&double, "admissions-value", 1).await;
    let reader = AvroSerde::<AdmissionV2>::registered(
        Arc::new(double.client()),
        "admissions-value",
        schema(ADMISSION_V2),
    )
    .await
    .unwrap();

    // Runs on a runtime worker thread: must neither panic nor starve the double's server.
    let decoded = tokio::spawn(async move { reader.deserialize("admissions", Some(&records[0])) })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decoded.priority, 3);
    assert_eq!(double.requests(SCHEMA_BY_ID), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_cache_miss_on_a_current_thread_runtime_thread_fails_instead_of_hanging() {
    let double = RegistryDouble::start().await;
    let records = v1_records(&double, "admissions-value", 1).await;
    let client = double.client().with_timeout(Duration::from_millis(200));
    let reader = AvroSerde::<AdmissionV2>::registered(
        Arc::new(client),
        "admissions-value",
        schema(ADMISSION_V2),
    )
    .await
    .unwrap();

    // This thread is the only one driving the runtime that would serve the fetch.
    let started = Instant::now();
    let err = reader
        .deserialize("admissions", Some(&records[0]))
        .unwrap_err();
    // Bounded, not a hang (the wait itself is the client's timeout plus a second).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(err.message.contains("current-thread"), "{}", err.message);
    assert!(err.message.contains("schema id"), "{}", err.message);

    // From a blocking-pool thread the same runtime serves it.
    let reader = Arc::new(reader);
    let decoded =
        tokio::task::spawn_blocking(move || reader.deserialize("admissions", Some(&records[0])))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(decoded.priority, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_an_id_the_registry_does_not_know_is_a_clear_error() {
    let double = RegistryDouble::start().await;
    let reader = Arc::new(
        AvroSerde::<AdmissionV1>::registered(
            Arc::new(double.client()),
            "admissions-value",
            schema(ADMISSION_V1),
        )
        .await
        .unwrap(),
    );
    let mut bytes = v1_records(&double, "admissions-value", 1).await.remove(0);
    bytes[1..5].copy_from_slice(&4242u32.to_be_bytes());

    let err = tokio::task::spawn_blocking(move || {
        reader.deserialize("admissions", Some(&bytes)).unwrap_err()
    })
    .await
    .unwrap();
    assert!(err.message.contains("schema id 4242"), "{}", err.message);
    assert!(err.message.contains("40403"), "{}", err.message);
    assert!(!err.message.contains("P-0000"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_an_incompatible_serde_schema_fails_with_409() {
    let double = RegistryDouble::start().await;
    let _v1 = v1_records(&double, "admissions-value", 1).await;

    let result = AvroSerde::<AdmissionV2>::registered(
        Arc::new(double.client()),
        "admissions-value",
        schema(ADMISSION_NEW_FIELD_WITHOUT_DEFAULT),
    )
    .await;
    let err = result.err().expect("an incompatible schema is refused");
    assert_eq!(
        err.error_code(),
        Some(error_codes::INCOMPATIBLE_SCHEMA),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_makes_a_transient_error_so_the_record_is_retried_not_dead_lettered()
 {
    let double = RegistryDouble::start().await;
    let v1_bytes = v1_records(&double, "admissions-value", 1).await.remove(0);
    let reader = Arc::new(
        AvroSerde::<AdmissionV2>::registered(
            Arc::new(double.client()),
            "admissions-value",
            schema(ADMISSION_V2),
        )
        .await
        .unwrap(),
    );
    // The reader has never seen the v1 writer schema; now the registry goes away.
    drop(double);

    let err = tokio::task::spawn_blocking(move || {
        reader
            .deserialize("admissions", Some(&v1_bytes))
            .unwrap_err()
    })
    .await
    .unwrap();
    assert!(err.transient, "{}", err.message);
    assert!(
        err.message.contains("cannot fetch Avro writer schema id"),
        "{}",
        err.message
    );
}
