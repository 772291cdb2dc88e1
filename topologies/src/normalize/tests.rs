use super::*;
use serde_json::json;
use sluice_engine::ErrorKind;

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
fn order_id_prefers_order_id_over_id() {
    let payload = with(ehr_payload(), "orderId", json!("ord-primary"));
    assert_eq!(from_ehr(&payload).unwrap().order_id, "ord-primary");
}

#[test]
fn order_id_falls_back_to_id() {
    let payload = with(
        without(pharmacy_payload(), &["orderId"]),
        "id",
        json!("rx-9"),
    );
    assert_eq!(from_pharmacy(&payload).unwrap().order_id, "rx-9");
}

#[test]
fn numeric_identifiers_become_strings() {
    let payload = with(pharmacy_payload(), "orderId", json!(98765));
    let payload = with(payload, "patientId", json!(4242));
    let payload = with(payload, "prescriberNpi", json!(1_234_567_893_u64));
    let order = from_pharmacy(&payload).unwrap();
    assert_eq!(order.order_id, "98765");
    assert_eq!(order.patient_id, "4242");
    assert_eq!(order.prescriber.npi, "1234567893");
}

#[test]
fn nulls_and_blank_strings_fall_through_to_the_next_alternative() {
    let payload = with(ehr_payload(), "orderId", Value::Null);
    assert_eq!(from_ehr(&payload).unwrap().order_id, "mr-1001");
    let payload = with(ehr_payload(), "orderId", json!("   "));
    assert_eq!(from_ehr(&payload).unwrap().order_id, "mr-1001");
    let payload = with(ehr_payload(), "id", json!(""));
    assert!(message(from_ehr(&payload)).contains("missing required field orderId"));
}

#[test]
fn a_present_but_invalid_value_does_not_fall_through() {
    // medication.ndc is wrong while medication.code holds a good NDC: the conflict is
    // reported, not papered over.
    let payload = with(ehr_payload(), "medication.ndc", json!("12-34"));
    assert!(message(from_ehr(&payload)).starts_with("invalid medication.ndc"));
}

#[test]
fn identifiers_of_other_types_are_refused() {
    let payload = with(pharmacy_payload(), "orderId", json!({"value": "x"}));
    assert_eq!(
        message(from_pharmacy(&payload)),
        "invalid orderId: must be a string or an integer"
    );
}

#[test]
fn patient_id_is_read_from_patient_id_first() {
    let payload = with(ehr_payload(), "patientId", json!("pat-1"));
    let payload = with(payload, "patient.id", json!("pat-2"));
    assert_eq!(from_ehr(&payload).unwrap().patient_id, "pat-1");
}

#[test]
fn patient_id_falls_back_to_patient_object_then_subject_reference() {
    let payload = with(
        without(pharmacy_payload(), &["patientId"]),
        "patient.id",
        json!("pat-2"),
    );
    assert_eq!(from_pharmacy(&payload).unwrap().patient_id, "pat-2");
    let payload = with(payload, "subject.reference", json!("Patient/pat-3"));
    assert_eq!(from_pharmacy(&payload).unwrap().patient_id, "pat-2");
    let payload = without(payload, &["patient"]);
    assert_eq!(from_pharmacy(&payload).unwrap().patient_id, "pat-3");
}

#[test]
fn subject_reference_may_be_absolute_or_versioned() {
    for (reference, expected) in [
        ("https://fhir.example.org/r4/Patient/p-7", "p-7"),
        ("Patient/p-8/_history/3", "p-8"),
    ] {
        let payload = with(ehr_payload(), "subject.reference", json!(reference));
        assert_eq!(from_ehr(&payload).unwrap().patient_id, expected);
    }
}

#[test]
fn subject_reference_to_another_resource_is_refused() {
    for reference in ["Group/g-1", "Patient/", "pat-42"] {
        let payload = with(ehr_payload(), "subject.reference", json!(reference));
        assert_eq!(
            message(from_ehr(&payload)),
            "invalid patientId: must be a FHIR Patient reference (Patient/<id>) \
             (read from subject.reference)"
        );
    }
}

#[test]
fn ndc_is_read_from_medication_ndc_before_the_code() {
    let payload = with(ehr_payload(), "medication.ndc", json!("11111-2222-33"));
    assert_eq!(from_ehr(&payload).unwrap().medication.ndc, "11111222233");
}

