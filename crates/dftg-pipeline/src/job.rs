//! The job spec: what to diagnose, with which model, and how much data to generate.
//! TOML or JSON, `schema_version = 1`. A bad spec is refused naming the field that is wrong.

use serde::{Deserialize, Serialize};

use dftg_core::generate::GenerationConfig;

use crate::error::PipelineError;

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
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub corpus: CorpusSpec,
    pub model: ModelSpec,
    #[serde(default = "default_prompts")]
    pub prompts: Vec<String>,
    #[serde(default = "default_shard_size")]
    pub shard_size: usize,
    /// `coco80` (bundled) or a path to a vocabulary TOML.
    #[serde(default = "default_vocabulary")]
    pub vocabulary: String,
    /// `dftg` (the careful reader) or `chair-compat` (the reference CHAIR implementation, so
    /// profiles compare with published numbers; object hallucinations only).
    #[serde(default = "default_extractor")]
    pub extractor: String,
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
    pub format: Option<String>,
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
    #[serde(default = "default_model_kind")]
    pub kind: String,
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
fn default_vocabulary() -> String {
    "coco80".into()
}
fn default_extractor() -> String {
    "dftg".into()
}
fn default_model_kind() -> String {
    "sim:people-everywhere".into()
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
            kind: default_model_kind(),
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

impl JobSpec {
    pub fn new(corpus: &str, model: ModelSpec) -> Self {
        JobSpec {
            schema_version: JOB_SCHEMA_VERSION,
            job_id: None,
            seed: default_seed(),
            corpus: CorpusSpec { path: corpus.to_string(), annotations: None, format: None, image_pattern: None, image_dir: None },
            model,
            prompts: default_prompts(),
            shard_size: default_shard_size(),
            vocabulary: default_vocabulary(),
            extractor: default_extractor(),
            chair_vocab: None,
            nltk_tagger: None,
            generation: GenerationConfig::default(),
            out: None,
        }
    }

    /// Parses TOML (or JSON when the text starts with `{`) and validates.
    pub fn parse(text: &str) -> Result<Self, PipelineError> {
        let spec: JobSpec = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| PipelineError::invalid("job", e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e| PipelineError::invalid("job", e.to_string().trim().replace('\n', " ")))?
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), PipelineError> {
        if self.schema_version != JOB_SCHEMA_VERSION {
            return Err(PipelineError::invalid("schema_version", format!("unsupported version {}", self.schema_version)));
        }
        if self.corpus.path.trim().is_empty() {
            return Err(PipelineError::invalid("corpus.path", "missing corpus"));
        }
        if let Some(f) = &self.corpus.format {
            if !matches!(f.as_str(), "coco" | "jsonl" | "object-map") {
                return Err(PipelineError::invalid("corpus.format", format!("unknown format {f:?} (coco, jsonl, object-map)")));
            }
        }
        if self.shard_size == 0 {
            return Err(PipelineError::invalid("shard_size", "must be at least 1"));
        }
        if let Some(out) = &self.out {
            dftg_runtime::ObjectBlobStore::check_url(out).map_err(|e| PipelineError::invalid("out", e.to_string()))?;
        }
        if self.prompts.is_empty() || self.prompts.iter().any(|p| p.trim().is_empty()) {
            return Err(PipelineError::invalid("prompts", "need at least one non-empty prompt"));
        }
        match self.extractor.as_str() {
            "dftg" => {}
            "chair-compat" if self.chair_vocab.is_some() => {}
            "chair-compat" => return Err(PipelineError::invalid("chair_vocab", "chair-compat needs the directory of CHAIR's synonyms.txt")),
            other => return Err(PipelineError::invalid("extractor", format!("unknown extractor {other:?} (dftg, chair-compat)"))),
        }
        let kind = self.model.kind.as_str();
        if let Some(profile) = kind.strip_prefix("sim:") {
            if profile.is_empty() {
                return Err(PipelineError::invalid("model.kind", "sim: needs a profile name"));
            }
        } else if let Some(file) = kind.strip_prefix("replay:") {
            if file.is_empty() {
                return Err(PipelineError::invalid("model.kind", "replay: needs a JSONL file"));
            }
        } else if kind == "openai" {
            let ok = self.model.endpoint.as_deref().is_some_and(|e| e.starts_with("http://") || e.starts_with("https://"));
            if !ok {
                return Err(PipelineError::invalid("model.endpoint", "openai models need an http(s) endpoint"));
            }
            if self.model.name.as_deref().unwrap_or("").is_empty() {
                return Err(PipelineError::invalid("model.name", "openai models need a model name"));
            }
        } else {
            return Err(PipelineError::invalid("model.kind", format!("unknown model scheme {kind:?} (sim:NAME, replay:FILE, openai)")));
        }
        if self.model.max_in_flight == 0 || self.model.max_in_flight > 4096 {
            return Err(PipelineError::invalid("model.max_in_flight", "must be between 1 and 4096"));
        }
        if !(self.model.timeout_secs > 0.0) {
            return Err(PipelineError::invalid("model.timeout_secs", "must be positive"));
        }
        if self.model.max_attempts == 0 {
            return Err(PipelineError::invalid("model.max_attempts", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.model.sim_fault_rate) {
            return Err(PipelineError::invalid("model.sim_fault_rate", "must be within [0, 1]"));
        }
        self.generation.validate().map_err(|e| PipelineError::invalid("generation", e.to_string()))?;
        if let Some(id) = &self.job_id {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(PipelineError::invalid("job_id", "use letters, digits, '-' and '_'"));
            }
        }
        Ok(())
    }

    /// The job id: given, or derived from the spec's content (same spec → same id → resume).
    pub fn id(&self) -> String {
        if let Some(id) = &self.job_id {
            return id.clone();
        }
        let canonical = serde_json::to_string(self).unwrap_or_default();
        let h = dftg_core::seed::stable_hash(0, &[&canonical]);
        let model = self.model.kind.replace([':', '/', '.'], "-");
        let model: String = model.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect();
        format!("job-{model}-{:08x}", h as u32)
    }

    /// Display name of the model for records and reports.
    pub fn model_name(&self) -> String {
        match &self.model.name {
            Some(n) => n.clone(),
            None => self.model.kind.clone(),
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
        ];
        for (text, field) in cases {
            let err = JobSpec::parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text:?}: {err}");
        }
    }
}
