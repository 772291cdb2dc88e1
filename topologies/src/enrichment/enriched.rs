//! The enriched medication order: the canonical order, with what enrichment found and, for
//! each part it did not find, why.
//!
//! [`MedicationOrderEnriched`] mirrors `schemas/medication_order_enriched.avsc` field for
//! field, as [`crate::canonical`] mirrors the canonical order: Rust types named as their
//! Avro records and enums, camelCase fields, `Option` for `["null", T]`. The schema's
//! `order` field is the canonical schema itself (a test holds the two together), so the
//! `.avsc` file stands alone for the platform's consumers.

use std::sync::LazyLock;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use super::reference::{self, DeaSchedule, DrugReference, FormularyEntry, PatientCoverage};
use crate::canonical::MedicationOrder;

/// The enriched order's Avro schema, as registered under
/// `canonical.medication-orders.enriched-value`.
pub const SCHEMA_JSON: &str = include_str!("../schemas/medication_order_enriched.avsc");

/// The parsed schema; the file is compiled in, so a parse failure is a build defect.
pub fn schema() -> &'static Schema {
    static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
        Schema::parse_str(SCHEMA_JSON)
            .expect("schemas/medication_order_enriched.avsc is a valid Avro schema")
    });
    &SCHEMA
}

/// A canonical order with its drug reference and formulary status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MedicationOrderEnriched {
    pub order: MedicationOrder,
    /// `None` when the NDC is not in the reference.
    pub drug: Option<DrugDetails>,
    /// `None` when the patient has no coverage on record.
    pub coverage: Option<Coverage>,
    /// `None` unless the coverage was in force on the order's date and the plan lists
    /// the product.
    pub formulary: Option<Formulary>,
    pub enrichment_status: EnrichmentStatus,
}

/// The drug reference of the order's NDC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrugDetails {
    pub gpi: String,
    pub drug_class: String,
    pub generic_name: String,
    pub brand_name: Option<String>,
    pub manufacturer: String,
    pub controlled: bool,
    pub schedule: Option<DeaSchedule>,
    pub average_wholesale_price: f64,
    pub alternatives: Vec<String>,
}

impl From<DrugReference> for DrugDetails {
    fn from(drug: DrugReference) -> Self {
        Self {
            gpi: drug.gpi,
            drug_class: drug.drug_class,
            generic_name: drug.generic_name,
            brand_name: drug.brand_name,
            manufacturer: drug.manufacturer,
            controlled: drug.controlled,
            schedule: drug.schedule,
            average_wholesale_price: drug.average_wholesale_price,
            alternatives: drug.alternatives,
        }
    }
}

/// The patient's pharmacy coverage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    pub payer_id: String,
    pub plan_id: String,
    pub member_id: String,
    pub effective_date: String,
    pub termination_date: Option<String>,
}

impl From<PatientCoverage> for Coverage {
    fn from(coverage: PatientCoverage) -> Self {
        Self {
            payer_id: coverage.payer_id,
            plan_id: coverage.plan_id,
            member_id: coverage.member_id,
            effective_date: coverage.effective_date,
            termination_date: coverage.termination_date,
        }
    }
}

/// How the patient's plan covers the product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Formulary {
    pub plan_id: String,
    pub tier: Option<i32>,
    pub status: FormularyStanding,
    pub prior_auth_required: bool,
    pub step_therapy: bool,
    pub quantity_limit: Option<QuantityLimit>,
}

impl From<FormularyEntry> for Formulary {
    fn from(row: FormularyEntry) -> Self {
        Self {
            plan_id: row.plan_id,
            tier: row.tier.map(i32::from),
            status: row.status.into(),
            prior_auth_required: row.prior_auth_required,
            step_therapy: row.step_therapy,
            quantity_limit: row.quantity_limit.map(|limit| QuantityLimit {
                // Generated and loaded limits are small; saturate rather than wrap.
                quantity: i32::try_from(limit.quantity).unwrap_or(i32::MAX),
                days: i32::try_from(limit.days).unwrap_or(i32::MAX),
            }),
        }
    }
}

