//! The enrichment topology: canonical medication orders joined with the patient's
//! coverage, the drug's reference data and the plan's formulary status.
//!
//! ```text
//! canonical.medication-orders (Avro, by orderId)
//!   --> key-by-patient --> [orders-by-patient repartition] --+
//!                                                             left join (store patient-coverage)
//! reference.patient-coverage (compacted, by patientId) ------+
//!   --> enrich drug-reference (NDC, cached)
//!   --> enrich formulary ((planId, NDC), cached; only when covered on the order's date)
//!   --> key-by-order --> canonical.medication-orders.enriched (Avro, by orderId)
//! ```
//!
//! Coverage is a table partitioned like the orders after the repartition, so each worker
//! holds the coverage of its own patients only: millions of patients spread over the
//! group, as the orders do. All events of an order are for one patient, so they stay in
//! one partition through the hop and leave in order per orderId. A coverage change
//! reaches the orders processed after it, never earlier ones.
//!
//! Reference data comes through [`enrich`](sluice_engine::Stream::enrich), behind a cache
//! per operator (`drug-reference`, `formulary`; TTL 24 h, negative TTL 5 min by default).
//! What is not found is an answer: the output's part is null and `enrichmentStatus` says
//! why. A reference service that is down is transient: the partition pauses and retries,
//! and nothing is dead-lettered or lost.
//!
//! Outputs carry `enrichment-source: drug-reference`, `event-type:
//! medication-order-enriched` and the input's `change-type`; lineage goes through the hop
//! unchanged, so each output names the canonical event as its cause.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sluice_connectors::mongo::MongoConfig;
use sluice_runtime::{BuildContext, BuildError};

use sluice_engine::lookup::{BoxLookup, LookupCacheConfig};
use sluice_engine::operators::AsyncOptions;
use sluice_engine::serde::{AvroSerde, JsonSerde, Serdes};
use sluice_engine::{Record, Topology, TopologyBuilder};

use super::coverage_topic::COVERAGE_TOPIC;
use super::enriched::{
    DrugReferenceStatus, EnrichmentStatus, FormularyLookupStatus, MedicationOrderEnriched,
};
use super::file_lookup::FileLookup;
use super::reference::{DrugReference, FormularyEntry, FormularyKey, PatientCoverage};
use super::reference_generator::ReferenceGenerator;
use super::sources::reference_lookups;
use crate::canonical::MedicationOrder;
use crate::normalize::HEADER_EVENT_TYPE;

pub const NAME: &str = "enrichment";
pub const INPUT_TOPIC: &str = crate::normalization::OUTPUT_TOPIC;
pub const OUTPUT_TOPIC: &str = "canonical.medication-orders.enriched";
pub const DEAD_LETTER_TOPIC: &str = "enrichment.dlq";
/// The store of the coverage table, and so its changelog's name.
pub const COVERAGE_STORE: &str = "patient-coverage";
/// The operators, which name their caches and their metrics' `cache` label.
pub const DRUG_REFERENCE: &str = "drug-reference";
pub const FORMULARY: &str = "formulary";
/// Header naming where the added data came from.
pub const HEADER_ENRICHMENT_SOURCE: &str = "enrichment-source";
/// The `event-type` of enriched orders.
pub const EVENT_TYPE: &str = "medication-order-enriched";
/// The output's schema id without a registry (the canonical order's is 1).
pub const LOCAL_SCHEMA_ID: u32 = 2;

/// The configuration keys of the topology (besides `mongodb.*`).
pub mod keys {
    /// A directory of `drug_reference.jsonl` and `formulary.jsonl`, read when there is no
    /// `mongodb.uri`; without either, the built-in sample reference data.
    pub const REFERENCE_DIR: &str = "enrichment.reference.dir";
    pub const CACHE_TTL_MS: &str = "enrichment.cache.ttl.ms";
    pub const CACHE_NEGATIVE_TTL_MS: &str = "enrichment.cache.negative.ttl.ms";
    pub const CACHE_MAX_ENTRIES: &str = "enrichment.cache.max.entries";
    /// Lookups in flight per task.
    pub const CAPACITY: &str = "enrichment.capacity";
    pub const ALL: &[&str] = &[
        REFERENCE_DIR,
        CACHE_TTL_MS,
        CACHE_NEGATIVE_TTL_MS,
        CACHE_MAX_ENTRIES,
        CAPACITY,
    ];
}

/// How the topology's caches and calls are sized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrichmentConfig {
    pub cache_ttl: Duration,
    pub cache_negative_ttl: Duration,
    pub cache_max_entries: u64,
    pub capacity: usize,
}

