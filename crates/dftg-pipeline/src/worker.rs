//! The worker loop, the same for the embedded and the distributed shape: take a shard task
//! from the queue, process it, publish the shard event, and ack only after the output is
//! written. Storage hiccups requeue the task (up to a budget); undecodable or hopeless tasks
//! go to the dead-letter queue with a bounded reason. A task that panics is dead-lettered and
//! the loop goes on; a task delivered more often than any settled task can be (it killed the
//! consumers before they could settle it) is dead-lettered on sight. Tasks of a cancelled or
//! failed job are acknowledged without work. Shutdown stops taking tasks and lets the one in
//! hand finish.

use std::sync::Arc;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use dftg_runtime::codec::encode;
use dftg_runtime::queue::TaskQueue;

use crate::diagnose::{run_diagnose_shard, JobContext};
use crate::error::{bounded, PipelineError, MAX_ERROR_TEXT};
use crate::generate::run_generate_shard;
use crate::messages::{decode_message, ShardEvent, ShardTask, Stage, EVENTS_QUEUE, MAX_TASK_BYTES, MESSAGE_SCHEMA_VERSION};

/// Redeliveries before a retryable failure is dead-lettered; a task seen more often than this
/// was never settled by the consumers that took it (they died on it) and is dead-lettered
/// before it can kill another.
pub const MAX_REDELIVERIES: u32 = 5;

/// Finds the context of a task's job (one job in the embedded shape, many when distributed).
pub trait ContextProvider: Send + Sync {
    fn context<'a>(&'a self, job_id: &'a str) -> futures::future::BoxFuture<'a, Result<Arc<JobContext>, PipelineError>>;
    /// The job ended (cancelled or failed): its queued tasks are skipped.
    fn job_ended<'a>(&'a self, _job_id: &'a str) -> futures::future::BoxFuture<'a, Result<bool, PipelineError>> {
        Box::pin(async { Ok(false) })
    }
}

/// The embedded shape's provider: one job.
pub struct SingleJob(pub Arc<JobContext>);

impl ContextProvider for SingleJob {
    fn context<'a>(&'a self, job_id: &'a str) -> futures::future::BoxFuture<'a, Result<Arc<JobContext>, PipelineError>> {
        Box::pin(async move {
            if job_id == self.0.info.job_id {
                Ok(self.0.clone())
            } else {
                Err(PipelineError::invalid("task.job_id", format!("unknown job {job_id}")))
            }
        })
    }
}

/// Runs until `shutdown` fires or the queue closes.
pub async fn run_worker(
    queue: Arc<dyn TaskQueue>,
    queue_name: &str,
    prefetch: usize,
    jobs: Arc<dyn ContextProvider>,
    shutdown: CancellationToken,
) -> Result<(), PipelineError> {
    let mut consumer = queue.consume(queue_name, prefetch).await?;
    loop {
        let delivery = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            d = consumer.next() => d?,
        };
        let Some(delivery) = delivery else { return Ok(()) };
        let task = match decode_message::<ShardTask>(&delivery.payload, MAX_TASK_BYTES) {
            Ok(t) => t,
            Err(why) => {
                tracing::error!(queue = queue_name, reason = %why, "task dead-lettered unread");
                crate::metrics::metrics().dead_letters.with_label_values(&[queue_name]).inc();
                delivery.dead_letter(why).await?;
                continue;
            }
        };
        let result = if delivery.redeliveries > MAX_REDELIVERIES {
            Err(PipelineError::Failed(format!(
                "the task was delivered {} times without being settled (it stops its workers)",
                delivery.redeliveries
            )))
        } else {
            match jobs.job_ended(&task.job_id).await {
                Ok(true) => {
                    tracing::info!(job = %task.job_id, shard = task.shard, stage = task.stage.as_str(), "task of an ended job skipped");
                    delivery.ack().await?;
                    continue;
                }
                Ok(false) => process_caught(jobs.as_ref(), &task).await,
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(event) => {
                let outcome = if event.already_done { "already_done" } else { "done" };
                tracing::info!(
                    job = %task.job_id,
                    stage = task.stage.as_str(),
                    shard = task.shard,
                    items = event.items,
                    failed = event.failed,
                    already_done = event.already_done,
                    "shard done"
                );
                crate::metrics::metrics().shards_processed.with_label_values(&[task.stage.as_str(), outcome]).inc();
                queue
                    .publish(
                        EVENTS_QUEUE,
                        encode(&event).map_err(|e| PipelineError::Encode { what: "shard event".into(), reason: e.to_string() })?,
                    )
                    .await?;
                delivery.ack().await?;
            }
            Err(e) if e.retryable() && delivery.redeliveries < MAX_REDELIVERIES => {
                tracing::warn!(job = %task.job_id, shard = task.shard, stage = task.stage.as_str(), error = %e.report(), "task requeued");
                crate::metrics::metrics().shards_processed.with_label_values(&[task.stage.as_str(), "requeued"]).inc();
                delivery.requeue().await?;
            }
            Err(e) => {
                let reason = e.report();
                tracing::error!(job = %task.job_id, shard = task.shard, stage = task.stage.as_str(), error = %reason, "task dead-lettered");
                let event = ShardEvent {
                    schema_version: MESSAGE_SCHEMA_VERSION,
                    job_id: task.job_id.clone(),
                    stage: task.stage,
                    shard: task.shard,
                    items: 0,
                    failed: 0,
                    already_done: false,
                    error: Some(reason.clone()),
                    errors_by_reason: Default::default(),
                };
                queue
                    .publish(
                        EVENTS_QUEUE,
                        encode(&event).map_err(|e| PipelineError::Encode { what: "shard event".into(), reason: e.to_string() })?,
                    )
                    .await?;
                let m = crate::metrics::metrics();
                m.shards_processed.with_label_values(&[task.stage.as_str(), "dead_lettered"]).inc();
                m.dead_letters.with_label_values(&[queue_name]).inc();
                delivery.dead_letter(reason).await?;
            }
        }
    }
}

/// Runs a task; a panic inside it becomes this task's error instead of the worker's end.
async fn process_caught(jobs: &dyn ContextProvider, task: &ShardTask) -> Result<ShardEvent, PipelineError> {
    match std::panic::AssertUnwindSafe(process(jobs, task)).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let what =
                panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
            crate::metrics::metrics().task_panics.inc();
            Err(PipelineError::Failed(format!("the task panicked: {}", bounded(&what, MAX_ERROR_TEXT / 2))))
        }
    }
}

async fn process(jobs: &dyn ContextProvider, task: &ShardTask) -> Result<ShardEvent, PipelineError> {
    let ctx = jobs.context(&task.job_id).await?;
    let (items, failed, already_done, errors_by_reason) = match task.stage {
        Stage::Diagnose => {
            let o = run_diagnose_shard(&ctx, task.shard).await?;
            (o.images, o.failed, o.already_done, o.summary.errors_by_reason)
        }
        Stage::Generate => {
            let o = run_generate_shard(&ctx, task.shard).await?;
            (o.instructions, 0, o.already_done, Default::default())
        }
    };
    Ok(ShardEvent {
        schema_version: MESSAGE_SCHEMA_VERSION,
        job_id: task.job_id.clone(),
        stage: task.stage,
        shard: task.shard,
        items,
        failed,
        already_done,
        error: None,
        errors_by_reason,
    })
}
