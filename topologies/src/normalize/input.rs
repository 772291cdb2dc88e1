//! Typed, borrowed decoding of a feed's payload: only the members normalization reads.
//!
//! A feed record is decoded once, straight from its bytes, into [`OrderInput`]: a table
//! with one slot per input path that [`normalize`](super) may read ([`Path`]), filled as the
//! decoder walks the JSON text along [`ORDER`], the tree of those paths. Every other member
//! is skipped without being built, and no object or array is built either: a slot holds a
//! scalar (a string borrowed from the record's bytes unless it contains escapes, a number, a
//! boolean, null) or says that an object or an array stood there, whose members read have
//! slots of their own. A record so costs no hashing and, but for a FHIR coding list or a
//! string with escapes, no allocation, and a rule finds a path by index rather than by
//! searching objects by name.
//!
//! A slot holds a [`Loose`] value because a field may arrive in several JSON types (an id
//! as a string or an integer, a form as a string or a CodeableConcept) and the rules, not
//! the decoder, decide what is acceptable and say so by path.
//!
//! Semantics kept from JSON objects: when a key repeats inside a nested object the last one
//! wins, with everything read beneath it; a repeated *top-level* field is refused by the
//! decoder, which names it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use serde_json::value::RawValue;
use sluice_engine::EventMetadata;

/// The value at an input path, as loosely typed as the feeds send it: a scalar, or which
/// kind of composite stood there.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Loose<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    /// An array. Only the elements of `medication.code.coding` are kept
    /// ([`OrderInput::codings`]).
    Array,
    /// An object. The members normalization reads have slots of their own.
    Object,
}

impl Loose<'_> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Loose::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_object(&self) -> bool {
        matches!(self, Loose::Object)
    }
}

/// An input path normalization reads: the index of its slot in [`OrderInput`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    OrderId,
    Id,
    PatientId,
    Patient,
    PatientMemberId,
    Subject,
    SubjectReference,
    Medication,
    MedicationNdc,
    MedicationCode,
    MedicationCodeText,
    MedicationCodeCoding,
    MedicationName,
    MedicationDescription,
    MedicationStrength,
    MedicationForm,
    MedicationFormText,
    MedicationQuantity,
    MedicationQuantityValue,
    MedicationQuantityUnit,
    Quantity,
    QuantityValue,
    QuantityUnit,
    PrescriberId,
    PrescriberNpi,
    Provider,
    ProviderId,
    ProviderNpi,
    Pharmacy,
    PharmacyId,
    PharmacyName,
    PharmacyNpi,
    PharmacyNcpdpId,
    Status,
    CreatedAt,
    OrderDate,
    UpdatedAt,
    LastUpdated,
    /// One element of `medication.code.coding`, while it is read: its slots are moved into
    /// a [`Coding`] when it ends.
    Coding,
    CodingSystem,
    CodingCode,
}

const SLOTS: usize = Path::CodingCode as usize + 1;

// `Fields` marks the top-level fields it has seen in a u64, keeping bits 62 and 63 for the
// envelope's `metadata` and `payload`: every top-level path must sit below them.
const _: () = assert!((Path::LastUpdated as u32) < 62);

