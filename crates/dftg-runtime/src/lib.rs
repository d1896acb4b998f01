//! dftg-runtime: the I/O the pipeline needs, behind narrow traits.
//!
//! Layout:
//! - `store` — `BlobStore`: get, create-only put, overwrite put, list; one implementation over
//!   any `object_store` backend (in-memory, local directory, S3), opened from a URL
//! - `queue` — `TaskQueue`: publish, consume with a bounded prefetch, ack / requeue /
//!   dead-letter; the in-process implementation used by `dftg run`
//! - `amqp`  — `AmqpQueue`: the `TaskQueue` of the distributed shape, over RabbitMQ (lapin):
//!   quorum queues, publisher confirms, dead-letter queues, reconnection
//! - `codec` — versioned MessagePack with named fields for queue messages
//! - `s3_test_server` — (feature `s3-test-server`) a real S3 server for integration tests

pub mod amqp;
pub mod codec;
pub mod queue;
#[cfg(feature = "s3-test-server")]
pub mod s3_test_server;
pub mod store;

pub use amqp::{AmqpOptions, AmqpQueue};
pub use queue::{Delivery, InProcessQueue, QueueError, TaskQueue};
pub use store::{BlobStore, ByteStream, ObjectBlobStore, PutOutcome, StoreError};
