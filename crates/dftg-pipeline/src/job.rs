//! The job spec: what to diagnose, with which model, and how much data to generate.
//! TOML or JSON, `schema_version = 1`. A bad spec is refused naming the field that is wrong.

use serde::{Deserialize, Serialize};

use dftg_core::generate::GenerationConfig;

pub use crate::choice::{CorpusFormat, DetectorKind, ExtractorKind, JudgeKind, ModelKind, TruthSource, VocabularyChoice};
use crate::error::PipelineError;
use dftg_model::detect::DetectorApi;

pub const JOB_SCHEMA_VERSION: u32 = 1;
pub const DEFAULT_PROMPT: &str = "Describe the image in detail.";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    #[serde(default = "one")]
    pub schema_version: u32,
    /// Stable name of the job; default derives from the spec's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// A name for people (`--name`): the derived job id starts with it (sanitised to letters,
    /// digits, '-' and '_') instead of `job-<model>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub corpus: CorpusSpec,
    pub model: ModelSpec,
    #[serde(default = "default_prompts")]
    pub prompts: Vec<String>,
    #[serde(default = "default_shard_size")]
    pub shard_size: usize,
    /// `coco80` or `lvis` (bundled), or a vocabulary TOML (a name in the operator's directory).
    #[serde(default)]
    pub vocabulary: VocabularyChoice,
    /// `dftg` (the careful reader) or `chair-compat` (the reference CHAIR implementation, so
    /// profiles compare with published numbers; object hallucinations only).
    #[serde(default = "default_extractor")]
    pub extractor: ExtractorKind,
    /// Directory with CHAIR's `synonyms.txt` and `double_words.json` (for `chair-compat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chair_vocab: Option<String>,
    /// Directory with nltk's `averaged_perceptron_tagger_eng.*.json` (for `chair-compat`);
    /// default: `nltk-tagger` beside `chair_vocab`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nltk_tagger: Option<String>,
    #[serde(default)]
    pub generation: GenerationConfig,
    /// Store URL the job writes under (`<out>/<job-id>/`): `s3://bucket/prefix`, `file:///dir`
    /// or a directory. Default: `dftg run --out`, or the coordinator's `--store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
    /// Above this fraction of failed images (model errors, corrupt or missing files, shards
    /// given up) the job ends `failed`; at or below it, `done` with the failures counted.
    #[serde(default = "default_max_failed_fraction", skip_serializing_if = "is_default_max_failed_fraction")]
    pub max_failed_fraction: f64,
    /// Where the ground truth comes from: the corpus's annotations (default), or a detector
    /// (and a judge) asked about what each caption claims.
    #[serde(default, skip_serializing_if = "TruthSpec::is_default")]
    pub truth: TruthSpec,
    /// `[diagnosis]`: how much of the corpus to diagnose (all of it, unless `stop_when`).
    #[serde(default, skip_serializing_if = "DiagnosisSpec::is_default")]
    pub diagnosis: DiagnosisSpec,
}

/// `[diagnosis]`: adaptive diagnosis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosisSpec {
    /// Stop dispatching diagnose shards once the top-k concepts are known (`core::adaptive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_when: Option<StopWhen>,
}

impl DiagnosisSpec {
    fn is_default(&self) -> bool {
        *self == DiagnosisSpec::default()
    }
}

/// `stop_when = { top_k = 10, confidence = 0.95 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopWhen {
    /// The size of the set of most hallucinated concepts that must be settled.
    pub top_k: usize,
    /// The chance that the set at the stop is the true top-k, in (0.5, 1).
    #[serde(default = "default_stop_confidence")]
    pub confidence: f64,
    /// Concepts with fewer chances to be hallucinated are not ranked.
    #[serde(default = "default_min_opportunities")]
    pub min_opportunities: u64,
    /// Waves the shards are dispatched in (the stopping rule looks after each).
    #[serde(default = "default_waves")]
    pub waves: u32,
}

