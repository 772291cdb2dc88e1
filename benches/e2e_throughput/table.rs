//! The table the harness ends with: per variant the medians of its runs (rate, MB/s,
//! latency, peak RSS, CPU per record by role), then the ratios the goals are stated in.

use std::collections::HashMap;

use super::{
    BASELINE_VARIANTS, Measured, VARIANT_LETTERS, VARIANTS, async_calls, baseline_name, enrichment,
    partitions, quix, webhooks,
};

/// The median of `values` (the upper one of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `x/y` within each run, in run order: the two variants ran minutes apart on the same
/// broker, so each of these shares that run's conditions.
fn run_ratios(per_run: &HashMap<&str, Vec<f64>>, x: &str, y: &str) -> Vec<f64> {
    match (per_run.get(x), per_run.get(y)) {
        (Some(xs), Some(ys)) => xs.iter().zip(ys).map(|(x, y)| x / y).collect(),
        _ => Vec::new(),
    }
}

/// The per-run ratios and how far the farthest lies from their median, in percent: a
/// ratio "repeats" when that is a few percent.
fn describe_runs(runs: &[f64]) -> String {
    if runs.len() < 2 {
        return String::new();
    }
    let middle = median(runs.to_vec());
    let spread = runs
        .iter()
        .map(|r| (r / middle - 1.0).abs())
        .fold(0.0, f64::max);
    let listed: Vec<String> = runs.iter().map(|r| format!("{r:.2}")).collect();
    format!(
        "(runs {}: within {:.0}% of their median)",
        listed.join(", "),
        spread * 100.0
    )
}

/// The ratios the goals are stated in, as (numerator, denominator, what it compares, goal):
/// printed when both rows ran.
/// The per-record goals are set on the ratios that compare like with like: Sluice and the
/// bare loop writing the same headers, so the same bytes. c/a and d/b are printed too; they
/// hold Sluice's lineage headers against a loop that writes none.
const RATIOS: [(&str, &str, &str, Option<f64>); 14] = [
    (
        "c",
        "a",
        "Sluice exactly-once / bare transactional loop",
        None,
    ),
    (
        "c",
        "al",
        "the same / bare transactional loop writing lineage headers",
        Some(0.90),
    ),
    (
        "cn",
        "a",
        "Sluice exactly-once without lineage / bare transactional loop",
        Some(0.90),
    ),
    ("d", "b", "Sluice at-least-once / bare loop", None),
    (
        "d",
        "bl",
        "the same / bare loop writing lineage headers",
        Some(0.95),
    ),
    (
        "dn",
        "b",
        "Sluice at-least-once without lineage / bare loop",
        Some(0.95),
    ),
    (
        "e",
        "c",
        "normalization / the stateless chain, exactly-once",
        Some(0.50),
    ),
    ("g", "c", "enrich at ~95% hits / plain map", Some(0.80)),
    ("gk", "c", "the same, key-ordered / plain map", Some(0.80)),
    (
        "h",
        "e",
        "enrichment at >95% hits / normalization alone",
        Some(0.80),
    ),
    (
        "e",
        "qe",
        "Sluice normalization / Quix, exactly-once",
        Some(10.0),
    ),
    (
        "ea",
        "qa",
        "Sluice normalization / Quix, at-least-once",
        Some(10.0),
    ),
    (
        "w",
        "wb",
        "webhook deliveries / bare reqwest loop",
        Some(0.80),
    ),
    (
        "wa",
        "wk",
        "the same at-least-once / bare Kafka+reqwest",
        None,
    ),
];

