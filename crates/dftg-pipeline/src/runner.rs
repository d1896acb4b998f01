//! The embedded shape (`dftg run`): the job driver and the stage workers in one process,
//! plugged into an in-process queue and a local store. Running again after an interruption
//! resumes: finished shards are not redone.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use dftg_runtime::codec::decode;
use dftg_runtime::queue::{InProcessQueue, TaskQueue};

use crate::diagnose::JobContext;
use crate::error::PipelineError;
use crate::job_driver::{drive_job, DriveReport, DriverIo, JobStatus, Progress};
use crate::messages::{ShardEvent, DIAGNOSE_QUEUE, EVENTS_QUEUE, GENERATE_QUEUE};
use crate::worker::{run_worker, SingleJob};

pub use crate::job_driver::NoProgress;

pub struct RunOptions {
    /// Shards processed at once per stage.
    pub workers: usize,
    pub progress: Arc<dyn Progress>,
    pub shutdown: CancellationToken,
}

/// Runs (or resumes) a whole job in this process.
pub async fn run_embedded(ctx: Arc<JobContext>, opts: RunOptions) -> Result<DriveReport, PipelineError> {
    let queue = InProcessQueue::new();
    let provider = Arc::new(SingleJob(ctx.clone()));
    let stop = opts.shutdown.child_token();
    let mut tasks = Vec::new();
    for name in [DIAGNOSE_QUEUE, GENERATE_QUEUE] {
        for _ in 0..opts.workers.max(1) {
            let q: Arc<dyn TaskQueue> = Arc::new(queue.clone());
            let (p, s) = (provider.clone(), stop.clone());
            tasks.push(tokio::spawn(async move { run_worker(q, name, 1, p, s).await }));
        }
    }
    // route the events queue into the driver's channel
    let (tx, rx) = mpsc::channel::<ShardEvent>(1024);
    let mut events = queue.consume(EVENTS_QUEUE, 1024).await?;
    let forward_stop = stop.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let d = tokio::select! {
                _ = forward_stop.cancelled() => return Ok(()),
                d = events.next() => d?,
            };
            let Some(d) = d else { return Ok(()) };
            match decode::<ShardEvent>(&d.payload) {
                Ok(ev) => {
                    d.ack().await?;
                    if tx.send(ev).await.is_err() {
                        return Ok(());
                    }
                }
                Err(e) => d.dead_letter(e.to_string()).await?,
            }
        }
    }));
    let io = DriverIo {
        queue: Arc::new(queue.clone()),
        events: rx,
        progress: opts.progress,
        status: Arc::new(std::sync::Mutex::new(JobStatus::new(&ctx.info.job_id))),
        shutdown: opts.shutdown.clone(),
    };
    let result = drive_job(ctx.info.clone(), io).await;
    stop.cancel();
    for t in tasks {
        // workers finish the shard in hand before they return; one that ended in error or a
        // panic is reported (its shards were already settled or are redone by a rerun)
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e.report(), "an embedded worker stopped"),
            Err(e) => tracing::error!(panicked = e.is_panic(), "an embedded worker ended abnormally"),
        }
    }
    result
}

/// A job prepared to run locally: its directory, its model (started if it is a simulator),
/// and its context.
pub struct LocalJob {
    pub ctx: Arc<JobContext>,
    pub model: crate::model_setup::ModelSetup,
    pub job_dir: std::path::PathBuf,
}

impl LocalJob {
    /// `<out>/<job-id>/`, the corpus directory of the spec, the model (simulators write their
    /// truth log into the job directory).
    pub async fn prepare(spec: &crate::job::JobSpec, out: &std::path::Path) -> Result<LocalJob, PipelineError> {
        let job_id = spec.id();
        let corpus_dir = std::path::PathBuf::from(spec.corpus.path.strip_prefix("file://").unwrap_or(&spec.corpus.path));
        if !corpus_dir.is_dir() {
            return Err(PipelineError::invalid("corpus.path", format!("{} is not a directory", corpus_dir.display())));
        }
        let job_dir = out.join(&job_id);
        let created = [out.to_path_buf(), job_dir.clone()].into_iter().filter(|d| !d.exists()).collect::<Vec<_>>();
        let prepared = async {
            let store = dftg_runtime::ObjectBlobStore::local_dir(&job_dir)?;
            let corpus = dftg_runtime::ObjectBlobStore::local_dir(&corpus_dir)?;
            let truth_log = (!spec.model.kind.is_openai()).then(|| job_dir.join(crate::layout::SIM_TRUTH));
            let model = crate::model_setup::start_model(spec, &corpus_dir, truth_log).await?;
            let (store, corpus) = (crate::metrics::MeteredStore(store), crate::metrics::MeteredStore(corpus));
            let info = Arc::new(crate::job_state::JobInfo { job_id, spec: spec.clone(), store: Arc::new(store), corpus: Arc::new(corpus) });
            let ctx = Arc::new(
                JobContext::new(info, model.client.clone(), &crate::policy::Policy::open())?
                    .with_truth(model.truth.clone())
                    .with_writer(model.writer.clone()),
            );
            Ok(LocalJob { ctx, model, job_dir: job_dir.clone() })
        }
        .await;
        if prepared.is_err() {
            // a refused job leaves nothing behind: the folders this call made, if still empty
            // (remove_dir never removes a folder with anything in it)
            for dir in created.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        prepared
    }

    /// Runs the job and stops the simulator afterwards.
    pub async fn run(self, opts: RunOptions) -> Result<DriveReport, PipelineError> {
        let result = run_embedded(self.ctx, opts).await;
        self.model.shutdown().await;
        result
    }
}
