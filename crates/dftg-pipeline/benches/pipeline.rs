//! Embedded pipeline throughput: `cargo bench -p dftg-pipeline --bench pipeline`.
//! Prints the median of several runs of the diagnose stage against the simulator (zero latency,
//! and 200 ms latency with 64 requests in flight, compared with Little's-law bound 64/0.2 s).
//! Env: DFTG_BENCH_IMAGES (default 2000), DFTG_BENCH_RUNS (default 3).

use std::sync::Arc;
use std::time::Duration;

use dftg_pipeline::job::{JobSpec, ModelSpec};
use dftg_pipeline::runner::{LocalJob, NoProgress, RunOptions};
use tokio_util::sync::CancellationToken;

async fn once(corpus: &std::path::Path, latency_ms: u64, in_flight: usize, images: usize) -> (Duration, Duration) {
    let out = tempfile::tempdir().expect("tempdir");
    let mut spec =
        JobSpec::new(corpus.to_str().expect("utf-8 path"), ModelSpec { kind: "sim:people-everywhere".into(), ..ModelSpec::default() });
    spec.model.sim_latency_ms = latency_ms;
    spec.model.max_in_flight = in_flight;
    spec.shard_size = 250.min(images);
    let job = LocalJob::prepare(&spec, out.path()).await.expect("job");
    let r = job.run(RunOptions { workers: 4, progress: Arc::new(NoProgress), shutdown: CancellationToken::new() }).await.expect("run");
    (r.diagnose_time, r.generate_time)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let images: usize = std::env::var("DFTG_BENCH_IMAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let runs: usize = std::env::var("DFTG_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = dir.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, images, 11).expect("corpus");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    for (latency, in_flight) in [(0u64, 64usize), (200, 64)] {
        let mut rates = Vec::new();
        let mut gen = Vec::new();
        for _ in 0..runs {
            let (d, g) = rt.block_on(once(&corpus, latency, in_flight, images));
            rates.push(images as f64 / d.as_secs_f64());
            gen.push(g.as_secs_f64());
        }
        let m = median(rates.clone());
        let bound = if latency > 0 { in_flight as f64 / (latency as f64 / 1000.0) } else { f64::INFINITY };
        println!(
            "diagnose latency={latency}ms in_flight={in_flight} images={images}: median {m:.0} images/s (runs {:?}){}; generate median {:.3}s",
            rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
            if bound.is_finite() { format!(", {:.1}% of Little's-law bound {bound:.0}/s", m / bound * 100.0) } else { String::new() },
            median(gen)
        );
    }
}
