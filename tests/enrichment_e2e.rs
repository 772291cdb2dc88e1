//! The enrichment topology end to end: `sluice run enrichment` as a child process on a
//! real Kafka-protocol broker, reading its reference data from a real MongoDB-wire server
//! (SecantusDB), under exactly_once_v2 — issue 12's "Must show".
//!
//! The load, in both tests: the reference generator's data (2,000 drugs, 3 plans) loaded
//! into SecantusDB by `load_reference`; coverage for 10,000 patients published to the
//! compacted `reference.patient-coverage`; canonical orders (the order generator's,
//! through normalization's mapping, Avro with the local schema id 1, normalization's
//! headers and an event id each) on `canonical.medication-orders` with 8 partitions.
//!
//! * `enriched_output_is_exactly_once_under_kill_9s_with_reference_data_and_hot_caches`:
//!   50,000 orders; the worker is SIGKILLed 11 times while it has records to process,
//!   restarted each time. The first incarnation runs long enough to show the
//!   drug-reference cache's hit ratio on its /metrics after warm-up (at least 95%).
//!   Finally every order is in the read_committed output exactly once, nothing is
//!   dead-lettered, and every field equals the reference data.
//! * `mongodb_down_for_20_s_pauses_enrichment_and_loses_nothing`: SecantusDB is killed
//!   while the worker runs, orders keep arriving, and it comes back 20 s later on the same
//!   port and data. Cache entries live 1 s, so lookups miss during the outage. The worker
//!   shows transient lookup errors and holds the records back; after the restart it
//!   catches up (lag back to zero), with nothing dead-lettered and every order enriched
//!   exactly once.

mod support;

#[path = "support/secantus.rs"]
mod secantus;

#[path = "enrichment_e2e/check.rs"]
mod check;
#[path = "enrichment_e2e/setup.rs"]
mod setup;
#[path = "enrichment_e2e/worker.rs"]
mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use secantus::Secantus;
use sluice_connectors::mongo::MongoConfig;
use sluice_engine::lookup::BoxLookup;
use sluice_engine::serde::AvroSerde;
use sluice_engine::{Headers, Serde};
use sluice_topologies::canonical::{self, MedicationOrder};
use sluice_topologies::enrichment::enriched::{
    self, Coverage, DrugDetails, DrugReferenceStatus, Formulary, FormularyLookupStatus,
    MedicationOrderEnriched,
};
use sluice_topologies::enrichment::reference_generator::{DRUGS_FILE, FORMULARY_FILE};
use sluice_topologies::enrichment::topology::{
    self as enrichment, EnrichmentConfig, INPUT_TOPIC, Lookups, OUTPUT_TOPIC,
};
use sluice_topologies::enrichment::{
    COVERAGE_TOPIC, FileLookup, ReferenceData, ReferenceGenerator, load_reference, publish_coverage,
};
use sluice_topologies::generator::OrderGenerator;
use sluice_topologies::normalize;
use support::TestBroker;

use setup::{Input, World, canonical_orders, input_serde, output_serde};
use worker::{WorkerProcess, WorkerSpec};

const PARTITIONS: i32 = 8;
const PATIENTS: u32 = 10_000;
const REFERENCE_SEED: u64 = 7;
const CORRELATION_ID: &str = "e2e-flow";

/// The load.
const ORDERS: usize = 50_000;
/// SIGKILLs, each of a worker with records still to process.
const KILLS: usize = 11;
const MIN_KILLS_WITH_BACKLOG: usize = 10;
/// Drug-reference lookups of the first incarnation before its hit ratio is measured,
/// then how many more it is measured over.
const WARM_UP_LOOKUPS: f64 = 5_000.0;
const MEASURED_LOOKUPS: f64 = 10_000.0;
const MIN_HIT_RATIO: f64 = 0.95;
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(180);
const WORKER_DEADLINE: Duration = Duration::from_secs(90);

