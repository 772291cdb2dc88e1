//! The harness's async variants: (f) `map_async` calling a local HTTP service, at several
//! capacities, and (g) `enrich` at 95% cache hits.
//!
//! * (f) `sluice-calls-<capacity>`: each record is POSTed to an HTTP service that this
//!   harness runs in its own (parent) process, which answers after 5 ms with the body in
//!   upper case, the output of the plain map. One stream thread runs the 8 partitions' 8
//!   tasks, each with up to `capacity` calls in flight, so the ideal is
//!   8 × capacity ÷ 5 ms records/s, until the CPU (of the calls and the service, on the
//!   same machine) is the limit. These variants read a backlog of their own, smaller than
//!   the map variants' (`SLUICE_E2E_CALL_RECORDS`, default 20,000): at capacity 1 the
//!   ideal is 1,600 records/s.
//! * (g) `sluice-enrich`: the plain map's backlog and output, through `enrich` with its
//!   default options (input order, capacity 100) and cache: one record in 20 asks for a key
//!   of its own, the others for one of 1,000 hot keys, so about 95% of lookups hit. A miss
//!   waits 5 ms on the lookup (a timer, no CPU): what is measured is the engine's cost of
//!   a hit and of ordering hits behind misses, against the plain map (c).
//!   `sluice-enrich-keyed` is the same in key order, where hits overtake misses of other
//!   keys (every record of the backlog has a key of its own).

use std::convert::Infallible;
use std::time::Duration;

use axum::serve::ListenerExt;
use sluice_engine::lookup::{Lookup, LookupCacheConfig, LookupError};
use sluice_engine::operators::AsyncOptions;
use sluice_engine::{ProcessError, Serdes, Topology, TopologyBuilder};

use super::{INPUT_TOPIC, transform};

/// The input of the (f) variants.
pub const CALLS_INPUT_TOPIC: &str = "e2e.input.calls";

/// How long the service takes to answer, and a miss to be looked up.
pub const SERVICE_LATENCY: Duration = Duration::from_millis(5);

/// The capacities (f) runs at.
pub const CAPACITIES: [usize; 4] = [1, 10, 100, 1000];

/// The variants of this module, in table order.
pub fn variants() -> Vec<String> {
    CAPACITIES
        .iter()
        .map(|c| format!("sluice-calls-{c}"))
        .chain([
            "sluice-enrich".to_string(),
            "sluice-enrich-keyed".to_string(),
        ])
        .collect()
}

/// The capacity of an (f) variant.
pub fn capacity_of(variant: &str) -> Option<usize> {
    variant.strip_prefix("sluice-calls-")?.parse().ok()
}

/// Where a variant reads.
pub fn input_topic(variant: &str) -> &'static str {
    if capacity_of(variant).is_some() {
        CALLS_INPUT_TOPIC
    } else {
        INPUT_TOPIC
    }
}

/// Starts the HTTP service on a thread of its own; returns its URL. It answers every
/// POST after [`SERVICE_LATENCY`] with the body in upper case.
pub fn start_service() -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/upper",
                axum::routing::post(|body: axum::body::Bytes| async move {
                    tokio::time::sleep(SERVICE_LATENCY).await;
                    Ok::<_, Infallible>(transform(&body))
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            sender
                .send(format!("http://{}/upper", listener.local_addr().unwrap()))
                .unwrap();
            // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs hold answers back by
            // up to 40 ms: the service would not be a 5 ms one.
            let listener = listener.tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    receiver.recv().unwrap()
}

/// (f): each record's value POSTed to `url`; the answer is the output.
pub fn calls_topology(output: &str, url: &str, capacity: usize) -> Topology {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(capacity * 8)
        .build()
        .unwrap();
    let url: std::sync::Arc<str> = url.into();
    let builder = TopologyBuilder::new("e2e-calls");
    builder
        .source(
            "input",
            &[CALLS_INPUT_TOPIC],
            Serdes::bytes(),
            Serdes::bytes(),
        )
        .map_async(
            "upper",
            AsyncOptions::new().capacity(capacity),
            move |record: sluice_engine::Record<Vec<u8>, Vec<u8>>, call| {
                let request = client
                    .post(&*url)
                    .header("Idempotency-Key", call.idempotency_key())
                    .body(record.value.clone());
                async move {
                    let unavailable = |e: reqwest::Error| ProcessError::unavailable(e.to_string());
                    let response = request.send().await.map_err(unavailable)?;
                    let body = response.bytes().await.map_err(unavailable)?;
                    Ok(record.with_value(body.to_vec()))
                }
            },
        )
        .to("output", output, Serdes::bytes(), Serdes::bytes());
    builder.build().unwrap()
}

/// Reference data for (g): every key is known, and a lookup takes [`SERVICE_LATENCY`].
struct SlowReference;

impl Lookup for SlowReference {
    type Key = u64;
    type Value = [u8; 16];

    fn lookup(
        &self,
        key: &u64,
    ) -> impl Future<Output = Result<Option<[u8; 16]>, LookupError>> + Send {
        let code = *key;
        async move {
            tokio::time::sleep(SERVICE_LATENCY).await;
            Ok(Some(
                *format!("{code:016}").as_bytes().first_chunk().unwrap(),
            ))
        }
    }
}

/// The `"seq":<n>` a backlog value starts with.
fn sequence_of(value: &[u8]) -> Option<u64> {
    let digits = value.strip_prefix(b"{\"seq\":")?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The reference key record `n` asks for: its own for one in 20, else one of 1,000.
fn reference_key(n: u64) -> u64 {
    if n.is_multiple_of(20) {
        1_000 + n
    } else {
        n % 1_000
    }
}

/// (g): the plain map's transform, through `enrich` at about 95% hits; `keyed`: in key
/// order (hits overtake misses of other keys), else in input order.
pub fn enrich_topology(output: &str, keyed: bool) -> Topology {
    let options = if keyed {
        AsyncOptions::new().key_ordered()
    } else {
        AsyncOptions::new()
    };
    let builder = TopologyBuilder::new("e2e-enrich");
    builder
        .source("input", &[INPUT_TOPIC], Serdes::bytes(), Serdes::bytes())
        .enrich(
            "reference",
            SlowReference,
            LookupCacheConfig::default(),
            options,
            |record: &sluice_engine::Record<Vec<u8>, Vec<u8>>| {
                sequence_of(&record.value).map(reference_key)
            },
            |record, code| {
                let mut value = transform(&record.value);
                value.extend_from_slice(&code.unwrap_or([b'-'; 16]));
                Ok(record.with_value(value))
            },
        )
        .to("output", output, Serdes::bytes(), Serdes::bytes());
    builder.build().unwrap()
}
