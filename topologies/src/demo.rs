//! The demo: normalization on generated orders, run in-process by the TestDriver.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_engine::serde::Serdes;
use sluice_engine::task::TaskError;
use sluice_engine::{Serde, TestDriver};

use crate::generator::OrderGenerator;
use crate::normalization::{self, EHR_TOPIC, OUTPUT_TOPIC, PHARMACY_TOPIC};

/// What the demo saw.
#[derive(Debug)]
pub struct DemoReport {
    pub records_in: u64,
    pub records_out: u64,
    pub dead_lettered: u64,
    /// Dead-letter messages and how often each occurred.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// A few canonical events, one line each (synthetic data).
    pub samples: Vec<String>,
    pub elapsed: Duration,
}

/// Generates `orders` orders from each feed (`malformed` of them broken) and runs them
/// through the normalization topology.
pub fn run(orders: usize, malformed: f64, seed: u64) -> Result<DemoReport, TaskError> {
    let output = normalization::local_output_serde();
    let mut driver = TestDriver::new(normalization::topology(normalization::local_output_serde()));
    let mut generator = OrderGenerator::new(seed).with_malformed_ratio(malformed);
    let started = Instant::now();
    for _ in 0..orders {
        for (topic, sample) in [
            (EHR_TOPIC, generator.next_ehr()),
            (PHARMACY_TOPIC, generator.next_pharmacy()),
        ] {
            driver.pipe_raw(topic, Some(sample.key.as_bytes()), Some(&sample.value))?;
        }
    }
    let elapsed = started.elapsed();

    let written = driver.read_raw(OUTPUT_TOPIC);
    let mut dead_letter_reasons = BTreeMap::new();
    let dead = driver.dead_letters();
    for d in &dead {
        // Positions vary per record; the reason is what the summary groups by.
        let reason = d.message.split(" at line ").next().unwrap_or(&d.message);
        *dead_letter_reasons.entry(reason.to_string()).or_insert(0) += 1;
    }
    let samples = written
        .iter()
        .take(3)
        .filter_map(|r| {
            let order = output.deserialize(OUTPUT_TOPIC, r.value.as_deref()).ok()?;
            let key = Serdes::string()
                .deserialize(OUTPUT_TOPIC, r.key.as_deref())
                .ok()?;
            Some(format!(
                "{key}  {}  {}  ndc {}  {}",
                r.headers.get_str("event-type").unwrap_or("-"),
                order.source_system.as_str(),
                order.medication.ndc,
                order.status.as_str(),
            ))
        })
        .collect();
    Ok(DemoReport {
        records_in: 2 * orders as u64,
        records_out: written.len() as u64,
        dead_lettered: dead.len() as u64,
        dead_letter_reasons,
        samples,
        elapsed,
    })
}
