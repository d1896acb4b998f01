//! The distributed coordinator, minus the transport: accepts jobs, drives each with the same
//! job driver as `dftg run`, routes worker events, and resumes unfinished jobs after a
//! restart. Queue and store are the traits; RabbitMQ and S3 plug in.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use dftg_runtime::queue::TaskQueue;
use dftg_runtime::{BlobStore, ObjectBlobStore};

use crate::error::{to_json, PipelineError};
use crate::job::{is_job_id, JobSpec};
use crate::job_driver::{drive_job, DriverIo, JobStatus, NoProgress, SharedStatus};
use crate::job_index::{job_store, locate_job, JobIndexEntry, JOB_INDEX};
use crate::job_state::{read_state, JobInfo, Phase};
use crate::messages::{decode_message, ShardEvent, EVENTS_QUEUE, MAX_EVENT_BYTES};
use crate::metrics::MeteredStore;
use crate::policy::Policy;

struct JobEntry {
    status: SharedStatus,
    events: mpsc::Sender<ShardEvent>,
    cancel: CancellationToken,
    /// Fires when the job's driver has returned (immediately for jobs loaded finished).
    ended: CancellationToken,
    /// Where the job writes (its store's URL), for people asking where the outputs are.
    outputs: Option<String>,
}

impl JobEntry {
    fn snapshot(&self) -> JobStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What the operator configured for the coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// What jobs may touch; checked at submit and again when a job is resumed.
    pub policy: Policy,
    /// Finished jobs are forgotten (index entry, status, metric series) this long after they
    /// end; their outputs stay in the store.
    pub retention: Duration,
    /// Jobs held at once; beyond it, the oldest finished job is forgotten, and a submit with
    /// every slot running is refused (429).
    pub max_jobs: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig { policy: Policy::open(), retention: Duration::from_secs(7 * 24 * 3600), max_jobs: 1000 }
    }
}

/// How a cancel request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    NotFound,
    /// The job was running; it ends `cancelled`.
    Cancelled,
    /// The job had already ended in this phase.
    AlreadyEnded(Phase),
}

/// The coordinator: one per deployment; its state is in the store.
pub struct Coordinator {
    root: ObjectBlobStore,
    queue: Arc<dyn TaskQueue>,
    jobs: Mutex<BTreeMap<String, JobEntry>>,
    shutdown: CancellationToken,
    config: CoordinatorConfig,
}

fn is_final(phase: Phase) -> bool {
    matches!(phase, Phase::Done | Phase::Failed | Phase::Cancelled)
}

