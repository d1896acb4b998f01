//! The writer's throughput: `cargo bench -p dftg-pipeline --bench writer`.
//!
//! 1. Accepted items per second of one generator (one process, the writer client's 64 requests
//!    in flight) against the simulated writer at 200 ms a reply with 15% injected mistakes,
//!    against Little's-law bound after counting rewrites: 64 / 0.2 s requests per second times
//!    the share of requests that became accepted items.
//! 2. The gate alone: items checked per second on one core.
//!
//! Env: DFTG_BENCH_IMAGES (default 3000), DFTG_BENCH_RUNS (default 3), DFTG_BENCH_LATENCY_MS
//! (default 200). Prints medians.

use std::sync::Arc;
use std::time::Instant;

use dftg_core::extract::{ExtractScratch, Extractor};
use dftg_core::generate::{plan_shard_items, write_with_template};
use dftg_core::profile::Profile;
use dftg_core::record::DiagnosisRecord;
use dftg_core::vocab::Vocabulary;
use dftg_core::writer::gate::{verify, Accepted};
use dftg_core::writer::WriterKind;
use dftg_pipeline::generate::StoredGenerationPlan;
use dftg_pipeline::job::{JobSpec, ModelKind, ModelSpec};
use dftg_pipeline::runner::{LocalJob, NoProgress, RunOptions};
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Run {
    accepted: u64,
    requests: u64,
    seconds: f64,
    job: std::path::PathBuf,
    _out: tempfile::TempDir,
}

async fn once(corpus: &std::path::Path, latency_ms: u64) -> Run {
    let out = tempfile::tempdir().expect("tempdir");
    let mut spec = JobSpec::new(
        corpus.to_str().expect("utf-8 path"),
        ModelSpec { kind: ModelKind::Sim("people-everywhere".into()), ..ModelSpec::default() },
    );
    spec.model.sim_latency_ms = latency_ms;
    spec.model.max_in_flight = 64;
    spec.shard_size = 500;
    spec.generation.writer.kind = WriterKind::Sim;
    spec.generation.writer.sim_error_rate = 0.15;
    spec.generation.writer.max_in_flight = 64;
    let job = LocalJob::prepare(&spec, out.path()).await.expect("job");
    let r = job.run(RunOptions { workers: 4, progress: Arc::new(NoProgress), shutdown: CancellationToken::new() }).await.expect("run");
    let job = out.path().join(spec.id());
    let requests = std::fs::read_to_string(job.join("sim-writer-truth.jsonl")).expect("writer log").lines().count() as u64;
    Run { accepted: r.manifest.writer.accepted, requests, seconds: r.generate_time.as_secs_f64(), job, _out: out }
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect()
}

/// Items per second through the gate on this thread, over every item of the job.
fn gate_rate(job: &std::path::Path) -> (usize, f64) {
    let extractor = Extractor::new(Arc::new(Vocabulary::coco80()));
    let profile: Profile = serde_json::from_slice(&std::fs::read(job.join("profile.json")).expect("profile")).expect("profile json");
    let plan: StoredGenerationPlan =
        serde_json::from_slice(&std::fs::read(job.join("generation-plan.json")).expect("plan")).expect("plan json");
    let mut work = Vec::new();
    for (i, quota) in plan.shards.iter().enumerate() {
        let diags: Vec<DiagnosisRecord> = read_jsonl(&job.join(format!("diagnoses/shard-{i:05}.jsonl")));
        for req in plan_shard_items(&extractor, &profile, &diags, quota, 42) {
            if let Some(item) = write_with_template(extractor.vocab(), &req, &[], 42) {
                work.push((req, item));
            }
        }
    }
    let mut scratch = ExtractScratch::default();
    let accepted = Accepted::default();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut ok = 0usize;
        for (req, item) in &work {
            ok += usize::from(verify(&extractor, &mut scratch, &req.gate, item, &accepted).is_ok());
        }
        std::hint::black_box(ok);
        rates.push(work.len() as f64 / started.elapsed().as_secs_f64());
    }
    (work.len(), median(rates))
}

fn main() {
    let images = env("DFTG_BENCH_IMAGES", 3000) as usize;
    let runs = env("DFTG_BENCH_RUNS", 3) as usize;
    let latency = env("DFTG_BENCH_LATENCY_MS", 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = dir.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, images, 11).expect("corpus");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let bound_requests = 64.0 / (latency as f64 / 1000.0);
    let mut shares = Vec::new();
    let mut rates = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let r = rt.block_on(once(&corpus, latency));
        let rate = r.accepted as f64 / r.seconds;
        let bound = bound_requests * r.accepted as f64 / r.requests as f64;
        println!(
            "  run: {} accepted from {} writer requests in {:.2}s: {rate:.1} items/s, bound {bound:.1} items/s ({:.1}%)",
            r.accepted,
            r.requests,
            r.seconds,
            rate / bound * 100.0
        );
        shares.push(rate / bound);
        rates.push(rate);
        last = Some(r);
    }
    println!(
        "writer latency={latency}ms in_flight=64 images={images}: median {:.1} accepted items/s, {:.1}% of Little's-law bound after rewrites",
        median(rates),
        median(shares) * 100.0
    );
    if let Some(r) = last {
        let (n, rate) = gate_rate(&r.job);
        println!("gate: {n} items, median {rate:.0} items/s on one core");
    }
}
