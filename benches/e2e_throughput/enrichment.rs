//! The enrichment variants of the end-to-end harness:
//!
//! * (h) `sluice-enrichment`: the enrichment topology on a backlog of canonical orders,
//!   with the reference data in process (the embedded default) behind its caches: over
//!   95% hits, compared with (e), normalization alone;
//! * (hc) `sluice-enrichment-cold`: the same against MongoDB (a SecantusDB the harness
//!   starts and loads), with caches that keep nothing for more than a millisecond, so
//!   nearly every record's lookups go to the server: records/s and the lookups' p99.
//!
//! Coverage for the orders' patients is written before the orders (the join reads the
//! table as of each order's timestamp); each worker reads all of it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_connectors::mongo::MongoConfig;
use sluice_engine::lookup::{BoxLookup, Lookup, LookupError};
use sluice_engine::serde::AvroSerde;
use sluice_engine::{Serde, Topology};
use sluice_runtime::{BuildContext, BuildError};
use sluice_topologies::enrichment::enriched;
use sluice_topologies::enrichment::topology::{self as enrichment, EnrichmentConfig, Lookups};
use sluice_topologies::enrichment::{
    COVERAGE_TOPIC, FileLookup, ReferenceData, ReferenceGenerator, load_reference,
    reference_lookups,
};
use sluice_topologies::generator::{OrderGenerator, PATIENT_COUNT};
use sluice_topologies::normalize;

#[path = "../../tests/support/secantus.rs"]
mod secantus;

pub const WARM: &str = "sluice-enrichment";
pub const COLD: &str = "sluice-enrichment-cold";
const WARM_INPUT: &str = "e2e.canonical";
const COLD_INPUT: &str = "e2e.canonical.cold";
const SEED: u64 = enrichment::SAMPLE_REFERENCE_SEED;

pub fn variants() -> Vec<String> {
    vec![WARM.to_string(), COLD.to_string()]
}

pub fn is_enrichment(variant: &str) -> bool {
    variant == WARM || variant == COLD
}

/// The cold variant runs the smaller backlog: every record is a round trip to MongoDB.
pub fn is_cold(variant: &str) -> bool {
    variant == COLD
}

pub fn input_topic(variant: &str) -> &'static str {
    if is_cold(variant) {
        COLD_INPUT
    } else {
        WARM_INPUT
    }
}

pub fn output_topic(variant: &str, run: u64) -> String {
    format!("e2e.enriched.{variant}.{run}")
}

pub fn input_topics() -> [&'static str; 3] {
    [WARM_INPUT, COLD_INPUT, COVERAGE_TOPIC]
}

fn reference() -> ReferenceData {
    ReferenceGenerator::new(SEED)
        .with_patients(PATIENT_COUNT)
        .generate()
}

/// What each variant's worker reads besides its orders: the coverage rows, once each.
pub fn coverage_rows() -> u64 {
    reference().coverage.len() as u64
}

/// Inputs the worker commits for `orders` orders: each order twice (the input, then the
/// repartition hop), and every coverage row.
pub fn committed_target(orders: u64) -> u64 {
    2 * orders + coverage_rows()
}

/// Writes the coverage (first: the join reads the table as of each order's timestamp)
/// and the canonical orders, Avro with the local id, as normalization writes them.
pub fn write_backlog(
    producer: &rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    orders: u64,
    cold_orders: u64,
) {
    for row in reference().coverage {
        let value = serde_json::to_vec(&row).unwrap();
        super::send_waiting(producer, COVERAGE_TOPIC, &row.patient_id, &value);
    }
    rdkafka::producer::Producer::flush(producer, Duration::from_secs(60)).unwrap();
    let serde = sluice_topologies::normalization::local_output_serde();
    let mut generator = OrderGenerator::new(13).with_malformed_ratio(0.0);
    for (topic, count) in [(WARM_INPUT, orders), (COLD_INPUT, cold_orders)] {
        for i in 0..count {
            let sample = if i % 2 == 0 {
                generator.next_ehr()
            } else {
                generator.next_pharmacy()
            };
            let json = serde_json::from_slice(&sample.value).unwrap();
            let order = if i % 2 == 0 {
                normalize::from_ehr(&json)
            } else {
                normalize::from_pharmacy(&json)
            }
            .unwrap();
            let value = serde.serialize(topic, &order).unwrap().unwrap();
            super::send_waiting(producer, topic, &order.order_id, &value);
        }
    }
}

