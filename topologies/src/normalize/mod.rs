//! Maps the external medication-order feeds onto the canonical [`MedicationOrder`].
//!
//! Pure functions, no I/O: [`from_ehr`] for `external.ehr.medication-orders` (FHIR-flavoured
//! JSON) and [`from_pharmacy`] for `external.pharmacy.prescriptions` (flat JSON). Both read
//! the same field alternatives (those of the platform's integration guide), so a producer
//! that switches spelling never breaks the mapping; the entry point only decides
//! `sourceSystem`.
//!
//! | canonical field     | read from, first present wins                                      |
//! |---------------------|--------------------------------------------------------------------|
//! | `orderId`           | `orderId`, `id`                                                    |
//! | `patientId`         | `patientId`, `patient.id`, `subject.reference` (`Patient/{id}`)    |
//! | `medication.ndc`    | `medication.ndc`, `medication.code` (a string, or a CodeableConcept with an NDC coding) |
//! | `medication.name`   | `medication.name`, `medication.description`, `medication.code.text` |
//! | `medication.strength`, `.form` | `medication.strength`, `medication.form` (string or CodeableConcept text) |
//! | `quantity`          | `quantity`, `medication.quantity` (number, numeric string, or `{value, unit}`) |
//! | `prescriber.id`     | `prescriberId`, `provider.id`                                      |
//! | `prescriber.npi`    | `prescriberNpi`, `provider.npi`                                    |
//! | `pharmacy`          | `pharmacy` {`id`, `name`, `npi`, `ncpdpId`}                       |
//! | `status`            | `status` (FHIR or pharmacy vocabulary, any case)                   |
//! | `createdAt`         | `createdAt`, `orderDate` (RFC 3339 or epoch milliseconds)          |
//! | `updatedAt`         | `updatedAt`, `lastUpdated`; else `createdAt`                       |
//!
//! Decisions:
//! * JSON null and blank strings count as absent, so the next alternative is tried.
//! * A present value that breaks its rule is an error; it does not fall through to the next
//!   alternative, because two disagreeing spellings in one payload are a producer bug to see.
//! * `updatedAt` falls back to `createdAt`: a feed that sends only an order date is reporting
//!   an order as written, and [`change_type`] then calls it `CREATED`.
//! * `patientId` is required: every medication order is for a patient, and enrichment and
//!   patient notifications downstream key on it.
//! * Optional identifiers (`pharmacy.npi`, `pharmacy.ncpdpId`) are validated when present, so a
//!   malformed identifier never reaches the canonical topic.
//! * Timestamps are RFC 3339 strings or integer epoch milliseconds. Date-only strings are
//!   refused (their time zone is unknowable), and so are integers before 1973, which are
//!   almost surely epoch seconds that would otherwise date the order in January 1970.
//! * A quantity must be greater than zero; numeric strings are accepted for it.
//!
//! Every error is [`ErrorKind::Validation`](sluice_engine::ErrorKind) and its message names the
//! canonical field, the rule and the input field it was read from, never the value: the
//! message goes into dead-letter headers and logs, and the values are patient data.

mod feed;
mod input;

use serde_json::Value;
use sluice_engine::{Headers, ProcessError};

use crate::canonical::{
    ChangeType, Medication, MedicationOrder, OrderStatus, Pharmacy, Prescriber, Quantity,
    SourceSystem,
};
pub use feed::{FeedOrder, OrderFeedSerde};
use input::{Loose, OrderInput, Path};

/// Header naming the source system (`ehr`, `pharmacy`) of a canonical record.
pub const HEADER_SOURCE_SYSTEM: &str = "source-system";
/// Header naming the kind of event: [`EVENT_TYPE`] for every canonical record.
pub const HEADER_EVENT_TYPE: &str = "event-type";
/// Header saying what happened to the order: `created`, `updated` or `cancelled` (see
/// [`change_type`]); the value carries it too, as `changeType`.
pub const HEADER_CHANGE_TYPE: &str = "change-type";

/// The `event-type` of canonical medication orders, as the platform's integration guide
/// names it.
pub const EVENT_TYPE: &str = "medication-order";

/// FHIR code systems that identify an NDC coding: the FHIR URI and the HL7 OID.
const NDC_SYSTEMS: [&str; 2] = [
    "http://hl7.org/fhir/sid/ndc",
    "urn:oid:2.16.840.1.113883.6.69",
];

