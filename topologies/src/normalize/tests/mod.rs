use super::*;
use serde_json::json;
use sluice_engine::ErrorKind;

/// Each canonical field's inputs, fallbacks and rules.
mod fields;

/// A FHIR-flavoured EHR payload using the FHIR-ish alternatives (`id`, `subject`,
/// CodeableConcept, `provider`, `lastUpdated`).
fn ehr_payload() -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "id": "mr-1001",
        "status": "active",
        "subject": {"reference": "Patient/pat-42"},
        "medication": {
            "code": {
                "coding": [
                    {
                        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                        "code": "617312"
                    },
                    {"system": "http://hl7.org/fhir/sid/ndc", "code": "1234-5678-90"}
                ],
                "text": "Atorvastatin 20 MG Oral Tablet"
            },
            "strength": "20 mg",
            "form": {"text": "tablet"}
        },
        "quantity": {"value": 30, "unit": "tablet"},
        "provider": {"id": "prac-7", "npi": "1234567893"},
        "createdAt": "2024-05-01T09:30:00Z",
        "lastUpdated": "2024-05-01T12:00:00.250+02:00"
    })
}

/// A flat pharmacy payload using the primary spellings.
fn pharmacy_payload() -> Value {
    json!({
        "orderId": "rx-555",
        "patientId": "pat-42",
        "medication": {
            "ndc": "12345-678-90",
            "name": "Metformin Hydrochloride",
            "strength": "500 mg",
            "form": "tablet"
        },
        "quantity": 60,
        "prescriberId": "dr-1",
        "prescriberNpi": "1003000126",
        "pharmacy": {
            "id": "store-12",
            "name": "Main Street Pharmacy",
            "npi": "1987654328",
            "ncpdpId": "0512345"
        },
        "status": "FILLED",
        "orderDate": 1_714_555_800_000_i64,
        "updatedAt": 1_714_559_400_000_i64
    })
}

/// `value` with the dotted `path` set to `new`, creating objects on the way.
fn with(mut value: Value, path: &str, new: Value) -> Value {
    let mut target = &mut value;
    for segment in path.split('.') {
        if !target.is_object() {
            *target = json!({});
        }
        target = target
            .as_object_mut()
            .unwrap()
            .entry(segment)
            .or_insert(Value::Null);
    }
    *target = new;
    value
}

/// `value` without the dotted `paths`.
fn without(mut value: Value, paths: &[&str]) -> Value {
    for path in paths {
        let (parent, leaf) = path.rsplit_once('.').unwrap_or(("", path));
        let mut target = &mut value;
        for segment in parent.split('.').filter(|s| !s.is_empty()) {
            target = &mut target[segment];
        }
        if let Some(object) = target.as_object_mut() {
            object.remove(leaf);
        }
    }
    value
}

fn message(result: Result<MedicationOrder, ProcessError>) -> String {
    let error = result.expect_err("the payload should have been refused");
    assert_eq!(error.kind, ErrorKind::Validation, "{error}");
    error.message
}

#[test]
fn ehr_fhir_payload_maps_every_field() {
    let order = from_ehr(&ehr_payload()).unwrap();
    assert_eq!(
        order,
        MedicationOrder {
            order_id: "mr-1001".into(),
            source_system: SourceSystem::Ehr,
            patient_id: "pat-42".into(),
            medication: Medication {
                ndc: "01234567890".into(),
                name: "Atorvastatin 20 MG Oral Tablet".into(),
                strength: Some("20 mg".into()),
                form: Some("tablet".into()),
            },
            quantity: Some(Quantity {
                value: 30.0,
                unit: Some("tablet".into()),
            }),
            prescriber: Prescriber {
                id: Some("prac-7".into()),
                npi: "1234567893".into(),
            },
            pharmacy: None,
            status: OrderStatus::Active,
            created_at: 1_714_555_800_000,
            // 12:00:00.250+02:00 is 10:00:00.250Z.
            updated_at: 1_714_557_600_250,
            change_type: Some(ChangeType::Updated),
        }
    );
}

#[test]
fn pharmacy_flat_payload_maps_every_field() {
    let order = from_pharmacy(&pharmacy_payload()).unwrap();
    assert_eq!(
        order,
        MedicationOrder {
            order_id: "rx-555".into(),
            source_system: SourceSystem::Pharmacy,
            patient_id: "pat-42".into(),
            medication: Medication {
                ndc: "12345067890".into(),
                name: "Metformin Hydrochloride".into(),
                strength: Some("500 mg".into()),
                form: Some("tablet".into()),
            },
            quantity: Some(Quantity {
                value: 60.0,
                unit: None,
            }),
            prescriber: Prescriber {
                id: Some("dr-1".into()),
                npi: "1003000126".into(),
            },
            pharmacy: Some(Pharmacy {
                id: Some("store-12".into()),
                name: Some("Main Street Pharmacy".into()),
                npi: Some("1987654328".into()),
                ncpdp_id: Some("0512345".into()),
            }),
            status: OrderStatus::Ready,
            created_at: 1_714_555_800_000,
            updated_at: 1_714_559_400_000,
            change_type: Some(ChangeType::Updated),
        }
    );
}