/// Prints the medians of every variant that ran, then the ratios between them.
pub fn print_table(results: &HashMap<String, Vec<Measured>>, runs: u64, with_baseline: bool) {
    println!("\nmedians of {runs} run(s):\n");
    println!(
        "| variant | records/s | MB/s | p50 latency (ms) | p99 latency (ms) | peak RSS (MB) | CPU µs/record: thread + clients + broker |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rows: Vec<(String, String)> = VARIANT_LETTERS
        .iter()
        .zip(VARIANTS)
        .map(|(letter, variant)| (letter.to_string(), variant.to_string()))
        .collect();
    for capacity in async_calls::CAPACITIES {
        rows.push((format!("f{capacity}"), format!("sluice-calls-{capacity}")));
    }
    rows.push(("g".to_string(), "sluice-enrich".to_string()));
    rows.push(("gk".to_string(), "sluice-enrich-keyed".to_string()));
    rows.push(("h".to_string(), enrichment::WARM.to_string()));
    rows.push(("hc".to_string(), enrichment::COLD.to_string()));
    for (letter, variant) in webhooks::VARIANTS {
        rows.push((letter.to_string(), variant.to_string()));
    }
    rows.push(("qe".to_string(), quix::EOS.to_string()));
    rows.push(("qa".to_string(), quix::ALOS.to_string()));
    if with_baseline {
        for variant in BASELINE_VARIANTS {
            let letter = VARIANTS
                .iter()
                .position(|v| *v == variant)
                .map(|i| VARIANT_LETTERS[i])
                .expect("a baseline variant is one of the variants");
            rows.push((format!("{letter}0"), baseline_name(variant)));
        }
    }
    let mut rate: HashMap<&str, f64> = HashMap::new();
    let mut per_run: HashMap<&str, Vec<f64>> = HashMap::new();
    for (letter, variant) in &rows {
        // Absent when SLUICE_E2E_ONLY left the variant out.
        let Some(m) = results.get(variant) else {
            continue;
        };
        let pick = |f: fn(&Measured) -> f64| median(m.iter().map(f).collect());
        let r = pick(Measured::records_per_second);
        rate.insert(letter.as_str(), r);
        per_run.insert(
            letter.as_str(),
            m.iter().map(Measured::records_per_second).collect(),
        );
        let (thread, clients, broker) = (
            pick(|m| m.cpu.processing_us),
            pick(|m| m.cpu.clients_us),
            pick(|m| m.cpu.broker_us),
        );
        println!(
            "| ({letter}) {variant} | {r:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {thread:.2} + {clients:.2} + {broker:.2} = {:.2} |",
            pick(Measured::megabytes_per_second),
            pick(|m| m.p50_ms),
            pick(|m| m.p99_ms),
            pick(|m| m.peak_rss_mb),
            thread + clients + broker
        );
    }
    println!();
    // `x/y` of two rows' rates, when both ran.
    let ratio = |x: &str, y: &str| Some(rate.get(x)? / rate.get(y)?);
    let name = |x: &str, y: &str, what: &str| format!("{x}/{y} ({what})");
    // The longest name sets the column, so the figures line up.
    let width = RATIOS
        .iter()
        .map(|(x, y, what, _)| name(x, y, what).chars().count())
        .max();
    for (x, y, what, goal) in RATIOS {
        if let Some(r) = ratio(x, y) {
            let name = name(x, y, what);
            let goal = goal.map_or(String::new(), |g| format!("   (goal >= {g:.2})"));
            let runs = run_ratios(&per_run, x, y);
            println!(
                "{name:<width$} = {r:.2}   {}{goal}",
                describe_runs(&runs),
                width = width.unwrap_or(0)
            );
        }
    }
    for capacity in async_calls::CAPACITIES {
        let Some(r) = rate.get(format!("f{capacity}").as_str()) else {
            continue;
        };
        // One stream thread runs every partition's task, each with `capacity` calls.
        let ideal =
            partitions() as f64 * capacity as f64 / async_calls::SERVICE_LATENCY.as_secs_f64();
        let ceiling = rate.get("c").map_or(ideal, |c| ideal.min(*c));
        println!(
            "f{capacity}: {r:.0} records/s = {:.2} of 8 x {capacity} / 5 ms = {ideal:.0}; {:.2} of min(that, c)   (goal >= 0.80)",
            r / ideal,
            r / ceiling
        );
    }
    for (letter, variant) in [("h", enrichment::WARM), ("hc", enrichment::COLD)] {
        if let Some(m) = results.get(variant) {
            let p99 = median(m.iter().map(|m| m.lookup_p99_ms).collect());
            println!("{letter}: p99 of the lookups that reached the reference data = {p99:.2} ms");
        }
    }
    if let (Some(w), Some(wb)) = (results.get("sluice-webhooks"), results.get("bare-reqwest")) {
        let p99 = |m: &Vec<Measured>| median(m.iter().map(|m| m.p99_ms).collect());
        println!(
            "w: p99 latency added to a delivery = {:.1} ms ({:.1} ms from the Kafka produce, against {:.1} ms for the bare POST)",
            p99(w) - p99(wb),
            p99(w),
            p99(wb)
        );
    }
    if with_baseline {
        let ratios = ["c0/a", "d0/b", "c/c0", "d/d0", "e/e0"].map(|name| {
            let (x, y) = name.split_once('/').unwrap();
            format!(
                "{name} = {:.2} {}",
                ratio(x, y).unwrap_or(f64::NAN),
                describe_runs(&run_ratios(&per_run, x, y))
            )
        });
        println!("baseline build: {}", ratios.join(", "));
    }
}