impl StopWhen {
    pub fn new(top_k: usize) -> Self {
        StopWhen { top_k, confidence: default_stop_confidence(), min_opportunities: default_min_opportunities(), waves: default_waves() }
    }
}

fn default_stop_confidence() -> f64 {
    0.95
}
fn default_min_opportunities() -> u64 {
    100
}
fn default_waves() -> u32 {
    20
}

/// `[truth]`: the source of the image information.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruthSpec {
    #[serde(default)]
    pub source: TruthSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<DetectorSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeSpec>,
}

impl TruthSpec {
    fn is_default(&self) -> bool {
        *self == TruthSpec::default()
    }

    /// Whether the plan may read the corpus's annotation file.
    pub fn uses_annotations(&self) -> bool {
        self.source != TruthSource::Detector
    }
}

/// `[truth.detector]`: an open-vocabulary detector over HTTP, or the built-in simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// `sim` (the simulator plays the detector) or `http` (an endpoint).
    #[serde(default = "default_detector_kind")]
    pub kind: DetectorKind,
    /// For `http`: the URL requests go to (`hf`: the full endpoint URL; `roboflow`: the
    /// inference server's base URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `hf`, `roboflow` (Grounding DINO) or `roboflow-yolo-world`.
    #[serde(default = "default_detector_api")]
    pub api: DetectorApi,
    #[serde(default = "default_service_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Labels per request (Grounding DINO's text encoder takes 256 tokens).
    #[serde(default = "default_labels_per_request")]
    pub max_labels_per_request: usize,
    #[serde(default = "default_present_threshold")]
    pub present_threshold: f32,
    #[serde(default = "default_absent_threshold")]
    pub absent_threshold: f32,
    /// Concepts asked about on every image, claimed or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub always_check: Vec<String>,
    /// Simulated detector: share of object instances it misses (no box at 0.35; half of them
    /// still scored in the uncertain band).
    #[serde(default)]
    pub sim_miss_rate: f64,
    /// Simulated detector: share of images given a false box for a co-occurring object.
    #[serde(default)]
    pub sim_false_rate: f64,
}

/// `[truth.judge]`: a vision-language model asked yes/no on the uncertain claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSpec {
    /// `sim` (the simulator judges) or `openai` (any OpenAI-compatible vision endpoint).
    #[serde(default = "default_judge_kind")]
    pub kind: JudgeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default = "default_service_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Simulated judge: share of wrong answers.
    #[serde(default)]
    pub sim_error_rate: f64,
}

fn default_detector_kind() -> DetectorKind {
    DetectorKind::Sim
}
fn default_judge_kind() -> JudgeKind {
    JudgeKind::Sim
}
fn default_detector_api() -> DetectorApi {
    DetectorApi::Hf
}
fn default_service_in_flight() -> usize {
    32
}
fn default_labels_per_request() -> usize {
    32
}
fn default_present_threshold() -> f32 {
    0.35
}
fn default_absent_threshold() -> f32 {
    0.15
}

impl DetectorSpec {
    pub fn sim() -> Self {
        DetectorSpec {
            kind: default_detector_kind(),
            endpoint: None,
            api: default_detector_api(),
            max_in_flight: default_service_in_flight(),
            timeout_secs: default_timeout(),
            max_attempts: default_attempts(),
            max_labels_per_request: default_labels_per_request(),
            present_threshold: default_present_threshold(),
            absent_threshold: default_absent_threshold(),
            always_check: Vec::new(),
            sim_miss_rate: 0.0,
            sim_false_rate: 0.0,
        }
    }
}

