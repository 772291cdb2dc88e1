//! The configuration's checks, each naming the key and the fix.
use super::*;
use crate::kafka::redact_kafka_error;

fn minimal() -> ConfigBuilder {
    let mut b = ConfigBuilder::new();
    b.set("application.id", "app", "flag")
        .set("bootstrap.servers", "127.0.0.1:9092", "flag");
    b
}

#[test]
fn defaults_follow_the_processing_guarantee() {
    let c = minimal().build().unwrap();
    assert_eq!(c.processing_guarantee, ProcessingGuarantee::ExactlyOnceV2);
    assert_eq!(c.commit_interval, Duration::from_millis(100));
    assert_eq!(c.num_stream_threads, 1);
    let c = minimal()
        .set("processing.guarantee", "at_least_once", "flag")
        .build()
        .unwrap();
    assert_eq!(c.commit_interval, Duration::from_millis(5000));
}

#[test]
fn a_toml_file_may_use_dotted_keys_or_tables() {
    let dir = std::env::temp_dir().join(format!("sluice-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        "application.id = \"orders\"\nbootstrap.servers = \"k:9092\"\nnum.stream.threads = 4\n\
         [kafka]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.password\" = \"hunter2\"\n",
    )
    .unwrap();
    let c = ConfigBuilder::new().file(&path).build().unwrap();
    assert_eq!(c.num_stream_threads, 4);
    assert_eq!(c.kafka["security.protocol"], "SASL_SSL");
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn environment_overrides_the_file_and_flags_override_the_environment() {
    let mut b = minimal();
    b.env([(
        "SLUICE_CONFIG_NUM_STREAM_THREADS".to_string(),
        "3".to_string(),
    )]);
    assert_eq!(b.build().unwrap().num_stream_threads, 3);
    b.set("num.stream.threads", "5", "flag");
    assert_eq!(b.build().unwrap().num_stream_threads, 5);
}

#[test]
fn the_scripts_own_sluice_variables_are_not_configuration_keys() {
    let vars = [
        ("SLUICE_CACHE_DIR", "/var/cache/sluice"),
        ("SLUICE_FAILPOINT", "after-commit"),
        ("SLUICE_BROKER_HOST", "127.0.0.2"),
        ("SLUICE_BROKER_PORT", "19093"),
        ("SLUICE_BROKER_DIR", "/tmp/broker"),
    ];
    let mut b = minimal();
    b.env(vars.map(|(k, v)| (k.to_string(), v.to_string())));
    assert!(b.build().is_ok(), "{:?}", b.build().err());
}

#[test]
fn sluice_brokers_is_the_cluster_like_the_brokers_flag() {
    let config = ConfigBuilder::new()
        .set("application.id", "app", "test")
        .env([("SLUICE_BROKERS".to_string(), "127.0.0.1:19092".to_string())])
        .build()
        .unwrap();
    assert_eq!(config.bootstrap_servers, "127.0.0.1:19092");
}

#[test]
fn a_key_set_without_the_config_prefix_is_an_error_saying_what_to_write() {
    let err = minimal()
        .env([("SLUICE_NUM_STREAM_THREADS".to_string(), "3".to_string())])
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable SLUICE_NUM_STREAM_THREADS is not read: configuration keys come \
         from SLUICE_CONFIG_* variables; write SLUICE_CONFIG_NUM_STREAM_THREADS to set \
         num.stream.threads"
    );
}

#[test]
fn a_bad_value_names_the_key_the_value_and_what_is_accepted() {
    let err = minimal()
        .set("commit.interval.ms", "soon", "flag")
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "commit.interval.ms = \"soon\" is invalid: a whole number of milliseconds from 1 to 600000 (default 100 under exactly_once_v2, 5000 under at_least_once)"
    );
}

#[test]
fn an_unknown_key_is_an_error_naming_it_and_its_source() {
    let err = minimal()
        .env([(
            "SLUICE_CONFIG_NUM_STREAM_THREAD".to_string(),
            "3".to_string(),
        )])
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unknown configuration key `num.stream.thread`"),
        "{text}"
    );
    assert!(text.contains("SLUICE_CONFIG_NUM_STREAM_THREAD"), "{text}");
}

