//! The diagnose stage (inference worker): per image fetch bytes, ask the model, extract,
//! check; write one diagnosis shard and its summary. The shard is written with a create-only
//! put; if it already exists the work is not redone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use dftg_core::chair::{ChairVocab, PerceptronTagger};
use dftg_core::check::diagnose;
use dftg_core::extract::{ExtractScratch, Extractor};
use dftg_core::profile::Summary;
use dftg_core::record::{DiagnosisRecord, ImageError, ImageScores, DIAGNOSIS_SCHEMA_VERSION};
use dftg_core::tokens::{TokenUsage, ROLE_SUBJECT};
use dftg_model::client::{ModelClient, ModelRequest};
use dftg_runtime::{BlobStore, PutOutcome};

use crate::corpus::{fetch_image, PlanEntry};
use crate::error::{to_json, PipelineError};
use crate::job_state::JobInfo;
use crate::layout;
use crate::metrics::metrics;

/// What a stage needs to process shards of one job.
pub struct JobContext {
    pub info: Arc<JobInfo>,
    pub model: Arc<dyn ModelClient>,
    pub extractor: Arc<Extractor>,
    /// Images of one shard processed concurrently (the model client bounds requests globally).
    pub concurrency: usize,
    /// The profile and generation plan, read once per process at the first generate shard
    /// (they are written once, at the barrier, and never change afterwards).
    pub generation_inputs: tokio::sync::OnceCell<Arc<crate::generate::GenerationInputs>>,
    /// The detector and judge, when the job's truth comes from models.
    pub truth: Option<Arc<crate::verify::TruthModels>>,
    /// The language model that writes the remedy data; `None`: the template writer.
    pub writer: Option<Arc<dyn crate::writer::Writer>>,
}

impl JobContext {
    /// The context of a job whose model is already connected.
    pub fn new(info: Arc<JobInfo>, model: Arc<dyn ModelClient>, policy: &crate::policy::Policy) -> Result<Self, PipelineError> {
        let extractor = Arc::new(build_extractor(&info.spec, policy)?);
        let concurrency = info.spec.model.max_in_flight;
        Ok(JobContext { info, model, extractor, concurrency, generation_inputs: tokio::sync::OnceCell::new(), truth: None, writer: None })
    }

    /// The context with the writer of the job's remedy data.
    pub fn with_writer(mut self, writer: Option<Arc<dyn crate::writer::Writer>>) -> Self {
        self.writer = writer;
        self
    }

    /// The context with the models that give the job its truth.
    pub fn with_truth(mut self, truth: Option<Arc<crate::verify::TruthModels>>) -> Self {
        self.truth = truth;
        self
    }

    pub fn concept_names(&self) -> Vec<&str> {
        self.extractor.vocab().concepts().iter().map(|c| c.name.as_str()).collect()
    }
}

/// The job's vocabulary and extractor, as its spec says, resolved by the policy (names in the
/// operator's vocabulary directory; paths only under the open policy of `dftg run`). Errors
/// name the file, never its content.
pub fn build_extractor(spec: &crate::job::JobSpec, policy: &crate::policy::Policy) -> Result<Extractor, PipelineError> {
    use crate::policy::VocabSource;
    let vocab = match policy.vocabulary(&spec.vocabulary)? {
        VocabSource::Builtin(b) => b.vocabulary(),
        VocabSource::File(path) => {
            let text = read_config_file("vocabulary", &path)?;
            dftg_core::vocab::Vocabulary::from_toml(&text)
                .map_err(|_| PipelineError::invalid("vocabulary", format!("{} is not a valid vocabulary TOML", path.display())))?
        }
    };
    let vocab = Arc::new(vocab);
    if spec.extractor != crate::job::ExtractorKind::ChairCompat {
        return Ok(Extractor::new(vocab));
    }
    let dir = policy.chair_vocab(spec.chair_vocab.as_deref().unwrap_or_default())?;
    // the tagger sits beside the CHAIR vocabulary unless the (open-policy) job names one
    let tagger_dir = match &spec.nltk_tagger {
        Some(t) => PathBuf::from(t),
        None => default_tagger_dir(&dir),
    };
    let synonyms = read_config_file("chair_vocab", &dir.join("synonyms.txt"))?;
    let doubles = read_config_file("chair_vocab", &dir.join("double_words.json"))?;
    let invalid = |_| PipelineError::invalid("chair_vocab", format!("{} does not hold a valid CHAIR vocabulary", dir.display()));
    let chair = ChairVocab::from_sources(&synonyms, &doubles, load_tagger(&tagger_dir)?).map_err(invalid)?;
    Extractor::chair_compatible(vocab, chair).map_err(invalid)
}

