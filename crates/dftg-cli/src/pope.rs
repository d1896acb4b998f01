//! POPE (Li et al., 2023) for any corpus with ground truth.
//!
//! - `dftg pope build`: `random.jsonl`, `popular.jsonl`, `adversarial.jsonl` in POPE's format,
//!   drawn by POPE's samplers (`dftg_core::pope_build`), seeded.
//! - `dftg eval pope`: asks every question through the same bounded, retrying client as the
//!   diagnosis, reads the answers as POPE's script does (`dftg_core::pope`), prints the metrics
//!   per question file as JSON; `--answers` scores an answer file without a model.
//!
//! A question's `image` is found in the corpus as a file (at the root or under `images/`), else
//! through the ground truth: an image key, a file name, or the id in a COCO file name
//! (`COCO_val2014_000000310196.jpg` → image 310196), so the official POPE files run against a
//! corpus built from an id → objects map.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use dftg_core::pope::{json_problem, parse_label, parse_question_line, score, Confusion, PopeQuestion};
use dftg_core::pope_build::{self, selection_rank, BuildConfig, PopeImage, Sampler};
use dftg_core::truth::ImageTruth;
use dftg_model::client::{ModelClient, ModelRequest};
use dftg_pipeline::corpus::{document_entries, fetch_image, locate_truth, manifest_entry, CorpusFormat, PlanEntry};
use dftg_pipeline::job::{CorpusSpec, JobSpec, ModelKind, ModelSpec};
use dftg_pipeline::plan::{Line, Lines};
use dftg_runtime::{BlobStore, ObjectBlobStore};

/// Where `dftg eval pope --job-dir` records results, and `dftg compare` finds them.
pub const POPE_RESULTS: &str = "pope.json";

#[derive(Subcommand, Debug)]
pub enum PopeCommand {
    /// Build POPE question files (random, popular, adversarial) for a corpus with ground truth.
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Corpus directory or store URL (file://, s3://) with its ground truth.
    #[arg(long)]
    pub corpus: String,
    /// Ground-truth file inside the corpus (default: annotations.json, manifest.jsonl or
    /// imid_to_objects.json), or a local file.
    #[arg(long)]
    pub truth: Option<String>,
    /// Ground-truth format: coco, jsonl or object-map (default: from the file name).
    #[arg(long)]
    pub format: Option<CorpusFormat>,
    /// Output directory (or store URL): random.jsonl, popular.jsonl, adversarial.jsonl.
    #[arg(long)]
    pub out: String,
    /// Present objects asked about per image, and as many absent ones.
    #[arg(long, default_value_t = 3)]
    pub per_image: usize,
    /// Images asked about at most: a seeded sample of those with enough objects (POPE: 500);
    /// 0 takes them all.
    #[arg(long, default_value_t = 500)]
    pub images: usize,
    /// Seed of the sampling (images, present objects asked): the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn main(cmd: PopeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PopeCommand::Build(args) => crate::runtime()?.block_on(build(args)),
    }
}

/// A kept image ranked by its seeded hash; the heap holds the `max` smallest ranks.
struct Ranked {
    rank: u64,
    index: usize,
    image: PopeImage,
}

impl PartialEq for Ranked {
    fn eq(&self, o: &Self) -> bool {
        (self.rank, self.index) == (o.rank, o.index)
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ranked {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.rank, self.index).cmp(&(o.rank, o.index))
    }
}

async fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    pope_build::check_per_image(args.per_image)?;
    let (mut seen, mut bad, mut few) = (0usize, 0usize, 0usize);
    let mut kept: BinaryHeap<Ranked> = BinaryHeap::new();
    let max = if args.images == 0 { usize::MAX } else { args.images };
    let source = TruthSource::open(&args.corpus, args.truth.as_deref(), args.format)?;
    source
        .for_each(&mut |entry: PlanEntry| {
            seen += 1;
            if entry.error.is_some() {
                bad += 1;
                return;
            }
            let image = PopeImage::from_truth(&entry.truth);
            if image.objects.len() < args.per_image {
                few += 1;
                return;
            }
            kept.push(Ranked { rank: selection_rank(args.seed, &image.key), index: seen, image });
            if kept.len() > max {
                kept.pop();
            }
        })
        .await?;
    let mut chosen = kept.into_vec();
    chosen.sort_by_key(|r| r.index);
    let images: Vec<PopeImage> = chosen.into_iter().map(|r| r.image).collect();
    let set = pope_build::build(&images, &BuildConfig { per_image: args.per_image, seed: args.seed })?;
    if set.images == 0 {
        bail!(
            "no image of the corpus has {} objects present and {} absent: nothing to ask (try a smaller --per-image)",
            args.per_image,
            args.per_image
        );
    }
    let out = ObjectBlobStore::from_url(&args.out).with_context(|| format!("cannot write to {}", args.out))?;
    for s in Sampler::ALL {
        let name = format!("{}.jsonl", s.as_str());
        out.put(&name, jsonl(set.questions(s))?.into()).await.with_context(|| format!("cannot write {name} to {}", args.out))?;
    }
    outln!(
        "wrote {} questions per file about {} images to {}: random.jsonl, popular.jsonl, adversarial.jsonl",
        set.random.len(),
        set.images,
        args.out
    );
    outln!(
        "  corpus images {seen}: {few} with fewer than {} objects, {} not sampled, {} without {} absent objects, {bad} bad ground-truth entries",
        args.per_image,
        seen - bad - few - images.len(),
        set.skipped_few_absent,
        args.per_image
    );
    Ok(ExitCode::SUCCESS)
}