#[test]
fn every_problem_is_reported_at_once_and_secrets_are_not_echoed() {
    let err = ConfigBuilder::new()
        .set("processing.guarantee", "maybe", "flag")
        .set("kafka.sasl.password", "hunter2", "flag")
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("3 configuration problems"), "{text}");
    assert!(text.contains("application.id is required"), "{text}");
    assert!(text.contains("bootstrap.servers is required"), "{text}");
    assert!(text.contains("exactly_once_v2 or at_least_once"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn scoped_kafka_properties_reach_only_their_client() {
    let c = minimal()
        .set("kafka.security.protocol", "SSL", "flag")
        .set("kafka.consumer.session.timeout.ms", "6000", "flag")
        .set("kafka.producer.linger.ms", "20", "flag")
        .build()
        .unwrap();
    let consumer: Vec<_> = c.kafka_for(KafkaClient::Consumer).collect();
    let producer: Vec<_> = c.kafka_for(KafkaClient::Producer).collect();
    let admin: Vec<_> = c.kafka_for(KafkaClient::Admin).collect();
    assert_eq!(
        consumer,
        [("session.timeout.ms", "6000"), ("security.protocol", "SSL")]
    );
    assert_eq!(
        producer,
        [("linger.ms", "20"), ("security.protocol", "SSL")]
    );
    assert_eq!(admin, [("security.protocol", "SSL")]);
}

#[test]
fn librdkafka_config_errors_hide_secret_values() {
    let e = rdkafka::config::ClientConfig::new()
        .set("ssl.key.password", "hunter2")
        .set("no.such.property", "x")
        .create::<rdkafka::consumer::BaseConsumer>()
        .err()
        .unwrap();
    // The unknown key is reported with its (non-secret) value…
    assert!(
        redact_kafka_error(e)
            .to_string()
            .contains("no.such.property")
    );
    let secret = rdkafka::error::KafkaError::ClientConfig(
        rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
        "invalid value".into(),
        "sasl.password".into(),
        "hunter2".into(),
    );
    // …and a secret one never is.
    let text = redact_kafka_error(secret).to_string();
    assert!(
        !text.contains("hunter2") && text.contains("<redacted>"),
        "{text}"
    );
}

#[test]
fn kafka_properties_the_guarantees_rest_on_are_refused() {
    let err = minimal()
        .set("kafka.consumer.isolation.level", "read_uncommitted", "flag")
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the worker sets isolation.level itself for its guarantees"),
        "{err}"
    );
}

#[test]
fn malformed_bootstrap_servers_are_rejected() {
    let err = minimal()
        .set("bootstrap.servers", "localhost", "flag")
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("bootstrap.servers = \"localhost\" is invalid"),
        "{err}"
    );
}

#[test]
fn the_schema_registry_is_configured_by_its_keys_and_its_credentials_are_redacted() {
    let config = minimal()
        .set(
            "schema.registry.url",
            "https://registry.internal:8081",
            "test",
        )
        .set(
            "schema.registry.basic.auth.user.info",
            "sluice:hunter2",
            "test",
        )
        .set("schema.registry.request.timeout.ms", "2500", "test")
        .set("auto.register.schemas", "false", "test")
        .set("use.latest.version", "true", "test")
        .build()
        .unwrap();
    let registry = config.schema_registry.as_ref().unwrap();
    assert_eq!(registry.url, "https://registry.internal:8081");
    assert_eq!(registry.request_timeout, Duration::from_millis(2500));
    assert!(!registry.auto_register_schemas);
    assert!(registry.use_latest_version);
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");

    let without = minimal().build().unwrap();
    assert!(without.schema_registry.is_none());
}

#[test]
fn registry_settings_without_a_registry_url_name_the_missing_key() {
    let err = minimal()
        .set(
            "schema.registry.basic.auth.user.info",
            "sluice:hunter2",
            "test",
        )
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("schema.registry.url is required"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_registry_url_that_is_not_http_names_the_key_and_hides_its_password() {
    let err = minimal()
        .set(
            "schema.registry.url",
            "ftp://user:hunter2@registry:8081",
            "test",
        )
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("schema.registry.url = "), "{err}");
    assert!(err.contains("http:// or https://"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn mutual_tls_with_the_registry_needs_both_the_certificate_and_the_key() {
    let err = minimal()
        .set("schema.registry.url", "https://registry:8081", "test")
        .set(
            "schema.registry.ssl.certificate.location",
            "/etc/sluice/client.pem",
            "test",
        )
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("schema.registry.ssl.key.location is required"),
        "{err}"
    );
}
