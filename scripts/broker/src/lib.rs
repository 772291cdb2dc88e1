//! Empty: this crate exists only to pin crabka-broker 0.3.0 in Cargo.lock (see ../README.md).
