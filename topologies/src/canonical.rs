//! The canonical medication order: the one shape every source is normalised into.
//!
//! [`MedicationOrder`] mirrors `schemas/medication_order.avsc` field for field: the Rust
//! names are snake_case and serde renames them to the schema's camelCase, enums serialise
//! as their Avro symbols, and every `Option` is a `["null", T]` union defaulting to null.
//! The tests round-trip values through apache-avro's schema-aware serde so the two cannot
//! drift apart silently.
//!
//! Each Rust type is named exactly as its Avro record or enum: apache-avro's schema-aware
//! deserializer (the engine's fast decoding path) matches a struct to a record by name.

use std::sync::LazyLock;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use sluice_engine::serde::DatumWriter;

/// The canonical MedicationOrder Avro schema, as registered in the schema registry.
pub const SCHEMA_JSON: &str = include_str!("schemas/medication_order.avsc");

/// The full name of the schema's top-level record.
pub const SCHEMA_FULL_NAME: &str = "health.sluice.canonical.MedicationOrder";

/// The parsed canonical schema. Parsed once; the schema is compiled into the binary, so a
/// parse failure is a build defect and panics (the unit tests catch it first).
pub fn schema() -> &'static Schema {
    static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
        Schema::parse_str(SCHEMA_JSON)
            .expect("schemas/medication_order.avsc is a valid Avro schema")
    });
    &SCHEMA
}

/// A medication order from any source, in the platform's canonical form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MedicationOrder {
    /// The order's id in its source system; also the Kafka key.
    pub order_id: String,
    pub source_system: SourceSystem,
    pub patient_id: String,
    pub medication: Medication,
    pub quantity: Option<Quantity>,
    pub prescriber: Prescriber,
    pub pharmacy: Option<Pharmacy>,
    pub status: OrderStatus,
    /// Milliseconds since the Unix epoch (Avro `timestamp-millis`).
    pub created_at: i64,
    /// Milliseconds since the Unix epoch; equals `created_at` when the source gave none.
    pub updated_at: i64,
    /// What happened to the order; `None` only in records written before the field existed.
    pub change_type: Option<ChangeType>,
}

/// Which external feed reported an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceSystem {
    Ehr,
    Pharmacy,
}

impl SourceSystem {
    /// The Avro symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceSystem::Ehr => "EHR",
            SourceSystem::Pharmacy => "PHARMACY",
        }
    }

    /// The `source-system` header's value, in lower case as the platform's integration
    /// guide writes it.
    pub fn header_value(self) -> &'static str {
        match self {
            SourceSystem::Ehr => "ehr",
            SourceSystem::Pharmacy => "pharmacy",
        }
    }
}

/// What an event says happened to an order (see `normalize::change_type`).
///
/// The variant order is the schema's symbol order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeType {
    Created,
    Updated,
    Cancelled,
}

impl ChangeType {
    /// The `change-type` header's value, in lower case.
    pub fn header_value(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Cancelled => "cancelled",
        }
    }
}

/// The drug ordered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Medication {
    /// 11-digit NDC (5-4-2) without hyphens.
    pub ndc: String,
    pub name: String,
    pub strength: Option<String>,
    pub form: Option<String>,
}

/// How much to dispense.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantity {
    /// Greater than zero.
    pub value: f64,
    pub unit: Option<String>,
}

/// Who wrote the order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prescriber {
    pub id: Option<String>,
    /// 10-digit NPI with a valid check digit.
    pub npi: String,
}

/// The dispensing or preferred pharmacy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pharmacy {
    pub id: Option<String>,
    pub name: Option<String>,
    pub npi: Option<String>,
    pub ncpdp_id: Option<String>,
}

/// The lifecycle of an order, common to EHR and pharmacy feeds.
///
/// The variant order is the schema's symbol order; appending is the only compatible change
/// (readers on an older schema read an unknown symbol as `UNKNOWN`, the enum's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Written but not yet acted on: FHIR `draft`; pharmacy NEW, RECEIVED.
    Pending,
    /// In force / being worked on: FHIR `active`; pharmacy IN_PROGRESS.
    Active,
    /// Paused: FHIR `on-hold`; pharmacy ON_HOLD.
    OnHold,
    /// Filled and waiting for the patient: pharmacy FILLED, READY.
    Ready,
    /// Everything the order asked for happened: FHIR `completed`; pharmacy DISPENSED, PICKED_UP.
    Completed,
    /// Discontinued after it had started: FHIR `stopped`; pharmacy DISCONTINUED.
    Stopped,
    /// Withdrawn before anything was done: FHIR `cancelled`; pharmacy CANCELLED.
    Cancelled,
    /// Should never have existed: FHIR `entered-in-error`.
    EnteredInError,
    /// The source itself does not know: FHIR `unknown`.
    Unknown,
}

