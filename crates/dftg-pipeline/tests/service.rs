//! The distributed shape's logic with the in-process queue: coordinator + HTTP API + workers
//! that find their job in the store, against the simulator over HTTP. Its outputs equal those
//! of the embedded shape on the same spec.

use std::path::Path;
use std::sync::Arc;

use dftg_model::sim::{self, SimConfig, SimCorpus};
use dftg_pipeline::coordinator::{Coordinator, CoordinatorConfig};
use dftg_pipeline::http::Tokens;
use dftg_pipeline::job::{JobSpec, ModelKind, ModelSpec};
use dftg_pipeline::job_driver::JobStatus;
use dftg_pipeline::job_index::StoreJobs;
use dftg_pipeline::job_state::Phase;
use dftg_pipeline::messages::{DIAGNOSE_QUEUE, GENERATE_QUEUE};
use dftg_pipeline::policy::Policy;
use dftg_pipeline::runner::{LocalJob, NoProgress, RunOptions};
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
        if matches!(s.phase, Phase::Done | Phase::Failed | Phase::Cancelled) {
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
        ModelSpec { kind: ModelKind::OpenAi, endpoint: Some(simulator.base_url()), name: Some("sim".into()), ..ModelSpec::default() },
    );
    spec.shard_size = 40;

    // distributed logic: coordinator, HTTP API, two inference workers, one generator
    let shutdown = CancellationToken::new();
    let queue: Arc<dyn TaskQueue> = Arc::new(InProcessQueue::new());
    let root = ObjectBlobStore::local_dir(&dir.path().join("store")).unwrap();
    let d = dir.path().display();
    let policy = Policy::confined(
        &[format!("file://{d}/store"), format!("file://{d}/corpus"), format!("file://{d}/elsewhere")],
        &[simulator.base_url()],
        None,
    )
    .unwrap();
    let config = CoordinatorConfig { policy: policy.clone(), ..CoordinatorConfig::default() };
    let coordinator = Coordinator::start(root.clone(), queue.clone(), shutdown.clone(), config).await.unwrap();
    let jobs = Arc::new(StoreJobs::new(root.clone(), policy, 0));
    for (q, n) in [(DIAGNOSE_QUEUE, 2), (GENERATE_QUEUE, 1)] {
        for _ in 0..n {
            let (queue, jobs, stop) = (queue.clone(), jobs.clone(), shutdown.clone());
            tokio::spawn(async move { run_worker(queue, q, 2, jobs, stop).await });
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let app = dftg_pipeline::http::router(coordinator.clone(), Tokens::default());
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
    assert_eq!(status.phase, dftg_pipeline::job_state::Phase::Done, "{status:?}");
    assert_eq!(status.diagnose.shards_done, 4);
    assert_eq!(status.diagnose.items, 150);
    assert_eq!(http.get(format!("{api}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{api}/v1/jobs/nope")).send().await.unwrap().status(), 404);

    // a job with its own `out` writes there; workers find it through the coordinator's index
    let mut elsewhere = spec.clone();
    elsewhere.out = Some(format!("file://{}", dir.path().join("elsewhere").display()));
    let (other_id, other) = submit_and_wait(&http, &api, &elsewhere).await;
    assert_ne!(other_id, job_id);
    assert_eq!(other.phase, dftg_pipeline::job_state::Phase::Done, "{other:?}");
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
    for sub in ["plan", "diagnoses", "summaries", "instructions", "train"] {
        assert_eq!(files(&a, sub), files(&b, sub), "{sub} differ");
    }
    for f in ["profile.json", "dataset.json", "generation-plan.json"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    // the distributed finish writes the training files and counts the subject's tokens too
    let dataset: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(files(&a, "train").len(), 3);
    assert_eq!(dataset["train"]["records"], dataset["instructions"]);
    assert!(dataset["tokens"]["subject"]["prompt"].as_u64().unwrap() > 0, "{}", dataset["tokens"]);
    simulator.shutdown().await.unwrap();
}

/// Starts a coordinator (with `tokens`) and `workers` inference + generator loops on the
/// in-process queue; returns the API base URL.
async fn service(root: &ObjectBlobStore, policy: Policy, tokens: Tokens, shutdown: &CancellationToken) -> String {
    let queue: Arc<dyn TaskQueue> = Arc::new(InProcessQueue::new());
    let config = CoordinatorConfig { policy: policy.clone(), ..CoordinatorConfig::default() };
    let coordinator = Coordinator::start(root.clone(), queue.clone(), shutdown.clone(), config).await.unwrap();
    let jobs = Arc::new(StoreJobs::new(root.clone(), policy, 0));
    for q in [DIAGNOSE_QUEUE, GENERATE_QUEUE] {
        let (queue, jobs, stop) = (queue.clone(), jobs.clone(), shutdown.clone());
        tokio::spawn(async move { run_worker(queue, q, 1, jobs, stop).await });
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let app = dftg_pipeline::http::router(coordinator, tokens);
    tokio::spawn(async move { axum::serve(listener, app).await });
    api
}

async fn wait_phase(http: &reqwest::Client, api: &str, job_id: &str, want: impl Fn(Phase) -> bool) -> JobStatus {
    for _ in 0..2000 {
        let s: JobStatus = http.get(format!("{api}/v1/jobs/{job_id}")).send().await.unwrap().json().await.unwrap();
        if want(s.phase) {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("job {job_id} never reached the awaited phase");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_end_when_their_cause_is_known_and_can_be_cancelled_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, 60, 3).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    // slow model: the job is still diagnosing when it is cancelled
    let simulator = sim::start(
        SimCorpus::load_dir(&corpus).unwrap(),
        SimConfig::new(sim::profile_by_name("kitchenware").unwrap()).with_seed(1).with_latency(sim::Latency::Fixed { ms: 200 }),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let root = ObjectBlobStore::local_dir(&dir.path().join("store")).unwrap();
    let d = dir.path().display();
    let policy = Policy::confined(
        &[format!("file://{d}/store"), format!("file://{d}/corpus"), format!("file://{d}/empty")],
        &[simulator.base_url()],
        None,
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let api = service(&root, policy, Tokens::default(), &shutdown).await;
    let http = reqwest::Client::new();
    let model = ModelSpec {
        kind: ModelKind::OpenAi,
        endpoint: Some(simulator.base_url()),
        name: Some("sim".into()),
        max_in_flight: 2,
        ..ModelSpec::default()
    };

    // a corpus with no annotations: the job ends failed with the reason, not stuck in planning
    let (id, s) = submit_and_wait(&http, &api, &JobSpec::new(&format!("file://{}", empty.display()), model.clone())).await;
    assert_eq!(s.phase, Phase::Failed, "{s:?}");
    assert!(s.error.as_deref().unwrap_or("").contains("corpus.annotations"), "{s:?}");
    assert!(s.finished_at.is_some());
    // a corpus directory that does not exist: failed too, and nothing is created for it
    let missing = dir.path().join("corpus").join("nope");
    let (_, s) = submit_and_wait(&http, &api, &JobSpec::new(&format!("file://{}", missing.display()), model.clone())).await;
    assert_eq!(s.phase, Phase::Failed, "{s:?}");
    assert!(!missing.exists(), "a missing corpus directory must not be created");

    // outside the policy: 400 naming the field, nothing created
    let mut outside = JobSpec::new(&format!("file://{}", corpus.display()), model.clone());
    outside.out = Some(format!("file://{d}/anywhere"));
    let r = http.post(format!("{api}/v1/jobs")).body(serde_json::to_string(&outside).unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["field"], "out");
    assert!(!dir.path().join("anywhere").exists());

    // cancel a running job: it ends cancelled; a second cancel is a conflict; delete forgets it
    let mut slow = JobSpec::new(&format!("file://{}", corpus.display()), model.clone());
    slow.shard_size = 5;
    let r = http.post(format!("{api}/v1/jobs")).body(serde_json::to_string(&slow).unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let slow_id = slow.id();
    wait_phase(&http, &api, &slow_id, |p| p == Phase::Diagnosing).await;
    let r = http.post(format!("{api}/v1/jobs/{slow_id}/cancel")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let s = wait_phase(&http, &api, &slow_id, |p| p == Phase::Cancelled).await;
    assert!(s.diagnose.shards_done < 12, "cancelled before the end: {s:?}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("store").join(&slow_id).join("job.json")).unwrap()).unwrap();
    assert_eq!(state["phase"], "cancelled");
    let r = http.post(format!("{api}/v1/jobs/{slow_id}/cancel")).send().await.unwrap();
    assert_eq!(r.status(), 409);
    for job in [&slow_id, &id] {
        let r = http.delete(format!("{api}/v1/jobs/{job}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(http.get(format!("{api}/v1/jobs/{job}")).send().await.unwrap().status(), 404);
        assert!(!dir.path().join("store").join("jobs").join(format!("{job}.json")).exists(), "index entry removed");
    }
    let metrics = http.get(format!("{api}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains(&slow_id), "a forgotten job's metric series are removed");
    assert_eq!(http.delete(format!("{api}/v1/jobs/{slow_id}")).send().await.unwrap().status(), 404);
    shutdown.cancel();
    simulator.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_a_token_except_for_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let root = ObjectBlobStore::local_dir(&dir.path().join("store")).unwrap();
    let shutdown = CancellationToken::new();
    let tokens = Tokens::parse("first-token-0123456789\nsecond-token-0123456789\n").unwrap();
    let api = service(&root, Policy::confined(&[], &[], None).unwrap(), tokens, &shutdown).await;
    let http = reqwest::Client::new();
    for (method, path) in
        [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("DELETE", "/v1/jobs/x"), ("POST", "/v1/jobs/x/cancel")]
    {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http.request(m.clone(), format!("{api}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {path} without a token");
        let r = http.request(m, format!("{api}{path}")).bearer_auth("first-token-012345678").send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with a wrong token");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(http.get(format!("{api}{path}")).send().await.unwrap().status(), 200, "{path}");
    }
    let r = http.get(format!("{api}/v1/jobs")).bearer_auth("second-token-0123456789").send().await.unwrap();
    assert_eq!(r.status(), 200);
    shutdown.cancel();
}
