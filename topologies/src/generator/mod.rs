//! Deterministic sample data for the two medication-order feeds.
//!
//! [`OrderGenerator`] produces what the EHR (`external.ehr.medication-orders`) and pharmacy
//! (`external.pharmacy.prescriptions`) feeds send: FHIR-flavoured MedicationRequest-like JSON
//! from the EHR, flat JSON from pharmacies. Both mix the alternative field spellings the
//! normalizer accepts (see [`crate::normalize`]), NDCs in every 10- and 11-digit form, and
//! NPIs with valid check digits, so a demo or a load test exercises every fallback path.
//!
//! A chosen share of records is malformed on purpose, each in one named way
//! ([`Malformation`]), for exercising the dead-letter path.
//!
//! The same seed and the same sequence of calls give the same records byte for byte: time
//! comes from a simulated clock, never the wall clock. Drug names and strengths are real
//! generics; NDC labeler/product codes, NPIs and all identifiers are synthetic.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::normalize::npi_check_digit;

mod drugs;
#[cfg(test)]
mod tests;

use drugs::{DRUGS, Drug};

/// One record for a feed: the Kafka key and JSON value bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleRecord {
    /// The order id the producer keys by (kept even when the payload lost it).
    pub key: String,
    pub value: Vec<u8>,
    /// `Some` when the record was broken on purpose; the normalizer must refuse it.
    pub malformed: Option<Malformation>,
}

/// The one thing wrong with a deliberately malformed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformation {
    /// The bytes are not JSON (the source serde refuses them).
    InvalidJson,
    MissingOrderId,
    MissingPatientId,
    /// No NDC in any accepted place.
    MissingNdc,
    /// An NDC that cannot be normalised (ten digits without hyphens).
    MalformedNdc,
    /// A 10-digit prescriber NPI whose check digit is wrong.
    BadNpiCheckDigit,
    /// A status in neither the FHIR nor the pharmacy vocabulary.
    UnknownStatus,
    /// No prescriber NPI in any accepted place.
    MissingPrescriber,
}

impl Malformation {
    pub const ALL: [Malformation; 8] = [
        Malformation::InvalidJson,
        Malformation::MissingOrderId,
        Malformation::MissingPatientId,
        Malformation::MissingNdc,
        Malformation::MalformedNdc,
        Malformation::BadNpiCheckDigit,
        Malformation::UnknownStatus,
        Malformation::MissingPrescriber,
    ];

    /// A substring of the error message (source serde's or normalizer's) that refuses a
    /// record with this malformation; a dead-letter record's reason header contains it.
    pub fn expected_reason(&self) -> &'static str {
        match self {
            Malformation::InvalidJson => "invalid JSON",
            Malformation::MissingOrderId => "missing required field orderId",
            Malformation::MissingPatientId => "missing required field patientId",
            Malformation::MissingNdc => "missing required field medication.ndc",
            Malformation::MalformedNdc => "invalid medication.ndc",
            Malformation::BadNpiCheckDigit => "invalid prescriber.npi: fails the NPI check digit",
            Malformation::UnknownStatus => "invalid status",
            Malformation::MissingPrescriber => "missing required field prescriber.npi",
        }
    }
}

const PHARMACY_NAMES: &[&str] = &[
    "Main Street Pharmacy",
    "Riverside Community Pharmacy",
    "Oak Hill Drug",
    "Northgate Health Pharmacy",
    "Harbor View Apothecary",
    "Mercy Outpatient Pharmacy",
    "Lakeside Family Pharmacy",
    "CityCare Mail Order Pharmacy",
];

/// FHIR MedicationRequest statuses with rough real-world weights.
const EHR_STATUSES: &[(&str, u32)] = &[
    ("active", 50),
    ("completed", 14),
    ("on-hold", 8),
    ("draft", 8),
    ("cancelled", 7),
    ("stopped", 6),
    ("entered-in-error", 3),
    ("unknown", 2),
    ("ended", 2),
];

