r"""Sluice's normalization topology as a Quix Streams application: the peer of the
end-to-end bench's `quix-normalization-*` variants (benches/e2e_throughput/quix.rs).

What it does, as `topologies/src/normalization.rs` does:

    external.ehr.medication-orders  (JSON) --> normalize (EHR)      --\
                                                                        --> canonical orders (Avro)
    external.pharmacy.prescriptions (JSON) --> normalize (pharmacy) --/
                                                    \--> dead-letter topic (the input, with why)

* Each input is decoded as schemaless JSON, bare or inside the platform's event envelope
  (`{metadata{eventId, eventType, eventSource, timestamp, version, correlationId?,
  causationId?}, payload}`), and its payload mapped onto the canonical medication order
  with the field alternatives, rules, check order and error messages of
  `topologies/src/normalize/mod.rs` (ported function for function in `normalize_rules.py`: `normalize` is
  `normalize`, `_lookup` is `lookup`, `_ndc` is `ndc`, and so on).
* The output is keyed by `orderId` (UTF-8), keeps the input's timestamp, carries the
  `source-system`, `event-type` and `change-type` headers and the lineage headers
  `correlation-id`, `causation-id` and `event-id`, and its value is Avro in the Confluent
  wire format with schema id 1 (`normalization::LOCAL_SCHEMA_ID`, what
  `normalization::local_output_serde()` writes without a registry): byte 0, the id as 4
  big-endian bytes, then the schemaless Avro datum of `topologies/src/schemas/
  medication_order.avsc` (written with fastavro).
* An input that is not JSON, or whose payload breaks a rule, goes to the dead-letter topic
  as it was read (key, value, headers, timestamp) plus Sluice's `sluice.error.kind`,
  `sluice.error.message` (the same message: the canonical field and rule, never a value),
  `sluice.source.topic`, `sluice.source.partition`, `sluice.source.offset`,
  `sluice.topology` (`normalization`) and `sluice.operator` (`ehr-orders` /
  `pharmacy-prescriptions` for JSON that does not decode, `normalize-ehr` /
  `normalize-pharmacy` for a payload that breaks a rule).
* Guarantees as Sluice's: `exactly-once` (Quix's transactional checkpoints, consumer
  read_committed, commit every 100 ms) or `at-least-once` (idempotent producer, offsets
  committed every 5 s, consumer read_uncommitted), Sluice's `commit.interval.ms`
  defaults; the producer partitions by murmur2 of the key like Sluice's Java-compatible
  partitioner, so an order lands in the same partition number under both.

What differs, and why:

* `event-id` is a version-8 UUID derived from the input's topic, partition and offset
  (and the sink, `canonical-sink`, and the output's index, 0) like Sluice's, but hashed
  with BLAKE2b (hashlib) where Sluice uses xxh3-128: xxh3 is not in Python's standard
  library and the bench pins only quixstreams and fastavro. So the ids are as stable
  across reprocessing as Sluice's, but not equal to them. The same holds for the
  `causation-id`/`correlation-id` of a bare input (Sluice names it by its source
  position, `lineage::source_event_id`); an enveloped input's ids are copied as Sluice
  copies them.
* Dead-letter messages of JSON that does not decode say `value: invalid JSON at line L
  column C` (or `truncated JSON` at the end of the input) as Sluice's do, but the column
  is Python's json module's, which may differ from serde_json's by a character or so.
  Sluice's 128-level nesting limit is not reproduced (Python's decoder stops at its own
  recursion limit, about 1,000 levels; such an input is dead-lettered all the same).
* A string with a lone surrogate escape (`"\ud800"`), which Python's json module accepts
  and serde_json refuses, is dead-lettered when it cannot be encoded, as `value: invalid
  JSON` without a position.
* The transactional id under exactly-once is Quix's own (a random UUID per process),
  where Sluice's names the application, process and thread.

Alike on purpose: one processing loop (Quix Streams runs one in one Python thread, with
librdkafka's threads around it; the bench runs Sluice with one stream thread), the same
librdkafka (confluent-kafka 2.12 bundles 2.12.1, the version of Sluice's rdkafka-sys), the
producer's linger (5 ms), and the output partition of every key (murmur2).

Checked on `sluice demo`'s orders (1% malformed; 40,000 and 200,000 records): every
canonical record equal to Sluice's field for field by key, in the same partition with the
same timestamp and the same headers (lineage ids aside), and every dead letter with the
same kind, message (positions included), operator, key and value.

Configuration (environment):

    SLUICE_QUIX_BROKERS          bootstrap servers (default $SLUICE_BROKERS, else 127.0.0.1:19092)
    SLUICE_QUIX_EHR_TOPIC        default external.ehr.medication-orders
    SLUICE_QUIX_PHARMACY_TOPIC   default external.pharmacy.prescriptions
    SLUICE_QUIX_OUTPUT_TOPIC     default canonical.medication-orders.quix
    SLUICE_QUIX_DLQ_TOPIC        default normalization.quix.dlq
    SLUICE_QUIX_GROUP            consumer group, default quix-normalization
    SLUICE_QUIX_STATE_DIR        Quix's state dir (unused by this stateless app), default ./quix-state
    SLUICE_QUIX_GUARANTEE        exactly-once (default) or at-least-once
    SLUICE_QUIX_COMMIT_INTERVAL_MS  default 100 under exactly-once, 5000 under at-least-once
    SLUICE_QUIX_PARTITIONS       partitions of the output and dead-letter topics when Quix
                                 creates them, default 8
    SLUICE_QUIX_LOGLEVEL         Quix's log level, default WARNING
    SLUICE_QUIX_FIRST_RECORD_FILE  when set, the seconds from start to the first record
                                 are written there (the bench subtracts nothing; it shows them)

It reads its inputs from the earliest offset its group has not committed, runs until
SIGTERM (or SIGINT), then commits and exits 0. On start it logs (stderr) the quixstreams
version; on the first record, how long after start that was. Record values are never
logged: they are patient data.

    python normalize.py --self-test    checks the mapping on payloads of normalize/mod.rs's tests
"""

