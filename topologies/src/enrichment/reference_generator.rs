//! Deterministic reference data for the orders of [`crate::generator`]: drug reference,
//! formularies of three plans, and patient coverage.
//!
//! * **Drugs.** Every NDC the order generator uses, except a chosen few (about 5%, at
//!   least one) left out on purpose so enrichment meets "not in the reference"
//!   ([`ReferenceData::absent_order_ndcs`]); then products of real generics in real
//!   therapeutic classes (see `drug_classes`) up to [`ReferenceGenerator::drugs`]. NDCs,
//!   GPI digits past the class, manufacturers and prices are synthetic.
//! * **Formulary.** Three plans (commercial, Medicare Part D, Medicaid), each listing part
//!   of the drugs, so "no formulary row" occurs, for order drugs too. Generics are mostly
//!   preferred on tier 1, brands non-preferred, specialty drugs on tier 5 with prior
//!   authorization, schedule II drugs with quantity limits; a few rows are not covered.
//! * **Coverage.** Patients `pt-00000` upward, as the orders name them
//!   ([`crate::generator::patient_id`]); about 3% have none, and about 5% have coverage
//!   that ended before the orders' simulated time (May 2024).
//!
//! The same seed and settings give the same data, line for line.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::drug_classes::{CLASSES, MANUFACTURERS, class_of};
use super::reference::{
    DeaSchedule, DrugReference, FormularyEntry, FormularyStatus, PatientCoverage, QuantityLimit,
};
use crate::generator::{order_drugs, patient_id};

/// File names in the output directory.
pub const DRUGS_FILE: &str = "drug_reference.jsonl";
pub const FORMULARY_FILE: &str = "formulary.jsonl";
pub const COVERAGE_FILE: &str = "patient_coverage.jsonl";

/// The plans: id, payer, and the share of drugs its formulary lists.
pub const PLANS: [(&str, &str, f64); 3] = [
    ("PLAN-COMM-PPO", "PAYER-NORTHWIND-HEALTH", 0.85),
    ("PLAN-MEDD-BASIC", "PAYER-MEDICARE-PART-D", 0.75),
    ("PLAN-MCAID-STATE", "PAYER-STATE-MEDICAID", 0.65),
];

/// Weights of the plans among covered patients, in [`PLANS`] order.
const PLAN_WEIGHTS: [u32; 3] = [50, 30, 20];

/// Settings of the generator; [`ReferenceGenerator::generate`] makes the data.
#[derive(Clone, Debug)]
pub struct ReferenceGenerator {
    pub seed: u64,
    /// Drugs in the reference, order drugs included (at least the order drugs kept).
    pub drugs: usize,
    /// Patients `pt-00000` .. `pt-{patients-1}` considered for coverage.
    pub patients: u32,
    /// Share of the order generator's NDCs left out of the reference (at least one when
    /// above zero).
    pub absent_order_share: f64,
}

