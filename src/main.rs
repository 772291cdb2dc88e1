//! `sluice`: the command-line worker. Runs, lists, describes and demonstrates the
//! topologies that ship with Sluice.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod reference;

/// jemalloc, for Rust's allocations and, as the process's `malloc`, for librdkafka's and
/// RocksDB's. With glibc's allocator a stream thread and librdkafka's threads take one
/// arena's lock for every record: librdkafka's fetch thread allocates an op per fetched
/// record and the stream thread frees it (and the reverse for produced records). That
/// lock was where a restore spent its pauses: with jemalloc it restores about half again as
/// fast (BENCHMARKS.md, "Restore end to end"). A worker binary of your own should do the
/// same.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};
use sluice_engine::serde::Schemas;
use sluice_runtime::{BuildContext, ConfigBuilder, Worker, WorkerStats};
use sluice_topologies::catalog;
use sluice_topologies::demo::{self, DemoOptions};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Stream processing for the healthcare event broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists the topologies this build ships.
    List,
    /// Prints a topology's graph: text by default, a Mermaid flowchart with --mermaid.
    Describe {
        topology: String,
        #[arg(long)]
        mermaid: bool,
    },
    /// Runs a topology as a worker against a Kafka cluster until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Runs the normalization topology through the real runtime on generated EHR and
    /// pharmacy orders (on an in-process mock cluster unless --brokers is given).
    Demo {
        /// How many orders to generate from each feed.
        #[arg(long, default_value_t = 20_000)]
        orders: usize,
        /// Share of generated orders that are malformed, 0.0-1.0.
        #[arg(long, default_value_t = 0.01)]
        malformed: f64,
        /// Seed of the generator: the same seed gives the same orders.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// A real cluster instead of the in-process mock (default: $SLUICE_BROKERS, which
        /// `scripts/broker.sh start` prints).
        #[arg(long, env = "SLUICE_BROKERS")]
        brokers: Option<String>,
        #[arg(long, default_value_t = 8)]
        partitions: i32,
    },
    /// Reference data for enrichment: generate it, or load it into MongoDB.
    #[command(subcommand)]
    Reference(reference::ReferenceCommand),
    /// The webhooks topology's tools.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Moves dead-lettered webhooks back to the input topic with fresh retry counts: all
    /// of them, or those of one endpoint host or time range.
    Replay {
        #[arg(long, env = "SLUICE_BROKERS")]
        brokers: String,
        /// Only the dead letters of this endpoint host.
        #[arg(long)]
        endpoint_host: Option<String>,
        /// Only those whose last attempt was at or after this time (epoch ms).
        #[arg(long)]
        since_ms: Option<i64>,
        /// Only those whose last attempt was before this time (epoch ms).
        #[arg(long)]
        until_ms: Option<i64>,
        /// The topology's keys, as for `run` (e.g. webhooks.input.topic=...).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rdkafka=error"),
    )
    .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List => {
            for t in catalog() {
                println!("{:<16} {}", t.name, t.description);
            }
            Ok(())
        }
        Command::Describe { topology, mermaid } => describe(&topology, mermaid),
        Command::Run(args) => run(args),
        Command::Webhooks(WebhooksCommand::Replay {
            brokers,
            endpoint_host,
            since_ms,
            until_ms,
            settings,
        }) => replay_webhooks(&brokers, endpoint_host, since_ms, until_ms, &settings),
        Command::Reference(command) => reference::run(command),
        Command::Demo {
            orders,
            malformed,
            seed,
            brokers,
            partitions,
        } => run_demo(DemoOptions {
            orders,
            malformed,
            seed,
            brokers,
            partitions,
            timeout: Duration::from_secs(600),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn replay_webhooks(
    brokers: &str,
    endpoint_host: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    settings: &[String],
) -> Result<(), String> {
    use sluice_topologies::webhooks::{WebhooksConfig, replay};
    let mut pairs = Vec::new();
    for setting in settings {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("--set {setting:?} is not KEY=VALUE"))?;
        pairs.push((key.to_string(), value.to_string()));
    }
    let config = WebhooksConfig::from_map(pairs).map_err(|e| e.to_string())?;
    let filter = replay::ReplayFilter {
        endpoint_host,
        since_ms,
        until_ms,
    };
    let summary = replay::replay(brokers, &config, &filter).map_err(|e| e.to_string())?;
    println!(
        "replayed {} of {} dead letters from {} to {}",
        summary.replayed,
        summary.read,
        config.dead_letter_topic(),
        config.input_topic
    );
    Ok(())
}

fn find_topology(name: &str) -> Result<sluice_topologies::CatalogEntry, String> {
    catalog()
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| {
            let known: Vec<_> = catalog().iter().map(|t| t.name).collect();
            format!(
                "no topology named `{name}`; the topologies are: {}",
                known.join(", ")
            )
        })
}