import hashlib
import io
import json
import logging
import os
import re
import struct
import sys
import time
import warnings

_STARTED = time.monotonic()

# ---------------------------------------------------------------------------------------
# The canonical schema and its encoding

_HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_PATH = os.path.join(_HERE, "..", "..", "topologies", "src", "schemas", "medication_order.avsc")
# normalization::LOCAL_SCHEMA_ID: the id written when no schema registry is configured.
LOCAL_SCHEMA_ID = 1
_WIRE_PREFIX = b"\x00" + struct.pack(">I", LOCAL_SCHEMA_ID)

TOPOLOGY = "normalization"
SINK = "canonical-sink"
EVENT_TYPE = "medication-order"

from normalize_rules import (  # noqa: E402 (the mapping, ported from normalize/mod.rs)
    Refused,
    STATUS_RULE,
    TIMESTAMP_RULE,
    NDC,
    _lookup,
    npi_check_digit,
    normalize_ndc,
    _ndc,
    map_status,
    _rfc3339_millis,
    normalize,
)

# ---------------------------------------------------------------------------------------
# JSON events (engine/src/envelope.rs JsonEvent, engine/src/serde/json.rs JsonEventSerde)


def _no_constant(name):
    raise ValueError("not JSON")  # NaN, Infinity: Python accepts them, JSON does not


def _finite_float(text):
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError("number out of range")  # serde_json refuses what overflows f64
    return number


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
_METADATA_STRINGS = ("eventId", "eventType", "eventSource", "timestamp", "version")
_METADATA_OPTIONAL = ("correlationId", "causationId")


def _line_column(text, position):
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


