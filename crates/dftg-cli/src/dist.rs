//! The distributed shape's commands: `dftg coordinator`, `dftg worker`, `dftg submit`,
//! `dftg status`, `dftg cancel`, `dftg delete`. The operator's roots (`--allow-store`,
//! `--allow-endpoint`, `--vocab-dir`) confine what jobs may touch; clients authenticate with
//! the bearer token in `DFTG_TOKEN`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use dftg_pipeline::coordinator::{Coordinator, CoordinatorConfig};
use dftg_pipeline::http::Tokens;
use dftg_pipeline::job_driver::{JobStatus, StageStatus};
use dftg_pipeline::job_index::StoreJobs;
use dftg_pipeline::job_state::Phase;
use dftg_pipeline::messages::{DIAGNOSE_QUEUE, GENERATE_QUEUE};
use dftg_pipeline::policy::Policy;
use dftg_pipeline::worker::run_worker;
use dftg_runtime::queue::TaskQueue;
use dftg_runtime::ObjectBlobStore;

use crate::run::JobFlags;

/// What jobs may touch: the operator's choice, given to the coordinator and every worker.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// A store prefix jobs may read corpora from and write outputs to (repeatable;
    /// s3://bucket/prefix or file:///abs/dir). The process's own --store is always allowed.
    #[arg(long = "allow-store", env = "DFTG_ALLOW_STORES", value_delimiter = ',', value_name = "PREFIX")]
    pub allow_store: Vec<String>,
    /// A model endpoint URL prefix jobs may call (repeatable; scheme, host, port and path
    /// prefix must match). The API key (DFTG_API_KEY) is sent only to these.
    #[arg(long = "allow-endpoint", env = "DFTG_ALLOW_ENDPOINTS", value_delimiter = ',', value_name = "URL_PREFIX")]
    pub allow_endpoint: Vec<String>,
    /// Directory of vocabularies jobs may name (`vocabulary = "NAME"` reads NAME.toml;
    /// `chair_vocab = "NAME"` the directory NAME/). Without it only the built-in coco80 and lvis are available.
    #[arg(long, env = "DFTG_VOCAB_DIR", value_name = "DIR")]
    pub vocab_dir: Option<std::path::PathBuf>,
    /// Let jobs use the bundled simulator profiles (--model sim:NAME) and simulated detectors,
    /// judges and writers: inference workers run the simulator in process, reading the job's
    /// corpus once (for demos and tests). Give it to the coordinator and every worker.
    #[arg(long, env = "DFTG_ALLOW_SIM")]
    pub allow_sim: bool,
}