#[test]
fn ndc_falls_back_to_a_code_string_with_or_without_prefix() {
    for (code, expected) in [
        ("NDC:12345-6789-01", "12345678901"),
        ("ndc: 1234-5678-90", "01234567890"),
        ("NDC 12345-6789-1", "12345678901"),
        ("12345678901", "12345678901"),
    ] {
        let payload = with(
            without(pharmacy_payload(), &["medication.ndc"]),
            "medication.code",
            json!(code),
        );
        assert_eq!(
            from_pharmacy(&payload).unwrap().medication.ndc,
            expected,
            "{code}"
        );
    }
}

#[test]
fn ndc_falls_back_to_the_ndc_coding_of_a_codeable_concept() {
    // ehr_payload's concept lists an RxNorm coding first: the NDC one must be chosen.
    assert_eq!(
        from_ehr(&ehr_payload()).unwrap().medication.ndc,
        "01234567890"
    );
    let concept = json!({
        "coding": [{"system": "urn:oid:2.16.840.1.113883.6.69", "code": "54321-123-45"}],
        "text": "Lisinopril 10 MG Oral Tablet"
    });
    let payload = with(ehr_payload(), "medication.code", concept);
    assert_eq!(from_ehr(&payload).unwrap().medication.ndc, "54321012345");
}

#[test]
fn codeable_concept_without_an_ndc_coding_is_a_missing_ndc() {
    let concept = json!({
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "617312"}],
        "text": "Atorvastatin 20 MG Oral Tablet"
    });
    let payload = with(ehr_payload(), "medication.code", concept);
    assert_eq!(
        message(from_ehr(&payload)),
        "missing required field medication.ndc (looked for medication.ndc, medication.code)"
    );
}

#[test]
fn ten_digit_ndcs_are_padded_to_eleven_digits() {
    assert_eq!(
        normalize_ndc("1234-5678-90").as_deref(),
        Some("01234567890")
    );
    assert_eq!(
        normalize_ndc("12345-678-90").as_deref(),
        Some("12345067890")
    );
    assert_eq!(
        normalize_ndc("12345-6789-0").as_deref(),
        Some("12345678900")
    );
    assert_eq!(
        normalize_ndc("12345-6789-01").as_deref(),
        Some("12345678901")
    );
    assert_eq!(
        normalize_ndc(" 12345678901 ").as_deref(),
        Some("12345678901")
    );
}

#[test]
fn ndcs_that_cannot_be_normalised_are_refused() {
    for bad in [
        "1234567890",      // 10 bare digits: which segment is short is unknowable
        "123456789012",    // 12 digits
        "123-4567-890",    // 3-4-3 is no NDC configuration
        "1234-567-89",     // 4-3-2 is 9 digits
        "12345-67890-1",   // 5-5-1
        "1234-5678-9O",    // letter O for zero
        "12345-6789-01-2", // four segments
        "12345--6789",
        "NDC:",
        "a€1234-5678-90", // a multi-byte character across the prefix check must not panic
    ] {
        assert_eq!(normalize_ndc(bad), None, "{bad}");
    }
    let payload = with(pharmacy_payload(), "medication.ndc", json!("1234567890"));
    assert_eq!(
        message(from_pharmacy(&payload)),
        format!("invalid medication.ndc: {NDC_RULE}")
    );
    let payload = with(pharmacy_payload(), "medication.ndc", json!(12345678901_u64));
    assert_eq!(
        message(from_pharmacy(&payload)),
        "invalid medication.ndc: must be a string"
    );
}

#[test]
fn an_invalid_ndc_in_a_coding_names_where_it_was_read() {
    let concept = json!({"coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": "99"}]});
    let payload = with(ehr_payload(), "medication.code", concept);
    assert_eq!(
        message(from_ehr(&payload)),
        format!("invalid medication.ndc: {NDC_RULE} (read from medication.code.coding.code)")
    );
}

#[test]
fn medication_name_falls_back_to_description_then_code_text() {
    let flat = without(pharmacy_payload(), &["medication.name"]);
    let payload = with(
        flat.clone(),
        "medication.description",
        json!("Metformin 500 mg tablet"),
    );
    assert_eq!(
        from_pharmacy(&payload).unwrap().medication.name,
        "Metformin 500 mg tablet"
    );
    let payload = with(
        payload,
        "medication.code",
        json!({"text": "from code text"}),
    );
    assert_eq!(
        from_pharmacy(&payload).unwrap().medication.name,
        "Metformin 500 mg tablet"
    );
    // The EHR payload names the drug only in medication.code.text.
    assert_eq!(
        from_ehr(&ehr_payload()).unwrap().medication.name,
        "Atorvastatin 20 MG Oral Tablet"
    );
    let payload = with(ehr_payload(), "medication.name", json!("Lipitor"));
    assert_eq!(from_ehr(&payload).unwrap().medication.name, "Lipitor");
}

