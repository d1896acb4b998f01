//! `dftg sim`: the model simulator as a standalone OpenAI-compatible server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use dftg_model::detect::DetectorApi;
use dftg_model::sim::{self, Faults, Latency, ReplayCaptions, SimConfig, SimCorpus, SimProfile, SimVisionConfig, SimWriterConfig};

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// Corpus directory (images + annotations.json or manifest.jsonl).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Hallucination profile: a bundled name (people-everywhere, kitchenware, mild,
    /// people-everywhere-treated, people-everywhere-overcorrected) or a TOML file.
    #[arg(long, default_value = "people-everywhere")]
    pub profile: String,
    /// Serve recorded responses (JSONL {"image_id", "caption"}) instead of generating them.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// Write what was injected, one JSON line per (image, prompt).
    #[arg(long)]
    pub truth_log: Option<PathBuf>,
    /// Seed of every simulated decision (with the image and the prompt): the same seed gives
    /// the same answers, as `dftg run`'s default 42 does.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Model name served in /v1/models.
    #[arg(long)]
    pub model_name: Option<String>,
    /// Fixed latency per request (ms).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Uniform jitter added to the latency (ms).
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Fraction of requests answered with HTTP 500.
    #[arg(long, default_value_t = 0.0)]
    pub fail_500: f64,
    /// Fraction of requests answered with HTTP 503.
    #[arg(long, default_value_t = 0.0)]
    pub fail_503: f64,
    /// Fraction of requests that hang (for --hang-ms) before any answer.
    #[arg(long, default_value_t = 0.0)]
    pub fail_timeout: f64,
    /// How long a hung request hangs (ms).
    #[arg(long, default_value_t = 30_000)]
    pub hang_ms: u64,
    /// Fraction of requests answered with a malformed body.
    #[arg(long, default_value_t = 0.0)]
    pub fail_malformed: f64,
    /// Fraction of images that fail on every request.
    #[arg(long, default_value_t = 0.0)]
    pub fail_sticky: f64,
    /// Simulated detector: expected share of object instances it misses, i.e. gives no box at
    /// 0.35 (small ones and crowds more often; half of them still get a weak box below 0.35).
    #[arg(long, default_value_t = 0.1)]
    pub sim_detector_miss_rate: f64,
    /// Simulated detector: probability of a false box for an absent object that co-occurs
    /// with what is there.
    #[arg(long, default_value_t = 0.1)]
    pub sim_detector_false_rate: f64,
    /// Simulated judge: probability of a wrong answer.
    #[arg(long, default_value_t = 0.03)]
    pub sim_judge_error_rate: f64,
    /// Simulated writer: share of writer replies that carry one mistake (an absent object, a
    /// wrong count or colour, broken JSON, …), logged to sim-writer-truth.jsonl.
    #[arg(long, default_value_t = 0.1)]
    pub sim_writer_error_rate: f64,
}

pub async fn main(args: SimArgs) -> anyhow::Result<ExitCode> {
    let corpus = SimCorpus::load_dir(&args.corpus).with_context(|| format!("corpus {}", args.corpus.display()))?;
    let profile = SimProfile::resolve(&args.profile).with_context(|| format!("profile {}", args.profile))?;
    let latency = match (args.latency_ms, args.jitter_ms) {
        (0, 0) => Latency::None,
        (ms, 0) => Latency::Fixed { ms },
        (base_ms, jitter_ms) => Latency::Uniform { base_ms, jitter_ms },
    };
    let faults = Faults {
        http_500: args.fail_500,
        http_503: args.fail_503,
        timeout: args.fail_timeout,
        hang_ms: args.hang_ms,
        malformed_json: args.fail_malformed,
        sticky_fraction: args.fail_sticky,
        ..Faults::default()
    };
    let mut config = SimConfig::new(profile)
        .with_seed(args.seed)
        .with_latency(latency)
        .with_faults(faults)
        .with_vision(SimVisionConfig {
            detector_miss_rate: args.sim_detector_miss_rate,
            detector_false_rate: args.sim_detector_false_rate,
            judge_error_rate: args.sim_judge_error_rate,
            latency_ms: args.latency_ms,
        })
        .with_writer(SimWriterConfig { error_rate: args.sim_writer_error_rate })
        .with_model_name(args.model_name.clone().unwrap_or_else(|| format!("sim-{}", args.profile)));
    if let Some(p) = &args.truth_log {
        config = config.with_truth_log(p.clone());
    }
    if let Some(r) = &args.replay {
        config = config.with_replay(ReplayCaptions::from_jsonl_file(r).with_context(|| format!("replay file {}", r.display()))?);
    }
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let handle = sim::start(corpus, config, listener).await?;
    // one line on stdout (scripts read it and may close the pipe); the rest on stderr
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "dftg sim listening on {} (model {})", handle.base_url(), handle.model_name());
        let _ = out.flush();
    }
    eprintln!(
        "  detector: hf {}, roboflow and roboflow-yolo-world {}; judge {}",
        handle.detector_url(DetectorApi::Hf),
        handle.detector_url(DetectorApi::GroundingDino),
        handle.judge_base_url()
    );
    let token = crate::shutdown_token();
    token.cancelled().await;
    handle.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}
