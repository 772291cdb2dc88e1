//! State on a real Kafka-protocol broker: the order-activity topology counts events per
//! order in RocksDB stores backed by changelog topics. The counts stay exact when a
//! worker is killed again and again, when its state directory is lost, when it keeps it
//! (then only the changelog's tail is restored), and when it dies between a committed
//! transaction and the write of that transaction's state to RocksDB. A stream joined with
//! a table reads the table's rows from the same task's RocksDB store.

mod support;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;
use sluice_runtime::Worker;
use sluice_topologies::demo::send_waiting;
use sluice_topologies::order_activity::{self, INPUT_TOPIC, OUTPUT_TOPIC, STORE};
use support::{ScratchDir, TestBroker};

fn temp_dir(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("sluice-state-{name}"))
}

/// Writes `events_per_key` events for each of `keys` orders, round-robin over the keys, at
/// most `per_second` a second when given.
fn produce_events(
    brokers: &str,
    keys: std::ops::Range<usize>,
    events_per_key: usize,
    per_second: Option<u64>,
) {
    let producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "10")
            .create()
            .unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    for _ in 0..events_per_key {
        for key in keys.clone() {
            send_waiting(&producer, INPUT_TOPIC, &order(key), b"canonical-event");
            sent += 1;
            if let Some(rate) = per_second {
                let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(60)).unwrap();
}

fn order(key: usize) -> String {
    format!("ord-{key:05}")
}

/// Every count update in the committed output, per order, in order.
fn committed_updates(brokers: &str) -> HashMap<String, Vec<i64>> {
    let mut updates: HashMap<String, Vec<i64>> = HashMap::new();
    for record in support::read_committed(brokers, OUTPUT_TOPIC) {
        let value: [u8; 8] = record.value.unwrap().try_into().unwrap();
        updates
            .entry(record.key.unwrap())
            .or_default()
            .push(i64::from_be_bytes(value));
    }
    updates
}

/// Each order's updates are exactly 1, 2, ..., `events_per_key`: every event counted once,
/// none lost, none counted twice, none written twice.
fn assert_exact_counts(brokers: &str, keys: usize, events_per_key: usize) {
    let updates = committed_updates(brokers);
    assert_eq!(updates.len(), keys, "every order has a count");
    let expected: Vec<i64> = (1..=events_per_key as i64).collect();
    let wrong: Vec<(&String, &Vec<i64>)> = updates
        .iter()
        .filter(|(_, counts)| **counts != expected)
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {keys} orders have counts other than 1..={events_per_key}, e.g. {wrong:?}",
        updates.values().filter(|c| **c != expected).count()
    );
}

/// Committed records of the store's changelog, summed over its partitions.
fn changelog_records(brokers: &str, application_id: &str) -> usize {
    support::read_committed(brokers, &format!("{application_id}-{STORE}-changelog")).len()
}

fn run_until_caught_up(broker: &TestBroker, application_id: &str, state_dir: &Path) -> u64 {
    let config = broker.worker_config(application_id, state_dir, &[]);
    let worker = Worker::start(order_activity::topology(), config).unwrap();
    let stats = worker.stats().clone();
    support::wait_until("every event committed", Duration::from_secs(120), || {
        assert!(!worker.any_thread_finished(), "the worker stopped early");
        support::caught_up(&broker.brokers, application_id, &[INPUT_TOPIC])
    });
    worker.stop();
    worker.join().unwrap();
    stats.restored.load(Ordering::Relaxed)
}

#[test]
fn a_worker_whose_state_dir_is_lost_restores_every_count_from_the_changelog() {
    let broker = TestBroker::start();
    broker.create_topics(&[INPUT_TOPIC], 8);
    let app = "activity-lost-dir";
    let dir = temp_dir("lost");
    produce_events(&broker.brokers, 0..2_000, 3, None);
    assert_eq!(
        run_until_caught_up(&broker, app, dir.path()),
        0,
        "nothing to restore at first"
    );

    std::fs::remove_dir_all(dir.path()).unwrap();
    let in_changelog = changelog_records(&broker.brokers, app);
    assert!(
        in_changelog >= 2_000,
        "one record at least per order: {in_changelog}"
    );
    produce_events(&broker.brokers, 0..2_000, 2, None);
    let restored = run_until_caught_up(&broker, app, dir.path());
    assert_eq!(
        restored, in_changelog as u64,
        "a lost state directory is rebuilt from the whole changelog"
    );
    assert_exact_counts(&broker.brokers, 2_000, 5);
}