impl JudgeSpec {
    pub fn sim() -> Self {
        JudgeSpec {
            kind: default_judge_kind(),
            endpoint: None,
            model: None,
            max_in_flight: default_service_in_flight(),
            timeout_secs: default_timeout(),
            max_attempts: default_attempts(),
            sim_error_rate: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    /// Directory (or store URL) holding the images and, by default, the ground truth.
    pub path: String,
    /// Ground-truth file relative to `path`; default: `annotations.json`, else `manifest.jsonl`.
    /// A prefix ending in `/` (`manifest/`) names a JSONL manifest split into part files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<String>,
    /// `coco`, `jsonl` or `object-map`; default from the file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<CorpusFormat>,
    /// Where image files live relative to `path` when the ground truth has no file names
    /// (`{image}` is replaced by the image key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pattern: Option<String>,
    /// Directory (relative to `path`) the ground truth's file names are relative to; default:
    /// the corpus root, or `images/` when the files are there (COCO's `file_name` has no directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_dir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// `sim:PROFILE` (built-in simulator), `replay:FILE.jsonl` (recorded responses through
    /// the simulator), or `openai` (any OpenAI-compatible endpoint).
    #[serde(default)]
    pub kind: ModelKind,
    /// Base URL for `openai`, e.g. `http://127.0.0.1:8000/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Model name sent in requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Simulator latency (ms) for `sim:` and `replay:` models.
    #[serde(default)]
    pub sim_latency_ms: u64,
    /// Simulator fault rate (fraction of requests failing with 5xx/timeouts/bad bodies).
    #[serde(default)]
    pub sim_fault_rate: f64,
}

/// Bounds on what a job may ask for: every number is finite and capped, so no value can make
/// a worker panic, spin or hold unbounded memory.
pub mod limits {
    pub const MAX_JOB_ID_LEN: usize = 64;
    pub const MAX_TIMEOUT_SECS: f64 = 3600.0;
    pub const MAX_ATTEMPTS: u32 = 10;
    pub const MAX_SIM_LATENCY_MS: u64 = 60_000;
    pub const MAX_SHARD_SIZE: usize = 100_000;
    pub const MAX_PROMPTS: usize = 16;
    pub const MAX_PROMPT_LEN: usize = 4096;
    pub const MAX_TOKENS: u32 = 65_536;
    pub const MAX_TEXT_FIELD_LEN: usize = 1024;
    pub const MAX_BUDGET: u64 = 100_000_000;
    pub const MAX_TOP_K: usize = 1000;
    pub const MAX_WAVES: u32 = 1000;
    pub const MAX_MIN_OPPORTUNITIES: u64 = 1_000_000_000;
}

fn default_max_failed_fraction() -> f64 {
    0.5
}
fn is_default_max_failed_fraction(v: &f64) -> bool {
    *v == default_max_failed_fraction()
}

fn one() -> u32 {
    1
}
fn default_seed() -> u64 {
    42
}
fn default_prompts() -> Vec<String> {
    vec![DEFAULT_PROMPT.to_string()]
}
fn default_shard_size() -> usize {
    100
}
fn default_extractor() -> ExtractorKind {
    ExtractorKind::Dftg
}
fn default_in_flight() -> usize {
    64
}
fn default_timeout() -> f64 {
    60.0
}
fn default_attempts() -> u32 {
    4
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            kind: ModelKind::default(),
            endpoint: None,
            name: None,
            max_tokens: None,
            temperature: None,
            max_in_flight: default_in_flight(),
            timeout_secs: default_timeout(),
            max_attempts: default_attempts(),
            sim_latency_ms: 0,
            sim_fault_rate: 0.0,
        }
    }
}

/// Longest `name` a job spec may carry (its id keeps at most 55 characters of it).
pub const MAX_NAME_LEN: usize = 256;

/// `name` as the start of a job id: runs of anything but letters, digits, '-' and '_' become
/// one '-', without '-' at either end, at most `max` characters.
fn id_stem(name: &str, max: usize) -> String {
    let mut stem = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            stem.push(c);
        } else if !stem.is_empty() && !stem.ends_with('-') {
            stem.push('-');
        }
        if stem.len() >= max {
            break;
        }
    }
    stem.truncate(max);
    stem.trim_end_matches('-').to_string()
}