/// Orders of the outage test, half before MongoDB goes down and half during the outage.
const OUTAGE_ORDERS: usize = 4_000;
const OUTAGE: Duration = Duration::from_secs(20);

#[test]
fn enriched_output_is_exactly_once_under_kill_9s_with_reference_data_and_hot_caches() {
    let started = Instant::now();
    let world = World::start("kills");
    let loaded_at = started.elapsed();
    let inputs = Arc::new(canonical_orders(ORDERS, 101));
    let producer = {
        let (brokers, inputs) = (world.broker.brokers.clone(), inputs.clone());
        std::thread::spawn(move || setup::produce(&brokers, &inputs))
    };
    let spec = WorkerSpec::new(&world, "kills", &[]);
    eprintln!("worker log {}", spec.log().display());

    // The first incarnation: its drug-reference cache's hit ratio once warm.
    let mut worker = WorkerProcess::start(&world, &spec);
    let lookups = |m: &worker::Metrics| m.cache(enrichment::DRUG_REFERENCE).lookups();
    let warm = worker
        .wait_for_metrics(&spec, "the cache's warm-up", WORKER_DEADLINE, |m| {
            lookups(m) >= WARM_UP_LOOKUPS
        })
        .cache(enrichment::DRUG_REFERENCE);
    let later = worker
        .wait_for_metrics(&spec, "lookups after warm-up", WORKER_DEADLINE, |m| {
            lookups(m) >= warm.lookups() + MEASURED_LOOKUPS
        })
        .cache(enrichment::DRUG_REFERENCE);
    let hits = later.hits - warm.hits;
    let ratio = hits / (later.lookups() - warm.lookups());
    let mut backlog_at_kill = vec![!spec.caught_up(&world)];
    worker.kill();

    // The others: each killed at a random moment of its processing.
    let mut rng = rand::rng();
    for _ in 1..KILLS {
        let mut worker = WorkerProcess::start(&world, &spec);
        worker.wait_for_metrics(
            &spec,
            "a restarted worker's first lookup (none comes once no order is left to do)",
            WORKER_DEADLINE,
            |m| lookups(m) > 0.0,
        );
        // Short enough that eleven incarnations leave orders to the next: with records
        // read in batches, a debug worker gets through 50,000 orders within eleven
        // windows of up to 1.5 s.
        std::thread::sleep(Duration::from_millis(rng.random_range(50..500)));
        worker.assert_running(&spec);
        backlog_at_kill.push(!spec.caught_up(&world));
        worker.kill();
    }
    producer.join().expect("the producer wrote every order");

    // The last one catches up, and stops cleanly.
    let mut worker = WorkerProcess::start(&world, &spec);
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    while !spec.caught_up(&world) {
        worker.assert_running(&spec);
        assert!(
            Instant::now() < deadline,
            "the last worker did not catch up within {CATCH_UP_DEADLINE:?}; log {}",
            spec.log().display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let caught_up_at = started.elapsed();
    worker.stop(&spec);

    let with_backlog = backlog_at_kill.iter().filter(|b| **b).count();
    assert!(
        with_backlog >= MIN_KILLS_WITH_BACKLOG,
        "at least {MIN_KILLS_WITH_BACKLOG} kills hit a worker with records to process: \
         {with_backlog} of {KILLS} did ({backlog_at_kill:?})"
    );
    // A cold cache misses: the counters are the cache's, not a constant.
    assert!(
        warm.misses > 0.0,
        "the first worker's cache missed while cold: {warm:?}"
    );
    assert!(
        ratio >= MIN_HIT_RATIO,
        "the drug-reference cache's hit ratio after warm-up, from /metrics, is at least \
         {MIN_HIT_RATIO}: {ratio:.4} ({hits} hits of {} lookups after {} lookups of warm-up)",
        later.lookups() - warm.lookups(),
        warm.lookups()
    );
    let statuses = check::check_output(&world, &inputs);
    eprintln!(
        "{ORDERS} orders, {KILLS} kills ({with_backlog} with a backlog); loaded in {:.0} s, \
         all committed by {:.0} s, checked by {:.0} s; drug-reference hit ratio after \
         warm-up {ratio:.4} ({} misses in warm-up); statuses {statuses:?}",
        loaded_at.as_secs_f64(),
        caught_up_at.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        warm.misses
    );
    let _ = std::fs::remove_dir_all(&spec.state_dir);
}

#[test]
fn mongodb_down_for_20_s_pauses_enrichment_and_loses_nothing() {
    let started = Instant::now();
    let mut world = World::start("outage");
    let inputs = canonical_orders(OUTAGE_ORDERS, 202);
    let (before, during) = inputs.split_at(OUTAGE_ORDERS / 2);
    // Entries live 1 s, so the outage meets lookups the cache cannot answer; the driver
    // gives up on an unreachable server within a second.
    let spec = WorkerSpec::new(
        &world,
        "outage",
        &[
            "enrichment.cache.ttl.ms=1000",
            "enrichment.cache.negative.ttl.ms=1000",
            "mongodb.server.selection.timeout.ms=1000",
            "mongodb.connect.timeout.ms=1000",
        ],
    );
    eprintln!("worker log {}", spec.log().display());
    let mut worker = WorkerProcess::start(&world, &spec);
    setup::produce(&world.broker.brokers, before);
    support::wait_until("the orders before the outage", WORKER_DEADLINE, || {
        worker.assert_running(&spec);
        spec.caught_up(&world)
    });
    let transient = |m: &worker::Metrics| {
        m.lookup_errors(enrichment::DRUG_REFERENCE, "transient")
            + m.lookup_errors(enrichment::FORMULARY, "transient")
    };
    let up = worker.metrics().expect("the worker serves /metrics");
    assert_eq!(transient(&up), 0.0, "no lookup errors while MongoDB is up");

    world.mongo.kill();
    let down_at = Instant::now();
    setup::produce(&world.broker.brokers, during);
    // The outage's length; what the worker showed at its end is checked below.
    std::thread::sleep(OUTAGE.saturating_sub(down_at.elapsed()));
    worker.assert_running(&spec);
    let held_back = !spec.caught_up(&world);
    let down = worker.metrics().expect("the worker serves /metrics");
    world.mongo.restart();
    let restarted_at = Instant::now();

    let deadline = restarted_at + CATCH_UP_DEADLINE;
    while !spec.caught_up(&world) {
        worker.assert_running(&spec);
        assert!(
            Instant::now() < deadline,
            "no recovery within {CATCH_UP_DEADLINE:?} of MongoDB's restart; log {}",
            spec.log().display()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let recovered_in = restarted_at.elapsed();
    let after = worker.metrics().expect("the worker serves /metrics");
    worker.stop(&spec);

    for metrics in [&down, &after] {
        assert_eq!(metrics.dead_lettered(), 0.0, "nothing dead-lettered");
        assert_eq!(
            metrics.lookup_errors(enrichment::DRUG_REFERENCE, "permanent")
                + metrics.lookup_errors(enrichment::FORMULARY, "permanent"),
            0.0,
            "an unreachable MongoDB is never a permanent error"
        );
    }
    let statuses = check::check_output(&world, &inputs);
    // The outage was met, not slept through: lookups failed as transient, and orders
    // waited for MongoDB.
    assert!(
        transient(&down) > 0.0,
        "the worker saw MongoDB down: transient lookup errors on /metrics"
    );
    assert!(
        held_back,
        "the orders produced during the outage were not all enriched before MongoDB came back"
    );
    eprintln!(
        "{OUTAGE_ORDERS} orders; MongoDB down {:.0} s with {} transient lookup errors; \
         caught up {:.1} s after its restart; test took {:.0} s; statuses {statuses:?}",
        (restarted_at - down_at).as_secs_f64(),
        transient(&after),
        recovered_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&spec.state_dir);
}
