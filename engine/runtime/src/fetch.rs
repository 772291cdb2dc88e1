//! The stream thread's fetch queue: the records of every assigned partition, read in
//! batches.
//!
//! librdkafka fetches each partition into a queue of its own and, for a subscribed
//! consumer, forwards it to the consumer's queue, where rebalances, errors and statistics
//! arrive too. Read from there, each record is one event: a lock, clock reads and an
//! allocation a record. Here each partition's queue is forwarded instead, before the
//! partition is assigned, to one queue the stream thread owns, which it reads up to
//! [`BATCH`] records at a time. The consumer's queue is still polled once a batch, so
//! rebalances are served by the consumer's context as before: between batches, never
//! inside one.
//!
//! What reading a batch means for the runtime:
//! - librdkafka counts a batch's records as handed out when the batch is read, and a
//!   pause without a seek resumes after them. So the pauses that keep their records (a
//!   full partition group, an async task at capacity) buffer the rest of the batch too.
//! - A seek (an abort's rewind; the resume of a retry, a held record or a restored task)
//!   makes the records fetched before it outdated, and librdkafka drops those still
//!   queued. Of a batch already read: after an error the stream thread drops the rest,
//!   since the recovery rewinds every partition; a partition paused to be sought later
//!   has its remaining records dropped one by one, and reads them again after the seek.
//! - Between batches, a revoked partition's records still queued are outdated too.
//! - librdkafka clears a partition's forward when the partition is revoked, but keeps the
//!   mark that the application set one, so it will not forward the queue to the
//!   consumer's either: a partition assigned again without a new forward would be fetched
//!   into a queue nothing reads. Every assignment forwards again, and a forward that fails
//!   stops the stream thread.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

/// The most records read at once: enough to spread the per-read cost thin, few enough
/// that the commit schedule and the ticks between batches are never late by much.
pub(crate) const BATCH: usize = 500;

/// The queue every assigned partition's records are forwarded to.
pub(crate) struct FetchQueue {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
}

// SAFETY: librdkafka's queues are thread-safe; the handle is only a reference count.
unsafe impl Send for FetchQueue {}
unsafe impl Sync for FetchQueue {}

impl FetchQueue {
    /// A new, empty queue of `consumer`'s client.
    pub(crate) fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Self {
        // SAFETY: the client pointer is valid for the consumer's lifetime.
        let queue = unsafe { rdsys::rd_kafka_queue_new(consumer.client().native_ptr()) };
        Self {
            queue: NonNull::new(queue).expect("librdkafka allocates a queue or aborts"),
        }
    }

    /// Forwards the records of `topic`/`partition` here. Called before each assignment of
    /// the partition, so that none of its records reach the consumer's queue; librdkafka
    /// clears the forward when the partition is revoked.
    pub(crate) fn forward<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
    ) -> Result<(), KafkaError> {
        let name = std::ffi::CString::new(topic)
            .map_err(|_| KafkaError::Subscription(format!("topic `{topic}` has a NUL byte")))?;
        // SAFETY: the client pointer is valid for the consumer's lifetime; the partition
        // queue handle is destroyed here, the forward holds its own reference.
        unsafe {
            let source = rdsys::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                name.as_ptr(),
                partition,
            );
            if source.is_null() {
                return Err(KafkaError::Subscription(format!(
                    "no fetch queue for {topic}/{partition}"
                )));
            }
            rdsys::rd_kafka_queue_forward(source, self.queue.as_ptr());
            rdsys::rd_kafka_queue_destroy(source);
        }
        Ok(())
    }

    /// Reads up to [`BATCH`] records into `batch`, waiting up to `timeout` for the first.
    pub(crate) fn read(&self, timeout: Duration, batch: &mut FetchBatch) {
        batch.clear();
        // What is queued, without waiting: librdkafka's batch read waits until the batch
        // is full or the timeout is over, which would hold back a quiet partition's records.
        self.consume(Duration::ZERO, BATCH, batch);
        if batch.is_empty() && !timeout.is_zero() {
            // Waits for one record, then takes what came with it.
            self.consume(timeout, 1, batch);
            if !batch.is_empty() {
                self.consume(Duration::ZERO, BATCH - 1, batch);
            }
        }
    }

    /// Appends up to `max` records to `batch`, waiting until there are `max` or `timeout`
    /// is over.
    fn consume(&self, timeout: Duration, max: usize, batch: &mut FetchBatch) {
        let messages = &mut batch.messages;
        messages.reserve(max);
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: there is room for `max` pointers after the `len` ones; librdkafka writes
        // `read` of them, each a message the batch now owns.
        let read = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                messages.as_mut_ptr().add(messages.len()),
                max,
            )
        };
        // SAFETY: librdkafka initialised the `read` entries after the first `len`.
        unsafe { messages.set_len(messages.len() + read.max(0) as usize) };
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `rd_kafka_queue_new` and is destroyed once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// The messages of one read, owned until the next read or the batch's drop.
#[derive(Default)]
pub(crate) struct FetchBatch {
    messages: Vec<*mut rdsys::rd_kafka_message_t>,
}

