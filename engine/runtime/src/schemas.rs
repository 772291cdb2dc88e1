//! The worker's schema registry: from its configuration keys to the [`Schemas`] a
//! topology builds its Avro serdes with.

use std::sync::Arc;

use sluice_engine::serde::registry::{RegistryError, SchemaRegistryClient};
use sluice_engine::serde::{Schemas, SubjectOptions};

use crate::config::{SchemaRegistryConfig, WorkerConfig, redact_url_credentials};

/// The schemas of the registry `config` names, with requests on `runtime`; local ids, with
/// a warning, when it names none.
pub fn for_worker(
    config: &WorkerConfig,
    runtime: tokio::runtime::Handle,
) -> Result<Schemas, RegistryError> {
    let Some(registry) = &config.schema_registry else {
        log::warn!(
            "schema.registry.url is not set: Avro records carry local schema ids, which no \
             schema registry resolves; set it for anything but a demo or a test"
        );
        return Ok(Schemas::local());
    };
    let client = client(registry)?;
    log::info!(
        "schema registry {}: subjects <topic>-value, auto.register.schemas={}, \
         use.latest.version={}",
        redact_url_credentials(&registry.url),
        registry.auto_register_schemas,
        registry.use_latest_version
    );
    Ok(Schemas::registry(
        Arc::new(client),
        runtime,
        SubjectOptions {
            auto_register: registry.auto_register_schemas,
            use_latest_version: registry.use_latest_version,
        },
        config.startup_timeout,
    ))
}

/// A client of the configured registry: its URL, basic auth, timeout and TLS files.
pub fn client(config: &SchemaRegistryConfig) -> Result<SchemaRegistryClient, RegistryError> {
    let mut client = SchemaRegistryClient::new(&config.url)?.with_timeout(config.request_timeout);
    if let Some((user, password)) = config
        .basic_auth_user_info
        .as_deref()
        .and_then(|info| info.split_once(':'))
    {
        client = client.with_basic_auth(user, password);
    }
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| RegistryError::InvalidUrl {
            url: redact_url_credentials(&config.url),
            reason: format!("cannot read {key} {}: {e}", path.display()),
        })
    };
    let ca = match &config.ssl_ca_location {
        Some(path) => Some(read("schema.registry.ssl.ca.location", path)?),
        None => None,
    };
    let identity = match (&config.ssl_certificate_location, &config.ssl_key_location) {
        (Some(certificate), Some(key)) => {
            let mut pem = read("schema.registry.ssl.certificate.location", certificate)?;
            pem.push(b'\n');
            pem.extend(read("schema.registry.ssl.key.location", key)?);
            Some(pem)
        }
        _ => None,
    };
    if ca.is_some() || identity.is_some() {
        client = client.with_tls(ca.as_deref(), identity.as_deref())?;
    }
    Ok(client)
}
