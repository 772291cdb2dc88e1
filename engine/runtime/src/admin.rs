//! What a worker checks and creates before it consumes: the cluster answers, the source
//! topics exist and are co-partitioned, and the topics it writes exist.
//!
//! Every failure here is an error the operator can act on, raised within
//! `startup.timeout.ms` — an unreachable cluster never turns into a silent hang.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{KafkaClient, WorkerConfig};
use crate::kafka::redact_kafka_error;
use sluice_engine::topology::Topology;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "cannot reach the Kafka cluster at {servers} within {timeout:?} (startup.timeout.ms): check bootstrap.servers and the kafka.security.*/kafka.sasl.* settings ({reason})"
    )]
    Unreachable {
        servers: String,
        timeout: Duration,
        reason: String,
    },
    #[error(
        "source topic `{topic}` does not exist: create it, or check the topology's topic names"
    )]
    MissingSourceTopic { topic: String },
    #[error(
        "topic `{topic}` of global table `{table}` does not exist: create it, or check the topology's topic names"
    )]
    MissingGlobalTopic { table: String, topic: String },
    #[error(
        "sub-topology {subtopology} reads topics with different partition counts ({counts}): co-partition them (same partition count), as a task reads partition p of each"
    )]
    NotCoPartitioned { subtopology: usize, counts: String },
    #[error(
        "topic `{topic}` exists with {actual} partitions but topic.partitions is {configured}: change topic.partitions, or repartition the topic"
    )]
    PartitionMismatch {
        topic: String,
        actual: i32,
        configured: i32,
    },
    #[error(
        "internal topic `{topic}` has {actual} partitions, but the topology's input topics (or topic.partitions) say {expected}: keys would land in other tasks than before; delete the internal topic while the application is stopped, or restore the partition count"
    )]
    InternalTopicMismatch {
        topic: String,
        actual: i32,
        expected: i32,
    },
    #[error(
        "changelog topic `{topic}` has {actual} partitions but its store's source topics have {expected}: a changelog partition belongs to the task of the same partition; delete the changelog (its state is rebuilt from the sources only by reprocessing them) or restore the source partition count"
    )]
    ChangelogMismatch {
        topic: String,
        actual: i32,
        expected: i32,
    },
    #[error("cannot create topic `{topic}`: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("Kafka admin call failed: {0}")]
    Kafka(#[from] KafkaError),
}

/// Partition counts of the topics that exist, from cluster metadata.
pub fn partition_counts(
    admin: &AdminClient<DefaultClientContext>,
    timeout: Duration,
) -> Result<BTreeMap<String, i32>, KafkaError> {
    let metadata = admin.inner().fetch_metadata(None, timeout)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

pub fn admin_client(
    config: &WorkerConfig,
) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers);
    for (key, value) in config.kafka_for(KafkaClient::Admin) {
        c.set(key, value);
    }
    c.create().map_err(redact_kafka_error)
}

