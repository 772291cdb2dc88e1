"""The mapping of `normalize.py`: topologies/src/normalize/mod.rs ported function for function
(`normalize` is `normalize`, `_lookup` is `lookup`, `_ndc` is `ndc`, and so on), with the
same field alternatives, rules, check order and error messages. Kept apart from the Quix
Streams application so each file is one concern.
"""

import re

# ---------------------------------------------------------------------------------------
# The mapping: a port of topologies/src/normalize/mod.rs


class Refused(Exception):
    """Why an input goes to the dead-letter topic: ProcessError's kind and message."""

    __slots__ = ("kind", "message")

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


class _RuleBroken(Exception):
    """A present value broke its rule (normalize/mod.rs's `Rule`)."""


def _validation(message):
    return Refused("validation", message)


NDC_SYSTEMS = ("http://hl7.org/fhir/sid/ndc", "urn:oid:2.16.840.1.113883.6.69")
NDC_RULE = "must be an 11-digit NDC or a hyphenated 10-digit NDC in 4-4-2, 5-3-2 or 5-4-1 form"
NPI_LENGTH_RULE = "must be 10 digits"
NPI_CHECK_RULE = "fails the NPI check digit (Luhn) rule"
STATUS_RULE = "not a recognised FHIR or pharmacy order status"
TIMESTAMP_RULE = "must be an RFC 3339 timestamp or epoch milliseconds"
MIN_EPOCH_MILLIS = 100_000_000_000

# What Rust's str::trim removes: the Unicode White_Space characters (Python's str.strip()
# would also remove U+001C..U+001F).
_WS = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# serde_json's integer range: an integer outside it is read as a float.
_I64_MIN, _I64_MAX, _U64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _trim(s):
    return s.strip(_WS)


def _all_digits(s):
    return s != "" and s.isascii() and s.isdigit()


def _is_integer(v):
    # bool is an int in Python, never a number in JSON.
    return type(v) is int


def _is_json_integer(v):
    return type(v) is int and _I64_MIN <= v <= _U64_MAX


# One canonical field and its input paths, in order of preference (normalize/mod.rs `Field`).
ORDER_ID = ("orderId", ("orderId", "id"))
PATIENT_ID = ("patientId", ("patientId", "patient.id"))
SUBJECT_REFERENCE = "subject.reference"
NDC = ("medication.ndc", ("medication.ndc", "medication.code"))
MEDICATION_NAME = ("medication.name", ("medication.name", "medication.description", "medication.code.text"))
STRENGTH = ("medication.strength", ("medication.strength",))
FORM = ("medication.form", ("medication.form",))
QUANTITY = ("quantity", ("quantity", "medication.quantity"))
PRESCRIBER_ID = ("prescriber.id", ("prescriberId", "provider.id"))
PRESCRIBER_NPI = ("prescriber.npi", ("prescriberNpi", "provider.npi"))
PHARMACY_ID = ("pharmacy.id", ("pharmacy.id",))
PHARMACY_NAME = ("pharmacy.name", ("pharmacy.name",))
PHARMACY_NPI = ("pharmacy.npi", ("pharmacy.npi",))
PHARMACY_NCPDP_ID = ("pharmacy.ncpdpId", ("pharmacy.ncpdpId",))
STATUS = ("status", ("status",))
CREATED_AT = ("createdAt", ("createdAt", "orderDate"))
UPDATED_AT = ("updatedAt", ("updatedAt", "lastUpdated"))

_SPLIT_PATHS = {}


def _segments(path):
    segments = _SPLIT_PATHS.get(path)
    if segments is None:
        segments = _SPLIT_PATHS[path] = tuple(path.split("."))
    return segments


def _lookup(value, path):
    """The value at a dotted path; JSON null and blank strings count as absent."""
    for segment in _segments(path):
        if type(value) is not dict:
            return None
        value = value.get(segment)
    if value is None:
        return None
    if type(value) is str and _trim(value) == "":
        return None
    return value


