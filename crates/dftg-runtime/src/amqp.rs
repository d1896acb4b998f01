//! [`TaskQueue`] over RabbitMQ (lapin), for the distributed shape.
//!
//! - Every queue name used gets a durable **quorum** queue, plus a fanout dead-letter exchange
//!   and a quorum queue, both named `<name>.dead` (also set as the queue's
//!   `x-dead-letter-exchange`, so broker-side dead-lettering lands there too), and a
//!   delivery limit ([`DELIVERY_LIMIT`]) so a message that kills its consumers is
//!   dead-lettered by the broker at the latest after that many deliveries. (Quorum queue
//!   arguments are fixed at declaration: a queue declared by an older dftg must be deleted
//!   once, when it is empty, to take the limit.)
//! - Every publish waits for its publisher confirm; a nack is an error.
//! - Each consumer has its own channel with `basic_qos(prefetch)`, and a semaphore holds the
//!   same bound on our side. `Delivery::redeliveries` is the quorum queue's `x-delivery-count`.
//! - Dead-lettering publishes the message to `<name>.dead` with the reason in `x-dftg-reason`
//!   (at most `MAX_REASON_BYTES`), then acks the original, so the reason is kept.
//! - Reconnection: one shared connection, replaced when it dies; operations retry on the fresh
//!   connection with bounded exponential backoff inside a retry window; consumers re-open their
//!   channel and consumer. Settling a delivery whose channel died is logged and swallowed: the
//!   broker redelivers it, and at-least-once delivery with create-only outputs makes that
//!   harmless.
//!
//! lapin types stay inside this file; errors map to [`QueueError`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::queue::{Acker, Consumer, DeadLetter, Delivery, QueueError, TaskQueue};

/// Header carrying the dead-letter reason on messages in `<name>.dead`.
pub const REASON_HEADER: &str = "x-dftg-reason";
/// Header naming the queue a dead letter came from.
pub const SOURCE_QUEUE_HEADER: &str = "x-dftg-queue";
/// Header with the redelivery count of a message when it was dead-lettered.
pub const REDELIVERIES_HEADER: &str = "x-dftg-redeliveries";
/// Suffix of the dead-letter exchange and queue of a task queue.
pub const DEAD_SUFFIX: &str = ".dead";
/// User name taken from the environment when the URL has none.
pub const USER_ENV: &str = "DFTG_AMQP_USER";
/// Password taken from the environment when the URL has none.
pub const PASSWORD_ENV: &str = "DFTG_AMQP_PASSWORD";

const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
/// How often a waiting consumer re-checks that its connection is still the live one.
const CONSUMER_WATCHDOG: Duration = Duration::from_secs(1);
/// Bound on one ack / nack (the broker does not answer acks: this only trips when the
/// connection is dying), and how often the channel is re-checked meanwhile.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
const SETTLE_RECHECK: Duration = Duration::from_millis(100);
const REPLY_SUCCESS: u16 = 200;

/// The name of the dead-letter exchange and queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}{DEAD_SUFFIX}")
}

/// Tuning of [`AmqpQueue`]; the defaults suit a worker on Kubernetes.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// How long an operation (publish, consumer re-open, depth …) keeps retrying on fresh
    /// connections before it reports [`QueueError::Connection`].
    pub retry_window: Duration,
    /// First pause between retries; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Bound on one connection attempt (TCP, TLS, AMQP handshake).
    pub connect_timeout: Duration,
    /// Bound on one attempt of an operation; a connection that does not answer in time is
    /// dropped and the operation retried on a fresh one.
    pub operation_timeout: Duration,
    /// Shown by the broker (`rabbitmqctl list_connections client_properties`).
    pub connection_name: String,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            retry_window: Duration::from_secs(120),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            connection_name: "dftg".to_string(),
        }
    }
}

/// [`TaskQueue`] over RabbitMQ. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct AmqpQueue {
    inner: Arc<Inner>,
}

/// The current connection and its publishing channel (confirms on).
#[derive(Clone)]
struct Live {
    generation: u64,
    conn: Arc<Connection>,
    publisher: Channel,
}

