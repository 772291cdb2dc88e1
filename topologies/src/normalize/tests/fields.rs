use super::*;

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
