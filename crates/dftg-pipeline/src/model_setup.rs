//! Connecting a job to its model: the built-in simulator (`sim:PROFILE`), recorded responses
//! served by the simulator (`replay:FILE`), or any OpenAI-compatible endpoint (`openai`).
//! The simulator runs in-process on a real loopback port: the pipeline always speaks HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dftg_model::client::{ModelClient, OpenAiClient, OpenAiConfig, RetryPolicy};
use dftg_model::sim::{self, Faults, Latency, ReplayCaptions, SimConfig, SimCorpus, SimHandle, SimProfile};

use crate::error::PipelineError;
use crate::job::JobSpec;

pub struct ModelSetup {
    pub client: Arc<dyn ModelClient>,
    /// The simulator, when the job uses one (kept alive for the job's duration).
    pub sim: Option<SimHandle>,
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

/// `model.timeout_secs` as a duration; NaN, infinite, negative, zero or absurdly large values
/// are refused (`Duration::from_secs_f64` would panic on some of them).
pub fn request_timeout(secs: f64) -> Result<Duration, PipelineError> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(PipelineError::invalid("model.timeout_secs", "must be a positive, finite number of seconds")),
    }
}

/// Starts what the job's model needs. `corpus_dir` is the local corpus (for the simulator);
/// `truth_log` receives the simulator's injected hallucinations.
pub async fn start_model(spec: &JobSpec, corpus_dir: &Path, truth_log: Option<PathBuf>) -> Result<ModelSetup, PipelineError> {
    let m = &spec.model;
    let kind = m.kind.as_str();
    let timeout = request_timeout(m.timeout_secs)?;
    // the client also caps attempts (MAX_ATTEMPTS) and time (its request budget)
    let retry = RetryPolicy { max_attempts: m.max_attempts, base_delay: Duration::from_millis(50), max_delay: Duration::from_secs(5) };
    let (base_url, model_name, sim) = if kind == "openai" {
        (m.endpoint.clone().unwrap_or_default(), m.name.clone().unwrap_or_default(), None)
    } else {
        fn bad(field: &'static str) -> impl Fn(sim::SimError) -> PipelineError {
            move |e| PipelineError::invalid(field, e.to_string())
        }
        let corpus = SimCorpus::load_dir(corpus_dir).map_err(bad("corpus.path"))?;
        let (profile, replay) = if let Some(file) = kind.strip_prefix("replay:") {
            let captions = ReplayCaptions::from_jsonl_file(file).map_err(bad("model.kind"))?;
            (sim::profile_by_name(sim::DEFAULT_PROFILE).map_err(bad("model.kind"))?, Some(captions))
        } else {
            (SimProfile::resolve(kind).map_err(bad("model.kind"))?, None)
        };
        let name = m.name.clone().unwrap_or_else(|| kind.to_string());
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
    config.jitter_seed = Some(spec.seed);
    let client = OpenAiClient::new(config).map_err(|e| PipelineError::invalid("model", e.to_string()))?;
    Ok(ModelSetup { client: Arc::new(client), sim })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_timeouts_are_refused_naming_the_field_not_panicking() {
        assert_eq!(request_timeout(1.5).unwrap(), Duration::from_millis(1500));
        for secs in [1e300, f64::INFINITY, f64::NAN, -1.0, 0.0] {
            let err = request_timeout(secs).unwrap_err().to_string();
            assert!(err.contains("model.timeout_secs"), "{secs}: {err}");
        }
    }
}
