//! Avro in the Confluent wire format.
//!
//! A record is `[0] [schema id: u32 big-endian] [Avro binary datum]`: a magic byte
//! ([`WIRE_MAGIC_BYTE`]), the registry id of the schema that *wrote* the datum, and the datum
//! itself, without the object-container header.
//!
//! [`AvroSerde`] writes with one schema (its *reader* schema, also the one `T` is shaped
//! after) and reads:
//!
//! * without a registry ([`AvroSerde::with_schema_id`]): records of that schema id only;
//! * with a registry ([`AvroSerde::registered`]): records of any id. A writer schema the serde
//!   has not seen is fetched once, and the datum is resolved to the reader schema by Avro's
//!   schema-resolution rules (a field the writer did not have takes its default, a field the
//!   reader does not have is skipped, an int widens to a long...).
//!
//! # Hot path
//!
//! Encoding and decoding reuse datum writers and readers built once per schema, so a record
//! costs one pass of apache-avro's schema-aware serde and no schema work. Data written with
//! the serde's own schema (or one with the same Parsing Canonical Form) is decoded straight
//! into `T`; data written with another schema goes through an Avro `Value`, because
//! apache-avro's fast path cannot resolve schemas yet. Other writer ids are looked up in a
//! read-locked map; the serde's own id needs no lock at all.
//!
//! The straight path also needs every Rust struct in `T` to carry the name of its Avro
//! record (name the struct so, or `#[serde(rename = "...")]` it). A `T` that does not is still
//! read correctly, through the `Value` path, at about the cost of a resolution.
//!
//! # Errors never quote the data
//!
//! apache-avro's error texts quote the values they failed on. Every error is therefore
//! re-worded from its class: the schema id, the failure (truncated, does not match the writer
//! schema, cannot be resolved, trailing bytes) and at most a field *name*.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::error::Details;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::avro_decoder::WriterSchemaDecoder;
use super::registry::{RegistryError, SchemaRegistryClient};
use super::{DatumWriter, Serde};
use crate::error::SerdeError;

/// The first byte of every record in the Confluent wire format.
pub const WIRE_MAGIC_BYTE: u8 = 0;

/// Magic byte + schema id.
const HEADER_LEN: usize = 5;

/// The largest buffer a serialization pre-allocates from the sizes it has seen, so that one
/// huge record does not make every later allocation huge.
const MAX_PREALLOCATION: usize = 64 * 1024;