def decode_event(value):
    """(payload, metadata or None) of a JSON event, or Refused (kind deserialization)."""
    if value is None:
        raise Refused("deserialization", "value: null where JSON was expected")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as error:
        prefix = value[: error.start].decode("utf-8")
        line, column = _line_column(prefix, len(prefix))
        raise Refused("deserialization", f"value: invalid JSON at line {line} column {column}") from None
    try:
        document = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        # serde_json says EOF when only JSON whitespace follows where it stopped.
        what = "truncated JSON" if error.pos >= len(text.rstrip(" \t\r\n")) else "invalid JSON"
        raise Refused("deserialization", f"value: {what} at line {error.lineno} column {error.colno}") from None
    except (ValueError, RecursionError):
        line, column = _line_column(text, len(text))
        raise Refused("deserialization", f"value: invalid JSON at line {line} column {column}") from None
    if type(document) is dict and type(document.get("metadata")) is dict and "payload" in document:
        metadata = document["metadata"]
        for name, field in metadata.items():
            if (name in _METADATA_STRINGS and type(field) is not str) or (
                name in _METADATA_OPTIONAL and field is not None and type(field) is not str
            ):
                raise Refused(
                    "deserialization",
                    "value: the event envelope's metadata does not match the platform's shape "
                    "(eventId, eventType, eventSource, timestamp and version are strings)",
                )
        for name in _METADATA_STRINGS:
            if name not in metadata:
                raise Refused("deserialization", f"value: the event envelope's metadata has a missing field `{name}`")
        return document["payload"], metadata
    return document, None


# ---------------------------------------------------------------------------------------
# Lineage (engine/src/lineage.rs), with BLAKE2b where Sluice hashes with xxh3


def _uuid8(digest):
    b = bytearray(digest)
    b[6] = (b[6] & 0x0F) | 0x80
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _position(topic, partition, offset):
    t = topic.encode()
    return struct.pack("<Q", len(t)) + t + struct.pack("<iq", partition, offset)


def source_event_id(topic, partition, offset):
    return _uuid8(hashlib.blake2b(b"sluice-source-position" + _position(topic, partition, offset), digest_size=16).digest())


_SINK_BYTES = struct.pack("<Q", len(SINK)) + SINK.encode() + struct.pack("<I", 0)


def derived_event_id(topic, partition, offset):
    return _uuid8(hashlib.blake2b(_position(topic, partition, offset) + _SINK_BYTES, digest_size=16).digest())