struct Inner {
    /// With credentials: never logged.
    uri: String,
    /// Without the password: for messages and logs.
    label: String,
    opts: AmqpOptions,
    live: tokio::sync::Mutex<Option<Live>>,
    generation: AtomicU64,
    /// Queues whose topology was declared on connection `.0`.
    declared: Mutex<(u64, HashSet<String>)>,
    dead_lettered: Mutex<HashMap<String, u64>>,
    closed: AtomicBool,
    consumer_seq: AtomicU64,
}

impl AmqpQueue {
    /// Connects to `url` (`amqp://` or `amqps://`) with default options; fails fast when the
    /// broker is unreachable so a misconfiguration shows at startup.
    pub async fn connect(url: &str) -> Result<Self, QueueError> {
        Self::connect_with(url, AmqpOptions::default()).await
    }

    pub async fn connect_with(url: &str, opts: AmqpOptions) -> Result<Self, QueueError> {
        let (uri, label) = resolve_url(url, |name| std::env::var(name).ok())?;
        let queue = AmqpQueue {
            inner: Arc::new(Inner {
                uri,
                label,
                opts,
                live: tokio::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
                declared: Mutex::new((0, HashSet::new())),
                dead_lettered: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                consumer_seq: AtomicU64::new(0),
            }),
        };
        queue.inner.live("").await?;
        Ok(queue)
    }

    /// The broker URL without its password.
    pub fn describe(&self) -> String {
        self.inner.label.clone()
    }

    /// Messages dead-lettered through this handle (and its clones) from `queue`.
    pub fn dead_lettered_count(&self, queue: &str) -> u64 {
        self.inner.dead_lettered.lock().unwrap_or_else(|p| p.into_inner()).get(queue).copied().unwrap_or(0)
    }

    /// Messages waiting in `queue`'s dead-letter queue (non-destructive).
    pub async fn dead_letter_depth(&self, queue: &str) -> Result<u64, QueueError> {
        self.inner.depth_of(queue, &dead_letter_queue(queue)).await
    }

    /// Removes up to `max` messages from `queue`'s dead-letter queue and returns them with
    /// their reasons (for tests, status and replay tools). Destructive: they are acked.
    pub async fn take_dead_letters(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.take_dead_letters(queue, max).await
    }

    /// Deletes `queue`, its dead-letter queue and exchange (tests, job cleanup).
    pub async fn delete_queue(&self, queue: &str) -> Result<(), QueueError> {
        self.inner.delete_queue(queue).await
    }

    /// Closes the connection; consumers then end with `None` and operations fail with
    /// [`QueueError::Closed`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let live = self.inner.live.lock().await.take();
        if let Some(live) = live {
            if let Err(e) = live.conn.close(REPLY_SUCCESS, "dftg closing".into()).await {
                tracing::debug!(url = %self.inner.label, error = %e, "closing the rabbitmq connection");
            }
        }
    }
}

impl Inner {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The current connection, (re)connecting when it is gone. One connect at a time: the
    /// lock is held across the (bounded) attempt so concurrent callers share its result.
    async fn live(&self, queue: &str) -> Result<Live, QueueError> {
        if self.is_closed() {
            return Err(QueueError::Closed { queue: queue.to_string() });
        }
        let mut guard = self.live.lock().await;
        if let Some(live) = guard.as_ref() {
            if live.conn.status().connected() {
                if live.publisher.status().connected() {
                    return Ok(live.clone());
                }
                // only the publishing channel died (a channel-level error): replace it
                let publisher = self.open_publisher(&live.conn, queue).await?;
                let live = Live { publisher, ..live.clone() };
                *guard = Some(live.clone());
                return Ok(live);
            }
        }
        let props = ConnectionProperties::default().with_connection_name(self.opts.connection_name.as_str().into());
        let conn = match tokio::time::timeout(self.opts.connect_timeout, Connection::connect(&self.uri, props)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(self.classify(queue, "connect", e)),
            Err(_) => {
                return Err(QueueError::Connection(format!("{}: connect timed out after {:?}", self.label, self.opts.connect_timeout)))
            }
        };
        let publisher = self.open_publisher(&conn, queue).await?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!(url = %self.label, generation, "connected to rabbitmq");
        let live = Live { generation, conn: Arc::new(conn), publisher };
        *guard = Some(live.clone());
        Ok(live)
    }

