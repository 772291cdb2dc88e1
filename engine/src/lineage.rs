//! Lineage: which event caused which.
//!
//! Every event of the platform carries an `eventId`, the `correlationId` of the business
//! flow it belongs to, and the `causationId` of the event that caused it. The engine
//! carries these for the topology author: it reads the lineage of each input (from the
//! envelope when the source serde understands one, else from the headers below), and
//! every record a sink writes gets
//!
//! * `correlation-id`: the input's correlation id (or the input's event id when the input
//!   started the flow and had none),
//! * `causation-id`: the input's event id; an input that carries none (a record of an
//!   external feed) is named by its source position, through [`source_event_id`], and
//!   outputs of a punctuation by the occasion,
//! * `event-id`: the output's own event id — the envelope's when the value is one, else an
//!   id derived deterministically from the input's coordinates, the sink and the output's
//!   position among that input's outputs. Reprocessing the same input after a crash
//!   therefore yields the same event ids, which lets consumers deduplicate.

use uuid::Uuid;

use crate::record::{Headers, Origin};

pub const EVENT_ID_HEADER: &str = "event-id";
pub const CORRELATION_ID_HEADER: &str = "correlation-id";
pub const CAUSATION_ID_HEADER: &str = "causation-id";

/// The lineage of one event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    pub event_id: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
}

impl Lineage {
    /// Lineage from the input's headers.
    pub fn from_headers(headers: &Headers) -> Self {
        Self {
            event_id: headers.get_str(EVENT_ID_HEADER).map(str::to_owned),
            correlation_id: headers.get_str(CORRELATION_ID_HEADER).map(str::to_owned),
            causation_id: headers.get_str(CAUSATION_ID_HEADER).map(str::to_owned),
        }
    }

    /// Writes this lineage as headers, replacing earlier lineage headers.
    pub fn write_headers(&self, headers: &mut Headers) {
        for (key, value) in [
            (EVENT_ID_HEADER, &self.event_id),
            (CORRELATION_ID_HEADER, &self.correlation_id),
            (CAUSATION_ID_HEADER, &self.causation_id),
        ] {
            match value {
                Some(v) => headers.insert(key, v.as_str()),
                None => headers.remove(key),
            }
        }
    }

    /// The correlation id a derived event carries: the flow's, or the cause's own id when
    /// the cause started the flow.
    pub fn correlation_for_derived(&self) -> Option<&str> {
        self.correlation_id.as_deref().or(self.event_id.as_deref())
    }
}

/// A deterministic event id for the `index`-th record that `sink` wrote while processing
/// the input at `origin`: a UUID (version 8) made of a 128-bit xxh3 hash of those
/// coordinates. The same input always yields the same ids, across processes and versions.
pub fn derived_event_id(origin: &Origin, sink: &str, index: u32) -> String {
    id_string(derived_id_text(origin, sink, index))
}

/// [`derived_event_id`] as text in a stack buffer: a sink writes it straight into a header.
pub(crate) fn derived_id_text(origin: &Origin, sink: &str, index: u32) -> IdText {
    // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    hashed_uuid(&[
        &(origin.topic.len() as u64).to_le_bytes(),
        origin.topic.as_bytes(),
        &origin.partition.to_le_bytes(),
        &origin.offset.to_le_bytes(),
        &(sink.len() as u64).to_le_bytes(),
        sink.as_bytes(),
        &index.to_le_bytes(),
    ])
}

/// The event id of an input that carries none, such as a record of an external feed: a
/// UUID (version 8) made of its source position, so every output it causes names the same
/// cause, however often the input is processed. Distinct from every [`derived_event_id`]:
/// the hash starts from its own tag.
pub fn source_event_id(origin: &Origin) -> String {
    id_string(hashed_uuid(&[
        b"sluice-source-position",
        &(origin.topic.len() as u64).to_le_bytes(),
        origin.topic.as_bytes(),
        &origin.partition.to_le_bytes(),
        &origin.offset.to_le_bytes(),
    ]))
}

/// A hyphenated, lower-case UUID: 36 ASCII characters.
pub(crate) type IdText = [u8; uuid::fmt::Hyphenated::LENGTH];

fn id_string(text: IdText) -> String {
    // Hex digits and hyphens only.
    String::from_utf8(text.to_vec()).expect("a UUID's text is ASCII")
}