/// Avro values of type `T` in the Confluent wire format (see the module doc).
///
/// # Decoding and the async runtime
///
/// `deserialize` is synchronous: stream threads are plain OS threads. With a registry, the
/// first record of an unseen writer schema id blocks the calling thread until the schema is
/// fetched (at most the registry client's timeout, plus a second); later records of that id
/// never touch the network or the runtime. The fetch runs on the tokio runtime that was
/// current when [`registered`](AvroSerde::registered) was awaited, so that runtime must still
/// be running. The calling thread may be:
///
/// * a thread outside any runtime (a stream thread, `std::thread::spawn`), or a
///   `spawn_blocking` thread: it simply waits;
/// * a worker of a multi-thread runtime: it waits inside `tokio::task::block_in_place`, so the
///   runtime's other tasks move to other workers;
/// * the thread of a current-thread runtime (or a `LocalSet`): it must not block the only
///   thread that drives the fetch, so the miss fails after the timeout with an error saying
///   so, and never panics. Decode there through `spawn_blocking`.
///
/// A current-thread runtime also needs its owner to be driving it (awaiting in
/// `Runtime::block_on`) while another thread waits for a fetch.
pub struct AvroSerde<T> {
    /// The reader schema (the one `T` is shaped after and the one written with).
    schema: &'static Schema,
    schema_id: u32,
    writer: GenericDatumWriter<'static>,
    /// Decodes records of `schema_id` straight into `T`, without a lock.
    own_decoder: WriterSchemaDecoder,
    /// False for a serde that only reads a subject which does not have its schema
    /// ([`reading`](AvroSerde::reading)): `schema_id` is then no id of the registry's, it
    /// is not written, and no record is decoded by `own_decoder`.
    owns_id: bool,
    registry: Option<RegistryLink>,
    /// Decoders of the other writer ids seen so far (only with a registry).
    other_decoders: RwLock<HashMap<u32, Arc<WriterSchemaDecoder>>>,
    /// Held while fetching a missing writer schema, so that threads missing at the same time
    /// make one fetch between them.
    fetch_lock: Mutex<()>,
    /// The size of the largest record written so far (capped), to allocate once per record.
    encoded_size_hint: AtomicUsize,
    /// Writes a `T` by hand instead of through apache-avro ([`AvroSerde::with_datum_writer`]).
    datum_writer: Option<fn(&T, &mut DatumWriter<'_>)>,
    _marker: PhantomData<fn() -> T>,
}

/// What a registered serde needs to fetch writer schemas from synchronous code.
struct RegistryLink {
    client: Arc<SchemaRegistryClient>,
    runtime: tokio::runtime::Handle,
}

impl<T> AvroSerde<T> {
    /// A serde without a registry: writes `schema` with id `id` and reads records of id `id`
    /// only; any other id is an error naming both ids.
    ///
    /// # Panics
    ///
    /// If `schema` refers to a named type it does not define (a schema from
    /// `Schema::parse_str` always defines them).
    pub fn with_schema_id(schema: Schema, id: u32) -> Self {
        Self::build(schema, None, id, None).unwrap_or_else(|e| {
            panic!(
                "Avro schema for id {id} has unresolved named types: {}",
                short_avro_error(&e)
            )
        })
    }

    /// A serde whose schema is registered under `subject` (or found there, when the subject
    /// already has it): writes with the registry's id for it, reads records of any id the
    /// registry knows, resolving them to `schema`. Captures the current tokio runtime for the
    /// fetches of unseen writer schemas (see the type's doc).
    pub async fn registered(
        registry: Arc<SchemaRegistryClient>,
        subject: &str,
        schema: Schema,
    ) -> Result<Self, RegistryError> {
        // Checked before the request, which would need the runtime anyway.
        tokio::runtime::Handle::try_current()
            .map_err(|_| RegistryError::NoRuntime("AvroSerde::registered"))?;
        let id = registry.register(subject, &schema).await?;
        Self::linked(registry, subject, schema, None, id)
    }

    /// A serde whose schema `subject` already has, found there without registering
    /// anything (`auto.register.schemas=false`): writes with that id, reads records of any
    /// id. A subject without the schema fails with
    /// [`error_codes::SCHEMA_NOT_FOUND`](super::registry::error_codes::SCHEMA_NOT_FOUND)
    /// or [`SUBJECT_NOT_FOUND`](super::registry::error_codes::SUBJECT_NOT_FOUND).
    pub async fn looked_up(
        registry: Arc<SchemaRegistryClient>,
        subject: &str,
        schema: Schema,
    ) -> Result<Self, RegistryError> {
        let id = registry.lookup(subject, &schema).await?;
        Self::linked(registry, subject, schema, None, id)
    }

    /// A serde that writes with `subject`'s latest version, whatever it is
    /// (`use.latest.version`, as Confluent's serializers): values of `T` are written in
    /// that version's layout and read back resolved to `schema`.
    pub async fn latest_version(
        registry: Arc<SchemaRegistryClient>,
        subject: &str,
        schema: Schema,
    ) -> Result<Self, RegistryError> {
        let latest = registry.latest(subject).await?;
        let writer = Schema::clone(&latest.schema);
        Self::linked(registry, subject, schema, Some(writer), latest.id)
    }

