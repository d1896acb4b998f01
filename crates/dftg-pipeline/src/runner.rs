//! The embedded shape (`dftg run`): both stages in one process, with the same stage and
//! worker code as the distributed shape, plugged into an in-process queue and a local store.
//! Running again after an interruption resumes: finished shards are not redone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use dftg_runtime::codec::{decode, encode};
use dftg_runtime::queue::{InProcessQueue, TaskQueue};

use crate::coordinator::{build_profile_and_plan, read_state, write_dataset, write_plan, write_state, DatasetManifest, JobState, Phase};
use crate::corpus::load_entries;
use crate::diagnose::JobContext;
use crate::error::PipelineError;
use crate::job::JobSpec;
use crate::messages::{ShardEvent, ShardTask, Stage, DIAGNOSE_QUEUE, EVENTS_QUEUE, GENERATE_QUEUE, MESSAGE_SCHEMA_VERSION};
use crate::report::write_report;
use crate::worker::{run_worker, SingleJob};

/// Progress callbacks (progress bars in the CLI, nothing in tests).
pub trait Progress: Send + Sync {
    fn stage_started(&self, _stage: &str, _total: u64) {}
    fn advanced(&self, _stage: &str, _items: u64) {}
    fn stage_finished(&self, _stage: &str) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

pub struct RunOptions {
    /// Shards processed concurrently per stage.
    pub workers: usize,
    pub progress: Arc<dyn Progress>,
    pub shutdown: CancellationToken,
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub job_id: String,
    pub manifest: DatasetManifest,
    pub diagnose_time: Duration,
    pub generate_time: Duration,
    pub resumed_shards: u64,
}

/// Runs (or resumes) a whole job. `ctx.store` is the job's prefix.
pub async fn run_embedded(spec: &JobSpec, ctx: Arc<JobContext>, opts: RunOptions) -> Result<RunReport, PipelineError> {
    let store = ctx.store.clone();
    let mut state = match read_state(store.as_ref()).await? {
        Some(s) if s.spec == *spec && s.shards > 0 => s,
        Some(s) if s.spec != *spec => {
            return Err(PipelineError::invalid("job", format!("{} already holds job {} with a different spec", store.describe(), s.job_id)))
        }
        _ => {
            let mut state =
                JobState { schema_version: 1, job_id: ctx.job_id.clone(), spec: spec.clone(), phase: Phase::Planning, shards: 0, images: 0, error: None };
            write_state(store.as_ref(), &state).await?;
            let entries = load_entries(ctx.corpus.as_ref(), &spec.corpus).await?;
            let (shards, images) = write_plan(store.as_ref(), &entries, spec.shard_size).await?;
            state.shards = shards;
            state.images = images;
            state
        }
    };
    let shards = state.shards;
    let queue = InProcessQueue::new();
    let provider = Arc::new(SingleJob(ctx.clone()));
    let stop_workers = opts.shutdown.child_token();
    let mut workers = Vec::new();
    for name in [DIAGNOSE_QUEUE, GENERATE_QUEUE] {
        for _ in 0..opts.workers.max(1) {
            let q: Arc<dyn TaskQueue> = Arc::new(queue.clone());
            let p = provider.clone();
            let stop = stop_workers.clone();
            workers.push(tokio::spawn(async move { run_worker(q, name, 1, p, stop).await }));
        }
    }
    let mut stages = StageDriver {
        queue: queue.clone(),
        events: queue.consume(EVENTS_QUEUE, 1024).await?,
        ctx: ctx.clone(),
        progress: opts.progress.clone(),
        shutdown: opts.shutdown.clone(),
        shards,
        failed_shards: BTreeMap::new(),
        resumed: 0,
    };

    let t0 = Instant::now();
    state.phase = Phase::Diagnosing;
    write_state(store.as_ref(), &state).await?;
    let result = stages.run(Stage::Diagnose, state.images * ctx.prompts.len() as u64).await;
    let diagnose_time = t0.elapsed();
    let outcome = match result {
        Ok(()) => {
            state.phase = Phase::Profiling;
            write_state(store.as_ref(), &state).await?;
            let (_profile, plan) = build_profile_and_plan(&ctx, shards).await?;
            state.phase = Phase::Generating;
            write_state(store.as_ref(), &state).await?;
            let t1 = Instant::now();
            stages.run(Stage::Generate, plan.budget).await.map(|()| (plan, t1.elapsed()))
        }
        Err(e) => Err(e),
    };
    stop_workers.cancel();
    for w in workers {
        // a worker's own error was already reflected in the events
        let _ = w.await;
    }
    let (plan, generate_time) = match outcome {
        Ok(x) => x,
        Err(e) => {
            state.phase = if matches!(e, PipelineError::Cancelled) { Phase::Cancelled } else { Phase::Failed };
            state.error = Some(e.to_string());
            write_state(store.as_ref(), &state).await?;
            return Err(e);
        }
    };
    state.phase = Phase::Finishing;
    write_state(store.as_ref(), &state).await?;
    let manifest = write_dataset(&ctx, shards, &plan, std::mem::take(&mut stages.failed_shards)).await?;
    write_report(&ctx, shards).await?;
    state.phase = Phase::Done;
    state.error = None;
    write_state(store.as_ref(), &state).await?;
    Ok(RunReport { job_id: ctx.job_id.clone(), manifest, diagnose_time, generate_time, resumed_shards: stages.resumed })
}

/// Publishes a stage's tasks and follows the shard events until every shard is accounted for.
struct StageDriver {
    queue: InProcessQueue,
    events: Box<dyn dftg_runtime::queue::Consumer>,
    ctx: Arc<JobContext>,
    progress: Arc<dyn Progress>,
    shutdown: CancellationToken,
    shards: u32,
    failed_shards: BTreeMap<String, String>,
    resumed: u64,
}

impl StageDriver {
    async fn run(&mut self, stage: Stage, total_items: u64) -> Result<(), PipelineError> {
        self.progress.stage_started(stage.as_str(), total_items);
        let qname = if stage == Stage::Diagnose { DIAGNOSE_QUEUE } else { GENERATE_QUEUE };
        for shard in 0..self.shards {
            let task = ShardTask { schema_version: MESSAGE_SCHEMA_VERSION, job_id: self.ctx.job_id.clone(), stage, shard };
            self.queue.publish(qname, encode(&task).map_err(|e| PipelineError::invalid("task", e.to_string()))?).await?;
        }
        let mut done: BTreeSet<u32> = BTreeSet::new();
        while done.len() < self.shards as usize {
            let d = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(PipelineError::Cancelled),
                d = self.events.next() => d?,
            };
            let Some(d) = d else { return Err(PipelineError::Cancelled) };
            let ev: ShardEvent = match decode(&d.payload) {
                Ok(ev) => ev,
                Err(e) => {
                    d.dead_letter(e.to_string()).await?;
                    continue;
                }
            };
            d.ack().await?;
            if ev.stage != stage || ev.job_id != self.ctx.job_id || !done.insert(ev.shard) {
                continue;
            }
            if let Some(err) = ev.error {
                self.failed_shards.insert(format!("{}/{}", stage.as_str(), ev.shard), err);
            }
            self.resumed += u64::from(ev.already_done);
            self.progress.advanced(stage.as_str(), ev.items);
        }
        self.progress.stage_finished(stage.as_str());
        Ok(())
    }
}
