use std::collections::HashSet;

use sluice_engine::Serde;
use sluice_engine::serde::JsonSerde;

use super::*;
use crate::canonical::{MedicationOrder, OrderStatus};
use crate::normalize::{from_ehr, from_pharmacy, normalize_ndc};

type Normalizer = fn(&Value) -> Result<MedicationOrder, sluice_engine::ProcessError>;

/// Decodes with the engine's JSON serde, as the topology's source does, then normalises:
/// the error message is what a dead-letter record would carry.
fn process(record: &SampleRecord, normalize: Normalizer) -> Result<MedicationOrder, String> {
    let payload = JsonSerde::<Value>::new()
        .deserialize("test-topic", Some(&record.value))
        .map_err(|e| e.message)?;
    normalize(&payload).map_err(|e| e.message)
}

fn samples(
    generator: &mut OrderGenerator,
    count: usize,
    next: fn(&mut OrderGenerator) -> SampleRecord,
) -> Vec<SampleRecord> {
    (0..count).map(|_| next(generator)).collect()
}

#[test]
fn the_same_seed_gives_the_same_records() {
    let run = |seed| {
        let mut generator = OrderGenerator::new(seed).with_malformed_ratio(0.3);
        (0..300)
            .map(|i| {
                if i % 3 == 0 {
                    generator.next_pharmacy()
                } else {
                    generator.next_ehr()
                }
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn every_well_formed_ehr_sample_normalises() {
    let mut generator = OrderGenerator::new(1);
    for record in samples(&mut generator, 2_000, OrderGenerator::next_ehr) {
        assert_eq!(record.malformed, None);
        let order = process(&record, from_ehr)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&record.value)));
        assert_eq!(order.order_id, record.key);
    }
}

#[test]
fn every_well_formed_pharmacy_sample_normalises() {
    let mut generator = OrderGenerator::new(2);
    for record in samples(&mut generator, 2_000, OrderGenerator::next_pharmacy) {
        assert_eq!(record.malformed, None);
        let order = process(&record, from_pharmacy)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&record.value)));
        assert_eq!(order.order_id, record.key);
    }
}

#[test]
fn every_malformed_sample_is_refused_with_its_reason() {
    let mut generator = OrderGenerator::new(3).with_malformed_ratio(1.0);
    let mut seen = HashSet::new();
    for (next, normalize) in [
        (
            OrderGenerator::next_ehr as fn(&mut OrderGenerator) -> SampleRecord,
            from_ehr as Normalizer,
        ),
        (OrderGenerator::next_pharmacy, from_pharmacy),
    ] {
        for record in samples(&mut generator, 1_000, next) {
            let malformation = record.malformed.expect("the ratio is 1.0");
            seen.insert(malformation);
            let error =
                process(&record, normalize).expect_err("a malformed record must be refused");
            assert!(
                error.contains(malformation.expected_reason()),
                "{malformation:?}: {error}"
            );
        }
    }
    assert_eq!(seen.len(), Malformation::ALL.len(), "kinds seen: {seen:?}");
}

#[test]
fn the_malformed_ratio_is_respected() {
    let mut generator = OrderGenerator::new(4).with_malformed_ratio(0.1);
    let records = samples(&mut generator, 4_000, OrderGenerator::next_pharmacy);
    let malformed = records.iter().filter(|r| r.malformed.is_some()).count();
    // Binomial(4000, 0.1) has a standard deviation of 19: 320..480 is over 4 of them.
    assert!((320..=480).contains(&malformed), "{malformed} of 4000");

    let mut clean = OrderGenerator::new(4).with_malformed_ratio(0.0);
    assert!(
        samples(&mut clean, 1_000, OrderGenerator::next_ehr)
            .iter()
            .all(|r| r.malformed.is_none())
    );
}

#[test]
#[should_panic(expected = "probability")]
fn a_ratio_above_one_is_refused() {
    let _ = OrderGenerator::new(0).with_malformed_ratio(1.5);
}

/// The input paths (and value shapes) a payload uses for the fields that have
/// alternatives, such as `id`, `medication.code:object` or `quantity:number`.
fn shapes(payload: &Value) -> HashSet<String> {
    let mut found = HashSet::new();
    for path in [
        "orderId",
        "id",
        "patientId",
        "patient.id",
        "subject.reference",
        "medication.ndc",
        "medication.code",
        "medication.name",
        "medication.description",
        "medication.code.text",
        "medication.form",
        "quantity",
        "medication.quantity",
        "prescriberNpi",
        "provider.npi",
        "pharmacy.npi",
        "pharmacy.ncpdpId",
        "createdAt",
        "orderDate",
        "updatedAt",
        "lastUpdated",
    ] {
        let value = path
            .split('.')
            .try_fold(payload, |v, segment| v.get(segment));
        if let Some(value) = value {
            let shape = match value {
                Value::Object(_) => "object",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "other",
            };
            found.insert(path.to_string());
            found.insert(format!("{path}:{shape}"));
        }
    }
    found
}

