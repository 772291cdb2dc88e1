//! The enrichment topology through the TestDriver: canonical orders joined with the
//! patients' coverage, the drug reference and the plans' formularies, on generated
//! reference data.

use std::collections::HashMap;

use sluice_engine::lookup::BoxLookup;
use sluice_engine::serde::{AvroSerde, JsonSerde, Serdes};
use sluice_engine::{Headers, ProducerRecord, Record, Serde, TestDriver};
use sluice_topologies::canonical::{self, MedicationOrder};
use sluice_topologies::enrichment::enriched::{
    self, Coverage, DrugDetails, DrugReferenceStatus, Formulary, FormularyLookupStatus,
    MedicationOrderEnriched,
};
use sluice_topologies::enrichment::reference_generator::PLANS;
use sluice_topologies::enrichment::topology::{
    self as enrichment, EnrichmentConfig, INPUT_TOPIC, Lookups, OUTPUT_TOPIC,
};
use sluice_topologies::enrichment::{
    COVERAGE_TOPIC, FileLookup, PatientCoverage, ReferenceData, ReferenceGenerator,
};
use sluice_topologies::generator::OrderGenerator;
use sluice_topologies::normalize;

fn input_serde() -> AvroSerde<MedicationOrder> {
    AvroSerde::with_schema_id(canonical::schema().clone(), 1)
}

fn output_serde() -> AvroSerde<MedicationOrderEnriched> {
    AvroSerde::with_schema_id(enriched::schema().clone(), enrichment::LOCAL_SCHEMA_ID)
}

fn driver(data: &ReferenceData) -> TestDriver {
    let lookups = Lookups {
        drugs: BoxLookup::new(FileLookup::from_records(data.drugs.clone())),
        formulary: BoxLookup::new(FileLookup::from_records(data.formulary.clone())),
    };
    TestDriver::new(enrichment::topology(
        input_serde(),
        output_serde(),
        lookups,
        &EnrichmentConfig::default(),
    ))
}

fn pipe_coverage(driver: &mut TestDriver, coverage: &PatientCoverage) {
    driver
        .pipe(
            COVERAGE_TOPIC,
            &Serdes::string(),
            &JsonSerde::<PatientCoverage>::new(),
            &Record::new(coverage.patient_id.clone(), coverage.clone(), 0),
        )
        .unwrap();
}

/// Pipes `order` as normalization writes it: keyed by orderId, with lineage and change-type.
fn pipe_order(driver: &mut TestDriver, order: &MedicationOrder, event_id: &str) {
    let mut headers = Headers::new();
    normalize::set_headers(order, &mut headers);
    headers.insert("event-id", event_id);
    headers.insert("correlation-id", "flow-1");
    driver
        .pipe_record(ProducerRecord {
            topic: INPUT_TOPIC.into(),
            partition: Some(0),
            key: Some(order.order_id.clone().into_bytes()),
            value: input_serde().serialize(INPUT_TOPIC, order).unwrap(),
            headers,
            timestamp: 0,
        })
        .unwrap();
}

fn orders(n: usize) -> Vec<MedicationOrder> {
    let mut generator = OrderGenerator::new(21).with_malformed_ratio(0.0);
    (0..n)
        .map(|i| {
            let sample = if i % 2 == 0 {
                generator.next_ehr()
            } else {
                generator.next_pharmacy()
            };
            let json = serde_json::from_slice(&sample.value).unwrap();
            if i % 2 == 0 {
                normalize::from_ehr(&json).unwrap()
            } else {
                normalize::from_pharmacy(&json).unwrap()
            }
        })
        .collect()
}

fn read_enriched(driver: &mut TestDriver) -> Vec<Record<String, MedicationOrderEnriched>> {
    driver
        .read(OUTPUT_TOPIC, &Serdes::string(), &output_serde())
        .unwrap()
}

