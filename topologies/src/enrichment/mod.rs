//! Enrichment: canonical medication orders joined with drug reference data and the
//! patient's formulary status.
//!
//! * [`topology`]: the `enrichment` topology, and its configuration keys;
//! * [`enriched`]: what it writes, [`MedicationOrderEnriched`], after its `.avsc`.
//!
//! The reference-data side:
//! * [`reference`](mod@reference): the record types ([`DrugReference`], [`FormularyEntry`],
//!   [`PatientCoverage`]) and their keys;
//! * [`file_lookup`]: [`FileLookup`], the embedded default (JSON-lines files) when no
//!   `mongodb.uri` is configured;
//! * [`reference_store`]: the same lookups against MongoDB, and the load behind
//!   `sluice reference load`;
//! * [`reference_generator`]: deterministic reference data for the order generator's
//!   drugs and patients (`sluice reference generate`);
//! * [`sources`]: [`reference_lookups`], MongoDB or the files, picked by whether
//!   `mongodb.uri` is configured;
//! * [`coverage_topic`]: patient coverage onto the compacted topic the enrichment joins.
//!
//! Both sources implement `sluice_engine::lookup::Lookup` with the same key and value
//! types, so the topology takes either (or a `BoxLookup` of either) behind its cache.

pub mod coverage_topic;
mod drug_classes;
pub mod enriched;
pub mod file_lookup;
pub mod reference;
pub mod reference_generator;
pub mod reference_store;
pub mod sources;
pub mod topology;

pub use coverage_topic::{COVERAGE_TOPIC, PublishError, publish_coverage};
pub use enriched::MedicationOrderEnriched;
pub use file_lookup::{FileLookup, ReferenceFileError, read_json_lines};
pub use reference::{
    DeaSchedule, DrugReference, FormularyEntry, FormularyKey, FormularyStatus, PatientCoverage,
    QuantityLimit, ReferenceRecord,
};
pub use reference_generator::{ReferenceData, ReferenceGenerator};
pub use reference_store::{
    LoadError, LoadReport, drug_reference_lookup, formulary_lookup, load_reference,
};
pub use sources::{ReferenceLookups, ReferenceSource, ReferenceSourceError, reference_lookups};