/// A version-8 UUID made of the 128-bit xxh3 hash of `parts` one after the other, written
/// hyphenated in lower case. Ids are made for every record, so the common case hashes one
/// stack buffer in one call and writes the text without `fmt` (the streaming hasher and
/// `to_string` cost about twice as much); the hash is the same either way.
fn hashed_uuid(parts: &[&[u8]]) -> IdText {
    let mut buffer = [0_u8; 256];
    let length: usize = parts.iter().map(|part| part.len()).sum();
    let hash = if length <= buffer.len() {
        let mut at = 0;
        for part in parts {
            buffer[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        xxhash_rust::xxh3::xxh3_128(&buffer[..length])
    } else {
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        for part in parts {
            hasher.update(part);
        }
        hasher.digest128()
    };
    let mut text = [0_u8; uuid::fmt::Hyphenated::LENGTH];
    Uuid::new_v8(hash.to_le_bytes())
        .hyphenated()
        .encode_lower(&mut text);
    text
}

impl Lineage {
    /// This lineage with an event id: its own, else the input's [`source_event_id`].
    pub(crate) fn identified(&self, origin: &Origin) -> std::borrow::Cow<'_, Lineage> {
        match self.event_id {
            Some(_) => std::borrow::Cow::Borrowed(self),
            None => std::borrow::Cow::Owned(Lineage {
                event_id: Some(source_event_id(origin)),
                ..self.clone()
            }),
        }
    }
}

/// Writes the lineage headers of an output record caused by `cause`. Ids as short as the
/// engine's own are kept inline in `headers`, so the three cost no allocation.
pub(crate) fn stamp_headers(headers: &mut Headers, cause: &Lineage, event_id: &[u8]) {
    match cause.correlation_for_derived() {
        Some(c) => headers.insert(CORRELATION_ID_HEADER, c),
        None => headers.insert(CORRELATION_ID_HEADER, event_id),
    }
    match &cause.event_id {
        Some(e) => headers.insert(CAUSATION_ID_HEADER, e),
        None => headers.remove(CAUSATION_ID_HEADER),
    }
    headers.insert(EVENT_ID_HEADER, event_id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn origin(offset: i64) -> Origin {
        Origin {
            topic: Arc::from("in"),
            partition: 3,
            offset,
        }
    }

    #[test]
    fn derived_ids_are_stable_across_reprocessing_and_distinct_per_output() {
        let a = derived_event_id(&origin(7), "sink", 0);
        assert_eq!(a, derived_event_id(&origin(7), "sink", 0));
        assert_ne!(a, derived_event_id(&origin(7), "sink", 1));
        assert_ne!(a, derived_event_id(&origin(8), "sink", 0));
        assert_ne!(a, derived_event_id(&origin(7), "other-sink", 0));
    }

    #[test]
    fn derived_ids_are_fixed_for_fixed_coordinates() {
        // Pinned: changing the derivation would give reprocessed inputs new ids, and
        // consumers that deduplicate by event id would see them twice.
        let id = derived_event_id(&origin(7), "sink", 0);
        assert_eq!(id, "a72411e7-9153-84ba-8242-254ccb29b17a");
        assert_eq!(&id[14..15], "8", "a version-8 UUID: {id}");
    }

    #[test]
    fn source_ids_are_fixed_for_fixed_positions() {
        // Pinned like derived ids, and for the same reason; a topic name too long for the
        // stack buffer hashes the same way as a short one would.
        assert_eq!(
            source_event_id(&origin(7)),
            "3613c438-9d8c-8889-800f-04dd631be0e7"
        );
        let long = Origin {
            topic: Arc::from("t".repeat(300)),
            partition: 0,
            offset: 1,
        };
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        hasher.update(b"sluice-source-position");
        hasher.update(&300_u64.to_le_bytes());
        hasher.update("t".repeat(300).as_bytes());
        hasher.update(&0_i32.to_le_bytes());
        hasher.update(&1_i64.to_le_bytes());
        let expected = Uuid::new_v8(hasher.digest128().to_le_bytes())
            .hyphenated()
            .to_string();
        assert_eq!(source_event_id(&long), expected);
        assert_eq!(
            xxhash_rust::xxh3::xxh3_128(b"ab"),
            {
                let mut h = xxhash_rust::xxh3::Xxh3Default::new();
                h.update(b"a");
                h.update(b"b");
                h.digest128()
            },
            "one-shot and streaming xxh3 agree"
        );
    }

    #[test]
    fn an_input_without_an_event_id_is_named_by_its_source_position() {
        let cause = Lineage::default();
        let identified = cause.identified(&origin(7));
        assert_eq!(
            identified.event_id.as_deref(),
            Some(source_event_id(&origin(7)).as_str())
        );
        assert_ne!(source_event_id(&origin(7)), source_event_id(&origin(8)));
        assert_ne!(
            source_event_id(&origin(7)),
            derived_event_id(&origin(7), "", 0)
        );
        // An input with its own id keeps it.
        let own = Lineage {
            event_id: Some("e1".into()),
            ..Lineage::default()
        };
        assert_eq!(own.identified(&origin(7)).event_id.as_deref(), Some("e1"));
    }

    #[test]
    fn a_flow_without_correlation_id_is_correlated_by_its_first_event() {
        let cause = Lineage {
            event_id: Some("e1".into()),
            ..Lineage::default()
        };
        let mut h = Headers::new();
        stamp_headers(&mut h, &cause, b"e2");
        assert_eq!(h.get_str(CORRELATION_ID_HEADER), Some("e1"));
        assert_eq!(h.get_str(CAUSATION_ID_HEADER), Some("e1"));
        assert_eq!(h.get_str(EVENT_ID_HEADER), Some("e2"));
    }
}
