//! Enrichment: canonical medication orders joined with drug reference data and the
//! patient's formulary status.
//!
//! This folder holds the reference-data side:
//! * [`reference`]: the record types ([`DrugReference`], [`FormularyEntry`],
//!   [`PatientCoverage`]) and their keys;
//! * [`file_lookup`]: [`FileLookup`], the embedded default (JSON-lines files) when no
//!   `mongodb.uri` is configured;
//! * [`reference_generator`]: deterministic reference data for the order generator's
//!   drugs and patients.

mod drug_classes;
pub mod file_lookup;
pub mod reference;
pub mod reference_generator;

pub use file_lookup::{FileLookup, ReferenceFileError, read_json_lines};
pub use reference::{
    DeaSchedule, DrugReference, FormularyEntry, FormularyKey, FormularyStatus, PatientCoverage,
    QuantityLimit, ReferenceRecord,
};
pub use reference_generator::{ReferenceData, ReferenceGenerator};
