//! `dftg run`: the whole job in one process.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use dftg_model::detect::DetectorApi;
use dftg_pipeline::job::{DetectorKind, ExtractorKind, JobSpec, JudgeKind, ModelKind, ModelSpec, VocabularyChoice};
use dftg_pipeline::layout;
use dftg_pipeline::runner::{LocalJob, RunOptions};

/// The bundled example corpus (next to the sources; override with DFTG_EXAMPLE_CORPUS).
pub fn default_corpus() -> PathBuf {
    if let Ok(p) = std::env::var("DFTG_EXAMPLE_CORPUS") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from("examples/corpus");
    if local.join("annotations.json").is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/corpus")
}

#[derive(Args, Debug, Default)]
pub struct JobFlags {
    /// Job spec file (TOML or JSON); flags below override its fields.
    #[arg(long)]
    pub job: Option<PathBuf>,
    /// A name for the job: its id starts with it (letters, digits, '-' and '_'; other
    /// characters become '-') instead of job-<model>.
    #[arg(long)]
    pub name: Option<String>,
    /// Corpus directory: images plus annotations.json (COCO) or manifest.jsonl.
    #[arg(long)]
    pub corpus: Option<String>,
    /// Model: sim:PROFILE (built-in simulator, e.g. sim:people-everywhere, sim:kitchenware),
    /// replay:FILE.jsonl (recorded responses), or the model name served at --endpoint.
    #[arg(long)]
    pub model: Option<String>,
    /// OpenAI-compatible base URL (vLLM, Ollama /v1, SGLang, llama.cpp server).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Model name sent to --endpoint.
    #[arg(long)]
    pub model_name: Option<String>,
    /// Prompt asking for a description (repeatable).
    #[arg(long = "prompt")]
    pub prompts: Vec<String>,
    /// Seed of every random choice (sampling, simulator, generation); the same seed and spec
    /// give the same outputs.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Images per shard, the unit of work a worker takes (default 100).
    #[arg(long)]
    pub shard_size: Option<usize>,
    /// Total instructions to generate (default: twice the images).
    #[arg(long)]
    pub budget: Option<u64>,
    /// Model requests in flight at most.
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// Simulator latency per request (ms), for sim:/replay: models.
    #[arg(long)]
    pub sim_latency_ms: Option<u64>,
    /// Simulator fault rate (0..1), for sim:/replay: models.
    #[arg(long)]
    pub sim_fault_rate: Option<f64>,
    /// Per-request timeout (seconds).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// `dftg` (careful reader) or `chair-compat` (the reference CHAIR metric's reading).
    #[arg(long)]
    pub extractor: Option<ExtractorKind>,
    /// Directory of CHAIR's synonyms.txt and double_words.json (for chair-compat).
    #[arg(long, env = "DFTG_CHAIR_VOCAB")]
    pub chair_vocab: Option<String>,
    /// Vocabulary: coco80 or lvis (built in), a name in the operator's vocabulary directory, or (run)
    /// a vocabulary TOML file.
    #[arg(long)]
    pub vocabulary: Option<VocabularyChoice>,
    /// Where the truth comes from: annotations, detector (the annotation file is not read), or
    /// annotations+detector (annotations for the concepts they cover).
    #[arg(long, value_name = "SOURCE")]
    pub truth: Option<dftg_pipeline::job::TruthSource>,
    /// The simulated detector (`sim`), playing from the corpus's annotations.
    #[arg(long, value_name = "sim")]
    pub detector: Option<String>,
    /// A detector endpoint (hf: the endpoint URL; roboflow: the inference server's base URL).
    #[arg(long, value_name = "URL")]
    pub detector_endpoint: Option<String>,
    /// The detector's API: hf, roboflow (Grounding DINO) or roboflow-yolo-world.
    #[arg(long, value_name = "API")]
    pub detector_api: Option<DetectorApi>,
    /// The simulated judge (`sim`) for claims the detector is unsure of.
    #[arg(long, value_name = "sim")]
    pub judge: Option<String>,
    /// A judge endpoint (OpenAI-compatible vision model).
    #[arg(long, value_name = "URL")]
    pub judge_endpoint: Option<String>,
    /// The judge's model name.
    #[arg(long, value_name = "NAME")]
    pub judge_model: Option<String>,
    /// Simulated detector: share of object instances missed (no box at 0.35; half of them
    /// still scored in the uncertain band).
    #[arg(long, value_name = "R")]
    pub sim_detector_miss_rate: Option<f64>,
    /// Simulated detector: rate of false boxes for co-occurring objects.
    #[arg(long, value_name = "R")]
    pub sim_detector_false_rate: Option<f64>,
    /// Directory of nltk's tagger weights (for chair-compat; default: nltk-tagger beside
    /// the CHAIR vocabulary).
    #[arg(long, env = "DFTG_NLTK_TAGGER")]
    pub nltk_tagger: Option<String>,
    /// Who writes the remedy data: template (offline), sim (the simulator), or openai (any
    /// OpenAI-compatible chat endpoint, with --writer-endpoint and --writer-model).
    #[arg(long, value_name = "KIND")]
    pub writer: Option<String>,
    /// The writer's endpoint (base URL up to /v1).
    #[arg(long, value_name = "URL")]
    pub writer_endpoint: Option<String>,
    /// The writer's model name.
    #[arg(long, value_name = "NAME")]
    pub writer_model: Option<String>,
    /// Simulated writer: share of its replies that carry an injected mistake.
    #[arg(long, value_name = "R")]
    pub sim_writer_error_rate: Option<f64>,
    /// Adaptive diagnosis: stop once the K most hallucinated concepts are known
    /// (`[diagnosis] stop_when`).
    #[arg(long, value_name = "K")]
    pub stop_top_k: Option<usize>,
    /// Adaptive diagnosis: the confidence that the stopped top-K set is the true one (default 0.95).
    #[arg(long, value_name = "C")]
    pub stop_confidence: Option<f64>,
    /// Adaptive diagnosis: concepts with fewer chances to be hallucinated are not ranked (default 100).
    #[arg(long, value_name = "N")]
    pub stop_min_opportunities: Option<u64>,
    /// Adaptive diagnosis: waves the shards are dispatched in, one look after each (default 20).
    #[arg(long, value_name = "N")]
    pub stop_waves: Option<u32>,
}

