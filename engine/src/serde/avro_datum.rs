//! Avro's binary encoding written by hand, for a type whose encoding is on a hot path.
//!
//! apache-avro's schema-aware serializer finds every field of every record by name in a
//! hashed map, which makes it the largest single cost of a record that is decoded,
//! validated and re-encoded (see BENCHMARKS.md, "Instructions per record"). A type can
//! instead write its datum in schema order with a [`DatumWriter`], given to
//! [`AvroSerde::with_datum_writer`](super::AvroSerde::with_datum_writer). Nothing checks a
//! hand-written datum against the schema at run time: its type's tests must compare it,
//! byte for byte, with apache-avro's encoding of the same values.
//!
//! The encoding is the one of the Avro specification: `int` and `long` as zig-zag varints,
//! `double` as 8 little-endian bytes, `string` and `bytes` as a length then the bytes, an
//! enum as its symbol's index, a union as its branch's index then the value, `null` as
//! nothing.
//!
//! ```
//! use sluice_engine::serde::DatumWriter;
//!
//! let mut out = Vec::new();
//! let mut datum = DatumWriter::new(&mut out);
//! datum.string("ab");
//! datum.optional(Some(&-1_i64), |d, v| d.long(*v)); // ["null", "long"]
//! assert_eq!(out, [4, b'a', b'b', 2, 1]);
//! ```

/// Appends Avro binary encodings to a buffer.
pub struct DatumWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> DatumWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    /// An Avro `long` (also `timestamp-millis` and the like).
    pub fn long(&mut self, value: i64) {
        let mut n = ((value << 1) ^ (value >> 63)) as u64;
        while n >= 0x80 {
            self.out.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.out.push(n as u8);
    }

    /// An Avro `int`: the same varint as a `long`.
    pub fn int(&mut self, value: i32) {
        self.long(i64::from(value));
    }

    pub fn double(&mut self, value: f64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    pub fn boolean(&mut self, value: bool) {
        self.out.push(u8::from(value));
    }

    pub fn string(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    pub fn bytes(&mut self, value: &[u8]) {
        self.long(value.len() as i64);
        self.out.extend_from_slice(value);
    }

    /// An enum value: the index of its symbol in the schema.
    pub fn symbol(&mut self, index: usize) {
        self.long(index as i64);
    }

    /// The branch of a union that the value that follows is written as.
    pub fn branch(&mut self, index: usize) {
        self.long(index as i64);
    }

    /// A `["null", T]` union: branch 0 for `None`, else branch 1 and the value.
    pub fn optional<T: ?Sized>(&mut self, value: Option<&T>, write: impl FnOnce(&mut Self, &T)) {
        match value {
            None => self.branch(0),
            Some(value) => {
                self.branch(1);
                write(self, value);
            }
        }
    }

    /// A `["null", "string"]` union.
    pub fn optional_string(&mut self, value: Option<&str>) {
        self.optional(value, |d, s| d.string(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    fn written(write: impl FnOnce(&mut DatumWriter)) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut DatumWriter::new(&mut out));
        out
    }

    fn apache(schema: &str, value: Value) -> Vec<u8> {
        let schema = apache_avro::Schema::parse_str(schema).unwrap();
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap();
        writer.write_value_to_vec(value).unwrap()
    }

    #[test]
    fn longs_match_apache_avro_at_every_varint_length() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            8191,
            -8193,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(
                written(|d| d.long(v)),
                apache(r#""long""#, Value::Long(v)),
                "{v}"
            );
        }
    }

    #[test]
    fn strings_doubles_and_unions_match_apache_avro() {
        assert_eq!(
            written(|d| d.string("héllo")),
            apache(r#""string""#, Value::String("héllo".into()))
        );
        assert_eq!(
            written(|d| d.double(-2.5)),
            apache(r#""double""#, Value::Double(-2.5))
        );
        let union = r#"["null", "string"]"#;
        assert_eq!(
            written(|d| d.optional_string(None)),
            apache(union, Value::Union(0, Box::new(Value::Null)))
        );
        assert_eq!(
            written(|d| d.optional_string(Some("x"))),
            apache(union, Value::Union(1, Box::new(Value::String("x".into()))))
        );
    }
}