    /// A serde for a topic the topology reads: records of any id, resolved to `schema`.
    /// Nothing is registered. When `subject` has `schema`, records of its id take the
    /// fast path, and the serde may also write them; when it does not, the serde only
    /// reads, and a write is an error saying so.
    pub async fn reading(
        registry: Arc<SchemaRegistryClient>,
        subject: &str,
        schema: Schema,
    ) -> Result<Self, RegistryError> {
        use super::registry::error_codes::{SCHEMA_NOT_FOUND, SUBJECT_NOT_FOUND};
        match registry.lookup(subject, &schema).await {
            Ok(id) => Self::linked(registry, subject, schema, None, id),
            Err(e) if matches!(e.error_code(), Some(SCHEMA_NOT_FOUND | SUBJECT_NOT_FOUND)) => {
                let mut serde = Self::linked(registry, subject, schema, None, 0)?;
                serde.owns_id = false;
                Ok(serde)
            }
            Err(e) => Err(e),
        }
    }

    /// A serde tied to `registry` on the current tokio runtime, writing id `id` with
    /// `writer` (default: `schema`).
    fn linked(
        registry: Arc<SchemaRegistryClient>,
        subject: &str,
        schema: Schema,
        writer: Option<Schema>,
        id: u32,
    ) -> Result<Self, RegistryError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| RegistryError::NoRuntime("AvroSerde with a schema registry"))?;
        let link = RegistryLink {
            client: registry,
            runtime,
        };
        Self::build(schema, writer, id, Some(link)).map_err(|e| RegistryError::InvalidSchema {
            what: format!("the schema of subject `{subject}` (id {id})"),
            reason: short_avro_error(&e),
        })
    }

    /// The schema this serde writes with and reads into.
    /// Writes values with `write` instead of apache-avro's schema-aware serializer, which
    /// looks every field up by name; reading is unchanged. `write` must produce the
    /// serde's schema's binary encoding, and its tests must show it does (see
    /// [`DatumWriter`]).
    pub fn with_datum_writer(mut self, write: fn(&T, &mut DatumWriter<'_>)) -> Self {
        self.datum_writer = Some(write);
        self
    }

    pub fn schema(&self) -> &Schema {
        self.schema
    }

    /// The id written in front of every record.
    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    fn build(
        schema: Schema,
        writer: Option<Schema>,
        id: u32,
        registry: Option<RegistryLink>,
    ) -> Result<Self, apache_avro::Error> {
        let schema = leak_interned(schema);
        let writer_schema = writer.map_or(schema, leak_interned);
        Ok(Self {
            schema,
            schema_id: id,
            writer: GenericDatumWriter::builder(writer_schema).build()?,
            own_decoder: WriterSchemaDecoder::new(id, writer_schema, schema)?,
            owns_id: true,
            registry,
            other_decoders: RwLock::default(),
            fetch_lock: Mutex::new(()),
            encoded_size_hint: AtomicUsize::new(64),
            datum_writer: None,
            _marker: PhantomData,
        })
    }

    /// The decoder of writer id `id`, built (and its schema fetched) on first use.
    fn decoder_for(&self, id: u32) -> Result<Arc<WriterSchemaDecoder>, SerdeError> {
        if let Some(decoder) = self.cached_decoder(id) {
            return Ok(decoder);
        }
        let Some(link) = &self.registry else {
            return Err(SerdeError::new(format!(
                "record was written with Avro schema id {id}, but this serde has no schema \
                 registry and reads schema id {} only",
                self.schema_id
            )));
        };
        let _one_fetch_at_a_time = self
            .fetch_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another thread may have fetched it while this one waited for the lock.
        if let Some(decoder) = self.cached_decoder(id) {
            return Ok(decoder);
        }
        let writer_schema = link.fetch_blocking(id)?;
        let writer_schema = leak_interned(Schema::clone(&writer_schema));
        let decoder = WriterSchemaDecoder::new(id, writer_schema, self.schema).map_err(|e| {
            SerdeError::new(format!(
                "Avro writer schema id {id} cannot be prepared for reading: {}",
                short_avro_error(&e)
            ))
        })?;
        let decoder = Arc::new(decoder);
        self.other_decoders
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&decoder));
        Ok(decoder)
    }

    fn cached_decoder(&self, id: u32) -> Option<Arc<WriterSchemaDecoder>> {
        self.other_decoders
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }
}