/// Pharmacy workflow statuses with rough real-world weights.
const PHARMACY_STATUSES: &[(&str, u32)] = &[
    ("NEW", 10),
    ("RECEIVED", 12),
    ("IN_PROGRESS", 14),
    ("FILLED", 14),
    ("READY", 10),
    ("DISPENSED", 10),
    ("PICKED_UP", 12),
    ("ON_HOLD", 6),
    ("CANCELLED", 6),
    ("DISCONTINUED", 3),
    ("RETURNED_TO_STOCK", 3),
];

/// Statuses neither vocabulary knows, for [`Malformation::UnknownStatus`].
const UNKNOWN_STATUSES: &[&str] = &["ARCHIVED", "ESCALATED", "AWAITING-SIGNATURE", "teleported"];

const NDC_CODE_SYSTEM: &str = "http://hl7.org/fhir/sid/ndc";
const NDC_OID_SYSTEM: &str = "urn:oid:2.16.840.1.113883.6.69";
/// An EHR-local formulary code system, listed before the NDC coding in some concepts.
const FORMULARY_SYSTEM: &str = "https://ehr.example.org/fhir/CodeSystem/formulary";

/// 2024-05-01T00:00:00Z: where the simulated clock starts.
const CLOCK_START_MILLIS: i64 = 1_714_521_600_000;

/// Patients the orders are for: ids `pt-00000` to `pt-01999` ([`patient_id`]).
pub const PATIENT_COUNT: u32 = 2_000;

/// The id of the `index`th patient, as the orders carry it; also the key of the patient's
/// coverage in the reference data (`crate::enrichment::reference_generator`).
pub fn patient_id(index: u32) -> String {
    format!("pt-{index:05}")
}

/// A drug the orders name, as the reference-data generator needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderDrug {
    /// 11-digit NDC (5-4-2, no hyphens), as normalization outputs it.
    pub ndc: String,
    pub generic_name: &'static str,
    pub strength: &'static str,
    pub form: &'static str,
}

/// Every drug the generated orders name, in a fixed order.
pub fn order_drugs() -> Vec<OrderDrug> {
    DRUGS
        .iter()
        .map(|drug| OrderDrug {
            ndc: crate::normalize::normalize_ndc(&drug.ndc.join("-"))
                .expect("the generator's NDCs are valid 10-digit NDCs"),
            generic_name: drug.generic,
            strength: drug.strength,
            form: drug.form,
        })
        .collect()
}

/// A prescriber of the simulated practice: ids are reused across orders, as in life.
struct SamplePrescriber {
    id: String,
    npi: String,
}

/// A pharmacy of the simulated network.
struct SamplePharmacy {
    id: String,
    name: &'static str,
    npi: String,
    ncpdp_id: String,
}

/// Seeded generator of sample records for both feeds. See the module docs.
pub struct OrderGenerator {
    rng: StdRng,
    malformed_ratio: f64,
    /// Simulated time of the latest order, in epoch milliseconds.
    clock_millis: i64,
    /// Orders generated so far; makes order ids unique.
    sequence: u64,
    prescribers: Vec<SamplePrescriber>,
    pharmacies: Vec<SamplePharmacy>,
}