impl ReferenceGenerator {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            drugs: 2_000,
            patients: 10_000,
            absent_order_share: 0.05,
        }
    }

    pub fn with_drugs(self, drugs: usize) -> Self {
        Self { drugs, ..self }
    }

    pub fn with_patients(self, patients: u32) -> Self {
        Self { patients, ..self }
    }

    pub fn with_absent_order_share(self, absent_order_share: f64) -> Self {
        Self {
            absent_order_share,
            ..self
        }
    }

    pub fn generate(&self) -> ReferenceData {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let (drugs, absent_order_ndcs) = self.make_drugs(&mut rng);
        let formulary = formulary(&mut rng, &drugs);
        let coverage = (0..self.patients)
            .filter_map(|i| coverage(&mut rng, i))
            .collect();
        ReferenceData {
            drugs,
            formulary,
            coverage,
            absent_order_ndcs,
        }
    }

    fn make_drugs(&self, rng: &mut StdRng) -> (Vec<DrugReference>, Vec<String>) {
        let orders = order_drugs();
        let absent_count = if self.absent_order_share > 0.0 {
            ((orders.len() as f64 * self.absent_order_share).round() as usize).max(1)
        } else {
            0
        };
        let mut absent: Vec<String> = orders.iter().map(|d| d.ndc.clone()).collect();
        absent.shuffle(rng);
        absent.truncate(absent_count.min(orders.len()));
        absent.sort();

        // Labeler codes of the fictional manufacturers, and every NDC taken so far (the
        // order generator's included, so no product reuses an absent one).
        let labelers: Vec<u32> = MANUFACTURERS
            .iter()
            .map(|_| rng.random_range(10_000..100_000))
            .collect();
        let mut taken: HashSet<String> = orders.iter().map(|d| d.ndc.clone()).collect();
        let mut drugs = Vec::with_capacity(self.drugs);

        for order_drug in orders.iter().filter(|d| !absent.contains(&d.ndc)) {
            let (ci, gi) = class_of(order_drug.generic_name)
                .expect("drug_classes lists every generic the order generator uses");
            let strength = rng.random_range(1..6);
            let mut drug = product(rng, ci, gi, strength, false);
            drug.ndc = order_drug.ndc.clone();
            drug.generic_name = order_drug.generic_name.to_string();
            drugs.push(drug);
        }
        // Products of every generic in turn, so each class has several to offer as
        // alternatives: strength, then package, then labeler vary.
        let generics: Vec<(usize, usize)> = CLASSES
            .iter()
            .enumerate()
            .flat_map(|(ci, class)| (0..class.generics.len()).map(move |gi| (ci, gi)))
            .collect();
        let mut round = 0;
        while drugs.len() < self.drugs {
            let (ci, gi) = generics[round % generics.len()];
            let strength = (round / generics.len()) % 8 + 1;
            // About one product in six is the brand.
            let brand = rng.random_bool(1.0 / 6.0);
            let mut drug = product(rng, ci, gi, strength, brand);
            let m = rng.random_range(0..MANUFACTURERS.len());
            drug.manufacturer = MANUFACTURERS[m].to_string();
            drug.ndc = loop {
                let ndc = format!(
                    "{:05}{:04}{:02}",
                    labelers[m],
                    rng.random_range(0..10_000),
                    rng.random_range(1..100)
                );
                if taken.insert(ndc.clone()) {
                    break ndc;
                }
            };
            drugs.push(drug);
            round += 1;
        }
        add_alternatives(rng, &mut drugs);
        (drugs, absent)
    }
}

/// One product of generic `gi` of class `ci`, without its NDC (set by the caller).
fn product(rng: &mut StdRng, ci: usize, gi: usize, strength: usize, brand: bool) -> DrugReference {
    let class = &CLASSES[ci];
    let generic = &class.generics[gi];
    let (low, high) = class.unit_price;
    let mut price = rng.random_range(low..high);
    if brand {
        price *= rng.random_range(3.0..8.0);
    }
    let form = rng.random_range(1..4) * 10; // 10 tablet, 20 capsule, 30 solution...
    DrugReference {
        ndc: String::new(),
        gpi: format!(
            "{}{:02}{:02}00{:02}{:02}",
            class.gpi_prefix,
            gi / 10 + 10,
            gi % 10 * 10 + 10,
            form,
            strength * 5
        ),
        drug_class: class.name.to_string(),
        generic_name: generic.name.to_string(),
        brand_name: brand.then(|| generic.brand.to_string()),
        manufacturer: MANUFACTURERS
            .choose(rng)
            .expect("MANUFACTURERS is not empty")
            .to_string(),
        controlled: generic.schedule.is_some(),
        schedule: generic.schedule,
        // Cents and hundredths of a cent, as price files carry them.
        average_wholesale_price: (price * 10_000.0).round() / 10_000.0,
        alternatives: Vec::new(),
    }
}

