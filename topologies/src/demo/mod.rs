//! The demo: normalization on generated orders through the real Kafka runtime, then
//! enrichment of what it wrote ([`enrichment`]).
//!
//! By default the cluster is librdkafka's in-process mock broker, so the demo needs
//! nothing installed. The mock is a demonstration cluster, not evidence of exactly-once:
//! it drops offsets sent through `send_offsets_to_transaction` and shows aborted records
//! to read_committed consumers. Give `brokers` to run against a real cluster instead.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_engine::Serde;
use sluice_engine::policy::headers as dlq_headers;
use sluice_runtime::config::ENV_PREFIX;
use sluice_runtime::{ConfigBuilder, Worker, WorkerError, WorkerStats, admin};

pub mod enrichment;

pub use enrichment::EnrichmentReport;

use crate::enrichment::COVERAGE_TOPIC;
use crate::enrichment::topology as enrich;
use crate::generator::OrderGenerator;
use crate::normalization::{self, DEAD_LETTER_TOPIC, EHR_TOPIC, OUTPUT_TOPIC, PHARMACY_TOPIC};

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Orders generated from each feed.
    pub orders: usize,
    /// Share of generated orders that are malformed.
    pub malformed: f64,
    pub seed: u64,
    /// A real cluster; `None` runs on the in-process mock cluster.
    pub brokers: Option<String>,
    pub partitions: i32,
    /// Give up when the worker has not processed everything after this long.
    pub timeout: Duration,
}

/// What the demo saw.
#[derive(Debug)]
pub struct DemoReport {
    pub records_in: u64,
    pub records_out: u64,
    pub dead_lettered: u64,
    pub commits: u64,
    /// Dead-letter reasons read back from the dead-letter topic, with counts.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// A few canonical events read back from the output topic, one line each.
    pub samples: Vec<String>,
    pub elapsed: Duration,
    /// The enrichment of the canonical events.
    pub enrichment: EnrichmentReport,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("the worker processed {done} of {total} records in {timeout:?}; giving up")]
    Timeout {
        done: u64,
        total: u64,
        timeout: Duration,
    },
}