#[test]
fn strength_and_form_are_optional() {
    let payload = without(ehr_payload(), &["medication.strength", "medication.form"]);
    let medication = from_ehr(&payload).unwrap().medication;
    assert_eq!((medication.strength, medication.form), (None, None));
    let payload = with(ehr_payload(), "medication.form", json!({"coding": []}));
    assert_eq!(
        message(from_ehr(&payload)),
        "invalid medication.form: must be a string or a CodeableConcept with text"
    );
}

#[test]
fn quantity_is_a_number_a_numeric_string_or_a_value_with_unit() {
    for (quantity, expected) in [
        (
            json!(30),
            Quantity {
                value: 30.0,
                unit: None,
            },
        ),
        (
            json!(2.5),
            Quantity {
                value: 2.5,
                unit: None,
            },
        ),
        (
            json!(" 90 "),
            Quantity {
                value: 90.0,
                unit: None,
            },
        ),
        (
            json!({"value": 10, "unit": "mL"}),
            Quantity {
                value: 10.0,
                unit: Some("mL".into()),
            },
        ),
        (
            json!({"value": "4", "unit": ""}),
            Quantity {
                value: 4.0,
                unit: None,
            },
        ),
    ] {
        let payload = with(pharmacy_payload(), "quantity", quantity.clone());
        assert_eq!(
            from_pharmacy(&payload).unwrap().quantity,
            Some(expected),
            "{quantity}"
        );
    }
}

#[test]
fn quantity_falls_back_to_medication_quantity_and_is_optional() {
    let payload = without(pharmacy_payload(), &["quantity"]);
    assert_eq!(from_pharmacy(&payload).unwrap().quantity, None);
    let payload = with(
        payload,
        "medication.quantity",
        json!({"value": 14, "unit": "capsule"}),
    );
    assert_eq!(
        from_pharmacy(&payload).unwrap().quantity,
        Some(Quantity {
            value: 14.0,
            unit: Some("capsule".into())
        })
    );
}

#[test]
fn invalid_quantities_are_refused() {
    for quantity in [
        json!(0),
        json!(-3),
        json!("thirty"),
        json!(true),
        json!({"unit": "mL"}),
    ] {
        let payload = with(pharmacy_payload(), "quantity", quantity.clone());
        assert!(
            message(from_pharmacy(&payload)).starts_with("invalid quantity: must be a number"),
            "{quantity}"
        );
    }
    let payload = with(pharmacy_payload(), "medication.quantity", json!(-1));
    let payload = without(payload, &["quantity"]);
    assert!(message(from_pharmacy(&payload)).ends_with("(read from medication.quantity)"));
    let payload = with(
        pharmacy_payload(),
        "quantity",
        json!({"value": 1, "unit": 5}),
    );
    assert_eq!(
        message(from_pharmacy(&payload)),
        "invalid quantity: unit must be a string"
    );
}

#[test]
fn prescriber_is_read_from_flat_fields_before_provider() {
    let payload = with(
        pharmacy_payload(),
        "provider",
        json!({"id": "p-2", "npi": "1234567893"}),
    );
    assert_eq!(
        from_pharmacy(&payload).unwrap().prescriber,
        Prescriber {
            id: Some("dr-1".into()),
            npi: "1003000126".into()
        }
    );
}

#[test]
fn prescriber_falls_back_to_provider_and_its_id_is_optional() {
    assert_eq!(
        from_ehr(&ehr_payload()).unwrap().prescriber,
        Prescriber {
            id: Some("prac-7".into()),
            npi: "1234567893".into()
        }
    );
    let payload = without(pharmacy_payload(), &["prescriberId"]);
    assert_eq!(from_pharmacy(&payload).unwrap().prescriber.id, None);
}

