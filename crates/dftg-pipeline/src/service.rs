//! The distributed shape's processes, minus the transport: the coordinator (accepts jobs,
//! drives each with the same job driver as `dftg run`, routes worker events, resumes
//! unfinished jobs after a restart) and the worker's job lookup (a job's context from its
//! `job.json` in the store). Queue and store are the traits; RabbitMQ and S3 plug in.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use dftg_runtime::codec::decode;
use dftg_runtime::queue::TaskQueue;
use dftg_runtime::{BlobStore, ObjectBlobStore};

use crate::coordinator::{read_state, JobInfo, Phase};
use crate::diagnose::JobContext;
use crate::driver::{drive_job, DriverIo, JobStatus, NoProgress, SharedStatus};
use crate::error::PipelineError;
use crate::job::JobSpec;
use crate::messages::{ShardEvent, EVENTS_QUEUE};
use crate::metrics::MeteredStore;
use crate::worker::ContextProvider;

/// Where the list of jobs lives under the root store.
pub const JOB_INDEX: &str = "jobs/";

/// `jobs/<job-id>.json`: a job's entry in the coordinator's index, naming where its outputs
/// and state live, so a restarted coordinator and every worker find them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobIndexEntry {
    pub job_id: String,
    /// The job's `out` store URL; absent: under the root store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
}

/// The store holding `<job-id>/`: the job's own `out`, or the root.
pub fn job_store(root: &ObjectBlobStore, job_id: &str, out: Option<&str>) -> Result<ObjectBlobStore, PipelineError> {
    match out {
        Some(url) => Ok(ObjectBlobStore::from_url(url).map_err(|e| PipelineError::invalid("out", e.to_string()))?.scoped(job_id)),
        None => Ok(root.scoped(job_id)),
    }
}

/// Where a job lives, from the index (jobs submitted before the index named `out` live under
/// the root).
pub async fn locate_job(root: &ObjectBlobStore, job_id: &str) -> Result<ObjectBlobStore, PipelineError> {
    let key = format!("{JOB_INDEX}{job_id}.json");
    let out = match root.get(&key).await? {
        Some(b) => serde_json::from_slice::<JobIndexEntry>(&b)
            .map_err(|e| PipelineError::CorruptObject { key: key.clone(), reason: e.to_string() })?
            .out,
        None => None,
    };
    job_store(root, job_id, out.as_deref())
}

struct JobEntry {
    status: SharedStatus,
    events: mpsc::Sender<ShardEvent>,
    cancel: CancellationToken,
}

/// The coordinator: one per deployment; its state is in the store.
pub struct Coordinator {
    root: ObjectBlobStore,
    queue: Arc<dyn TaskQueue>,
    jobs: Mutex<BTreeMap<String, JobEntry>>,
    shutdown: CancellationToken,
}

impl Coordinator {
    /// Starts routing events and resumes every unfinished job found in the store.
    pub async fn start(root: ObjectBlobStore, queue: Arc<dyn TaskQueue>, shutdown: CancellationToken) -> Result<Arc<Self>, PipelineError> {
        let me = Arc::new(Coordinator { root, queue, jobs: Mutex::new(BTreeMap::new()), shutdown });
        // queue gauges for /metrics, refreshed in the background
        let poller = me.clone();
        tokio::spawn(async move {
            loop {
                poller.queue_health().await;
                tokio::select! {
                    _ = poller.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                }
            }
        });
        for key in me.root.list(JOB_INDEX).await? {
            let Some(job_id) = key.strip_prefix(JOB_INDEX).and_then(|k| k.strip_suffix(".json")) else { continue };
            let store = match locate_job(&me.root, job_id).await {
                Ok(store) => store,
                Err(e) => {
                    tracing::error!(job = job_id, error = %e, "cannot locate job");
                    continue;
                }
            };
            match read_state(&store).await {
                Ok(Some(state)) => {
                    let finished = matches!(state.phase, Phase::Done | Phase::Cancelled);
                    me.launch(job_id.to_string(), state.spec, !finished).await?;
                }
                Ok(None) => tracing::warn!(job = job_id, "indexed job has no job.json; skipped"),
                Err(e) => tracing::error!(job = job_id, error = %e, "cannot resume job"),
            }
        }
        // events are routed once every resumed job has its channel: none is dropped as unknown
        let router = me.clone();
        tokio::spawn(async move {
            if let Err(e) = router.route_events().await {
                tracing::error!(error = %e, "event routing stopped");
            }
        });
        Ok(me)
    }