impl Default for EnrichmentConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(24 * 3600),
            cache_negative_ttl: Duration::from_secs(300),
            cache_max_entries: 100_000,
            capacity: 1_000,
        }
    }
}

impl EnrichmentConfig {
    /// From the topology's keys (`enrichment.*`); every bad value is reported, naming its
    /// key and what it accepts.
    pub fn from_settings(settings: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut config = Self::default();
        let mut problems = Vec::new();
        let mut number = |key: &str, range: std::ops::RangeInclusive<u64>| -> Option<u64> {
            let value = settings.get(key)?;
            match value.trim().parse::<u64>() {
                Ok(n) if range.contains(&n) => Some(n),
                _ => {
                    problems.push(format!(
                        "{key} = {value:?} is invalid: a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ));
                    None
                }
            }
        };
        let day_ms = 24 * 3600 * 1000;
        if let Some(ms) = number(keys::CACHE_TTL_MS, 1..=30 * day_ms) {
            config.cache_ttl = Duration::from_millis(ms);
        }
        if let Some(ms) = number(keys::CACHE_NEGATIVE_TTL_MS, 1..=30 * day_ms) {
            config.cache_negative_ttl = Duration::from_millis(ms);
        }
        if let Some(n) = number(keys::CACHE_MAX_ENTRIES, 1..=100_000_000) {
            config.cache_max_entries = n;
        }
        if let Some(n) = number(keys::CAPACITY, 1..=100_000) {
            config.capacity = n as usize;
        }
        match problems.is_empty() {
            true => Ok(config),
            false => Err(problems.join("; ")),
        }
    }

    fn cache<K, V>(&self) -> LookupCacheConfig<K, V>
    where
        K: std::hash::Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        LookupCacheConfig::default()
            .ttl(self.cache_ttl)
            .negative_ttl(self.cache_negative_ttl)
            .max_entries(self.cache_max_entries)
    }
}

/// The drug reference and formulary lookups the topology reads through its caches.
#[derive(Clone)]
pub struct Lookups {
    pub drugs: BoxLookup<String, DrugReference>,
    pub formulary: BoxLookup<FormularyKey, FormularyEntry>,
}

/// An order on its way through enrichment.
#[derive(Clone, Debug)]
struct Enriching {
    order: MedicationOrder,
    coverage: Option<PatientCoverage>,
    drug: Option<DrugReference>,
    formulary: Option<FormularyEntry>,
}

impl Enriching {
    /// The formulary row to look up: only for coverage in force on the order's date.
    fn formulary_key(&self) -> Option<FormularyKey> {
        let coverage = self.coverage.as_ref()?;
        coverage
            .covers(&order_date(&self.order))
            .then(|| FormularyKey {
                plan_id: coverage.plan_id.clone(),
                ndc: self.order.medication.ndc.clone(),
            })
    }