#[test]
fn a_worker_that_kept_its_state_dir_restores_only_the_changelog_tail() {
    let broker = TestBroker::start();
    broker.create_topics(&[INPUT_TOPIC], 8);
    let app = "activity-tail";
    let (kept, other) = (temp_dir("kept"), temp_dir("other"));
    produce_events(&broker.brokers, 0..1_000, 2, None);
    run_until_caught_up(&broker, app, kept.path());
    let at_stop = changelog_records(&broker.brokers, app);

    // Another instance (another state dir) takes the partitions and moves the counts on.
    produce_events(&broker.brokers, 0..1_000, 2, None);
    assert_eq!(
        run_until_caught_up(&broker, app, other.path()),
        at_stop as u64,
        "a new instance restores the whole changelog"
    );
    let tail = changelog_records(&broker.brokers, app) - at_stop;
    assert!(
        tail >= 1_000,
        "the second instance wrote to the changelog: {tail}"
    );

    // The first instance comes back with its state dir: it restores just what it missed.
    produce_events(&broker.brokers, 0..1_000, 1, None);
    assert_eq!(run_until_caught_up(&broker, app, kept.path()), tail as u64);
    assert_exact_counts(&broker.brokers, 1_000, 5);
}

/// Starts `sluice run order-activity`; its log goes to `<state_dir>/worker.log`.
fn start_worker(
    broker: &TestBroker,
    application_id: &str,
    state_dir: &Path,
    env: &[(&str, &str)],
) -> Child {
    spawn_worker(broker, application_id, state_dir, env, &[])
}

/// Like [`start_worker`], with extra `--set` settings.
fn spawn_worker(
    broker: &TestBroker,
    application_id: &str,
    state_dir: &Path,
    env: &[(&str, &str)],
    settings: &[&str],
) -> Child {
    let mut command =
        support::worker_command(broker, order_activity::NAME, application_id, state_dir);
    // A restarted worker takes its old place (and partitions) in the group at once.
    command.args(["--set", "static.membership=true"]);
    for setting in settings {
        command.args(["--set", setting]);
    }
    command
        .envs(env.iter().copied())
        .spawn()
        .expect("the sluice binary starts")
}

/// Stops a worker gracefully (SIGTERM: commit, flush the stores, leave the group) and
/// checks that it exited by itself, successfully: the tests read its stores afterwards,
/// and a kill would lose their memtables (RocksDB's write-ahead log is off).
fn stop(mut worker: Child) {
    let _ = Command::new("kill").arg(worker.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(180);
    while worker.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = worker.try_wait().unwrap();
    if status.is_none() {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "the worker did not stop gracefully within 180 s of SIGTERM: {status:?}"
    );
}

#[test]
fn counts_stay_exact_while_one_of_two_workers_is_killed_again_and_again() {
    const KEYS: usize = 10_000;
    const EVENTS_PER_KEY: usize = 10;
    const KILLS: usize = 12;
    let broker = TestBroker::start();
    broker.create_topics(&[INPUT_TOPIC], 8);
    let app = "activity-kills";
    let (dir_a, dir_b) = (temp_dir("kills-a"), temp_dir("kills-b"));

    // 100,000 events over about 50 s while worker A is killed every few seconds.
    let brokers = broker.brokers.clone();
    let producer =
        std::thread::spawn(move || produce_events(&brokers, 0..KEYS, EVENTS_PER_KEY, Some(2_000)));
    let mut survivor = start_worker(&broker, app, dir_b.path(), &[]);
    let mut victim = start_worker(&broker, app, dir_a.path(), &[]);
    let mut rng = rand::rng();
    let mut kills_while_flowing = 0;
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(2_000..5_000)));
        if !producer.is_finished() {
            kills_while_flowing += 1;
        }
        victim.kill().unwrap(); // SIGKILL
        victim.wait().unwrap();
        victim = start_worker(&broker, app, dir_a.path(), &[]);
        assert!(
            survivor.try_wait().unwrap().is_none(),
            "the surviving worker keeps running"
        );
    }
    producer.join().unwrap();
    assert!(
        kills_while_flowing >= 10,
        "at least 10 kills land while events flow ({kills_while_flowing})"
    );
    support::wait_until("every event committed", Duration::from_secs(300), || {
        support::caught_up(&broker.brokers, app, &[INPUT_TOPIC])
    });
    stop(victim);
    stop(survivor);
    assert_exact_counts(&broker.brokers, KEYS, EVENTS_PER_KEY);
}

