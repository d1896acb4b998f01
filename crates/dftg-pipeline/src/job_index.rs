//! Where jobs live in the distributed shape: the index under the root store
//! (`jobs/<job-id>.json`, naming each job's output store) and the workers' lookup of a job's
//! context from its `job.json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use dftg_runtime::{BlobStore, ObjectBlobStore};

use crate::diagnose::JobContext;
use crate::error::PipelineError;
use crate::job_state::{read_state, JobInfo, Phase};
use crate::metrics::MeteredStore;
use crate::policy::Policy;
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
        Some(b) => {
            serde_json::from_slice::<JobIndexEntry>(&b)
                .map_err(|e| PipelineError::CorruptObject { key: key.clone(), reason: e.to_string() })?
                .out
        }
        None => None,
    };
    job_store(root, job_id, out.as_deref())
}

/// Job contexts a worker keeps (each holds a model client and an extractor).
const MAX_CACHED_JOBS: usize = 64;

/// The worker's job lookup: reads `<job-id>/job.json` from the root store once per job,
/// checks it against the worker's own policy (the operator's roots, as given to the worker),
/// and connects its corpus store and model endpoint.
pub struct StoreJobs {
    root: ObjectBlobStore,
    policy: Policy,
    cache: tokio::sync::Mutex<BTreeMap<String, CachedJob>>,
    /// Overrides the job's in-flight bound for this worker (0: keep the job's).
    pub max_in_flight: usize,
}

/// A job a worker has loaded, with the simulators it runs for it (they serve while held).
struct CachedJob {
    ctx: Arc<JobContext>,
    _sims: Vec<dftg_model::sim::SimHandle>,
}

impl StoreJobs {
    pub fn new(root: ObjectBlobStore, policy: Policy, max_in_flight: usize) -> Self {
        StoreJobs { root, policy, cache: tokio::sync::Mutex::new(BTreeMap::new()), max_in_flight }
    }
}

impl ContextProvider for StoreJobs {
    fn context<'a>(&'a self, job_id: &'a str) -> futures::future::BoxFuture<'a, Result<Arc<JobContext>, PipelineError>> {
        Box::pin(async move {
            let mut cache = self.cache.lock().await;
            if let Some(job) = cache.get(job_id) {
                return Ok(job.ctx.clone());
            }
            let store = locate_job(&self.root, job_id).await?;
            let state =
                read_state(&store).await?.ok_or_else(|| PipelineError::invalid("task.job_id", format!("job {job_id} has no job.json")))?;
            let mut spec = state.spec;
            spec.validate()?;
            self.policy.check(&spec)?;
            if self.max_in_flight > 0 {
                spec.model.max_in_flight = self.max_in_flight;
            }
            let corpus =
                ObjectBlobStore::from_url_existing(&spec.corpus.path).map_err(|e| PipelineError::invalid("corpus.path", e.to_string()))?;
            // a simulated model (or detector, judge, writer) plays from the job's planned images
            let model = if crate::model_setup::uses_simulator(&spec) {
                // a client of its own, dropped with its connections once the corpus is read
                let reader = ObjectBlobStore::from_url_existing(&spec.corpus.path)
                    .map_err(|e| PipelineError::invalid("corpus.path", e.to_string()))?;
                let sim_corpus = crate::model_setup::sim_corpus_from_plan(&store, &reader, state.shards).await?;
                crate::model_setup::start_model_with_corpus(&spec, sim_corpus, None).await?
            } else {
                crate::model_setup::start_model(&spec, std::path::Path::new("."), None).await?
            };
            let info = Arc::new(JobInfo {
                job_id: job_id.to_string(),
                spec,
                store: Arc::new(MeteredStore(store)),
                corpus: Arc::new(MeteredStore(corpus)),
            });
            tracing::info!(job = %job_id, model = %info.spec.model_name(), outputs = %info.store.describe(), "worker took up a job");
            let ctx = Arc::new(JobContext::new(info, model.client, &self.policy)?.with_truth(model.truth).with_writer(model.writer));
            if cache.len() >= MAX_CACHED_JOBS {
                if let Some(first) = cache.keys().next().cloned() {
                    cache.remove(&first);
                }
            }
            let sims = [model.sim, model.vision_sim].into_iter().flatten().collect();
            cache.insert(job_id.to_string(), CachedJob { ctx: ctx.clone(), _sims: sims });
            Ok(ctx)
        })
    }

    fn job_ended<'a>(&'a self, job_id: &'a str) -> futures::future::BoxFuture<'a, Result<bool, PipelineError>> {
        Box::pin(async move {
            // through the cached context's store: one client (and connection pool) per job
            let ctx = self.context(job_id).await?;
            Ok(read_state(ctx.info.store.as_ref()).await?.is_some_and(|s| matches!(s.phase, Phase::Cancelled | Phase::Failed)))
        })
    }
}