/// Checks the cluster and the source topics, and creates missing sink and dead-letter
/// topics with `topic.partitions` partitions (default: the source topics' count). Returns
/// every topic's partition count as the broker reported it before any was created.
pub fn prepare(
    topology: &Topology,
    config: &WorkerConfig,
) -> Result<BTreeMap<String, i32>, AdminError> {
    let admin = admin_client(config)?;
    let mut counts =
        partition_counts(&admin, config.startup_timeout).map_err(|e| AdminError::Unreachable {
            servers: config.bootstrap_servers.clone(),
            timeout: config.startup_timeout,
            reason: e.to_string(),
        })?;
    prepare_internal_topics(&admin, topology, config, &mut counts)?;
    for global in topology.global_tables() {
        if !counts.contains_key(&global.topic) {
            return Err(AdminError::MissingGlobalTopic {
                table: global.name.clone(),
                topic: global.topic.clone(),
            });
        }
    }
    prepare_fed_back_topics(&admin, topology, config, &mut counts)?;
    for sub in topology.subtopologies() {
        let mut sizes = Vec::new();
        for topic in &sub.source_topics {
            match counts.get(topic) {
                Some(n) => sizes.push((topic.clone(), *n)),
                None => {
                    return Err(AdminError::MissingSourceTopic {
                        topic: topic.clone(),
                    });
                }
            }
        }
        if sizes.windows(2).any(|w| w[0].1 != w[1].1) {
            return Err(AdminError::NotCoPartitioned {
                subtopology: sub.id,
                counts: sizes
                    .iter()
                    .map(|(t, n)| format!("{t}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let source_partitions = topology
        .source_topics()
        .iter()
        .filter_map(|t| counts.get(t))
        .copied()
        .max()
        .unwrap_or(1);
    let partitions = config.topic_partitions.unwrap_or(source_partitions);
    let written: Vec<String> = topology
        .sink_topics()
        .into_iter()
        .filter(|t| !topology.source_topics().contains(t))
        .collect();
    // An explicit partition count is a statement about the topics the worker writes: an
    // existing one that disagrees would silently route keys differently.
    if let Some(configured) = config.topic_partitions {
        for topic in &written {
            if let Some(&actual) = counts.get(topic)
                && actual != configured
            {
                return Err(AdminError::PartitionMismatch {
                    topic: topic.clone(),
                    actual,
                    configured,
                });
            }
        }
    }
    let missing: Vec<String> = written
        .into_iter()
        .filter(|t| !counts.contains_key(t))
        .collect();
    create_topics(
        &admin,
        &missing,
        partitions,
        config.topic_replication_factor,
        config.startup_timeout,
    )?;
    prepare_changelogs(&admin, topology, config, &counts)?;
    Ok(counts)
}

/// Creates missing topics the topology both writes and reads (a webhook retry tier,
/// fed by the topology and read back by it), like its sinks: `topic.partitions`
/// partitions, else as many as its other source topics have. They are the topology's
/// own, so their absence is not a misspelt input.
fn prepare_fed_back_topics(
    admin: &AdminClient<DefaultClientContext>,
    topology: &Topology,
    config: &WorkerConfig,
    counts: &mut BTreeMap<String, i32>,
) -> Result<(), AdminError> {
    let sinks = topology.sink_topics();
    let sources = topology.source_topics();
    let missing: Vec<String> = sources
        .iter()
        .filter(|t| sinks.contains(*t) && !counts.contains_key(*t))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // The topics the topology only reads come first: sized after them, never alone.
    if let Some(topic) = sources
        .iter()
        .find(|t| !sinks.contains(*t) && !counts.contains_key(*t))
    {
        return Err(AdminError::MissingSourceTopic {
            topic: topic.clone(),
        });
    }
    let partitions = config.topic_partitions.unwrap_or_else(|| {
        sources
            .iter()
            .filter_map(|t| counts.get(t))
            .copied()
            .max()
            .unwrap_or(1)
    });
    create_topics(
        admin,
        &missing,
        partitions,
        config.topic_replication_factor,
        config.startup_timeout,
    )?;
    for topic in missing {
        counts.insert(topic, partitions);
    }
    Ok(())
}

/// Creates the internal (repartition) topics, with `topic.partitions` partitions or, by
/// default, as many as the topology's largest input topic: they carry the input onward,
/// and fewer partitions would cap the parallelism downstream. An existing one must have
/// that count, or keys would move to other tasks than the ones holding their state.
fn prepare_internal_topics(
    admin: &AdminClient<DefaultClientContext>,
    topology: &Topology,
    config: &WorkerConfig,
    counts: &mut BTreeMap<String, i32>,
) -> Result<(), AdminError> {
    let internal = topology.internal_topics();
    if internal.is_empty() {
        return Ok(());
    }
    let expected = config.topic_partitions.unwrap_or_else(|| {
        topology
            .source_topics()
            .iter()
            .filter(|t| !internal.contains(*t))
            .filter_map(|t| counts.get(t))
            .copied()
            .max()
            .unwrap_or(1)
    });
    let mut missing = Vec::new();
    for topic in internal {
        match counts.get(topic) {
            Some(&actual) if actual != expected => {
                return Err(AdminError::InternalTopicMismatch {
                    topic: topic.clone(),
                    actual,
                    expected,
                });
            }
            Some(_) => {}
            None => missing.push(topic.clone()),
        }
    }
    create_topics(
        admin,
        &missing,
        expected,
        config.topic_replication_factor,
        config.startup_timeout,
    )?;
    for topic in missing {
        counts.insert(topic, expected);
    }
    Ok(())
}

/// Creates each store's compacted changelog topic, with the partition count of the
/// sub-topology that owns the store: task p writes partition p. An existing changelog
/// with another count would send a task's state to another task's restore.
fn prepare_changelogs(
    admin: &AdminClient<DefaultClientContext>,
    topology: &Topology,
    config: &WorkerConfig,
    counts: &BTreeMap<String, i32>,
) -> Result<(), AdminError> {
    for store in topology.stores() {
        let partitions = topology.subtopologies()[store.subtopology]
            .source_topics
            .iter()
            .filter_map(|t| counts.get(t))
            .copied()
            .max()
            .unwrap_or(1);
        let topic = store.changelog_topic(&config.application_id);
        match counts.get(&topic) {
            Some(&actual) if actual != partitions => {
                return Err(AdminError::ChangelogMismatch {
                    topic,
                    actual,
                    expected: partitions,
                });
            }
            Some(_) => {}
            None => create_topics_with(
                admin,
                std::slice::from_ref(&topic),
                partitions,
                config.topic_replication_factor,
                &[("cleanup.policy", "compact")],
                config.startup_timeout,
            )?,
        }
    }
    Ok(())
}

/// Creates `topics` (an existing one is fine) and waits until metadata shows them.
pub fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[String],
    partitions: i32,
    replication_factor: i32,
    timeout: Duration,
) -> Result<(), AdminError> {
    create_topics_with(admin, topics, partitions, replication_factor, &[], timeout)
}

/// Like [`create_topics`], with topic configs (`cleanup.policy` = `compact`, say).
pub fn create_topics_with(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[String],
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), AdminError> {
    if topics.is_empty() {
        return Ok(());
    }
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            configs.iter().fold(
                NewTopic::new(t, partitions, TopicReplication::Fixed(replication_factor)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds");
    let results = runtime.block_on(admin.create_topics(&new, &options))?;
    for result in results {
        if let Err((topic, code)) = result
            && code != RDKafkaErrorCode::TopicAlreadyExists
        {
            return Err(AdminError::CreateTopic {
                topic,
                reason: code.to_string(),
            });
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        let counts = partition_counts(admin, timeout)?;
        let pending: Vec<&String> = topics.iter().filter(|t| !counts.contains_key(*t)).collect();
        if pending.is_empty() {
            log::info!("created topics {topics:?} with {partitions} partitions");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(AdminError::CreateTopic {
                topic: pending[0].clone(),
                reason: format!("not visible in metadata after {timeout:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