#[test]
fn npi_check_digit_matches_published_npis() {
    // 1234567893 is CMS's worked example; the others are checked by hand.
    assert_eq!(npi_check_digit("123456789"), 3);
    assert_eq!(npi_check_digit("100300012"), 6);
    assert_eq!(npi_check_digit("198765432"), 8);
    assert!(is_valid_npi("1234567893"));
    assert!(!is_valid_npi("1234567890"));
    assert!(!is_valid_npi("123456789"));
    assert!(!is_valid_npi("12345678935"));
    assert!(!is_valid_npi("12345678a3"));
}

#[test]
#[should_panic(expected = "exactly 9 digits")]
fn npi_check_digit_refuses_other_than_nine_digits() {
    npi_check_digit("12345678");
}

#[test]
fn prescriber_npi_with_a_wrong_check_digit_is_refused() {
    for wrong in 0..10u8 {
        if wrong == 3 {
            continue;
        }
        let npi = format!("123456789{wrong}");
        let payload = with(ehr_payload(), "provider.npi", json!(npi));
        assert_eq!(
            message(from_ehr(&payload)),
            "invalid prescriber.npi: fails the NPI check digit (Luhn) rule \
             (read from provider.npi)"
        );
    }
}

#[test]
fn prescriber_npi_of_the_wrong_length_is_refused() {
    for npi in [
        json!("123456789"),
        json!("12345678933"),
        json!("12345-6789"),
        json!(12345),
    ] {
        let payload = with(pharmacy_payload(), "prescriberNpi", npi.clone());
        assert_eq!(
            message(from_pharmacy(&payload)),
            "invalid prescriber.npi: must be 10 digits (read from prescriberNpi)",
            "{npi}"
        );
    }
}

#[test]
fn pharmacy_is_optional_and_an_empty_object_is_no_pharmacy() {
    let payload = without(pharmacy_payload(), &["pharmacy"]);
    assert_eq!(from_pharmacy(&payload).unwrap().pharmacy, None);
    let payload = with(payload, "pharmacy", json!({}));
    assert_eq!(from_pharmacy(&payload).unwrap().pharmacy, None);
    let payload = with(payload, "pharmacy", json!({"name": "Corner Drugs"}));
    assert_eq!(
        from_pharmacy(&payload).unwrap().pharmacy,
        Some(Pharmacy {
            id: None,
            name: Some("Corner Drugs".into()),
            npi: None,
            ncpdp_id: None
        })
    );
}

#[test]
fn pharmacy_identifiers_are_validated_when_present() {
    let payload = with(pharmacy_payload(), "pharmacy.npi", json!("1987654320"));
    assert_eq!(
        message(from_pharmacy(&payload)),
        "invalid pharmacy.npi: fails the NPI check digit (Luhn) rule"
    );
    let payload = with(pharmacy_payload(), "pharmacy.ncpdpId", json!("051234"));
    assert_eq!(
        message(from_pharmacy(&payload)),
        "invalid pharmacy.ncpdpId: must be 7 digits"
    );
    let payload = with(pharmacy_payload(), "pharmacy", json!("Main Street"));
    assert_eq!(
        message(from_pharmacy(&payload)),
        "invalid pharmacy: must be an object"
    );
}

#[test]
fn fhir_statuses_map_onto_the_canonical_set() {
    for (fhir, canonical) in [
        ("draft", OrderStatus::Pending),
        ("active", OrderStatus::Active),
        ("on-hold", OrderStatus::OnHold),
        ("completed", OrderStatus::Completed),
        ("ended", OrderStatus::Completed),
        ("stopped", OrderStatus::Stopped),
        ("cancelled", OrderStatus::Cancelled),
        ("entered-in-error", OrderStatus::EnteredInError),
        ("unknown", OrderStatus::Unknown),
    ] {
        let payload = with(ehr_payload(), "status", json!(fhir));
        assert_eq!(from_ehr(&payload).unwrap().status, canonical, "{fhir}");
    }
}

