//! The reference data orders are enriched with: drug reference by NDC, formulary status by
//! (plan, NDC), and each patient's coverage.
//!
//! Field names are camelCase in JSON lines, in MongoDB (`reference.drug_reference`,
//! `reference.formulary`) and in the coverage topic. An absent optional field is `null`
//! (never an empty string or a zero standing in for "unknown").

use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The MongoDB database of the reference data.
pub const DATABASE: &str = "reference";
/// Drug reference documents, unique by `ndc`.
pub const DRUG_COLLECTION: &str = "drug_reference";
/// Formulary rows, unique by (`planId`, `ndc`).
pub const FORMULARY_COLLECTION: &str = "formulary";

/// A kind of reference record: what identifies it and what makes it valid.
pub trait ReferenceRecord: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// What a lookup asks by.
    type Key: Hash + Eq + Clone + Serialize + Send + Sync + 'static;
    /// The serialized fields that make up the key, for filters and unique indexes.
    const KEY_FIELDS: &'static [&'static str];
    /// What one record is called in messages ("drug reference").
    const KIND: &'static str;

    fn key(&self) -> Self::Key;

    /// Checks what serde cannot: formats and consistency. The message names the field and
    /// the rule, never the value.
    fn check(&self) -> Result<(), String>;
}

/// What a reference source knows of one product, by its 11-digit NDC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrugReference {
    /// 11 digits (5-4-2 without hyphens), as normalization writes `medication.ndc`.
    pub ndc: String,
    /// Generic Product Identifier: 14 digits, from therapeutic group down to strength.
    pub gpi: String,
    pub drug_class: String,
    pub generic_name: String,
    /// `None` for a product sold under its generic name only.
    pub brand_name: Option<String>,
    pub manufacturer: String,
    /// A DEA-controlled substance; `schedule` says which schedule.
    pub controlled: bool,
    pub schedule: Option<DeaSchedule>,
    /// Average wholesale price, US dollars per billing unit (tablet, capsule, mL, ...).
    pub average_wholesale_price: f64,
    /// NDCs of therapeutic alternatives, best first.
    pub alternatives: Vec<String>,
}

/// The DEA schedule of a controlled substance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeaSchedule {
    #[serde(rename = "CII")]
    C2,
    #[serde(rename = "CIII")]
    C3,
    #[serde(rename = "CIV")]
    C4,
    #[serde(rename = "CV")]
    C5,
}

impl ReferenceRecord for DrugReference {
    type Key = String;
    const KEY_FIELDS: &'static [&'static str] = &["ndc"];
    const KIND: &'static str = "drug reference";

    fn key(&self) -> String {
        self.ndc.clone()
    }

    fn check(&self) -> Result<(), String> {
        check_ndc("ndc", &self.ndc)?;
        if !(self.gpi.len() == 14 && self.gpi.bytes().all(|b| b.is_ascii_digit())) {
            return Err("gpi must be 14 digits".into());
        }
        if self.controlled != self.schedule.is_some() {
            return Err("schedule must be set exactly when controlled is true".into());
        }
        if !(self.average_wholesale_price.is_finite() && self.average_wholesale_price >= 0.0) {
            return Err("averageWholesalePrice must be a non-negative number".into());
        }
        for (i, alternative) in self.alternatives.iter().enumerate() {
            check_ndc(&format!("alternatives[{i}]"), alternative)?;
        }
        Ok(())
    }
}

/// How a plan covers one product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FormularyEntry {
    pub plan_id: String,
    /// 11 digits, as in [`DrugReference::ndc`].
    pub ndc: String,
    /// Cost-sharing tier, 1 (lowest copay) to 6; `None` when the product is not covered.
    pub tier: Option<u8>,
    pub status: FormularyStatus,
    pub prior_auth_required: bool,
    /// The plan covers it only after a first-line drug was tried.
    pub step_therapy: bool,
    pub quantity_limit: Option<QuantityLimit>,
}

/// A plan's stance on a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormularyStatus {
    Preferred,
    NonPreferred,
    /// Covered through the specialty pharmacy benefit (high cost, special handling).
    Specialty,
    /// Listed, and excluded: the plan pays nothing.
    NotCovered,
}