/// Up to three alternatives per drug: products of other generics of its class, the
/// cheapest first.
fn add_alternatives(rng: &mut StdRng, drugs: &mut [DrugReference]) {
    let mut by_class: BTreeMap<&str, Vec<(usize, &str, f64)>> = BTreeMap::new();
    for (i, drug) in drugs.iter().enumerate() {
        by_class.entry(&drug.drug_class).or_default().push((
            i,
            &drug.generic_name,
            drug.average_wholesale_price,
        ));
    }
    let mut chosen = vec![Vec::new(); drugs.len()];
    for members in by_class.values() {
        for &(i, generic, _) in members {
            let mut others: Vec<_> = members.iter().filter(|m| m.1 != generic).collect();
            others.shuffle(rng);
            others.truncate(rng.random_range(0..=3));
            others.sort_by(|a, b| a.2.total_cmp(&b.2));
            chosen[i] = others.iter().map(|m| m.0).collect::<Vec<_>>();
        }
    }
    for (i, alternatives) in chosen.into_iter().enumerate() {
        drugs[i].alternatives = alternatives.iter().map(|&j| drugs[j].ndc.clone()).collect();
    }
}

fn formulary(rng: &mut StdRng, drugs: &[DrugReference]) -> Vec<FormularyEntry> {
    let order_ndcs: HashSet<String> = order_drugs().into_iter().map(|d| d.ndc).collect();
    let mut rows = Vec::new();
    for (plan_id, _, listed_share) in PLANS {
        let mut order_drug_missing = false;
        let mut last_listed_order_row = None;
        for drug in drugs {
            if !rng.random_bool(listed_share) {
                order_drug_missing |= order_ndcs.contains(&drug.ndc);
                continue;
            }
            if order_ndcs.contains(&drug.ndc) {
                last_listed_order_row = Some(rows.len());
            }
            rows.push(formulary_row(rng, plan_id, drug));
        }
        // Every plan leaves out at least one drug the orders use, so enrichment sees
        // "no formulary row" whatever the seed.
        if !order_drug_missing && let Some(row) = last_listed_order_row {
            rows.remove(row);
        }
    }
    rows
}

fn formulary_row(rng: &mut StdRng, plan_id: &str, drug: &DrugReference) -> FormularyEntry {
    let specialty = CLASSES
        .iter()
        .any(|c| c.specialty && c.name == drug.drug_class);
    let (status, tier) = if rng.random_bool(0.04) {
        (FormularyStatus::NotCovered, None)
    } else if specialty {
        (FormularyStatus::Specialty, Some(5))
    } else if drug.brand_name.is_some() {
        if rng.random_bool(0.3) {
            (FormularyStatus::Preferred, Some(2))
        } else {
            (FormularyStatus::NonPreferred, Some(rng.random_range(3..=4)))
        }
    } else if rng.random_bool(0.85) {
        (FormularyStatus::Preferred, Some(1))
    } else {
        (FormularyStatus::NonPreferred, Some(2))
    };
    let covered = status != FormularyStatus::NotCovered;
    let schedule_two = drug.schedule == Some(DeaSchedule::C2);
    let quantity_limit = (covered && (schedule_two || rng.random_bool(0.1))).then(|| {
        let days = *[30, 30, 90].choose(rng).expect("not empty");
        QuantityLimit {
            quantity: days * rng.random_range(1..=4),
            days,
        }
    });
    FormularyEntry {
        plan_id: plan_id.to_string(),
        ndc: drug.ndc.clone(),
        tier,
        status,
        prior_auth_required: covered && (specialty || schedule_two || rng.random_bool(0.05)),
        step_therapy: covered
            && drug.brand_name.is_some()
            && !drug.alternatives.is_empty()
            && rng.random_bool(0.4),
        quantity_limit,
    }
}

/// 2021-01-01, from which coverage starts, in days since the Unix epoch.
const FIRST_EFFECTIVE_DAY: i64 = 18_628;
/// 2024-05-01: the orders' simulated time starts there.
const ORDERS_START_DAY: i64 = 19_844;

