//! Where a topology's Avro serdes get their schema ids: the worker's schema registry, or,
//! without one, fixed local ids.
//!
//! Subjects follow the TopicNameStrategy: values of topic `t` are subject `t-value`. With a
//! registry, a topology's serdes are made at start, before any record moves:
//!
//! * an output topic's serde registers its schema (`auto.register.schemas`, the default),
//!   or finds the id the subject already has for it, or, with `use.latest.version`, writes
//!   with the subject's latest version, as Confluent's serializers do;
//! * an input topic's serde registers nothing: it decodes each record by the id it carries,
//!   fetching an unseen writer schema once and resolving it to the topology's schema.
//!
//! A registry that is down or slow at start is waited for, with backoff, up to the worker's
//! start-up timeout; an answer that will not change (an incompatible schema, a subject
//! without the schema, bad credentials) fails the start at once.
//!
//! Local ids ([`Schemas::local`]) are for the demo and the `TestDriver`: no registry can
//! resolve them, so a consumer that looks one up gets the wrong schema or none.

use std::future::Future;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use apache_avro::Schema;
use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AvroSerde;
use super::registry::{RegistryError, SchemaRegistryClient};

/// The subject of the values of `topic` (TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// What a worker does with its output schemas at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubjectOptions {
    /// Register each output's schema (`auto.register.schemas`, default true).
    pub auto_register: bool,
    /// Without registering, write with the subject's latest version
    /// (`use.latest.version`, default false).
    pub use_latest_version: bool,
}

impl Default for SubjectOptions {
    fn default() -> Self {
        Self {
            auto_register: true,
            use_latest_version: false,
        }
    }
}

/// The schema ids of a topology's Avro serdes: from a registry, or local.
pub struct Schemas {
    registry: Option<Registry>,
}

struct Registry {
    client: Arc<SchemaRegistryClient>,
    runtime: tokio::runtime::Handle,
    options: SubjectOptions,
    /// How long start-up waits for a registry that does not answer.
    patience: Duration,
}

impl Schemas {
    /// Local ids: for the demo and the `TestDriver` only (see the module doc).
    pub fn local() -> Self {
        Self { registry: None }
    }

    /// The schemas of `client`'s registry. Requests, and later the fetches of writer
    /// schemas that decoding needs, run on `runtime`, which must outlive the serdes.
    /// A registry that does not answer is waited for up to `patience`.
    pub fn registry(
        client: Arc<SchemaRegistryClient>,
        runtime: tokio::runtime::Handle,
        options: SubjectOptions,
        patience: Duration,
    ) -> Self {
        Self {
            registry: Some(Registry {
                client,
                runtime,
                options,
                patience,
            }),
        }
    }

    /// Whether these are local ids.
    pub fn is_local(&self) -> bool {
        self.registry.is_none()
    }

    /// The serde of the values a topology writes to `topic` (and may read back): the
    /// subject's id for `schema`, per the [`SubjectOptions`]; `local_id` without a registry.
    pub fn output_serde<T>(
        &self,
        topic: &str,
        schema: &Schema,
        local_id: u32,
    ) -> Result<AvroSerde<T>, RegistryError>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        let Some(registry) = &self.registry else {
            return Ok(AvroSerde::with_schema_id(schema.clone(), local_id));
        };
        let options = registry.options;
        registry.at_start(topic, schema, move |client, subject, schema| async move {
            if options.auto_register {
                AvroSerde::registered(client, &subject, schema).await
            } else if options.use_latest_version {
                AvroSerde::latest_version(client, &subject, schema).await
            } else {
                AvroSerde::looked_up(client, &subject, schema).await
            }
        })
    }

    /// The serde of the values a topology reads from `topic`, written by others: any
    /// writer id, resolved to `schema`; nothing registered. `local_id` without a registry.
    pub fn input_serde<T>(
        &self,
        topic: &str,
        schema: &Schema,
        local_id: u32,
    ) -> Result<AvroSerde<T>, RegistryError>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        let Some(registry) = &self.registry else {
            return Ok(AvroSerde::with_schema_id(schema.clone(), local_id));
        };
        registry.at_start(topic, schema, |client, subject, schema| async move {
            AvroSerde::reading(client, &subject, schema).await
        })
    }
}

impl Registry {
    /// Runs `make` for `topic`'s value subject on the registry's runtime, retrying what may
    /// pass (the registry down, slow or failing) until `patience` runs out.
    fn at_start<T, F, Fut>(
        &self,
        topic: &str,
        schema: &Schema,
        make: F,
    ) -> Result<AvroSerde<T>, RegistryError>
    where
        T: 'static,
        F: Fn(Arc<SchemaRegistryClient>, String, Schema) -> Fut + Send + 'static,
        Fut: Future<Output = Result<AvroSerde<T>, RegistryError>> + Send,
    {
        let (client, subject, schema) = (
            Arc::clone(&self.client),
            value_subject(topic),
            schema.clone(),
        );
        let patience = self.patience;
        let attempt = move || make(Arc::clone(&client), subject.clone(), schema.clone());
        let retried = async move {
            let backoff = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(2))
                .with_total_delay(Some(patience))
                .without_max_times()
                .with_jitter();
            attempt
                .retry(backoff)
                .when(may_pass)
                .notify(|e, after| {
                    log::warn!("schema registry not ready ({e}); trying again in {after:?}")
                })
                .await
        };
        // Spawned, not `block_on`: the caller may itself be on a runtime's thread.
        let (sender, receiver) = mpsc::sync_channel(1);
        drop(self.runtime.spawn(async move {
            let _ = sender.send(retried.await);
        }));
        // Every attempt is bounded by the client's timeout; the margin covers the last one.
        let bound = self.patience + self.client.timeout() + Duration::from_secs(5);
        match receiver.recv_timeout(bound) {
            Ok(made) => made,
            Err(_) => Err(RegistryError::Timeout {
                method: "start-up".into(),
                url: self.client.base_url().to_string(),
                timeout: bound,
            }),
        }
    }
}

/// Whether a registry error may pass by itself: no answer, or a 5xx or 429.
fn may_pass(e: &RegistryError) -> bool {
    match e {
        RegistryError::Timeout { .. } | RegistryError::Transport { .. } => true,
        RegistryError::Http { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}