/// At most `quantity` units per `days` days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuantityLimit {
    pub quantity: u32,
    pub days: u32,
}

/// What a formulary row is looked up by. Serialized camelCase it is the MongoDB filter
/// `{planId, ndc}`, which the unique index `planId_1_ndc_1` serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FormularyKey {
    pub plan_id: String,
    pub ndc: String,
}

impl ReferenceRecord for FormularyEntry {
    type Key = FormularyKey;
    const KEY_FIELDS: &'static [&'static str] = &["planId", "ndc"];
    const KIND: &'static str = "formulary row";

    fn key(&self) -> FormularyKey {
        FormularyKey {
            plan_id: self.plan_id.clone(),
            ndc: self.ndc.clone(),
        }
    }

    fn check(&self) -> Result<(), String> {
        check_ndc("ndc", &self.ndc)?;
        if self.plan_id.is_empty() {
            return Err("planId must not be empty".into());
        }
        match (self.status, self.tier) {
            (FormularyStatus::NotCovered, Some(_)) => {
                Err("tier must be null when status is not-covered".into())
            }
            (FormularyStatus::NotCovered, None) => Ok(()),
            (_, None) => Err("tier is required unless status is not-covered".into()),
            (_, Some(tier)) if !(1..=6).contains(&tier) => Err("tier must be from 1 to 6".into()),
            _ => Ok(()),
        }
    }
}

/// A patient's pharmacy coverage: the value of the compacted topic
/// `reference.patient-coverage`, keyed by `patientId`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientCoverage {
    pub patient_id: String,
    pub payer_id: String,
    /// The plan whose formulary applies: [`FormularyEntry::plan_id`].
    pub plan_id: String,
    pub member_id: String,
    /// First day covered, `YYYY-MM-DD`.
    pub effective_date: String,
    /// Last day covered, `YYYY-MM-DD`; `None` while the coverage is open-ended.
    pub termination_date: Option<String>,
}

impl PatientCoverage {
    /// Whether the coverage is in force on `date` (`YYYY-MM-DD`; ISO dates order as
    /// strings do).
    pub fn covers(&self, date: &str) -> bool {
        self.effective_date.as_str() <= date
            && self
                .termination_date
                .as_deref()
                .is_none_or(|last| date <= last)
    }
}

impl ReferenceRecord for PatientCoverage {
    type Key = String;
    const KEY_FIELDS: &'static [&'static str] = &["patientId"];
    const KIND: &'static str = "patient coverage";

    fn key(&self) -> String {
        self.patient_id.clone()
    }

    fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("patientId", &self.patient_id),
            ("payerId", &self.payer_id),
            ("planId", &self.plan_id),
            ("memberId", &self.member_id),
        ] {
            if value.is_empty() {
                return Err(format!("{field} must not be empty"));
            }
        }
        check_date("effectiveDate", &self.effective_date)?;
        if let Some(last) = &self.termination_date {
            check_date("terminationDate", last)?;
            if last < &self.effective_date {
                return Err("terminationDate must not be before effectiveDate".into());
            }
        }
        Ok(())
    }
}

fn check_ndc(field: &str, ndc: &str) -> Result<(), String> {
    if ndc.len() == 11 && ndc.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("{field} must be an 11-digit NDC without hyphens"))
    }
}