const NDC_RULE: &str =
    "must be an 11-digit NDC or a hyphenated 10-digit NDC in 4-4-2, 5-3-2 or 5-4-1 form";
const NPI_LENGTH_RULE: &str = "must be 10 digits";
const NPI_CHECK_RULE: &str = "fails the NPI check digit (Luhn) rule";
const STATUS_RULE: &str = "not a recognised FHIR or pharmacy order status";
const TIMESTAMP_RULE: &str = "must be an RFC 3339 timestamp or epoch milliseconds";
/// Epoch milliseconds below this (1973-03-03) are almost surely epoch *seconds*; reading them
/// as milliseconds would silently date the order in January 1970.
const MIN_EPOCH_MILLIS: i64 = 100_000_000_000;

/// Normalises a payload of `external.ehr.medication-orders` that is already parsed.
///
/// The topology does not come this way: it decodes each record's bytes straight into the
/// fields it reads ([`OrderFeedSerde`]). This re-encodes `payload` and takes the same path,
/// for callers (tests, benches, tools) that hold a `serde_json::Value`.
pub fn from_ehr(payload: &Value) -> Result<MedicationOrder, ProcessError> {
    from_value(payload, SourceSystem::Ehr)
}

/// Normalises a payload of `external.pharmacy.prescriptions` that is already parsed; see
/// [`from_ehr`].
pub fn from_pharmacy(payload: &Value) -> Result<MedicationOrder, ProcessError> {
    from_value(payload, SourceSystem::Pharmacy)
}

fn from_value(
    payload: &Value,
    source_system: SourceSystem,
) -> Result<MedicationOrder, ProcessError> {
    if !payload.is_object() {
        return normalize(None, source_system);
    }
    let text = serde_json::to_string(payload).expect("a serde_json::Value always encodes");
    let input = OrderInput::from_json(&text)
        .map_err(|e| ProcessError::validation(sluice_engine::serde::describe_json_error(&e)))?;
    normalize(Some(&input), source_system)
}

/// What happened to an order: cancellations first (a consumer acting on them must see one
/// even when the order was cancelled in the same instant it was written), then created
/// when the source reported no change since writing, else updated.
pub fn change_type(status: OrderStatus, created_at: i64, updated_at: i64) -> ChangeType {
    if status == OrderStatus::Cancelled {
        ChangeType::Cancelled
    } else if created_at == updated_at {
        ChangeType::Created
    } else {
        ChangeType::Updated
    }
}

/// Sets the `source-system`, `event-type` and `change-type` headers of a canonical record.
pub fn set_headers(order: &MedicationOrder, headers: &mut Headers) {
    headers.insert(HEADER_SOURCE_SYSTEM, order.source_system.header_value());
    headers.insert(HEADER_EVENT_TYPE, EVENT_TYPE);
    let change = order
        .change_type
        .unwrap_or_else(|| change_type(order.status, order.created_at, order.updated_at));
    headers.insert(HEADER_CHANGE_TYPE, change.header_value());
}