impl PolicyArgs {
    fn policy(&self, own_store: &str) -> anyhow::Result<Policy> {
        let mut p = Policy::confined(&self.allow_store, &self.allow_endpoint, self.vocab_dir.clone())?;
        p.allow_store(own_store).context("--store")?;
        if self.allow_sim {
            p.allow_simulator();
        }
        Ok(p)
    }
}

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// Address of the HTTP API. Anything but loopback needs --token-file.
    #[arg(long, env = "DFTG_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// RabbitMQ URL (amqp:// or amqps://); credentials may come from DFTG_AMQP_USER / DFTG_AMQP_PASSWORD.
    #[arg(long, env = "DFTG_AMQP_URL", hide_env_values = true)]
    pub amqp: String,
    /// Where jobs live: s3://bucket/prefix (AWS_* environment) or file:///path.
    #[arg(long, env = "DFTG_STORE_URL", hide_env_values = true)]
    pub store: String,
    /// File of API bearer tokens, one per line (a mounted Secret). Required to listen on
    /// anything but loopback.
    #[arg(long, env = "DFTG_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Seconds a finished job is kept (status, index entry, metric series); its outputs stay.
    #[arg(long, env = "DFTG_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    pub retention_secs: u64,
    /// Jobs held at once; with all of them running, submits get 429.
    #[arg(long, env = "DFTG_MAX_JOBS", default_value_t = 1000)]
    pub max_jobs: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Role {
    /// Consumes diagnose tasks: asks the model, extracts and checks claims.
    Inference,
    /// Consumes generate tasks: writes instruction shards.
    Generator,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Which queue this worker consumes.
    #[arg(long, value_enum)]
    pub role: Role,
    /// RabbitMQ URL (amqp:// or amqps://).
    #[arg(long, env = "DFTG_AMQP_URL", hide_env_values = true)]
    pub amqp: String,
    /// The coordinator's store (where the job index and job.json files live).
    #[arg(long, env = "DFTG_STORE_URL", hide_env_values = true)]
    pub store: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Shard tasks held at once (queue prefetch); default 2 for inference (the model bounds
    /// it), 8 for generators (store round trips bound them, CPU work is small).
    #[arg(long, env = "DFTG_WORKER_PREFETCH")]
    pub prefetch: Option<usize>,
    /// Model requests in flight from this worker (default: the job's setting).
    #[arg(long, env = "DFTG_WORKER_IN_FLIGHT", default_value_t = 0)]
    pub in_flight: usize,
    /// Serve /metrics and /healthz here (optional).
    #[arg(long)]
    pub metrics_listen: Option<String>,
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Job spec file (TOML or JSON), the same as --job.
    #[arg(value_name = "JOB.toml", conflicts_with = "job")]
    pub job_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub job: JobFlags,
    /// Where the job writes `<job-id>/`: s3://bucket/prefix or file:///dir (default: the
    /// coordinator's --store).
    #[arg(long)]
    pub out: Option<String>,
    /// Coordinator base URL.
    #[arg(long, env = "DFTG_COORDINATOR", default_value = "http://127.0.0.1:8080")]
    pub coordinator: String,
    /// Follow the job with progress bars until it ends; the exit code says how it ended.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Job id (all jobs when omitted).
    pub job: Option<String>,
    /// Coordinator base URL.
    #[arg(long, env = "DFTG_COORDINATOR", default_value = "http://127.0.0.1:8080")]
    pub coordinator: String,
    /// Print the coordinator's whole JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct JobCommandArgs {
    /// Job id.
    pub job: String,
    /// Coordinator base URL.
    #[arg(long, env = "DFTG_COORDINATOR", default_value = "http://127.0.0.1:8080")]
    pub coordinator: String,
}

/// An HTTP client that sends `Authorization: Bearer $DFTG_TOKEN` when the variable is set.
fn api_client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var("DFTG_TOKEN") {
        let token = token.trim();
        if !token.is_empty() {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| anyhow::anyhow!("DFTG_TOKEN holds characters a header cannot carry"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
    }
    Ok(reqwest::Client::builder().default_headers(headers).build()?)
}

/// Whether every address `listen` resolves to is loopback.
async fn is_loopback_only(listen: &str) -> anyhow::Result<bool> {
    let addrs: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host(listen).await.with_context(|| format!("cannot resolve {listen}"))?.collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

pub async fn connect_queue(url: &str) -> anyhow::Result<Arc<dyn TaskQueue>> {
    let q = dftg_runtime::AmqpQueue::connect(url).await.with_context(|| format!("cannot connect to {}", redact(url)))?;
    Ok(Arc::new(q))
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let shutdown = crate::shutdown_token();
    dftg_pipeline::metrics::init("coordinator");
    let tokens = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the token file {}", path.display()))?;
            Tokens::parse(&text)?
        }
        None => Tokens::default(),
    };
    if tokens.is_empty() && !is_loopback_only(&args.listen).await? {
        anyhow::bail!("refusing to listen on {} without --token-file: the API would be open to anyone who can reach it", args.listen);
    }
    let policy = args.policy.policy(&args.store)?;
    let config = CoordinatorConfig { policy, retention: Duration::from_secs(args.retention_secs), max_jobs: args.max_jobs.max(1) };
    let queue = connect_queue(&args.amqp).await?;
    let root = ObjectBlobStore::from_url(&args.store)?;
    let coordinator = Coordinator::start(root, queue, shutdown.clone(), config).await?;
    let app = dftg_pipeline::http::router(coordinator, tokens);
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    outln!("dftg coordinator listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let shutdown = crate::shutdown_token();
    let policy = args.policy.policy(&args.store)?;
    let queue = connect_queue(&args.amqp).await?;
    let root = ObjectBlobStore::from_url(&args.store)?;
    let ready_store = root.clone();
    let jobs = Arc::new(StoreJobs::new(root, policy, args.in_flight));
    let name = match args.role {
        Role::Inference => DIAGNOSE_QUEUE,
        Role::Generator => GENERATE_QUEUE,
    };
    dftg_pipeline::metrics::init(match args.role {
        Role::Inference => "inference",
        Role::Generator => "generator",
    });
    if let Some(addr) = &args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let (ready_store, ready_queue) = (ready_store.clone(), queue.clone());
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let (store, queue) = (ready_store.clone(), ready_queue.clone());
                    async move {
                        match dftg_pipeline::coordinator::readiness(&store, queue.as_ref()).await {
                            Ok(()) => (axum::http::StatusCode::OK, "ready".to_string()),
                            Err(why) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, why),
                        }
                    }
                }),
            )
            .merge(dftg_pipeline::metrics::route());
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    eprintln!("dftg worker ({:?}) consuming {name}", args.role);
    // one loop per prefetch slot: each holds one shard task at a time
    let mut loops = tokio::task::JoinSet::new();
    let prefetch = args.prefetch.unwrap_or(match args.role {
        Role::Inference => 2,
        Role::Generator => 8,
    });
    for _ in 0..prefetch.clamp(1, 1024) {
        let (q, j, s) = (queue.clone(), jobs.clone(), shutdown.clone());
        loops.spawn(async move { run_worker(q, name, 1, j, s).await });
    }
    // one loop that dies takes the process down (non-zero), so the orchestrator restarts it
    // rather than leaving a worker that consumes on fewer loops than it should
    let mut failed = false;
    while let Some(ended) = loops.join_next().await {
        let why = match ended {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.report()),
            Err(e) if e.is_panic() => Some("a worker loop panicked".to_string()),
            Err(_) => Some("a worker loop was aborted".to_string()),
        };
        if let Some(why) = why {
            if !failed {
                eprintln!("worker loop ended: {why}; stopping");
            }
            failed = true;
            shutdown.cancel();
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let mut flags = args.job;
    if let Some(file) = args.job_file {
        flags.job = Some(file);
    }
    let mut spec = flags.to_spec()?;
    if let Some(out) = &args.out {
        spec.out = Some(out.clone());
        spec.validate().context("invalid job")?;
    }
    let http = api_client()?;
    let base = args.coordinator.trim_end_matches('/');
    let r = http
        .post(format!("{base}/v1/jobs"))
        .body(serde_json::to_string(&spec)?)
        .send()
        .await
        .with_context(|| format!("cannot reach the coordinator at {base}"))?;
    let code = r.status();
    let body: serde_json::Value = r.json().await.context("the coordinator's answer is not JSON")?;
    anyhow::ensure!(code.is_success(), "job refused ({code}): {}", body["error"].as_str().unwrap_or("unknown error"));
    let job_id = body["job_id"]
        .as_str()
        .filter(|id| dftg_pipeline::job::is_job_id(id))
        .context("the coordinator's answer names no job id")?
        .to_string();
    outln!("{job_id}");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let bars = crate::progress::Bars::new(true);
    use dftg_pipeline::job_driver::Progress;
    let mut shown = (0u64, 0u64, false, false);
    loop {
        let r = http.get(format!("{base}/v1/jobs/{job_id}")).send().await?;
        anyhow::ensure!(r.status().is_success(), "the coordinator answered {} for job {job_id}", r.status());
        let v: serde_json::Value = r.json().await?;
        let s: JobStatus = serde_json::from_value(v.clone()).context("the coordinator's job status is not one dftg knows")?;
        let outputs = v["outputs"].as_str().map(str::to_string);
        if !shown.2 && s.diagnose.shards_total > 0 {
            bars.stage_started("diagnose", s.images * spec.prompts.len() as u64);
            shown.2 = true;
        }
        if shown.2 {
            bars.advanced("diagnose", s.diagnose.items.saturating_sub(shown.0));
            shown.0 = s.diagnose.items;
        }
        if !shown.3 && s.generate.shards_total > 0 {
            bars.stage_finished("diagnose");
            bars.stage_started("generate", 0);
            shown.3 = true;
        }
        if shown.3 {
            bars.advanced("generate", s.generate.items.saturating_sub(shown.1));
            shown.1 = s.generate.items;
        }
        match s.phase {
            Phase::Done => {
                bars.stage_finished("generate");
                outln!("job {job_id} done");
                outln!(
                    "  diagnose: {} images ({} failed) at {}; generate: {} instructions at {}",
                    crate::progress::grouped(s.diagnose.items),
                    crate::progress::grouped(s.diagnose.failed_items),
                    crate::progress::rate(s.diagnose.rate),
                    crate::progress::grouped(s.generate.items),
                    crate::progress::rate(s.generate.rate)
                );
                if !s.errors_by_reason.is_empty() {
                    outln!("  failed images by reason: {:?}", s.errors_by_reason);
                }
                if let Some(w) = &s.warning {
                    outln!("  warning: {w}");
                }
                if let Some(out) = &outputs {
                    outln!("  outputs: {out}/ (read first: {out}/{})", dftg_pipeline::layout::REPORT);
                }
                return Ok(ExitCode::SUCCESS);
            }
            Phase::Failed | Phase::Cancelled => {
                eprintln!("job {job_id} ended {:?}: {}", s.phase, s.error.as_deref().unwrap_or("no reason given"));
                return Ok(ExitCode::FAILURE);
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let base = args.coordinator.trim_end_matches('/');
    let url = match &args.job {
        Some(id) => format!("{base}/v1/jobs/{id}"),
        None => format!("{base}/v1/jobs"),
    };
    let r = api_client()?.get(&url).send().await.with_context(|| format!("cannot reach the coordinator at {base}"))?;
    if args.json || !r.status().is_success() {
        return print_answer(r).await;
    }
    let v: serde_json::Value = r.json().await.context("the coordinator's answer is not JSON")?;
    if args.job.is_some() {
        let s: JobStatus = serde_json::from_value(v.clone()).context("the coordinator's job status is not one dftg knows")?;
        for line in summary(&s, v["outputs"].as_str()) {
            outln!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let jobs: Vec<JobStatus> = serde_json::from_value(v["jobs"].clone()).context("the coordinator's job list is not one dftg knows")?;
    if jobs.is_empty() {
        outln!("no jobs");
    }
    for s in &jobs {
        outln!("{}", one_line(s));
    }
    Ok(ExitCode::SUCCESS)
}

fn phase_name(p: Phase) -> String {
    serde_json::to_value(p).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{p:?}"))
}

/// A job in one line, for `dftg status` without a job id.
fn one_line(s: &JobStatus) -> String {
    let stage = |st: &StageStatus| format!("{}/{}", st.shards_done, st.shards_total);
    format!("{}  {}  diagnose {}  generate {}", s.job_id, phase_name(s.phase), stage(&s.diagnose), stage(&s.generate))
}

/// `dftg status JOB`: the phase, each stage's progress, rate and ETA, failures by reason, and
/// where the outputs are (`outputs`: the job's store, when the coordinator says).
pub fn summary(s: &JobStatus, outputs: Option<&str>) -> Vec<String> {
    use crate::progress::{duration, grouped, rate};
    let mut lines = vec![format!("job {}: {}", s.job_id, phase_name(s.phase))];
    for (name, unit, st) in [("diagnose", "images", &s.diagnose), ("generate", "instructions", &s.generate)] {
        if st.shards_total == 0 {
            continue;
        }
        let mut line = format!("  {name}: {}/{} shards, {} {unit}, {}", st.shards_done, st.shards_total, grouped(st.items), rate(st.rate));
        if st.shards_failed > 0 || st.failed_items > 0 {
            line.push_str(&format!(", failed {} shards / {} {unit}", st.shards_failed, grouped(st.failed_items)));
        }
        if let Some(eta) = st.eta_seconds.filter(|e| st.shards_done < st.shards_total && e.is_finite() && *e >= 0.0) {
            line.push_str(&format!(", eta {}", duration(Duration::from_secs_f64(eta))));
        }
        lines.push(line);
    }
    if !s.errors_by_reason.is_empty() {
        let reasons: Vec<String> = s.errors_by_reason.iter().map(|(r, n)| format!("{r} {}", grouped(*n))).collect();
        lines.push(format!("  failed images by reason: {}", reasons.join(", ")));
    }
    for (shard, why) in s.failed_shards.iter().take(5) {
        lines.push(format!("  shard {shard} given up: {why}"));
    }
    if s.failed_shards.len() > 5 {
        lines.push(format!("  … and {} more shards given up (--json lists them)", s.failed_shards.len() - 5));
    }
    if s.dead_letters > 0 {
        lines.push(format!("  dead letters in the task queues (all jobs): {}", s.dead_letters));
    }
    if let Some(e) = &s.error {
        lines.push(format!("  error: {e}"));
    }
    if let Some(w) = &s.warning {
        lines.push(format!("  warning: {w}"));
    }
    if let Some(m) = &s.dataset {
        lines.push(format!("  dataset: {} images diagnosed, {} instructions", grouped(m.diagnosed_images), grouped(m.instructions)));
    }
    if let Some(out) = outputs {
        lines.push(format!("  outputs: {out}/"));
        if s.phase == Phase::Done {
            lines.push(format!("  read first: {out}/{}", dftg_pipeline::layout::REPORT));
            if let Some(train) = s.dataset.as_ref().and_then(|m| m.train.as_ref()) {
                lines.push(format!("  train on: {out}/{} (images under {})", train.llava, train.image_folder));
            }
        }
    }
    lines
}

/// `dftg cancel JOB`: the job ends `cancelled`; exit 0 when it was running.
pub async fn cancel(args: JobCommandArgs) -> anyhow::Result<ExitCode> {
    let base = args.coordinator.trim_end_matches('/');
    let r = api_client()?
        .post(format!("{base}/v1/jobs/{}/cancel", args.job))
        .send()
        .await
        .with_context(|| format!("cannot reach the coordinator at {base}"))?;
    print_answer(r).await
}

/// `dftg delete JOB`: the coordinator forgets the job (cancelling it first if it runs).
pub async fn delete(args: JobCommandArgs) -> anyhow::Result<ExitCode> {
    let base = args.coordinator.trim_end_matches('/');
    let r = api_client()?
        .delete(format!("{base}/v1/jobs/{}", args.job))
        .send()
        .await
        .with_context(|| format!("cannot reach the coordinator at {base}"))?;
    print_answer(r).await
}

async fn print_answer(r: reqwest::Response) -> anyhow::Result<ExitCode> {
    let ok = r.status().is_success();
    let code = r.status();
    let v: serde_json::Value = r.json().await.with_context(|| format!("the coordinator answered {code} without JSON"))?;
    outln!("{}", serde_json::to_string_pretty(&v)?);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_summary_is_short_and_says_where_the_outputs_are() {
        let mut s = JobStatus::new("nightly-0badc0de");
        s.phase = Phase::Generating;
        s.images = 1200;
        s.diagnose = StageStatus {
            shards_total: 12,
            shards_done: 12,
            shards_failed: 1,
            items: 1200,
            failed_items: 100,
            rate: 25_339_280.55,
            eta_seconds: Some(0.0),
        };
        s.generate =
            StageStatus { shards_total: 11, shards_done: 3, items: 400, rate: 30.12, eta_seconds: Some(95.0), ..StageStatus::default() };
        s.errors_by_reason.insert("missing_image".into(), 100);
        s.failed_shards.insert("diagnose/7".into(), "model unreachable".into());
        let lines = summary(&s, Some("s3://dftg/jobs/nightly-0badc0de"));
        let text = lines.join("\n");
        assert!(lines.len() <= 10, "{text}");
        assert_eq!(lines[0], "job nightly-0badc0de: generating");
        assert!(text.contains("diagnose: 12/12 shards, 1,200 images, 25.3M/s, failed 1 shards / 100 images"), "{text}");
        assert!(text.contains("generate: 3/11 shards, 400 instructions, 30.1/s, eta 1m 35s"), "{text}");
        assert!(text.contains("failed images by reason: missing_image 100"), "{text}");
        assert!(text.contains("shard diagnose/7 given up: model unreachable"), "{text}");
        assert!(text.contains("outputs: s3://dftg/jobs/nightly-0badc0de/"), "{text}");
        assert!(one_line(&s).contains("generating  diagnose 12/12  generate 3/11"), "{}", one_line(&s));
    }
}
