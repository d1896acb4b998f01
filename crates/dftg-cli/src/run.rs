//! `dftg run`: the whole job in one process.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use dftg_pipeline::job::{JobSpec, ModelSpec};
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
    #[arg(long)]
    pub seed: Option<u64>,
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
    pub extractor: Option<String>,
    /// Directory of CHAIR's synonyms.txt and double_words.json (for chair-compat).
    #[arg(long, env = "DFTG_CHAIR_VOCAB")]
    pub chair_vocab: Option<String>,
    /// Directory of nltk's tagger weights (for chair-compat; default: nltk-tagger beside
    /// the CHAIR vocabulary).
    #[arg(long, env = "DFTG_NLTK_TAGGER")]
    pub nltk_tagger: Option<String>,
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
        if let Some(c) = &self.corpus {
            spec.corpus.path = c.clone();
        }
        match (&self.endpoint, &self.model) {
            (Some(endpoint), model) => {
                spec.model.kind = "openai".into();
                spec.model.endpoint = Some(endpoint.clone());
                spec.model.name = self.model_name.clone().or_else(|| model.clone());
            }
            (None, Some(model)) => spec.model.kind = model.clone(),
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
        if let Some(e) = &self.extractor {
            spec.extractor = e.clone();
        }
        if spec.extractor == "chair-compat" && spec.chair_vocab.is_none() {
            spec.chair_vocab = self.chair_vocab.clone();
        }
        if spec.extractor == "chair-compat" && spec.nltk_tagger.is_none() {
            spec.nltk_tagger = self.nltk_tagger.clone();
        }
        spec.validate().context("invalid job")?;
        Ok(spec)
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
            anyhow::ensure!(!dir.contains("://"), "dftg run writes to a local directory, not {url}: pass --out DIR or submit the job to a coordinator");
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
    println!("job {job_id} done: {}", job_dir.display());
    println!(
        "  images {} (diagnosed {}, failed {}{}), instructions {}",
        m.images,
        m.diagnosed_images,
        m.failed_images,
        if m.errors_by_reason.is_empty() { String::new() } else { format!(": {:?}", m.errors_by_reason) },
        m.instructions
    );
    println!(
        "  diagnose {:.2}s, generate {:.2}s{}",
        report.diagnose_time.as_secs_f64(),
        report.generate_time.as_secs_f64(),
        if report.resumed_shards > 0 { format!(", {} shards already done (resumed)", report.resumed_shards) } else { String::new() }
    );
    println!("  read first: {}", job_dir.join(layout::REPORT).display());
    Ok(ExitCode::SUCCESS)
}