impl FetchBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The batch's records, in the order librdkafka read them (each partition's in
    /// offset order).
    pub(crate) fn iter(&self) -> impl Iterator<Item = FetchedRecord<'_>> {
        self.messages.iter().map(|&message| FetchedRecord {
            message: NonNull::new(message).expect("librdkafka returns messages"),
            owner: PhantomData,
        })
    }

    fn clear(&mut self) {
        for message in self.messages.drain(..) {
            // SAFETY: each message was returned by a batch read and is destroyed once.
            unsafe { rdsys::rd_kafka_message_destroy(message) };
        }
    }
}

impl Drop for FetchBatch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One fetched record, read in place from librdkafka's message.
#[derive(Clone, Copy)]
pub(crate) struct FetchedRecord<'a> {
    message: NonNull<rdsys::rd_kafka_message_t>,
    owner: PhantomData<&'a ()>,
}

impl<'a> FetchedRecord<'a> {
    /// A record the consumer's own queue returned. None does while every assigned
    /// partition's queue is forwarded; the loop takes one all the same.
    pub(crate) fn borrowed(message: &'a BorrowedMessage<'_>) -> Self {
        Self {
            message: NonNull::new(message.ptr()).expect("a borrowed message has a pointer"),
            owner: PhantomData,
        }
    }

    fn raw(&self) -> &'a rdsys::rd_kafka_message_t {
        // SAFETY: the message lives as long as its batch (or borrowed message), 'a.
        unsafe { self.message.as_ref() }
    }

    /// The record, or the error librdkafka reports in its place.
    pub(crate) fn checked(self) -> Result<Self, KafkaError> {
        let code = self.raw().err;
        if code == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Ok(self);
        }
        Err(match RDKafkaErrorCode::from(code) {
            RDKafkaErrorCode::PartitionEOF => KafkaError::PartitionEOF(self.partition()),
            code => KafkaError::MessageConsumption(code),
        })
    }

    pub(crate) fn topic(&self) -> &'a str {
        // SAFETY: a fetched message's topic handle and its name outlive the message.
        let name = unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(self.raw().rkt)) };
        name.to_str().expect("subscribed topic names are UTF-8")
    }

    pub(crate) fn partition(&self) -> i32 {
        self.raw().partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.raw().offset
    }

    pub(crate) fn key(&self) -> Option<&'a [u8]> {
        bytes(self.raw().key.cast::<u8>(), self.raw().key_len)
    }

    pub(crate) fn payload(&self) -> Option<&'a [u8]> {
        bytes(self.raw().payload.cast::<u8>(), self.raw().len)
    }

    /// The record's timestamp in epoch milliseconds, 0 when it has none.
    pub(crate) fn timestamp_ms(&self) -> i64 {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a valid message; `kind` is written.
        let ms = unsafe { rdsys::rd_kafka_message_timestamp(self.message.as_ptr(), &mut kind) };
        match kind {
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => 0,
            _ if ms == -1 => 0,
            _ => ms,
        }
    }

    /// The record's headers in order, names read as UTF-8 (replacing what is not).
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut headers = std::ptr::null_mut();
        // SAFETY: a valid message; librdkafka parses its headers once and keeps them with
        // the message.
        let found = unsafe { rdsys::rd_kafka_message_headers(self.message.as_ptr(), &mut headers) };
        let headers = (found == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).then_some(headers);
        (0..).map_while(move |index| {
            let headers = headers?;
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
            // SAFETY: `headers` belongs to the message; the out pointers are written when
            // the header exists.
            let found = unsafe {
                rdsys::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size)
            };
            if found != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                return None;
            }
            // SAFETY: the name is a NUL-terminated string of the message's headers.
            let name = unsafe { CStr::from_ptr(name) }.to_bytes();
            Some((name, bytes(value.cast::<u8>(), size)))
        })
    }
}

/// A byte slice of librdkafka's, or `None` for a null pointer.
fn bytes<'a>(data: *const u8, len: usize) -> Option<&'a [u8]> {
    // SAFETY: librdkafka gives `len` readable bytes at a non-null `data`, alive with the
    // message.
    (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts(data, len) })
}
