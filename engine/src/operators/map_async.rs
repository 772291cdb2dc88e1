//! map_async: a call to the outside world for each record (a lookup, an HTTP request),
//! run concurrently while exactly-once holds.
//!
//! The stream thread stays synchronous. Each record's call runs on the worker's tokio
//! runtime (the TestDriver's own runtime in tests); its result is forwarded on the stream
//! thread, so the operators after it see records one at a time as everywhere else.
//!
//! * **Order.** By default ([`AsyncOrder::Input`]) what an input partition's calls
//!   return leaves in input order, however the calls complete. With
//!   [`AsyncOrder::Key`], order is kept within a key only: a slow call holds back later
//!   records of its key, not those of other keys.
//! * **Bounded.** At most [`AsyncOptions::capacity`] inputs of a task are in flight; a
//!   task that reaches it stops taking input (its partitions pause) until half have
//!   completed.
//! * **Exactly-once.** An input is done only when its call has completed and its result
//!   has gone through the operators after it. Offsets commit at the oldest input not done,
//!   so an input in flight at a crash or rebalance is read again and its call made again:
//!   every call must be safe to repeat. [`Call::idempotency_key`] (the input's event id)
//!   is the same every time the same input is called for, for the service to de-duplicate
//!   on.
//! * **Failures.** A transient error (the `ProcessError::transient` kind: a service down,
//!   a timeout) is retried inside the call with jittered backoff until the per-call
//!   timeout; a call still failing then is not the record's fault: the task reports it
//!   unavailable and the runtime pauses and rewinds its partition, never dead-lettering or
//!   skipping it. A permanent error follows the topology's error policy: the input goes
//!   to the dead-letter topic with headers naming the operator and the error kind.
//!
//! ```
//! use std::time::Duration;
//! use sluice_engine::operators::AsyncOptions;
//! use sluice_engine::{Serdes, TestDriver, TopologyBuilder};
//!
//! let builder = TopologyBuilder::new("prices");
//! builder
//!     .source("in", &["drugs"], Serdes::string(), Serdes::string())
//!     .map_async("price", AsyncOptions::new().capacity(10), |drug, call| async move {
//!         // A real operator would call a service here, with call.idempotency_key().
//!         tokio::time::sleep(Duration::from_millis(5)).await;
//!         let price = drug.value.len() as i64 * 100;
//!         Ok(drug.with_value(price))
//!     })
//!     .to("out", "prices", Serdes::string(), Serdes::i64());
//! let mut driver = TestDriver::new(builder.build().unwrap());
//! driver.pipe_raw("drugs", Some(b"ndc-1"), Some(b"aspirin")).unwrap();
//!
//! let out = driver.read("prices", &Serdes::string(), &Serdes::i64()).unwrap();
//! assert_eq!(out[0].value, 700);
//! ```

use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::{ErrorKind, ProcessError};
use crate::metrics::AsyncCallMetrics;
use crate::processor::{
    self, AsyncCalls, Context, DynProcessor, DynRecord, StartedCall, TaskContext,
};
use crate::record::{Origin, Record};
use crate::topology::{NodeSpec, Stream};

/// In what order an async operator's results leave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncOrder {
    /// In the order of the input partition (the default).
    Input,
    /// In order within a key; different keys overtake each other.
    Key,
}

/// How an async operator runs its calls.
#[derive(Clone, Debug)]
pub struct AsyncOptions {
    pub(crate) capacity: usize,
    pub(crate) timeout: Duration,
    pub(crate) order: AsyncOrder,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
}

impl Default for AsyncOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl AsyncOptions {
    /// Capacity 100, timeout 5 s, input order.
    pub fn new() -> Self {
        Self {
            capacity: 100,
            timeout: Duration::from_secs(5),
            order: AsyncOrder::Input,
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_secs(1),
        }
    }

    /// At most `inputs` of a task in flight at once (at least 1).
    pub fn capacity(mut self, inputs: usize) -> Self {
        self.capacity = inputs.max(1);
        self
    }

    /// How long one call may take, its retries of transient errors included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Results leave in order within a key only.
    pub fn key_ordered(mut self) -> Self {
        self.order = AsyncOrder::Key;
        self
    }

    /// The backoff between retries of a transient error inside a call: from `min`,
    /// doubling up to `max`, with random jitter.
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max.max(min);
        self
    }
}

/// What a call knows of the input it serves.
#[derive(Clone, Debug)]
pub struct Call {
    /// The input's event id, from its lineage, if it has one.
    pub(crate) event_id: Option<Arc<str>>,
    pub(crate) origin: Origin,
    /// The key derived from the origin, for an input without an event id: made on first
    /// use only, so a call that never sends it (a cache hit) costs no allocation for it.
    pub(crate) derived_key: std::sync::OnceLock<Arc<str>>,
}

impl Call {
    /// The same for every call made for the same input, however often it is made again
    /// after a crash or a rebalance: the input's event id, or without one
    /// `sluice:<topic>:<partition>:<offset>`. Send it as the service's idempotency key.
    pub fn idempotency_key(&self) -> &str {
        match &self.event_id {
            Some(id) => id,
            None => self.derived_key.get_or_init(|| {
                let origin = &self.origin;
                format!(
                    "sluice:{}:{}:{}",
                    origin.topic, origin.partition, origin.offset
                )
                .into()
            }),
        }
    }

    /// Where the input was read.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

/// How a call retries a transient error: with jittered exponential backoff from the
/// operator's minimum delay, doubling to its maximum, until the call's timeout ends it.
#[derive(Clone, Debug)]
pub(crate) struct Retry {
    min: Duration,
    max: Duration,
    retries: ::metrics::Counter,
}

impl Retry {
    /// Runs `attempt` until it succeeds or fails permanently; each retry is counted.
    pub(crate) async fn run<T, Fut>(&self, attempt: impl FnMut() -> Fut) -> Result<T, ProcessError>
    where
        Fut: Future<Output = Result<T, ProcessError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times();
        let retries = &self.retries;
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &ProcessError| e.transient)
            .notify(|_, _| retries.increment(1))
            .await
    }
}