def _first_present(value, field):
    for path in field[1]:
        found = _lookup(value, path)
        if found is not None:
            return path, found
    return None


def _missing(canonical, inputs):
    return _validation(f"missing required field {canonical} (looked for {', '.join(inputs)})")


def _invalid(canonical, input_path, rule):
    if canonical == input_path:
        return _validation(f"invalid {canonical}: {rule}")
    return _validation(f"invalid {canonical}: {rule} (read from {input_path})")


def _optional(value, field, convert):
    found = _first_present(value, field)
    if found is None:
        return None
    path, raw = found
    try:
        return convert(raw)
    except _RuleBroken as broken:
        raise _invalid(field[0], path, broken.args[0]) from None


def _required(value, field, convert):
    converted = _optional(value, field, convert)
    if converted is None:
        raise _missing(field[0], field[1])
    return converted


def _string(value):
    if type(value) is str:
        return _trim(value)
    raise _RuleBroken("must be a string")


def _text(value):
    """Free text that FHIR may wrap in a CodeableConcept: a string, or an object's `text`."""
    if type(value) is dict:
        text = value.get("text")
        if type(text) is str and _trim(text) != "":
            return _trim(text)
        raise _RuleBroken("must be a string or a CodeableConcept with text")
    return _string(value)


def _identifier(value):
    if type(value) is str:
        return _trim(value)
    if _is_json_integer(value):
        return str(value)
    raise _RuleBroken("must be a string or an integer")


def npi_check_digit(first9):
    """The Luhn check digit of `80840` followed by the nine digits."""
    total = 0
    for position, char in enumerate(reversed("80840" + first9)):
        digit = ord(char) - 48
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10


def is_valid_npi(npi):
    return len(npi) == 10 and _all_digits(npi) and npi_check_digit(npi[:9]) == ord(npi[9]) - 48


def _npi(value):
    npi = _identifier(value)
    if len(npi) != 10 or not _all_digits(npi):
        raise _RuleBroken(NPI_LENGTH_RULE)
    if not is_valid_npi(npi):
        raise _RuleBroken(NPI_CHECK_RULE)
    return npi


_NDC_WIDTHS = {(5, 4, 2), (4, 4, 2), (5, 3, 2), (5, 4, 1)}


def normalize_ndc(raw):
    """An NDC as 11 digits (5-4-2) without hyphens, or None when `raw` is not an NDC."""
    text = _trim(raw)
    head = text[:3]
    if len(head) == 3 and head.isascii() and head.lower() == "ndc":
        text = text[3:].lstrip(":" + _WS)
    if "-" not in text:
        return text if len(text) == 11 and _all_digits(text) else None
    segments = text.split("-")
    if len(segments) != 3:
        return None
    labeler, product, package = segments
    if not (_all_digits(labeler) and _all_digits(product) and _all_digits(package)):
        return None
    if (len(labeler), len(product), len(package)) not in _NDC_WIDTHS:
        return None
    return labeler.rjust(5, "0") + product.rjust(4, "0") + package.rjust(2, "0")


def _ndc(value):
    def parse(path, raw):
        if type(raw) is not str:
            raise _invalid(NDC[0], path, "must be a string")
        ndc = normalize_ndc(raw)
        if ndc is None:
            raise _invalid(NDC[0], path, NDC_RULE)
        return ndc

    raw = _lookup(value, "medication.ndc")
    if raw is not None:
        return parse("medication.ndc", raw)
    code = _lookup(value, "medication.code")
    if code is None:
        raise _missing(NDC[0], NDC[1])
    if type(code) is dict:
        codings = code.get("coding")
        if type(codings) is list:
            for coding in codings:
                system = coding.get("system") if type(coding) is dict else None
                if type(system) is str and system in NDC_SYSTEMS:
                    # The first NDC coding decides; without a code there is no NDC.
                    found = _lookup(coding, "code")
                    if found is None:
                        break
                    return parse("medication.code.coding.code", found)
        # A concept coded only in other systems (RxNorm, SNOMED) carries no NDC.
        raise _missing(NDC[0], NDC[1])
    return parse("medication.code", code)