/// The NPI check digit for the first nine digits of an NPI.
///
/// The NPI is an ISO/IEC 7812 card number under the health-industry prefix `80840`, so its
/// check digit is the Luhn check digit of `80840` followed by the nine digits.
///
/// # Panics
/// If `first9` is not exactly nine ASCII digits (a caller bug: validate first).
pub fn npi_check_digit(first9: &str) -> u8 {
    assert!(
        first9.len() == 9 && first9.bytes().all(|b| b.is_ascii_digit()),
        "an NPI check digit is computed over exactly 9 digits"
    );
    let payload = b"80840".iter().chain(first9.as_bytes());
    // Luhn: walking from the rightmost payload digit, double every second digit starting
    // with that one (the check digit will sit to its right), summing the digits of products.
    let sum: u32 = payload
        .rev()
        .enumerate()
        .map(|(position, byte)| {
            let digit = u32::from(byte - b'0');
            if position % 2 == 0 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Whether `npi` is 10 ASCII digits whose last is the check digit of the first nine.
pub fn is_valid_npi(npi: &str) -> bool {
    npi.len() == 10
        && npi.bytes().all(|b| b.is_ascii_digit())
        && npi_check_digit(&npi[..9]) == npi.as_bytes()[9] - b'0'
}

/// An NDC as 11 digits (5-4-2) without hyphens, or `None` when `raw` is not an NDC.
///
/// Accepts an optional `NDC` prefix (`NDC:`, `NDC `), 11 bare digits, hyphenated 5-4-2, and the
/// hyphenated 10-digit forms 4-4-2, 5-3-2 and 5-4-1, whose short segment gets a leading zero.
/// Ten bare digits are refused: without hyphens nobody can tell which segment is short.
pub fn normalize_ndc(raw: &str) -> Option<String> {
    let mut text = trim(raw);
    if text
        .get(..3)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("ndc"))
    {
        text = text[3..].trim_start_matches(|c: char| c == ':' || c.is_whitespace());
    }
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !text.contains('-') {
        return (text.len() == 11 && all_digits(text)).then(|| text.to_string());
    }
    let mut segments = text.split('-');
    let (Some(labeler), Some(product), Some(package), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return None;
    };
    if !(all_digits(labeler) && all_digits(product) && all_digits(package)) {
        return None;
    }
    // Which segment is one digit short, if any.
    let short = match (labeler.len(), product.len(), package.len()) {
        (5, 4, 2) => None,
        (4, 4, 2) => Some(0),
        (5, 3, 2) => Some(1),
        (5, 4, 1) => Some(2),
        _ => return None,
    };
    let mut ndc = String::with_capacity(11);
    for (index, segment) in [labeler, product, package].into_iter().enumerate() {
        if short == Some(index) {
            ndc.push('0');
        }
        ndc.push_str(segment);
    }
    Some(ndc)
}

/// `text` without leading and trailing whitespace, as `str::trim` gives it; checks the two
/// ends first, because the feeds' values are almost never padded and `trim` walks chars.
fn trim(text: &str) -> &str {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => text,
        _ => text.trim(),
    }
}

/// One canonical field and the input paths it may be read from, in order of preference.
struct Field {
    canonical: &'static str,
    inputs: &'static [Path],
}

const ORDER_ID: Field = Field {
    canonical: "orderId",
    inputs: &[Path::OrderId, Path::Id],
};
const PATIENT_ID: Field = Field {
    canonical: "patientId",
    inputs: &[Path::PatientId, Path::PatientMemberId],
};
const NDC: Field = Field {
    canonical: "medication.ndc",
    inputs: &[Path::MedicationNdc, Path::MedicationCode],
};
const MEDICATION_NAME: Field = Field {
    canonical: "medication.name",
    inputs: &[
        Path::MedicationName,
        Path::MedicationDescription,
        Path::MedicationCodeText,
    ],
};
const STRENGTH: Field = Field {
    canonical: "medication.strength",
    inputs: &[Path::MedicationStrength],
};
const FORM: Field = Field {
    canonical: "medication.form",
    inputs: &[Path::MedicationForm],
};
const QUANTITY: Field = Field {
    canonical: "quantity",
    inputs: &[Path::Quantity, Path::MedicationQuantity],
};
const PRESCRIBER_ID: Field = Field {
    canonical: "prescriber.id",
    inputs: &[Path::PrescriberId, Path::ProviderId],
};
const PRESCRIBER_NPI: Field = Field {
    canonical: "prescriber.npi",
    inputs: &[Path::PrescriberNpi, Path::ProviderNpi],
};
const PHARMACY_ID: Field = Field {
    canonical: "pharmacy.id",
    inputs: &[Path::PharmacyId],
};
const PHARMACY_NAME: Field = Field {
    canonical: "pharmacy.name",
    inputs: &[Path::PharmacyName],
};
const PHARMACY_NPI: Field = Field {
    canonical: "pharmacy.npi",
    inputs: &[Path::PharmacyNpi],
};
const PHARMACY_NCPDP_ID: Field = Field {
    canonical: "pharmacy.ncpdpId",
    inputs: &[Path::PharmacyNcpdpId],
};
const STATUS: Field = Field {
    canonical: "status",
    inputs: &[Path::Status],
};
const CREATED_AT: Field = Field {
    canonical: "createdAt",
    inputs: &[Path::CreatedAt, Path::OrderDate],
};
const UPDATED_AT: Field = Field {
    canonical: "updatedAt",
    inputs: &[Path::UpdatedAt, Path::LastUpdated],
};

/// Maps a decoded payload; `None` is a payload that is not a JSON object.
fn normalize(
    input: Option<&OrderInput>,
    source_system: SourceSystem,
) -> Result<MedicationOrder, ProcessError> {
    let Some(input) = input else {
        return Err(ProcessError::validation(
            "the medication order payload must be a JSON object",
        ));
    };
    // Fields are checked in schema order, so a payload missing several reports the same
    // first one every time.
    let order_id = required(input, &ORDER_ID, identifier)?;
    let patient_id = patient_id(input)?;
    let medication = Medication {
        ndc: ndc(input)?,
        name: required(input, &MEDICATION_NAME, string)?,
        strength: optional(input, &STRENGTH, string)?,
        form: optional(input, &FORM, |value| form(input, value))?,
    };
    let quantity = optional_at(input, &QUANTITY, |path, value| quantity(input, path, value))?;
    let prescriber = Prescriber {
        id: optional(input, &PRESCRIBER_ID, identifier)?,
        npi: required(input, &PRESCRIBER_NPI, npi)?,
    };
    let pharmacy = pharmacy(input)?;
    let status = required(input, &STATUS, status)?;
    let created_at = required(input, &CREATED_AT, timestamp)?;
    let updated_at = optional(input, &UPDATED_AT, timestamp)?.unwrap_or(created_at);
    Ok(MedicationOrder {
        order_id,
        source_system,
        patient_id,
        medication,
        quantity,
        prescriber,
        pharmacy,
        status,
        created_at,
        updated_at,
        change_type: Some(change_type(status, created_at, updated_at)),
    })
}

/// Why a present value was refused: the rule it broke, never the value.
type Rule = &'static str;

/// The value at `path`; JSON null and blank strings count as absent.
fn lookup<'i, 'a>(input: &'i OrderInput<'a>, path: Path) -> Option<&'i Loose<'a>> {
    present(input.get(path)?)
}

/// `value`, unless it is JSON null or a blank string.
fn present<'i, 'a>(value: &'i Loose<'a>) -> Option<&'i Loose<'a>> {
    match value {
        Loose::Null => None,
        Loose::Str(s) if trim(s).is_empty() => None,
        present => Some(present),
    }
}

/// The first of `field`'s inputs that is present, with the path it was found at.
fn first_present<'i, 'a>(
    input: &'i OrderInput<'a>,
    field: &Field,
) -> Option<(Path, &'i Loose<'a>)> {
    field
        .inputs
        .iter()
        .find_map(|&path| lookup(input, path).map(|value| (path, value)))
}

fn optional<T>(
    input: &OrderInput,
    field: &Field,
    convert: impl Fn(&Loose) -> Result<T, Rule>,
) -> Result<Option<T>, ProcessError> {
    optional_at(input, field, |_, value| convert(value))
}

/// [`optional`] for a rule that reads the members of the path it was found at.
fn optional_at<T>(
    input: &OrderInput,
    field: &Field,
    convert: impl Fn(Path, &Loose) -> Result<T, Rule>,
) -> Result<Option<T>, ProcessError> {
    first_present(input, field)
        .map(|(path, value)| {
            convert(path, value).map_err(|rule| invalid(field.canonical, path, rule))
        })
        .transpose()
}

fn required<T>(
    input: &OrderInput,
    field: &Field,
    convert: impl Fn(&Loose) -> Result<T, Rule>,
) -> Result<T, ProcessError> {
    optional(input, field, convert)?.ok_or_else(|| missing(field.canonical, field.inputs))
}

fn missing(canonical: &str, inputs: &[Path]) -> ProcessError {
    let mut error = ProcessError::missing_field(canonical);
    // Naming the accepted spellings tells the producer's owner what to send.
    let inputs: Vec<&str> = inputs.iter().map(|path| path.dotted()).collect();
    error
        .message
        .push_str(&format!(" (looked for {})", inputs.join(", ")));
    error
}

fn invalid(canonical: &str, input: Path, rule: Rule) -> ProcessError {
    let input_path = input.dotted();
    if canonical == input_path {
        ProcessError::validation(format!("invalid {canonical}: {rule}"))
    } else {
        ProcessError::validation(format!(
            "invalid {canonical}: {rule} (read from {input_path})"
        ))
    }
}

fn string(value: &Loose) -> Result<String, Rule> {
    value
        .as_str()
        .map(|s| trim(s).to_string())
        .ok_or("must be a string")
}

/// The form: free text that FHIR may wrap in a CodeableConcept, so a string or an object's
/// `text`.
fn form(input: &OrderInput, value: &Loose) -> Result<String, Rule> {
    if !value.is_object() {
        return string(value);
    }
    match input.get(Path::MedicationFormText).and_then(Loose::as_str) {
        Some(text) if !trim(text).is_empty() => Ok(trim(text).to_string()),
        _ => Err("must be a string or a CodeableConcept with text"),
    }
}

/// Identifiers arrive as strings or, from some feeds, as JSON integers.
fn identifier(value: &Loose) -> Result<String, Rule> {
    match value {
        Loose::Str(s) => Ok(trim(s).to_string()),
        Loose::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err("must be a string or an integer"),
    }
}

fn npi(value: &Loose) -> Result<String, Rule> {
    let npi = identifier(value)?;
    if npi.len() != 10 || !npi.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NPI_LENGTH_RULE);
    }
    if !is_valid_npi(&npi) {
        return Err(NPI_CHECK_RULE);
    }
    Ok(npi)
}

