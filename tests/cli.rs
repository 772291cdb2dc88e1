//! The `sluice` command, run as a user runs it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("the sluice binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn list_names_the_shipped_topologies() {
    let out = sluice(&["list"]);
    assert!(out.status.success());
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("normalization ")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn describe_prints_the_normalization_graph() {
    let out = sluice(&["describe", "normalization"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.starts_with("Topology: normalization\n"), "{text}");
    for line in [
        "(topics: [external.ehr.medication-orders])",
        "(topics: [external.pharmacy.prescriptions])",
        "(topic: canonical.medication-orders)",
        "dead-letter topic normalization.dlq",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn describe_of_an_unknown_topology_names_the_known_ones() {
    let out = sluice(&["describe", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no topology named `nope`"), "{err}");
    assert!(err.contains("normalization"), "{err}");
}

/// Mermaid's own parser (installed by scripts/test.sh) must accept the diagram.
#[test]
fn describe_mermaid_is_accepted_by_mermaid() {
    let out = sluice(&["describe", "normalization", "--mermaid"]);
    assert!(out.status.success());
    let chart = stdout(&out);
    assert!(chart.starts_with("flowchart LR\n"), "{chart}");

    let checker = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mermaid-check");
    assert!(
        checker.join("node_modules/mermaid").is_dir(),
        "Mermaid's parser is not installed: run `bash scripts/test.sh` (it runs npm ci in {})",
        checker.display()
    );
    let check = |diagram: &str| {
        let mut node = Command::new("node")
            .arg("check.mjs")
            .current_dir(&checker)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs");
        node.stdin
            .take()
            .unwrap()
            .write_all(diagram.as_bytes())
            .unwrap();
        node.wait_with_output().unwrap()
    };
    let verdict = check(&chart);
    assert!(
        verdict.status.success(),
        "Mermaid rejected the diagram: {}\n{chart}",
        String::from_utf8_lossy(&verdict.stderr)
    );
    // The checker itself rejects a broken diagram, so its acceptance means something.
    assert!(!check("flowchart LR\n  a([\"x\" -->\n").status.success());
}

#[test]
fn demo_accounts_for_every_generated_order() {
    let out = sluice(&[
        "demo",
        "--orders",
        "1000",
        "--malformed",
        "0.05",
        "--seed",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let number = |label: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in\n{text}"));
        line[label.len()..].trim().parse().unwrap()
    };
    let (records_in, records_out, dead) = (
        number("records in"),
        number("canonical out"),
        number("dead-lettered"),
    );
    assert_eq!(records_in, 2000);
    assert_eq!(records_out + dead, records_in, "{text}");
    assert!(
        dead > 0,
        "5% malformed input must reach the dead-letter topic:\n{text}"
    );
}

#[test]
fn demo_rejects_a_malformed_share_out_of_range() {
    let out = sluice(&["demo", "--malformed", "1.5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--malformed 1.5 is out of range"), "{err}");
}

#[test]
fn run_with_unreachable_brokers_fails_within_the_startup_timeout() {
    let started = std::time::Instant::now();
    let out = sluice(&[
        "run",
        "normalization",
        "--brokers",
        "127.0.0.1:1",
        "--set",
        "startup.timeout.ms=2000",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the Kafka cluster at 127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("startup.timeout.ms"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "bounded, not a hang"
    );
}

#[test]
fn run_from_a_shell_that_exported_the_broker_scripts_variables_reads_sluice_brokers() {
    // What `eval "$(scripts/broker.sh start)"; export SLUICE_BROKERS` leaves behind, with the
    // broker script's own settings: none is an unknown key, and SLUICE_BROKERS is the cluster.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "normalization", "--set", "startup.timeout.ms=1000"])
        .env("SLUICE_BROKERS", "127.0.0.1:1")
        .env("SLUICE_BROKER_HOST", "127.0.0.1")
        .env("SLUICE_BROKER_PORT", "19092")
        .env("SLUICE_BROKER_DIR", "/tmp/sluice-broker")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("unknown configuration key"), "{err}");
    assert!(
        err.contains("cannot reach the Kafka cluster at 127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn run_with_bad_config_names_every_bad_key_and_what_it_accepts() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sluice.toml");
    std::fs::write(
        &file,
        "commit.interval.ms = \"soon\"\n[kafka]\n\"sasl.password\" = \"hunter2\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "run",
            "normalization",
            "--brokers",
            "127.0.0.1:9092",
            "--config",
        ])
        .arg(&file)
        .args(["--guarantee", "sometimes"])
        .env("SLUICE_CONFIG_NUM_STREAM_THREAD", "2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 configuration problems"), "{err}");
    assert!(
        err.contains("commit.interval.ms = \"soon\" is invalid: a whole number of milliseconds"),
        "{err}"
    );
    assert!(
        err.contains(
            "processing.guarantee = \"sometimes\" is invalid: exactly_once_v2 or at_least_once"
        ),
        "{err}"
    );
    assert!(err.contains("unknown configuration key `num.stream.thread` (from environment variable SLUICE_CONFIG_NUM_STREAM_THREAD)"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