impl Path {
    /// The input path as error messages name it, members joined by dots.
    pub(crate) fn dotted(self) -> &'static str {
        match self {
            Path::OrderId => "orderId",
            Path::Id => "id",
            Path::PatientId => "patientId",
            Path::Patient => "patient",
            Path::PatientMemberId => "patient.id",
            Path::Subject => "subject",
            Path::SubjectReference => "subject.reference",
            Path::Medication => "medication",
            Path::MedicationNdc => "medication.ndc",
            Path::MedicationCode => "medication.code",
            Path::MedicationCodeText => "medication.code.text",
            Path::MedicationCodeCoding => "medication.code.coding",
            Path::MedicationName => "medication.name",
            Path::MedicationDescription => "medication.description",
            Path::MedicationStrength => "medication.strength",
            Path::MedicationForm => "medication.form",
            Path::MedicationFormText => "medication.form.text",
            Path::MedicationQuantity => "medication.quantity",
            Path::MedicationQuantityValue => "medication.quantity.value",
            Path::MedicationQuantityUnit => "medication.quantity.unit",
            Path::Quantity => "quantity",
            Path::QuantityValue => "quantity.value",
            Path::QuantityUnit => "quantity.unit",
            Path::PrescriberId => "prescriberId",
            Path::PrescriberNpi => "prescriberNpi",
            Path::Provider => "provider",
            Path::ProviderId => "provider.id",
            Path::ProviderNpi => "provider.npi",
            Path::Pharmacy => "pharmacy",
            Path::PharmacyId => "pharmacy.id",
            Path::PharmacyName => "pharmacy.name",
            Path::PharmacyNpi => "pharmacy.npi",
            Path::PharmacyNcpdpId => "pharmacy.ncpdpId",
            Path::Status => "status",
            Path::CreatedAt => "createdAt",
            Path::OrderDate => "orderDate",
            Path::UpdatedAt => "updatedAt",
            Path::LastUpdated => "lastUpdated",
            Path::Coding => "medication.code.coding",
            Path::CodingSystem => "medication.code.coding.system",
            Path::CodingCode => "medication.code.coding.code",
        }
    }
}

/// A member normalization reads, and the members of its own it reads when it is an object.
struct Member {
    name: &'static str,
    path: Path,
    members: &'static [Member],
}

const fn leaf(name: &'static str, path: Path) -> Member {
    Member {
        name,
        path,
        members: &[],
    }
}

const fn object(name: &'static str, path: Path, members: &'static [Member]) -> Member {
    Member {
        name,
        path,
        members,
    }
}

/// The members of a medication order that normalization reads, by top-level field.
static ORDER: &[Member] = &[
    leaf("orderId", Path::OrderId),
    leaf("id", Path::Id),
    leaf("patientId", Path::PatientId),
    object(
        "patient",
        Path::Patient,
        &[leaf("id", Path::PatientMemberId)],
    ),
    object(
        "subject",
        Path::Subject,
        &[leaf("reference", Path::SubjectReference)],
    ),
    object(
        "medication",
        Path::Medication,
        &[
            leaf("ndc", Path::MedicationNdc),
            object(
                "code",
                Path::MedicationCode,
                &[
                    leaf("text", Path::MedicationCodeText),
                    leaf("coding", Path::MedicationCodeCoding),
                ],
            ),
            leaf("name", Path::MedicationName),
            leaf("description", Path::MedicationDescription),
            leaf("strength", Path::MedicationStrength),
            object(
                "form",
                Path::MedicationForm,
                &[leaf("text", Path::MedicationFormText)],
            ),
            object(
                "quantity",
                Path::MedicationQuantity,
                &[
                    leaf("value", Path::MedicationQuantityValue),
                    leaf("unit", Path::MedicationQuantityUnit),
                ],
            ),
        ],
    ),
    object(
        "quantity",
        Path::Quantity,
        &[
            leaf("value", Path::QuantityValue),
            leaf("unit", Path::QuantityUnit),
        ],
    ),
    leaf("prescriberId", Path::PrescriberId),
    leaf("prescriberNpi", Path::PrescriberNpi),
    object(
        "provider",
        Path::Provider,
        &[leaf("id", Path::ProviderId), leaf("npi", Path::ProviderNpi)],
    ),
    object(
        "pharmacy",
        Path::Pharmacy,
        &[
            leaf("id", Path::PharmacyId),
            leaf("name", Path::PharmacyName),
            leaf("npi", Path::PharmacyNpi),
            leaf("ncpdpId", Path::PharmacyNcpdpId),
        ],
    ),
    leaf("status", Path::Status),
    leaf("createdAt", Path::CreatedAt),
    leaf("orderDate", Path::OrderDate),
    leaf("updatedAt", Path::UpdatedAt),
    leaf("lastUpdated", Path::LastUpdated),
];

/// An element of `medication.code.coding`, read like a member of its own.
static CODING: Member = object(
    "coding",
    Path::Coding,
    &[
        leaf("system", Path::CodingSystem),
        leaf("code", Path::CodingCode),
    ],
);

