//! The inputs, and the output watched (read_committed) while the test runs.

use super::*;

/// Writes the inputs, paced over [`PRODUCE_FOR`]: a random key of [`KEYS`], the sequence
/// number as the value.
pub(crate) fn produce(brokers: &str) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "10")
        .set("queue.buffering.max.messages", "200000")
        // Java's partitioner, as the worker's producer has: an output (same key) lands in
        // the partition number of its input, so one output partition holds all of an
        // input partition's outputs and their order can be checked whole.
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let mut rng = rand::rng();
    let started = Instant::now();
    for seq in 0..INPUTS {
        let key = format!("k{:03}", rng.random_range(0..KEYS));
        send_waiting(&producer, INPUT_TOPIC, &key, seq.to_string().as_bytes());
        let due = started + PRODUCE_FOR.mul_f64((seq + 1) as f64 / INPUTS as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// The sequence number an output's value answers about.
pub(crate) fn answered_seq(value: &[u8]) -> Option<usize> {
    std::str::from_utf8(value)
        .ok()?
        .strip_prefix("answered:")?
        .parse()
        .ok()
        .filter(|seq| *seq < INPUTS)
}

/// Reads the output read_committed while the test runs: when each input's output was
/// first seen committed.
pub(crate) struct Observer {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) seen: Arc<Mutex<HashMap<usize, Instant>>>,
    pub(crate) thread: JoinHandle<()>,
}

impl Observer {
    pub(crate) fn start(brokers: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("observer-{}", uuid::Uuid::new_v4()))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            assignment
                .add_partition_offset(OUTPUT_TOPIC, partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let now = Instant::now();
                    if let Some(seq) = message.payload().and_then(answered_seq) {
                        seen.lock().unwrap().entry(seq).or_insert(now);
                    }
                }
            })
        };
        Self { stop, seen, thread }
    }

    pub(crate) fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub(crate) fn finish(self) -> HashMap<usize, Instant> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}