/// Vocabulary files are small; a larger file is not one.
const MAX_CONFIG_FILE_BYTES: u64 = 16 << 20;

fn read_config_file(field: &str, path: &std::path::Path) -> Result<String, PipelineError> {
    let cannot = |why: &str| PipelineError::invalid(field, format!("cannot read {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| cannot(&e.kind().to_string()))?;
    if !meta.is_file() || meta.len() > MAX_CONFIG_FILE_BYTES {
        return Err(cannot("not a regular file of at most 16 MiB"));
    }
    std::fs::read_to_string(path).map_err(|e| cannot(&e.kind().to_string()))
}

/// Where nltk's tagger is when the job names no `nltk_tagger`: `nltk-tagger` beside the CHAIR
/// vocabulary directory (the layout of the shared reference data).
pub fn default_tagger_dir(chair_vocab: &Path) -> PathBuf {
    chair_vocab.parent().unwrap_or(Path::new(".")).join("nltk-tagger")
}

/// CHAIR's `synonyms.txt` and `double_words.json` from `dir`, lemmatized with the tagger of
/// `tagger_dir` (see [`load_tagger`]).
pub fn load_chair_vocab(dir: &Path, tagger_dir: &Path) -> Result<ChairVocab, PipelineError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| PipelineError::invalid("chair_vocab", format!("cannot read {}: {e}", path.display())))
    };
    let (synonyms, double_words) = (read("synonyms.txt")?, read("double_words.json")?);
    ChairVocab::from_sources(&synonyms, &double_words, load_tagger(tagger_dir)?)
        .map_err(|e| PipelineError::invalid("chair_vocab", e.to_string()))
}

/// The files of nltk's English tagger in its directory.
pub const TAGGER_FILES: [&str; 3] = [
    "averaged_perceptron_tagger_eng.weights.json",
    "averaged_perceptron_tagger_eng.tagdict.json",
    "averaged_perceptron_tagger_eng.classes.json",
];

/// Taggers loaded by this process, by directory: every job and extractor shares one.
static TAGGERS: Mutex<Vec<(PathBuf, Arc<PerceptronTagger>)>> = Mutex::new(Vec::new());

/// nltk's tagger from `dir` ([`TAGGER_FILES`]), parsed once per process.
pub fn load_tagger(dir: &Path) -> Result<Arc<PerceptronTagger>, PipelineError> {
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    // held while loading, so concurrent first users wait instead of parsing twice
    let mut loaded = TAGGERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, t)) = loaded.iter().find(|(d, _)| *d == key) {
        return Ok(t.clone());
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| {
            PipelineError::invalid(
                "nltk_tagger",
                format!("cannot read {} (nltk's averaged-perceptron tagger; set --nltk-tagger): {e}", path.display()),
            )
        })
    };
    let [weights, tagdict, classes] = TAGGER_FILES;
    let tagger = PerceptronTagger::from_json(&read(weights)?, &read(tagdict)?, &read(classes)?)
        .map_err(|e| PipelineError::invalid("nltk_tagger", format!("{}: {e}", dir.display())))?;
    let tagger = Arc::new(tagger);
    loaded.push((key, tagger.clone()));
    Ok(tagger)
}

pub struct DiagnoseOutcome {
    pub summary: Summary,
    pub images: u64,
    pub failed: u64,
    pub already_done: bool,
}

pub async fn read_jsonl<T: serde::de::DeserializeOwned>(store: &dyn BlobStore, key: &str) -> Result<Vec<T>, PipelineError> {
    let bytes = store.get(key).await?.ok_or_else(|| PipelineError::CorruptObject { key: key.to_string(), reason: "missing".into() })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| PipelineError::CorruptObject { key: key.into(), reason: "not utf-8".into() })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| PipelineError::CorruptObject { key: key.into(), reason: format!("line {}: {e}", i + 1) })
        })
        .collect()
}

