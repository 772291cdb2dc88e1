//! A worker with a schema registry, on the test broker: output schemas registered at start,
//! records written with the registry's id, inputs decoded by the id each one carries, an
//! unknown id dead-lettered, a registry that is down waited out.
//!
//! The registry is a test double (tests/support/registry_double.rs), because no
//! Confluent-compatible registry server can be installed here; the broker is real, and
//! what the worker writes is also decoded by a second implementation, Python's fastavro.

#[path = "support/registry_double.rs"]
mod registry_double;
#[path = "support/secantus.rs"]
mod secantus;
mod support;

use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use registry_double::{REGISTER, RegistryDouble, SCHEMA_BY_ID};
use sluice_engine::serde::{AvroSerde, JsonSerde, Schemas, Serdes};
use sluice_engine::{ErrorKind, Serde, Topology, TopologyBuilder};
use sluice_runtime::Worker;
use sluice_topologies::canonical::{self, MedicationOrder};
use sluice_topologies::catalog;
use sluice_topologies::normalization::{EHR_TOPIC, OUTPUT_TOPIC, PHARMACY_TOPIC};
use support::{TestBroker, produce_orders, read_committed, wait_until};

/// A runtime for the double's server, kept running beside the synchronous test.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn normalization_registers_its_output_schema_and_writes_the_registry_id() {
    let broker = TestBroker::start();
    broker.create_topics(&[EHR_TOPIC, PHARMACY_TOPIC], 2);
    let rt = runtime();
    let double = rt.block_on(RegistryDouble::start());
    // The double hands out ids in order: take a few so the worker's id is not 1, the
    // local id every registry-less worker writes.
    for n in 0..3 {
        let other = Schema::parse_str(&format!(
            r#"{{"type":"record","name":"Other{n}","fields":[{{"name":"a","type":"int"}}]}}"#
        ))
        .unwrap();
        rt.block_on(
            double
                .client()
                .register(&format!("unrelated-{n}-value"), &other),
        )
        .unwrap();
    }
    let dir = tempdir("registers");
    let url = double.base_url.clone();
    let config = broker.worker_config(
        "registry-normalization",
        &dir,
        &[
            ("schema.registry.url", &url),
            ("schema.registry.basic.auth.user.info", "sluice:s3cret"),
        ],
    );
    let normalization = catalog()
        .into_iter()
        .find(|t| t.name == "normalization")
        .unwrap();
    let worker = Worker::start_with(config, normalization.build).unwrap();
    // Registered at start, before any record.
    assert_eq!(double.requests(REGISTER), 4);
    assert_eq!(
        double.state.last_authorization.lock().unwrap().as_deref(),
        Some("Basic c2x1aWNlOnMzY3JldA==")
    );
    let inputs = produce_orders(&broker.brokers, 50, 0.0, 3);
    wait_until("every order normalized", Duration::from_secs(60), || {
        read_committed(&broker.brokers, OUTPUT_TOPIC).len() as u64 == inputs.total
    });
    worker.stop();
    worker.join().unwrap();

    let registered = rt
        .block_on(double.client().latest("canonical.medication-orders-value"))
        .unwrap();
    assert_eq!(registered.id, 4);
    // Another process, with a client of its own, decodes by the id each record carries.
    let reader = rt
        .block_on(AvroSerde::<MedicationOrder>::reading(
            Arc::new(double.client()),
            "canonical.medication-orders-value",
            canonical::schema().clone(),
        ))
        .unwrap();
    let mut written = Vec::new();
    for record in read_committed(&broker.brokers, OUTPUT_TOPIC) {
        let value = record.value.unwrap();
        assert_eq!(value[0], 0, "the Confluent wire format's magic byte");
        assert_eq!(u32::from_be_bytes(value[1..5].try_into().unwrap()), 4);
        let order = reader.deserialize(OUTPUT_TOPIC, Some(&value)).unwrap();
        assert!(inputs.valid_keys.contains(&order.order_id));
        written.push((value, order));
    }

    // A second implementation reads the same bytes: fastavro, with the schema fetched
    // from the registry by the id in each record, as a Python consumer would.
    let decoded = decode_with_fastavro(&double.base_url, written.iter().map(|(v, _)| v));
    assert_eq!(decoded.len(), written.len());
    for (python, (_, order)) in decoded.iter().zip(&written) {
        assert_eq!(python["orderId"], order.order_id.as_str());
        assert_eq!(python["patientId"], order.patient_id.as_str());
        assert_eq!(python["ndc"], order.medication.ndc.as_str());
        assert_eq!(python["status"], order.status.as_str());
        assert_eq!(python["createdAtMillis"], order.created_at);
        let change = order
            .change_type
            .unwrap()
            .header_value()
            .to_ascii_uppercase();
        assert_eq!(python["changeType"], change.as_str());
    }
}