    fn finish(self) -> MedicationOrderEnriched {
        let formulary_status = match (&self.coverage, &self.formulary) {
            (None, _) => FormularyLookupStatus::NoCoverage,
            (Some(_), Some(_)) => FormularyLookupStatus::Found,
            (Some(_), None) if self.formulary_key().is_none() => {
                FormularyLookupStatus::CoverageNotInForce
            }
            (Some(_), None) => FormularyLookupStatus::NotOnFormulary,
        };
        MedicationOrderEnriched {
            enrichment_status: EnrichmentStatus {
                drug_reference: match self.drug {
                    Some(_) => DrugReferenceStatus::Found,
                    None => DrugReferenceStatus::NdcNotInReference,
                },
                formulary: formulary_status,
            },
            drug: self.drug.map(Into::into),
            coverage: self.coverage.map(Into::into),
            formulary: self.formulary.map(Into::into),
            order: self.order,
        }
    }
}

/// The order's date, `YYYY-MM-DD` in UTC: the day its coverage must include.
fn order_date(order: &MedicationOrder) -> String {
    chrono::DateTime::from_timestamp_millis(order.created_at)
        .map(|t| t.format("%Y-%m-%d").to_string())
        // Out of chrono's range: no date is covered.
        .unwrap_or_default()
}

/// The topology on the platform's topics ([`INPUT_TOPIC`], [`OUTPUT_TOPIC`]): canonical
/// orders read with `input`, enriched orders written with `output`, reference data from
/// `lookups`.
pub fn topology(
    input: AvroSerde<MedicationOrder>,
    output: AvroSerde<MedicationOrderEnriched>,
    lookups: Lookups,
    config: &EnrichmentConfig,
) -> Topology {
    topology_between(INPUT_TOPIC, OUTPUT_TOPIC, input, output, lookups, config)
}

/// The topology reading `input_topic` and writing `output_topic` (a benchmark's or a
/// test's own topics); otherwise as [`topology`].
pub fn topology_between(
    input_topic: &str,
    output_topic: &str,
    input: AvroSerde<MedicationOrder>,
    output: AvroSerde<MedicationOrderEnriched>,
    lookups: Lookups,
    config: &EnrichmentConfig,
) -> Topology {
    let builder = TopologyBuilder::new(NAME);
    let coverage = builder.table(
        "patient-coverage",
        COVERAGE_TOPIC,
        COVERAGE_STORE,
        Serdes::string(),
        JsonSerde::<PatientCoverage>::new(),
    );
    let calls = AsyncOptions::new().capacity(config.capacity);
    builder
        .source("canonical-orders", &[input_topic], Serdes::string(), input)
        .map("key-by-patient", |_order_id, order: MedicationOrder| {
            (order.patient_id.clone(), order)
        })
        // Internal: JSON, so a rolling upgrade that changes the canonical schema reads
        // what the older version wrote (serde defaults), with no registry subject.
        .repartition(
            "orders-by-patient",
            Serdes::string(),
            JsonSerde::<MedicationOrder>::new(),
        )
        .left_join_table("join-coverage", &coverage, |_patient, order, coverage| {
            Enriching {
                order,
                coverage,
                drug: None,
                formulary: None,
            }
        })
        .enrich(
            DRUG_REFERENCE,
            lookups.drugs,
            config.cache(),
            calls.clone(),
            |r: &Record<String, Enriching>| Some(r.value.order.medication.ndc.clone()),
            |mut r, drug| {
                r.value.drug = drug;
                Ok(r)
            },
        )
        .enrich(
            FORMULARY,
            lookups.formulary,
            config.cache(),
            calls,
            |r: &Record<String, Enriching>| r.value.formulary_key(),
            |mut r, row| {
                r.value.formulary = row;
                Ok(r)
            },
        )
        .try_map("key-by-order", |r: Record<String, Enriching>| {
            let enriched = r.value.clone().finish();
            let mut out = r.with_key_value(enriched.order.order_id.clone(), enriched);
            out.headers.insert(HEADER_ENRICHMENT_SOURCE, DRUG_REFERENCE);
            out.headers.insert(HEADER_EVENT_TYPE, EVENT_TYPE);
            Ok(out)
        })
        .to("enriched-sink", output_topic, Serdes::string(), output);
    builder
        .build()
        .expect("the enrichment topology is valid by construction")
}

/// Every configuration key the topology reads: its own and MongoDB's.
pub fn config_keys() -> Vec<&'static str> {
    keys::ALL
        .iter()
        .chain(sluice_connectors::mongo::KEYS)
        .copied()
        .collect()
}

/// The seed of the built-in sample reference data (`sluice reference generate`'s default).
pub const SAMPLE_REFERENCE_SEED: u64 = 7;

/// Builds the topology in a worker: its keys checked, the reference data reached
/// (MongoDB with `mongodb.uri`, else the files of `enrichment.reference.dir`, else the
/// built-in sample data, each said in a log line), its serdes from the worker's schemas.
pub fn build(context: &BuildContext<'_>) -> Result<Topology, BuildError> {
    let config = EnrichmentConfig::from_settings(context.settings)?;
    let mongo = MongoConfig::from_keys(
        context
            .settings
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
    )?;
    let lookups = match (&mongo, context.settings.get(keys::REFERENCE_DIR)) {
        (None, None) => {
            let data = ReferenceGenerator::new(SAMPLE_REFERENCE_SEED).generate();
            log::warn!(
                "no mongodb.uri nor {}: the built-in sample reference data ({} drugs, {} \
                 formulary rows), for demos and tests only",
                keys::REFERENCE_DIR,
                data.drugs.len(),
                data.formulary.len()
            );
            Lookups {
                drugs: BoxLookup::new(FileLookup::from_records(data.drugs)),
                formulary: BoxLookup::new(FileLookup::from_records(data.formulary)),
            }
        }
        (mongo, dir) => {
            let dir = Path::new(dir.map_or("", String::as_str));
            // On the worker's runtime: the driver's monitors live where its calls run.
            let found = context.block_on(reference_lookups(mongo.as_ref(), dir))?;
            log::info!("{}", found.source);
            Lookups {
                drugs: found.drugs,
                formulary: found.formulary,
            }
        }
    };
    let input = context.schemas.input_serde(
        INPUT_TOPIC,
        crate::canonical::schema(),
        crate::normalization::LOCAL_SCHEMA_ID,
    )?;
    let output =
        context
            .schemas
            .output_serde(OUTPUT_TOPIC, super::enriched::schema(), LOCAL_SCHEMA_ID)?;
    Ok(topology(input, output, lookups, &config))
}
