//! Task queues behind one narrow trait: at-least-once delivery, bounded prefetch, explicit
//! ack after the output is written, requeue, and a dead-letter queue that keeps the reason.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use thiserror::Error;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Error)]
pub enum QueueError {
    /// The broker went away; reconnect and retry.
    #[error("queue connection lost: {0}")]
    Connection(String),
    #[error("queue {queue:?} is closed")]
    Closed { queue: String },
    #[error("invalid queue configuration {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The broker refused an operation (missing permission, a queue declared with other
    /// arguments, an unknown vhost …): a new connection would not change that.
    #[error("broker refused {op}{}: {reason}", on_queue(.queue))]
    Broker { queue: String, op: &'static str, reason: String },
    /// The broker did not take a published message (publisher-confirm nack): try again later.
    #[error("broker did not accept the message for queue {queue:?} (publisher nack)")]
    Nacked { queue: String },
    /// A publish found no queue to route to, even after declaring it again.
    #[error("message for queue {queue:?} could not be routed (the queue is missing)")]
    Unroutable { queue: String },
}

/// ` on queue "name"`, or nothing for connection-level operations.
fn on_queue(queue: &str) -> String {
    if queue.is_empty() {
        String::new()
    } else {
        format!(" on queue {queue:?}")
    }
}

impl QueueError {
    /// Worth retrying later (requeue the task): the broker went away or pushed back.
    pub fn retryable(&self) -> bool {
        matches!(self, QueueError::Connection(_) | QueueError::Nacked { .. })
    }
}

/// Settles one delivery. Implementations release the prefetch slot when settled.
pub trait Acker: Send {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), QueueError>>;
    fn requeue(self: Box<Self>) -> BoxFuture<'static, Result<(), QueueError>>;
    fn dead_letter(self: Box<Self>, reason: String) -> BoxFuture<'static, Result<(), QueueError>>;
}

/// One message handed to a consumer; must be settled exactly once.
pub struct Delivery {
    pub payload: Bytes,
    /// How many times this message was delivered before (0 on first delivery).
    pub redeliveries: u32,
    acker: Box<dyn Acker>,
}

impl Delivery {
    pub fn new(payload: Bytes, redeliveries: u32, acker: Box<dyn Acker>) -> Self {
        Delivery { payload, redeliveries, acker }
    }

    pub async fn ack(self) -> Result<(), QueueError> {
        self.acker.ack().await
    }

    pub async fn requeue(self) -> Result<(), QueueError> {
        self.acker.requeue().await
    }

    /// Moves the message to the dead-letter queue with `reason`, cut to [`MAX_REASON_BYTES`]
    /// (a reason rides in a message header, and a header over the broker's frame size closes
    /// the connection).
    pub async fn dead_letter(self, reason: impl Into<String>) -> Result<(), QueueError> {
        self.acker.dead_letter(bounded_reason(&reason.into())).await
    }
}

/// The most bytes of a dead-letter reason.
pub const MAX_REASON_BYTES: usize = 2048;

fn bounded_reason(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_REASON_BYTES));
    for c in reason.chars() {
        if out.len() + c.len_utf8() > MAX_REASON_BYTES {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

pub trait Consumer: Send {
    /// The next delivery; `None` once the queue is closed and drained.
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Delivery>, QueueError>>;
}

pub trait TaskQueue: Send + Sync + 'static {
    fn publish<'a>(&'a self, queue: &'a str, payload: Bytes) -> BoxFuture<'a, Result<(), QueueError>>;
    /// A consumer holding at most `prefetch` unsettled deliveries.
    fn consume<'a>(&'a self, queue: &'a str, prefetch: usize) -> BoxFuture<'a, Result<Box<dyn Consumer>, QueueError>>;
    /// Messages waiting (not delivered) in `queue`.
    fn depth<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, QueueError>>;
    /// Messages in `queue`'s dead-letter queue.
    fn dead_letter_depth<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, QueueError>>;
    /// Consumers attached to `queue`.
    fn consumer_count<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, QueueError>>;
}

/// A dead-lettered message with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub queue: String,
    pub payload: Bytes,
    pub reason: String,
}

#[derive(Default)]
struct Lane {
    ready: Mutex<VecDeque<(Bytes, u32)>>,
    consumers: std::sync::atomic::AtomicU64,
    notify: Notify,
    closed: AtomicBool,
}

/// The in-process queue of the embedded shape.
#[derive(Clone, Default)]
pub struct InProcessQueue {
    lanes: Arc<Mutex<HashMap<String, Arc<Lane>>>>,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
}

impl InProcessQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lane(&self, queue: &str) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes.entry(queue.to_string()).or_default().clone()
    }

    /// Consumers of `queue` end once it is drained.
    pub fn close(&self, queue: &str) {
        let lane = self.lane(queue);
        lane.closed.store(true, Ordering::SeqCst);
        lane.notify.notify_waiters();
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct InProcessAcker {
    queue: String,
    lane: Arc<Lane>,
    payload: Bytes,
    redeliveries: u32,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
    _permit: OwnedSemaphorePermit,
}

impl Acker for InProcessAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), QueueError>> {
        async move { Ok(()) }.boxed()
    }

    fn requeue(self: Box<Self>) -> BoxFuture<'static, Result<(), QueueError>> {
        async move {
            self.lane.ready.lock().unwrap_or_else(|p| p.into_inner()).push_back((self.payload.clone(), self.redeliveries + 1));
            self.lane.notify.notify_one();
            Ok(())
        }
        .boxed()
    }

    fn dead_letter(self: Box<Self>, reason: String) -> BoxFuture<'static, Result<(), QueueError>> {
        async move {
            self.dead.lock().unwrap_or_else(|p| p.into_inner()).push(DeadLetter {
                queue: self.queue.clone(),
                payload: self.payload.clone(),
                reason,
            });
            Ok(())
        }
        .boxed()
    }
}