def _header_str(headers, name):
    """The last value of header `name` when it is UTF-8 (Headers::get_str)."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    if found is None:
        return None
    if isinstance(found, str):
        return found
    try:
        return bytes(found).decode("utf-8")
    except UnicodeDecodeError:
        return None


# Headers that policy::dead_letter_record sets (replacing the input's of that name).
_DEAD_LETTER_HEADERS = frozenset(
    (
        "sluice.error.kind", "sluice.error.message", "sluice.source.topic", "sluice.source.partition",
        "sluice.source.offset", "sluice.topology", "sluice.operator",
    )
)
# Headers a canonical record gets (replacing the input's of that name).
_OWN_HEADERS = frozenset(
    ("source-system", "event-type", "change-type", "correlation-id", "causation-id", "event-id")
)

# ---------------------------------------------------------------------------------------
# The application


def _env(name, default):
    value = os.environ.get(name, "")
    return value if value != "" else default


def self_test():
    """Checks the port against the payloads and expectations of normalize/mod.rs's tests."""
    ehr = {
        "resourceType": "MedicationRequest",
        "id": "mr-1001",
        "status": "active",
        "subject": {"reference": "Patient/pat-42"},
        "medication": {
            "code": {
                "coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "617312"},
                    {"system": "http://hl7.org/fhir/sid/ndc", "code": "1234-5678-90"},
                ],
                "text": "Atorvastatin 20 MG Oral Tablet",
            },
            "strength": "20 mg",
            "form": {"text": "tablet"},
        },
        "quantity": {"value": 30, "unit": "tablet"},
        "provider": {"id": "prac-7", "npi": "1234567893"},
        "createdAt": "2024-05-01T09:30:00Z",
        "lastUpdated": "2024-05-01T12:00:00.250+02:00",
    }
    assert normalize(ehr, "EHR") == {
        "orderId": "mr-1001",
        "sourceSystem": "EHR",
        "patientId": "pat-42",
        "medication": {"ndc": "01234567890", "name": "Atorvastatin 20 MG Oral Tablet", "strength": "20 mg", "form": "tablet"},
        "quantity": {"value": 30.0, "unit": "tablet"},
        "prescriber": {"id": "prac-7", "npi": "1234567893"},
        "pharmacy": None,
        "status": "ACTIVE",
        "createdAt": 1_714_555_800_000,
        "updatedAt": 1_714_557_600_250,
        "changeType": "UPDATED",
    }, normalize(ehr, "EHR")
    pharmacy = {
        "orderId": "rx-555",
        "patientId": "pat-42",
        "medication": {"ndc": "12345-678-90", "name": "Metformin Hydrochloride", "strength": "500 mg", "form": "tablet"},
        "quantity": 60,
        "prescriberId": "dr-1",
        "prescriberNpi": "1003000126",
        "pharmacy": {"id": "store-12", "name": "Main Street Pharmacy", "npi": "1987654328", "ncpdpId": "0512345"},
        "status": "FILLED",
        "orderDate": 1_714_555_800_000,
        "updatedAt": 1_714_559_400_000,
    }
    order = normalize(pharmacy, "PHARMACY")
    assert order["medication"]["ndc"] == "12345067890" and order["status"] == "READY", order
    assert order["quantity"] == {"value": 60.0, "unit": None} and order["changeType"] == "UPDATED", order

    def refused(payload):
        try:
            normalize(payload, "PHARMACY")
        except Refused as error:
            return error.message
        raise AssertionError("not refused")

    assert refused(dict(pharmacy, prescriberNpi="1234567890")) == (
        "invalid prescriber.npi: fails the NPI check digit (Luhn) rule (read from prescriberNpi)"
    )
    assert refused(dict(pharmacy, prescriberNpi=12345)) == "invalid prescriber.npi: must be 10 digits (read from prescriberNpi)"
    assert refused(dict(pharmacy, pharmacy={"npi": "1987654320"})) == "invalid pharmacy.npi: fails the NPI check digit (Luhn) rule"
    assert refused(dict(pharmacy, pharmacy="Main Street")) == "invalid pharmacy: must be an object"
    assert refused(dict(pharmacy, status="TELEPORTED")) == f"invalid status: {STATUS_RULE}"
    assert refused(dict(pharmacy, orderDate=1_714_555_800)) == (
        "invalid createdAt: epoch milliseconds before 1973: epoch seconds given? (read from orderDate)"
    )
    for bad in ("2024-05-01", "yesterday", 1.7e12, True):
        assert refused(dict(pharmacy, orderDate=bad)) == f"invalid createdAt: {TIMESTAMP_RULE} (read from orderDate)", bad
    assert refused(dict(pharmacy, updatedAt="2024-13-45T99:99:99Z")) == f"invalid updatedAt: {TIMESTAMP_RULE}"
    assert refused(dict(pharmacy, quantity=-1234567)).startswith("invalid quantity: must be a number greater than zero")
    assert refused(dict(pharmacy, quantity={"value": 1, "unit": 3})) == "invalid quantity: unit must be a string"
    assert refused([]) == "the medication order payload must be a JSON object"
    no_subject = {k: v for k, v in ehr.items() if k != "subject"}
    try:
        normalize(no_subject, "EHR")
        raise AssertionError("not refused")
    except Refused as error:
        assert error.message == "missing required field patientId (looked for patientId, patient.id, subject.reference)"
    assert [map_status(s) for s in ("on-hold", "ON_HOLD", "On Hold", " on_hold ", "picked-up", "onhold")] == [
        "ON_HOLD", "ON_HOLD", "ON_HOLD", "ON_HOLD", "COMPLETED", None,
    ]
    assert (npi_check_digit("123456789"), npi_check_digit("100300012"), npi_check_digit("198765432")) == (3, 6, 8)
    assert [normalize_ndc(n) for n in ("NDC: 1234-5678-90", "12345678901", "1234567890", "12345-678-9")] == [
        "01234567890", "12345678901", None, None,
    ]
    assert _rfc3339_millis("2024-05-01T09:30:00.5-04:00") == 1_714_570_200_500
    assert _rfc3339_millis("2024-01-01T00:00:00Z") == 1_704_067_200_000
    for raw, kind in ((b"{not json", "invalid JSON"), (b'{"a":', "truncated JSON"), (None, "null where JSON")):
        try:
            decode_event(raw)
            raise AssertionError("decoded")
        except Refused as error:
            assert kind in error.message and error.kind == "deserialization", error.message
    print("normalize.py self-test: ok", file=sys.stderr)