#[test]
fn a_crash_between_commit_and_the_state_write_is_repaired_at_start_up() {
    let broker = TestBroker::start();
    broker.create_topics(&[INPUT_TOPIC], 8);
    let app = "activity-failpoint";
    let dir = temp_dir("failpoint");
    produce_events(&broker.brokers, 0..500, 6, None);

    // The worker dies right after its first transaction with state changes has committed,
    // before that state reaches RocksDB.
    let mut crashing = start_worker(
        &broker,
        app,
        dir.path(),
        &[("SLUICE_FAILPOINT", "after-commit-before-state-write:1")],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = crashing.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the failpoint was never reached");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        status.signal(),
        Some(6),
        "aborted at the failpoint: {status:?}"
    );
    let committed_before_restart = changelog_records(&broker.brokers, app);
    assert!(
        committed_before_restart > 0,
        "the crashed commit reached the changelog"
    );

    // More events for the same orders: their counts must go on from the committed ones.
    produce_events(&broker.brokers, 0..500, 2, None);
    let worker = start_worker(&broker, app, dir.path(), &[]);
    support::wait_until("every event committed", Duration::from_secs(120), || {
        support::caught_up(&broker.brokers, app, &[INPUT_TOPIC])
    });
    stop(worker);
    let log = std::fs::read_to_string(dir.path().join("worker.log")).unwrap();
    assert!(
        log.contains("failpoint after-commit-before-state-write reached"),
        "{log}"
    );
    let restored: u64 = log
        .lines()
        .filter(|l| l.contains("restored store `order-activity`"))
        .filter_map(|l| l.split(": ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        restored > 0,
        "the restarted worker restored the committed changelog its store had missed"
    );
    assert_exact_counts(&broker.brokers, 500, 8);
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("/proc/<pid>/status has VmHWM");
    kib * 1024
}

/// Memory a worker needs besides its stores' budget: the binary, librdkafka's consumer
/// prefetch (10,000 records per partition here) and producer queues, the allocator's slack.
/// Measured here (debug build, 8 partitions, 2 stream threads, exactly-once) at peaks of
/// 110-130 MiB above the 20 MiB budget with 1M keys, with jemalloc keeping freed pages its
/// default 10 s (about 35 MiB of that); more under a loaded machine.
const WORKER_BASELINE_BYTES: u64 = 192 << 20;

/// How much the peak may grow while a worker that holds a million keys takes a million
/// more: 24 bytes a key. Measured at about 3 bytes a key (none of the worker's memory grows
/// with its keys; the peak is set by the budgets and buffers filling); a map kept in memory
/// with an entry per key would take more than 50.
const GROWTH_PER_MILLION_KEYS: u64 = 24 << 20;

#[test]
fn a_worker_holding_millions_of_keys_stays_within_its_state_memory_budget() {
    const KEYS: usize = 1_000_000;
    const CACHE: u64 = 16 << 20;
    // The smallest write-buffer budget the worker used to stall with: every writer waited
    // for memtables of stores no writer was flushing.
    const WRITE_BUFFERS: u64 = 4 << 20;
    let broker = TestBroker::start();
    broker.create_topics(&[INPUT_TOPIC], 8);
    let app = "activity-memory";
    let dir = temp_dir("memory");
    produce_events(&broker.brokers, 0..KEYS, 1, None);
    let cache = format!("state.cache.max.bytes={CACHE}");
    let write_buffers = format!("state.write.buffer.max.bytes={WRITE_BUFFERS}");
    // jemalloc returns freed pages at once instead of 10 s later: the peaks then follow
    // what is live, not when the allocator last returned pages (30 MiB either way).
    let mut worker = spawn_worker(
        &broker,
        app,
        dir.path(),
        &[("MALLOC_CONF", "dirty_decay_ms:0")],
        &[
            &cache,
            &write_buffers,
            "num.stream.threads=2",
            // Prefetch bounded too (librdkafka keeps up to 100,000 records per partition),
            // so the baseline below holds for any backlog.
            "kafka.consumer.queued.min.messages=10000",
        ],
    );
    let mut caught_up = |what: &str| {
        let started = Instant::now();
        support::wait_until(what, Duration::from_secs(900), || {
            assert!(
                worker.try_wait().unwrap().is_none(),
                "the worker stopped early"
            );
            support::caught_up(&broker.brokers, app, &[INPUT_TOPIC])
        });
        let peak = peak_rss_bytes(worker.id());
        eprintln!(
            "{what} in {:.0}s; peak RSS {} MiB (budget {} MiB + baseline {} MiB)",
            started.elapsed().as_secs_f64(),
            peak >> 20,
            (CACHE + WRITE_BUFFERS) >> 20,
            WORKER_BASELINE_BYTES >> 20
        );
        peak
    };
    let first = caught_up("a million keys committed");
    produce_events(&broker.brokers, KEYS..2 * KEYS, 1, None);
    let second = caught_up("a second million keys committed");
    stop(worker);
    // The keys live in RocksDB, not only in memory: the worker has exited, and its stores,
    // opened again from disk, hold every key exactly once across the 8 tasks.
    assert_eq!(
        keys_in_stores(&dir.path().join(app), STORE),
        2 * KEYS as u64,
        "keys found in the tasks' RocksDB stores on disk after the worker exited"
    );
    assert!(
        second <= CACHE + WRITE_BUFFERS + WORKER_BASELINE_BYTES,
        "peak RSS {} MiB exceeds the state budget {} MiB plus the worker baseline {} MiB",
        second >> 20,
        (CACHE + WRITE_BUFFERS) >> 20,
        WORKER_BASELINE_BYTES >> 20
    );
    assert!(
        second.saturating_sub(first) <= GROWTH_PER_MILLION_KEYS,
        "peak RSS grew {} MiB with the second million keys (at most {} MiB): memory grows \
         with the keys held",
        second.saturating_sub(first) >> 20,
        GROWTH_PER_MILLION_KEYS >> 20
    );
}

/// How many keys the RocksDB store `store` of every task under `app_dir` holds, each
/// store opened from disk and read to its end (RocksDB's own count, exact, where a size on
/// disk would depend on compression and on when compactions ran).
fn keys_in_stores(app_dir: &Path, store: &str) -> u64 {
    use sluice_state::{KeyValueStore, RocksDbStore, StateBudget};
    use std::ops::Bound;
    let budget = StateBudget::new(8 << 20, 8 << 20);
    let mut keys = 0;
    for task in std::fs::read_dir(app_dir).expect("the application's state directory") {
        let path = task.expect("a directory entry").path().join(store);
        if !path.is_dir() {
            continue;
        }
        let opened = RocksDbStore::open(&path, store, &budget).expect("the store opens");
        for entry in opened.range(Bound::Unbounded, Bound::Unbounded) {
            entry.expect("a readable entry");
            keys += 1;
        }
    }
    keys
}

#[test]
fn a_stream_joined_with_a_table_on_the_broker_sees_the_rows_in_rocksdb() {
    use sluice_engine::{Serdes, TopologyBuilder};
    const DRUGS: usize = 200;
    let broker = TestBroker::start();
    broker.create_topics(&["drug-reference", "drug-orders"], 8);
    let builder = TopologyBuilder::new("enrich-orders");
    let drugs = builder.table(
        "drugs",
        "drug-reference",
        "drug-reference",
        Serdes::string(),
        Serdes::string(),
    );
    builder
        .source(
            "orders",
            &["drug-orders"],
            Serdes::string(),
            Serdes::string(),
        )
        .join_table("with-drug", &drugs, |_, order, drug| {
            format!("{order}|{drug}")
        })
        .to(
            "out",
            "drug-orders.enriched",
            Serdes::string(),
            Serdes::string(),
        );
    let topology = builder.build().unwrap();
    let app = "enrich-join";
    let dir = temp_dir("join");
    let config = broker.worker_config(app, dir.path(), &[]);
    let worker = Worker::start(topology, config).unwrap();
    let stats = worker.stats().clone();

    let producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", &broker.brokers)
            .create()
            .unwrap();
    let ndc = |i: usize| format!("ndc-{i:04}");
    for i in 0..DRUGS {
        send_waiting(
            &producer,
            "drug-reference",
            &ndc(i),
            format!("drug {i}").as_bytes(),
        );
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
    // Orders only once every row is in the table, so each order finds its row.
    support::wait_until("the table loaded", Duration::from_secs(120), || {
        stats.committed.load(Ordering::Relaxed) >= DRUGS as u64
    });
    for i in 0..DRUGS * 2 {
        send_waiting(
            &producer,
            "drug-orders",
            &ndc(i % DRUGS),
            format!("order {i}").as_bytes(),
        );
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
    support::wait_until("every order committed", Duration::from_secs(120), || {
        support::caught_up(&broker.brokers, app, &["drug-reference", "drug-orders"])
    });
    worker.stop();
    worker.join().unwrap();

    let out = support::read_committed(&broker.brokers, "drug-orders.enriched");
    assert_eq!(out.len(), DRUGS * 2, "every order joined exactly once");
    for record in out {
        let key = record.key.unwrap();
        let value = String::from_utf8(record.value.unwrap()).unwrap();
        let drug = key.trim_start_matches("ndc-").parse::<usize>().unwrap();
        assert!(
            value.ends_with(&format!("|drug {drug}")),
            "{key} joined the wrong row: {value}"
        );
    }
    assert_eq!(
        support::read_committed(&broker.brokers, &format!("{app}-drug-reference-changelog")).len(),
        DRUGS,
        "the table's rows went to its own changelog, once each"
    );
}

/// Writes `(key, value)` to one partition and waits for the broker's acknowledgement.
fn send_to_partition(brokers: &str, topic: &str, rows: &[(String, String, i32)]) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (key, value, partition) in rows {
        producer
            .send(
                BaseRecord::to(topic)
                    .key(key.as_bytes())
                    .payload(value.as_bytes())
                    .partition(*partition),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn a_global_table_is_whole_on_the_worker_before_its_first_record_and_follows_updates() {
    use sluice_engine::{Serdes, TopologyBuilder};
    const DRUGS: usize = 90;
    let broker = TestBroker::start();
    // The table and the stream are not co-partitioned: a global table needs no such thing.
    broker.create_topics(&["global-drugs"], 3);
    broker.create_topics(&["global-orders"], 2);
    let ndc = |i: usize| format!("ndc-{i:04}");
    let rows: Vec<_> = (0..DRUGS)
        .map(|i| (ndc(i), format!("drug {i}"), (i % 3) as i32))
        .collect();
    send_to_partition(&broker.brokers, "global-drugs", &rows);

    let topology = || {
        let builder = TopologyBuilder::new("enrich-global");
        let drugs = builder.global_table(
            "drugs",
            "global-drugs",
            "drugs-global",
            Serdes::string(),
            Serdes::string(),
        );
        builder
            .source(
                "orders",
                &["global-orders"],
                Serdes::string(),
                Serdes::string(),
            )
            // The order's value is the drug code it is for.
            .left_join_global(
                "with-drug",
                &drugs,
                |_, ndc| ndc.clone(),
                |_, ndc, drug| format!("{ndc}|{}", drug.unwrap_or_else(|| "missing".into())),
            )
            .to(
                "out",
                "global-orders.enriched",
                Serdes::string(),
                Serdes::string(),
            );
        builder.build().unwrap()
    };
    let app = "enrich-global";
    let dir = temp_dir("global");
    let worker = Worker::start(topology(), broker.worker_config(app, dir.path(), &[])).unwrap();
    assert_eq!(
        worker.stats().restored.load(Ordering::Relaxed),
        DRUGS as u64,
        "start-up read every partition of the table"
    );
    let orders: Vec<_> = (0..DRUGS * 2)
        .map(|i| (format!("order-{i}"), ndc(i % DRUGS), (i % 2) as i32))
        .collect();
    send_to_partition(&broker.brokers, "global-orders", &orders);
    support::wait_until("every order committed", Duration::from_secs(120), || {
        support::caught_up(&broker.brokers, app, &["global-orders"])
    });
    let out = support::read_committed(&broker.brokers, "global-orders.enriched");
    assert_eq!(out.len(), DRUGS * 2);
    for record in &out {
        let value = String::from_utf8(record.value.clone().unwrap()).unwrap();
        let (code, drug) = value.split_once('|').unwrap();
        let i: usize = code.trim_start_matches("ndc-").parse().unwrap();
        assert_eq!(drug, format!("drug {i}"), "order for {code} joined {drug}");
    }

    // An update to the table reaches lookups while the worker runs.
    send_to_partition(
        &broker.brokers,
        "global-drugs",
        &[(ndc(1), "drug 1, renamed".into(), 1)],
    );
    let mut sent = 0;
    support::wait_until(
        "a lookup sees the renamed row",
        Duration::from_secs(60),
        || {
            send_to_partition(
                &broker.brokers,
                "global-orders",
                &[(format!("probe-{sent}"), ndc(1), 0)],
            );
            sent += 1;
            std::thread::sleep(Duration::from_millis(300));
            support::read_committed(&broker.brokers, "global-orders.enriched")
                .iter()
                .any(|r| r.value.as_deref() == Some(&b"ndc-0001|drug 1, renamed"[..]))
        },
    );
    worker.stop();
    worker.join().unwrap();

    // A restart with the state directory intact reads only rows it has not seen.
    send_to_partition(
        &broker.brokers,
        "global-drugs",
        &[
            (ndc(2), "drug 2, renamed".into(), 2),
            (ndc(500), "new".into(), 0),
        ],
    );
    let worker = Worker::start(topology(), broker.worker_config(app, dir.path(), &[])).unwrap();
    assert_eq!(worker.stats().restored.load(Ordering::Relaxed), 2);
    worker.stop();
    worker.join().unwrap();
}

#[test]
fn group_by_on_the_broker_counts_each_new_key_once_per_record_through_the_internal_topic() {
    use sluice_engine::{Serdes, TopologyBuilder};
    const ORDERS: usize = 2_000;
    const PATIENTS: usize = 37;
    let broker = TestBroker::start();
    broker.create_topics(&["regroup-orders"], 4);
    let builder = TopologyBuilder::new("orders-per-patient");
    builder
        .source(
            "orders",
            &["regroup-orders"],
            Serdes::string(),
            Serdes::string(),
        )
        .group_by(
            "by-patient",
            |_order: &String, v: &String| v.split(':').next().unwrap_or_default().to_string(),
            Serdes::string(),
            Serdes::string(),
        )
        .count("count", "orders-per-patient")
        .to("out", "regroup-counts", Serdes::string(), Serdes::i64());
    let app = "regroup";
    let dir = temp_dir("regroup");
    let config = broker.worker_config(app, dir.path(), &[("num.stream.threads", "2")]);
    let worker = Worker::start(builder.build().unwrap(), config).unwrap();
    // Orders keyed by order id: one patient's orders are spread over every partition.
    let orders: Vec<_> = (0..ORDERS)
        .map(|i| {
            (
                format!("order-{i}"),
                format!("p{}:drug", i % PATIENTS),
                (i % 4) as i32,
            )
        })
        .collect();
    send_to_partition(&broker.brokers, "regroup-orders", &orders);
    let mut out = Vec::new();
    support::wait_until("a count for every order", Duration::from_secs(120), || {
        out = support::read_committed(&broker.brokers, "regroup-counts");
        out.len() >= ORDERS
    });
    worker.stop();
    worker.join().unwrap();

    assert_eq!(out.len(), ORDERS, "one update per order, none twice");
    let mut finals: HashMap<String, i64> = HashMap::new();
    for record in &out {
        let key = record.key.clone().unwrap();
        let count = i64::from_be_bytes(record.value.clone().unwrap().try_into().unwrap());
        let top = finals.entry(key).or_default();
        *top = (*top).max(count);
    }
    assert_eq!(finals.len(), PATIENTS);
    for (patient, count) in finals {
        let n: usize = patient.trim_start_matches('p').parse().unwrap();
        let expected = (0..ORDERS).filter(|i| i % PATIENTS == n).count() as i64;
        assert_eq!(
            count, expected,
            "patient {patient}: one task saw all its orders"
        );
    }
    let hop = support::read_committed(&broker.brokers, &format!("{app}-by-patient-repartition"));
    assert_eq!(
        hop.len(),
        ORDERS,
        "every order crossed the internal topic once"
    );
}

#[test]
fn a_task_restoring_a_long_changelog_does_not_hold_up_a_ready_task_on_its_thread() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use sluice_engine::{Serdes, TopologyBuilder};
    use sluice_runtime::ThreadStatus;
    const HISTORY: usize = 20_000;
    const SHORT_HISTORY: usize = 1_000;
    let broker = TestBroker::start();
    let app = "slow-restore";
    let changelog = format!("{app}-restore-counts-changelog");
    broker.create_topics(&["slow-restore-in", changelog.as_str()], 2);
    // Partition 1's store has a history that ends in a transaction left open: a restore
    // reads committed records only, so it cannot finish until the transaction ends, however
    // fast it reads. Partition 0's store has a short history, and its task must start and
    // process records while partition 1's still restores.
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let history = (0..HISTORY).map(|i| (1, format!("history-{i}"), 7i64));
    let short = (0..SHORT_HISTORY).map(|i| (0, format!("short-{i}"), 3i64));
    for (partition, key, count) in history.chain(short) {
        producer
            .send(
                BaseRecord::to(&changelog)
                    .key(key.as_bytes())
                    .payload(&count.to_be_bytes()[..])
                    .partition(partition),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let open: ThreadedProducer<DefaultProducerContext> = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .set("transactional.id", "slow-restore-open-transaction")
        .create()
        .unwrap();
    open.init_transactions(Duration::from_secs(30)).unwrap();
    open.begin_transaction().unwrap();
    open.send(
        BaseRecord::to(&changelog)
            .key("never-committed")
            .payload(&99i64.to_be_bytes()[..])
            .partition(1),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    open.flush(Duration::from_secs(30)).unwrap();

    let builder = TopologyBuilder::new("restore-beside");
    builder
        .source(
            "in",
            &["slow-restore-in"],
            Serdes::string(),
            Serdes::string(),
        )
        .group_by_key(Serdes::string(), Serdes::string())
        .count("count", "restore-counts")
        .to("out", "slow-restore-out", Serdes::string(), Serdes::i64());
    let dir = temp_dir("slow-restore");
    let config = broker.worker_config(app, dir.path(), &[]);
    let worker = Worker::start(builder.build().unwrap(), config).unwrap();
    let health = worker.health().clone();

    send_to_partition(
        &broker.brokers,
        "slow-restore-in",
        &[("restored-key".into(), "x".into(), 1)],
    );
    support::wait_until(
        "partition 1's task restoring",
        Duration::from_secs(60),
        || health.state(0) == Some(ThreadStatus::Restoring),
    );
    let ready: Vec<_> = (0..50)
        .map(|i| (format!("ready-{i}"), "x".to_string(), 0))
        .collect();
    send_to_partition(&broker.brokers, "slow-restore-in", &ready);
    let mut out = Vec::new();
    support::wait_until("partition 0's counts", Duration::from_secs(60), || {
        out = support::read_committed(&broker.brokers, "slow-restore-out");
        out.iter()
            .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with("ready-")))
            .count()
            == 50
    });
    assert!(
        !out.iter().any(|r| r.key.as_deref() == Some("restored-key")),
        "partition 1's record waited for its store"
    );
    assert_eq!(
        health.state(0),
        Some(ThreadStatus::Restoring),
        "partition 0 ran while partition 1 was still restoring"
    );

    // The transaction aborted, partition 1's restore reaches the end of its changelog.
    open.abort_transaction(Duration::from_secs(30)).unwrap();
    support::wait_until("partition 1's count", Duration::from_secs(180), || {
        out = support::read_committed(&broker.brokers, "slow-restore-out");
        out.iter().any(|r| r.key.as_deref() == Some("restored-key"))
    });
    assert_eq!(
        worker.stats().restored.load(Ordering::Relaxed),
        (HISTORY + SHORT_HISTORY) as u64,
        "every committed record restored, the aborted one not"
    );
    assert_eq!(health.state(0), Some(ThreadStatus::Running));
    worker.stop();
    worker.join().unwrap();
}

/// Writes `(key, value)` records with the given timestamps to partition 0.
fn send_at(brokers: &str, topic: &str, records: &[(&str, &str, i64)]) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (key, value, timestamp) in records {
        producer
            .send(
                BaseRecord::to(topic)
                    .key(key.as_bytes())
                    .payload(value.as_bytes())
                    .partition(0)
                    .timestamp(*timestamp),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn stream_time_survives_a_restart_so_a_record_late_before_it_is_late_after_it() {
    use sluice_engine::operators::{TimeWindows, WindowedSerde};
    use sluice_engine::{Serdes, TopologyBuilder};
    let broker = TestBroker::start();
    broker.create_topics(&["late-in"], 1);
    let topology = || {
        let builder = TopologyBuilder::new("late-windows");
        builder
            .source("in", &["late-in"], Serdes::string(), Serdes::string())
            .group_by_key(Serdes::string(), Serdes::string())
            .windowed_by(TimeWindows::tumbling(Duration::from_secs(10)))
            .count("count", "late-window-counts")
            .to(
                "out",
                "late-out",
                WindowedSerde::new(Serdes::string()),
                Serdes::i64(),
            );
        builder.build().unwrap()
    };
    let app = "late-windows";
    let dir = temp_dir("late");
    let run = |records: &[(&str, &str, i64)], outputs: usize| {
        let worker = Worker::start(topology(), broker.worker_config(app, dir.path(), &[])).unwrap();
        send_at(&broker.brokers, "late-in", records);
        let mut out = Vec::new();
        support::wait_until("the window counts", Duration::from_secs(60), || {
            out = support::read_committed(&broker.brokers, "late-out");
            out.len() >= outputs
        });
        worker.stop();
        worker.join().unwrap();
        out
    };
    // Stream time reaches 100 s: the window [0 s, 10 s) is closed.
    run(&[("k", "a", 1_000), ("k", "b", 100_000)], 2);
    // After a restart a record for the closed window is still late; the next one counts.
    let out = run(&[("k", "late", 2_000), ("k", "c", 100_500)], 3);
    assert_eq!(out.len(), 3, "the late record produced nothing");
    let last = out.last().unwrap();
    assert_eq!(
        i64::from_be_bytes(last.value.clone().unwrap().try_into().unwrap()),
        2,
        "the window [100 s, 110 s) counted b and c"
    );
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_store_whose_checkpoint_is_beyond_its_changelog_is_wiped_not_trusted() {
    use sluice_engine::{Serdes, TopologyBuilder};
    let broker = TestBroker::start();
    broker.create_topics(&["wipe-in"], 1);
    let topology = |out: &str| {
        let builder = TopologyBuilder::new("wipe");
        builder
            .source("in", &["wipe-in"], Serdes::string(), Serdes::string())
            .group_by_key(Serdes::string(), Serdes::string())
            .count("count", "wipe-counts")
            .to("out", out, Serdes::string(), Serdes::i64());
        builder.build().unwrap()
    };
    let records: Vec<_> = (0..100)
        .map(|i| (format!("k{}", i % 10), "x".to_string(), 0))
        .collect();
    send_to_partition(&broker.brokers, "wipe-in", &records);
    let dir = temp_dir("wipe");
    let run = |app: &str, out: &str| {
        let worker =
            Worker::start(topology(out), broker.worker_config(app, dir.path(), &[])).unwrap();
        let mut read = Vec::new();
        support::wait_until("every record counted", Duration::from_secs(60), || {
            read = support::read_committed(&broker.brokers, out);
            read.len() >= 100
        });
        worker.stop();
        worker.join().unwrap();
        read.iter()
            .map(|r| i64::from_be_bytes(r.value.clone().unwrap().try_into().unwrap()))
            .max()
            .unwrap()
    };
    assert_eq!(run("wipe-a", "wipe-out-a"), 10);
    // Application b finds a's store where its own should be, with a checkpoint far
    // beyond b's empty changelog: trusting it would count every key twice.
    copy_dir(
        &dir.path().join("wipe-a").join("0_0").join("wipe-counts"),
        &dir.path().join("wipe-b").join("0_0").join("wipe-counts"),
    );
    assert_eq!(run("wipe-b", "wipe-out-b"), 10, "b's counts are its own");
}

#[test]
fn a_join_catching_up_on_two_topics_reads_them_in_timestamp_order() {
    use sluice_engine::operators::{JoinWindows, StreamJoined};
    use sluice_engine::{Serdes, TopologyBuilder};
    const PAIRS: usize = 5_000;
    let broker = TestBroker::start();
    broker.create_topics(&["sync-orders", "sync-fills"], 1);
    // (Timestamps start past 0: a producer takes 0 for "now".)
    // All the orders are written before any fill: read batch by batch, the orders would
    // carry stream time to the end before the first fill, and every fill would be late.
    let orders: Vec<(String, String, i64)> = (0..PAIRS)
        .map(|i| {
            (
                format!("k{}", i % 50),
                format!("order-{i}"),
                1_000_000 + i as i64 * 1_000,
            )
        })
        .collect();
    let fills: Vec<(String, String, i64)> = (0..PAIRS)
        .map(|i| {
            (
                format!("k{}", i % 50),
                format!("fill-{i}"),
                1_000_500 + i as i64 * 1_000,
            )
        })
        .collect();
    let refs = |v: &[(String, String, i64)]| -> Vec<(String, String, i64)> { v.to_vec() };
    for (topic, records) in [("sync-orders", refs(&orders)), ("sync-fills", refs(&fills))] {
        let borrowed: Vec<(&str, &str, i64)> = records
            .iter()
            .map(|(k, v, t)| (k.as_str(), v.as_str(), *t))
            .collect();
        send_at(&broker.brokers, topic, &borrowed);
    }
    let builder = TopologyBuilder::new("sync-join");
    let fill_stream = builder.source("fills", &["sync-fills"], Serdes::string(), Serdes::string());
    builder
        .source(
            "orders",
            &["sync-orders"],
            Serdes::string(),
            Serdes::string(),
        )
        .join_stream(
            "join",
            &fill_stream,
            JoinWindows::of(Duration::from_secs(2)),
            StreamJoined::new(
                "sync-orders-buffer",
                "sync-fills-buffer",
                Serdes::string(),
                Serdes::string(),
                Serdes::string(),
            ),
            |_, order, fill| format!("{order}|{fill}"),
        )
        .to("out", "sync-joined", Serdes::string(), Serdes::string());
    let dir = temp_dir("sync");
    let config = broker.worker_config("sync-join", dir.path(), &[]);
    let worker = Worker::start(builder.build().unwrap(), config).unwrap();
    let mut out = Vec::new();
    support::wait_until("every pair joined", Duration::from_secs(120), || {
        out = support::read_committed(&broker.brokers, "sync-joined");
        out.len() >= PAIRS
    });
    worker.stop();
    worker.join().unwrap();
    assert_eq!(out.len(), PAIRS);
    for record in &out {
        let value = String::from_utf8(record.value.clone().unwrap()).unwrap();
        let (order, fill) = value.split_once('|').unwrap();
        assert_eq!(
            order.trim_start_matches("order-"),
            fill.trim_start_matches("fill-"),
            "each order joined its own fill"
        );
    }
}