#[test]
fn every_output_field_equals_the_reference_data_and_every_gap_says_why() {
    let data = ReferenceGenerator::new(7).with_patients(2_000).generate();
    let mut driver = driver(&data);
    for coverage in &data.coverage {
        pipe_coverage(&mut driver, coverage);
    }
    let orders = orders(4_000);
    for (i, order) in orders.iter().enumerate() {
        pipe_order(&mut driver, order, &format!("evt-{i}"));
    }
    assert!(driver.dead_letters().is_empty());
    let out = read_enriched(&mut driver);
    assert_eq!(out.len(), orders.len());

    let drugs: HashMap<_, _> = data.drugs.iter().map(|d| (d.ndc.clone(), d)).collect();
    let rows: HashMap<_, _> = data
        .formulary
        .iter()
        .map(|r| ((r.plan_id.clone(), r.ndc.clone()), r))
        .collect();
    let coverage: HashMap<_, _> = data
        .coverage
        .iter()
        .map(|c| (c.patient_id.clone(), c))
        .collect();
    let mut statuses = HashMap::new();
    for (record, order) in out.iter().zip(&orders) {
        let e = &record.value;
        assert_eq!(
            record.key, order.order_id,
            "keyed by orderId, in input order"
        );
        assert_eq!(&e.order, order);
        let drug = drugs.get(&order.medication.ndc);
        assert_eq!(e.drug, drug.map(|d| DrugDetails::from((*d).clone())));
        assert_eq!(
            e.enrichment_status.drug_reference,
            match drug {
                Some(_) => DrugReferenceStatus::Found,
                None => DrugReferenceStatus::NdcNotInReference,
            }
        );
        let patient = coverage.get(&order.patient_id);
        assert_eq!(e.coverage, patient.map(|c| Coverage::from((*c).clone())));
        let date = chrono::DateTime::from_timestamp_millis(order.created_at)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        let (expected_status, expected_row) = match patient {
            None => (FormularyLookupStatus::NoCoverage, None),
            Some(c) if !c.covers(&date) => (FormularyLookupStatus::CoverageNotInForce, None),
            Some(c) => match rows.get(&(c.plan_id.clone(), order.medication.ndc.clone())) {
                Some(row) => (FormularyLookupStatus::Found, Some(*row)),
                None => (FormularyLookupStatus::NotOnFormulary, None),
            },
        };
        assert_eq!(e.enrichment_status.formulary, expected_status);
        assert_eq!(
            e.formulary,
            expected_row.map(|r| Formulary::from(r.clone()))
        );
        *statuses
            .entry((e.enrichment_status.drug_reference, expected_status))
            .or_insert(0) += 1;

        let headers = &record.headers;
        assert_eq!(headers.get_str("enrichment-source"), Some("drug-reference"));
        assert_eq!(
            headers.get_str("event-type"),
            Some("medication-order-enriched")
        );
        assert_eq!(
            headers.get_str("change-type"),
            order.change_type.map(|c| c.header_value())
        );
    }
    // The generated data reaches every branch, so each was checked above.
    let drug_statuses: Vec<_> = statuses.keys().map(|(d, _)| *d).collect();
    assert!(drug_statuses.contains(&DrugReferenceStatus::NdcNotInReference));
    for status in [
        FormularyLookupStatus::Found,
        FormularyLookupStatus::NoCoverage,
        FormularyLookupStatus::CoverageNotInForce,
        FormularyLookupStatus::NotOnFormulary,
    ] {
        assert!(
            statuses.keys().any(|(_, f)| *f == status),
            "{status:?} occurs: {statuses:?}"
        );
    }
}

#[test]
fn each_output_names_the_canonical_event_as_its_cause() {
    let data = ReferenceGenerator::new(7).with_patients(100).generate();
    let mut driver = driver(&data);
    let order = orders(1).remove(0);
    pipe_order(&mut driver, &order, "evt-canonical-1");
    let out = read_enriched(&mut driver);
    assert_eq!(
        out[0].headers.get_str("causation-id"),
        Some("evt-canonical-1")
    );
    assert_eq!(out[0].headers.get_str("correlation-id"), Some("flow-1"));
}

#[test]
fn a_coverage_change_changes_later_orders_only() {
    let data = ReferenceGenerator::new(7).with_patients(2_000).generate();
    let mut driver = driver(&data);
    let order = orders(40)
        .into_iter()
        .find(|o| data.drugs.iter().any(|d| d.ndc == o.medication.ndc))
        .unwrap();
    let plan = |n: usize| PLANS[n].0.to_string();
    let mut coverage = PatientCoverage {
        patient_id: order.patient_id.clone(),
        payer_id: "payer-1".into(),
        plan_id: plan(0),
        member_id: "m-1".into(),
        effective_date: "2000-01-01".into(),
        termination_date: None,
    };
    pipe_coverage(&mut driver, &coverage);
    pipe_order(&mut driver, &order, "evt-1");
    coverage.plan_id = plan(1);
    pipe_coverage(&mut driver, &coverage);
    let mut later = order.clone();
    later.updated_at += 1;
    pipe_order(&mut driver, &later, "evt-2");

    let out = read_enriched(&mut driver);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].value.coverage.as_ref().unwrap().plan_id, plan(0));
    assert_eq!(out[1].value.coverage.as_ref().unwrap().plan_id, plan(1));
    let row = |plan_id: String| {
        data.formulary
            .iter()
            .find(|r| r.plan_id == plan_id && r.ndc == order.medication.ndc)
            .map(|r| Formulary::from(r.clone()))
    };
    assert_eq!(out[0].value.formulary, row(plan(0)));
    assert_eq!(out[1].value.formulary, row(plan(1)));
}