impl JobFlags {
    pub fn to_spec(&self) -> anyhow::Result<JobSpec> {
        let mut spec = match &self.job {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read job spec {}", path.display()))?;
                JobSpec::parse(&text).with_context(|| format!("job spec {}", path.display()))?
            }
            None => JobSpec::new(&default_corpus().display().to_string(), ModelSpec::default()),
        };
        if let Some(n) = &self.name {
            spec.name = Some(n.clone());
        }
        if let Some(c) = &self.corpus {
            spec.corpus.path = c.clone();
        }
        match (&self.endpoint, &self.model) {
            (Some(endpoint), model) => {
                spec.model.kind = ModelKind::OpenAi;
                spec.model.endpoint = Some(endpoint.clone());
                spec.model.name = self.model_name.clone().or_else(|| model.clone());
            }
            (None, Some(model)) => spec.model.kind = model.parse().context("--model")?,
            (None, None) => {}
        }
        if self.endpoint.is_none() {
            if let Some(n) = &self.model_name {
                spec.model.name = Some(n.clone());
            }
        }
        if !self.prompts.is_empty() {
            spec.prompts = self.prompts.clone();
        }
        if let Some(s) = self.seed {
            spec.seed = s;
        }
        if let Some(s) = self.shard_size {
            spec.shard_size = s;
        }
        if let Some(b) = self.budget {
            spec.generation.budget = Some(b);
        }
        if let Some(n) = self.in_flight {
            spec.model.max_in_flight = n;
        }
        if let Some(l) = self.sim_latency_ms {
            spec.model.sim_latency_ms = l;
        }
        if let Some(f) = self.sim_fault_rate {
            spec.model.sim_fault_rate = f;
        }
        if let Some(t) = self.timeout {
            spec.model.timeout_secs = t;
        }
        if let Some(e) = self.extractor {
            spec.extractor = e;
        }
        if spec.extractor == ExtractorKind::ChairCompat && spec.chair_vocab.is_none() {
            spec.chair_vocab = self.chair_vocab.clone();
        }
        if let Some(v) = &self.vocabulary {
            spec.vocabulary = v.clone();
        }
        self.apply_truth(&mut spec)?;
        self.apply_writer(&mut spec)?;
        self.apply_stop(&mut spec)?;
        if spec.extractor == ExtractorKind::ChairCompat && spec.nltk_tagger.is_none() {
            spec.nltk_tagger = self.nltk_tagger.clone();
        }
        spec.validate().context("invalid job")?;
        Ok(spec)
    }
}