def main():
    if "--self-test" in sys.argv[1:]:
        self_test()
        return
    # Quix Streams' dependencies warn about their own dependencies' deprecations on import
    # (and install filters of their own that show them): not this program's to fix.
    shown = warnings.showwarning
    warnings.showwarning = lambda *args, **kwargs: None
    try:
        import fastavro
        import quixstreams
        from quixstreams import Application, message_context
        from quixstreams.models import TopicConfig
        from quixstreams.models.serializers import Serializer
    finally:
        warnings.showwarning = shown

    brokers = _env("SLUICE_QUIX_BROKERS", _env("SLUICE_BROKERS", "127.0.0.1:19092"))
    ehr_topic = _env("SLUICE_QUIX_EHR_TOPIC", "external.ehr.medication-orders")
    pharmacy_topic = _env("SLUICE_QUIX_PHARMACY_TOPIC", "external.pharmacy.prescriptions")
    output_topic = _env("SLUICE_QUIX_OUTPUT_TOPIC", "canonical.medication-orders.quix")
    dlq_topic = _env("SLUICE_QUIX_DLQ_TOPIC", "normalization.quix.dlq")
    group = _env("SLUICE_QUIX_GROUP", "quix-normalization")
    state_dir = _env("SLUICE_QUIX_STATE_DIR", "quix-state")
    guarantee = _env("SLUICE_QUIX_GUARANTEE", "exactly-once")
    if guarantee not in ("exactly-once", "at-least-once"):
        sys.exit(f"normalize.py: SLUICE_QUIX_GUARANTEE must be exactly-once or at-least-once, not {guarantee!r}")
    default_interval = "100" if guarantee == "exactly-once" else "5000"
    commit_interval_ms = int(_env("SLUICE_QUIX_COMMIT_INTERVAL_MS", default_interval))
    partitions = int(_env("SLUICE_QUIX_PARTITIONS", "8"))
    loglevel = _env("SLUICE_QUIX_LOGLEVEL", "WARNING")
    first_record_file = _env("SLUICE_QUIX_FIRST_RECORD_FILE", "")

    log = logging.getLogger("normalize")
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    log.info(
        "quixstreams %s, %s, commit every %d ms, %s + %s -> %s (dead letters: %s), group %s",
        quixstreams.__version__, guarantee, commit_interval_ms, ehr_topic, pharmacy_topic,
        output_topic, dlq_topic, group,
    )

    with open(SCHEMA_PATH, encoding="utf-8") as f:
        schema = fastavro.parse_schema(json.load(f))
    write_datum = fastavro.schemaless_writer

    def encode(order):
        buffer = io.BytesIO()
        buffer.write(_WIRE_PREFIX)
        write_datum(buffer, schema, order)
        return buffer.getvalue()

    app = Application(
        broker_address=brokers,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=commit_interval_ms / 1000.0,
        processing_guarantee=guarantee,
        state_dir=state_dir,
        loglevel=loglevel,
        # As Sluice's stream threads: read_committed only under exactly-once.
        consumer_extra_config={
            "isolation.level": "read_committed" if guarantee == "exactly-once" else "read_uncommitted"
        },
        # Sluice's producer: linger 5 ms, Java's murmur2 partitioner (Quix's default is
        # murmur2 already; the same for every record with a key).
        producer_extra_config={"linger.ms": 5},
        use_changelog_topics=False,
    )

    class Payload(Serializer):
        """Writes the bytes the processing step made (Avro or the dead-lettered input)."""

        def __call__(self, value, ctx):
            return value[2]

    created = TopicConfig(num_partitions=partitions, replication_factor=1)
    output = app.topic(output_topic, key_serializer="bytes", value_serializer=Payload(), config=created)
    dead_letters = app.topic(dlq_topic, key_serializer="bytes", value_serializer=Payload(), config=created)

    first_record = [True]

    def processor(source_system, source_operator, map_operator):
        def process(value, key, timestamp, headers):
            """(topic, key, value bytes, headers) of the record this input becomes."""
            if first_record[0]:
                first_record[0] = False
                after = time.monotonic() - _STARTED
                log.info("first record %.2f s after start", after)
                if first_record_file:
                    with open(first_record_file, "w", encoding="utf-8") as f:
                        f.write(f"{after:.3f}\n")
            context = message_context()
            topic, partition, offset = context.topic, context.partition, context.offset
            headers = list(headers) if headers else []
            operator = source_operator
            try:
                payload, metadata = decode_event(value)
                operator = map_operator
                order = normalize(payload, source_system)
                if metadata is not None:
                    cause_id = metadata["eventId"]
                    correlation = metadata.get("correlationId")
                else:
                    cause_id = _header_str(headers, "event-id") if headers else None
                    correlation = _header_str(headers, "correlation-id") if headers else None
                    if cause_id is None:
                        cause_id = source_event_id(topic, partition, offset)
                if correlation is None:
                    correlation = cause_id
                out_headers = [h for h in headers if h[0] not in _OWN_HEADERS]
                out_headers += (
                    ("source-system", source_system.lower()),
                    ("event-type", EVENT_TYPE),
                    ("change-type", order["changeType"].lower()),
                    ("correlation-id", correlation.encode("utf-8")),
                    ("causation-id", cause_id.encode("utf-8")),
                    ("event-id", derived_event_id(topic, partition, offset)),
                )
                return output, order["orderId"].encode("utf-8"), encode(order), out_headers
            except Refused as error:
                kind, message = error.kind, error.message
            except UnicodeEncodeError:
                # A lone surrogate escape (\ud800) that Python's json accepts and serde_json
                # refuses: not JSON to Sluice.
                kind, message, operator = "deserialization", "value: invalid JSON", source_operator
            dead_headers = [h for h in headers if h[0] not in _DEAD_LETTER_HEADERS]
            dead_headers += (
                ("sluice.error.kind", kind),
                ("sluice.error.message", message),
                ("sluice.source.topic", topic),
                ("sluice.source.partition", str(partition)),
                ("sluice.source.offset", str(offset)),
                ("sluice.topology", TOPOLOGY),
                ("sluice.operator", operator),
            )
            return dead_letters, key, value, dead_headers

        return process

    for topic_name, source_system, source_operator, map_operator in (
        (ehr_topic, "EHR", "ehr-orders", "normalize-ehr"),
        (pharmacy_topic, "PHARMACY", "pharmacy-prescriptions", "normalize-pharmacy"),
    ):
        source = app.topic(topic_name, key_deserializer="bytes", value_deserializer="bytes")
        sdf = app.dataframe(source)
        sdf = sdf.apply(processor(source_system, source_operator, map_operator), metadata=True)
        sdf = sdf.set_headers(lambda value, key, timestamp, headers: value[3])
        sdf.to_topic(lambda value, key, timestamp, headers: value[0], key=lambda value: value[1])

    app.run()
    log.info("stopped")


if __name__ == "__main__":
    main()
