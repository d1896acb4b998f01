//! Connecting a job to its model: the built-in simulator (`sim:PROFILE`), recorded responses
//! served by the simulator (`replay:FILE`), or any OpenAI-compatible endpoint (`openai`).
//! The simulator runs in-process on a real loopback port: the pipeline always speaks HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dftg_model::client::{ModelClient, OpenAiClient, OpenAiConfig, RetryPolicy};
use dftg_model::sim::{self, Faults, Latency, ReplayCaptions, SimConfig, SimCorpus, SimHandle, SimProfile};

use dftg_core::detection::Thresholds;
use dftg_model::detect::{DetectorConfig, HttpDetector};
use dftg_model::judge::{judge_config, Judge};
use dftg_model::sim::{SimVisionConfig, JUDGE_MODEL};

use crate::error::PipelineError;
use crate::job::{DetectorKind, JobSpec, JudgeKind, ModelKind};
use crate::verify::TruthModels;

pub struct ModelSetup {
    pub client: Arc<dyn ModelClient>,
    /// The simulator, when the job uses one (kept alive for the job's duration).
    pub sim: Option<SimHandle>,
    /// The detector and judge, when the job's truth comes from models.
    pub truth: Option<Arc<TruthModels>>,
    /// A simulator started only to play the detector and judge (the subject is elsewhere).
    pub vision_sim: Option<SimHandle>,
    /// The language model that writes the remedy data; `None`: the template writer.
    pub writer: Option<Arc<dyn crate::writer::Writer>>,
}

impl ModelSetup {
    /// Stops the simulators this setup started.
    pub async fn shutdown(self) {
        for sim in [self.sim, self.vision_sim].into_iter().flatten() {
            if let Err(e) = sim.shutdown().await {
                tracing::warn!(error = %e, "simulator did not shut down cleanly");
            }
        }
    }
}

/// The simulated detector's and judge's error rates from the job.
fn vision_config(spec: &JobSpec) -> SimVisionConfig {
    // the simulator's latency is every simulated service's
    let mut v = SimVisionConfig { latency_ms: spec.model.sim_latency_ms, ..SimVisionConfig::default() };
    if let Some(d) = &spec.truth.detector {
        v.detector_miss_rate = d.sim_miss_rate;
        v.detector_false_rate = d.sim_false_rate;
    }
    if let Some(j) = &spec.truth.judge {
        v.judge_error_rate = j.sim_error_rate;
    }
    v
}

fn uses_sim_vision(spec: &JobSpec) -> bool {
    spec.truth.detector.as_ref().is_some_and(|d| d.kind == DetectorKind::Sim)
        || spec.truth.judge.as_ref().is_some_and(|j| j.kind == JudgeKind::Sim)
}

/// The detector and judge of a job whose truth comes from models; `sim` is the simulator
/// that plays them when the job says `sim`.
fn truth_models(spec: &JobSpec, sim: Option<&SimHandle>) -> Result<Option<Arc<TruthModels>>, PipelineError> {
    let Some(d) = &spec.truth.detector else { return Ok(None) };
    if spec.truth.source == crate::job::TruthSource::Annotations {
        return Ok(None);
    }
    let api = d.api;
    let base_url = match (d.kind, sim) {
        (DetectorKind::Sim, Some(sim)) => sim.detector_url(api),
        (DetectorKind::Sim, None) => return Err(PipelineError::Model("the simulated detector needs the simulator".into())),
        _ => d.endpoint.clone().ok_or_else(|| PipelineError::invalid("truth.detector.endpoint", "an endpoint is needed"))?,
    };
    let mut config = DetectorConfig::new(base_url, api);
    config.api_key = std::env::var("DFTG_DETECTOR_API_KEY").ok().filter(|k| !k.trim().is_empty());
    config.max_in_flight = d.max_in_flight;
    config.request_timeout = request_timeout("truth.detector.timeout_secs", d.timeout_secs)?;
    config.retry = retry_policy(d.max_attempts);
    config.jitter_seed = Some(jitter_seed(spec.seed, "detector"));
    config.max_labels_per_request = d.max_labels_per_request;
    // the service must return boxes below the absent threshold, or nothing is ever uncertain
    config.box_threshold = config.box_threshold.min(d.absent_threshold * 0.5);
    let detector = HttpDetector::new(config).map_err(|e| PipelineError::invalid("truth.detector", e.to_string()))?;
    let judge = match &spec.truth.judge {
        None => None,
        Some(j) => {
            let (url, model) = match (j.kind, sim) {
                (JudgeKind::Sim, Some(sim)) => (sim.judge_base_url(), JUDGE_MODEL.to_string()),
                (JudgeKind::Sim, None) => return Err(PipelineError::Model("the simulated judge needs the simulator".into())),
                _ => (
                    j.endpoint.clone().ok_or_else(|| PipelineError::invalid("truth.judge.endpoint", "an endpoint is needed"))?,
                    j.model.clone().ok_or_else(|| PipelineError::invalid("truth.judge.model", "a model name is needed"))?,
                ),
            };
            let mut config = judge_config(url, model);
            config.max_in_flight = j.max_in_flight;
            config.request_timeout = request_timeout("truth.judge.timeout_secs", j.timeout_secs)?;
            config.retry = retry_policy(j.max_attempts);
            config.jitter_seed = Some(jitter_seed(spec.seed, "judge"));
            let client = OpenAiClient::new(config).map_err(|e| PipelineError::invalid("truth.judge", e.to_string()))?;
            Some(Judge::new(Arc::new(client)))
        }
    };
    let thresholds = Thresholds { present: d.present_threshold, absent: d.absent_threshold, ..Thresholds::default() };
    thresholds.validate().map_err(|e| PipelineError::invalid("truth.detector.present_threshold", e.to_string()))?;
    // with annotations+detector the annotations speak for the categories they have: COCO's
    let covered = dftg_core::vocab::Vocabulary::coco80().concepts().iter().map(|c| c.name.clone()).collect();
    Ok(Some(Arc::new(TruthModels::new(spec.truth.source, Arc::new(detector), judge, thresholds, d.always_check.clone(), covered))))
}