    /// Validates and starts a job; submitting the same spec again returns the same job.
    pub async fn submit(&self, spec: JobSpec) -> Result<String, PipelineError> {
        spec.validate()?;
        if spec.model.kind != "openai" {
            return Err(PipelineError::invalid(
                "model.kind",
                "distributed jobs reach their model over HTTP: use kind = \"openai\" with an endpoint (start `dftg sim` for a simulator)",
            ));
        }
        ObjectBlobStore::from_url(&spec.corpus.path).map_err(|e| PipelineError::invalid("corpus.path", e.to_string()))?;
        let job_id = spec.id();
        if self.jobs.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&job_id) {
            return Ok(job_id);
        }
        job_store(&self.root, &job_id, spec.out.as_deref())?;
        let index = serde_json::to_vec(&JobIndexEntry { job_id: job_id.clone(), out: spec.out.clone() }).unwrap_or_default();
        self.root.put(&format!("{JOB_INDEX}{job_id}.json"), Bytes::from(index)).await?;
        self.launch(job_id.clone(), spec, true).await?;
        Ok(job_id)
    }

    async fn launch(&self, job_id: String, spec: JobSpec, run: bool) -> Result<(), PipelineError> {
        let corpus = ObjectBlobStore::from_url(&spec.corpus.path).map_err(|e| PipelineError::invalid("corpus.path", e.to_string()))?;
        let store = job_store(&self.root, &job_id, spec.out.as_deref())?;
        let info = Arc::new(JobInfo {
            job_id: job_id.clone(),
            spec,
            store: Arc::new(MeteredStore(store)),
            corpus: Arc::new(MeteredStore(corpus)),
        });
        let status: SharedStatus = Arc::new(Mutex::new(JobStatus::new(&job_id)));
        let (tx, rx) = mpsc::channel(4096);
        let cancel = self.shutdown.child_token();
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_id.clone(), JobEntry { status: status.clone(), events: tx, cancel: cancel.clone() });
        if !run {
            // finished: load its final state for status queries
            if let Ok(Some(state)) = read_state(info.store.as_ref()).await {
                let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
                s.phase = state.phase;
                s.images = state.images;
                s.error = state.error;
            }
            return Ok(());
        }
        let io = DriverIo { queue: self.queue.clone(), events: rx, progress: Arc::new(NoProgress), status, shutdown: cancel };
        tokio::spawn(async move {
            match drive_job(info.clone(), io).await {
                Ok(r) => tracing::info!(job = %info.job_id, instructions = r.manifest.instructions, "job done"),
                Err(e) => tracing::error!(job = %info.job_id, error = %e, "job ended without finishing"),
            }
        });
        Ok(())
    }

    async fn route_events(&self) -> Result<(), PipelineError> {
        let mut consumer = self.queue.consume(EVENTS_QUEUE, 256).await?;
        loop {
            let d = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                d = consumer.next() => d?,
            };
            let Some(d) = d else { return Ok(()) };
            let ev: ShardEvent = match decode(&d.payload) {
                Ok(ev) => ev,
                Err(e) => {
                    d.dead_letter(e.to_string()).await?;
                    continue;
                }
            };
            let tx = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(&ev.job_id).map(|j| j.events.clone());
            match tx {
                // the driver dedups; a full channel waits (back-pressure on the queue)
                Some(tx) => {
                    let _ = tx.send(ev).await;
                }
                None => tracing::warn!(job = %ev.job_id, "event for an unknown job dropped"),
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

    pub async fn status(&self, job_id: &str) -> Option<JobStatus> {
        let dead = self.queue_health().await;
        let mut s = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(job_id).map(|j| j.status.lock().unwrap_or_else(|p| p.into_inner()).clone())?;
        s.dead_letters = dead;
        Some(s)
    }

    pub async fn list(&self) -> Vec<JobStatus> {
        let dead = self.queue_health().await;
        let jobs: Vec<JobStatus> = {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.values().map(|j| j.status.lock().unwrap_or_else(|p| p.into_inner()).clone()).collect()
        };
        jobs.into_iter().map(|mut s| {
            s.dead_letters = dead;
            s
        }).collect()
    }

    pub fn cancel(&self, job_id: &str) -> bool {
        match self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(job_id) {
            Some(j) => {
                j.cancel.cancel();
                true
            }
            None => false,
        }
    }
}

/// The worker's job lookup: reads `<job-id>/job.json` from the root store once per job and
/// connects its corpus store and model endpoint.
pub struct StoreJobs {
    root: ObjectBlobStore,
    cache: tokio::sync::Mutex<BTreeMap<String, Arc<JobContext>>>,
    /// Overrides the job's in-flight bound for this worker (0: keep the job's).
    pub max_in_flight: usize,
}

impl StoreJobs {
    pub fn new(root: ObjectBlobStore, max_in_flight: usize) -> Self {
        StoreJobs { root, cache: tokio::sync::Mutex::new(BTreeMap::new()), max_in_flight }
    }
}

impl ContextProvider for StoreJobs {
    fn context<'a>(&'a self, job_id: &'a str) -> futures::future::BoxFuture<'a, Result<Arc<JobContext>, PipelineError>> {
        Box::pin(async move {
            let mut cache = self.cache.lock().await;
            if let Some(ctx) = cache.get(job_id) {
                return Ok(ctx.clone());
            }
            let store = locate_job(&self.root, job_id).await?;
            let state = read_state(&store)
                .await?
                .ok_or_else(|| PipelineError::invalid("task.job_id", format!("job {job_id} has no job.json in {}", store.describe())))?;
            let mut spec = state.spec;
            if self.max_in_flight > 0 {
                spec.model.max_in_flight = self.max_in_flight;
            }
            let corpus = ObjectBlobStore::from_url(&spec.corpus.path)?;
            let model = crate::model_setup::start_model(&spec, std::path::Path::new("."), None).await?;
            let info = Arc::new(JobInfo { job_id: job_id.to_string(), spec, store: Arc::new(MeteredStore(store)), corpus: Arc::new(MeteredStore(corpus)) });
            let ctx = Arc::new(JobContext::new(info, model.client)?);
            cache.insert(job_id.to_string(), ctx.clone());
            Ok(ctx)
        })
    }
}