fn describe(name: &str, mermaid: bool) -> Result<(), String> {
    let entry = find_topology(name)?;
    // The graph does not depend on settings: built with the defaults and local ids.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let context = BuildContext {
        schemas: &Schemas::local(),
        settings: &Default::default(),
        runtime: runtime.handle(),
    };
    let topology = (entry.build)(&context).map_err(|e| e.to_string())?;
    if mermaid {
        print!("{}", topology.to_mermaid());
    } else {
        print!("{}", topology.describe());
    }
    Ok(())
}

#[derive(clap::Args)]
struct RunArgs {
    topology: String,
    /// bootstrap.servers: host:port[,host:port...] (default: $SLUICE_BROKERS)
    #[arg(long)]
    brokers: Option<String>,
    /// A TOML config file; its keys may be overridden by SLUICE_CONFIG_* variables and flags.
    #[arg(long)]
    config: Option<PathBuf>,
    /// application.id (default: sluice-<topology>).
    #[arg(long)]
    application_id: Option<String>,
    /// num.stream.threads
    #[arg(long)]
    threads: Option<usize>,
    /// processing.guarantee: exactly_once_v2 or at_least_once
    #[arg(long)]
    guarantee: Option<String>,
    /// Any other key, as key=value (repeatable), e.g. --set kafka.security.protocol=SSL
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
}

fn run(args: RunArgs) -> Result<(), String> {
    let entry = find_topology(&args.topology)?;
    let mut builder = ConfigBuilder::new();
    builder.accept(&(entry.keys)());
    builder.set(
        "application.id",
        format!("sluice-{}", entry.name),
        "default",
    );
    if let Some(path) = &args.config {
        builder.file(path);
    }
    builder.env(std::env::vars());
    let flags = [
        ("bootstrap.servers", args.brokers),
        ("application.id", args.application_id),
        ("num.stream.threads", args.threads.map(|n| n.to_string())),
        ("processing.guarantee", args.guarantee),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            builder.set(key, value, "flag");
        }
    }
    for setting in &args.settings {
        match setting.split_once('=') {
            Some((key, value)) => {
                builder.set(key, value, "--set");
            }
            None => {
                return Err(format!(
                    "--set {setting:?} is not KEY=VALUE: write e.g. --set commit.interval.ms=200"
                ));
            }
        }
    }
    let config = builder.build().map_err(|e| e.to_string())?;

    // First SIGTERM/SIGINT: graceful stop. A second one while stopping: exit at once.
    let stopping = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stopping.clone())
            .map_err(|e| format!("cannot install the signal handler: {e}"))?;
        signal_hook::flag::register(signal, stopping.clone())
            .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }

    let worker = Worker::start_with(config, entry.build).map_err(|e| e.to_string())?;
    let stats = worker.stats().clone();
    let started = Instant::now();
    let mut last = (Instant::now(), Snapshot::of(&stats));
    while !stopping.load(Ordering::Relaxed) && !worker.any_thread_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if last.0.elapsed() >= Duration::from_secs(5) {
            let now = Snapshot::of(&stats);
            log::info!(
                "{}",
                now.summary(&last.1, last.0.elapsed(), started.elapsed())
            );
            last = (Instant::now(), now);
        }
    }
    log::info!("stopping: committing and leaving the group");
    worker.stop();
    worker.join().map_err(|e| e.to_string())
}