/// The simulator's fault mix for a total fault rate: mostly 5xx, some malformed bodies, and a
/// fifth of the rate as images that fail every time (so some failures survive the retries).
pub fn faults_for_rate(rate: f64) -> Faults {
    Faults {
        http_500: rate * 0.35,
        http_503: rate * 0.25,
        malformed_json: rate * 0.1,
        missing_choices: rate * 0.1,
        sticky_fraction: rate * 0.2,
        ..Faults::default()
    }
}

/// A job's `*.timeout_secs` (named by `field`) as a duration; NaN, infinite, negative, zero or
/// absurdly large values are refused (`Duration::from_secs_f64` would panic on some of them).
pub fn request_timeout(field: &str, secs: f64) -> Result<Duration, PipelineError> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(PipelineError::invalid(field, "must be a positive, finite number of seconds")),
    }
}

/// The backoff every service of a job retries with; `attempts` from the job.
fn retry_policy(attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts: attempts, base_delay: Duration::from_millis(50), max_delay: Duration::from_secs(5) }
}

/// Whether the job starts a simulator: a `sim:` or `replay:` model, or a simulated detector,
/// judge or writer.
pub fn uses_simulator(spec: &JobSpec) -> bool {
    !spec.model.kind.is_openai() || uses_sim_vision(spec)
}

/// The simulator's corpus for a job whose corpus is a store (a distributed worker): the
/// planned images (`plan/shard-*.jsonl`) with their bytes read from the corpus, hashed and
/// dropped. Each worker reads the corpus once per job: meant for the bundled simulator's demos
/// and tests, not for millions of images.
pub async fn sim_corpus_from_plan(
    store: &dyn dftg_runtime::BlobStore,
    corpus: &dyn dftg_runtime::BlobStore,
    shards: u32,
) -> Result<SimCorpus, PipelineError> {
    use futures::StreamExt;
    // reads overlap (store latency), images are added in plan order (the corpus is the same
    // whichever read finishes first)
    const READS_IN_FLIGHT: usize = 8;
    let mut b = SimCorpus::builder(dftg_core::vocab::Vocabulary::coco80());
    for shard in 0..shards {
        let entries: Vec<crate::corpus::PlanEntry> = crate::diagnose::read_jsonl(store, &crate::layout::plan_shard(shard)).await?;
        let mut read = futures::stream::iter(entries)
            .map(|entry| async move {
                let bytes = crate::corpus::fetch_image(corpus, &entry).await.map(|(bytes, _)| bytes);
                (entry, bytes)
            })
            .buffered(READS_IN_FLIGHT);
        while let Some((entry, bytes)) = read.next().await {
            // an unreadable image is not the simulator's to report: the diagnosis records it
            let Ok(bytes) = bytes else { continue };
            b.add(entry.truth, &bytes).map_err(|e| PipelineError::invalid("corpus", e.to_string()))?;
        }
    }
    Ok(b.finish())
}

/// Where the simulator's corpus comes from: a local folder, or one built already. At most one
/// simulator per job reads it (the model's, or else the detector's and judge's).
enum SimCorpusSource<'a> {
    Dir(&'a Path),
    Built(Option<Box<SimCorpus>>),
}

