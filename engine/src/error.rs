//! Errors an operator or serde reports about one record.
//!
//! A [`ProcessError`] is about *one input record*; the task turns it into a dead-letter
//! record, a skip or a stop, as the topology's [`ErrorPolicy`](crate::ErrorPolicy) says.
//! Its message travels in dead-letter headers, logs and errors, so it must never carry
//! payload values: name the field and the rule it broke, never what the field held.

use std::fmt;

/// What kind of failure a record met; written as the `sluice.error.kind` dead-letter header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The bytes could not be decoded by the source's serde.
    Deserialization,
    /// A sink could not encode the value with its serde.
    Serialization,
    /// The record decoded but breaks a rule of the target model (a required field is missing,
    /// a code is malformed).
    Validation,
    /// An operator failed for another reason.
    Processing,
    /// A state store could not be read or written. Not the record's fault: the task stops
    /// whatever the error policy, and a restart restores the store from its changelog.
    State,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Deserialization => "deserialization",
            ErrorKind::Serialization => "serialization",
            ErrorKind::Validation => "validation",
            ErrorKind::Processing => "processing",
            ErrorKind::State => "state",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "deserialization" => ErrorKind::Deserialization,
            "serialization" => ErrorKind::Serialization,
            "validation" => ErrorKind::Validation,
            "processing" => ErrorKind::Processing,
            "state" => ErrorKind::State,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record could not be processed. The message names fields and rules, never values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessError {
    pub kind: ErrorKind,
    pub message: String,
    /// The record is fine but something it needs is not (a registry or lookup service is
    /// down). Such an error is never dead-lettered: the task gives the record back to the
    /// runtime, which retries it with backoff.
    pub transient: bool,
}

impl ProcessError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            transient: false,
        }
    }

    /// A state store failed (never carries keys or values: the store error names the store
    /// and the operation).
    pub fn state(error: sluice_state::StoreError) -> Self {
        Self::new(ErrorKind::State, error.to_string())
    }

    /// A service the record needs is unavailable; retry the record later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            transient: true,
            ..Self::new(ErrorKind::Processing, message)
        }
    }

    /// A serde failure, keeping whether it was transient.
    pub fn from_serde(kind: ErrorKind, what: &str, e: SerdeError) -> Self {
        Self {
            transient: e.transient,
            ..Self::new(kind, format!("{what}: {}", e.message))
        }
    }

    /// A required field is absent; `field` is its path in the input, such as `medication.ndc`.
    pub fn missing_field(field: &str) -> Self {
        Self::new(
            ErrorKind::Validation,
            format!("missing required field {field}"),
        )
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }

    pub fn processing(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Processing, message)
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ProcessError {}

/// A serde could not encode or decode a value. The message never quotes the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SerdeError {
    pub message: String,
    /// The bytes may be fine but a service the serde needs (the schema registry) did not
    /// answer: retry rather than dead-letter.
    pub transient: bool,
}

impl SerdeError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
        }
    }
}
