//! The load: reference data in SecantusDB, coverage on its compacted topic, canonical
//! orders on the input topic, as normalization writes them.

use super::*;

/// Reference data generated for the test, in its server and its files.
pub(crate) struct Reference {
    pub(crate) data: ReferenceData,
    dir: PathBuf,
}

impl Reference {
    /// Generates the reference data (2,000 drugs, 3 plans, coverage for
    /// [`PATIENTS`] patients) and writes its JSON-lines files.
    pub(crate) fn generate(name: &str) -> Self {
        let data = ReferenceGenerator::new(REFERENCE_SEED)
            .with_patients(PATIENTS)
            .generate();
        assert_eq!(data.drugs.len(), 2_000, "the issue's 2,000 drugs");
        let plans: HashSet<&str> = data.formulary.iter().map(|r| r.plan_id.as_str()).collect();
        assert_eq!(plans.len(), 3, "the issue's 3 plans");
        let dir = std::env::temp_dir().join(format!(
            "sluice-e2e-reference-{name}-{}",
            uuid::Uuid::new_v4()
        ));
        data.write_json_lines(&dir)
            .expect("write the reference files");
        Self { data, dir }
    }

    /// Loads the drug reference and formulary into `server` through `load_reference` (the
    /// load behind `sluice reference load`): upserts, so loading again changes nothing.
    pub(crate) fn load_into(&self, server: &Secantus) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = runtime.block_on(async {
            let client = MongoConfig::new(server.uri())
                .unwrap()
                .with_server_selection_timeout(Duration::from_secs(20))
                .with_request_timeout(Duration::from_secs(120))
                .connect()
                .await
                .expect("a valid URI");
            load_reference(
                &client,
                &self.dir.join(DRUGS_FILE),
                &self.dir.join(FORMULARY_FILE),
            )
            .await
            .expect("the generated reference data loads")
        });
        let loaded = report.drugs.matched + report.drugs.inserted;
        assert_eq!(loaded as usize, self.data.drugs.len(), "{report:?}");
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One canonical order as written to the input topic, with the event id it carries.
#[derive(Clone)]
pub(crate) struct Input {
    pub(crate) order: MedicationOrder,
    pub(crate) event_id: String,
}

/// `n` canonical orders from the order generator through normalization's mapping, EHR and
/// pharmacy alternately, each with an event id of its own.
pub(crate) fn canonical_orders(n: usize, seed: u64) -> Vec<Input> {
    let mut generator = OrderGenerator::new(seed).with_malformed_ratio(0.0);
    let run = uuid::Uuid::new_v4().simple().to_string();
    (0..n)
        .map(|i| {
            let ehr = i % 2 == 0;
            let sample = if ehr {
                generator.next_ehr()
            } else {
                generator.next_pharmacy()
            };
            let json = serde_json::from_slice(&sample.value).expect("generated JSON");
            let order = if ehr {
                normalize::from_ehr(&json)
            } else {
                normalize::from_pharmacy(&json)
            }
            .expect("a well-formed generated order normalizes");
            Input {
                order,
                event_id: format!("evt-{run}-{i}"),
            }
        })
        .collect()
}

/// The canonical orders' serde as normalization has it without a registry: local id 1.
pub(crate) fn input_serde() -> AvroSerde<MedicationOrder> {
    AvroSerde::with_schema_id(
        canonical::schema().clone(),
        sluice_topologies::normalization::LOCAL_SCHEMA_ID,
    )
}

pub(crate) fn output_serde() -> AvroSerde<MedicationOrderEnriched> {
    AvroSerde::with_schema_id(enriched::schema().clone(), enrichment::LOCAL_SCHEMA_ID)
}

/// Writes `inputs` to the input topic as normalization does: keyed by orderId, Avro with
/// the local schema id, normalization's headers and lineage. Returns once the broker has
/// every one.
pub(crate) fn produce(brokers: &str, inputs: &[Input]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "10")
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.messages", "200000")
        // Java's partitioner, as a worker's producer has.
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let serde = input_serde();
    for input in inputs {
        let mut headers = Headers::new();
        normalize::set_headers(&input.order, &mut headers);
        let mut kafka_headers = OwnedHeaders::new();
        for (key, value) in headers.iter() {
            kafka_headers = kafka_headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        kafka_headers = kafka_headers
            .insert(Header {
                key: "event-id",
                value: Some(&input.event_id),
            })
            .insert(Header {
                key: "correlation-id",
                value: Some(CORRELATION_ID),
            });
        let value = serde
            .serialize(INPUT_TOPIC, &input.order)
            .unwrap()
            .expect("an order is never null");
        let mut record = BaseRecord::to(INPUT_TOPIC)
            .key(&input.order.order_id)
            .payload(&value)
            .headers(kafka_headers);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// The test's world: a broker, a SecantusDB with the reference loaded, coverage on its
/// compacted topic, and the input topic with [`PARTITIONS`] partitions.
pub(crate) struct World {
    pub(crate) broker: TestBroker,
    pub(crate) mongo: Secantus,
    pub(crate) reference: Reference,
}

impl World {
    pub(crate) fn start(name: &str) -> Self {
        let broker = TestBroker::start();
        let mongo = Secantus::start();
        let reference = Reference::generate(name);
        reference.load_into(&mongo);
        let published = publish_coverage(
            &broker.brokers,
            COVERAGE_TOPIC,
            PARTITIONS,
            1,
            &reference.data.coverage,
        )
        .expect("coverage is published");
        assert!(
            published > PATIENTS as usize * 9 / 10,
            "most of the {PATIENTS} patients have coverage: {published}"
        );
        broker.create_topics(&[INPUT_TOPIC], PARTITIONS);
        Self {
            broker,
            mongo,
            reference,
        }
    }
}