/// Runs the demo; `progress` is called about twice a second with the worker's counters.
pub fn run(
    options: &DemoOptions,
    mut progress: impl FnMut(&WorkerStats, Duration),
) -> Result<DemoReport, DemoError> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let mock;
    let brokers = match &options.brokers {
        Some(brokers) => brokers.clone(),
        None => {
            mock = MockCluster::new(1)?;
            // The mock does not implement CreateTopics: make every topic through its API,
            // the enrichment worker's internal ones too.
            let enrichment_app = format!("sluice-demo-{run_id}-enrichment");
            for topic in [
                EHR_TOPIC,
                PHARMACY_TOPIC,
                OUTPUT_TOPIC,
                DEAD_LETTER_TOPIC,
                COVERAGE_TOPIC,
                enrich::OUTPUT_TOPIC,
                enrich::DEAD_LETTER_TOPIC,
                &format!("{enrichment_app}-orders-by-patient-repartition"),
                &format!("{enrichment_app}-{}-changelog", enrich::COVERAGE_STORE),
            ] {
                mock.create_topic(topic, options.partitions, 1)?;
            }
            mock.bootstrap_servers()
        }
    };
    let mut config = ConfigBuilder::new();
    config
        .set("application.id", format!("sluice-demo-{run_id}"), "demo")
        .set("bootstrap.servers", brokers.clone(), "demo")
        .set(
            "state.dir",
            std::env::temp_dir()
                .join("sluice-demo")
                .display()
                .to_string(),
            "demo",
        )
        // Any free port: a demo must not fail because a worker already serves 9464.
        .set("metrics.address", "127.0.0.1:0", "demo")
        // SLUICE_CONFIG_* variables apply, e.g. SLUICE_CONFIG_TOPIC_REPLICATION_FACTOR for a
        // small cluster; the cluster itself is --brokers (which reads SLUICE_BROKERS).
        .env(std::env::vars().filter(|(name, _)| name.starts_with(ENV_PREFIX)));
    let config = config.build().map_err(WorkerError::from)?;
    let mut enrichment_config = config.clone();
    enrichment_config.application_id = format!("sluice-demo-{run_id}-enrichment");
    if options.brokers.is_some() {
        let admin = admin::admin_client(&config)?;
        admin::create_topics(
            &admin,
            &[
                EHR_TOPIC.to_string(),
                PHARMACY_TOPIC.to_string(),
                COVERAGE_TOPIC.to_string(),
            ],
            options.partitions,
            config.topic_replication_factor,
            config.startup_timeout,
        )?;
    }

    // Coverage first: the enrichment's join reads it as of each order's timestamp.
    enrichment::publish_sample_coverage(&brokers)?;
    let total = produce_inputs(&brokers, options)?;
    let started = Instant::now();
    let worker = Worker::start(
        normalization::topology(normalization::local_output_serde()),
        config,
    )?;
    let stats = worker.stats().clone();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        progress(&stats, started.elapsed());
        let committed = stats.committed.load(Ordering::Relaxed);
        if committed >= total {
            break;
        }
        if worker.any_thread_finished() {
            break;
        }
        if started.elapsed() > options.timeout {
            worker.stop();
            worker.join()?;
            return Err(DemoError::Timeout {
                done: committed,
                total,
                timeout: options.timeout,
            });
        }
    }
    worker.stop();
    worker.join()?;
    let elapsed = started.elapsed();

    let dead_lettered = stats.dead_lettered.load(Ordering::Relaxed);
    let mut dead_letter_reasons = BTreeMap::new();
    for headers in read_back(&brokers, DEAD_LETTER_TOPIC, dead_lettered as usize, |m| {
        m.headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == dlq_headers::ERROR_MESSAGE)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
            .unwrap_or_default()
    })? {
        // Positions vary per record; the reason is what the summary groups by.
        let reason = headers
            .split(" at line ")
            .next()
            .unwrap_or(&headers)
            .to_string();
        *dead_letter_reasons.entry(reason).or_insert(0) += 1;
    }
    let output = normalization::local_output_serde();
    let samples = read_back(&brokers, OUTPUT_TOPIC, 3, |m| {
        let order = output.deserialize(OUTPUT_TOPIC, m.payload()).ok();
        let change_type = m
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == "change-type")
                    .and_then(|h| h.value)
            })
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        match order {
            Some(o) => format!(
                "{}  {change_type}  {}  ndc {}  {}",
                o.order_id,
                o.source_system.as_str(),
                o.medication.ndc,
                o.status.as_str()
            ),
            None => "<undecodable>".to_string(),
        }
    })?;
    let records_out = stats.produced.load(Ordering::Relaxed) - dead_lettered;
    let enrichment = enrichment::run(&brokers, enrichment_config, records_out, options.timeout)?;
    Ok(DemoReport {
        enrichment,
        records_in: total,
        records_out,
        dead_lettered,
        commits: stats.commits.load(Ordering::Relaxed),
        dead_letter_reasons,
        samples,
        elapsed,
    })
}

/// Writes the generated feeds; returns how many records were written.
fn produce_inputs(brokers: &str, options: &DemoOptions) -> Result<u64, DemoError> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()?;
    let mut generator = OrderGenerator::new(options.seed).with_malformed_ratio(options.malformed);
    let mut written = 0;
    for _ in 0..options.orders {
        for (topic, sample) in [
            (EHR_TOPIC, generator.next_ehr()),
            (PHARMACY_TOPIC, generator.next_pharmacy()),
        ] {
            send_waiting(&producer, topic, &sample.key, &sample.value);
            written += 1;
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(written)
}

/// Sends one record, waiting while the producer's queue is full.
pub fn send_waiting(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    value: &[u8],
) {
    let mut record = BaseRecord::to(topic).key(key).payload(value);
    while let Err((_, back)) = producer.send(record) {
        // The producer's own thread drains the queue.
        record = back;
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reads up to `limit` committed records of `topic` from the start, mapped by `f`.
pub(crate) fn read_back<T>(
    brokers: &str,
    topic: &str,
    limit: usize,
    f: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> T,
) -> Result<Vec<T>, DemoError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("sluice-demo-reader-{}", uuid::Uuid::new_v4()),
        )
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < limit && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            out.push(f(&message));
        }
    }
    Ok(out)
}