/// The worker's counters at one moment.
struct Snapshot {
    consumed: u64,
    produced: u64,
    dead_lettered: u64,
    commits: u64,
    aborts: u64,
    lag: u64,
}

impl Snapshot {
    fn of(stats: &WorkerStats) -> Self {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Self {
            consumed: get(&stats.consumed),
            produced: get(&stats.produced),
            dead_lettered: get(&stats.dead_lettered),
            commits: get(&stats.commits),
            aborts: get(&stats.aborts),
            lag: stats.lag(),
        }
    }

    fn summary(&self, before: &Snapshot, over: Duration, uptime: Duration) -> String {
        let rate = |now: u64, then: u64| (now - then) as f64 / over.as_secs_f64().max(1e-9);
        format!(
            "in {:.0}/s, out {:.0}/s, lag {} | total in {}, out {}, dead-lettered {} | commits {}, aborts {} | up {:.0}s",
            rate(self.consumed, before.consumed),
            rate(self.produced, before.produced),
            self.lag,
            self.consumed,
            self.produced - self.dead_lettered,
            self.dead_lettered,
            self.commits,
            self.aborts,
            uptime.as_secs_f64()
        )
    }
}

fn run_demo(options: DemoOptions) -> Result<(), String> {
    if !(0.0..=1.0).contains(&options.malformed) {
        return Err(format!(
            "--malformed {} is out of range: give a share between 0.0 and 1.0",
            options.malformed
        ));
    }
    let cluster = match &options.brokers {
        Some(b) => format!("the cluster at {b}"),
        None => "an in-process mock Kafka cluster".to_string(),
    };
    println!(
        "Sluice demo: normalization of {} EHR and {} pharmacy orders ({:.1}% malformed, seed {})",
        options.orders,
        options.orders,
        options.malformed * 100.0,
        options.seed
    );
    println!(
        "through the Kafka runtime (exactly_once_v2) on {cluster}, {} partitions.\n",
        options.partitions
    );
    let report = demo::run(&options, |stats, elapsed| {
        let s = Snapshot::of(stats);
        eprint!(
            "\r  {:>6.1}s  in {:>8}  out {:>8}  dead-lettered {:>6}  commits {:>5}  lag {:>7}",
            elapsed.as_secs_f64(),
            s.consumed,
            s.produced - s.dead_lettered,
            s.dead_lettered,
            s.commits,
            s.lag
        );
    })
    .map_err(|e| e.to_string())?;
    eprintln!();
    let seconds = report.elapsed.as_secs_f64();
    println!("records in        {:>10}", report.records_in);
    println!("canonical out     {:>10}", report.records_out);
    println!("dead-lettered     {:>10}", report.dead_lettered);
    println!("commits           {:>10}", report.commits);
    println!(
        "throughput        {:>10.0} records/s ({seconds:.2} s)",
        report.records_in as f64 / seconds
    );
    println!("\nDead-letter reasons (read back from normalization.dlq):");
    for (reason, count) in &report.dead_letter_reasons {
        println!("  {count:>8}  {reason}");
    }
    println!(
        "\nA few canonical events (synthetic data, read back from canonical.medication-orders):"
    );
    for line in &report.samples {
        println!("  {line}");
    }
    let enriched = &report.enrichment;
    println!(
        "\nEnrichment (built-in sample reference data: 2,000 drugs, 3 plans, patient coverage):"
    );
    println!("enriched out      {:>10}", enriched.enriched);
    println!(
        "drug cache        {:>10.1}% of {} lookups answered from the cache ({} reached the reference data)",
        enriched.cache_hit_ratio() * 100.0,
        enriched.drug_lookups,
        enriched.drug_calls
    );
    for (status, count) in &enriched.statuses {
        println!("  {count:>8}  {status}");
    }
    println!("\nA few enriched events (read back from canonical.medication-orders.enriched):");
    for line in &enriched.samples {
        println!("  {line}");
    }
    Ok(())
}