/// One object of a CodeableConcept's `coding` list: its `system` and `code`.
#[derive(Debug)]
pub(crate) struct Coding<'a> {
    pub(crate) system: Option<Loose<'a>>,
    pub(crate) code: Option<Loose<'a>>,
}

/// The members of a medication order that normalization reads, by path, and the envelope's
/// two parts when the record came in one.
pub(crate) struct OrderInput<'a> {
    slots: [Option<Loose<'a>>; SLOTS],
    codings: Vec<Coding<'a>>,
    metadata: Option<&'a RawValue>,
    payload: Option<&'a RawValue>,
}

impl<'a> OrderInput<'a> {
    /// Nothing read yet.
    pub(crate) fn new() -> Self {
        OrderInput {
            slots: [const { None }; SLOTS],
            codings: Vec::new(),
            metadata: None,
            payload: None,
        }
    }

    /// Decodes a JSON object. Its text is checked to the end, as `serde_json::from_str`
    /// checks it.
    pub(crate) fn from_json(text: &'a str) -> Result<Self, serde_json::Error> {
        let mut input = OrderInput::new();
        input.read_json(text)?;
        Ok(input)
    }

    /// Decodes a JSON object into this input, which holds nothing yet. The per-record path
    /// decodes in place: the input is over a kilobyte of slots, which returning it by value
    /// would copy twice.
    fn read_json(&mut self, text: &'a str) -> Result<(), serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        deserializer.deserialize_map(Fields(self))?;
        deserializer.end()
    }

    /// The value at `path`, if it was present (JSON null included).
    pub(crate) fn get(&self, path: Path) -> Option<&Loose<'a>> {
        self.slots[path as usize].as_ref()
    }

    /// The objects of `medication.code.coding`, in order, when it is a list.
    pub(crate) fn codings(&self) -> &[Coding<'a>] {
        &self.codings
    }

    fn set(&mut self, path: Path, value: Loose<'a>) {
        self.slots[path as usize] = Some(value);
    }

    fn take(&mut self, path: Path) -> Option<Loose<'a>> {
        self.slots[path as usize].take()
    }

    /// Forgets what was read at `member` and beneath it, so a repeated key's last value
    /// stands alone.
    fn clear(&mut self, member: &Member) {
        if self.take(member.path).is_none() {
            // Nothing beneath a path is read before the path itself.
            return;
        }
        if member.path == Path::MedicationCodeCoding {
            self.codings.clear();
        }
        for child in member.members {
            self.clear(child);
        }
    }
}

/// The top-level fields: refuses a repeated one by name.
struct Fields<'i, 'a>(&'i mut OrderInput<'a>);

impl<'de: 'a, 'a> Visitor<'de> for Fields<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a medication order object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let input = self.0;
        // One bit per top-level field seen: a `Path` below 64, or the envelope's two.
        let mut seen = 0_u64;
        let mut first_time = |bit: u32, name: &'static str| -> Result<(), A::Error> {
            let mask = 1_u64 << bit;
            if seen & mask != 0 {
                return Err(de::Error::duplicate_field(name));
            }
            seen |= mask;
            Ok(())
        };
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "metadata" => {
                    first_time(62, "metadata")?;
                    input.metadata = map.next_value()?;
                }
                "payload" => {
                    first_time(63, "payload")?;
                    input.payload = map.next_value()?;
                }
                name => match ORDER.iter().find(|member| member.name == name) {
                    Some(member) => {
                        first_time(member.path as u32, member.name)?;
                        map.next_value_seed(Slot {
                            member,
                            input: &mut *input,
                        })?;
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        Ok(())
    }
}