/// A canonical order for the latency phase, encoded as the backlog's are.
pub fn latency_record(generator: &mut OrderGenerator) -> (String, Vec<u8>) {
    let sample = generator.next_ehr();
    let json = serde_json::from_slice(&sample.value).unwrap();
    let order = normalize::from_ehr(&json).unwrap();
    let value = sluice_topologies::normalization::local_output_serde()
        .serialize(WARM_INPUT, &order)
        .unwrap()
        .unwrap();
    (order.order_id, value)
}

/// Starts the MongoDB the cold variant reads, loaded with the reference data. Kept
/// running by the returned handle.
pub fn start_mongo() -> (secantus::Secantus, String) {
    let server = secantus::Secantus::start();
    let uri = server.uri();
    let dir = std::env::temp_dir().join(format!("sluice-e2e-reference-{}", std::process::id()));
    let files = reference().write_json_lines(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = MongoConfig::new(&uri).unwrap();
    runtime.block_on(async {
        let client = config.connect().await.unwrap();
        load_reference(&client, &files.drugs, &files.formulary)
            .await
            .unwrap();
    });
    (server, uri)
}

/// Times every call that reaches the reference data (the caches' misses).
struct Timed<L> {
    inner: L,
    durations: Arc<Mutex<Vec<f64>>>,
}

impl<L: Lookup> Lookup for Timed<L> {
    type Key = L::Key;
    type Value = L::Value;

    async fn lookup(&self, key: &Self::Key) -> Result<Option<Self::Value>, LookupError> {
        let started = Instant::now();
        let found = self.inner.lookup(key).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        self.durations.lock().unwrap().push(ms);
        found
    }
}

/// Builds the variant's topology in the worker; `durations` receives every lookup's time.
pub fn build(
    variant: &str,
    output: &str,
    mongo_uri: Option<String>,
    durations: Arc<Mutex<Vec<f64>>>,
) -> impl FnOnce(&BuildContext<'_>) -> Result<Topology, BuildError> + Send + use<> {
    let (variant, output) = (variant.to_string(), output.to_string());
    move |context| {
        let (lookups, config) = if is_cold(&variant) {
            let uri = mongo_uri.expect("the cold variant has a MongoDB");
            let config = MongoConfig::new(&uri)?;
            let found = context.block_on(reference_lookups(Some(&config), "".as_ref()))?;
            let cold = EnrichmentConfig {
                cache_ttl: Duration::from_millis(1),
                cache_negative_ttl: Duration::from_millis(1),
                ..EnrichmentConfig::default()
            };
            (
                Lookups {
                    drugs: BoxLookup::new(Timed {
                        inner: found.drugs,
                        durations: durations.clone(),
                    }),
                    formulary: BoxLookup::new(Timed {
                        inner: found.formulary,
                        durations,
                    }),
                },
                cold,
            )
        } else {
            let data = reference();
            let lookups = Lookups {
                drugs: BoxLookup::new(Timed {
                    inner: FileLookup::from_records(data.drugs),
                    durations: durations.clone(),
                }),
                formulary: BoxLookup::new(Timed {
                    inner: FileLookup::from_records(data.formulary),
                    durations,
                }),
            };
            (lookups, EnrichmentConfig::default())
        };
        Ok(enrichment::topology_between(
            input_topic(&variant),
            &output,
            AvroSerde::with_schema_id(
                sluice_topologies::canonical::schema().clone(),
                sluice_topologies::normalization::LOCAL_SCHEMA_ID,
            ),
            AvroSerde::with_schema_id(enriched::schema().clone(), enrichment::LOCAL_SCHEMA_ID),
            lookups,
            &config,
        ))
    }
}

/// The p99 of the lookup times, in ms (0 without any).
pub fn p99(durations: &Mutex<Vec<f64>>) -> f64 {
    let mut all = durations.lock().unwrap().clone();
    if all.is_empty() {
        return 0.0;
    }
    all.sort_by(f64::total_cmp);
    all[((all.len() - 1) as f64 * 0.99) as usize]
}
