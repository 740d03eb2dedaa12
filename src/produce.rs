//! Writing events to Kafka (`rdg produce`) and creating topics.
//!
//! Invariant: every message handed to [`produce`] is either acknowledged by
//! the broker or counted as failed: delivery reports are counted as they
//! arrive, the producer is flushed at the end with a timeout, and a run with
//! any failure (or messages still unacknowledged at the deadline) returns an
//! error that says how many. Nothing is dropped silently.
//!
//! Rate limiting sleeps between messages (delivery reports are served
//! before each sleep and after each send), so pacing costs no CPU at any
//! rate.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use thiserror::Error;

/// How long the final flush may take before the rest counts as undelivered.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How often `progress` is called, in messages handed to the producer.
const PROGRESS_EVERY: u64 = 1000;

/// The producer's `linger.ms` for a bulk load.
const BULK_LINGER_MS: &str = "5";

/// The producer's `linger.ms` for a paced load (`--rate`): 50 ms, as a
/// service producing tens of thousands of events a second would batch.
/// With librdkafka's 5 ms a 50 000 events/s load came as ~200 produce
/// requests a second of a few records per partition, and tansu (whose
/// in-memory engine lists every stored batch of a partition on each fetch)
/// spent its CPU on their number beside rdg on the same two cores; the
/// probe of `scripts/bench-latency.sh` times its own events from the
/// broker's acknowledgement, so the load's linger is not in its numbers
/// (docs/performance.md).
const PACED_LINGER_MS: &str = "50";

#[derive(Debug, Error)]
pub enum ProduceError {
    #[error("Kafka producer for {brokers}: {detail}")]
    Client { brokers: String, detail: String },
    #[error(
        "{failed} of {sent} messages were not delivered to {brokers} \
         (first error: {first_error})"
    )]
    Delivery {
        brokers: String,
        sent: u64,
        failed: u64,
        first_error: String,
    },
    #[error(
        "{pending} of {sent} messages were still unacknowledged by {brokers} after \
         waiting {} s", timeout.as_secs()
    )]
    Flush {
        brokers: String,
        sent: u64,
        pending: u64,
        timeout: Duration,
    },
    #[error("rate must be a positive number of messages per second, not {0}")]
    Rate(f64),
    #[error("cannot create topic `{topic}` on {brokers}: {detail}")]
    CreateTopic {
        topic: String,
        brokers: String,
        detail: String,
    },
    #[error("cannot add partitions to topic `{topic}` on {brokers}: {detail}")]
    AddPartitions {
        topic: String,
        brokers: String,
        detail: String,
    },
}

/// Counts delivery reports (called on the producing thread, from `poll`).
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, m)) => {
                let n = self.failed.fetch_add(1, Ordering::Relaxed);
                let text = format!("{e} (topic `{}`)", m.topic());
                if n == 0 {
                    tracing::warn!("delivery failed: {text}");
                } else {
                    tracing::debug!("delivery failed: {text}");
                }
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert(text);
            }
        }
    }
}

/// Produces `(topic, key, line)` events (as [`crate::generate::events`]
/// yields them) to `brokers`, keyed so that one account's events stay in one
/// partition, at most `rate` messages per second if given. `progress` is
/// called with the number of messages handed to the producer every 1000
/// messages and once at the end. Returns the number of messages delivered.
pub fn produce<I, T, K, V>(
    brokers: &str,
    settings: &BTreeMap<String, String>,
    events: I,
    rate: Option<f64>,
    mut progress: impl FnMut(u64),
) -> Result<u64, ProduceError>
where
    I: IntoIterator<Item = (T, K, V)>,
    T: AsRef<str>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    if let Some(r) = rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(ProduceError::Rate(r));
    }
    let client_error = |e: KafkaError| ProduceError::Client {
        brokers: brokers.to_string(),
        detail: e.to_string(),
    };
    let mut config = ClientConfig::new();
    // Batches fill for a while before they are sent: throughput over
    // latency. A paced load batches as a busy service's producer would,
    // a bulk load fills its batches in a few ms anyway. May be overridden.
    config.set(
        "linger.ms",
        if rate.is_some() {
            PACED_LINGER_MS
        } else {
            BULK_LINGER_MS
        },
    );
    for (k, v) in settings {
        config.set(k, v);
    }
    config.set("bootstrap.servers", brokers);
    let producer: BaseProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .map_err(client_error)?;

    let started = Instant::now();
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut sent: u64 = 0;
    for (topic, key, line) in events {
        if let Some(interval) = interval {
            // Message `sent` is due `sent` intervals after the start.
            wait_until(&producer, started + interval.mul_f64(sent as f64));
        }
        let (topic, key, line) = (topic.as_ref(), key.as_ref(), line.as_ref());
        let mut record = BaseRecord::to(topic).key(key).payload(line);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Wait for delivery reports to make room.
                    record = r;
                    producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => return Err(client_error(e)),
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
        if sent.is_multiple_of(PROGRESS_EVERY) {
            progress(sent);
        }
    }
    let flushed = producer.flush(FLUSH_TIMEOUT);
    producer.poll(Duration::ZERO);
    progress(sent);
    let ctx = producer.context();
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first_error = ctx
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        return Err(ProduceError::Delivery {
            brokers: brokers.to_string(),
            sent,
            failed,
            first_error,
        });
    }
    if flushed.is_err() || delivered < sent {
        return Err(ProduceError::Flush {
            brokers: brokers.to_string(),
            sent,
            pending: sent - delivered,
            timeout: FLUSH_TIMEOUT,
        });
    }
    Ok(delivered)
}