impl RegistryLink {
    /// Fetches schema `id` from synchronous code, on the captured runtime (see the doc of
    /// [`AvroSerde`] for which threads may call this).
    fn fetch_blocking(&self, id: u32) -> Result<Arc<Schema>, SerdeError> {
        // The fetch is spawned rather than `block_on`-ed: `Handle::block_on` panics on a
        // thread that is inside a runtime, and a bounded wait on a channel turns "nobody is
        // driving the runtime" into an error instead of a hang.
        let wait = || {
            let (sender, receiver) = mpsc::sync_channel(1);
            let client = Arc::clone(&self.client);
            // If the runtime has shut down the task is dropped unrun; so is the sender.
            drop(self.runtime.spawn(async move {
                let _ = sender.send(client.schema_by_id(id).await);
            }));
            // The client's own timeout bounds the request; the margin covers scheduling.
            receiver.recv_timeout(self.client.timeout() + Duration::from_secs(1))
        };
        let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let received = if on_multi_thread_runtime {
            // On a worker this hands the worker's tasks to another thread while we wait; on
            // a blocking-pool thread it just runs `wait`.
            tokio::task::block_in_place(wait)
        } else {
            wait()
        };
        match received {
            Ok(Ok(schema)) => Ok(schema),
            // The registry answered that it has no such schema: the record is bad.
            Ok(Err(e)) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                Err(SerdeError::new(format!(
                    "cannot fetch Avro writer schema id {id} from the schema registry: {e}"
                )))
            }
            // Down, slow or failing: the record may be fine, so it is retried, not dead-lettered.
            Ok(Err(e)) => Err(SerdeError::transient(format!(
                "cannot fetch Avro writer schema id {id} from the schema registry: {e}"
            ))),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(SerdeError::transient(format!(
                "fetching Avro writer schema id {id} from the schema registry did not finish \
                 within {:?}; is this a current-thread tokio runtime's own thread, or is the \
                 runtime the serde was registered on blocked?",
                self.client.timeout() + Duration::from_secs(1)
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(SerdeError::transient(format!(
                "cannot fetch Avro writer schema id {id}: the tokio runtime the serde was \
                 registered on has shut down"
            ))),
        }
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Serde<T> for AvroSerde<T> {
    fn serialize(&self, _topic: &str, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        if !self.owns_id {
            return Err(SerdeError::new(
                "this Avro serde only reads: its schema is not registered under the topic's \
                 subject, so it has no id to write with",
            ));
        }
        let mut buf = Vec::with_capacity(self.encoded_size_hint.load(Ordering::Relaxed));
        buf.push(WIRE_MAGIC_BYTE);
        buf.extend_from_slice(&self.schema_id.to_be_bytes());
        match self.datum_writer {
            Some(write) => write(value, &mut DatumWriter::new(&mut buf)),
            None => self
                .writer
                .write_ser(&mut buf, value)
                .map_err(|e| describe_encode_error(&e, self.schema_id))
                .map(drop)?,
        }
        // Only growth is stored, so threads do not keep writing the shared cache line.
        if buf.len() > self.encoded_size_hint.load(Ordering::Relaxed) {
            self.encoded_size_hint
                .store(buf.len().min(MAX_PREALLOCATION), Ordering::Relaxed);
        }
        Ok(Some(buf))
    }

    fn deserialize(&self, _topic: &str, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        let bytes = bytes.ok_or_else(|| {
            SerdeError::new("null where an Avro record in the Confluent wire format was expected")
        })?;
        let (id, datum) = split_header(bytes)?;
        if id == self.schema_id && self.owns_id {
            return self.own_decoder.decode(datum);
        }
        if let Some(decoder) = self
            .other_decoders
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return decoder.decode(datum);
        }
        self.decoder_for(id)?.decode(datum)
    }
}

/// The writer schema id and the datum of a wire-format record.
fn split_header(bytes: &[u8]) -> Result<(u32, &[u8]), SerdeError> {
    let Some((header, datum)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(SerdeError::new(format!(
            "record is not in the Confluent wire format: truncated header ({} bytes, the \
             header alone is {HEADER_LEN})",
            bytes.len()
        )));
    };
    let [magic, id @ ..] = *header;
    if magic != WIRE_MAGIC_BYTE {
        // The header byte is shown (not data): 0x7b, say, tells JSON was sent.
        return Err(SerdeError::new(format!(
            "record is not in the Confluent wire format: expected magic byte {WIRE_MAGIC_BYTE}, \
             found {magic:#04x}"
        )));
    }
    Ok((u32::from_be_bytes(id), datum))
}

/// An encoding error told by its class and, where apache-avro names one, a field name.
fn describe_encode_error(e: &apache_avro::Error, schema_id: u32) -> SerdeError {
    let message = match e.details() {
        Details::SerializeRecordFieldWithSchema { field_name, .. } => {
            format!("field `{field_name}` of the value does not match Avro schema {schema_id}")
        }
        Details::MissingDefaultForSkippedField { field_name, .. } => format!(
            "field `{field_name}` is skipped by the value but has no default in Avro schema \
             {schema_id}"
        ),
        Details::GetField(field_name) => format!(
            "the value has a field `{field_name}` that Avro schema {schema_id} does not define"
        ),
        Details::SerializeValueWithSchema { value_type, .. } => {
            format!("a value of type {value_type} does not match Avro schema {schema_id}")
        }
        _ => format!("the value does not match Avro schema {schema_id}"),
    };
    SerdeError::new(message)
}

/// An apache-avro error about a *schema* (never used for data errors: those quote values).
pub(super) fn short_avro_error(e: &apache_avro::Error) -> String {
    e.to_string()
}

/// `schema`, borrowed for the rest of the process.
///
/// apache-avro's datum writers and readers borrow their schema (`&'s Schema`) and resolve its
/// named types when they are built; keeping them built, instead of resolving per record,
/// needs a schema that outlives the serde. Leaking is the simple sound way. It is bounded:
/// each distinct schema (by its full JSON, defaults included) is leaked once per process, not
/// once per serde, so a process leaks one copy of each schema it ever reads or writes.
fn leak_interned(schema: Schema) -> &'static Schema {
    static INTERNED: OnceLock<Mutex<HashMap<String, &'static Schema>>> = OnceLock::new();
    let key = serde_json::to_string(&schema).unwrap_or_else(|_| schema.canonical_form());
    let mut interned = INTERNED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    interned
        .entry(key)
        .or_insert_with(|| Box::leak(Box::new(schema)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Reading {
        patient: String,
        pulse: i32,
        note: Option<String>,
    }

    const READING_SCHEMA: &str = r#"{
        "type": "record", "name": "Reading", "namespace": "sluice.test",
        "fields": [
            {"name": "patient", "type": "string"},
            {"name": "pulse", "type": "int"},
            {"name": "note", "type": ["null", "string"], "default": null}
        ]
    }"#;

    fn reading_serde() -> AvroSerde<Reading> {
        AvroSerde::with_schema_id(Schema::parse_str(READING_SCHEMA).unwrap(), 42)
    }

    /// `{patient: "ab", pulse: 70, note: "ok"}` with schema id 42, worked out by hand:
    ///
    /// * `0x00`: magic byte; `0x00 0x00 0x00 0x2a`: id 42 as a big-endian u32.
    /// * `patient`, a string: its length as a zigzag varint, then UTF-8. Zigzag maps n >= 0 to
    ///   2n, so length 2 -> `0x04`, then `a` `b` = `0x61 0x62`.
    /// * `pulse`, an int: zigzag 70 -> 140 = 0b1000_1100, more than 7 bits, so two varint
    ///   bytes, low 7 bits first: 140 & 0x7f = 0x0c with the continuation bit -> `0x8c`, then
    ///   140 >> 7 = 1 -> `0x01`.
    /// * `note`, the union `["null","string"]`: branch index 1 as a zigzag long -> `0x02`, then
    ///   the string: length 2 -> `0x04`, `o` `k` = `0x6f 0x6b`.
    const READING_BYTES: [u8; 14] = [
        0x00, 0x00, 0x00, 0x00, 0x2a, // header
        0x04, 0x61, 0x62, // patient
        0x8c, 0x01, // pulse
        0x02, 0x04, 0x6f, 0x6b, // note
    ];

    fn reading() -> Reading {
        Reading {
            patient: "ab".into(),
            pulse: 70,
            note: Some("ok".into()),
        }
    }

    #[test]
    fn encodes_a_record_to_the_exact_wire_bytes() {
        let bytes = reading_serde().serialize("t", &reading()).unwrap().unwrap();
        assert_eq!(bytes, READING_BYTES);
    }

    #[test]
    fn decodes_fixed_wire_bytes() {
        let decoded = reading_serde()
            .deserialize("t", Some(&READING_BYTES))
            .unwrap();
        assert_eq!(decoded, reading());

        // `note` null: union branch 0 and nothing after it; pulse -1 zigzags to 1.
        let null_note = [0, 0, 0, 0, 42, 0x02, b'x', 0x01, 0x00];
        let decoded = reading_serde().deserialize("t", Some(&null_note)).unwrap();
        assert_eq!(
            decoded,
            Reading {
                patient: "x".into(),
                pulse: -1,
                note: None
            }
        );
    }

    #[test]
    fn bytes_after_the_datum_are_an_error() {
        let mut bytes = READING_BYTES.to_vec();
        bytes.push(0x00);
        let err = reading_serde().deserialize("t", Some(&bytes)).unwrap_err();
        assert!(err.message.contains("1 bytes left over"), "{}", err.message);
        assert!(err.message.contains("writer schema 42"), "{}", err.message);
    }

    #[test]
    fn a_wrong_magic_byte_is_not_the_wire_format() {
        let mut bytes = READING_BYTES.to_vec();
        bytes[0] = b'{';
        let err = reading_serde().deserialize("t", Some(&bytes)).unwrap_err();
        assert_eq!(
            err.message,
            "record is not in the Confluent wire format: expected magic byte 0, found 0x7b"
        );
    }

    #[test]
    fn a_truncated_header_is_not_the_wire_format() {
        let err = reading_serde()
            .deserialize("t", Some(&[0, 0, 0]))
            .unwrap_err();
        assert!(
            err.message
                .starts_with("record is not in the Confluent wire format: truncated header"),
            "{}",
            err.message
        );
        let err = reading_serde().deserialize("t", None).unwrap_err();
        assert!(err.message.starts_with("null where"), "{}", err.message);
    }

    #[test]
    fn a_truncated_datum_says_truncated() {
        // Cut inside the note string, right before the union index, inside the pulse varint.
        for cut in [12, 10, 9] {
            let err = reading_serde()
                .deserialize("t", Some(&READING_BYTES[..cut]))
                .unwrap_err();
            assert!(
                err.message.starts_with("truncated Avro datum"),
                "cut at {cut}: {}",
                err.message
            );
            assert!(err.message.contains("42"), "{}", err.message);
        }
    }

    #[test]
    fn another_schema_id_without_a_registry_names_both_ids() {
        let mut bytes = READING_BYTES.to_vec();
        bytes[1..5].copy_from_slice(&7u32.to_be_bytes());
        let err = reading_serde().deserialize("t", Some(&bytes)).unwrap_err();
        assert!(err.message.contains("schema id 7"), "{}", err.message);
        assert!(err.message.contains("schema id 42 only"), "{}", err.message);
    }

    #[test]
    fn errors_never_quote_string_values_from_the_payload() {
        let secret = "JANE-DOE-MRN-0042";
        // A record whose `pulse` is a string in the writer's data: the datum reads the
        // patient, then takes the next string's length byte as the pulse varint and
        // falls out of step with the schema.
        let mut bytes = vec![0, 0, 0, 0, 42];
        for field in [secret, secret] {
            bytes.push((field.len() * 2) as u8);
            bytes.extend_from_slice(field.as_bytes());
        }
        let err = reading_serde().deserialize("t", Some(&bytes)).unwrap_err();
        assert!(!err.message.contains("JANE"), "{}", err.message);
        assert!(err.message.contains("42"), "{}", err.message);

        // An invalid union branch index right after the secret: apache-avro's own text
        // would report it; ours names only the schema.
        let mut bytes = vec![0, 0, 0, 0, 42, (secret.len() * 2) as u8];
        bytes.extend_from_slice(secret.as_bytes());
        bytes.extend_from_slice(&[0x02, 0x08]);
        let err = reading_serde().deserialize("t", Some(&bytes)).unwrap_err();
        assert!(!err.message.contains("JANE"), "{}", err.message);
        assert_eq!(err.message, "Avro datum does not match writer schema 42");

        // Encoding a value whose type does not fit the schema: the value stays out.
        let wrong_shape = AvroSerde::<(String, String)>::with_schema_id(
            Schema::parse_str(r#""string""#).unwrap(),
            9,
        );
        let err = wrong_shape
            .serialize("t", &(secret.to_string(), secret.to_string()))
            .unwrap_err();
        assert!(!err.message.contains("JANE"), "{}", err.message);
        assert!(err.message.contains("schema 9"), "{}", err.message);
    }

    /// `Reading`'s fields under another Rust name than the Avro record's.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct VitalSign {
        patient: String,
        pulse: i32,
        note: Option<String>,
    }

    #[test]
    fn a_struct_named_like_its_record_takes_the_schema_aware_path() {
        let serde = reading_serde();
        serde.deserialize("t", Some(&READING_BYTES)).unwrap();
        assert!(!serde.own_decoder.general_path_only.load(Ordering::Relaxed));
    }

    #[test]
    fn a_struct_named_unlike_its_record_is_read_through_the_general_path() {
        let serde =
            AvroSerde::<VitalSign>::with_schema_id(Schema::parse_str(READING_SCHEMA).unwrap(), 42);
        let expected = VitalSign {
            patient: "ab".into(),
            pulse: 70,
            note: Some("ok".into()),
        };
        assert_eq!(
            serde.deserialize("t", Some(&READING_BYTES)).unwrap(),
            expected
        );
        assert!(serde.own_decoder.general_path_only.load(Ordering::Relaxed));
        assert_eq!(
            serde.deserialize("t", Some(&READING_BYTES)).unwrap(),
            expected
        );
        // apache-avro's `Value` decoder would read these cut-off records as a null note.
        for cut in [12, 10] {
            let err = serde
                .deserialize("t", Some(&READING_BYTES[..cut]))
                .unwrap_err();
            assert!(
                err.message.starts_with("truncated Avro datum"),
                "cut at {cut}: {}",
                err.message
            );
        }
        // Encoding does not depend on the struct's name.
        assert_eq!(
            serde.serialize("t", &expected).unwrap().unwrap(),
            READING_BYTES
        );
    }

    #[test]
    fn round_trips_through_the_serde_and_reports_its_schema() {
        let serde = reading_serde();
        assert_eq!(serde.schema_id(), 42);
        assert_eq!(
            serde.schema().canonical_form(),
            Schema::parse_str(READING_SCHEMA).unwrap().canonical_form()
        );
        let value = Reading {
            patient: "é".repeat(100),
            pulse: i32::MIN,
            note: None,
        };
        let bytes = serde.serialize("t", &value).unwrap();
        assert_eq!(serde.deserialize("t", bytes.as_deref()).unwrap(), value);
    }
}
