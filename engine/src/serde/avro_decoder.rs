//! Decoding the datums of one writer schema into a `T`, for [`AvroSerde`](super::AvroSerde):
//! the schema-aware path when the writer schema is the reader schema, Avro's resolution
//! through a `Value` otherwise, and errors that name the failure, never the data.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

use apache_avro::Schema;
use apache_avro::error::Details;
use apache_avro::reader::datum::GenericDatumReader;
use serde::de::DeserializeOwned;

use crate::error::SerdeError;

/// Reads the datums one writer schema wrote, as the serde's reader schema.
///
/// Two paths: the *schema-aware* one (`read_deser`) decodes straight into `T`; the *general*
/// one decodes an Avro `Value` (resolving it to the reader schema if the writer's differs)
/// and converts that into `T`. The schema-aware path is taken whenever it can be: the writer
/// schema is the reader schema, and `T` fits the schema-aware deserializer, which also
/// insists that a struct's Rust name equal its Avro record's name. Once the schema-aware
/// path fails on a datum that the general path reads, `T` does not fit it, and the decoder
/// takes the general path from then on.
pub(super) struct WriterSchemaDecoder {
    writer_schema_id: u32,
    reader: GenericDatumReader<'static>,
    /// Whether the reader was built with a reader schema; apache-avro's `read_deser` panics
    /// when asked to resolve, so such a decoder only takes the general path.
    resolves: bool,
    /// Set when the schema-aware path proved unable to read `T` (see above).
    pub(super) general_path_only: AtomicBool,
}

impl WriterSchemaDecoder {
    pub(super) fn new(
        writer_schema_id: u32,
        writer_schema: &'static Schema,
        reader_schema: &'static Schema,
    ) -> Result<Self, apache_avro::Error> {
        // Equal canonical forms mean identical binary layouts: no resolution needed.
        let resolves = writer_schema.canonical_form() != reader_schema.canonical_form();
        let reader = GenericDatumReader::builder(writer_schema)
            .maybe_reader_schema(resolves.then_some(reader_schema))
            .build()?;
        Ok(Self {
            writer_schema_id,
            reader,
            resolves,
            general_path_only: AtomicBool::new(resolves),
        })
    }

    pub(super) fn decode<T: DeserializeOwned>(&self, datum: &[u8]) -> Result<T, SerdeError> {
        if self.general_path_only.load(Ordering::Relaxed) {
            return self.decode_general(datum);
        }
        let mut rest = datum;
        match self.reader.read_deser::<T>(&mut rest) {
            Ok(value) => self.all_read(value, rest),
            // Bad data fails both ways; the general path's error is the one reported.
            Err(_) => {
                let value = self.decode_general(datum)?;
                self.general_path_only.store(true, Ordering::Relaxed);
                Ok(value)
            }
        }
    }

    fn decode_general<T: DeserializeOwned>(&self, datum: &[u8]) -> Result<T, SerdeError> {
        let id = self.writer_schema_id;
        let mut input = EofWatch {
            rest: datum,
            hit_eof: false,
        };
        let read = self.reader.read_value(&mut input);
        // apache-avro's `Value` decoder reads a boolean, string or union index cut off by the
        // end of the input as null instead of failing: a truncated record would decode into
        // nulls. Whether the datum ran out is therefore watched here.
        if input.hit_eof || read.as_ref().is_err_and(caused_by_eof) {
            return Err(SerdeError::new(format!(
                "truncated Avro datum: the record ends before the data of writer schema {id} \
                 does"
            )));
        }
        let value = read.map_err(|e| describe_decode_error(&e, id, self.resolves))?;
        let value = apache_avro::from_value::<T>(&value)
            .map_err(|e| describe_decode_error(&e, id, self.resolves))?;
        self.all_read(value, input.rest)
    }

    /// `value`, if the datum had no bytes after it.
    fn all_read<T>(&self, value: T, rest: &[u8]) -> Result<T, SerdeError> {
        if rest.is_empty() {
            return Ok(value);
        }
        Err(SerdeError::new(format!(
            "{} bytes left over after the Avro datum of writer schema {}: the record was not \
             written with that schema",
            rest.len(),
            self.writer_schema_id
        )))
    }
}

/// A datum being read, which remembers whether the reader asked for bytes past its end.
struct EofWatch<'a> {
    rest: &'a [u8],
    hit_eof: bool,
}

impl Read for EofWatch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.rest.read(buf)?;
        self.hit_eof |= read == 0 && !buf.is_empty();
        Ok(read)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.hit_eof |= buf.len() > self.rest.len();
        self.rest.read_exact(buf)
    }
}

/// A decoding error told by its class, never by the values apache-avro quotes.
fn describe_decode_error(e: &apache_avro::Error, writer_id: u32, resolving: bool) -> SerdeError {
    if caused_by_eof(e) {
        return SerdeError::new(format!(
            "truncated Avro datum: the record ends before the data of writer schema \
             {writer_id} does"
        ));
    }
    let message = match e.details() {
        Details::MemoryAllocation { .. } => format!(
            "Avro datum does not match writer schema {writer_id}: it declares a length beyond \
             the allocation limit"
        ),
        Details::DeserializeValue(text) if text.starts_with("missing field `") => {
            let field = text.split('`').nth(1).unwrap_or_default();
            format!(
                "Avro record of writer schema {writer_id} has no field `{field}` and the \
                 reader schema gives it no default"
            )
        }
        Details::ConvertToUtf8(_) | Details::ConvertToUtf8Error(_) => format!(
            "Avro datum does not match writer schema {writer_id}: a string is not valid UTF-8"
        ),
        _ if resolving => format!(
            "Avro datum of writer schema {writer_id} does not match it or cannot be resolved \
             to the reader schema"
        ),
        _ => format!("Avro datum does not match writer schema {writer_id}"),
    };
    SerdeError::new(message)
}

fn caused_by_eof(e: &apache_avro::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            return true;
        }
        source = cause.source();
    }
    false
}