    async fn open_publisher(&self, conn: &Connection, queue: &str) -> Result<Channel, QueueError> {
        let ch = conn.create_channel().await.map_err(|e| self.classify(queue, "channel.open", e))?;
        ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| self.classify(queue, "confirm.select", e))?;
        Ok(ch)
    }

    /// Drops connection `generation` if it is still the current one (it stopped answering).
    async fn discard(&self, generation: u64) {
        let mut guard = self.live.lock().await;
        if guard.as_ref().is_some_and(|l| l.generation == generation) {
            tracing::warn!(url = %self.label, generation, "dropping an unresponsive rabbitmq connection");
            *guard = None;
        }
    }

    /// Runs `attempt` on the current connection, retrying on a fresh one with bounded
    /// exponential backoff while the error is about the connection and the window is open.
    async fn retrying<T, F, Fut>(&self, op: &'static str, queue: &str, mut attempt: F) -> Result<T, QueueError>
    where
        F: FnMut(Live) -> Fut,
        Fut: Future<Output = Result<T, QueueError>>,
    {
        let deadline = Instant::now() + self.opts.retry_window;
        let mut backoff = self.opts.initial_backoff;
        let mut tries = 0u32;
        loop {
            tries += 1;
            let mut stale = None;
            let err = match self.live(queue).await {
                Ok(live) => {
                    let generation = live.generation;
                    match tokio::time::timeout(self.opts.operation_timeout, attempt(live)).await {
                        Ok(Ok(value)) => {
                            if tries > 1 {
                                tracing::info!(url = %self.label, queue, op, tries, "rabbitmq operation recovered");
                            }
                            return Ok(value);
                        }
                        Ok(Err(e)) => e,
                        Err(_) => {
                            stale = Some(generation);
                            QueueError::Connection(format!(
                                "{}: {op} on queue {queue:?} timed out after {:?}",
                                self.label, self.opts.operation_timeout
                            ))
                        }
                    }
                }
                Err(e) => e,
            };
            let retry_here = matches!(err, QueueError::Connection(_) | QueueError::Unroutable { .. });
            if !retry_here || self.is_closed() || Instant::now() + backoff > deadline {
                return Err(err);
            }
            tracing::warn!(
                url = %self.label, queue, op, tries, backoff_ms = backoff.as_millis() as u64, error = %err,
                "rabbitmq operation failed; retrying on a fresh connection"
            );
            if let Some(generation) = stale {
                self.discard(generation).await;
            }
            // backoff between attempts, not synchronisation
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.opts.max_backoff);
        }
    }

    fn classify(&self, queue: &str, op: &'static str, e: lapin::Error) -> QueueError {
        if let lapin::ErrorKind::ProtocolError(amqp) = e.kind() {
            // refusals that a new connection would not change
            let refused = matches!(
                amqp.kind(),
                AMQPErrorKind::Soft(
                    AMQPSoftError::ACCESSREFUSED
                        | AMQPSoftError::NOTFOUND
                        | AMQPSoftError::PRECONDITIONFAILED
                        | AMQPSoftError::RESOURCELOCKED
                        | AMQPSoftError::CONTENTTOOLARGE
                ) | AMQPErrorKind::Hard(AMQPHardError::INVALIDPATH | AMQPHardError::NOTALLOWED | AMQPHardError::NOTIMPLEMENTED)
            );
            if refused {
                return QueueError::Broker { queue: queue.to_string(), op, reason: format!("{}: {amqp}", self.label) };
            }
        }
        if queue.is_empty() {
            return QueueError::Connection(format!("{}: {op}: {e}", self.label));
        }
        QueueError::Connection(format!("{}: {op} on queue {queue:?}: {e}", self.label))
    }

    /// Declares `queue`'s topology once per connection (declarations are idempotent).
    async fn ensure_topology(&self, live: &Live, queue: &str) -> Result<(), QueueError> {
        {
            let declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
            if declared.0 == live.generation && declared.1.contains(queue) {
                return Ok(());
            }
        }
        if queue.is_empty() {
            return Err(QueueError::Invalid { field: "queue".into(), reason: "the queue name is empty".into() });
        }
        let dead = dead_letter_queue(queue);
        // a throwaway channel: a refused declaration closes the channel it was made on
        let ch = live.conn.create_channel().await.map_err(|e| self.classify(queue, "channel.open", e))?;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(
            dead.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|e| self.classify(queue, "exchange.declare", e))?;
        ch.queue_declare(dead.as_str().into(), durable, quorum_arguments(None))
            .await
            .map_err(|e| self.classify(queue, "queue.declare", e))?;
        ch.queue_bind(dead.as_str().into(), dead.as_str().into(), "".into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .map_err(|e| self.classify(queue, "queue.bind", e))?;
        ch.queue_declare(queue.into(), durable, quorum_arguments(Some(&dead)))
            .await
            .map_err(|e| self.classify(queue, "queue.declare", e))?;
        close_channel(ch, &self.label).await;
        let mut declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        if declared.0 != live.generation {
            *declared = (live.generation, HashSet::new());
        }
        declared.1.insert(queue.to_string());
        tracing::debug!(url = %self.label, queue, "declared quorum queue and dead-letter queue");
        Ok(())
    }

    fn forget_topology(&self, queue: &str) {
        self.declared.lock().unwrap_or_else(|p| p.into_inner()).1.remove(queue);
    }

    /// Publishes with confirms, declaring `queue`'s topology first; retried on reconnection.
    async fn publish_to(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        let properties = &properties;
        self.retrying("basic.publish", queue, |live| async move {
            self.ensure_topology(&live, queue).await?;
            // mandatory: a queue deleted behind our back comes back as a return, not a silent drop
            let options = BasicPublishOptions { mandatory: true, ..Default::default() };
            let confirm = live
                .publisher
                .basic_publish(exchange.into(), routing_key.into(), options, payload, properties.clone())
                .await
                .map_err(|e| self.classify(queue, "basic.publish", e))?;
            match confirm.await.map_err(|e| self.classify(queue, "basic.publish", e))? {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_returned)) => {
                    self.forget_topology(queue);
                    Err(QueueError::Unroutable { queue: queue.to_string() })
                }
                Confirmation::Nack(_) => Err(QueueError::Nacked { queue: queue.to_string() }),
                Confirmation::NotRequested => {
                    Err(QueueError::Connection(format!("{}: publisher confirms are off on the channel", self.label)))
                }
            }
        })
        .await
    }

    async fn publish_dead_letter(&self, queue: &str, payload: &[u8], reason: &str, redeliveries: u32) -> Result<(), QueueError> {
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(LongString::from(reason)));
        headers.insert(SOURCE_QUEUE_HEADER.into(), AMQPValue::LongString(LongString::from(queue)));
        headers.insert(REDELIVERIES_HEADER.into(), AMQPValue::LongUInt(redeliveries));
        let dead = dead_letter_queue(queue);
        self.publish_to(queue, &dead, queue, payload, persistent().with_headers(headers)).await?;
        *self.dead_lettered.lock().unwrap_or_else(|p| p.into_inner()).entry(queue.to_string()).or_insert(0) += 1;
        Ok(())
    }

    async fn depth_of(&self, queue: &str, name: &str) -> Result<u64, QueueError> {
        Ok(self.stats_of(queue, name).await?.0)
    }

    /// (messages ready, consumers) of `name`, declared passively.
    async fn stats_of(&self, queue: &str, name: &str) -> Result<(u64, u64), QueueError> {
        self.retrying("queue.declare", queue, |live| async move {
            self.ensure_topology(&live, queue).await?;
            let ch = live.conn.create_channel().await.map_err(|e| self.classify(queue, "channel.open", e))?;
            let declared = ch
                .queue_declare(name.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
                .await
                .map_err(|e| self.classify(queue, "queue.declare", e))?;
            close_channel(ch, &self.label).await;
            Ok((u64::from(declared.message_count()), u64::from(declared.consumer_count())))
        })
        .await
    }

    async fn open_consumer(&self, queue: &str, prefetch: u16) -> Result<OpenConsumer, QueueError> {
        self.retrying("basic.consume", queue, |live| async move {
            self.ensure_topology(&live, queue).await?;
            let ch = live.conn.create_channel().await.map_err(|e| self.classify(queue, "channel.open", e))?;
            ch.basic_qos(prefetch, BasicQosOptions { global: false }).await.map_err(|e| self.classify(queue, "basic.qos", e))?;
            let tag = format!("{}.{}.{}", self.opts.connection_name, std::process::id(), self.consumer_seq.fetch_add(1, Ordering::SeqCst));
            let consumer = ch
                .basic_consume(queue.into(), ShortString::from(tag), BasicConsumeOptions::default(), FieldTable::default())
                .await
                .map_err(|e| self.classify(queue, "basic.consume", e))?;
            tracing::debug!(url = %self.label, queue, prefetch, generation = live.generation, "consumer opened");
            Ok(OpenConsumer { channel: ch, stream: consumer, conn: live.conn.clone(), generation: live.generation })
        })
        .await
    }

    async fn take_dead_letters(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let dead = dead_letter_queue(queue);
        let dead = dead.as_str();
        self.retrying("basic.get", queue, |live| async move {
            self.ensure_topology(&live, queue).await?;
            let ch = live.conn.create_channel().await.map_err(|e| self.classify(queue, "channel.open", e))?;
            let mut out = Vec::new();
            let mut last_tag = None;
            while out.len() < max {
                let got =
                    ch.basic_get(dead.into(), BasicGetOptions { no_ack: false }).await.map_err(|e| self.classify(queue, "basic.get", e))?;
                let Some(msg) = got else { break };
                let delivery = msg.delivery;
                last_tag = Some(delivery.delivery_tag);
                let reason = string_header(&delivery.properties, REASON_HEADER).unwrap_or_default();
                let source = string_header(&delivery.properties, SOURCE_QUEUE_HEADER).unwrap_or_else(|| queue.to_string());
                out.push(DeadLetter { queue: source, payload: Bytes::from(delivery.data), reason });
            }
            // ack only after all were read: a failure midway leaves every one in the queue
            if let Some(tag) = last_tag {
                ch.basic_ack(tag, BasicAckOptions { multiple: true }).await.map_err(|e| self.classify(queue, "basic.ack", e))?;
            }
            close_channel(ch, &self.label).await;
            Ok(out)
        })
        .await
    }

    async fn delete_queue(&self, queue: &str) -> Result<(), QueueError> {
        let dead = dead_letter_queue(queue);
        let dead = dead.as_str();
        self.retrying("queue.delete", queue, |live| async move {
            let ch = live.conn.create_channel().await.map_err(|e| self.classify(queue, "channel.open", e))?;
            for name in [queue, dead] {
                ch.queue_delete(name.into(), QueueDeleteOptions::default()).await.map_err(|e| self.classify(queue, "queue.delete", e))?;
            }
            ch.exchange_delete(dead.into(), ExchangeDeleteOptions::default())
                .await
                .map_err(|e| self.classify(queue, "exchange.delete", e))?;
            close_channel(ch, &self.label).await;
            self.forget_topology(queue);
            Ok(())
        })
        .await
    }
}