/// A job id as tasks, events and object keys carry it: short, and safe in a key or a header.
pub fn is_job_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= limits::MAX_JOB_ID_LEN && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl JobSpec {
    pub fn new(corpus: &str, model: ModelSpec) -> Self {
        JobSpec {
            schema_version: JOB_SCHEMA_VERSION,
            job_id: None,
            name: None,
            seed: default_seed(),
            corpus: CorpusSpec { path: corpus.to_string(), annotations: None, format: None, image_pattern: None, image_dir: None },
            model,
            prompts: default_prompts(),
            shard_size: default_shard_size(),
            vocabulary: VocabularyChoice::default(),
            extractor: default_extractor(),
            chair_vocab: None,
            nltk_tagger: None,
            generation: GenerationConfig::default(),
            out: None,
            max_failed_fraction: default_max_failed_fraction(),
            truth: TruthSpec::default(),
            diagnosis: DiagnosisSpec::default(),
        }
    }

    /// Parses TOML (or JSON when the text starts with `{`) and validates.
    pub fn parse(text: &str) -> Result<Self, PipelineError> {
        // parser messages only: the TOML error's rendering quotes the submitted text
        let spec: JobSpec = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| PipelineError::invalid("job", e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e: toml::de::Error| PipelineError::invalid("job", e.message().to_string()))?
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), PipelineError> {
        use limits::*;
        if self.schema_version != JOB_SCHEMA_VERSION {
            return Err(PipelineError::invalid("schema_version", format!("unsupported version {}", self.schema_version)));
        }
        if self.corpus.path.trim().is_empty() {
            return Err(PipelineError::invalid("corpus.path", "missing corpus"));
        }
        if self.shard_size == 0 || self.shard_size > MAX_SHARD_SIZE {
            return Err(PipelineError::invalid("shard_size", format!("must be between 1 and {MAX_SHARD_SIZE}")));
        }
        let text_fields = [
            ("corpus.path", Some(&self.corpus.path)),
            ("corpus.annotations", self.corpus.annotations.as_ref()),
            ("corpus.image_pattern", self.corpus.image_pattern.as_ref()),
            ("corpus.image_dir", self.corpus.image_dir.as_ref()),
            ("chair_vocab", self.chair_vocab.as_ref()),
            ("out", self.out.as_ref()),
            ("model.endpoint", self.model.endpoint.as_ref()),
            ("model.name", self.model.name.as_ref()),
        ];
        for (field, value) in text_fields {
            if let Some(v) = value {
                if v.len() > MAX_TEXT_FIELD_LEN || v.chars().any(char::is_control) {
                    return Err(PipelineError::invalid(
                        field,
                        format!("must be at most {MAX_TEXT_FIELD_LEN} bytes without control characters"),
                    ));
                }
            }
        }
        // relative to the corpus root: never absolute, never climbing out of it
        for (field, value) in [
            ("corpus.annotations", &self.corpus.annotations),
            ("corpus.image_pattern", &self.corpus.image_pattern),
            ("corpus.image_dir", &self.corpus.image_dir),
        ] {
            if let Some(v) = value {
                if v.starts_with('/') || v.contains("://") || v.split('/').any(|s| s == "..") {
                    return Err(PipelineError::invalid(field, "must be a path relative to the corpus, without '..'"));
                }
            }
        }
        if let Some(out) = &self.out {
            dftg_runtime::ObjectBlobStore::check_url(out).map_err(|e| PipelineError::invalid("out", e.to_string()))?;
        }
        if self.prompts.is_empty() || self.prompts.iter().any(|p| p.trim().is_empty()) {
            return Err(PipelineError::invalid("prompts", "need at least one non-empty prompt"));
        }
        if self.prompts.len() > MAX_PROMPTS || self.prompts.iter().any(|p| p.len() > MAX_PROMPT_LEN) {
            return Err(PipelineError::invalid("prompts", format!("at most {MAX_PROMPTS} prompts of at most {MAX_PROMPT_LEN} bytes")));
        }
        if self.extractor == ExtractorKind::ChairCompat && self.chair_vocab.is_none() {
            return Err(PipelineError::invalid("chair_vocab", "chair-compat needs the directory of CHAIR's synonyms.txt"));
        }
        if self.model.kind.is_openai() {
            match self.model.endpoint.as_deref() {
                None => return Err(PipelineError::invalid("model.endpoint", "openai models need an http(s) endpoint")),
                Some(e) => {
                    crate::policy::EndpointRoot::parse(e).map_err(|why| PipelineError::invalid("model.endpoint", why))?;
                }
            }
            if self.model.name.as_deref().unwrap_or("").is_empty() {
                return Err(PipelineError::invalid("model.name", "openai models need a model name"));
            }
        }
        if self.model.max_in_flight == 0 || self.model.max_in_flight > 4096 {
            return Err(PipelineError::invalid("model.max_in_flight", "must be between 1 and 4096"));
        }
        // also refuses NaN and infinities: Duration conversions of such values panic
        if !(self.model.timeout_secs > 0.0 && self.model.timeout_secs <= MAX_TIMEOUT_SECS) {
            return Err(PipelineError::invalid("model.timeout_secs", format!("must be a number of seconds in (0, {MAX_TIMEOUT_SECS}]")));
        }
        if self.model.max_attempts == 0 || self.model.max_attempts > MAX_ATTEMPTS {
            return Err(PipelineError::invalid("model.max_attempts", format!("must be between 1 and {MAX_ATTEMPTS}")));
        }
        if self.model.max_tokens.is_some_and(|t| t == 0 || t > MAX_TOKENS) {
            return Err(PipelineError::invalid("model.max_tokens", format!("must be between 1 and {MAX_TOKENS}")));
        }
        if self.model.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(PipelineError::invalid("model.temperature", "must be within [0, 2]"));
        }
        if self.model.sim_latency_ms > MAX_SIM_LATENCY_MS {
            return Err(PipelineError::invalid("model.sim_latency_ms", format!("must be at most {MAX_SIM_LATENCY_MS}")));
        }
        if !(0.0..=1.0).contains(&self.max_failed_fraction) {
            return Err(PipelineError::invalid("max_failed_fraction", "must be within [0, 1]"));
        }
        if self.generation.budget.is_some_and(|b| b > MAX_BUDGET) || self.generation.floor > MAX_BUDGET {
            return Err(PipelineError::invalid("generation.budget", format!("must be at most {MAX_BUDGET}")));
        }
        if !(0.0..=1.0).contains(&self.model.sim_fault_rate) {
            return Err(PipelineError::invalid("model.sim_fault_rate", "must be within [0, 1]"));
        }
        self.generation.validate().map_err(|e| PipelineError::invalid("generation", e.to_string()))?;
        self.validate_truth()?;
        if let Some(name) = &self.name {
            if name.len() > MAX_NAME_LEN {
                return Err(PipelineError::invalid("name", format!("must be at most {MAX_NAME_LEN} bytes")));
            }
        }
        if let Some(w) = &self.diagnosis.stop_when {
            if w.top_k == 0 || w.top_k > MAX_TOP_K {
                return Err(PipelineError::invalid("diagnosis.stop_when.top_k", format!("must be between 1 and {MAX_TOP_K}")));
            }
            // also refuses NaN; 0.9999 keeps the corrected per-interval level computable
            if !(w.confidence > 0.5 && w.confidence <= 0.9999) {
                return Err(PipelineError::invalid("diagnosis.stop_when.confidence", "must be within (0.5, 0.9999], e.g. 0.95"));
            }
            if w.min_opportunities == 0 || w.min_opportunities > MAX_MIN_OPPORTUNITIES {
                return Err(PipelineError::invalid(
                    "diagnosis.stop_when.min_opportunities",
                    format!("must be between 1 and {MAX_MIN_OPPORTUNITIES}"),
                ));
            }
            if w.waves == 0 || w.waves > MAX_WAVES {
                return Err(PipelineError::invalid("diagnosis.stop_when.waves", format!("must be between 1 and {MAX_WAVES}")));
            }
        }
        if let Some(id) = &self.job_id {
            if !is_job_id(id) {
                return Err(PipelineError::invalid("job_id", format!("use 1 to {MAX_JOB_ID_LEN} letters, digits, '-' and '_'")));
            }
        }
        Ok(())
    }

    fn validate_truth(&self) -> Result<(), PipelineError> {
        use limits::*;
        let t = &self.truth;
        let service = |prefix: &str, simulated: bool, endpoint: &Option<String>, in_flight: usize, timeout: f64, attempts: u32| {
            match (simulated, endpoint) {
                (true, _) => {}
                (false, Some(e)) => {
                    crate::policy::EndpointRoot::parse(e).map_err(|why| PipelineError::invalid(format!("{prefix}.endpoint"), why))?;
                }
                (false, None) => return Err(PipelineError::invalid(format!("{prefix}.endpoint"), "an endpoint is needed")),
            }
            if in_flight == 0 || in_flight > 4096 {
                return Err(PipelineError::invalid(format!("{prefix}.max_in_flight"), "must be between 1 and 4096"));
            }
            if !(timeout > 0.0 && timeout <= MAX_TIMEOUT_SECS) {
                return Err(PipelineError::invalid(
                    format!("{prefix}.timeout_secs"),
                    format!("must be a number of seconds in (0, {MAX_TIMEOUT_SECS}]"),
                ));
            }
            if attempts == 0 || attempts > MAX_ATTEMPTS {
                return Err(PipelineError::invalid(format!("{prefix}.max_attempts"), format!("must be between 1 and {MAX_ATTEMPTS}")));
            }
            Ok(())
        };
        let rate = |field: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(PipelineError::invalid(field, "must be within [0, 1]"))
            }
        };
        if t.source != TruthSource::Annotations && t.detector.is_none() {
            return Err(PipelineError::invalid("truth.detector", "a detector is needed for this truth source"));
        }
        if let Some(d) = &t.detector {
            service("truth.detector", d.kind == DetectorKind::Sim, &d.endpoint, d.max_in_flight, d.timeout_secs, d.max_attempts)?;
            if d.max_labels_per_request == 0 || d.max_labels_per_request > 128 {
                return Err(PipelineError::invalid("truth.detector.max_labels_per_request", "must be between 1 and 128"));
            }
            let ok = |v: f32| v.is_finite() && (0.0..=1.0).contains(&v);
            if !ok(d.present_threshold) || !ok(d.absent_threshold) || d.absent_threshold > d.present_threshold {
                return Err(PipelineError::invalid(
                    "truth.detector.present_threshold",
                    "thresholds within [0, 1], absent_threshold <= present_threshold",
                ));
            }
            if d.always_check.len() > 256 || d.always_check.iter().any(|c| c.is_empty() || c.len() > 128) {
                return Err(PipelineError::invalid("truth.detector.always_check", "at most 256 concept names"));
            }
            rate("truth.detector.sim_miss_rate", d.sim_miss_rate)?;
            rate("truth.detector.sim_false_rate", d.sim_false_rate)?;
        }
        if let Some(j) = &t.judge {
            service("truth.judge", j.kind == JudgeKind::Sim, &j.endpoint, j.max_in_flight, j.timeout_secs, j.max_attempts)?;
            if j.kind == JudgeKind::OpenAi && j.model.as_deref().unwrap_or("").is_empty() {
                return Err(PipelineError::invalid("truth.judge.model", "openai judges need a model name"));
            }
            rate("truth.judge.sim_error_rate", j.sim_error_rate)?;
        }
        Ok(())
    }

    /// The job id: given, or derived from the spec's content (same spec → same id → resume).
    pub fn id(&self) -> String {
        if let Some(id) = &self.job_id {
            return id.clone();
        }
        // Debug is as deterministic as JSON; it stands in only if encoding ever failed
        let canonical = serde_json::to_string(self).unwrap_or_else(|_| format!("{self:?}"));
        let h = dftg_core::seed::stable_hash(0, &[&canonical]);
        // room for "-" and the 8 hex digits of the hash within a job id's length
        let stem_len = limits::MAX_JOB_ID_LEN - 9;
        if let Some(stem) = self.name.as_deref().map(|n| id_stem(n, stem_len)).filter(|s| !s.is_empty()) {
            return format!("{stem}-{:08x}", h as u32);
        }
        // a profile file (`sim:configs/sim/mild.toml`) is named by its stem, not its folders
        let kind = match self.model.kind.sim_profile() {
            Some(p) if p.contains(['/', '\\']) || p.ends_with(".toml") => {
                format!("sim:{}", std::path::Path::new(p).file_stem().and_then(|s| s.to_str()).unwrap_or(p))
            }
            _ => self.model.kind.to_string(),
        };
        let model = kind.replace([':', '/', '.'], "-");
        let model: String = model.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect();
        format!("job-{model}-{:08x}", h as u32)
    }

    /// Display name of the model for records and reports.
    pub fn model_name(&self) -> String {
        match &self.model.name {
            Some(n) => n.clone(),
            None => self.model.kind.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_spec_parses_with_defaults() {
        let s = JobSpec::parse("[corpus]\npath = \"examples/corpus\"\n[model]\nkind = \"sim:kitchenware\"\n").unwrap();
        assert_eq!(s.shard_size, 100);
        assert_eq!(s.prompts, [DEFAULT_PROMPT]);
        assert_eq!(s.id(), s.clone().id(), "id is deterministic");
        assert!(s.id().starts_with("job-sim-kitchenware-"));
        assert_eq!(s.diagnosis.stop_when, None);
        // a spec without [diagnosis] keeps its id: the section is not serialized when default
        assert!(!serde_json::to_string(&s).unwrap().contains("diagnosis"));
        let a = JobSpec::parse("[corpus]\npath = \"x\"\n[model]\n[diagnosis]\nstop_when = { top_k = 10, confidence = 0.95 }\n").unwrap();
        let w = a.diagnosis.stop_when.unwrap();
        assert_eq!((w.top_k, w.confidence, w.min_opportunities, w.waves), (10, 0.95, 100, 20));
    }

    #[test]
    fn a_named_job_ids_start_with_its_sanitised_name() {
        let base = "[corpus]\npath = \"examples/corpus\"\n[model]\nkind = \"sim:kitchenware\"\n";
        let named = |name: &str| JobSpec::parse(&format!("name = {name:?}\n{base}")).unwrap().id();
        let id = named("nightly llava/1.6 run");
        assert!(id.starts_with("nightly-llava-1-6-run-"), "{id}");
        assert!(is_job_id(&id));
        let long = named(&"é".repeat(10).chars().chain("x".repeat(200).chars()).collect::<String>());
        assert!(is_job_id(&long) && long.len() == limits::MAX_JOB_ID_LEN, "{long}");
        assert!(named("///").starts_with("job-sim-kitchenware-"), "nothing usable in the name: the model's id");
        assert_ne!(named("a"), named("b"), "the name is part of the spec");
        let file = JobSpec::parse("[corpus]\npath = \"c\"\n[model]\nkind = \"sim:configs/sim/mild.toml\"\n").unwrap();
        assert!(file.id().starts_with("job-sim-mild-"), "{}", file.id());
        let err = JobSpec::parse(&format!("name = {:?}\n{base}", "n".repeat(MAX_NAME_LEN + 1))).unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let cases = [
            ("[corpus]\npath = \"\"\n[model]\n", "corpus.path"),
            ("[corpus]\npath = \"x\"\n[model]\nkind = \"ftp:x\"\n", "model.kind"),
            ("shard_size = 0\n[corpus]\npath = \"x\"\n[model]\n", "shard_size"),
            ("[corpus]\npath = \"x\"\n[model]\nkind = \"openai\"\n", "model.endpoint"),
            ("[model]\n", "corpus"),
            ("bogus = 1\n[corpus]\npath = \"x\"\n[model]\n", "bogus"),
            ("[corpus]\npath = \"x\"\n[model]\n[generation]\ntemperature = -1.0\n", "temperature"),
            ("[corpus]\npath = \"x\"\n[model]\ntimeout_secs = 1e300\n", "model.timeout_secs"),
            ("[corpus]\npath = \"x\"\n[model]\ntimeout_secs = nan\n", "model.timeout_secs"),
            ("[corpus]\npath = \"x\"\n[model]\nmax_attempts = 4294967295\n", "model.max_attempts"),
            ("[corpus]\npath = \"x\"\nannotations = \"../../etc/passwd\"\n[model]\n", "corpus.annotations"),
            ("[corpus]\npath = \"x\"\n[model]\nkind = \"openai\"\nname = \"m\"\nendpoint = \"http://u:pw@h/v1\"\n", "model.endpoint"),
            ("[corpus]\npath = \"x\"\n[model]\nkind = \"openai\"\nname = \"m\"\nendpoint = \"http://h/v1?k=1\"\n", "model.endpoint"),
            ("max_failed_fraction = 2.0\n[corpus]\npath = \"x\"\n[model]\n", "max_failed_fraction"),
            ("[corpus]\npath = \"x\"\n[model]\n[diagnosis]\nstop_when = { top_k = 0 }\n", "diagnosis.stop_when.top_k"),
            (
                "[corpus]\npath = \"x\"\n[model]\n[diagnosis]\nstop_when = { top_k = 3, confidence = 1.0 }\n",
                "diagnosis.stop_when.confidence",
            ),
            (
                "[corpus]\npath = \"x\"\n[model]\n[diagnosis]\nstop_when = { top_k = 3, confidence = nan }\n",
                "diagnosis.stop_when.confidence",
            ),
            ("[corpus]\npath = \"x\"\n[model]\n[diagnosis]\nstop_when = { top_k = 3, waves = 0 }\n", "diagnosis.stop_when.waves"),
            (
                "[corpus]\npath = \"x\"\n[model]\n[diagnosis]\nstop_when = { top_k = 3, min_opportunities = 0 }\n",
                "diagnosis.stop_when.min_opportunities",
            ),
            ("[corpus]\npath = \"x\"\n[model]\n[diagnosis]\nstop_when = { top_k = 3, bogus = 1 }\n", "bogus"),
        ];
        for (text, field) in cases {
            let err = JobSpec::parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text:?}: {err}");
        }
    }

    #[test]
    fn parse_errors_do_not_quote_the_submitted_text() {
        let secret = "SECRETVALUE123";
        for text in [format!("[corpus]\npath = \"x\"\n{secret} {secret} = 1\n"), format!("[corpus]\npath = {secret}\n[model]\n")] {
            let err = JobSpec::parse(&text).unwrap_err().to_string();
            assert!(!err.contains(secret), "{err}");
        }
        let long = format!("job_id = \"{}\"\n[corpus]\npath = \"x\"\n[model]\n", "a".repeat(100_000));
        let err = JobSpec::parse(&long).unwrap_err();
        assert!(err.to_string().contains("job_id") && err.to_string().len() < 200, "{err}");
    }
}
