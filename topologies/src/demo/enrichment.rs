//! The demo's second stage: the enrichment worker on what normalization wrote, with the
//! built-in sample reference data, and how often its caches answered without a lookup.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use sluice_engine::Serde;
use sluice_engine::lookup::{BoxLookup, Lookup, LookupError};
use sluice_engine::serde::AvroSerde;
use sluice_runtime::{Worker, WorkerConfig};

use super::{DemoError, read_back, send_waiting};
use crate::enrichment::enriched::{self, MedicationOrderEnriched};
use crate::enrichment::topology::{self as enrichment, EnrichmentConfig, Lookups, OUTPUT_TOPIC};
use crate::enrichment::{FileLookup, ReferenceGenerator};

/// What the enrichment stage saw.
#[derive(Debug)]
pub struct EnrichmentReport {
    pub enriched: u64,
    /// Drug lookups, and how many of them reached the reference data behind the cache.
    pub drug_lookups: u64,
    pub drug_calls: u64,
    /// A few enriched events, one line each.
    pub samples: Vec<String>,
    /// How many outputs found their drug and their formulary row, or why not.
    pub statuses: BTreeMap<String, u64>,
}

impl EnrichmentReport {
    /// The share of drug lookups the cache answered.
    pub fn cache_hit_ratio(&self) -> f64 {
        match self.drug_lookups {
            0 => 0.0,
            n => 1.0 - self.drug_calls.min(n) as f64 / n as f64,
        }
    }
}

/// A lookup that counts the calls that reach it: the cache's misses.
struct Counted<L> {
    inner: L,
    calls: Arc<AtomicU64>,
}

impl<L: Lookup> Lookup for Counted<L> {
    type Key = L::Key;
    type Value = L::Value;

    async fn lookup(&self, key: &Self::Key) -> Result<Option<Self::Value>, LookupError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.lookup(key).await
    }
}

/// Enriches the `canonical` orders normalization wrote, until each is in the output.
/// [`publish_sample_coverage`] must have run before the orders were written: the join
/// reads the table as of each order's timestamp, as Kafka Streams' does.
pub fn run(
    brokers: &str,
    config: WorkerConfig,
    canonical: u64,
    timeout: Duration,
) -> Result<EnrichmentReport, DemoError> {
    let data = ReferenceGenerator::new(enrichment::SAMPLE_REFERENCE_SEED).generate();
    let drug_calls = Arc::new(AtomicU64::new(0));
    let lookups = Lookups {
        drugs: BoxLookup::new(Counted {
            inner: FileLookup::from_records(data.drugs),
            calls: drug_calls.clone(),
        }),
        formulary: BoxLookup::new(FileLookup::from_records(data.formulary)),
    };
    let topology = enrichment::topology(
        AvroSerde::with_schema_id(
            crate::canonical::schema().clone(),
            crate::normalization::LOCAL_SCHEMA_ID,
        ),
        output_serde(),
        lookups,
        &EnrichmentConfig::default(),
    );
    let started = Instant::now();
    let worker = Worker::start(topology, config)?;
    let stats = worker.stats().clone();
    // Each order is read twice (the input, then the repartition hop), each coverage once.
    let inputs = 2 * canonical + data.coverage.len() as u64;
    while stats.committed.load(Ordering::Relaxed) < inputs && !worker.any_thread_finished() {
        if started.elapsed() > timeout {
            worker.stop();
            worker.join()?;
            return Err(DemoError::Timeout {
                done: stats.committed.load(Ordering::Relaxed),
                total: inputs,
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    worker.stop();
    worker.join()?;
    let output = output_serde();
    let decoded = read_back(brokers, OUTPUT_TOPIC, canonical as usize, |m| {
        output.deserialize(OUTPUT_TOPIC, m.payload()).ok()
    })?;
    let mut statuses = BTreeMap::new();
    for e in decoded.iter().flatten() {
        let status = format!(
            "drug {:?}, formulary {:?}",
            e.enrichment_status.drug_reference, e.enrichment_status.formulary
        );
        *statuses.entry(status).or_insert(0) += 1;
    }
    let samples = decoded
        .iter()
        .take(3)
        .map(|e| e.as_ref().map_or("<undecodable>".to_string(), describe))
        .collect();
    // Written: each order once to the repartition hop and once to the output.
    let enriched = stats
        .produced
        .load(Ordering::Relaxed)
        .saturating_sub(canonical);
    Ok(EnrichmentReport {
        enriched,
        drug_lookups: canonical,
        drug_calls: drug_calls.load(Ordering::Relaxed),
        samples,
        statuses,
    })
}

fn output_serde() -> AvroSerde<MedicationOrderEnriched> {
    AvroSerde::with_schema_id(enriched::schema().clone(), enrichment::LOCAL_SCHEMA_ID)
}

/// One line of an enriched order: ids, the drug, and the formulary status. Synthetic data.
fn describe(e: &MedicationOrderEnriched) -> String {
    let drug = e
        .drug
        .as_ref()
        .map_or("(NDC not in reference)".to_string(), |d| {
            format!("{} [{}]", d.generic_name, d.drug_class)
        });
    let formulary = match &e.formulary {
        Some(f) => format!(
            "{} tier {} {:?}{}",
            f.plan_id,
            f.tier.map_or("-".to_string(), |t| t.to_string()),
            f.status,
            if f.prior_auth_required {
                ", prior auth"
            } else {
                ""
            }
        ),
        None => format!("{:?}", e.enrichment_status.formulary),
    };
    format!(
        "{}  ndc {}  {drug}  {formulary}",
        e.order.order_id, e.order.medication.ndc
    )
}

/// Writes the sample reference data's patient coverage to its topic, as JSON keyed by
/// patientId.
pub fn publish_sample_coverage(brokers: &str) -> Result<(), DemoError> {
    let coverage = ReferenceGenerator::new(enrichment::SAMPLE_REFERENCE_SEED)
        .generate()
        .coverage;
    let producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            // Co-partitioned with the orders the worker repartitions by patientId.
            .set("partitioner", "murmur2_random")
            .create()?;
    for row in &coverage {
        let value = serde_json::to_vec(row).expect("coverage serializes");
        send_waiting(
            &producer,
            crate::enrichment::COVERAGE_TOPIC,
            &row.patient_id,
            &value,
        );
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30))?;
    Ok(())
}