impl SimCorpusSource<'_> {
    fn take(&mut self) -> Result<SimCorpus, PipelineError> {
        match self {
            SimCorpusSource::Dir(dir) => SimCorpus::load_dir(dir).map_err(|e| PipelineError::invalid("corpus.path", e.to_string())),
            SimCorpusSource::Built(c) => {
                c.take().map(|c| *c).ok_or_else(|| PipelineError::Model("the simulator's corpus was used up".into()))
            }
        }
    }
}

/// Starts what the job's model needs. `corpus_dir` is the local corpus (for the simulator);
/// `truth_log` receives the simulator's injected hallucinations.
pub async fn start_model(spec: &JobSpec, corpus_dir: &Path, truth_log: Option<PathBuf>) -> Result<ModelSetup, PipelineError> {
    start_model_from(spec, SimCorpusSource::Dir(corpus_dir), truth_log).await
}

/// [`start_model`] with the simulator's corpus built already ([`sim_corpus_from_plan`]).
pub async fn start_model_with_corpus(spec: &JobSpec, corpus: SimCorpus, truth_log: Option<PathBuf>) -> Result<ModelSetup, PipelineError> {
    start_model_from(spec, SimCorpusSource::Built(Some(Box::new(corpus))), truth_log).await
}

async fn start_model_from(
    spec: &JobSpec,
    mut sim_corpus: SimCorpusSource<'_>,
    truth_log: Option<PathBuf>,
) -> Result<ModelSetup, PipelineError> {
    let m = &spec.model;
    let timeout = request_timeout("model.timeout_secs", m.timeout_secs)?;
    // the client also caps attempts (MAX_ATTEMPTS) and time (its request budget)
    let retry = retry_policy(m.max_attempts);
    let (base_url, model_name, sim) = if m.kind.is_openai() {
        (m.endpoint.clone().unwrap_or_default(), m.name.clone().unwrap_or_default(), None)
    } else {
        fn bad(field: &'static str) -> impl Fn(sim::SimError) -> PipelineError {
            move |e| PipelineError::invalid(field, e.to_string())
        }
        let corpus = sim_corpus.take()?;
        let (profile, replay) = match &m.kind {
            ModelKind::Replay(file) => {
                let captions = ReplayCaptions::from_jsonl_file(file).map_err(bad("model.kind"))?;
                (sim::profile_by_name(sim::DEFAULT_PROFILE).map_err(bad("model.kind"))?, Some(captions))
            }
            kind => (SimProfile::resolve(&kind.to_string()).map_err(bad("model.kind"))?, None),
        };
        let name = m.name.clone().unwrap_or_else(|| m.kind.to_string());
        let mut config = SimConfig::new(profile).with_seed(spec.seed).with_model_name(name.clone());
        if m.sim_latency_ms > 0 {
            config = config.with_latency(Latency::Fixed { ms: m.sim_latency_ms });
        }
        if m.sim_fault_rate > 0.0 {
            config = config.with_faults(faults_for_rate(m.sim_fault_rate));
        }
        if let Some(path) = truth_log {
            config = config.with_truth_log(path);
        }
        if let Some(r) = replay {
            config = config.with_replay(r);
        }
        if uses_sim_vision(spec) {
            config = config.with_vision(vision_config(spec));
        }
        // the job's simulator also plays its writer, with the job's mistake rate
        config = config.with_writer(dftg_model::sim::SimWriterConfig { error_rate: spec.generation.writer.sim_error_rate });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| PipelineError::Model(format!("cannot bind the simulator on loopback: {e}")))?;
        let handle = sim::start(corpus, config, listener).await.map_err(|e| PipelineError::Model(e.to_string()))?;
        (handle.base_url(), name, Some(handle))
    };
    let mut config = OpenAiConfig::new(base_url, model_name);
    config.max_tokens = m.max_tokens.or(config.max_tokens);
    config.temperature = m.temperature;
    config.request_timeout = timeout;
    config.max_in_flight = m.max_in_flight;
    config.retry = retry;
    config.jitter_seed = Some(jitter_seed(spec.seed, "model"));
    let client = OpenAiClient::new(config).map_err(|e| PipelineError::invalid("model", e.to_string()))?;
    // a real subject model with a simulated detector or judge: a simulator of their own
    let vision_sim = if uses_sim_vision(spec) && sim.is_none() {
        let corpus = sim_corpus.take()?;
        let profile = sim::profile_by_name(sim::DEFAULT_PROFILE).map_err(|e| PipelineError::Model(e.to_string()))?;
        let config = SimConfig::new(profile).with_seed(spec.seed).with_vision(vision_config(spec));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| PipelineError::Model(format!("cannot bind the simulator on loopback: {e}")))?;
        Some(sim::start(corpus, config, listener).await.map_err(|e| PipelineError::Model(e.to_string()))?)
    } else {
        None
    };
    let truth = truth_models(spec, sim.as_ref().or(vision_sim.as_ref()))?;
    let writer = writer_for(spec, sim.as_ref())?;
    Ok(ModelSetup { client: Arc::new(client), sim, truth, vision_sim, writer })
}