#[test]
fn the_entry_point_decides_the_source_system() {
    assert_eq!(
        from_pharmacy(&ehr_payload()).unwrap().source_system,
        SourceSystem::Pharmacy
    );
    assert_eq!(
        from_ehr(&pharmacy_payload()).unwrap().source_system,
        SourceSystem::Ehr
    );
}

#[test]
fn each_missing_required_field_is_named() {
    for (removed, field) in [
        (&["orderId", "id"][..], "orderId"),
        (&["patientId", "patient", "subject"][..], "patientId"),
        (&["medication.ndc", "medication.code"][..], "medication.ndc"),
        (&["medication"][..], "medication.ndc"),
        (
            &[
                "medication.name",
                "medication.description",
                "medication.code",
            ][..],
            // Without a code the NDC is still read from medication.ndc in the pharmacy
            // payload, so the name is the first thing missing.
            "medication.name",
        ),
        (&["prescriberNpi", "provider"][..], "prescriber.npi"),
        (&["status"][..], "status"),
        (&["createdAt", "orderDate"][..], "createdAt"),
    ] {
        let payload = without(pharmacy_payload(), removed);
        let message = message(from_pharmacy(&payload));
        assert!(
            message.starts_with(&format!("missing required field {field} (looked for ")),
            "{removed:?}: {message}"
        );
    }
    let payload = without(ehr_payload(), &["subject"]);
    assert_eq!(
        message(from_ehr(&payload)),
        "missing required field patientId (looked for patientId, patient.id, subject.reference)"
    );
}

#[test]
fn a_payload_that_is_not_an_object_is_refused() {
    for payload in [json!([]), json!("order"), json!(null)] {
        assert_eq!(
            message(from_ehr(&payload)),
            "the medication order payload must be a JSON object"
        );
    }
}

#[test]
fn errors_never_contain_input_values() {
    // Every value below is patient data that breaks a rule; the messages must name the
    // field and rule only. "ZQX" marks the data so any leak is found, whatever its form.
    let cases = [
        ("orderId", json!({"ZQX": 1})),
        ("patientId", json!(["ZQX-patient"])),
        ("subject.reference", json!("Group/ZQX-patient")),
        ("medication.ndc", json!("ZQX-1234-56")),
        ("medication.ndc", json!("1234567890")),
        ("medication.name", json!({"ZQX": "Atorvastatin"})),
        ("medication.form", json!({"ZQX": "tablet"})),
        ("quantity", json!("ZQX tablets")),
        ("quantity", json!(-1234567)),
        ("prescriberNpi", json!("ZQX4567893")),
        ("prescriberNpi", json!("1234567890")),
        ("pharmacy", json!("ZQX Pharmacy")),
        ("pharmacy.npi", json!("9876543210")),
        ("pharmacy.ncpdpId", json!("ZQX1234")),
        ("status", json!("ZQX_STATUS")),
        ("orderDate", json!("ZQX 2024-05-01")),
        ("orderDate", json!(1234567)),
        ("updatedAt", json!("2024-13-45T99:99:99Z")),
    ];
    for (path, value) in cases {
        // subject.reference is read only when patientId is absent.
        let payload = if path == "subject.reference" {
            without(pharmacy_payload(), &["patientId"])
        } else {
            pharmacy_payload()
        };
        let payload = with(payload, path, value.clone());
        let error = from_pharmacy(&payload).expect_err(path);
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("ZQX"), "{path}: {shown}");
        let raw = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert!(!shown.contains(&raw), "{path}: {shown}");
    }
}

#[test]
fn change_type_follows_status_and_timestamps() {
    let order = from_pharmacy(&pharmacy_payload()).unwrap();
    assert_eq!(order.change_type, Some(ChangeType::Updated));
    let (created, updated) = (order.created_at, order.updated_at);
    assert_eq!(
        change_type(OrderStatus::Active, created, created),
        ChangeType::Created
    );
    // A cancellation is a cancellation even when written in the instant of creation.
    assert_eq!(
        change_type(OrderStatus::Cancelled, created, created),
        ChangeType::Cancelled
    );
    assert_eq!(
        change_type(OrderStatus::Cancelled, created, updated),
        ChangeType::Cancelled
    );
    assert_eq!(
        change_type(OrderStatus::Stopped, created, updated),
        ChangeType::Updated
    );
}