/// Reads one value into `member`'s slot, and the members read beneath it into theirs.
struct Slot<'m, 'i, 'a> {
    member: &'m Member,
    input: &'i mut OrderInput<'a>,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for Slot<'_, '_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.input.clear(self.member);
        deserializer.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Slot<'_, '_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.input.set(self.member.path, Loose::Null);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.input.set(self.member.path, Loose::Null);
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E>(self, value: bool) -> Result<(), E> {
        self.input.set(self.member.path, Loose::Bool(value));
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.input
            .set(self.member.path, Loose::Number(value.into()));
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.input
            .set(self.member.path, Loose::Number(value.into()));
        Ok(())
    }

    fn visit_f64<E>(self, value: f64) -> Result<(), E> {
        // JSON text has no NaN or infinity, so this is never Null for a parsed number.
        let value = Number::from_f64(value).map_or(Loose::Null, Loose::Number);
        self.input.set(self.member.path, value);
        Ok(())
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<(), E> {
        self.input
            .set(self.member.path, Loose::Str(Cow::Borrowed(value)));
        Ok(())
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        let value = Loose::Str(Cow::Owned(value.to_owned()));
        self.input.set(self.member.path, value);
        Ok(())
    }

    fn visit_string<E>(self, value: String) -> Result<(), E> {
        self.input
            .set(self.member.path, Loose::Str(Cow::Owned(value)));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let input = self.input;
        input.set(self.member.path, Loose::Array);
        if self.member.path != Path::MedicationCodeCoding {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        while seq
            .next_element_seed(Slot {
                member: &CODING,
                input: &mut *input,
            })?
            .is_some()
        {
            // An element that is not an object holds no coding to look at.
            let (system, code) = (input.take(Path::CodingSystem), input.take(Path::CodingCode));
            if input
                .take(Path::Coding)
                .is_some_and(|element| element.is_object())
            {
                input.codings.push(Coding { system, code });
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let input = self.input;
        input.set(self.member.path, Loose::Object);
        while let Some(Key(key)) = map.next_key()? {
            match self.member.members.iter().find(|member| member.name == key) {
                Some(member) => map.next_value_seed(Slot {
                    member,
                    input: &mut *input,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// An object key, borrowed from the input unless it contains escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(value)))
            }
            fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(value.to_owned())))
            }
            fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(value)))
            }
        }
        deserializer.deserialize_str(KeyVisitor(PhantomData))
    }
}

/// A decoded feed record: the envelope's metadata when it came in one, and whether the
/// order payload was a JSON object, decoded into the caller's [`OrderInput`]. A payload
/// that is not one is a validation error, reported by normalization like any other broken
/// rule.
pub(crate) struct FeedInput {
    pub(crate) metadata: Option<EventMetadata>,
    pub(crate) is_order: bool,
}

/// Decodes a feed record, bare or in the platform's envelope, as
/// [`JsonEvent`](sluice_engine::JsonEvent) does: an object with both `metadata` (an object)
/// and `payload` is an envelope. The order is decoded into `order`, which holds nothing
/// yet. The error is the decoder's reason, free of values.
pub(crate) fn decode<'a>(bytes: &'a [u8], order: &mut OrderInput<'a>) -> Result<FeedInput, String> {
    // One check of the whole text costs a fraction of serde_json's check of each string
    // in turn, which `from_slice` makes and `from_str` skips.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "invalid JSON: not UTF-8 at byte {} of {}",
            e.valid_up_to(),
            bytes.len()
        )
    })?;
    if !starts_an_object(bytes) {
        // Rare: keep the decoder's verdict on malformed or too deeply nested JSON, which a
        // skipped value would not give.
        serde_json::from_slice::<serde_json::Value>(bytes)
            .map_err(|e| sluice_engine::serde::describe_json_error(&e))?;
        return Ok(FeedInput {
            metadata: None,
            is_order: false,
        });
    }
    let describe = |e: serde_json::Error| sluice_engine::serde::describe_json_error(&e);
    order.read_json(text).map_err(describe)?;
    let bare = FeedInput {
        metadata: None,
        is_order: true,
    };
    let (Some(metadata), Some(payload)) = (order.metadata, order.payload) else {
        return Ok(bare);
    };
    if !starts_an_object(metadata.get().as_bytes()) {
        return Ok(bare);
    }
    let metadata = EventMetadata::from_json(metadata.get())?;
    let payload = payload.get();
    // The envelope's own members are not the order's: start over on the payload.
    *order = OrderInput::new();
    let is_order = starts_an_object(payload.as_bytes());
    if is_order {
        order.read_json(payload).map_err(describe)?;
    }
    Ok(FeedInput {
        metadata: Some(metadata),
        is_order,
    })
}

/// Whether the JSON text starts with `{` after any whitespace.
fn starts_an_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}