async fn close_channel(ch: Channel, label: &str) {
    if let Err(e) = ch.close(REPLY_SUCCESS, "OK".into()).await {
        tracing::debug!(url = %label, error = %e, "closing a rabbitmq channel");
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Deliveries after which the broker itself dead-letters a message: the backstop for a
/// message that kills every consumer before it can be settled (the worker dead-letters such a
/// task itself after a few deliveries; this holds even if that check never runs).
pub const DELIVERY_LIMIT: i64 = 20;

fn quorum_arguments(dead_letter_exchange: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    if let Some(dlx) = dead_letter_exchange {
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(dlx)));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
    }
    args
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v)
}

fn string_header(properties: &BasicProperties, name: &str) -> Option<String> {
    match header(properties, name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The quorum queue's `x-delivery-count` (0 when absent, e.g. on first delivery).
fn delivery_count(properties: &BasicProperties) -> u32 {
    let count: i64 = match header(properties, DELIVERY_COUNT_HEADER) {
        Some(AMQPValue::ShortShortInt(v)) => (*v).into(),
        Some(AMQPValue::ShortShortUInt(v)) => (*v).into(),
        Some(AMQPValue::ShortInt(v)) => (*v).into(),
        Some(AMQPValue::ShortUInt(v)) => (*v).into(),
        Some(AMQPValue::LongInt(v)) => (*v).into(),
        Some(AMQPValue::LongUInt(v)) => (*v).into(),
        Some(AMQPValue::LongLongInt(v)) => *v,
        _ => 0,
    };
    u32::try_from(count.max(0)).unwrap_or(u32::MAX)
}

/// Validates `url` and fills in the user and password it lacks from `DFTG_AMQP_USER` and
/// `DFTG_AMQP_PASSWORD` (read through `env`). Returns (the URL to connect with, the URL
/// without its password for messages).
fn resolve_url(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<(String, String), QueueError> {
    let invalid = |reason: String| QueueError::Invalid { field: "amqp url".into(), reason: format!("{}: {reason}", redact_raw(url)) };
    let mut parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "amqp" | "amqps") {
        return Err(invalid("the scheme must be amqp:// or amqps://".into()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the url has no host".into()));
    }
    if parsed.username().is_empty() {
        if let Some(user) = env(USER_ENV) {
            parsed.set_username(&user).map_err(|()| invalid(format!("{USER_ENV} cannot be used as a user name")))?;
        }
    }
    if parsed.password().is_none() {
        if let Some(password) = env(PASSWORD_ENV) {
            parsed.set_password(Some(&password)).map_err(|()| invalid(format!("{PASSWORD_ENV} cannot be used as a password")))?;
        }
    }
    let full = parsed.to_string();
    let mut redacted = parsed;
    // set_password only fails for URLs without a host, excluded above
    let _ = redacted.set_password(None);
    Ok((full, redacted.to_string()))
}

/// Removes the password from a URL that may not even parse.
fn redact_raw(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_string(),
    }
}

impl TaskQueue for AmqpQueue {
    fn publish<'a>(&'a self, queue: &'a str, payload: Bytes) -> BoxFuture<'a, Result<(), QueueError>> {
        async move { self.inner.publish_to(queue, "", queue, &payload, persistent()).await }.boxed()
    }

    fn consume<'a>(&'a self, queue: &'a str, prefetch: usize) -> BoxFuture<'a, Result<Box<dyn Consumer>, QueueError>> {
        async move {
            let prefetch = u16::try_from(prefetch)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| QueueError::Invalid { field: "prefetch".into(), reason: format!("{prefetch} is not in 1..=65535") })?;
            // open eagerly so a bad queue shows here rather than at the first `next`
            let open = self.inner.open_consumer(queue, prefetch).await?;
            Ok(Box::new(AmqpConsumer {
                inner: self.inner.clone(),
                queue: queue.to_string(),
                prefetch,
                slots: Arc::new(Semaphore::new(usize::from(prefetch))),
                current: Some(open),
            }) as Box<dyn Consumer>)
        }
        .boxed()
    }

    fn depth<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, QueueError>> {
        async move { self.inner.depth_of(queue, queue).await }.boxed()
    }

    fn dead_letter_depth<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, QueueError>> {
        async move { self.inner.depth_of(queue, &dead_letter_queue(queue)).await }.boxed()
    }

    fn consumer_count<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<u64, QueueError>> {
        async move { Ok(self.inner.stats_of(queue, queue).await?.1) }.boxed()
    }
}

/// A consumer's channel and stream on one connection.
struct OpenConsumer {
    channel: Channel,
    stream: lapin::Consumer,
    conn: Arc<Connection>,
    generation: u64,
}

impl OpenConsumer {
    /// False once the channel or its connection died, or the shared connection was replaced
    /// (then this one is dead or unresponsive even if lapin has not noticed yet).
    fn healthy(&self, inner: &Inner) -> bool {
        self.channel.status().connected() && self.conn.status().connected() && inner.generation.load(Ordering::SeqCst) == self.generation
    }
}

struct AmqpConsumer {
    inner: Arc<Inner>,
    queue: String,
    prefetch: u16,
    /// Our side of the prefetch bound: a permit per unsettled delivery, across reconnections.
    slots: Arc<Semaphore>,
    current: Option<OpenConsumer>,
}

impl Consumer for AmqpConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Delivery>, QueueError>> {
        async move {
            let permit = self.slots.clone().acquire_owned().await.map_err(|_| QueueError::Closed { queue: self.queue.clone() })?;
            loop {
                if self.inner.is_closed() {
                    return Ok(None);
                }
                let current = match self.current.as_mut() {
                    Some(current) => current,
                    None => self.current.insert(self.inner.open_consumer(&self.queue, self.prefetch).await?),
                };
                // defence in depth: lapin can leave an ack racing a dying connection unanswered
                // (see `settle`), so do not rely on it ending the stream either; a watchdog
                // re-checks the connection while we wait
                let item = tokio::select! {
                    biased;
                    item = current.stream.next() => item,
                    _ = tokio::time::sleep(CONSUMER_WATCHDOG) => {
                        if !current.healthy(&self.inner) && !self.inner.is_closed() {
                            tracing::warn!(
                                url = %self.inner.label, queue = %self.queue, generation = current.generation,
                                "consumer connection is gone; re-opening"
                            );
                            self.current = None;
                        }
                        continue;
                    }
                };
                match item {
                    Some(Ok(delivery)) if !delivery.acker.usable() => {
                        // buffered before its channel died: it cannot be acked and the broker
                        // redelivers it, so processing it now would only duplicate work
                        tracing::debug!(url = %self.inner.label, queue = %self.queue, "skipping a delivery of a dead channel");
                    }
                    Some(Ok(delivery)) => {
                        let redeliveries = delivery_count(&delivery.properties);
                        let payload = Bytes::from(delivery.data);
                        let acker = AmqpAcker {
                            inner: self.inner.clone(),
                            queue: self.queue.clone(),
                            channel: current.channel.clone(),
                            acker: delivery.acker,
                            payload: payload.clone(),
                            redeliveries,
                            _permit: permit,
                        };
                        return Ok(Some(Delivery::new(payload, redeliveries, Box::new(acker))));
                    }
                    Some(Err(e)) => {
                        if !self.inner.is_closed() {
                            tracing::warn!(url = %self.inner.label, queue = %self.queue, error = %e, "consumer channel lost; re-opening");
                        }
                        self.current = None;
                    }
                    None => {
                        if !self.inner.is_closed() {
                            tracing::warn!(url = %self.inner.label, queue = %self.queue, "consumer cancelled by the broker; re-opening");
                        }
                        // the broker cancels consumers of deleted queues: declare it again
                        self.inner.forget_topology(&self.queue);
                        self.current = None;
                    }
                }
            }
        }
        .boxed()
    }
}

struct AmqpAcker {
    inner: Arc<Inner>,
    queue: String,
    /// Keeps the channel open while the delivery is unsettled.
    channel: Channel,
    acker: lapin::Acker,
    payload: Bytes,
    redeliveries: u32,
    _permit: OwnedSemaphorePermit,
}

#[derive(Clone, Copy)]
enum Settle {
    Ack,
    Requeue,
}

impl AmqpAcker {
    /// A failure here means the delivery's channel is gone; the broker then redelivers the
    /// message, which at-least-once delivery and create-only outputs make harmless.
    async fn settle(&self, how: Settle) {
        let op = match how {
            Settle::Ack => "ack",
            Settle::Requeue => "requeue",
        };
        if !self.channel.status().connected() {
            tracing::warn!(
                url = %self.inner.label, queue = %self.queue, op,
                "delivery not settled: its channel is gone and the broker redelivers it"
            );
            return;
        }
        let settling = async {
            match how {
                Settle::Ack => self.acker.ack(BasicAckOptions::default()).await,
                // nack(requeue) rather than a republish, so the quorum queue counts the redelivery
                Settle::Requeue => self.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await,
            }
        };
        // an ack racing a dying connection can stay unanswered by lapin (seen under load):
        // give up once the channel is gone, and in any case after SETTLE_TIMEOUT
        let channel_gone = async {
            loop {
                tokio::time::sleep(SETTLE_RECHECK).await;
                if !self.channel.status().connected() {
                    return;
                }
            }
        };
        let outcome = tokio::select! {
            result = settling => Some(result),
            _ = channel_gone => None,
            _ = tokio::time::sleep(SETTLE_TIMEOUT) => None,
        };
        match outcome {
            Some(Ok(true)) => {}
            Some(Ok(false)) | None => tracing::warn!(
                url = %self.inner.label, queue = %self.queue, op,
                "delivery not settled: its channel is gone and the broker redelivers it"
            ),
            Some(Err(e)) => tracing::warn!(
                url = %self.inner.label, queue = %self.queue, op, error = %e,
                "settling a delivery failed: the broker redelivers it"
            ),
        }
    }
}

impl Acker for AmqpAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), QueueError>> {
        async move {
            self.settle(Settle::Ack).await;
            Ok(())
        }
        .boxed()
    }

    fn requeue(self: Box<Self>) -> BoxFuture<'static, Result<(), QueueError>> {
        async move {
            self.settle(Settle::Requeue).await;
            Ok(())
        }
        .boxed()
    }

    fn dead_letter(self: Box<Self>, reason: String) -> BoxFuture<'static, Result<(), QueueError>> {
        async move {
            // publish with the reason first, then ack: a crash in between duplicates the dead
            // letter rather than losing it
            self.inner.publish_dead_letter(&self.queue, &self.payload, &reason, self.redeliveries).await?;
            tracing::warn!(url = %self.inner.label, queue = %self.queue, reason = %reason, "message dead-lettered");
            self.settle(Settle::Ack).await;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn urls_are_checked_and_redacted() {
        let (full, label) = resolve_url("amqp://u:secret@localhost:5672/%2f", no_env).unwrap();
        assert_eq!(full, "amqp://u:secret@localhost:5672/%2f");
        assert_eq!(label, "amqp://u@localhost:5672/%2f");
        let (_, label) = resolve_url("amqps://broker.example:5671", no_env).unwrap();
        assert_eq!(label, "amqps://broker.example:5671");
        let err = resolve_url("http://u:secret@x/", no_env).unwrap_err().to_string();
        assert!(err.contains("http://u@x/") && !err.contains("secret"), "{err}");
        let err = resolve_url("amqp://u:secret@[::1/", no_env).unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn credentials_come_from_the_environment_when_the_url_has_none() {
        let env = |name: &str| match name {
            USER_ENV => Some("worker".to_string()),
            PASSWORD_ENV => Some("p@ss:word".to_string()),
            _ => None,
        };
        let (full, label) = resolve_url("amqps://broker:5671/jobs", env).unwrap();
        assert_eq!(full, "amqps://worker:p%40ss%3Aword@broker:5671/jobs");
        assert_eq!(label, "amqps://worker@broker:5671/jobs");
        // credentials in the URL win
        let (full, _) = resolve_url("amqp://me:mine@broker/", env).unwrap();
        assert_eq!(full, "amqp://me:mine@broker/");
        // a user without a password takes the password only
        let (full, _) = resolve_url("amqp://me@broker/", env).unwrap();
        assert_eq!(full, "amqp://me:p%40ss%3Aword@broker/");
    }

    #[test]
    fn delivery_count_reads_any_integer_width() {
        let mut headers = FieldTable::default();
        headers.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongLongInt(3));
        assert_eq!(delivery_count(&BasicProperties::default().with_headers(headers)), 3);
        let mut headers = FieldTable::default();
        headers.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongInt(2));
        assert_eq!(delivery_count(&BasicProperties::default().with_headers(headers)), 2);
        assert_eq!(delivery_count(&BasicProperties::default()), 0);
    }
}