#[test]
fn pharmacy_statuses_map_onto_the_canonical_set() {
    for (pharmacy, canonical) in [
        ("NEW", OrderStatus::Pending),
        ("RECEIVED", OrderStatus::Pending),
        ("PENDING", OrderStatus::Pending),
        ("QUEUED", OrderStatus::Pending),
        ("IN_PROGRESS", OrderStatus::Active),
        ("PROCESSING", OrderStatus::Active),
        ("FILLING", OrderStatus::Active),
        ("ON_HOLD", OrderStatus::OnHold),
        ("SUSPENDED", OrderStatus::OnHold),
        ("FILLED", OrderStatus::Ready),
        ("READY", OrderStatus::Ready),
        ("READY_FOR_PICKUP", OrderStatus::Ready),
        ("DISPENSED", OrderStatus::Completed),
        ("PICKED_UP", OrderStatus::Completed),
        ("DELIVERED", OrderStatus::Completed),
        ("SHIPPED", OrderStatus::Completed),
        ("SOLD", OrderStatus::Completed),
        ("COMPLETE", OrderStatus::Completed),
        ("DISCONTINUED", OrderStatus::Stopped),
        ("CANCELLED", OrderStatus::Cancelled),
        ("CANCELED", OrderStatus::Cancelled),
        ("RETURNED_TO_STOCK", OrderStatus::Cancelled),
    ] {
        let payload = with(pharmacy_payload(), "status", json!(pharmacy));
        assert_eq!(
            from_pharmacy(&payload).unwrap().status,
            canonical,
            "{pharmacy}"
        );
    }
}

#[test]
fn status_ignores_case_and_separators() {
    for spelling in ["on-hold", "ON_HOLD", "On Hold", " on_hold ", "On-Hold"] {
        assert_eq!(
            map_status(spelling),
            Some(OrderStatus::OnHold),
            "{spelling}"
        );
    }
    assert_eq!(map_status("picked-up"), Some(OrderStatus::Completed));
    assert_eq!(map_status("onhold"), None);
}

#[test]
fn unrecognised_status_is_refused() {
    for status in [json!("TELEPORTED"), json!(""), json!(3)] {
        let payload = with(pharmacy_payload(), "status", status.clone());
        let message = message(from_pharmacy(&payload));
        assert!(message.contains("status"), "{status}: {message}");
    }
    let payload = with(pharmacy_payload(), "status", json!("TELEPORTED"));
    assert_eq!(
        message(from_pharmacy(&payload)),
        format!("invalid status: {STATUS_RULE}")
    );
}

#[test]
fn timestamps_are_rfc3339_or_epoch_millis() {
    let payload = with(
        ehr_payload(),
        "createdAt",
        json!("2024-05-01T09:30:00.5-04:00"),
    );
    let payload = with(payload, "lastUpdated", json!(1_714_570_200_500_i64));
    let order = from_ehr(&payload).unwrap();
    assert_eq!(order.created_at, 1_714_570_200_500);
    assert_eq!(order.updated_at, 1_714_570_200_500);
}

#[test]
fn created_at_prefers_created_at_over_order_date() {
    let payload = with(
        pharmacy_payload(),
        "createdAt",
        json!("2024-01-01T00:00:00Z"),
    );
    assert_eq!(
        from_pharmacy(&payload).unwrap().created_at,
        1_704_067_200_000
    );
    // The pharmacy payload carries only orderDate.
    assert_eq!(
        from_pharmacy(&pharmacy_payload()).unwrap().created_at,
        1_714_555_800_000
    );
}

#[test]
fn updated_at_falls_back_to_last_updated_then_created_at() {
    let payload = with(ehr_payload(), "updatedAt", json!("2024-06-01T00:00:00Z"));
    assert_eq!(from_ehr(&payload).unwrap().updated_at, 1_717_200_000_000);
    // ehr_payload carries only lastUpdated.
    assert_eq!(
        from_ehr(&ehr_payload()).unwrap().updated_at,
        1_714_557_600_250
    );
    let payload = without(ehr_payload(), &["lastUpdated"]);
    let order = from_ehr(&payload).unwrap();
    assert_eq!(order.updated_at, order.created_at);
}

#[test]
fn invalid_timestamps_are_refused() {
    for (value, rule) in [
        (json!("2024-05-01"), TIMESTAMP_RULE),
        (json!("yesterday"), TIMESTAMP_RULE),
        (json!(1.7e12), TIMESTAMP_RULE),
        (json!(true), TIMESTAMP_RULE),
        (
            json!(1_714_555_800_i64),
            "epoch milliseconds before 1973: epoch seconds given?",
        ),
    ] {
        let payload = with(pharmacy_payload(), "orderDate", value.clone());
        assert_eq!(
            message(from_pharmacy(&payload)),
            format!("invalid createdAt: {rule} (read from orderDate)"),
            "{value}"
        );
    }
    let payload = with(pharmacy_payload(), "updatedAt", json!("not a time"));
    assert_eq!(
        message(from_pharmacy(&payload)),
        format!("invalid updatedAt: {TIMESTAMP_RULE}")
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
