//! The enriched output checked against the inputs and the reference data.

use super::*;

/// A few examples from a list, for failure messages.
pub(crate) fn first<T: std::fmt::Debug>(items: &[T]) -> String {
    format!("{:?}", &items[..items.len().min(5)])
}

/// What the output held, by enrichment status.
pub(crate) type Statuses = BTreeMap<(String, String), usize>;

/// Checks the read_committed output of `world`'s worker against `inputs`: every input
/// exactly once (by its event id, which the output names as its cause, and by its orderId
/// key), nothing dead-lettered, and every field what the reference data says: the drug,
/// the patient's coverage, the plan's formulary row, the statuses and the headers (as
/// tests/enrichment.rs checks them through the TestDriver). Returns the status counts.
pub(crate) fn check_output(world: &World, inputs: &[Input]) -> Statuses {
    let brokers = &world.broker.brokers;
    let dead = support::read_all(brokers, enrichment::DEAD_LETTER_TOPIC, "read_uncommitted");
    let dead_causes: Vec<Option<&String>> =
        dead.iter().map(|r| r.headers.get("causation-id")).collect();
    assert!(
        dead.is_empty(),
        "{} records were dead-lettered, e.g. (causation-id) {}",
        dead.len(),
        first(&dead_causes)
    );

    let outputs = support::read_committed(brokers, OUTPUT_TOPIC);
    let by_event: HashMap<&str, usize> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| (input.event_id.as_str(), i))
        .collect();
    let mut times = vec![0u32; inputs.len()];
    let mut keys: HashMap<&str, u32> = HashMap::new();
    let mut unknown = Vec::new();
    let mut decoded = Vec::new();
    for output in &outputs {
        let cause = output.headers.get("causation-id").map(String::as_str);
        let Some(&i) = cause.and_then(|c| by_event.get(c)) else {
            unknown.push((output.partition, output.offset, cause.map(str::to_owned)));
            continue;
        };
        times[i] += 1;
        *keys
            .entry(output.key.as_deref().unwrap_or_default())
            .or_default() += 1;
        decoded.push((i, output));
    }
    assert!(
        unknown.is_empty(),
        "{} outputs name no input as their cause, e.g. (partition, offset, causation-id) {}",
        unknown.len(),
        first(&unknown)
    );
    let missing: Vec<&str> = (0..inputs.len())
        .filter(|i| times[*i] == 0)
        .map(|i| inputs[i].event_id.as_str())
        .collect();
    let repeated: Vec<(&str, u32)> = (0..inputs.len())
        .filter(|i| times[*i] > 1)
        .map(|i| (inputs[i].event_id.as_str(), times[i]))
        .collect();
    assert!(
        missing.is_empty() && repeated.is_empty(),
        "exactly once broken in the read_committed output ({} records for {} inputs): {} \
         inputs missing, e.g. {}; {} more than once, e.g. (event id, times) {}",
        outputs.len(),
        inputs.len(),
        missing.len(),
        first(&missing),
        repeated.len(),
        first(&repeated)
    );
    let order_ids: Vec<&str> = inputs.iter().map(|i| i.order.order_id.as_str()).collect();
    let off_key: Vec<&str> = order_ids
        .iter()
        .copied()
        .filter(|id| keys.get(id) != Some(&1))
        .collect();
    assert!(
        off_key.is_empty() && keys.len() == inputs.len(),
        "by orderId key, not every order is in the output exactly once: {} orders off, e.g. \
         {}; {} keys for {} orders",
        off_key.len(),
        first(&off_key),
        keys.len(),
        inputs.len()
    );

    let data = &world.reference.data;
    let drugs: HashMap<_, _> = data.drugs.iter().map(|d| (d.ndc.as_str(), d)).collect();
    let rows: HashMap<_, _> = data
        .formulary
        .iter()
        .map(|r| ((r.plan_id.as_str(), r.ndc.as_str()), r))
        .collect();
    let coverage: HashMap<_, _> = data
        .coverage
        .iter()
        .map(|c| (c.patient_id.as_str(), c))
        .collect();
    let serde = output_serde();
    let mut statuses = Statuses::new();
    let mut wrong: Vec<(String, &str)> = Vec::new();
    for (i, output) in decoded {
        let order = &inputs[i].order;
        let id = order.order_id.clone();
        let mut expect = |ok: bool, what: &'static str| {
            if !ok {
                wrong.push((id.clone(), what));
            }
        };
        expect(output.key.as_deref() == Some(&order.order_id), "key");
        let e: MedicationOrderEnriched =
            match serde.deserialize(OUTPUT_TOPIC, output.value.as_deref()) {
                Ok(e) => e,
                Err(_) => {
                    expect(false, "value decodes as the enriched schema");
                    continue;
                }
            };
        expect(&e.order == order, "order");
        let drug = drugs.get(order.medication.ndc.as_str());
        expect(
            e.drug == drug.map(|d| DrugDetails::from((*d).clone())),
            "drug",
        );
        expect(
            e.enrichment_status.drug_reference
                == match drug {
                    Some(_) => DrugReferenceStatus::Found,
                    None => DrugReferenceStatus::NdcNotInReference,
                },
            "drug status",
        );
        let patient = coverage.get(order.patient_id.as_str());
        expect(
            e.coverage == patient.map(|c| Coverage::from((*c).clone())),
            "coverage",
        );
        let date = chrono::DateTime::from_timestamp_millis(order.created_at)
            .expect("a generated order's time is in range")
            .format("%Y-%m-%d")
            .to_string();
        let (status, row) = match patient {
            None => (FormularyLookupStatus::NoCoverage, None),
            Some(c) if !c.covers(&date) => (FormularyLookupStatus::CoverageNotInForce, None),
            Some(c) => match rows.get(&(c.plan_id.as_str(), order.medication.ndc.as_str())) {
                Some(row) => (FormularyLookupStatus::Found, Some(*row)),
                None => (FormularyLookupStatus::NotOnFormulary, None),
            },
        };
        expect(e.enrichment_status.formulary == status, "formulary status");
        expect(
            e.formulary == row.map(|r| Formulary::from(r.clone())),
            "formulary",
        );
        let header = |name: &str| output.headers.get(name).map(String::as_str);
        expect(
            header("enrichment-source") == Some("drug-reference"),
            "enrichment-source header",
        );
        expect(
            header("event-type") == Some("medication-order-enriched"),
            "event-type header",
        );
        expect(
            header("change-type") == order.change_type.map(|c| c.header_value()),
            "change-type header",
        );
        expect(
            header("correlation-id") == Some(CORRELATION_ID),
            "correlation-id header",
        );
        *statuses
            .entry((
                format!("{:?}", e.enrichment_status.drug_reference),
                format!("{:?}", e.enrichment_status.formulary),
            ))
            .or_default() += 1;
    }
    assert!(
        wrong.is_empty(),
        "{} outputs differ from the reference data, e.g. (orderId, field) {}",
        wrong.len(),
        first(&wrong)
    );
    // The data reaches every branch, so each was checked above.
    let seen = |f: &dyn Fn(&(String, String)) -> bool| statuses.keys().any(f);
    assert!(
        seen(&|(d, _)| d == "NdcNotInReference"),
        "an order's NDC is absent from the reference: {statuses:?}"
    );
    for status in [
        "Found",
        "NoCoverage",
        "CoverageNotInForce",
        "NotOnFormulary",
    ] {
        assert!(
            seen(&|(_, f)| f == status),
            "formulary status {status} occurs: {statuses:?}"
        );
    }
    statuses
}
