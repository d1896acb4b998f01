//! Embedded pipeline throughput: `cargo bench -p dftg-pipeline --bench pipeline`.
//! Prints the median of several runs of the diagnose stage against the simulator (zero latency,
//! and 200 ms latency with 64 requests in flight, compared with Little's-law bound 64/0.2 s),
//! then the same with the truth from the simulated detector and judge (`truth.source =
//! "detector"`), every service at 200 ms and 64 in flight: images/s against the bound of the
//! slowest service (its in-flight limit / (latency × its requests per image, the judge's
//! existence and attribute questions both)).
//! Env: DFTG_BENCH_IMAGES (default 2000), DFTG_BENCH_RUNS (default 3).

use std::sync::Arc;
use std::time::Duration;

use dftg_pipeline::job::{JobSpec, ModelKind, ModelSpec};
use dftg_pipeline::runner::{LocalJob, NoProgress, RunOptions};
use tokio_util::sync::CancellationToken;

async fn once(corpus: &std::path::Path, latency_ms: u64, in_flight: usize, images: usize) -> (Duration, Duration) {
    let out = tempfile::tempdir().expect("tempdir");
    let mut spec = JobSpec::new(
        corpus.to_str().expect("utf-8 path"),
        ModelSpec { kind: ModelKind::Sim("people-everywhere".into()), ..ModelSpec::default() },
    );
    spec.model.sim_latency_ms = latency_ms;
    spec.model.max_in_flight = in_flight;
    spec.shard_size = 250.min(images);
    let job = LocalJob::prepare(&spec, out.path()).await.expect("job");
    let r = job.run(RunOptions { workers: 4, progress: Arc::new(NoProgress), shutdown: CancellationToken::new() }).await.expect("run");
    (r.diagnose_time, r.generate_time)
}

/// The diagnose stage with a detector and a judge: (images/s, detector and judge requests per image,
/// the judge's share of the checked object claims, attribute questions per image).
async fn with_truth_models(corpus: &std::path::Path, latency_ms: u64, images: usize) -> (f64, f64, f64, f64, f64) {
    use dftg_pipeline::job::{DetectorSpec, JudgeSpec, TruthSource};
    let out = tempfile::tempdir().expect("tempdir");
    let mut spec = JobSpec::new(
        corpus.to_str().expect("utf-8 path"),
        ModelSpec { kind: ModelKind::Sim("people-everywhere".into()), ..ModelSpec::default() },
    );
    spec.model.sim_latency_ms = latency_ms;
    spec.model.max_in_flight = 64;
    spec.shard_size = 250.min(images);
    spec.truth.source = TruthSource::Detector;
    spec.truth.detector = Some(DetectorSpec { sim_miss_rate: 0.1, sim_false_rate: 0.05, max_in_flight: 64, ..DetectorSpec::sim() });
    spec.truth.judge = Some(JudgeSpec { max_in_flight: 64, ..JudgeSpec::sim() });
    let m = dftg_pipeline::metrics::metrics();
    let count = |service: &str| {
        m.service_requests.with_label_values(&[service, "ok"]).get() + m.service_requests.with_label_values(&[service, "error"]).get()
    };
    let (d0, j0) = (count("detector"), count("judge"));
    let job = LocalJob::prepare(&spec, out.path()).await.expect("job");
    let r = job.run(RunOptions { workers: 4, progress: Arc::new(NoProgress), shutdown: CancellationToken::new() }).await.expect("run");
    let (detector, judge) = ((count("detector") - d0) as f64, (count("judge") - j0) as f64);
    // checked claims: every evidence entry of every record
    let mut claims = 0usize;
    let mut judged = 0usize;
    let mut attributes = 0usize;
    for entry in std::fs::read_dir(out.path().join(spec.id()).join("diagnoses")).expect("diagnoses") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let d: dftg_core::record::DiagnosisRecord = serde_json::from_str(line).expect("record");
            // object claims: present / absent / unverified verdicts; the rest are attribute answers
            let objects = |e: &&dftg_core::record::ClaimEvidence| matches!(e.verdict.as_str(), "present" | "absent" | "unverified");
            claims += d.evidence.iter().filter(objects).count();
            judged += d.evidence.iter().filter(objects).filter(|e| e.question.is_some()).count();
            attributes += d.evidence.iter().filter(|e| !objects(e)).count();
        }
    }
    let n = images as f64;
    (n / r.diagnose_time.as_secs_f64(), detector / n, judge / n, judged as f64 / claims.max(1) as f64, attributes as f64 / n)
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
    let latency = 200u64;
    let mut rates = Vec::new();
    let mut last = (0.0, 0.0, 0.0, 0.0, 0.0);
    for _ in 0..runs {
        let r = rt.block_on(with_truth_models(&corpus, latency, images));
        rates.push(r.0);
        last = r;
    }
    let (_, detector_per_image, judge_per_image, judge_share, attributes_per_image) = last;
    let secs = latency as f64 / 1000.0;
    // each service's bound: its in-flight limit over the time its requests of one image hold it
    let bounds =
        [("model", 64.0 / secs), ("detector", 64.0 / (secs * detector_per_image)), ("judge", 64.0 / (secs * judge_per_image.max(1e-9)))];
    let (slowest, bound) = bounds.iter().copied().fold(("", f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    let m = median(rates.clone());
    println!(
        "diagnose with detector + judge, each {latency}ms, 64 in flight each, images={images}: median {m:.0} images/s (runs {:?}); \
         detector {detector_per_image:.2} and judge {judge_per_image:.2} requests an image ({attributes_per_image:.2} of them attribute \
         questions), judge on {:.1}% of checked object claims; \
         slowest service {slowest}: bound {bound:.0}/s, {:.1}% of it",
        rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        judge_share * 100.0,
        m / bound * 100.0
    );
}