/// One JSON document a line; an item that cannot be encoded fails the whole object.
pub fn encode_jsonl<T: serde::Serialize>(what: &str, items: &[T]) -> Result<Bytes, PipelineError> {
    let mut out = Vec::with_capacity(items.len() * 512);
    for it in items {
        serde_json::to_writer(&mut out, it).map_err(|e| PipelineError::Encode { what: what.to_string(), reason: e.to_string() })?;
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

pub fn summarize(ctx: &JobContext, records: &[DiagnosisRecord]) -> Summary {
    let names = ctx.concept_names();
    let mut s = Summary::default();
    for r in records {
        s.add(r, &names);
    }
    s
}

async fn write_summary(ctx: &JobContext, shard: u32, summary: &Summary) -> Result<(), PipelineError> {
    let key = layout::summary_shard(shard);
    ctx.info.store.put_create(&key, to_json(&key, summary, false)?).await?;
    Ok(())
}

/// Processes one diagnose shard; idempotent.
pub async fn run_diagnose_shard(ctx: &JobContext, shard: u32) -> Result<DiagnoseOutcome, PipelineError> {
    let out_key = layout::diagnosis_shard(shard);
    if ctx.info.store.get(&out_key).await?.is_some() {
        let records: Vec<DiagnosisRecord> = read_jsonl(ctx.info.store.as_ref(), &out_key).await?;
        let summary = summarize(ctx, &records);
        write_summary(ctx, shard, &summary).await?;
        return Ok(DiagnoseOutcome {
            images: summary.images + summary.failed_images,
            failed: summary.failed_images,
            summary,
            already_done: true,
        });
    }
    let entries: Vec<PlanEntry> = read_jsonl(ctx.info.store.as_ref(), &layout::plan_shard(shard)).await?;
    // futures collected first: a closure inside the stream type trips Send inference
    // unordered: an image whose checks take several round trips must not hold up the images
    // behind it (an ordered buffer keeps finished ones in their slots); order is restored after
    let pending: Vec<_> = entries.iter().enumerate().map(|(i, e)| diagnose_entry(ctx, e).map(move |r| (i, r)).boxed()).collect();
    let mut per_image = futures::stream::iter(pending).buffer_unordered(ctx.concurrency.max(1)).collect::<Vec<_>>().await;
    per_image.sort_by_key(|(i, _)| *i);
    let records: Vec<DiagnosisRecord> = per_image.into_iter().flat_map(|(_, r)| r).collect();
    let summary = summarize(ctx, &records);
    let outcome = ctx.info.store.put_create(&out_key, encode_jsonl(&out_key, &records)?).await?;
    if outcome == PutOutcome::Created {
        record_metrics(&records);
    }
    write_summary(ctx, shard, &summary).await?;
    Ok(DiagnoseOutcome {
        images: records.len() as u64,
        failed: summary.failed_images,
        summary,
        already_done: outcome == PutOutcome::AlreadyExists,
    })
}

/// One record per prompt for one image (a failed image yields one record per prompt too).
async fn diagnose_entry(ctx: &JobContext, entry: &PlanEntry) -> Vec<DiagnosisRecord> {
    if let Some(err) = &entry.error {
        return ctx.info.spec.prompts.iter().map(|p| failed(entry, p, err.clone())).collect();
    }
    let (bytes, mime) = match fetch_image(ctx.info.corpus.as_ref(), entry).await {
        Ok(x) => x,
        Err(err) => return ctx.info.spec.prompts.iter().map(|p| failed(entry, p, err.clone())).collect(),
    };
    let asks = ctx.info.spec.prompts.iter().map(|prompt| {
        let req = ModelRequest { image: bytes.clone(), mime: mime.to_string(), prompt: prompt.clone() };
        async move { (prompt, ask(ctx, &req).await) }
    });
    let replies = futures::future::join_all(asks).await;
    if let Some(models) = &ctx.truth {
        let mut out = Vec::with_capacity(replies.len());
        for (prompt, reply) in replies {
            out.push(match reply {
                Ok((text, tokens)) => {
                    // a reply whose checking failed was still paid for
                    let checked =
                        crate::verify::diagnose_with_models(models, &ctx.extractor, &entry.truth, &bytes, mime, prompt, &text).await;
                    DiagnosisRecord { tokens, ..checked.unwrap_or_else(|err| failed(entry, prompt, err)) }
                }
                Err(e) => failed(entry, prompt, ImageError { reason: e.reason().to_string(), message: e.to_string() }),
            });
        }
        return out;
    }
    let mut scratch = ExtractScratch::default();
    replies
        .into_iter()
        .map(|(prompt, reply)| match reply {
            Ok((text, tokens)) => DiagnosisRecord { tokens, ..diagnose(&ctx.extractor, &mut scratch, &entry.truth, prompt, &text) },
            Err(e) => failed(entry, prompt, ImageError { reason: e.reason().to_string(), message: e.to_string() }),
        })
        .collect()
}

/// One model call, measured: its text and the tokens its server reported.
async fn ask(ctx: &JobContext, req: &ModelRequest) -> Result<(String, Option<TokenUsage>), dftg_model::client::ModelError> {
    let m = metrics();
    m.model_requests_in_flight.inc();
    let started = std::time::Instant::now();
    let reply = ctx.model.complete(req).await;
    m.model_requests_in_flight.dec();
    let outcome = if reply.is_ok() { "ok" } else { "error" };
    m.model_request_duration.with_label_values(&[outcome]).observe(started.elapsed().as_secs_f64());
    match reply {
        Ok(r) => {
            m.model_retries.inc_by(u64::from(r.attempts.saturating_sub(1)));
            // counted when spent, so a redelivered shard's calls count again: they were paid
            if let Some(t) = r.usage {
                m.model_tokens.with_label_values(&[ROLE_SUBJECT, "prompt"]).inc_by(t.prompt);
                m.model_tokens.with_label_values(&[ROLE_SUBJECT, "completion"]).inc_by(t.completion);
            }
            Ok((r.text, r.usage))
        }
        Err(e) => {
            m.model_retries.inc_by(u64::from(e.attempts().saturating_sub(1)));
            m.model_request_errors.with_label_values(&[e.reason()]).inc();
            Err(e)
        }
    }
}

/// Counts what a finished shard found.
fn record_metrics(records: &[DiagnosisRecord]) {
    let m = metrics();
    for r in records {
        match &r.error {
            Some(e) => {
                m.images_processed.with_label_values(&["diagnose", "failed"]).inc();
                m.image_errors.with_label_values(&[&e.reason]).inc();
            }
            None => m.images_processed.with_label_values(&["diagnose", "ok"]).inc(),
        }
        for h in &r.hallucinations {
            m.hallucinations_found.with_label_values(&[h.kind.as_str()]).inc();
            if h.kind == dftg_core::record::HallucinationKind::Object {
                m.concept_hallucinations.with_label_values(&[&h.concept]).inc();
            }
        }
    }
}

fn failed(entry: &PlanEntry, prompt: &str, error: ImageError) -> DiagnosisRecord {
    tracing::warn!(image = %entry.truth.image, reason = %error.reason, "image not diagnosed");
    DiagnosisRecord {
        schema_version: DIAGNOSIS_SCHEMA_VERSION,
        image: entry.truth.image.clone(),
        file: entry.truth.file.clone(),
        prompt: prompt.to_string(),
        response: String::new(),
        mentions: Vec::new(),
        negated: Vec::new(),
        truth: entry.truth.objects.clone(),
        hallucinations: Vec::new(),
        scores: ImageScores::default(),
        error: Some(error),
        checked: None,
        unverified: Vec::new(),
        evidence: Vec::new(),
        tokens: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tagger directory with a toy model (everything a noun).
    fn toy_tagger_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let [weights, tagdict, classes] = TAGGER_FILES;
        std::fs::write(dir.path().join(weights), r#"{"bias": {"NN": 1}}"#).unwrap();
        std::fs::write(dir.path().join(tagdict), r#"{"the": "DT"}"#).unwrap();
        std::fs::write(dir.path().join(classes), r#"["NN", "DT"]"#).unwrap();
        dir
    }

    #[test]
    fn tagger_loads_once_per_directory() {
        let dir = toy_tagger_dir();
        let a = load_tagger(dir.path()).unwrap();
        let b = load_tagger(dir.path()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.tag(&["the", "dog"]), ["DT", "NN"]);
        let other = toy_tagger_dir();
        assert!(!Arc::ptr_eq(&a, &load_tagger(other.path()).unwrap()));
    }

    #[test]
    fn missing_tagger_names_the_file_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_tagger(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("averaged_perceptron_tagger_eng.weights.json") && e.contains("--nltk-tagger"), "{e}");
        assert_eq!(default_tagger_dir(Path::new("/data/chair-vocab")), Path::new("/data/nltk-tagger"));
    }
}