impl<K, V> Stream<K, V>
where
    K: Clone + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A call per record whose result replaces it: `f` returns the future of the new
    /// record. See the [module docs](self) for order, capacity, failures and
    /// exactly-once.
    pub fn map_async<K2, V2, F, Fut>(
        &self,
        name: &str,
        options: AsyncOptions,
        f: F,
    ) -> Stream<K2, V2>
    where
        K2: Clone + Send + 'static,
        V2: Clone + Send + 'static,
        F: Fn(Record<K, V>, Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Record<K2, V2>, ProcessError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add_async_node(name, "map_async", options, move |record, call, retry| {
            let f = f.clone();
            // Each attempt gets its own copy of the record: `f` takes it by value.
            async move { retry.run(|| f(record.clone(), call.clone())).await }
        })
    }

    /// An async operator node of `kind` whose call for each record is `f`, which retries
    /// what it retries through the [`Retry`] it is given: what `map_async` and `enrich`
    /// are made of. The node bounds each call by the timeout and measures it.
    pub(crate) fn add_async_node<K2, V2, F, Fut>(
        &self,
        name: &str,
        kind: &'static str,
        options: AsyncOptions,
        f: F,
    ) -> Stream<K2, V2>
    where
        K2: Clone + Send + 'static,
        V2: Clone + Send + 'static,
        F: Fn(Record<K, V>, Call, Retry) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Record<K2, V2>, ProcessError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let operator = name.to_string();
        let factory: processor::ProcessorFactory = Arc::new(move || {
            Box::new(AsyncOperator::<K, V, K2, V2, F> {
                f: f.clone(),
                options: options.clone(),
                hasher: std::hash::RandomState::new(),
                metrics: AsyncCallMetrics::new(&operator),
                _marker: PhantomData,
            }) as Box<dyn DynProcessor>
        });
        self.add_node(NodeSpec::processor(name, kind, factory).asynchronous())
    }
}

struct AsyncOperator<K, V, K2, V2, F> {
    f: Arc<F>,
    options: AsyncOptions,
    hasher: std::hash::RandomState,
    metrics: AsyncCallMetrics,
    _marker: PhantomData<fn(K, V, K2, V2)>,
}

/// Counts a call out of the in-flight gauge however it ends: with a result, or dropped
/// (cancelled with its task).
struct InFlightGuard(::metrics::Gauge);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl<K, V, K2, V2, F, Fut> AsyncCalls for AsyncOperator<K, V, K2, V2, F>
where
    K: Clone + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    K2: Clone + Send + 'static,
    V2: Clone + Send + 'static,
    F: Fn(Record<K, V>, Call, Retry) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Record<K2, V2>, ProcessError>> + Send + 'static,
{
    fn options(&self) -> &AsyncOptions {
        &self.options
    }

    fn start(&mut self, record: DynRecord, call: Call) -> StartedCall {
        let record: Record<K, V> = record.into_typed();
        let key_hash = self.hasher.hash_one(&record.key);
        let metrics = self.metrics.clone();
        let retry = Retry {
            min: self.options.retry_min,
            max: self.options.retry_max,
            retries: metrics.retries.clone(),
        };
        let call = (self.f)(record, call, retry);
        let timeout = self.options.timeout;
        metrics.in_flight.increment(1.0);
        let guard = InFlightGuard(metrics.in_flight.clone());
        let future = async move {
            let _guard = guard;
            let started = tokio::time::Instant::now();
            let result = match tokio::time::timeout(timeout, call).await {
                Ok(result) => result.map(DynRecord::from_typed),
                Err(_) => {
                    metrics.timeouts.increment(1);
                    Err(ProcessError::unavailable(format!(
                        "the call did not complete within its timeout of {timeout:?}"
                    )))
                }
            };
            metrics.duration.record(started.elapsed().as_secs_f64());
            result
        };
        StartedCall {
            key_hash,
            future: Box::pin(future),
        }
    }

    fn forward(&mut self, record: DynRecord, task: TaskContext<'_>) {
        let mut task = task;
        Context::<K2, V2>::new(&mut task).forward(record.into_typed());
    }
}

impl<K, V, K2, V2, F, Fut> DynProcessor for AsyncOperator<K, V, K2, V2, F>
where
    K: Clone + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    K2: Clone + Send + 'static,
    V2: Clone + Send + 'static,
    F: Fn(Record<K, V>, Call, Retry) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Record<K2, V2>, ProcessError>> + Send + 'static,
{
    fn process(&mut self, _record: DynRecord, _ctx: TaskContext<'_>) -> Result<(), ProcessError> {
        // The task starts an async operator's calls through `as_async` instead.
        Err(ProcessError::new(
            ErrorKind::State,
            "an async operator was run as a synchronous one",
        ))
    }

    fn on_tick(&mut self, _now_ms: i64, _ctx: TaskContext<'_>) -> Result<(), ProcessError> {
        Ok(())
    }

    fn stream_time_interval(&self) -> Option<i64> {
        None
    }

    fn on_stream_time(&mut self, _ms: i64, _ctx: TaskContext<'_>) -> Result<(), ProcessError> {
        Ok(())
    }

    fn on_commit(&mut self, _ctx: TaskContext<'_>) -> Result<(), ProcessError> {
        Ok(())
    }

    fn as_async(&mut self) -> Option<&mut dyn AsyncCalls> {
        Some(self)
    }
}