def _patient_from_reference(reference):
    segments = _trim(reference).split("/")
    for first, second in zip(segments, segments[1:]):
        if first == "Patient" and second != "":
            return second
    return None


def _patient_id(value):
    found = _optional(value, PATIENT_ID, _identifier)
    if found is not None:
        return found
    reference = _lookup(value, SUBJECT_REFERENCE)
    if reference is None:
        raise _missing(PATIENT_ID[0], PATIENT_ID[1] + (SUBJECT_REFERENCE,))
    patient = _patient_from_reference(reference) if type(reference) is str else None
    if patient is None:
        raise _invalid(PATIENT_ID[0], SUBJECT_REFERENCE, "must be a FHIR Patient reference (Patient/<id>)")
    return patient


# Rust's f64::from_str grammar (no underscores, no inner spaces, no hex).
_RUST_FLOAT = re.compile(
    r"[+-]?(?:inf|infinity|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\Z",
    re.IGNORECASE | re.ASCII,
)
_POSITIVE_RULE = "must be a number greater than zero, or an object with such a value"


def _positive_number(value):
    number = None
    if type(value) is float:
        number = value
    elif type(value) is int:
        try:
            number = float(value)
        except OverflowError:
            number = None
    elif type(value) is str:
        text = _trim(value)
        if _RUST_FLOAT.match(text):
            number = float(text)
    if number is not None and number == number and number not in (float("inf"), float("-inf")) and number > 0.0:
        return number
    raise _RuleBroken(_POSITIVE_RULE)


def _quantity(value):
    if type(value) is dict:
        amount = value.get("value")
        unit = value.get("unit")
        # The unit is checked first, as normalize/mod.rs does.
        if unit is None:
            pass
        elif type(unit) is str:
            unit = _trim(unit) or None
        else:
            raise _RuleBroken("unit must be a string")
        return {"value": _positive_number(amount), "unit": unit}
    return {"value": _positive_number(value), "unit": None}


def _ncpdp_id(value):
    ncpdp = _identifier(value)
    if len(ncpdp) == 7 and _all_digits(ncpdp):
        return ncpdp
    raise _RuleBroken("must be 7 digits")


def _pharmacy(value):
    found = _lookup(value, "pharmacy")
    if found is None:
        return None
    if type(found) is not dict:
        raise _invalid("pharmacy", "pharmacy", "must be an object")
    pharmacy_id = _optional(value, PHARMACY_ID, _identifier)
    name = _optional(value, PHARMACY_NAME, _string)
    npi = _optional(value, PHARMACY_NPI, _npi)
    ncpdp = _optional(value, PHARMACY_NCPDP_ID, _ncpdp_id)
    if pharmacy_id is None and name is None and npi is None and ncpdp is None:
        return None
    return {"id": pharmacy_id, "name": name, "npi": npi, "ncpdpId": ncpdp}


_STATUSES = {}
for _status, _spellings in (
    ("PENDING", ("DRAFT", "NEW", "RECEIVED", "PENDING", "QUEUED")),
    ("ACTIVE", ("ACTIVE", "IN_PROGRESS", "PROCESSING", "FILLING")),
    ("ON_HOLD", ("ON_HOLD", "SUSPENDED")),
    ("READY", ("FILLED", "READY", "READY_FOR_PICKUP")),
    ("COMPLETED", ("COMPLETED", "COMPLETE", "ENDED", "DISPENSED", "PICKED_UP", "DELIVERED", "SHIPPED", "SOLD")),
    ("STOPPED", ("STOPPED", "DISCONTINUED")),
    ("CANCELLED", ("CANCELLED", "CANCELED", "RETURNED_TO_STOCK")),
    ("ENTERED_IN_ERROR", ("ENTERED_IN_ERROR",)),
    ("UNKNOWN", ("UNKNOWN",)),
):
    for _spelling in _spellings:
        _STATUSES[_spelling] = _status