fn coverage(rng: &mut StdRng, index: u32) -> Option<PatientCoverage> {
    if rng.random_bool(0.03) {
        return None;
    }
    let plan = [0, 1, 2]
        .choose_weighted(rng, |&p| PLAN_WEIGHTS[p])
        .copied()
        .expect("the weights are positive");
    let (plan_id, payer_id, _) = PLANS[plan];
    let effective = rng.random_range(FIRST_EFFECTIVE_DAY..ORDERS_START_DAY - 30);
    let termination = match rng.random_range(0..100) {
        // Ended before the orders: "no coverage in force".
        0..5 => Some(rng.random_range(effective + 30..ORDERS_START_DAY)),
        5..15 => Some(ORDERS_START_DAY + rng.random_range(60..400)),
        _ => None,
    };
    Some(PatientCoverage {
        patient_id: patient_id(index),
        payer_id: payer_id.to_string(),
        plan_id: plan_id.to_string(),
        member_id: format!("M{:09}", rng.random_range(0..1_000_000_000u32)),
        effective_date: day(effective),
        termination_date: termination.map(day),
    })
}

fn day(days_since_epoch: i64) -> String {
    (chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(days_since_epoch))
        .format("%Y-%m-%d")
        .to_string()
}

/// What [`ReferenceGenerator::generate`] made.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceData {
    pub drugs: Vec<DrugReference>,
    pub formulary: Vec<FormularyEntry>,
    pub coverage: Vec<PatientCoverage>,
    /// NDCs the order generator uses that are left out of `drugs` on purpose.
    pub absent_order_ndcs: Vec<String>,
}

/// The files [`ReferenceData::write_json_lines`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceFiles {
    pub drugs: PathBuf,
    pub formulary: PathBuf,
    pub coverage: PathBuf,
}

impl ReferenceData {
    /// Writes [`DRUGS_FILE`], [`FORMULARY_FILE`] and [`COVERAGE_FILE`] into `dir`
    /// (created if missing), one JSON record per line.
    pub fn write_json_lines(&self, dir: &Path) -> std::io::Result<ReferenceFiles> {
        std::fs::create_dir_all(dir)?;
        let files = ReferenceFiles {
            drugs: dir.join(DRUGS_FILE),
            formulary: dir.join(FORMULARY_FILE),
            coverage: dir.join(COVERAGE_FILE),
        };
        write_lines(&files.drugs, &self.drugs)?;
        write_lines(&files.formulary, &self.formulary)?;
        write_lines(&files.coverage, &self.coverage)?;
        Ok(files)
    }
}

