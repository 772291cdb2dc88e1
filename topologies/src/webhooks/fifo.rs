//! Ordering by key (`webhooks.ordering=key`): the webhooks of one record key are
//! delivered one at a time, in the order of their partition, through retries too.
//!
//! Retry tiers cannot keep an order: a webhook that fails moves to a tier while the next
//! one of its key is read from the main topic. So a keyed webhook waits its turn here and
//! is retried *in place* ([`deliver::attempt_in_place`](super::deliver::attempt_in_place)):
//! the tiers' delays, jitter and `Retry-After` apply, and it leaves its turn only when it
//! is delivered or dead-lettered. Other keys go on: their calls run beside it, and their
//! results leave before it (the operator orders results by key).
//!
//! What it costs, as with every FIFO delivery:
//! * a failing endpoint holds its keys' webhooks in flight, up to `webhooks.max.in.flight`
//!   a task, then up to the operator's held records, before its partition pauses;
//! * a webhook retried in place holds its partition's committed offset (later inputs
//!   commit as done ahead): after a crash it is attempted again from its `retryCount`,
//!   with the same `webhook-id`;
//! * keyless webhooks have no order to keep and use the tiers.
//!
//! The turn is a fair async mutex per key, taken on the call's first poll. The operator
//! polls each call first on the stream thread, in input order, so the queue of a key is
//! the order of its partition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// One key's turn to deliver: a fair lock, so waiters take it in the order they queued.
type KeyLock = Arc<tokio::sync::Mutex<()>>;

/// The keys with a webhook being delivered, and the webhooks waiting behind them.
#[derive(Clone, Default)]
pub struct KeyQueue {
    keys: Arc<Mutex<HashMap<Vec<u8>, KeyLock>>>,
}

/// A webhook's turn: the webhooks after it of its key wait until it is dropped.
pub struct Turn {
    queue: KeyQueue,
    key: Vec<u8>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyQueue {
    /// Waits for the webhooks of `key` queued before this call.
    pub async fn turn(&self, key: &[u8]) -> Turn {
        // Queued when this future is first polled: the lock is taken (or its place in the
        // fair queue) in the same poll as the entry is found.
        let lock = {
            let mut keys = self.keys.lock().expect("the key queue is never poisoned");
            keys.entry(key.to_vec()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        Turn {
            queue: self.clone(),
            key: key.to_vec(),
            guard: Some(guard),
        }
    }

    /// How many keys have a webhook being delivered or waiting.
    pub fn len(&self) -> usize {
        self.keys.lock().expect("never poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut keys = self.queue.keys.lock().expect("never poisoned");
        drop(self.guard.take());
        // The map's reference is the last one when no webhook of the key waits (a waiter
        // holds a clone, taken under this same lock): the key leaves the map.
        if keys
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn webhooks_of_one_key_take_turns_in_call_order_and_other_keys_do_not_wait() {
        let queue = KeyQueue::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let call = |key: &'static str, name: &'static str, takes: u64| {
            let (queue, log) = (queue.clone(), log.clone());
            async move {
                let _turn = queue.turn(key.as_bytes()).await;
                log.lock().unwrap().push(format!("{name} starts"));
                tokio::time::sleep(Duration::from_millis(takes)).await;
                log.lock().unwrap().push(format!("{name} ends"));
            }
        };
        // Spawned in this order on the test's one thread, so first polled in this order,
        // as the operator polls calls in input order: a1's long retry holds a2 and a3
        // back, and b1 goes past them.
        let handles = vec![
            tokio::spawn(call("a", "a1", 300)),
            tokio::spawn(call("a", "a2", 10)),
            tokio::spawn(call("b", "b1", 10)),
            tokio::spawn(call("a", "a3", 10)),
        ];
        for handle in handles {
            handle.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        let position = |event: &str| log.iter().position(|e| e == event).unwrap();
        assert!(position("a1 ends") < position("a2 starts"), "{log:?}");
        assert!(position("a2 ends") < position("a3 starts"), "{log:?}");
        assert!(position("b1 ends") < position("a1 ends"), "{log:?}");
        assert!(
            queue.is_empty(),
            "a key leaves the queue with its last webhook"
        );
    }
}