impl JobFlags {
    /// `--stop-*` onto `[diagnosis] stop_when`.
    fn apply_stop(&self, spec: &mut JobSpec) -> anyhow::Result<()> {
        let w = &mut spec.diagnosis.stop_when;
        if let Some(k) = self.stop_top_k {
            match w {
                Some(w) => w.top_k = k,
                None => *w = Some(dftg_pipeline::job::StopWhen::new(k)),
            }
        }
        let others = self.stop_confidence.is_some() || self.stop_min_opportunities.is_some() || self.stop_waves.is_some();
        let Some(w) = w.as_mut() else {
            if others {
                anyhow::bail!(
                    "--stop-confidence, --stop-min-opportunities and --stop-waves need --stop-top-k (or stop_when in the job file)"
                );
            }
            return Ok(());
        };
        if let Some(c) = self.stop_confidence {
            w.confidence = c;
        }
        if let Some(n) = self.stop_min_opportunities {
            w.min_opportunities = n;
        }
        if let Some(n) = self.stop_waves {
            w.waves = n;
        }
        Ok(())
    }

    /// `--truth`, `--detector*`, `--judge*` and the simulated detector's rates onto `[truth]`.
    fn apply_writer(&self, spec: &mut JobSpec) -> anyhow::Result<()> {
        let w = &mut spec.generation.writer;
        if let Some(k) = &self.writer {
            w.kind = k.parse().map_err(|e: String| anyhow::anyhow!("--writer {k}: {e}"))?;
        }
        if let Some(url) = &self.writer_endpoint {
            w.endpoint = Some(url.clone());
            if self.writer.is_none() && w.kind == dftg_core::writer::WriterKind::Template {
                w.kind = dftg_core::writer::WriterKind::OpenAi;
            }
        }
        if let Some(m) = &self.writer_model {
            w.model = Some(m.clone());
        }
        if let Some(r) = self.sim_writer_error_rate {
            w.sim_error_rate = r;
        }
        Ok(())
    }