fn write_lines<T: Serialize>(path: &Path, records: &[T]) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    for record in records {
        serde_json::to_writer(&mut out, record)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::enrichment::reference::ReferenceRecord;
    use crate::generator::PATIENT_COUNT;

    fn data() -> ReferenceData {
        ReferenceGenerator::new(7).generate()
    }

    #[test]
    fn the_same_seed_gives_the_same_data() {
        assert_eq!(data(), data());
        assert_ne!(data().drugs, ReferenceGenerator::new(8).generate().drugs);
    }

    #[test]
    fn two_thousand_valid_drugs_with_unique_ndcs() {
        let data = data();
        assert_eq!(data.drugs.len(), 2_000);
        let ndcs: HashSet<_> = data.drugs.iter().map(|d| &d.ndc).collect();
        assert_eq!(ndcs.len(), 2_000);
        for drug in &data.drugs {
            assert_eq!(drug.check(), Ok(()), "{drug:?}");
            for alternative in &drug.alternatives {
                assert!(
                    ndcs.contains(alternative),
                    "an alternative is in the reference"
                );
            }
        }
        assert!(data.drugs.iter().any(|d| d.controlled));
        assert!(data.drugs.iter().any(|d| d.brand_name.is_some()));
        assert!(data.drugs.iter().any(|d| d.brand_name.is_none()));
    }

    #[test]
    fn every_order_ndc_but_the_chosen_absent_ones_is_in_the_reference() {
        let data = data();
        let ndcs: HashSet<_> = data.drugs.iter().map(|d| d.ndc.clone()).collect();
        let orders = order_drugs();
        // 5% of 14, rounded, and at least one.
        assert_eq!(data.absent_order_ndcs.len(), 1);
        for drug in &orders {
            let absent = data.absent_order_ndcs.contains(&drug.ndc);
            assert_eq!(ndcs.contains(&drug.ndc), !absent, "{}", drug.ndc);
        }
        // The order drugs keep the generic names the orders carry.
        let kept = orders.iter().find(|d| ndcs.contains(&d.ndc)).unwrap();
        let reference = data.drugs.iter().find(|d| d.ndc == kept.ndc).unwrap();
        assert_eq!(reference.generic_name, kept.generic_name);
        let none_absent = ReferenceGenerator::new(7)
            .with_absent_order_share(0.0)
            .generate();
        assert!(none_absent.absent_order_ndcs.is_empty());
    }

    #[test]
    fn each_plan_lists_part_of_the_drugs_and_misses_some_order_drugs() {
        let data = data();
        let order_ndcs: HashSet<_> = order_drugs().into_iter().map(|d| d.ndc).collect();
        let drug_ndcs: HashSet<_> = data.drugs.iter().map(|d| &d.ndc).collect();
        let mut keys = HashSet::new();
        for (plan, _, share) in PLANS {
            let rows: Vec<_> = data
                .formulary
                .iter()
                .filter(|r| r.plan_id == plan)
                .collect();
            let expected = share * 2_000.0;
            assert!(
                (rows.len() as f64 - expected).abs() < 80.0,
                "{plan}: {} rows",
                rows.len()
            );
            let listed: HashSet<_> = rows.iter().map(|r| &r.ndc).collect();
            assert!(
                order_ndcs
                    .iter()
                    .any(|n| drug_ndcs.contains(n) && !listed.contains(n)),
                "{plan} lists every order drug"
            );
        }
        for row in &data.formulary {
            assert_eq!(row.check(), Ok(()), "{row:?}");
            assert!(drug_ndcs.contains(&row.ndc));
            assert!(keys.insert(row.key()), "one row per (plan, NDC)");
        }
        let statuses: HashSet<_> = data.formulary.iter().map(|r| r.status).collect();
        assert_eq!(statuses.len(), 4, "{statuses:?}");
    }

    #[test]
    fn coverage_is_keyed_by_the_order_generators_patient_ids() {
        let data = ReferenceGenerator::new(7)
            .with_patients(PATIENT_COUNT)
            .generate();
        let by_patient: HashMap<_, _> = data
            .coverage
            .iter()
            .map(|c| (c.patient_id.clone(), c))
            .collect();
        let missing = (0..PATIENT_COUNT)
            .filter(|&i| !by_patient.contains_key(&patient_id(i)))
            .count();
        // About 3% have no coverage: Binomial(2000, 0.03) is 60 ± 8.
        assert!((25..=100).contains(&missing), "{missing} without coverage");
        let lapsed = data
            .coverage
            .iter()
            .filter(|c| !c.covers("2024-05-01"))
            .count();
        assert!(lapsed > 0, "some coverage ended before the orders");
        for coverage in &data.coverage {
            assert_eq!(coverage.check(), Ok(()), "{coverage:?}");
            assert!(PLANS.iter().any(|p| p.0 == coverage.plan_id));
        }
    }

    #[test]
    fn the_files_hold_one_record_per_line() {
        let dir = std::env::temp_dir().join(format!("sluice-refgen-{}", std::process::id()));
        let data = ReferenceGenerator::new(7).with_patients(50).generate();
        let files = data.write_json_lines(&dir).unwrap();
        let drugs = crate::enrichment::read_json_lines::<DrugReference>(&files.drugs).unwrap();
        let coverage =
            crate::enrichment::read_json_lines::<PatientCoverage>(&files.coverage).unwrap();
        assert_eq!(drugs, data.drugs);
        assert_eq!(coverage, data.coverage);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