impl OrderStatus {
    /// Every status, in the schema's symbol order.
    pub const ALL: [OrderStatus; 9] = [
        OrderStatus::Pending,
        OrderStatus::Active,
        OrderStatus::OnHold,
        OrderStatus::Ready,
        OrderStatus::Completed,
        OrderStatus::Stopped,
        OrderStatus::Cancelled,
        OrderStatus::EnteredInError,
        OrderStatus::Unknown,
    ];

    /// The Avro symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Active => "ACTIVE",
            OrderStatus::OnHold => "ON_HOLD",
            OrderStatus::Ready => "READY",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Stopped => "STOPPED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::EnteredInError => "ENTERED_IN_ERROR",
            OrderStatus::Unknown => "UNKNOWN",
        }
    }
}

/// Writes `order` in the canonical schema's binary encoding, field by field in schema order:
/// what [`AvroSerde::with_datum_writer`](sluice_engine::serde::AvroSerde::with_datum_writer)
/// takes. Enums are written by variant index, which is the schema's symbol order.
/// `datum_writer_matches_apache_avro` compares it with apache-avro's encoding.
pub fn write_datum(order: &MedicationOrder, datum: &mut DatumWriter<'_>) {
    datum.string(&order.order_id);
    datum.symbol(order.source_system as usize);
    datum.string(&order.patient_id);
    let medication = &order.medication;
    datum.string(&medication.ndc);
    datum.string(&medication.name);
    datum.optional_string(medication.strength.as_deref());
    datum.optional_string(medication.form.as_deref());
    datum.optional(order.quantity.as_ref(), |datum, quantity| {
        datum.double(quantity.value);
        datum.optional_string(quantity.unit.as_deref());
    });
    datum.optional_string(order.prescriber.id.as_deref());
    datum.string(&order.prescriber.npi);
    datum.optional(order.pharmacy.as_ref(), |datum, pharmacy| {
        datum.optional_string(pharmacy.id.as_deref());
        datum.optional_string(pharmacy.name.as_deref());
        datum.optional_string(pharmacy.npi.as_deref());
        datum.optional_string(pharmacy.ncpdp_id.as_deref());
    });
    datum.symbol(order.status as usize);
    datum.long(order.created_at);
    datum.long(order.updated_at);
    datum.optional(order.change_type.as_ref(), |datum, change| {
        datum.symbol(*change as usize);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::types::Value;
    use apache_avro::writer::datum::GenericDatumWriter;

    fn full_order() -> MedicationOrder {
        MedicationOrder {
            order_id: "ord-1".into(),
            source_system: SourceSystem::Pharmacy,
            patient_id: "pat-9".into(),
            medication: Medication {
                ndc: "00093714656".into(),
                name: "Atorvastatin 20 MG Oral Tablet".into(),
                strength: Some("20 mg".into()),
                form: Some("tablet".into()),
            },
            quantity: Some(Quantity {
                value: 30.0,
                unit: Some("tablet".into()),
            }),
            prescriber: Prescriber {
                id: Some("prov-7".into()),
                npi: "1234567893".into(),
            },
            pharmacy: Some(Pharmacy {
                id: Some("ph-1".into()),
                name: Some("Main Street Pharmacy".into()),
                npi: Some("1234567893".into()),
                ncpdp_id: Some("0512345".into()),
            }),
            status: OrderStatus::EnteredInError,
            created_at: 1_714_557_600_000,
            updated_at: 1_714_561_200_123,
            change_type: Some(ChangeType::Updated),
        }
    }

    fn minimal_order() -> MedicationOrder {
        MedicationOrder {
            order_id: "ord-2".into(),
            source_system: SourceSystem::Ehr,
            patient_id: "pat-1".into(),
            medication: Medication {
                ndc: "12345678901".into(),
                name: "Lisinopril".into(),
                strength: None,
                form: None,
            },
            quantity: None,
            prescriber: Prescriber {
                id: None,
                npi: "1234567893".into(),
            },
            pharmacy: None,
            status: OrderStatus::Pending,
            created_at: 0,
            updated_at: 0,
            change_type: None,
        }
    }

    fn avro_round_trip(order: &MedicationOrder) -> MedicationOrder {
        let bytes = GenericDatumWriter::builder(schema())
            .build()
            .unwrap()
            .write_ser_to_vec(order)
            .unwrap();
        let mut slice = bytes.as_slice();
        let decoded = GenericDatumReader::builder(schema())
            .build()
            .unwrap()
            .read_deser(&mut slice)
            .unwrap();
        // Every byte must belong to the datum: leftovers would mean writer and reader
        // disagree about the layout even if the value happens to compare equal.
        assert!(slice.is_empty(), "{} bytes left unread", slice.len());
        decoded
    }

    #[test]
    fn datum_writer_matches_apache_avro() {
        use sluice_engine::ProcessError;
        let apache = GenericDatumWriter::builder(schema()).build().unwrap();
        let by_hand = |order: &MedicationOrder| {
            let mut out = Vec::new();
            write_datum(order, &mut DatumWriter::new(&mut out));
            out
        };
        let mut orders = vec![full_order(), minimal_order()];
        // Every symbol of every enum, and both branches of every union.
        for (i, status) in OrderStatus::ALL.into_iter().enumerate() {
            let mut order = if i % 2 == 0 {
                full_order()
            } else {
                minimal_order()
            };
            order.status = status;
            order.source_system = [SourceSystem::Ehr, SourceSystem::Pharmacy][i % 2];
            order.change_type = [
                None,
                Some(ChangeType::Created),
                Some(ChangeType::Updated),
                Some(ChangeType::Cancelled),
            ][i % 4];
            order.created_at = [0, -1, i64::MAX, 1_714_555_800_000][i % 4];
            orders.push(order);
        }
        // And the generator's orders, every spelling of both feeds.
        let mut generator = crate::generator::OrderGenerator::new(7);
        for _ in 0..500 {
            type Normalize = fn(&serde_json::Value) -> Result<MedicationOrder, ProcessError>;
            for (sample, normalize) in [
                (
                    generator.next_ehr(),
                    crate::normalize::from_ehr as Normalize,
                ),
                (generator.next_pharmacy(), crate::normalize::from_pharmacy),
            ] {
                let payload: serde_json::Value = serde_json::from_slice(&sample.value).unwrap();
                if let Ok(order) = normalize(&payload) {
                    orders.push(order);
                }
            }
        }
        assert!(orders.len() > 900, "{} orders", orders.len());
        for order in &orders {
            assert_eq!(
                by_hand(order),
                apache.write_ser_to_vec(order).unwrap(),
                "{order:?}"
            );
        }
    }

    #[test]
    fn schema_parses_as_the_canonical_record() {
        let Schema::Record(record) = schema() else {
            panic!("top level of the schema is not a record");
        };
        assert_eq!(record.name.fullname(None), SCHEMA_FULL_NAME);
        let fields: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            fields,
            [
                "orderId",
                "sourceSystem",
                "patientId",
                "medication",
                "quantity",
                "prescriber",
                "pharmacy",
                "status",
                "createdAt",
                "updatedAt",
                "changeType"
            ]
        );
    }

    #[test]
    fn timestamps_are_timestamp_millis() {
        let Schema::Record(record) = schema() else {
            panic!("top level of the schema is not a record");
        };
        for name in ["createdAt", "updatedAt"] {
            let field = record.fields.iter().find(|f| f.name == name).unwrap();
            assert_eq!(field.schema, Schema::TimestampMillis, "{name}");
        }
    }

    #[test]
    fn status_symbols_match_the_rust_enum_in_order() {
        let Schema::Record(record) = schema() else {
            panic!("top level of the schema is not a record");
        };
        let field = record.fields.iter().find(|f| f.name == "status").unwrap();
        let Schema::Enum(status) = &field.schema else {
            panic!("status is not an enum");
        };
        let rust: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(status.symbols, rust);
        assert_eq!(status.default.as_deref(), Some("UNKNOWN"));
    }

    #[test]
    fn change_type_symbols_match_the_rust_enum_in_order() {
        let Schema::Record(record) = schema() else {
            panic!("top level of the schema is not a record");
        };
        let field = record
            .fields
            .iter()
            .find(|f| f.name == "changeType")
            .unwrap();
        let Schema::Union(union) = &field.schema else {
            panic!("changeType is not a union with null");
        };
        let Schema::Enum(change) = &union.variants()[1] else {
            panic!("changeType's second branch is not an enum");
        };
        let rust: Vec<String> = [
            ChangeType::Created,
            ChangeType::Updated,
            ChangeType::Cancelled,
        ]
        .iter()
        .map(|c| c.header_value().to_ascii_uppercase())
        .collect();
        assert_eq!(change.symbols, rust);
    }

    #[test]
    fn an_order_written_before_change_type_existed_reads_as_none() {
        // The previous schema: this one without its last field.
        let mut old: serde_json::Value = serde_json::from_str(SCHEMA_JSON).unwrap();
        old["fields"].as_array_mut().unwrap().pop();
        let old = Schema::parse(&old).unwrap();
        let mut order = minimal_order();
        order.change_type = None;
        let mut written = GenericDatumWriter::builder(&old)
            .build()
            .unwrap()
            .write_ser_to_vec(&OldOrder::from(&order))
            .unwrap();
        let value = GenericDatumReader::builder(&old)
            .reader_schema(schema())
            .build()
            .unwrap()
            .read_value(&mut written.as_slice())
            .unwrap();
        written.clear();
        let read: MedicationOrder = apache_avro::from_value(&value).unwrap();
        assert_eq!(read, order);
    }

    /// The canonical order as the schema before `changeType` had it.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OldOrder<'a> {
        order_id: &'a str,
        source_system: SourceSystem,
        patient_id: &'a str,
        medication: &'a Medication,
        quantity: &'a Option<Quantity>,
        prescriber: &'a Prescriber,
        pharmacy: &'a Option<Pharmacy>,
        status: OrderStatus,
        created_at: i64,
        updated_at: i64,
    }

    impl<'a> From<&'a MedicationOrder> for OldOrder<'a> {
        fn from(o: &'a MedicationOrder) -> Self {
            Self {
                order_id: &o.order_id,
                source_system: o.source_system,
                patient_id: &o.patient_id,
                medication: &o.medication,
                quantity: &o.quantity,
                prescriber: &o.prescriber,
                pharmacy: &o.pharmacy,
                status: o.status,
                created_at: o.created_at,
                updated_at: o.updated_at,
            }
        }
    }

    #[test]
    fn full_order_round_trips_through_avro() {
        let order = full_order();
        assert_eq!(avro_round_trip(&order), order);
    }

    #[test]
    fn minimal_order_round_trips_through_avro() {
        let order = minimal_order();
        assert_eq!(avro_round_trip(&order), order);
    }

    #[test]
    fn enums_are_written_as_avro_symbols_and_options_as_unions() {
        // Decode generically, without our serde impls, to see what other Avro readers see.
        let bytes = GenericDatumWriter::builder(schema())
            .build()
            .unwrap()
            .write_ser_to_vec(&full_order())
            .unwrap();
        let value = GenericDatumReader::builder(schema())
            .build()
            .unwrap()
            .read_value(&mut bytes.as_slice())
            .unwrap();
        let Value::Record(fields) = value else {
            panic!("not a record: {value:?}");
        };
        let get = |name: &str| &fields.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(get("sourceSystem"), &Value::Enum(1, "PHARMACY".into()));
        assert_eq!(get("status"), &Value::Enum(7, "ENTERED_IN_ERROR".into()));
        assert_eq!(get("createdAt"), &Value::TimestampMillis(1_714_557_600_000));
        assert!(matches!(get("quantity"), Value::Union(1, _)));
        assert!(matches!(get("pharmacy"), Value::Union(1, _)));
    }

    #[test]
    fn json_field_names_are_the_schema_names() {
        // The same serde impls are used for JSON (debugging, the DLQ viewer); their names must
        // be the schema's camelCase names, not the Rust ones.
        let json = serde_json::to_value(full_order()).unwrap();
        assert_eq!(json["orderId"], "ord-1");
        assert_eq!(json["sourceSystem"], "PHARMACY");
        assert_eq!(json["pharmacy"]["ncpdpId"], "0512345");
        assert_eq!(json["status"], "ENTERED_IN_ERROR");
        assert_eq!(json["updatedAt"], 1_714_561_200_123_i64);
    }
}