/// A plan's stance on a product (the Avro enum `FormularyStanding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FormularyStanding {
    Preferred,
    NonPreferred,
    Specialty,
    NotCovered,
}

impl From<reference::FormularyStatus> for FormularyStanding {
    fn from(status: reference::FormularyStatus) -> Self {
        match status {
            reference::FormularyStatus::Preferred => FormularyStanding::Preferred,
            reference::FormularyStatus::NonPreferred => FormularyStanding::NonPreferred,
            reference::FormularyStatus::Specialty => FormularyStanding::Specialty,
            reference::FormularyStatus::NotCovered => FormularyStanding::NotCovered,
        }
    }
}

/// At most `quantity` units per `days` days (Avro ints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantityLimit {
    pub quantity: i32,
    pub days: i32,
}

/// What enrichment found, part by part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrichmentStatus {
    pub drug_reference: DrugReferenceStatus,
    pub formulary: FormularyLookupStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DrugReferenceStatus {
    Found,
    NdcNotInReference,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FormularyLookupStatus {
    Found,
    /// The patient has no coverage on record.
    NoCoverage,
    /// The order's date is outside the patient's coverage.
    CoverageNotInForce,
    /// The plan has no row for the product.
    NotOnFormulary,
}

#[cfg(test)]
mod tests {
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;

    use super::*;
    use crate::canonical;

    fn order() -> MedicationOrder {
        let sample = crate::generator::OrderGenerator::new(3)
            .with_malformed_ratio(0.0)
            .next_ehr();
        crate::normalize::from_ehr(&serde_json::from_slice(&sample.value).unwrap()).unwrap()
    }

    #[test]
    fn the_order_field_is_the_canonical_schema() {
        let Schema::Record(record) = schema() else {
            panic!("top level is not a record");
        };
        let order = record.fields.iter().find(|f| f.name == "order").unwrap();
        assert_eq!(
            order.schema.canonical_form(),
            canonical::schema().canonical_form()
        );
    }

    #[test]
    fn a_fully_enriched_order_round_trips_through_avro_on_the_fast_path() {
        let enriched = MedicationOrderEnriched {
            order: order(),
            drug: Some(DrugDetails {
                gpi: "39400010100310".into(),
                drug_class: "HMG-CoA reductase inhibitors".into(),
                generic_name: "atorvastatin".into(),
                brand_name: Some("Lipitor".into()),
                manufacturer: "Example Pharma".into(),
                controlled: true,
                schedule: Some(DeaSchedule::C4),
                average_wholesale_price: 1.25,
                alternatives: vec!["00071015523".into()],
            }),
            coverage: Some(Coverage {
                payer_id: "payer-1".into(),
                plan_id: "plan-gold".into(),
                member_id: "m-1".into(),
                effective_date: "2026-01-01".into(),
                termination_date: None,
            }),
            formulary: Some(Formulary {
                plan_id: "plan-gold".into(),
                tier: Some(2),
                status: FormularyStanding::NonPreferred,
                prior_auth_required: true,
                step_therapy: false,
                quantity_limit: Some(QuantityLimit {
                    quantity: 30,
                    days: 30,
                }),
            }),
            enrichment_status: EnrichmentStatus {
                drug_reference: DrugReferenceStatus::Found,
                formulary: FormularyLookupStatus::Found,
            },
        };
        let bytes = GenericDatumWriter::builder(schema())
            .build()
            .unwrap()
            .write_ser_to_vec(&enriched)
            .unwrap();
        let mut slice = bytes.as_slice();
        let read: MedicationOrderEnriched = GenericDatumReader::builder(schema())
            .build()
            .unwrap()
            .read_deser(&mut slice)
            .unwrap();
        assert!(slice.is_empty());
        assert_eq!(read, enriched);
    }
}