/// Waits until `due` is less than a millisecond away, serving delivery
/// reports first.
///
/// The wait is a plain sleep: the producer's poll converts its timeout to
/// whole milliseconds and spins through the last fraction, so pacing with it
/// costs a core at high rates. A message due within the millisecond is sent
/// at once, so at high rates messages leave in bursts of about a
/// millisecond's worth.
fn wait_until(producer: &BaseProducer<Deliveries>, due: Instant) {
    let ahead = due.saturating_duration_since(Instant::now());
    if ahead >= Duration::from_millis(1) {
        producer.poll(Duration::ZERO);
        std::thread::sleep(ahead);
    }
}

/// How long an admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

fn admin(
    brokers: &str,
    settings: &BTreeMap<String, String>,
) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    let mut config = ClientConfig::new();
    for (k, v) in settings {
        config.set(k, v);
    }
    config.set("bootstrap.servers", brokers);
    config.create()
}

/// Creates each `(topic, partitions)` with replication factor 1 (a local
/// broker; create production topics with the cluster's own tools). A topic
/// that already exists is fine, whatever its partition count.
pub fn create_topics(
    brokers: &str,
    settings: &BTreeMap<String, String>,
    topics: &[(String, i32)],
) -> Result<(), ProduceError> {
    let first = topics.first().map(|t| t.0.clone()).unwrap_or_default();
    let fail = |topic: &str, detail: String| ProduceError::CreateTopic {
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        detail,
    };
    if topics.is_empty() {
        return Ok(());
    }
    let admin = admin(brokers, settings).map_err(|e| fail(&first, e.to_string()))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    let results =
        block_on(admin.create_topics(&new, &opts)).map_err(|e| fail(&first, e.to_string()))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!("created topic `{name}`"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::info!("topic `{name}` already exists")
            }
            Err((name, code)) => return Err(fail(&name, code.to_string())),
        }
    }
    Ok(())
}

/// Grows `topic` to `partitions` partitions (Kafka cannot shrink a topic).
pub fn add_partitions(
    brokers: &str,
    settings: &BTreeMap<String, String>,
    topic: &str,
    partitions: usize,
) -> Result<(), ProduceError> {
    let fail = |detail: String| ProduceError::AddPartitions {
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        detail,
    };
    let admin = admin(brokers, settings).map_err(|e| fail(e.to_string()))?;
    let opts = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    let new = NewPartitions::new(topic, partitions);
    let results =
        block_on(admin.create_partitions([&new], &opts)).map_err(|e| fail(e.to_string()))?;
    for r in results {
        if let Err((_, code)) = r {
            return Err(fail(code.to_string()));
        }
    }
    Ok(())
}

/// Runs a future to completion on this thread. The admin client's futures
/// are completed by its own background thread, so no runtime is needed.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_rates() {
        let none: Vec<(&str, &str, &str)> = Vec::new();
        for r in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = produce(
                "127.0.0.1:1",
                &BTreeMap::new(),
                none.clone(),
                Some(r),
                |_| {},
            );
            assert!(matches!(e, Err(ProduceError::Rate(_))), "{r}");
        }
    }

    #[test]
    fn block_on_runs_a_ready_future() {
        assert_eq!(block_on(async { 7 }), 7);
    }
}
