//! Crash safety: a worker process killed with SIGKILL at random points, again and again,
//! while records flow. Under exactly_once_v2 nothing is lost or duplicated in
//! read_committed output; under at_least_once nothing is lost.

mod support;

use std::process::{Child, Command};
use std::time::Duration;

use rand::Rng;
use sluice_topologies::normalization::{EHR_TOPIC, OUTPUT_TOPIC, PHARMACY_TOPIC};
use support::TestBroker;

const KILLS: usize = 20;

/// Starts a worker process; its log is appended to `<state_dir>/worker.log`.
fn start_worker(broker: &TestBroker, guarantee: &str, state_dir: &std::path::Path) -> Child {
    let mut command = support::worker_command(
        broker,
        "normalization",
        &format!("crash-{guarantee}"),
        state_dir,
    );
    command
        .args(["--guarantee", guarantee])
        // Restarted workers take their old place in the group at once.
        .args(["--set", "static.membership=true"]);
    if guarantee == "at_least_once" {
        // The default 5 s would let few workers that live a few seconds commit anything.
        command.args(["--set", "commit.interval.ms=1000"]);
    }
    command.spawn().expect("the sluice binary starts")
}

/// Returns (valid inputs, outputs, duplicates).
fn kill_repeatedly(guarantee: &str) -> (usize, usize, usize) {
    let broker = TestBroker::start();
    broker.create_topics(&[EHR_TOPIC, PHARMACY_TOPIC], 8);
    let scratch = support::ScratchDir::new("sluice-crash");
    let state_dir = scratch.path();

    // Records keep arriving, for about 100 s, while the worker is being killed.
    let brokers = broker.brokers.clone();
    let producer = std::thread::spawn(move || {
        support::produce_orders_paced(&brokers, 100_000, 0.01, 99, Some(2_000))
    });

    let mut rng = rand::rng();
    let mut worker = start_worker(&broker, guarantee, state_dir);
    let mut kills_while_records_flow = 0;
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(1_500..7_000)));
        kills_while_records_flow += usize::from(!producer.is_finished());
        worker.kill().expect("SIGKILL the worker");
        worker.wait().unwrap();
        worker = start_worker(&broker, guarantee, state_dir);
    }
    let inputs = producer.join().unwrap();
    assert!(
        kills_while_records_flow >= KILLS / 2,
        "most kills hit a worker with records flowing ({kills_while_records_flow} of {KILLS})"
    );
    let group = format!("crash-{guarantee}");
    eprintln!("worker log: {}", state_dir.join("worker.log").display());
    let log = state_dir.join("worker.log");
    support::wait_until(
        "the last worker catching up",
        Duration::from_secs(300),
        || {
            if let Some(status) = worker.try_wait().unwrap() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                panic!(
                    "the worker exited on its own ({status}); last log lines:\n{}",
                    tail.join("\n")
                );
            }
            support::caught_up(&broker.brokers, &group, &[EHR_TOPIC, PHARMACY_TOPIC])
        },
    );
    // A graceful stop of the last one.
    send_sigterm(&worker);
    let status = worker.wait().unwrap();
    assert!(
        status.success(),
        "the last worker stops cleanly on SIGTERM: {status:?}"
    );

    let out = support::read_committed(&broker.brokers, OUTPUT_TOPIC);
    let keys: std::collections::HashSet<String> =
        out.iter().map(|r| r.key.clone().unwrap()).collect();
    let lost: Vec<&String> = inputs.valid_keys.difference(&keys).collect();
    if !lost.is_empty() {
        let uncommitted = support::read_all(&broker.brokers, OUTPUT_TOPIC, "read_uncommitted");
        let anywhere: std::collections::HashSet<String> =
            uncommitted.iter().map(|r| r.key.clone().unwrap()).collect();
        let in_aborted = lost.iter().filter(|k| anywhere.contains(**k)).count();
        panic!(
            "{} of {} valid orders lost ({in_aborted} of them only in aborted transactions); e.g. {:?}; worker log {}",
            lost.len(),
            inputs.valid_keys.len(),
            &lost[..lost.len().min(5)],
            state_dir.join("worker.log").display()
        );
    }
    let (written, duplicates) = support::output_summary(&out);
    eprintln!(
        "{guarantee}: {KILLS} kills, {} inputs, {} valid, {written} outputs, {duplicates} duplicates",
        inputs.total,
        inputs.valid_keys.len()
    );
    (inputs.valid_keys.len(), written, duplicates)
}

fn send_sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn exactly_once_survives_20_kill_9s_with_nothing_lost_or_duplicated() {
    let (valid, written, duplicates) = kill_repeatedly("exactly_once_v2");
    assert_eq!(duplicates, 0);
    assert_eq!(written, valid);
}

#[test]
fn at_least_once_survives_20_kill_9s_with_nothing_lost() {
    let (valid, written, duplicates) = kill_repeatedly("at_least_once");
    assert_eq!(
        written,
        valid + duplicates,
        "every output is a valid order or a counted duplicate"
    );
}