struct InProcessConsumer {
    queue: String,
    lane: Arc<Lane>,
    slots: Arc<Semaphore>,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
}

impl Consumer for InProcessConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Delivery>, QueueError>> {
        async move {
            let permit = self.slots.clone().acquire_owned().await.map_err(|_| QueueError::Closed { queue: self.queue.clone() })?;
            loop {
                // register interest before checking, so a publish in between is not missed
                let notified = self.lane.notify.notified();
                let popped = self.lane.ready.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                if let Some((payload, redeliveries)) = popped {
                    let acker = InProcessAcker {
                        queue: self.queue.clone(),
                        lane: self.lane.clone(),
                        payload: payload.clone(),
                        redeliveries,
                        dead: self.dead.clone(),
                        _permit: permit,
                    };
                    return Ok(Some(Delivery::new(payload, redeliveries, Box::new(acker))));
                }
                if self.lane.closed.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                notified.await;
            }
        }
        .boxed()
    }
}

impl TaskQueue for InProcessQueue {
    fn publish<'a>(&'a self, queue: &'a str, payload: Bytes) -> BoxFuture<'a, Result<(), QueueError>> {
        async move {
            let lane = self.lane(queue);
            if lane.closed.load(Ordering::SeqCst) {
                return Err(QueueError::Closed { queue: queue.to_string() });
            }
            lane.ready.lock().unwrap_or_else(|p| p.into_inner()).push_back((payload, 0));
            lane.notify.notify_one();
            Ok(())
        }
        .boxed()
    }

    fn consume<'a>(&'a self, queue: &'a str, prefetch: usize) -> BoxFuture<'a, Result<Box<dyn Consumer>, QueueError>> {
        async move {
            if prefetch == 0 {
                return Err(QueueError::Invalid { field: "prefetch".into(), reason: "must be at least 1".into() });
            }
            let lane = self.lane(queue);
            lane.consumers.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(InProcessConsumer {
                queue: queue.to_string(),
                lane,
                slots: Arc::new(Semaphore::new(prefetch)),
                dead: self.dead.clone(),
            }) as Box<dyn Consumer>)
        }
        .boxed()
    }

    fn depth<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, QueueError>> {
        async move { Ok(self.lane(queue).ready.lock().unwrap_or_else(|p| p.into_inner()).len() as u64) }.boxed()
    }

    fn dead_letter_depth<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, QueueError>> {
        async move { Ok(self.dead.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|d| d.queue == queue).count() as u64) }.boxed()
    }

    fn consumer_count<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, QueueError>> {
        async move { Ok(self.lane(queue).consumers.load(Ordering::SeqCst)) }.boxed()
    }
}

impl Drop for InProcessConsumer {
    fn drop(&mut self) {
        self.lane.consumers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The behaviour every [`TaskQueue`] must have; `queue` must be empty and unique to the call.
/// Feature `testing`: for the tests of each implementation.
#[cfg(any(test, feature = "testing"))]
pub async fn conformance_suite(q: &dyn TaskQueue, queue: &str) {
    for i in 0..3u8 {
        q.publish(queue, Bytes::from(vec![i])).await.expect("publish");
    }
    let mut c = q.consume(queue, 2).await.expect("consume");
    let a = c.next().await.expect("next").expect("message");
    let b = c.next().await.expect("next").expect("message");
    assert_eq!((a.payload[0], b.payload[0]), (0, 1));
    // prefetch 2: the third waits until one is settled
    assert!(c.next().now_or_never().is_none(), "prefetch bound must hold");
    a.requeue().await.expect("requeue");
    // where a requeued message goes back is the broker's choice (RabbitMQ quorum queues with
    // a delivery limit return it to the front): only that it comes back, marked, is required
    let first = c.next().await.expect("next").expect("message");
    b.ack().await.expect("ack");
    let second = c.next().await.expect("next").expect("message");
    let (again, third) = if first.payload[0] == 0 { (first, second) } else { (second, first) };
    assert_eq!((again.payload[0], again.redeliveries), (0, 1), "requeued message comes back marked");
    assert_eq!((third.payload[0], third.redeliveries), (2, 0));
    again.dead_letter("poison").await.expect("dead letter");
    third.ack().await.expect("ack");
    // a consumer waiting on an empty queue wakes up for a message published meanwhile
    let (late, published) = futures::join!(c.next(), q.publish(queue, Bytes::from_static(&[9])));
    published.expect("publish");
    let late = late.expect("next").expect("message");
    assert_eq!((late.payload[0], late.redeliveries), (9, 0));
    late.ack().await.expect("ack");
    assert_eq!(q.depth(queue).await.expect("depth"), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_queue_conforms() {
        let q = InProcessQueue::new();
        conformance_suite(&q, "tasks").await;
        assert_eq!(q.dead_letters().len(), 1);
        assert_eq!(q.dead_letters()[0].reason, "poison");
    }

    #[tokio::test]
    async fn closed_queue_ends_consumers_after_draining() {
        let q = InProcessQueue::new();
        q.publish("t", Bytes::from_static(b"x")).await.unwrap();
        q.close("t");
        let mut c = q.consume("t", 4).await.unwrap();
        assert!(c.next().await.unwrap().is_some());
        assert!(c.next().await.unwrap().is_none());
        assert!(q.publish("t", Bytes::new()).await.is_err());
    }
}