#[test]
fn headers_carry_the_integration_guides_values() {
    let order = from_ehr(&without(ehr_payload(), &["lastUpdated"])).unwrap();
    let mut headers = Headers::new();
    set_headers(&order, &mut headers);
    assert_eq!(headers.get_str(HEADER_SOURCE_SYSTEM), Some("ehr"));
    assert_eq!(headers.get_str(HEADER_EVENT_TYPE), Some("medication-order"));
    assert_eq!(headers.get_str(HEADER_CHANGE_TYPE), Some("created"));
    assert_eq!(order.change_type, Some(ChangeType::Created));
    assert_eq!(headers.len(), 3);
}

#[test]
fn a_repeated_top_level_field_is_refused_by_name() {
    use sluice_engine::Serde;
    let bytes = br#"{"orderId": "ord-1", "status": "active", "orderId": "ord-2"}"#;
    let error = OrderFeedSerde::ehr()
        .deserialize("t", Some(bytes))
        .expect_err("a repeated field is refused");
    assert!(
        error.to_string().contains("duplicate field `orderId`"),
        "{error}"
    );
    assert!(!error.to_string().contains("ord-"), "{error}");
}

#[test]
fn a_record_that_is_not_utf8_is_refused_saying_where() {
    use sluice_engine::Serde;
    let error = OrderFeedSerde::pharmacy()
        .deserialize("t", Some(b"{\"orderId\": \"ord-\xff\"}"))
        .expect_err("not UTF-8");
    assert!(
        error.to_string().contains("not UTF-8 at byte 17"),
        "{error}"
    );
}

/// Normalises an EHR record's bytes the way the topology does: through its source serde.
fn from_ehr_bytes(bytes: &[u8]) -> Result<MedicationOrder, ProcessError> {
    use sluice_engine::Serde;
    let feed = OrderFeedSerde::ehr()
        .deserialize("t", Some(bytes))
        .expect("the record is JSON");
    feed.order
}

#[test]
fn a_repeated_nested_key_counts_once_with_its_last_value_and_nothing_of_the_first() {
    // The first `code` is a CodeableConcept with an NDC coding and a text; the last one, a
    // plain string, is what counts: neither the first's coding nor its text may leak through.
    let bytes = br#"{"orderId": "ord-1", "patientId": "pat-1",
        "medication": {
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": "1234-5678-90"}],
                     "text": "From the first code"},
            "code": "NDC:12345-678-90",
            "description": "Metformin"},
        "prescriberNpi": "1003000126", "status": "active", "createdAt": "2024-05-01T09:30:00Z"}"#;
    let order = from_ehr_bytes(bytes).unwrap();
    assert_eq!(order.medication.ndc, "12345067890");
    assert_eq!(order.medication.name, "Metformin");

    // And the other way round: the last `code` is a concept without an NDC coding, so the
    // first's coding must not be found.
    let bytes = br#"{"orderId": "ord-1", "patientId": "pat-1",
        "medication": {
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": "1234-5678-90"}]},
            "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "617312"}],
                     "text": "Atorvastatin"}},
        "prescriberNpi": "1003000126", "status": "active", "createdAt": "2024-05-01T09:30:00Z"}"#;
    let error = from_ehr_bytes(bytes).expect_err("no NDC in the last code");
    assert!(
        error
            .message
            .contains("missing required field medication.ndc"),
        "{error}"
    );
}

#[test]
fn codings_that_are_not_objects_are_passed_over() {
    let bytes = br#"{"orderId": "ord-1", "patientId": "pat-1",
        "medication": {"code": {"coding": ["617312", null, [1, {"code": "x"}],
            {"system": "http://hl7.org/fhir/sid/ndc", "code": "1234-5678-90", "display": {"a": [1]}}],
            "text": "Atorvastatin"}},
        "prescriberNpi": "1003000126", "status": "active", "createdAt": "2024-05-01T09:30:00Z"}"#;
    let order = from_ehr_bytes(bytes).unwrap();
    assert_eq!(order.medication.ndc, "01234567890");
    assert_eq!(order.medication.name, "Atorvastatin");
}

#[test]
fn trim_agrees_with_str_trim_on_ascii_and_unicode_whitespace() {
    for text in [
        "",
        " ",
        "a",
        " a",
        "a ",
        "ab",
        "\tab\n",
        "\u{a0}x\u{a0}",
        "x\u{2003}",
        "\u{2003}",
        "é",
        " é ",
        "a b",
    ] {
        assert_eq!(super::trim(text), text.trim(), "{text:?}");
    }
}