fn check_date(field: &str, date: &str) -> Result<(), String> {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map(|_| ())
        .map_err(|_| format!("{field} must be a date YYYY-MM-DD"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn drug() -> DrugReference {
        DrugReference {
            ndc: "60214410090".into(),
            gpi: "39400010100320".into(),
            drug_class: "HMG-CoA reductase inhibitors".into(),
            generic_name: "Atorvastatin Calcium".into(),
            brand_name: Some("Lipitor".into()),
            manufacturer: "Example Labs".into(),
            controlled: false,
            schedule: None,
            average_wholesale_price: 0.4125,
            alternatives: vec!["63304078490".into()],
        }
    }

    #[test]
    fn drug_reference_is_camel_case_with_nulls_for_absent_fields() {
        let value = serde_json::to_value(DrugReference {
            brand_name: None,
            ..drug()
        })
        .unwrap();
        assert_eq!(value["drugClass"], "HMG-CoA reductase inhibitors");
        assert_eq!(value["averageWholesalePrice"], 0.4125);
        assert_eq!(value["brandName"], serde_json::Value::Null);
        assert_eq!(value["schedule"], serde_json::Value::Null);
        let back: DrugReference = serde_json::from_value(value).unwrap();
        assert_eq!(back.brand_name, None);
    }

    #[test]
    fn a_controlled_drug_needs_its_schedule_and_only_then() {
        let oxycodone = DrugReference {
            controlled: true,
            schedule: Some(DeaSchedule::C2),
            ..drug()
        };
        assert_eq!(oxycodone.check(), Ok(()));
        assert_eq!(serde_json::to_value(oxycodone.schedule).unwrap(), "CII");
        let unscheduled = DrugReference {
            schedule: None,
            ..oxycodone
        };
        assert!(unscheduled.check().unwrap_err().contains("schedule"));
    }

    #[test]
    fn a_malformed_ndc_or_gpi_is_refused_without_quoting_it() {
        let bad = DrugReference {
            ndc: "0071-0155-23".into(),
            ..drug()
        };
        let e = bad.check().unwrap_err();
        assert_eq!(e, "ndc must be an 11-digit NDC without hyphens");
        let bad = DrugReference {
            alternatives: vec!["123".into()],
            ..drug()
        };
        assert!(bad.check().unwrap_err().starts_with("alternatives[0]"));
        let bad = DrugReference {
            gpi: "3940".into(),
            ..drug()
        };
        assert!(bad.check().unwrap_err().starts_with("gpi"));
    }

    #[test]
    fn formulary_status_is_kebab_case_and_not_covered_has_no_tier() {
        let row: FormularyEntry = serde_json::from_value(json!({
            "planId": "PLAN-MEDD-BASIC", "ndc": "60214410090", "tier": null,
            "status": "not-covered", "priorAuthRequired": false, "stepTherapy": false,
            "quantityLimit": null
        }))
        .unwrap();
        assert_eq!(row.status, FormularyStatus::NotCovered);
        assert_eq!(row.check(), Ok(()));
        let tiered = FormularyEntry {
            tier: Some(2),
            ..row.clone()
        };
        assert!(tiered.check().is_err());
        let preferred = FormularyEntry {
            status: FormularyStatus::Preferred,
            ..row
        };
        assert!(preferred.check().unwrap_err().contains("tier is required"));
    }

    #[test]
    fn the_formulary_key_serializes_as_the_mongodb_filter() {
        let key = FormularyKey {
            plan_id: "PLAN-A".into(),
            ndc: "60214410090".into(),
        };
        assert_eq!(
            serde_json::to_value(&key).unwrap(),
            json!({"planId": "PLAN-A", "ndc": "60214410090"})
        );
    }

    #[test]
    fn coverage_is_in_force_from_its_effective_date_through_its_termination_date() {
        let coverage = PatientCoverage {
            patient_id: "pt-00001".into(),
            payer_id: "PAYER-1".into(),
            plan_id: "PLAN-A".into(),
            member_id: "M1".into(),
            effective_date: "2024-01-01".into(),
            termination_date: Some("2024-06-30".into()),
        };
        assert_eq!(coverage.check(), Ok(()));
        assert!(!coverage.covers("2023-12-31"));
        assert!(coverage.covers("2024-01-01"));
        assert!(coverage.covers("2024-06-30"));
        assert!(!coverage.covers("2024-07-01"));
        let open = PatientCoverage {
            termination_date: None,
            ..coverage.clone()
        };
        assert!(open.covers("2031-01-01"));
        let backwards = PatientCoverage {
            termination_date: Some("2023-01-01".into()),
            ..coverage
        };
        assert!(backwards.check().unwrap_err().contains("terminationDate"));
    }
}
