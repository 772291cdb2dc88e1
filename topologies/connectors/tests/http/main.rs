//! Outbound HTTP against real HTTP servers on loopback, started by the tests.
//!
//! Each server records every request and every connection, and answers as it is told
//! (fail N times, 429 with Retry-After, 400, 410, stall, redirect). Loopback is opened
//! through the allow-list, as `webhooks.allow.cidrs` would, except in the SSRF tests,
//! which check that a destination nobody allowed gets no connection at all.

mod delivery;
mod protection;
mod server;
mod ssrf;
mod telemetry;