impl OrderGenerator {
    /// A generator producing only well-formed records until [`with_malformed_ratio`] says
    /// otherwise.
    ///
    /// [`with_malformed_ratio`]: OrderGenerator::with_malformed_ratio
    pub fn new(seed: u64) -> Self {
        // StdRng rather than SmallRng: its output is the same on every platform.
        let mut rng = StdRng::seed_from_u64(seed);
        let prescribers = (0..60)
            .map(|i| SamplePrescriber {
                id: format!("prac-{:04}", 1000 + i),
                npi: random_npi(&mut rng),
            })
            .collect();
        let pharmacies = PHARMACY_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| SamplePharmacy {
                id: format!("store-{:03}", 100 + i),
                name,
                npi: random_npi(&mut rng),
                ncpdp_id: format!("{:07}", rng.random_range(100_000..10_000_000)),
            })
            .collect();
        Self {
            rng,
            malformed_ratio: 0.0,
            clock_millis: CLOCK_START_MILLIS,
            sequence: 0,
            prescribers,
            pharmacies,
        }
    }

    /// Makes about `ratio` of the records malformed, each in one [`Malformation`] chosen
    /// uniformly.
    ///
    /// # Panics
    /// If `ratio` is not within `0.0..=1.0`.
    pub fn with_malformed_ratio(mut self, ratio: f64) -> Self {
        assert!(
            (0.0..=1.0).contains(&ratio),
            "the malformed ratio is a probability in 0.0..=1.0"
        );
        self.malformed_ratio = ratio;
        self
    }

    /// The next record of `external.ehr.medication-orders`.
    pub fn next_ehr(&mut self) -> SampleRecord {
        let (key, payload) = self.ehr_payload();
        self.finish(key, payload)
    }

    /// The next record of `external.pharmacy.prescriptions`.
    pub fn next_pharmacy(&mut self) -> SampleRecord {
        let (key, payload) = self.pharmacy_payload();
        self.finish(key, payload)
    }

    fn finish(&mut self, key: String, mut payload: Value) -> SampleRecord {
        let malformed = self.rng.random_bool(self.malformed_ratio).then(|| {
            *Malformation::ALL
                .choose(&mut self.rng)
                .expect("ALL is not empty")
        });
        if let Some(malformation) = malformed {
            self.break_payload(&mut payload, malformation);
        }
        let mut value = serde_json::to_vec(&payload).expect("a serde_json::Value always encodes");
        if malformed == Some(Malformation::InvalidJson) {
            self.corrupt_json(&mut value);
        }
        SampleRecord {
            key,
            value,
            malformed,
        }
    }

    /// Advances the simulated clock and returns (createdAt, updatedAt) in epoch millis; a
    /// quarter of the orders are reported unchanged since creation.
    fn next_times(&mut self) -> (i64, i64) {
        self.clock_millis += self.rng.random_range(1_000..120_000);
        self.sequence += 1;
        let created = self.clock_millis;
        let updated = if self.rng.random_bool(0.25) {
            created
        } else {
            created + self.rng.random_range(60_000..2 * 24 * 3_600_000)
        };
        (created, updated)
    }

    fn patient_id(&mut self) -> String {
        patient_id(self.rng.random_range(0..PATIENT_COUNT))
    }

    /// A drug's NDC in one of the forms feeds send: its 10-digit hyphenated form, the
    /// 11-digit 5-4-2 hyphenated form, or 11 bare digits.
    fn ndc_text(&mut self, drug: &Drug) -> String {
        let [labeler, product, package] = drug.ndc;
        match self.rng.random_range(0..3) {
            0 => format!("{labeler}-{product}-{package}"),
            eleven => {
                let labeler = format!("{labeler:0>5}");
                let product = format!("{product:0>4}");
                let package = format!("{package:0>2}");
                if eleven == 1 {
                    format!("{labeler}-{product}-{package}")
                } else {
                    format!("{labeler}{product}{package}")
                }
            }
        }
    }

    fn timestamp(&mut self, millis: i64) -> Value {
        if self.rng.random_bool(0.5) {
            return json!(millis);
        }
        let utc =
            chrono::DateTime::from_timestamp_millis(millis).expect("simulated time is in range");
        // Some systems send local time with an offset, as RFC 3339 allows.
        let text = if self.rng.random_bool(0.3) {
            let offset = chrono::FixedOffset::west_opt(5 * 3600).expect("-05:00 is a valid offset");
            utc.with_timezone(&offset)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
        } else {
            utc.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        json!(text)
    }

    fn ehr_payload(&mut self) -> (String, Value) {
        let (created, updated) = self.next_times();
        let order_id = format!("mr-{:07}-{:04x}", self.sequence, self.rng.random::<u16>());
        let drug = DRUGS.choose(&mut self.rng).expect("DRUGS is not empty");
        let mut order = Map::new();
        order.insert("resourceType".into(), json!("MedicationRequest"));
        let id_field = if self.rng.random_bool(0.7) {
            "id"
        } else {
            "orderId"
        };
        order.insert(id_field.into(), json!(order_id));

        let status = *EHR_STATUSES
            .choose_weighted(&mut self.rng, |(_, weight)| *weight)
            .expect("EHR_STATUSES has positive weights");
        // Most EHRs send FHIR's lower-case codes; some upper-case them.
        let status = if self.rng.random_bool(0.1) {
            status.0.to_uppercase()
        } else {
            status.0.to_string()
        };
        order.insert("status".into(), json!(status));

        let patient = self.patient_id();
        match self.rng.random_range(0..10) {
            0..6 => order.insert(
                "subject".into(),
                json!({"reference": format!("Patient/{patient}")}),
            ),
            6..8 => order.insert("patientId".into(), json!(patient)),
            _ => order.insert("patient".into(), json!({"id": patient})),
        };

        let ndc = self.ndc_text(drug);
        let mut medication = Map::new();
        match self.rng.random_range(0..10) {
            // FHIR CodeableConcept; the name only in its text.
            0..6 => {
                let system = if self.rng.random_bool(0.15) {
                    NDC_OID_SYSTEM
                } else {
                    NDC_CODE_SYSTEM
                };
                let mut coding =
                    vec![json!({"system": system, "code": ndc, "display": drug.display})];
                if self.rng.random_bool(0.4) {
                    let local = json!({"system": FORMULARY_SYSTEM, "code": format!("F{:05}", self.rng.random_range(0..100_000))});
                    coding.insert(0, local);
                }
                medication.insert(
                    "code".into(),
                    json!({"coding": coding, "text": drug.display}),
                );
            }
            6..8 => {
                medication.insert("code".into(), json!(format!("NDC:{ndc}")));
                medication.insert("name".into(), json!(drug.display));
            }
            _ => {
                medication.insert("ndc".into(), json!(ndc));
                medication.insert("description".into(), json!(drug.display));
            }
        }
        if self.rng.random_bool(0.7) {
            medication.insert("strength".into(), json!(drug.strength));
            let form = if self.rng.random_bool(0.5) {
                json!({"text": drug.form})
            } else {
                json!(drug.form)
            };
            medication.insert("form".into(), form);
        }
        let amount = *drug
            .amounts
            .choose(&mut self.rng)
            .expect("every drug has amounts");
        match self.rng.random_range(0..20) {
            0..10 => {
                order.insert(
                    "quantity".into(),
                    json!({"value": amount, "unit": drug.unit}),
                );
            }
            10..14 => {
                order.insert("quantity".into(), json!(amount));
            }
            14..17 => {
                medication.insert(
                    "quantity".into(),
                    json!({"value": amount, "unit": drug.unit}),
                );
            }
            _ => {}
        }
        order.insert("medication".into(), Value::Object(medication));

        let prescriber = self
            .prescribers
            .choose(&mut self.rng)
            .expect("prescribers exist");
        if self.rng.random_bool(0.7) {
            order.insert(
                "provider".into(),
                json!({"id": prescriber.id, "npi": prescriber.npi}),
            );
        } else {
            order.insert("prescriberId".into(), json!(prescriber.id));
            order.insert("prescriberNpi".into(), json!(prescriber.npi));
        }

        // A preferred pharmacy on some orders.
        if self.rng.random_bool(0.3) {
            let store = self
                .pharmacies
                .choose(&mut self.rng)
                .expect("pharmacies exist");
            order.insert(
                "pharmacy".into(),
                json!({"id": store.id, "name": store.name, "ncpdpId": store.ncpdp_id}),
            );
        }

        let created_field = if self.rng.random_bool(0.7) {
            "createdAt"
        } else {
            "orderDate"
        };
        let created_value = self.timestamp(created);
        order.insert(created_field.into(), created_value);
        match self.rng.random_range(0..4) {
            0 | 1 => {
                let value = self.timestamp(updated);
                order.insert("lastUpdated".into(), value);
            }
            2 => {
                let value = self.timestamp(updated);
                order.insert("updatedAt".into(), value);
            }
            // No update time: only right when the order is unchanged since creation.
            _ if updated == created => {}
            _ => {
                let value = self.timestamp(updated);
                order.insert("lastUpdated".into(), value);
            }
        }
        (order_id, Value::Object(order))
    }

    fn pharmacy_payload(&mut self) -> (String, Value) {
        let (created, updated) = self.next_times();
        let number = 4_000_000 + self.sequence * 7 + self.rng.random_range(0..7);
        let mut order = Map::new();
        // Some pharmacy systems send the prescription number as a JSON integer.
        let (order_id, id_value) = if self.rng.random_bool(0.15) {
            (number.to_string(), json!(number))
        } else {
            let id = format!("RX{number}");
            (id.clone(), json!(id))
        };
        let id_field = if self.rng.random_bool(0.7) {
            "id"
        } else {
            "orderId"
        };
        order.insert(id_field.into(), id_value);

        let patient = self.patient_id();
        if self.rng.random_bool(0.75) {
            order.insert("patientId".into(), json!(patient));
        } else {
            order.insert("patient".into(), json!({"id": patient}));
        }

        let drug = DRUGS.choose(&mut self.rng).expect("DRUGS is not empty");
        let ndc = self.ndc_text(drug);
        let mut medication = Map::new();
        if self.rng.random_bool(0.9) {
            medication.insert("ndc".into(), json!(ndc));
        } else {
            medication.insert("code".into(), json!(ndc));
        }
        let name_field = if self.rng.random_bool(0.8) {
            "name"
        } else {
            "description"
        };
        medication.insert(name_field.into(), json!(drug.generic));
        medication.insert("strength".into(), json!(drug.strength));
        medication.insert("form".into(), json!(drug.form));
        let amount = *drug
            .amounts
            .choose(&mut self.rng)
            .expect("every drug has amounts");
        match self.rng.random_range(0..10) {
            0..7 => {
                order.insert("quantity".into(), json!(amount));
            }
            7 => {
                order.insert(
                    "quantity".into(),
                    json!({"value": amount, "unit": drug.unit}),
                );
            }
            8 => {
                order.insert("quantity".into(), json!(amount.to_string()));
            }
            _ => {
                medication.insert("quantity".into(), json!(amount));
            }
        }
        order.insert("medication".into(), Value::Object(medication));

        let prescriber = self
            .prescribers
            .choose(&mut self.rng)
            .expect("prescribers exist");
        if self.rng.random_bool(0.85) {
            order.insert("prescriberNpi".into(), json!(prescriber.npi));
            if self.rng.random_bool(0.5) {
                order.insert("prescriberId".into(), json!(prescriber.id));
            }
        } else {
            order.insert(
                "provider".into(),
                json!({"id": prescriber.id, "npi": prescriber.npi}),
            );
        }

        if self.rng.random_bool(0.95) {
            let store = self
                .pharmacies
                .choose(&mut self.rng)
                .expect("pharmacies exist");
            let mut pharmacy = Map::new();
            pharmacy.insert("id".into(), json!(store.id));
            pharmacy.insert("name".into(), json!(store.name));
            match self.rng.random_range(0..3) {
                0 => pharmacy.insert("npi".into(), json!(store.npi)),
                1 => pharmacy.insert("ncpdpId".into(), json!(store.ncpdp_id)),
                _ => {
                    pharmacy.insert("npi".into(), json!(store.npi));
                    pharmacy.insert("ncpdpId".into(), json!(store.ncpdp_id))
                }
            };
            order.insert("pharmacy".into(), Value::Object(pharmacy));
        }

        let status = PHARMACY_STATUSES
            .choose_weighted(&mut self.rng, |(_, weight)| *weight)
            .expect("PHARMACY_STATUSES has positive weights")
            .0;
        order.insert("status".into(), json!(status));

        let created_field = if self.rng.random_bool(0.8) {
            "orderDate"
        } else {
            "createdAt"
        };
        let created_value = self.timestamp(created);
        order.insert(created_field.into(), created_value);
        if updated != created || self.rng.random_bool(0.5) {
            let updated_field = if self.rng.random_bool(0.8) {
                "lastUpdated"
            } else {
                "updatedAt"
            };
            let updated_value = self.timestamp(updated);
            order.insert(updated_field.into(), updated_value);
        }
        (order_id, Value::Object(order))
    }

    /// Breaks a well-formed payload in exactly one way.
    fn break_payload(&mut self, payload: &mut Value, malformation: Malformation) {
        let order = payload
            .as_object_mut()
            .expect("generated payloads are objects");
        match malformation {
            // Done on the encoded bytes, in `corrupt_json`.
            Malformation::InvalidJson => {}
            Malformation::MissingOrderId => {
                order.remove("orderId");
                order.remove("id");
            }
            Malformation::MissingPatientId => {
                order.remove("patientId");
                order.remove("patient");
                order.remove("subject");
            }
            Malformation::MissingNdc => {
                let medication = medication_of(order);
                // The drug keeps a name, so only the NDC is missing.
                if let Some(text) = medication
                    .get("code")
                    .and_then(|code| code.get("text"))
                    .cloned()
                {
                    medication.insert("name".into(), text);
                }
                medication.remove("ndc");
                medication.remove("code");
            }
            Malformation::MalformedNdc => {
                // Ten digits without hyphens: which segment needs padding is unknowable.
                let drug = DRUGS.choose(&mut self.rng).expect("DRUGS is not empty");
                medication_of(order).insert("ndc".into(), json!(drug.ndc.concat()));
            }
            Malformation::BadNpiCheckDigit => {
                let npi_slot = if order.contains_key("prescriberNpi") {
                    order.get_mut("prescriberNpi")
                } else {
                    order
                        .get_mut("provider")
                        .and_then(|provider| provider.get_mut("npi"))
                };
                let npi_slot = npi_slot.expect("generated payloads name a prescriber NPI");
                let npi = npi_slot
                    .as_str()
                    .expect("generated NPIs are strings")
                    .to_string();
                let check = npi.as_bytes()[9] - b'0';
                let wrong = (check + self.rng.random_range(1..10)) % 10;
                *npi_slot = json!(format!("{}{wrong}", &npi[..9]));
            }
            Malformation::UnknownStatus => {
                let status = *UNKNOWN_STATUSES
                    .choose(&mut self.rng)
                    .expect("UNKNOWN_STATUSES is not empty");
                order.insert("status".into(), json!(status));
            }
            Malformation::MissingPrescriber => {
                order.remove("prescriberNpi");
                order.remove("prescriberId");
                order.remove("provider");
            }
        }
    }

    /// Makes encoded JSON unparseable in a way a buggy producer would: a key/value separator
    /// written as `=`, or a trailing comma. Both are syntax errors, not truncation.
    fn corrupt_json(&mut self, bytes: &mut Vec<u8>) {
        if self.rng.random_bool(0.5) {
            let separator = bytes
                .windows(2)
                .position(|pair| pair == b"\":")
                .expect("an encoded object has a key");
            bytes[separator + 1] = b'=';
        } else {
            let closing = bytes.len() - 1;
            bytes.insert(closing, b',');
        }
    }
}

fn medication_of(order: &mut Map<String, Value>) -> &mut Map<String, Value> {
    order
        .get_mut("medication")
        .and_then(Value::as_object_mut)
        .expect("generated payloads have a medication object")
}

/// A random NPI with a valid check digit; first digit 1 or 2 as issued NPIs have.
fn random_npi(rng: &mut StdRng) -> String {
    let first9 = format!(
        "{}{:08}",
        rng.random_range(1..=2),
        rng.random_range(0..100_000_000)
    );
    let check = npi_check_digit(&first9);
    format!("{first9}{check}")
}