/// Decodes wire-format records with Python's fastavro (installed by
/// scripts/install-test-servers.sh), fetching each writer schema from `registry`.
fn decode_with_fastavro<'a>(
    registry: &str,
    records: impl Iterator<Item = &'a Vec<u8>>,
) -> Vec<serde_json::Value> {
    const SCRIPT: &str = r#"
import io, json, struct, sys, urllib.request
import fastavro

registry = sys.argv[1]
schemas = {}
out = []
for line in sys.stdin:
    data = bytes.fromhex(line.strip())
    assert data[0] == 0, "magic byte"
    (schema_id,) = struct.unpack(">I", data[1:5])
    if schema_id not in schemas:
        with urllib.request.urlopen(f"{registry}/schemas/ids/{schema_id}") as answer:
            schemas[schema_id] = fastavro.parse_schema(json.loads(json.load(answer)["schema"]))
    order = fastavro.schemaless_reader(io.BytesIO(data[5:]), schemas[schema_id])
    out.append({
        "orderId": order["orderId"],
        "patientId": order["patientId"],
        "ndc": order["medication"]["ndc"],
        "status": order["status"],
        "changeType": order["changeType"],
        "createdAtMillis": int(order["createdAt"].timestamp() * 1000 + 0.5),
    })
print(json.dumps(out))
"#;
    let python = secantus::venv_dir().join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs fastavro",
        python.display()
    );
    let mut child = std::process::Command::new(python)
        .args(["-c", SCRIPT, registry])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for record in records {
            let hex: String = record.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(stdin, "{hex}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "fastavro could not decode the records"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const ORDERS_IN: &str = "registry.orders";
const ORDER_IDS_OUT: &str = "registry.order-ids";
const DEAD_LETTERS: &str = "registry-reader.dlq";

/// Reads canonical orders through the registry and writes their ids as JSON.
fn reader_topology(schemas: &Schemas) -> Topology {
    let builder = TopologyBuilder::new("registry-reader");
    let input = schemas
        .input_serde::<MedicationOrder>(ORDERS_IN, canonical::schema(), 1)
        .unwrap();
    builder
        .source("orders", &[ORDERS_IN], Serdes::string(), input)
        .map_values("order-id", |order| order.order_id.clone())
        .to(
            "ids",
            ORDER_IDS_OUT,
            Serdes::string(),
            JsonSerde::<String>::new(),
        );
    builder.build().unwrap()
}

/// The canonical schema plus a field with a default: a compatible next version.
fn canonical_v2() -> Schema {
    let mut json: serde_json::Value = serde_json::from_str(canonical::SCHEMA_JSON).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"name": "note", "type": "string", "default": ""}
        ));
    Schema::parse(&json).unwrap()
}