_STATUS_SEPARATORS = str.maketrans({"-": "_", " ": "_"})


def map_status(raw):
    """The canonical status, compared without regard to ASCII case or to `-`, `_`, space."""
    key = _trim(raw).translate(_STATUS_SEPARATORS).translate(_ASCII_UPPER)
    return _STATUSES.get(key)


def _status(value):
    if type(value) is not str:
        raise _RuleBroken("must be a string")
    status = map_status(value)
    if status is None:
        raise _RuleBroken(STATUS_RULE)
    return status


# chrono's DateTime::parse_from_rfc3339: 'T', 't' or ' ' between date and time, any number
# of fraction digits (nanoseconds kept), 'Z'/'z' or an offset of +-HH:MM (U+2212 minus too).
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+\-\u2212])([0-9]{2}):([0-5][0-9]))\Z"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(year, month, day):
    """Days since 1970-01-01 of a proleptic Gregorian date (year 0 included)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _rfc3339_millis(text):
    match = _RFC3339.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    leap_year = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS_IN_MONTH[month - 1] + (month == 2 and leap_year):
        return None
    nanos = int((match.group(7) or "0")[:9].ljust(9, "0"))
    if second == 60:  # a leap second: 59 s and 1e9 ns, as chrono keeps it
        second, nanos = 59, nanos + 1_000_000_000
    if hour > 23 or minute > 59 or second > 59:
        return None
    offset = 0
    if match.group(8) is not None:
        offset = int(match.group(9)) * 3600 + int(match.group(10)) * 60
        if offset >= 86400:
            return None
        if match.group(8) != "+":
            offset = -offset
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    return seconds * 1000 + nanos // 1_000_000


def _timestamp(value):
    if type(value) is str:
        millis = _rfc3339_millis(_trim(value))
        if millis is None:
            raise _RuleBroken(TIMESTAMP_RULE)
        return millis
    if type(value) is int and _I64_MIN <= value <= _I64_MAX:
        if value >= MIN_EPOCH_MILLIS:
            return value
        raise _RuleBroken("epoch milliseconds before 1973: epoch seconds given?")
    raise _RuleBroken(TIMESTAMP_RULE)


def change_type(status, created_at, updated_at):
    if status == "CANCELLED":
        return "CANCELLED"
    if created_at == updated_at:
        return "CREATED"
    return "UPDATED"


def normalize(payload, source_system):
    """The canonical order (a dict in the Avro schema's shape) of a feed's payload, or
    Refused. Fields are checked in schema order, as normalize/mod.rs checks them."""
    if type(payload) is not dict:
        raise _validation("the medication order payload must be a JSON object")
    order_id = _required(payload, ORDER_ID, _identifier)
    patient_id = _patient_id(payload)
    medication = {
        "ndc": _ndc(payload),
        "name": _required(payload, MEDICATION_NAME, _string),
        "strength": _optional(payload, STRENGTH, _string),
        "form": _optional(payload, FORM, _text),
    }
    quantity = _optional(payload, QUANTITY, _quantity)
    prescriber = {
        "id": _optional(payload, PRESCRIBER_ID, _identifier),
        "npi": _required(payload, PRESCRIBER_NPI, _npi),
    }
    pharmacy = _pharmacy(payload)
    status = _required(payload, STATUS, _status)
    created_at = _required(payload, CREATED_AT, _timestamp)
    updated_at = _optional(payload, UPDATED_AT, _timestamp)
    if updated_at is None:
        updated_at = created_at
    return {
        "orderId": order_id,
        "sourceSystem": source_system,
        "patientId": patient_id,
        "medication": medication,
        "quantity": quantity,
        "prescriber": prescriber,
        "pharmacy": pharmacy,
        "status": status,
        "createdAt": created_at,
        "updatedAt": updated_at,
        "changeType": change_type(status, created_at, updated_at),
    }
