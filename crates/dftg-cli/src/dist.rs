//! The distributed shape's commands: `dftg coordinator`, `dftg worker`, `dftg submit`,
//! `dftg status`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use dftg_pipeline::coordinator::Phase;
use dftg_pipeline::driver::JobStatus;
use dftg_pipeline::messages::{DIAGNOSE_QUEUE, GENERATE_QUEUE};
use dftg_pipeline::service::{Coordinator, StoreJobs};
use dftg_pipeline::worker::run_worker;
use dftg_runtime::queue::TaskQueue;
use dftg_runtime::ObjectBlobStore;

use crate::run::JobFlags;

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// RabbitMQ URL (amqp:// or amqps://); credentials may come from DFTG_AMQP_USER / DFTG_AMQP_PASSWORD.
    #[arg(long, env = "DFTG_AMQP_URL")]
    pub amqp: String,
    /// Where jobs live: s3://bucket/prefix (AWS_* environment) or file:///path.
    #[arg(long, env = "DFTG_STORE_URL")]
    pub store: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Role {
    Inference,
    Generator,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    pub role: Role,
    #[arg(long, env = "DFTG_AMQP_URL")]
    pub amqp: String,
    #[arg(long, env = "DFTG_STORE_URL")]
    pub store: String,
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
    #[arg(long, env = "DFTG_COORDINATOR", default_value = "http://127.0.0.1:8080")]
    pub coordinator: String,
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
    let queue = connect_queue(&args.amqp).await?;
    let root = ObjectBlobStore::from_url(&args.store)?;
    let coordinator = Coordinator::start(root, queue, shutdown.clone()).await?;
    let app = dftg_pipeline::http::router(coordinator);
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("dftg coordinator listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let shutdown = crate::shutdown_token();
    let queue = connect_queue(&args.amqp).await?;
    let root = ObjectBlobStore::from_url(&args.store)?;
    let jobs = Arc::new(StoreJobs::new(root, args.in_flight));
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
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route("/readyz", axum::routing::get(|| async { "ready" }))
            .merge(dftg_pipeline::metrics::route());
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    eprintln!("dftg worker ({:?}) consuming {name}", args.role);
    // one loop per prefetch slot: each holds one shard task at a time
    let mut loops = Vec::new();
    let prefetch = args.prefetch.unwrap_or(match args.role {
        Role::Inference => 2,
        Role::Generator => 8,
    });
    for _ in 0..prefetch.max(1) {
        let (q, j, s) = (queue.clone(), jobs.clone(), shutdown.clone());
        loops.push(tokio::spawn(async move { run_worker(q, name, 1, j, s).await }));
    }
    let mut failed = false;
    for l in loops {
        if let Ok(Err(e)) = l.await {
            eprintln!("worker loop ended: {e}");
            failed = true;
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
    let http = reqwest::Client::new();
    let base = args.coordinator.trim_end_matches('/');
    let r = http.post(format!("{base}/v1/jobs")).body(serde_json::to_string(&spec)?).send().await.with_context(|| format!("cannot reach the coordinator at {base}"))?;
    let code = r.status();
    let body: serde_json::Value = r.json().await.context("the coordinator's answer is not JSON")?;
    anyhow::ensure!(code.is_success(), "job refused ({code}): {}", body["error"].as_str().unwrap_or("unknown error"));
    let job_id = body["job_id"].as_str().unwrap_or_default().to_string();
    println!("{job_id}");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let bars = crate::progress::Bars::new(true);
    use dftg_pipeline::driver::Progress;
    let mut shown = (0u64, 0u64, false, false);
    loop {
        let s: JobStatus = http.get(format!("{base}/v1/jobs/{job_id}")).send().await?.json().await?;
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
                println!("job {job_id} done");
                println!(
                    "  diagnose: {} images ({} failed) at {:.0} images/s; generate: {} instructions at {:.0}/s",
                    s.diagnose.items, s.diagnose.failed_items, s.diagnose.rate, s.generate.items, s.generate.rate
                );
                if !s.errors_by_reason.is_empty() {
                    println!("  failed images by reason: {:?}", s.errors_by_reason);
                }
                return Ok(ExitCode::SUCCESS);
            }
            Phase::Failed | Phase::Cancelled => {
                eprintln!("job {job_id} ended {:?}: {}", s.phase, s.error.unwrap_or_default());
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
    let r = reqwest::get(&url).await.with_context(|| format!("cannot reach the coordinator at {base}"))?;
    let ok = r.status().is_success();
    let v: serde_json::Value = r.json().await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