/// The writer of a job's remedy data: `None` for the template writer; `sim` without an
/// endpoint is the job's own simulator.
pub fn writer_for(spec: &JobSpec, sim: Option<&SimHandle>) -> Result<Option<Arc<dyn crate::writer::Writer>>, PipelineError> {
    use dftg_core::writer::WriterKind;
    let w = &spec.generation.writer;
    let (url, model, label) = match (w.kind, &w.endpoint, sim) {
        (WriterKind::Template, _, _) => return Ok(None),
        (WriterKind::Sim, Some(url), _) => (url.clone(), SIM_WRITER_MODEL.to_string(), "sim".to_string()),
        (WriterKind::Sim, None, Some(sim)) => (sim.base_url(), SIM_WRITER_MODEL.to_string(), "sim".to_string()),
        (WriterKind::Sim, None, None) => {
            return Err(PipelineError::invalid(
                "generation.writer.endpoint",
                "the simulated writer needs the job's simulator (model sim:…) or an endpoint",
            ))
        }
        (WriterKind::OpenAi, url, _) => {
            let url = url.clone().ok_or_else(|| PipelineError::invalid("generation.writer.endpoint", "an endpoint is needed"))?;
            let model = w.model.clone().ok_or_else(|| PipelineError::invalid("generation.writer.model", "a model name is needed"))?;
            let label = format!("openai:{model}");
            (url, model, label)
        }
    };
    let mut config = OpenAiConfig::new(url, model);
    config.api_key = std::env::var("DFTG_WRITER_API_KEY").ok().filter(|k| !k.trim().is_empty()).or(config.api_key);
    config.max_in_flight = w.max_in_flight;
    config.request_timeout = request_timeout("generation.writer.timeout_secs", w.timeout_secs)?;
    config.retry = retry_policy(w.max_attempts);
    config.jitter_seed = Some(jitter_seed(spec.seed, "writer"));
    // the JSON of a multi-turn conversation or a long description, not a caption
    config.max_reply_bytes = 256 << 10;
    let client = OpenAiClient::new(config).map_err(|e| PipelineError::invalid("generation.writer", e.to_string()))?;
    let prompts = Arc::new(crate::writer::Prompts::from_env()?);
    Ok(Some(Arc::new(crate::writer::LlmWriter::new(client, prompts, label, w))))
}

/// The seed of one service client's retry jitter: the job seed, the service, and this worker
/// (host name and process id), so that workers of one job that meet the same failure do not
/// retry in lockstep. Jitter only times retries; no output depends on it.
fn jitter_seed(job_seed: u64, service: &str) -> u64 {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    dftg_core::seed::stable_hash(job_seed, &["retry-jitter", service, &host, &std::process::id().to_string()])
}

/// The model name the simulated writer is asked for.
pub const SIM_WRITER_MODEL: &str = "sim-writer";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_jitter_differs_per_service_and_is_stable_in_a_worker() {
        assert_eq!(jitter_seed(7, "model"), jitter_seed(7, "model"));
        assert_ne!(jitter_seed(7, "model"), jitter_seed(7, "judge"));
        assert_ne!(jitter_seed(7, "model"), jitter_seed(8, "model"));
        // the worker is part of it: another process id gives another seed
        let other = dftg_core::seed::stable_hash(
            7,
            &["retry-jitter", "model", &std::env::var("HOSTNAME").unwrap_or_default(), &(std::process::id() + 1).to_string()],
        );
        assert_ne!(jitter_seed(7, "model"), other);
    }

    #[test]
    fn hostile_timeouts_are_refused_naming_the_field_not_panicking() {
        assert_eq!(request_timeout("model.timeout_secs", 1.5).unwrap(), Duration::from_millis(1500));
        for secs in [1e300, f64::INFINITY, f64::NAN, -1.0, 0.0] {
            let err = request_timeout("model.timeout_secs", secs).unwrap_err().to_string();
            assert!(err.contains("model.timeout_secs"), "{secs}: {err}");
        }
    }
}