fn ndc(input: &OrderInput) -> Result<String, ProcessError> {
    let parse = |path: Path, raw: &Loose| {
        let raw = raw
            .as_str()
            .ok_or_else(|| invalid(NDC.canonical, path, "must be a string"))?;
        normalize_ndc(raw).ok_or_else(|| invalid(NDC.canonical, path, NDC_RULE))
    };
    if let Some(raw) = lookup(input, Path::MedicationNdc) {
        return parse(Path::MedicationNdc, raw);
    }
    match lookup(input, Path::MedicationCode) {
        Some(concept) if concept.is_object() => {
            // `codings` is empty unless `coding` is a list.
            let ndc_coding = input.codings().iter().find(|coding| {
                coding
                    .system
                    .as_ref()
                    .and_then(Loose::as_str)
                    .is_some_and(|system| NDC_SYSTEMS.contains(&system))
            });
            // A concept coded only in other systems (RxNorm, SNOMED) carries no NDC.
            match ndc_coding.and_then(|coding| present(coding.code.as_ref()?)) {
                Some(code) => parse(Path::CodingCode, code),
                None => Err(missing(NDC.canonical, NDC.inputs)),
            }
        }
        Some(code) => parse(Path::MedicationCode, code),
        None => Err(missing(NDC.canonical, NDC.inputs)),
    }
}