#[test]
fn inputs_are_decoded_by_their_id_an_unknown_id_is_dead_lettered_and_a_down_registry_is_waited_out()
{
    let broker = TestBroker::start();
    broker.create_topics(&[ORDERS_IN, ORDER_IDS_OUT, DEAD_LETTERS], 2);
    let rt = runtime();
    let double = rt.block_on(RegistryDouble::start());
    let subject = "registry.orders-value";
    let v1 = rt
        .block_on(AvroSerde::<MedicationOrder>::registered(
            Arc::new(double.client()),
            subject,
            canonical::schema().clone(),
        ))
        .unwrap();
    let v2_id = rt
        .block_on(double.client().register(subject, &canonical_v2()))
        .unwrap();
    let dir = tempdir("reader");
    let url = double.base_url.clone();
    let config = broker.worker_config("registry-reader", &dir, &[("schema.registry.url", &url)]);
    let worker =
        Worker::start_with(config, |context| Ok(reader_topology(context.schemas))).unwrap();

    let orders = sample_orders(30);
    let producer = support::producer(&broker.brokers);
    // v1 records: decoded on the fast path, no fetch (the worker found v1's id at start).
    for order in &orders[..10] {
        let bytes = v1.serialize(ORDERS_IN, order).unwrap().unwrap();
        support::send(&producer, ORDERS_IN, &order.order_id, &bytes);
    }
    // An id the registry never gave.
    let mut unknown = v1.serialize(ORDERS_IN, &orders[10]).unwrap().unwrap();
    unknown[1..5].copy_from_slice(&999u32.to_be_bytes());
    support::send(&producer, ORDERS_IN, &orders[10].order_id, &unknown);
    wait_until(
        "the v1 records and the dead letter",
        Duration::from_secs(60),
        || {
            read_committed(&broker.brokers, ORDER_IDS_OUT).len() == 10
                && read_committed(&broker.brokers, DEAD_LETTERS).len() == 1
        },
    );
    let dead = &read_committed(&broker.brokers, DEAD_LETTERS)[0];
    assert_eq!(
        dead.headers.get("sluice.error.kind").map(String::as_str),
        Some(ErrorKind::Deserialization.as_str())
    );
    assert!(
        dead.headers["sluice.error.message"].contains("schema id 999"),
        "{:?}",
        dead.headers
    );

    // The registry goes down; records of v2, which the worker has not seen, arrive.
    double.state.set_down(true);
    for order in &orders[11..20] {
        support::send(
            &producer,
            ORDERS_IN,
            &order.order_id,
            &v2_record(v2_id, order),
        );
    }
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        double.requests(SCHEMA_BY_ID) >= 3,
        "the worker kept asking for v2"
    );
    assert_eq!(read_committed(&broker.brokers, ORDER_IDS_OUT).len(), 10);
    assert_eq!(
        read_committed(&broker.brokers, DEAD_LETTERS).len(),
        1,
        "a registry that is down is not the records' fault"
    );

    double.state.set_down(false);
    wait_until(
        "the v2 records after recovery",
        Duration::from_secs(60),
        || read_committed(&broker.brokers, ORDER_IDS_OUT).len() == 19,
    );
    // v2 is now known: later v2 records cost no request.
    let fetches = double.requests(SCHEMA_BY_ID);
    for order in &orders[20..30] {
        support::send(
            &producer,
            ORDERS_IN,
            &order.order_id,
            &v2_record(v2_id, order),
        );
    }
    wait_until("the last records", Duration::from_secs(60), || {
        read_committed(&broker.brokers, ORDER_IDS_OUT).len() == 29
    });
    assert_eq!(
        double.requests(SCHEMA_BY_ID),
        fetches,
        "each id is fetched once"
    );
    assert_eq!(read_committed(&broker.brokers, DEAD_LETTERS).len(), 1);
    let ids: Vec<String> = read_committed(&broker.brokers, ORDER_IDS_OUT)
        .into_iter()
        .map(|r| serde_json::from_slice(&r.value.unwrap()).unwrap())
        .collect();
    for (i, order) in orders.iter().enumerate() {
        assert_eq!(
            ids.contains(&order.order_id),
            i != 10,
            "order {i} is output unless its id was unknown"
        );
    }
    worker.stop();
    worker.join().unwrap();
}

/// `order` written with the v2 schema, in the wire format with id `v2_id`.
fn v2_record(v2_id: u32, order: &MedicationOrder) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct WithNote<'a> {
        #[serde(flatten)]
        order: &'a MedicationOrder,
        note: &'a str,
    }
    let schema = canonical_v2();
    let value = apache_avro::to_value(WithNote { order, note: "v2" })
        .unwrap()
        .resolve(&schema)
        .unwrap();
    let mut bytes = vec![0];
    bytes.extend_from_slice(&v2_id.to_be_bytes());
    bytes.extend(
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap(),
    );
    bytes
}

fn sample_orders(n: usize) -> Vec<MedicationOrder> {
    let mut generator =
        sluice_topologies::generator::OrderGenerator::new(17).with_malformed_ratio(0.0);
    (0..n)
        .map(|_| {
            let sample = generator.next_ehr();
            let json: serde_json::Value = serde_json::from_slice(&sample.value).unwrap();
            sluice_topologies::normalize::from_ehr(&json).unwrap()
        })
        .collect()
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-registry-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
