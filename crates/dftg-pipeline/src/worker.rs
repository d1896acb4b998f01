//! The worker loop, the same for the embedded and the distributed shape: take a shard task
//! from the queue, process it, publish the shard event, and ack only after the output is
//! written. Storage hiccups requeue the task (up to a budget); undecodable or hopeless tasks
//! go to the dead-letter queue with the reason. Shutdown stops taking tasks and lets the one
//! in hand finish.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use dftg_runtime::codec::{decode, encode};
use dftg_runtime::queue::TaskQueue;

use crate::diagnose::{run_diagnose_shard, JobContext};
use crate::error::PipelineError;
use crate::generate::run_generate_shard;
use crate::messages::{ShardEvent, ShardTask, Stage, EVENTS_QUEUE, MESSAGE_SCHEMA_VERSION};

/// Redeliveries before a retryable failure is dead-lettered.
pub const MAX_REDELIVERIES: u32 = 5;

/// Finds the context of a task's job (one job in the embedded shape, many when distributed).
pub trait ContextProvider: Send + Sync {
    fn context<'a>(&'a self, job_id: &'a str) -> futures::future::BoxFuture<'a, Result<Arc<JobContext>, PipelineError>>;
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
        let task: ShardTask = match decode(&delivery.payload) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(queue = queue_name, error = %e, "undecodable task dead-lettered");
                crate::metrics::metrics().dead_letters.with_label_values(&[queue_name]).inc();
                delivery.dead_letter(e.to_string()).await?;
                continue;
            }
        };
        let result = process(jobs.as_ref(), &task).await;
        match result {
            Ok(event) => {
                let outcome = if event.already_done { "already_done" } else { "done" };
                crate::metrics::metrics().shards_processed.with_label_values(&[task.stage.as_str(), outcome]).inc();
                queue.publish(EVENTS_QUEUE, encode(&event).map_err(|e| PipelineError::invalid("event", e.to_string()))?).await?;
                delivery.ack().await?;
            }
            Err(e) if e.retryable() && delivery.redeliveries < MAX_REDELIVERIES => {
                tracing::warn!(job = %task.job_id, shard = task.shard, stage = task.stage.as_str(), error = %e, "task requeued");
                crate::metrics::metrics().shards_processed.with_label_values(&[task.stage.as_str(), "requeued"]).inc();
                delivery.requeue().await?;
            }
            Err(e) => {
                tracing::error!(job = %task.job_id, shard = task.shard, stage = task.stage.as_str(), error = %e, "task dead-lettered");
                let event = ShardEvent {
                    schema_version: MESSAGE_SCHEMA_VERSION,
                    job_id: task.job_id.clone(),
                    stage: task.stage,
                    shard: task.shard,
                    items: 0,
                    failed: 0,
                    already_done: false,
                    error: Some(e.to_string()),
                    errors_by_reason: Default::default(),
                };
                queue.publish(EVENTS_QUEUE, encode(&event).map_err(|e| PipelineError::invalid("event", e.to_string()))?).await?;
                let m = crate::metrics::metrics();
                m.shards_processed.with_label_values(&[task.stage.as_str(), "dead_lettered"]).inc();
                m.dead_letters.with_label_values(&[queue_name]).inc();
                delivery.dead_letter(e.to_string()).await?;
            }
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