fn patient_id(input: &OrderInput) -> Result<String, ProcessError> {
    if let Some(id) = optional(input, &PATIENT_ID, identifier)? {
        return Ok(id);
    }
    // Searched after PATIENT_ID's inputs: it holds a FHIR reference rather than a bare id.
    let Some(reference) = lookup(input, Path::SubjectReference) else {
        let mut inputs = PATIENT_ID.inputs.to_vec();
        inputs.push(Path::SubjectReference);
        return Err(missing(PATIENT_ID.canonical, &inputs));
    };
    reference
        .as_str()
        .and_then(patient_from_reference)
        .ok_or_else(|| {
            invalid(
                PATIENT_ID.canonical,
                Path::SubjectReference,
                "must be a FHIR Patient reference (Patient/<id>)",
            )
        })
}

/// The id in a FHIR reference to a Patient: relative (`Patient/1`), absolute
/// (`https://host/fhir/Patient/1`) or versioned (`Patient/1/_history/2`).
fn patient_from_reference(reference: &str) -> Option<String> {
    let mut segments = trim(reference).split('/');
    let mut previous = segments.next()?;
    for segment in segments {
        if previous == "Patient" && !segment.is_empty() {
            return Some(segment.to_string());
        }
        previous = segment;
    }
    None
}