    fn apply_truth(&self, spec: &mut JobSpec) -> anyhow::Result<()> {
        use dftg_pipeline::job::{DetectorSpec, JudgeSpec, TruthSource};
        if let Some(t) = self.truth {
            spec.truth.source = t;
        }
        let detector_flags = self.detector.is_some() || self.detector_endpoint.is_some() || self.detector_api.is_some();
        let sim_rates = self.sim_detector_miss_rate.is_some() || self.sim_detector_false_rate.is_some();
        if detector_flags || sim_rates || (spec.truth.source != TruthSource::Annotations && spec.truth.detector.is_none()) {
            let d = spec.truth.detector.get_or_insert_with(DetectorSpec::sim);
            match (&self.detector, &self.detector_endpoint) {
                (Some(k), _) if k != "sim" => anyhow::bail!("--detector {k}: only `sim`; give a server with --detector-endpoint"),
                (Some(_), _) => d.kind = DetectorKind::Sim,
                (None, Some(url)) => {
                    d.kind = DetectorKind::Http;
                    d.endpoint = Some(url.clone());
                }
                (None, None) => {}
            }
            if let Some(api) = self.detector_api {
                d.api = api;
            }
            if let Some(r) = self.sim_detector_miss_rate {
                d.sim_miss_rate = r;
            }
            if let Some(r) = self.sim_detector_false_rate {
                d.sim_false_rate = r;
            }
        }
        if self.judge.is_some() || self.judge_endpoint.is_some() {
            let j = spec.truth.judge.get_or_insert_with(JudgeSpec::sim);
            match (&self.judge, &self.judge_endpoint) {
                (Some(k), _) if k != "sim" => anyhow::bail!("--judge {k}: only `sim`; give a server with --judge-endpoint"),
                (Some(_), _) => j.kind = JudgeKind::Sim,
                (None, Some(url)) => {
                    j.kind = JudgeKind::OpenAi;
                    j.endpoint = Some(url.clone());
                }
                (None, None) => {}
            }
            if let Some(m) = &self.judge_model {
                j.model = Some(m.clone());
            }
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub job: JobFlags,
    /// Output directory; the job writes under <out>/<job-id>/ (default: the spec's `out`, else
    /// ./out).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Shards processed at once per stage.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub async fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = args.job.to_spec()?;
    let job_id = spec.id();
    let out = match (&args.out, &spec.out) {
        (Some(dir), _) => dir.clone(),
        (None, Some(url)) => {
            let dir = url.strip_prefix("file://").unwrap_or(url);
            anyhow::ensure!(
                !dir.contains("://"),
                "dftg run writes to a local directory, not {url}: pass --out DIR or submit the job to a coordinator"
            );
            PathBuf::from(dir)
        }
        (None, None) => PathBuf::from("out"),
    };
    let job = LocalJob::prepare(&spec, &out).await.with_context(|| format!("job {job_id}"))?;
    let job_dir = job.job_dir.clone();
    let bars = Arc::new(crate::progress::Bars::new(!args.quiet));
    let opts = RunOptions { workers: args.workers, progress: bars, shutdown: crate::shutdown_token() };
    let report = job.run(opts).await.with_context(|| format!("job {job_id} (run again to resume)"))?;
    let m = &report.manifest;
    outln!("job {job_id} done: {}", job_dir.display());
    outln!(
        "  images {} (diagnosed {}, failed {}{}), instructions {}",
        m.images,
        m.diagnosed_images,
        m.failed_images,
        if m.errors_by_reason.is_empty() { String::new() } else { format!(": {:?}", m.errors_by_reason) },
        m.instructions
    );
    outln!(
        "  diagnose {:.2}s, generate {:.2}s{}",
        report.diagnose_time.as_secs_f64(),
        report.generate_time.as_secs_f64(),
        if report.resumed_shards > 0 { format!(", {} shards already done (resumed)", report.resumed_shards) } else { String::new() }
    );
    if let Some(d) = m.diagnosis.as_ref().filter(|_| spec.diagnosis.stop_when.is_some()) {
        println!("  {}", dftg_pipeline::report::diagnosis_line(d));
    }
    if let Some(t) = m.tokens.get(dftg_core::tokens::ROLE_SUBJECT) {
        outln!("  tokens of the model under diagnosis: {} prompt, {} completion", t.prompt, t.completion);
    }
    if let Some(train) = &m.train {
        outln!(
            "  train on: {} or {} (images under {})",
            job_dir.join(&train.llava).display(),
            job_dir.join(&train.sharegpt).display(),
            train.image_folder
        );
    }
    outln!("  read first: {}", job_dir.join(layout::REPORT).display());
    Ok(ExitCode::SUCCESS)
}
