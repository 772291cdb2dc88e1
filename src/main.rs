//! `sluice`: the command-line worker. Lists, describes and demonstrates the topologies
//! that ship with Sluice.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_topologies::catalog;

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
    /// Runs the normalization topology in-process on generated EHR and pharmacy orders and
    /// prints a summary.
    Demo {
        /// How many orders to generate from each source.
        #[arg(long, default_value_t = 50_000)]
        orders: usize,
        /// Share of generated orders that are malformed, 0.0-1.0.
        #[arg(long, default_value_t = 0.01)]
        malformed: f64,
        /// Seed of the generator: the same seed gives the same orders.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List => {
            for t in catalog() {
                println!("{:<16} {}", t.name, t.description);
            }
            Ok(())
        }
        Command::Describe { topology, mermaid } => describe(&topology, mermaid),
        Command::Demo {
            orders,
            malformed,
            seed,
        } => demo(orders, malformed, seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn describe(name: &str, mermaid: bool) -> Result<(), String> {
    let entry = catalog()
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| {
            let known: Vec<_> = catalog().iter().map(|t| t.name).collect();
            format!(
                "no topology named `{name}`; the topologies are: {}",
                known.join(", ")
            )
        })?;
    let topology = (entry.build)();
    if mermaid {
        print!("{}", topology.to_mermaid());
    } else {
        print!("{}", topology.describe());
    }
    Ok(())
}

fn demo(orders: usize, malformed: f64, seed: u64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&malformed) {
        return Err(format!(
            "--malformed {malformed} is out of range: give a share between 0.0 and 1.0"
        ));
    }
    println!(
        "Sluice demo: the normalization topology on {orders} EHR and {orders} pharmacy orders"
    );
    println!(
        "(generated, seed {seed}, {:.1}% malformed), run in-process by the TestDriver.\n",
        malformed * 100.0
    );
    let report =
        sluice_topologies::demo::run(orders, malformed, seed).map_err(|e| e.to_string())?;
    let seconds = report.elapsed.as_secs_f64();
    println!("records in        {:>10}", report.records_in);
    println!("canonical out     {:>10}", report.records_out);
    println!("dead-lettered     {:>10}", report.dead_lettered);
    for (reason, count) in &report.dead_letter_reasons {
        println!("  {count:>8}  {reason}");
    }
    println!(
        "throughput        {:>10.0} records/s ({seconds:.2} s)",
        report.records_in as f64 / seconds
    );
    println!("\nA few canonical events (synthetic data):");
    for line in &report.samples {
        println!("  {line}");
    }
    Ok(())
}