fn positive_number(value: Option<&Loose>) -> Result<f64, Rule> {
    let number = match value {
        Some(Loose::Number(n)) => n.as_f64(),
        // Some pharmacy systems send quantities as numeric strings.
        Some(Loose::Str(s)) => trim(s).parse::<f64>().ok(),
        _ => None,
    };
    match number {
        Some(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err("must be a number greater than zero, or an object with such a value"),
    }
}

/// A quantity: a number, or an object (at `path`) with a `value` and maybe a `unit`.
fn quantity(input: &OrderInput, path: Path, value: &Loose) -> Result<Quantity, Rule> {
    if !value.is_object() {
        return Ok(Quantity {
            value: positive_number(Some(value))?,
            unit: None,
        });
    }
    let (amount, unit) = match path {
        Path::Quantity => (Path::QuantityValue, Path::QuantityUnit),
        _ => (Path::MedicationQuantityValue, Path::MedicationQuantityUnit),
    };
    let (amount, unit) = (input.get(amount), input.get(unit));
    let unit = match unit {
        None | Some(Loose::Null) => None,
        Some(Loose::Str(unit)) if trim(unit).is_empty() => None,
        Some(Loose::Str(unit)) => Some(trim(unit).to_string()),
        Some(_) => return Err("unit must be a string"),
    };
    Ok(Quantity {
        value: positive_number(amount)?,
        unit,
    })
}

/// The optional pharmacy; `Ok(None)` also for an object naming no pharmacy at all (`{}`).
fn pharmacy(input: &OrderInput) -> Result<Option<Pharmacy>, ProcessError> {
    let Some(object) = lookup(input, Path::Pharmacy) else {
        return Ok(None);
    };
    if !object.is_object() {
        return Err(invalid("pharmacy", Path::Pharmacy, "must be an object"));
    }
    let id = optional(input, &PHARMACY_ID, identifier)?;
    let name = optional(input, &PHARMACY_NAME, string)?;
    let pharmacy_npi = optional(input, &PHARMACY_NPI, npi)?;
    let ncpdp_id = optional(input, &PHARMACY_NCPDP_ID, ncpdp_id)?;
    if id.is_none() && name.is_none() && pharmacy_npi.is_none() && ncpdp_id.is_none() {
        return Ok(None);
    }
    Ok(Some(Pharmacy {
        id,
        name,
        npi: pharmacy_npi,
        ncpdp_id,
    }))
}

/// NCPDP provider ids are 7 digits.
fn ncpdp_id(value: &Loose) -> Result<String, Rule> {
    let id = identifier(value)?;
    if id.len() == 7 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        Err("must be 7 digits")
    }
}

/// The canonical status for a FHIR MedicationRequest or pharmacy status, compared without
/// regard to case or to `-`, `_` and space (so `on-hold`, `ON_HOLD` and `On Hold` agree).
pub fn map_status(raw: &str) -> Option<OrderStatus> {
    // Every status word is ASCII and short: longer or non-ASCII input matches none.
    let raw = trim(raw).as_bytes();
    let mut buffer = [0_u8; 24];
    let key = buffer.get_mut(..raw.len())?;
    for (to, from) in key.iter_mut().zip(raw) {
        *to = match from {
            b'-' | b' ' => b'_',
            b => b.to_ascii_uppercase(),
        };
    }
    Some(match std::str::from_utf8(key).ok()? {
        "DRAFT" | "NEW" | "RECEIVED" | "PENDING" | "QUEUED" => OrderStatus::Pending,
        "ACTIVE" | "IN_PROGRESS" | "PROCESSING" | "FILLING" => OrderStatus::Active,
        "ON_HOLD" | "SUSPENDED" => OrderStatus::OnHold,
        "FILLED" | "READY" | "READY_FOR_PICKUP" => OrderStatus::Ready,
        // FHIR R5 renamed `completed` to `ended`; pharmacies report how the drug left.
        "COMPLETED" | "COMPLETE" | "ENDED" | "DISPENSED" | "PICKED_UP" | "DELIVERED"
        | "SHIPPED" | "SOLD" => OrderStatus::Completed,
        "STOPPED" | "DISCONTINUED" => OrderStatus::Stopped,
        // A filled prescription returned to stock was never collected: nothing was dispensed.
        "CANCELLED" | "CANCELED" | "RETURNED_TO_STOCK" => OrderStatus::Cancelled,
        "ENTERED_IN_ERROR" => OrderStatus::EnteredInError,
        "UNKNOWN" => OrderStatus::Unknown,
        _ => return None,
    })
}

fn status(value: &Loose) -> Result<OrderStatus, Rule> {
    map_status(value.as_str().ok_or("must be a string")?).ok_or(STATUS_RULE)
}

fn timestamp(value: &Loose) -> Result<i64, Rule> {
    match value {
        Loose::Str(s) => chrono::DateTime::parse_from_rfc3339(trim(s))
            .map(|t| t.timestamp_millis())
            .map_err(|_| TIMESTAMP_RULE),
        Loose::Number(n) => match n.as_i64() {
            Some(millis) if millis >= MIN_EPOCH_MILLIS => Ok(millis),
            Some(_) => Err("epoch milliseconds before 1973: epoch seconds given?"),
            None => Err(TIMESTAMP_RULE),
        },
        _ => Err(TIMESTAMP_RULE),
    }
}

#[cfg(test)]
mod tests;