/// How a raw NDC is written: 10-digit 4-4-2 / 5-3-2 / 5-4-1, 11-digit 5-4-2 or bare.
fn ndc_form(raw: &str) -> String {
    let raw = raw.trim_start_matches("NDC:");
    if raw.contains('-') {
        raw.split('-')
            .map(|s| s.len().to_string())
            .collect::<Vec<_>>()
            .join("-")
    } else {
        format!("{} bare", raw.len())
    }
}

fn raw_ndc(payload: &Value) -> String {
    let medication = &payload["medication"];
    if let Some(ndc) = medication["ndc"].as_str() {
        return ndc.to_string();
    }
    match &medication["code"] {
        Value::String(code) => code.clone(),
        concept => concept["coding"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["system"] != FORMULARY_SYSTEM)
            .unwrap()["code"]
            .as_str()
            .unwrap()
            .to_string(),
    }
}

#[test]
fn both_sources_exercise_every_fallback_path_and_ndc_form() {
    let expected_ehr = [
        "orderId",
        "id",
        "patientId",
        "patient.id",
        "subject.reference",
        "medication.ndc",
        "medication.code:string",
        "medication.code:object",
        "medication.name",
        "medication.description",
        "medication.code.text",
        "medication.form:string",
        "medication.form:object",
        "quantity:number",
        "quantity:object",
        "medication.quantity",
        "prescriberNpi",
        "provider.npi",
        "pharmacy.ncpdpId",
        "createdAt:string",
        "createdAt:number",
        "orderDate",
        "updatedAt",
        "lastUpdated:string",
        "lastUpdated:number",
    ];
    let expected_pharmacy = [
        "orderId:string",
        "orderId:number",
        "id:string",
        "id:number",
        "patientId",
        "patient.id",
        "medication.ndc",
        "medication.code:string",
        "medication.name",
        "medication.description",
        "quantity:number",
        "quantity:string",
        "quantity:object",
        "medication.quantity",
        "prescriberNpi",
        "provider.npi",
        "pharmacy.npi",
        "pharmacy.ncpdpId",
        "createdAt",
        "orderDate:string",
        "orderDate:number",
        "updatedAt",
        "lastUpdated",
    ];
    let ndc_forms: HashSet<String> = ["4-4-2", "5-3-2", "5-4-1", "5-4-2", "11 bare"]
        .map(String::from)
        .into();
    let mut generator = OrderGenerator::new(5);
    for (next, expected) in [
        (
            OrderGenerator::next_ehr as fn(&mut OrderGenerator) -> SampleRecord,
            &expected_ehr[..],
        ),
        (OrderGenerator::next_pharmacy, &expected_pharmacy[..]),
    ] {
        let mut seen_shapes = HashSet::new();
        let mut seen_ndc_forms = HashSet::new();
        for record in samples(&mut generator, 2_000, next) {
            let payload: Value = serde_json::from_slice(&record.value).unwrap();
            seen_shapes.extend(shapes(&payload));
            let ndc = raw_ndc(&payload);
            assert!(normalize_ndc(&ndc).is_some());
            seen_ndc_forms.insert(ndc_form(&ndc));
        }
        for shape in expected {
            assert!(seen_shapes.contains(*shape), "never generated: {shape}");
        }
        assert_eq!(seen_ndc_forms, ndc_forms);
    }
}

#[test]
fn every_canonical_status_occurs() {
    let mut generator = OrderGenerator::new(6);
    let mut statuses = HashSet::new();
    for _ in 0..2_000 {
        statuses.insert(process(&generator.next_ehr(), from_ehr).unwrap().status);
        statuses.insert(
            process(&generator.next_pharmacy(), from_pharmacy)
                .unwrap()
                .status,
        );
    }
    for status in OrderStatus::ALL {
        assert!(statuses.contains(&status), "never generated: {status:?}");
    }
}

#[test]
fn generated_npis_have_valid_check_digits() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..1_000 {
        let npi = random_npi(&mut rng);
        assert!(crate::normalize::is_valid_npi(&npi), "{npi}");
        assert!(npi.starts_with('1') || npi.starts_with('2'), "{npi}");
    }
}

#[test]
fn order_ids_are_unique() {
    let mut generator = OrderGenerator::new(8);
    let mut keys = HashSet::new();
    for _ in 0..2_000 {
        assert!(keys.insert(generator.next_ehr().key));
        assert!(keys.insert(generator.next_pharmacy().key));
    }
}