impl Coordinator {
    /// Starts routing events and resumes every unfinished job found in the store.
    pub async fn start(
        root: ObjectBlobStore,
        queue: Arc<dyn TaskQueue>,
        shutdown: CancellationToken,
        config: CoordinatorConfig,
    ) -> Result<Arc<Self>, PipelineError> {
        let me = Arc::new(Coordinator { root, queue, jobs: Mutex::new(BTreeMap::new()), shutdown, config });
        // queue gauges for /metrics, refreshed in the background
        let poller = me.clone();
        tokio::spawn(async move {
            loop {
                poller.queue_health().await;
                tokio::select! {
                    _ = poller.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        });
        // finished jobs past their retention are forgotten
        let sweeper = me.clone();
        let every = (me.config.retention / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = sweeper.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => sweeper.forget_expired().await,
                }
            }
        });
        for key in me.root.list(JOB_INDEX).await? {
            let Some(job_id) = key.strip_prefix(JOB_INDEX).and_then(|k| k.strip_suffix(".json")) else { continue };
            if !is_job_id(job_id) {
                continue;
            }
            let store = match locate_job(&me.root, job_id).await {
                Ok(store) => store,
                Err(e) => {
                    tracing::error!(job = job_id, error = %e.report(), "cannot locate job");
                    continue;
                }
            };
            match read_state(&store).await {
                Ok(Some(state)) => {
                    let finished = is_final(state.phase);
                    me.launch(job_id.to_string(), state.spec, !finished).await;
                }
                Ok(None) => tracing::warn!(job = job_id, "indexed job has no job.json; skipped"),
                Err(e) => tracing::error!(job = job_id, error = %e.report(), "cannot resume job"),
            }
        }
        // events are routed once every resumed job has its channel: none is dropped as unknown
        let router = me.clone();
        tokio::spawn(async move {
            if let Err(e) = router.route_events().await {
                tracing::error!(error = %e.report(), "event routing stopped");
            }
        });
        Ok(me)
    }

    /// Validates and starts a job; submitting the same spec again returns the same job.
    /// Nothing is created before the job passes every check.
    pub async fn submit(&self, spec: JobSpec) -> Result<String, PipelineError> {
        spec.validate()?;
        if !spec.model.kind.is_openai() && !self.config.policy.allows_model_kind(&spec.model.kind) {
            return Err(PipelineError::invalid(
                "model.kind",
                "distributed jobs reach their model over HTTP: use kind = \"openai\" with an endpoint (start `dftg sim` for a simulator), or sim:NAME where the operator allows it (--allow-sim)",
            ));
        }
        self.config.policy.check(&spec)?;
        let job_id = spec.id();
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            if jobs.contains_key(&job_id) {
                return Ok(job_id);
            }
            if jobs.len() >= self.config.max_jobs {
                // make room by forgetting the job that finished first
                let oldest = jobs
                    .iter()
                    .filter_map(|(id, j)| {
                        let s = j.snapshot();
                        is_final(s.phase).then_some((s.finished_at.unwrap_or(0), id.clone()))
                    })
                    .min();
                match oldest {
                    Some((_, id)) => {
                        jobs.remove(&id);
                        crate::metrics::forget_job(&id);
                        let root = self.root.clone();
                        tokio::spawn(async move {
                            if let Err(e) = root.delete(&format!("{JOB_INDEX}{id}.json")).await {
                                tracing::warn!(job = %id, error = %e, "cannot remove the index entry of a forgotten job");
                            }
                        });
                    }
                    None => return Err(PipelineError::Busy(format!("{} jobs are running; try again when one has ended", jobs.len()))),
                }
            }
        }
        let index = to_json("job index entry", &JobIndexEntry { job_id: job_id.clone(), out: spec.out.clone() }, false)?;
        self.root.put(&format!("{JOB_INDEX}{job_id}.json"), index).await?;
        self.launch(job_id.clone(), spec, true).await;
        Ok(job_id)
    }

    /// Registers a job and, when `run`, drives it in the background. A job that cannot start
    /// (its stores cannot be opened, it is outside the policy) ends `failed` with the reason.
    async fn launch(&self, job_id: String, spec: JobSpec, run: bool) {
        let status: SharedStatus = Arc::new(Mutex::new(JobStatus::new(&job_id)));
        let (tx, rx) = mpsc::channel(4096);
        let cancel = self.shutdown.child_token();
        let ended = CancellationToken::new();
        let store = job_store(&self.root, &job_id, spec.out.as_deref());
        let outputs = store.as_ref().ok().map(|s| s.describe());
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_id.clone(), JobEntry { status: status.clone(), events: tx, cancel: cancel.clone(), ended: ended.clone(), outputs });
        if !run {
            // finished: load its final state for status queries
            if let Ok(store) = &store {
                if let Ok(Some(state)) = read_state(store).await {
                    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
                    s.phase = state.phase;
                    s.images = state.images;
                    s.error = state.error;
                    s.finished_at = Some(state.finished_at.unwrap_or_else(|| crate::job_driver::unix_now() as u64));
                }
            }
            ended.cancel();
            return;
        }
        let policy = self.config.policy.clone();
        let queue = self.queue.clone();
        tokio::spawn(async move {
            let opened = store.and_then(|store| {
                policy.check(&spec)?;
                let corpus = ObjectBlobStore::from_url_existing(&spec.corpus.path)
                    .map_err(|e| PipelineError::invalid("corpus.path", e.to_string()))?;
                Ok((store, corpus))
            });
            let (store, corpus) = match opened {
                Ok(x) => x,
                Err(e) => {
                    let reason = e.report();
                    tracing::warn!(job = %job_id, error = %reason, "job cannot start");
                    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
                    s.phase = Phase::Failed;
                    s.error = Some(reason);
                    s.finished_at = Some(crate::job_driver::unix_now() as u64);
                    drop(s);
                    ended.cancel();
                    return;
                }
            };
            let info = Arc::new(JobInfo {
                job_id: job_id.clone(),
                spec,
                store: Arc::new(MeteredStore(store)),
                corpus: Arc::new(MeteredStore(corpus)),
            });
            tracing::info!(
                job = %job_id,
                model = %info.spec.model_name(),
                corpus = %info.spec.corpus.path,
                shard_size = info.spec.shard_size,
                outputs = %info.store.describe(),
                "job started"
            );
            let io = DriverIo { queue, events: rx, progress: Arc::new(NoProgress), status: status.clone(), shutdown: cancel };
            match drive_job(info, io).await {
                Ok(r) => tracing::info!(
                    job = %job_id,
                    images = r.manifest.images,
                    diagnosed = r.manifest.diagnosed_images,
                    failed = r.manifest.failed_images,
                    instructions = r.manifest.instructions,
                    diagnose_secs = r.diagnose_time.as_secs_f64(),
                    generate_secs = r.generate_time.as_secs_f64(),
                    "job done"
                ),
                Err(e) => {
                    let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    tracing::warn!(
                        job = %job_id,
                        phase = ?s.phase,
                        images = s.images,
                        diagnosed = s.diagnose.items,
                        failed = s.diagnose.failed_items,
                        instructions = s.generate.items,
                        error = %e.report(),
                        "job ended without finishing"
                    )
                }
            }
            ended.cancel();
        });
    }

    async fn route_events(&self) -> Result<(), PipelineError> {
        let mut consumer = self.queue.consume(EVENTS_QUEUE, 256).await?;
        loop {
            let d = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                d = consumer.next() => d?,
            };
            let Some(d) = d else { return Ok(()) };
            let ev: ShardEvent = match decode_message(&d.payload, MAX_EVENT_BYTES) {
                Ok(ev) => ev,
                Err(why) => {
                    d.dead_letter(why).await?;
                    continue;
                }
            };
            let tx = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(&ev.job_id).map(|j| j.events.clone());
            match tx {
                // the driver dedups; a full channel waits (back-pressure on the queue); a
                // closed one means the job has ended
                Some(tx) => {
                    let _ = tx.send(ev).await;
                }
                None => tracing::debug!(job = %ev.job_id, "event for an unknown job dropped"),
            }
            d.ack().await?;
        }
    }

    /// Dead letters of the task queues, and the queue gauges for metrics.
    pub async fn queue_health(&self) -> u64 {
        let m = crate::metrics::metrics();
        let mut dead = 0;
        for q in [crate::messages::DIAGNOSE_QUEUE, crate::messages::GENERATE_QUEUE] {
            if let Ok(n) = self.queue.depth(q).await {
                m.queue_messages.with_label_values(&[q]).set(n as i64);
            }
            if let Ok(n) = self.queue.consumer_count(q).await {
                m.queue_consumers.with_label_values(&[q]).set(n as i64);
            }
            if let Ok(n) = self.queue.dead_letter_depth(q).await {
                m.queue_messages.with_label_values(&[&format!("{q}.dead")]).set(n as i64);
                dead += n;
            }
        }
        dead
    }

    /// Ready when the store and the broker answer (what `/readyz` reports).
    pub async fn ready(&self) -> Result<(), String> {
        readiness(&self.root, self.queue.as_ref()).await
    }

    pub async fn status(&self, job_id: &str) -> Option<JobStatus> {
        let dead = self.queue_health().await;
        let mut s = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(job_id).map(JobEntry::snapshot)?;
        s.dead_letters = dead;
        Some(s)
    }

    /// Where a job writes its outputs (its store's URL).
    pub fn outputs(&self, job_id: &str) -> Option<String> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(job_id).and_then(|j| j.outputs.clone())
    }

    pub async fn list(&self) -> Vec<JobStatus> {
        let dead = self.queue_health().await;
        let jobs: Vec<JobStatus> = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).values().map(JobEntry::snapshot).collect();
        jobs.into_iter()
            .map(|mut s| {
                s.dead_letters = dead;
                s
            })
            .collect()
    }

    /// Cancels a running job: its driver stops, `job.json` says `cancelled`, and workers skip
    /// its queued tasks.
    pub fn cancel(&self, job_id: &str) -> CancelOutcome {
        match self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(job_id) {
            None => CancelOutcome::NotFound,
            Some(j) => {
                let phase = j.snapshot().phase;
                if is_final(phase) && j.ended.is_cancelled() {
                    return CancelOutcome::AlreadyEnded(phase);
                }
                j.cancel.cancel();
                CancelOutcome::Cancelled
            }
        }
    }

    /// Forgets a job: cancels it if it runs (and waits for its driver), removes its index
    /// entry, status and metric series. Its outputs stay in the store. False: no such job.
    pub async fn delete(&self, job_id: &str) -> Result<bool, PipelineError> {
        let ended = match self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(job_id) {
            None => return Ok(false),
            Some(j) => {
                j.cancel.cancel();
                j.ended.clone()
            }
        };
        ended.cancelled().await;
        self.forget(job_id).await?;
        Ok(true)
    }

    async fn forget(&self, job_id: &str) -> Result<(), PipelineError> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(job_id);
        crate::metrics::forget_job(job_id);
        self.root.delete(&format!("{JOB_INDEX}{job_id}.json")).await?;
        tracing::info!(job = job_id, "job forgotten");
        Ok(())
    }

    /// Forgets finished jobs whose retention has passed.
    async fn forget_expired(&self) {
        let now = crate::job_driver::unix_now() as u64;
        let retention = self.config.retention.as_secs();
        let expired: Vec<String> = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, j)| {
                let s = j.snapshot();
                j.ended.is_cancelled() && is_final(s.phase) && s.finished_at.is_some_and(|t| now.saturating_sub(t) >= retention)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Err(e) = self.forget(&id).await {
                tracing::warn!(job = %id, error = %e.report(), "cannot forget an expired job");
            }
        }
    }
}

/// Whether a process can work: its store answers a HEAD and its broker a queue query, each
/// within a few seconds. The reason names the part, not its error text (which may carry URLs).
pub async fn readiness(store: &ObjectBlobStore, queue: &dyn TaskQueue) -> Result<(), String> {
    let limit = Duration::from_secs(5);
    match tokio::time::timeout(limit, store.head("readyz-probe")).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err("the object store does not answer".into()),
        Err(_) => return Err("the object store did not answer within 5 s".into()),
    }
    match tokio::time::timeout(limit, queue.depth(EVENTS_QUEUE)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err("the broker does not answer".into()),
        Err(_) => Err("the broker did not answer within 5 s".into()),
    }
}
