//! The distributed shape's logic with the in-process queue: coordinator + HTTP API + workers
//! that find their job in the store, against the simulator over HTTP. Its outputs equal those
//! of the embedded shape on the same spec.

use std::path::Path;
use std::sync::Arc;

use dftg_model::sim::{self, SimConfig, SimCorpus};
use dftg_pipeline::driver::JobStatus;
use dftg_pipeline::job::{JobSpec, ModelSpec};
use dftg_pipeline::messages::{DIAGNOSE_QUEUE, GENERATE_QUEUE};
use dftg_pipeline::runner::{LocalJob, NoProgress, RunOptions};
use dftg_pipeline::service::{Coordinator, StoreJobs};
use dftg_pipeline::worker::run_worker;
use dftg_runtime::queue::{InProcessQueue, TaskQueue};
use dftg_runtime::ObjectBlobStore;
use tokio_util::sync::CancellationToken;

fn files(dir: &Path, sub: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join(sub))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// Submits through the API and polls until the job ends, as a user's client does (no
/// assertion depends on timing).
async fn submit_and_wait(http: &reqwest::Client, api: &str, spec: &JobSpec) -> (String, JobStatus) {
    let r = http.post(format!("{api}/v1/jobs")).body(serde_json::to_string(spec).unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let job_id = r.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_string();
    loop {
        let s: JobStatus = http.get(format!("{api}/v1/jobs/{job_id}")).send().await.unwrap().json().await.unwrap();
        if matches!(s.phase, dftg_pipeline::coordinator::Phase::Done | dftg_pipeline::coordinator::Phase::Failed) {
            return (job_id, s);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_workers_match_the_embedded_run() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, 150, 9).unwrap();
    let simulator = sim::start(
        SimCorpus::load_dir(&corpus).unwrap(),
        SimConfig::new(sim::profile_by_name("kitchenware").unwrap()).with_seed(42),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let mut spec = JobSpec::new(
        &format!("file://{}", corpus.display()),
        ModelSpec { kind: "openai".into(), endpoint: Some(simulator.base_url()), name: Some("sim".into()), ..ModelSpec::default() },
    );
    spec.shard_size = 40;

    // distributed logic: coordinator, HTTP API, two inference workers, one generator
    let shutdown = CancellationToken::new();
    let queue: Arc<dyn TaskQueue> = Arc::new(InProcessQueue::new());
    let root = ObjectBlobStore::local_dir(&dir.path().join("store")).unwrap();
    let coordinator = Coordinator::start(root.clone(), queue.clone(), shutdown.clone()).await.unwrap();
    let jobs = Arc::new(StoreJobs::new(root.clone(), 0));
    for (q, n) in [(DIAGNOSE_QUEUE, 2), (GENERATE_QUEUE, 1)] {
        for _ in 0..n {
            let (queue, jobs, stop) = (queue.clone(), jobs.clone(), shutdown.clone());
            tokio::spawn(async move { run_worker(queue, q, 2, jobs, stop).await });
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let app = dftg_pipeline::http::router(coordinator.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();

    // a bad spec is refused naming the field
    for (body, field) in [
        ("shard_size = 0\n[corpus]\npath = \"x\"\n[model]\nkind = \"openai\"\nendpoint = \"http://x/v1\"\nname = \"m\"\n", "shard_size"),
        ("[model]\nkind = \"openai\"\n", "corpus"),
        ("[corpus]\npath = \"x\"\n[model]\nkind = \"gopher:x\"\n", "model.kind"),
    ] {
        let r = http.post(format!("{api}/v1/jobs")).body(body).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(field), "{v}");
    }
    let (job_id, status) = submit_and_wait(&http, &api, &spec).await;
    assert_eq!(job_id, spec.id());
    assert_eq!(status.phase, dftg_pipeline::coordinator::Phase::Done, "{status:?}");
    assert_eq!(status.diagnose.shards_done, 4);
    assert_eq!(status.diagnose.items, 150);
    assert_eq!(http.get(format!("{api}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{api}/v1/jobs/nope")).send().await.unwrap().status(), 404);

    // a job with its own `out` writes there; workers find it through the coordinator's index
    let mut elsewhere = spec.clone();
    elsewhere.out = Some(format!("file://{}", dir.path().join("elsewhere").display()));
    let (other_id, other) = submit_and_wait(&http, &api, &elsewhere).await;
    assert_ne!(other_id, job_id);
    assert_eq!(other.phase, dftg_pipeline::coordinator::Phase::Done, "{other:?}");
    assert!(dir.path().join("elsewhere").join(&other_id).join("dataset.json").is_file());
    assert!(!dir.path().join("store").join(&other_id).exists(), "outputs went to the job's out, not the root");
    assert_eq!(
        files(&dir.path().join("elsewhere").join(&other_id), "diagnoses"),
        files(&dir.path().join("store").join(&job_id), "diagnoses"),
        "same spec apart from `out`: same diagnoses"
    );
    shutdown.cancel();

    // the embedded shape on the same spec writes the same bytes
    let out = dir.path().join("embedded");
    let local = LocalJob::prepare(&spec, &out).await.unwrap();
    local.run(RunOptions { workers: 2, progress: Arc::new(NoProgress), shutdown: CancellationToken::new() }).await.unwrap();
    let a = dir.path().join("store").join(&job_id);
    let b = out.join(&job_id);
    for sub in ["plan", "diagnoses", "summaries", "instructions"] {
        assert_eq!(files(&a, sub), files(&b, sub), "{sub} differ");
    }
    for f in ["profile.json", "dataset.json", "generation-plan.json"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    simulator.shutdown().await.unwrap();
}
