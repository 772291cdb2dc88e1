//! `sluice reference`: generate reference data, or load it into MongoDB. The work is in
//! `sluice_topologies::enrichment`; this is the command line around it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use sluice_connectors::mongo::MongoConfig;
use sluice_topologies::enrichment::{
    COVERAGE_TOPIC, PatientCoverage, ReferenceGenerator, load_reference, publish_coverage,
    read_json_lines,
};

#[derive(Subcommand)]
pub enum ReferenceCommand {
    /// Upserts drug reference and formulary JSON-lines files into MongoDB (database
    /// `reference`, collections `drug_reference` and `formulary`), creating their unique
    /// indexes. Loading the same files again changes nothing.
    Load {
        /// mongodb://[user:password@]host[:port][/?options]
        #[arg(long)]
        mongodb_uri: String,
        #[arg(long)]
        drugs: PathBuf,
        #[arg(long)]
        formulary: PathBuf,
    },
    /// Writes patient coverage (a patient_coverage.jsonl) keyed by patient id onto its
    /// compacted topic, created when missing.
    PublishCoverage {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        coverage: PathBuf,
        #[arg(long, default_value = COVERAGE_TOPIC)]
        topic: String,
        /// For a topic that does not exist yet.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// For a topic that does not exist yet.
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
    },
    /// Writes drug_reference.jsonl, formulary.jsonl and patient_coverage.jsonl for the
    /// drugs and patients of the order generator.
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// The same seed gives the same files.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Patients pt-00000.. considered for coverage.
        #[arg(long, default_value_t = 10_000)]
        patients: u32,
        #[arg(long, default_value_t = 2_000)]
        drugs: usize,
    },
}

pub fn run(command: ReferenceCommand) -> Result<(), String> {
    match command {
        ReferenceCommand::Load {
            mongodb_uri,
            drugs,
            formulary,
        } => {
            // A one-off load waits for a slow or starting server, where a lookup in a
            // running topology should fail fast and let the task retry.
            let config = MongoConfig::new(mongodb_uri)
                .map_err(|e| e.to_string())?
                .with_server_selection_timeout(Duration::from_secs(30))
                .with_request_timeout(Duration::from_secs(120));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            let report = runtime.block_on(async {
                let client = config.connect().await.map_err(|e| e.to_string())?;
                load_reference(&client, &drugs, &formulary)
                    .await
                    .map_err(|e| e.to_string())
            })?;
            for (what, summary) in [
                ("drug_reference", report.drugs),
                ("formulary", report.formulary),
            ] {
                println!(
                    "reference.{what}: {} upserted ({} new, {} replaced, {} changed)",
                    summary.total(),
                    summary.inserted,
                    summary.matched,
                    summary.modified
                );
            }
            Ok(())
        }
        ReferenceCommand::PublishCoverage {
            brokers,
            coverage,
            topic,
            partitions,
            replication_factor,
        } => {
            let records =
                read_json_lines::<PatientCoverage>(&coverage).map_err(|e| e.to_string())?;
            let written =
                publish_coverage(&brokers, &topic, partitions, replication_factor, &records)
                    .map_err(|e| e.to_string())?;
            println!("{written} coverages -> {topic}");
            Ok(())
        }
        ReferenceCommand::Generate {
            out,
            seed,
            patients,
            drugs,
        } => {
            let data = ReferenceGenerator::new(seed)
                .with_patients(patients)
                .with_drugs(drugs)
                .generate();
            let files = data
                .write_json_lines(&out)
                .map_err(|e| format!("cannot write into {}: {e}", out.display()))?;
            for (count, what, path) in [
                (data.drugs.len(), "drugs", &files.drugs),
                (data.formulary.len(), "formulary rows", &files.formulary),
                (data.coverage.len(), "patient coverages", &files.coverage),
            ] {
                println!("{count:>6} {what:<17} -> {}", path.display());
            }
            println!(
                "order NDCs left out of the reference on purpose: {}",
                data.absent_order_ndcs.join(", ")
            );
            Ok(())
        }
    }
}