fn jsonl<T: Serialize>(items: &[T]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for it in items {
        serde_json::to_writer(&mut out, it)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Where the ground truth comes from: a file in a corpus store, or a local file.
enum TruthSource {
    Store { store: Arc<ObjectBlobStore>, spec: CorpusSpec },
    Local { path: PathBuf, format: CorpusFormat },
}

/// The named format, else the one the file name suggests.
fn format_for(format: Option<CorpusFormat>, file: &str) -> CorpusFormat {
    match format {
        Some(format) => format,
        None if file.ends_with(".jsonl") => CorpusFormat::Jsonl,
        None if file.contains("imid_to_objects") || file.contains("pope_coco") => CorpusFormat::ObjectMap,
        None => CorpusFormat::Coco,
    }
}

impl TruthSource {
    fn open(corpus: &str, truth: Option<&str>, format: Option<CorpusFormat>) -> anyhow::Result<Self> {
        if let Some(t) = truth.filter(|t| Path::new(t).is_file()) {
            return Ok(TruthSource::Local { path: PathBuf::from(t), format: format_for(format, t) });
        }
        let store = ObjectBlobStore::from_url_existing(corpus).with_context(|| format!("cannot open corpus {corpus}"))?;
        let spec =
            CorpusSpec { path: corpus.to_string(), annotations: truth.map(str::to_string), format, image_pattern: None, image_dir: None };
        Ok(TruthSource::Store { store: Arc::new(store), spec })
    }

    /// Every ground-truth entry, in file order; JSONL is streamed line by line.
    async fn for_each(&self, f: &mut dyn FnMut(PlanEntry)) -> anyhow::Result<()> {
        match self {
            TruthSource::Local { path, format } => {
                let shown = path.display();
                if *format == CorpusFormat::Jsonl {
                    let file = std::fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
                    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                        let line = line.with_context(|| format!("cannot read {shown}"))?;
                        if !line.trim().is_empty() {
                            f(manifest_entry(&line, i + 1, None));
                        }
                    }
                } else {
                    let text = std::fs::read(path).with_context(|| format!("cannot read {shown}"))?;
                    for e in document_entries(&shown.to_string(), *format, &text)? {
                        f(e);
                    }
                }
            }
            TruthSource::Store { store, spec } => {
                let store = store.as_ref();
                let (file, format) = locate_truth(store, spec).await?;
                let missing = || anyhow::anyhow!("{file} not found in {}", store.describe());
                match format {
                    CorpusFormat::Jsonl => {
                        let parts = if file.ends_with('/') { store.list(&file).await? } else { vec![file.clone()] };
                        for part in &parts {
                            let stream = store.get_stream(part).await?.ok_or_else(missing)?;
                            let mut lines = Lines::new(stream);
                            let name = file.ends_with('/').then_some(part.as_str());
                            let mut n = 0;
                            while let Some(line) = lines.next_line().await? {
                                n += 1;
                                match line {
                                    Line::Text(t) if t.trim().is_empty() => {}
                                    Line::Text(t) => f(manifest_entry(&t, n, name)),
                                    Line::TooLong { bytes } => {
                                        f(dftg_pipeline::corpus::long_manifest_line(bytes, lines.max_line(), n, name))
                                    }
                                }
                            }
                        }
                    }
                    _ => {
                        let text = store.get(&file).await?.ok_or_else(missing)?;
                        for e in document_entries(&file, format, &text)? {
                            f(e);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// dftg eval pope

#[derive(Args, Debug)]
pub struct EvalPopeArgs {
    /// POPE question file, JSONL {"question_id","image","text","label"} (repeatable: one
    /// result line per file).
    #[arg(long = "questions")]
    pub questions: Vec<PathBuf>,
    /// Corpus directory or store URL holding the images the questions name.
    #[arg(long)]
    pub corpus: Option<String>,
    /// sim:PROFILE (the built-in simulator, over --corpus), or the model name at --endpoint.
    #[arg(long)]
    pub model: Option<String>,
    /// OpenAI-compatible base URL (vLLM, Ollama /v1, SGLang, llama.cpp server).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Model name sent to --endpoint.
    #[arg(long)]
    pub model_name: Option<String>,
    /// Score an answer file ({"question_id","label","answer"} lines) without a model; labels
    /// missing from it come from --questions.
    #[arg(long, conflicts_with_all = ["corpus", "model", "endpoint", "model_name", "answers_out"])]
    pub answers: Option<PathBuf>,
    /// Write {"question_id","label","answer"} per question, the answer as the model wrote it.
    #[arg(long)]
    pub answers_out: Option<PathBuf>,
    /// Also record the results in DIR/pope.json (a job folder or store prefix), where
    /// `dftg compare` shows them.
    #[arg(long)]
    pub job_dir: Option<String>,
    /// Model requests in flight at most.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Per-request timeout (seconds).
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Longest answer asked of the model (tokens; default: the server's).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Seed of the simulator and of the retry jitter (42, as `dftg run`: the simulator then
    /// makes the same decisions as in that job's diagnosis).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Simulator latency per request (ms), for sim: models.
    #[arg(long, default_value_t = 0)]
    pub sim_latency_ms: u64,
    /// Simulator fault rate (0..1), for sim: models.
    #[arg(long, default_value_t = 0.0)]
    pub sim_fault_rate: f64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The metrics of one question file, as printed and as kept in `pope.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopeRecord {
    /// `random`, `popular`, `adversarial` (from the file name), else the file's stem.
    pub set: String,
    pub file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// Questions scored.
    pub questions: u64,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub yes_ratio: f64,
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Questions without an answer (the model failed after its retries, or a missing image).
    pub failed: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_by_reason: BTreeMap<String, u64>,
}

impl PopeRecord {
    fn new(file: &Path, model: &str, c: Confusion, failed_by_reason: BTreeMap<String, u64>) -> Self {
        let m = c.metrics();
        PopeRecord {
            set: set_name(file),
            file: file.display().to_string(),
            model: model.to_string(),
            questions: m.questions,
            accuracy: m.accuracy,
            precision: m.precision,
            recall: m.recall,
            f1: m.f1,
            yes_ratio: m.yes_ratio,
            tp: c.tp,
            fp: c.fp,
            tn: c.tn,
            fn_: c.fn_,
            failed: failed_by_reason.values().sum(),
            failed_by_reason,
        }
    }

    pub fn confusion(&self) -> Confusion {
        Confusion { tp: self.tp, fp: self.fp, tn: self.tn, fn_: self.fn_ }
    }
}

/// `pope.json` of a job folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PopeResults {
    pub schema_version: u32,
    pub sets: BTreeMap<String, PopeRecord>,
}

/// The sampler a file's name says (`coco_pope_adversarial.json` → `adversarial`), else its stem.
fn set_name(file: &Path) -> String {
    let stem = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let hits: Vec<Sampler> = Sampler::ALL.into_iter().filter(|s| stem.contains(s.as_str())).collect();
    match hits.as_slice() {
        [one] => one.as_str().to_string(),
        _ => stem,
    }
}

fn read_questions(path: &Path) -> anyhow::Result<Vec<PopeQuestion>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read questions {}", path.display()))?;
    let mut out: Vec<PopeQuestion> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let q = parse_question_line(line, i + 1).with_context(|| path.display().to_string())?;
        if !ids.insert(q.question_id) {
            bail!("{} line {}: question_id repeats an earlier one", path.display(), i + 1);
        }
        out.push(q);
    }
    if out.is_empty() {
        bail!("{} holds no questions", path.display());
    }
    Ok(out)
}

pub fn eval_main(args: EvalPopeArgs) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(eval(args))
}

async fn eval(args: EvalPopeArgs) -> anyhow::Result<ExitCode> {
    if let Some(answers) = &args.answers {
        let record = score_answer_file(answers, &args.questions)?;
        outln!("{}", serde_json::to_string(&record)?);
        if let Some(dir) = &args.job_dir {
            record_results(dir, std::slice::from_ref(&record)).await?;
        }
        return Ok(if record.failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
    if args.questions.is_empty() {
        bail!("--questions F is needed (or --answers F to score answers)");
    }
    if args.answers_out.is_some() && args.questions.len() > 1 {
        bail!("--answers-out takes one --questions file");
    }
    let Some(corpus) = args.corpus.as_deref() else { bail!("--corpus DIR is needed to show the model the images") };
    let files: Vec<(PathBuf, Vec<PopeQuestion>)> =
        args.questions.iter().map(|p| Ok((p.clone(), read_questions(p)?))).collect::<anyhow::Result<_>>()?;

    let mut model = ModelSpec::default();
    match (&args.endpoint, &args.model) {
        (Some(endpoint), m) => {
            model.kind = ModelKind::OpenAi;
            model.endpoint = Some(endpoint.clone());
            model.name = args.model_name.clone().or_else(|| m.clone());
        }
        (None, Some(m)) => {
            model.kind = m.parse().context("--model")?;
            model.name = args.model_name.clone();
        }
        (None, None) => bail!("--model sim:PROFILE or --endpoint URL --model-name NAME is needed (or --answers F to score answers)"),
    }
    model.max_in_flight = args.in_flight;
    model.timeout_secs = args.timeout;
    model.max_tokens = args.max_tokens;
    model.sim_latency_ms = args.sim_latency_ms;
    model.sim_fault_rate = args.sim_fault_rate;
    let local_corpus = corpus.strip_prefix("file://").unwrap_or(corpus);
    if !model.kind.is_openai() && local_corpus.contains("://") {
        bail!("sim: models need the corpus as a local directory, not a store URL");
    }
    let mut spec = JobSpec::new(corpus, model);
    spec.seed = args.seed;
    spec.validate().context("invalid model settings")?;
    let setup = dftg_pipeline::model_setup::start_model(&spec, Path::new(local_corpus), None).await.context("cannot start the model")?;
    let store: Arc<dyn BlobStore> =
        Arc::new(ObjectBlobStore::from_url_existing(corpus).with_context(|| format!("cannot open corpus {corpus}"))?);
    let mut resolver = Resolver { store: store.clone(), corpus: corpus.to_string(), index: None, found: HashMap::new() };
    let model_name = spec.model_name();

    let mut records = Vec::new();
    let mut any_failed = false;
    for (path, questions) in &files {
        let started = Instant::now();
        let answers = ask_all(&setup.client, store.clone(), &mut resolver, questions, args.in_flight, args.quiet).await?;
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!(
            "asked {} questions of {} in {elapsed:.2} s ({:.1} questions/s)",
            questions.len(),
            path.display(),
            questions.len() as f64 / elapsed.max(1e-9)
        );
        let mut failed: BTreeMap<String, u64> = BTreeMap::new();
        let items = questions.iter().zip(&answers).map(|(q, a)| {
            let label = parse_label(&q.label).unwrap_or(false);
            match a {
                Ok(text) => (label, Some(text.as_str())),
                Err(reason) => {
                    *failed.entry(reason.clone()).or_default() += 1;
                    (label, None)
                }
            }
        });
        let (confusion, _) = score(items.collect::<Vec<_>>());
        if let Some(out) = &args.answers_out {
            write_answers(out, questions, &answers)?;
        }
        any_failed |= !failed.is_empty();
        let record = PopeRecord::new(path, &model_name, confusion, failed);
        outln!("{}", serde_json::to_string(&record)?);
        records.push(record);
    }
    if let Some(dir) = &args.job_dir {
        record_results(dir, &records).await?;
    }
    drop(setup);
    Ok(if any_failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[derive(Serialize)]
struct AnswerOut<'a> {
    question_id: u64,
    label: &'a str,
    answer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

fn write_answers(path: &Path, questions: &[PopeQuestion], answers: &[Result<String, String>]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for (q, a) in questions.iter().zip(answers) {
        let line = AnswerOut {
            question_id: q.question_id,
            label: &q.label,
            answer: a.as_ref().ok().map(String::as_str),
            error: a.as_ref().err().map(String::as_str),
        };
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
    }
    w.flush().with_context(|| format!("cannot write {}", path.display()))
}

/// Adds the records to `<dir>/pope.json`, keeping the sets recorded by earlier runs.
async fn record_results(dir: &str, records: &[PopeRecord]) -> anyhow::Result<()> {
    let store = ObjectBlobStore::from_url(dir).with_context(|| format!("cannot open job folder {dir}"))?;
    let mut results: PopeResults = match store.get(POPE_RESULTS).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{dir}/{POPE_RESULTS}: {}", json_problem(&e)))?,
        None => PopeResults::default(),
    };
    results.schema_version = 1;
    for r in records {
        results.sets.insert(r.set.clone(), r.clone());
    }
    store
        .put(POPE_RESULTS, serde_json::to_vec_pretty(&results)?.into())
        .await
        .with_context(|| format!("cannot write {dir}/{POPE_RESULTS}"))?;
    Ok(())
}

#[derive(Deserialize)]
struct AnswerIn {
    question_id: u64,
    #[serde(default)]
    label: Option<String>,
    /// POPE's evaluation reads `answer`; LLaVA's answer files call it `text`.
    #[serde(default, alias = "text")]
    answer: Option<String>,
}

fn score_answer_file(path: &Path, questions: &[PathBuf]) -> anyhow::Result<PopeRecord> {
    let mut labels: HashMap<u64, bool> = HashMap::new();
    for q in questions {
        for q in read_questions(q)? {
            labels.insert(q.question_id, parse_label(&q.label).unwrap_or(false));
        }
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read answers {}", path.display()))?;
    let mut items: Vec<(bool, Option<String>)> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let where_ = || format!("{} line {}", path.display(), i + 1);
        let a: AnswerIn = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}: expected {{\"question_id\", \"label\", \"answer\"}}: {}", where_(), json_problem(&e)))?;
        let label = match &a.label {
            Some(l) => parse_label(l).with_context(|| format!("{}: label must be \"yes\" or \"no\"", where_()))?,
            None => *labels
                .get(&a.question_id)
                .with_context(|| format!("{}: no label, and no --questions file has its question_id", where_()))?,
        };
        items.push((label, a.answer));
    }
    if items.is_empty() {
        bail!("{} holds no answers", path.display());
    }
    let (c, unscored) = score(items.iter().map(|(l, a)| (*l, a.as_deref())));
    let failed = if unscored > 0 { BTreeMap::from([("no_answer".to_string(), unscored)]) } else { BTreeMap::new() };
    // the set is the question file's when one was given (answer files have arbitrary names)
    let mut record = PopeRecord::new(path, "", c, failed);
    if let [q] = questions {
        record.set = set_name(q);
    }
    Ok(record)
}

/// Finds a question's image in the corpus (see the module comment). Untrusted names never
/// leave the corpus: absolute paths and `..` are refused.
struct Resolver {
    store: Arc<dyn BlobStore>,
    corpus: String,
    /// Ground-truth names → file, read on the first name that is not a file.
    index: Option<HashMap<String, String>>,
    found: HashMap<String, Option<String>>,
}

/// The id in a COCO file name: `COCO_val2014_000000310196.jpg` → `310196`.
fn coco_id(name: &str) -> Option<String> {
    let stem = name.rsplit('/').next()?.split('.').next()?;
    let digits = stem.rsplit('_').next()?;
    if !stem.starts_with("COCO_") || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().map(|n| n.to_string())
}

impl Resolver {
    async fn file_at(&self, name: &str) -> anyhow::Result<Option<String>> {
        for candidate in [name.to_string(), format!("images/{name}")] {
            if self.store.head(&candidate).await?.is_some() {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }

    async fn resolve(&mut self, image: &str) -> anyhow::Result<Option<String>> {
        if let Some(f) = self.found.get(image) {
            return Ok(f.clone());
        }
        let safe = !image.is_empty() && !image.starts_with('/') && !image.contains("://") && !image.split('/').any(|s| s == "..");
        let mut file = if safe { self.file_at(image).await? } else { None };
        if file.is_none() && safe {
            if self.index.is_none() {
                self.index = Some(self.load_index().await?);
            }
            let index = self.index.as_ref().map(|i| i.get(image).or_else(|| coco_id(image).and_then(|id| i.get(&id))).cloned());
            if let Some(Some(f)) = index {
                file = self.file_at(&f).await?;
            }
        }
        self.found.insert(image.to_string(), file.clone());
        Ok(file)
    }

    async fn load_index(&self) -> anyhow::Result<HashMap<String, String>> {
        let mut index = HashMap::new();
        let source = TruthSource::open(&self.corpus, None, None)?;
        source
            .for_each(&mut |e: PlanEntry| {
                let ImageTruth { image, file, .. } = e.truth;
                if let (Some(file), None) = (file, e.error) {
                    if let Some(base) = file.rsplit('/').next() {
                        index.entry(base.to_string()).or_insert_with(|| file.clone());
                    }
                    index.entry(file.clone()).or_insert_with(|| file.clone());
                    index.insert(image, file);
                }
            })
            .await
            .context("the questions name images that are not files of the corpus, and its ground truth cannot be read")?;
        Ok(index)
    }
}

/// Asks every question; answers in question order, `Err(reason)` for the failed ones. The
/// questions about one image share one read of its bytes; images are asked about
/// concurrently, and the client's semaphore bounds the requests in flight.
async fn ask_all(
    client: &Arc<dyn ModelClient>,
    store: Arc<dyn BlobStore>,
    resolver: &mut Resolver,
    questions: &[PopeQuestion],
    in_flight: usize,
    quiet: bool,
) -> anyhow::Result<Vec<Result<String, String>>> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (i, q) in questions.iter().enumerate() {
        let g = *at.entry(q.image.as_str()).or_insert_with(|| {
            groups.push((q.image.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(questions.len() as u64) };
    if let Ok(style) = indicatif::ProgressStyle::with_template("     pope [{bar:40}] {pos}/{len} questions {per_sec} eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut answers: Vec<Result<String, String>> = vec![Err("not_asked".into()); questions.len()];
    // images held at once: enough to keep every request slot busy, never the whole corpus
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let mut tasks: tokio::task::JoinSet<Vec<(usize, Result<String, String>)>> = tokio::task::JoinSet::new();
    let collect = |done: Vec<(usize, Result<String, String>)>, answers: &mut Vec<Result<String, String>>| {
        bar.inc(done.len() as u64);
        for (i, a) in done {
            answers[i] = a;
        }
    };
    for (image, idxs) in groups {
        let file = resolver.resolve(&image).await?;
        let permit = slots.clone().acquire_owned().await?;
        let asks: Vec<(usize, String)> = idxs.iter().map(|&i| (i, questions[i].text.clone())).collect();
        let (store, client) = (store.clone(), client.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let fail = |reason: &str| asks.iter().map(|(i, _)| (*i, Err(reason.to_string()))).collect();
            let Some(file) = file else { return fail("missing_image") };
            let entry = PlanEntry { truth: ImageTruth { image, file: Some(file), objects: Vec::new() }, error: None };
            let (bytes, mime) = match fetch_image(store.as_ref(), &entry).await {
                Ok(b) => b,
                Err(e) => return fail(&e.reason),
            };
            let mut each = tokio::task::JoinSet::new();
            for (i, text) in asks {
                let (client, req) = (client.clone(), ModelRequest::new(bytes.clone(), mime, text));
                each.spawn(async move { (i, client.complete(&req).await.map(|r| r.text).map_err(|e| e.reason().to_string())) });
            }
            let mut out = Vec::new();
            while let Some(r) = each.join_next().await {
                if let Ok(r) = r {
                    out.push(r);
                }
            }
            out
        });
        while let Some(done) = tasks.try_join_next() {
            collect(done.context("a question task failed")?, &mut answers);
        }
    }
    while let Some(done) = tasks.join_next().await {
        collect(done.context("a question task failed")?, &mut answers);
    }
    bar.finish_and_clear();
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_file_names_give_their_image_id() {
        assert_eq!(coco_id("COCO_val2014_000000310196.jpg").as_deref(), Some("310196"));
        assert_eq!(coco_id("images/COCO_train2014_000000000009.jpg").as_deref(), Some("9"));
        assert_eq!(coco_id("000001.png"), None);
        assert_eq!(coco_id("COCO_val2014_.jpg"), None);
    }

    #[test]
    fn set_names_come_from_the_file_name() {
        assert_eq!(set_name(Path::new("x/coco_pope_adversarial.json")), "adversarial");
        assert_eq!(set_name(Path::new("random.jsonl")), "random");
        assert_eq!(set_name(Path::new("mine.jsonl")), "mine");
    }
}
