//! The distributed shape as separate OS processes against real services: RabbitMQ (a fresh
//! vhost per test on 127.0.0.1:5672) and a real S3 server (s3s-fs, served by this test).
//! Coordinator, simulator, two inference workers and a generator worker are `dftg` processes.
//! Mid-job: an inference worker is killed with SIGKILL, the broker closes every connection of
//! the vhost, and the coordinator is killed and restarted. The job completes with exactly one
//! diagnosis record per image, equal to what `dftg run` writes on the same corpus and model.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dftg_runtime::s3_test_server::S3TestServer;

const BUCKET: &str = "dftg";

fn dftg() -> &'static str {
    env!("CARGO_BIN_EXE_dftg")
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `dftg ARGS` and waits for its "listening on http://ADDR" line.
fn spawn_listening(args: &[&str], env: &[(String, String)]) -> (Proc, String) {
    let mut child = Command::new(dftg())
        .args(args)
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn dftg");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read the listening line");
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no address in {line:?}")).to_string();
    (Proc(child), url)
}

fn spawn(args: &[&str], env: &[(String, String)]) -> Proc {
    Proc(
        Command::new(dftg())
            .args(args)
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dftg"),
    )
}

fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

fn broker_available() -> bool {
    let up = std::net::TcpStream::connect_timeout(&"127.0.0.1:5672".parse().expect("addr"), Duration::from_secs(2)).is_ok();
    if !up {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("RabbitMQ is not reachable at 127.0.0.1:5672 (the test script starts it)");
        }
        eprintln!("SKIPPED: RabbitMQ is not reachable at 127.0.0.1:5672");
    }
    up
}

/// A vhost of its own, deleted at the end.
struct Vhost(String);

impl Vhost {
    fn new(tag: &str) -> Self {
        let name = format!("dftg-test-{tag}-{}", std::process::id());
        assert!(rabbitmqctl(&["add_vhost", &name]), "rabbitmqctl add_vhost");
        assert!(rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]), "rabbitmqctl set_permissions");
        Vhost(name)
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.0]);
    }
}

async fn start_s3() -> S3TestServer {
    S3TestServer::start(BUCKET).await.expect("s3 test server")
}

/// What jobs may touch (the operator's roots): the test bucket's corpus and output prefixes,
/// and the simulator.
fn with_policy(mut env: Vec<(String, String)>, sim_url: &str) -> Vec<(String, String)> {
    env.push(("DFTG_ALLOW_STORES".into(), format!("s3://{BUCKET}/corpus,s3://{BUCKET}/elsewhere")));
    env.push(("DFTG_ALLOW_ENDPOINTS".into(), sim_url.to_string()));
    env
}

/// The environment of every dftg process of a test: broker vhost, job store, S3 access.
fn process_env(vhost: &Vhost, s3: &S3TestServer, store_url: &str) -> Vec<(String, String)> {
    let mut env = vec![("DFTG_AMQP_URL".into(), vhost.url()), ("DFTG_STORE_URL".into(), store_url.to_string())];
    env.extend(s3.aws_env());
    env
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let p = e.expect("entry").path();
        let dst = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).expect("copy");
        }
    }
}

fn sorted_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.expect("entry").path())
            .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

async fn status(http: &reqwest::Client, api: &str, job: &str) -> Option<serde_json::Value> {
    let r = http.get(format!("{api}/v1/jobs/{job}")).send().await.ok()?;
    r.json().await.ok()
}

async fn wait_until(
    http: &reqwest::Client,
    api: &str,
    job: &str,
    what: &str,
    deadline: Duration,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Some(s) = status(http, api, job).await {
            last = Some(s.clone());
            if f(&s) {
                return s;
            }
            if s["phase"] == "failed" {
                panic!("job failed while waiting for {what}: {s}");
            }
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}; last status: {last:?}");
        // polling an HTTP API; no assertion depends on the interval
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn job_toml(corpus: &str, endpoint: &str, shard_size: usize) -> String {
    format!(
        "seed = 42\nshard_size = {shard_size}\n[corpus]\npath = \"{corpus}\"\n[model]\nkind = \"openai\"\nendpoint = \"{endpoint}\"\nname = \"sim\"\nmax_in_flight = 32\ntimeout_secs = 10\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_job_survives_kills_and_disconnects_and_matches_dftg_run() {
    if !broker_available() {
        return;
    }
    let vhost = Vhost::new("main");
    let s3 = start_s3().await;
    let work = tempfile::tempdir().expect("temp dir");
    let corpus = work.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, 2000, 21).expect("corpus");
    copy_dir(&corpus, &s3.root().join(BUCKET).join("corpus"));
    let env = process_env(&vhost, &s3, &format!("s3://{BUCKET}/jobs"));
    let corpus_str = corpus.to_str().expect("utf-8");
    let (_sim, sim_url) =
        spawn_listening(&["sim", "--listen", "127.0.0.1:0", "--corpus", corpus_str, "--profile", "kitchenware", "--latency-ms", "5"], &env);
    let env = with_policy(env, &sim_url);
    let (coordinator, api) = spawn_listening(&["coordinator", "--listen", "127.0.0.1:0"], &env);
    let mut coordinator = Some(coordinator);
    let mut inference = vec![
        spawn(&["worker", "--role", "inference", "--prefetch", "1"], &env),
        spawn(&["worker", "--role", "inference", "--prefetch", "1"], &env),
    ];
    let mut generators = vec![spawn(&["worker", "--role", "generator", "--prefetch", "1"], &env)];
    let http = reqwest::Client::new();

    // an invalid spec is refused with 400 and the field
    for (body, field) in [
        ("[model]\nkind = \"openai\"\n".to_string(), "corpus"),
        (job_toml("s3://dftg/corpus", &sim_url, 100).replace("shard_size = 100", "shard_size = 0"), "shard_size"),
        (job_toml("s3://dftg/corpus", &sim_url, 100).replace("kind = \"openai\"", "kind = \"telepathy:x\""), "model.kind"),
    ] {
        let r = http.post(format!("{api}/v1/jobs")).body(body).send().await.expect("submit");
        assert_eq!(r.status(), 400);
        let v: serde_json::Value = r.json().await.expect("json");
        assert!(v["error"].as_str().unwrap_or("").contains(field), "{v}");
    }

    // the remedy data written by the simulated writer: the generators call the simulator too
    let spec = format!("{}[generation.writer]\nkind = \"sim\"\nendpoint = \"{sim_url}\"\n", job_toml("s3://dftg/corpus", &sim_url, 100));
    let r = http.post(format!("{api}/v1/jobs")).body(spec.clone()).send().await.expect("submit");
    assert_eq!(r.status(), 201);
    let job = r.json::<serde_json::Value>().await.expect("json")["job_id"].as_str().expect("job id").to_string();

    // a poison message on the diagnose queue
    let q = dftg_runtime::AmqpQueue::connect(&vhost.url()).await.expect("amqp");
    use dftg_runtime::queue::TaskQueue;
    q.publish(dftg_pipeline::messages::DIAGNOSE_QUEUE, bytes::Bytes::from_static(b"\xc1 not a task")).await.expect("publish poison");

    let long = Duration::from_secs(600);
    wait_until(&http, &api, &job, "2 diagnose shards", long, |s| s["diagnose"]["shards_done"].as_u64().unwrap_or(0) >= 2).await;
    // SIGKILL an inference worker holding a task; a fresh one joins
    let mut victim = inference.remove(0);
    victim.0.kill().expect("kill -9 worker");
    let _ = victim.0.wait();
    inference.push(spawn(&["worker", "--role", "inference", "--prefetch", "1"], &env));
    wait_until(&http, &api, &job, "6 diagnose shards", long, |s| s["diagnose"]["shards_done"].as_u64().unwrap_or(0) >= 6).await;
    assert!(rabbitmqctl(&["close_all_connections", "-p", &vhost.0, "dftg test: forced disconnect"]), "close_all_connections");
    wait_until(&http, &api, &job, "10 diagnose shards", long, |s| s["diagnose"]["shards_done"].as_u64().unwrap_or(0) >= 10).await;
    // SIGKILL the coordinator mid-job and start a new one on the same store and broker
    drop(coordinator.take());
    let (_coordinator2, api) = spawn_listening(&["coordinator", "--listen", "127.0.0.1:0"], &env);
    // SIGKILL the generator while it writes (its shard's writer calls are in flight); another takes over
    wait_until(&http, &api, &job, "the first generate shard", long, |s| s["generate"]["shards_done"].as_u64().unwrap_or(0) >= 1).await;
    let mut victim = generators.remove(0);
    victim.0.kill().expect("kill -9 generator");
    let _ = victim.0.wait();
    generators.push(spawn(&["worker", "--role", "generator", "--prefetch", "1"], &env));
    let done = wait_until(&http, &api, &job, "the job to finish", long, |s| s["phase"] == "done").await;
    assert!(done["dead_letters"].as_u64().unwrap_or(0) >= 1, "the poison message is counted: {done}");
    let dead = q.take_dead_letters(dftg_pipeline::messages::DIAGNOSE_QUEUE, 10).await.expect("dead letters");
    assert!(dead.iter().any(|d| d.reason.contains("not a dftg shard task")), "{dead:?}");

    // exactly one diagnosis record per image
    let out = s3.root().join(BUCKET).join("jobs").join(&job);
    let mut images = std::collections::BTreeMap::<String, usize>::new();
    for (_, bytes) in sorted_files(&out.join("diagnoses")) {
        for line in String::from_utf8(bytes).expect("utf-8").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("record");
            *images.entry(v["image"].as_str().expect("image").to_string()).or_default() += 1;
        }
    }
    assert_eq!(images.len(), 2000);
    assert!(images.values().all(|n| *n == 1), "duplicated diagnosis records");

    // the same job with `dftg run` gives the same outputs
    let local_out = work.path().join("local");
    let st = Command::new(dftg())
        .args([
            "run",
            "--corpus",
            corpus_str,
            "--endpoint",
            &sim_url,
            "--model-name",
            "sim",
            "--shard-size",
            "100",
            "--in-flight",
            "32",
            "--timeout",
            "10",
            "--writer",
            "sim",
            "--writer-endpoint",
            &sim_url,
            "--out",
        ])
        .arg(&local_out)
        .arg("--quiet")
        .status()
        .expect("dftg run");
    assert!(st.success());
    let local_job: PathBuf = std::fs::read_dir(&local_out).expect("out").next().expect("job dir").expect("entry").path();
    for sub in ["plan", "diagnoses", "summaries", "instructions", "train", "writer/stats"] {
        let (a, b) = (sorted_files(&out.join(sub)), sorted_files(&local_job.join(sub)));
        assert!(!a.is_empty());
        assert!(a == b, "{sub} differ between the distributed and the embedded run");
    }
    for f in ["profile.json", "generation-plan.json"] {
        assert_eq!(std::fs::read(out.join(f)).expect(f), std::fs::read(local_job.join(f)).expect(f), "{f} differs");
    }
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("dataset.json")).expect("dataset")).expect("json");
    assert_eq!(manifest["writer"]["kind"], "sim");
    assert!(manifest["writer"]["accepted"].as_u64().unwrap_or(0) > 0, "{}", manifest["writer"]);
    drop(inference);
    drop(generators);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_endpoint_is_retried_and_failures_are_counted() {
    if !broker_available() {
        return;
    }
    let vhost = Vhost::new("faults");
    let s3 = start_s3().await;
    let work = tempfile::tempdir().expect("temp dir");
    let corpus = work.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, 300, 22).expect("corpus");
    copy_dir(&corpus, &s3.root().join(BUCKET).join("corpus"));
    // in the bucket, COCO's usual layout: file names without their folder, images under images/
    let in_bucket = s3.root().join(BUCKET).join("corpus").join("annotations.json");
    let coco = std::fs::read_to_string(&in_bucket).expect("annotations").replace("\"file_name\":\"images/", "\"file_name\":\"");
    assert!(!coco.contains("images/"));
    std::fs::write(&in_bucket, coco).expect("annotations");
    let env = process_env(&vhost, &s3, &format!("file://{}", work.path().join("store").display()));
    let corpus_str = corpus.to_str().expect("utf-8");
    // 20% of requests fail; 2% of images fail every time
    let (_sim, sim_url) = spawn_listening(
        &["sim", "--listen", "127.0.0.1:0", "--corpus", corpus_str, "--fail-500", "0.1", "--fail-503", "0.1", "--fail-sticky", "0.02"],
        &env,
    );
    let env = with_policy(env, &sim_url);
    let (_coordinator, api) = spawn_listening(&["coordinator", "--listen", "127.0.0.1:0"], &env);
    let _w = [spawn(&["worker", "--role", "inference"], &env), spawn(&["worker", "--role", "generator"], &env)];
    let http = reqwest::Client::new();
    // submitted as a user does: `dftg submit JOB.toml --out s3://… --wait`, whose exit code
    // says how the job ended
    let job_file = work.path().join("job.toml");
    std::fs::write(&job_file, job_toml("s3://dftg/corpus", &sim_url, 50)).expect("job file");
    let submitted = Command::new(dftg())
        .envs(env.iter().cloned())
        .arg("submit")
        .arg(&job_file)
        .args(["--out", "s3://dftg/elsewhere", "--coordinator", &api, "--wait"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("dftg submit");
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let job = String::from_utf8(submitted.stdout).expect("utf-8").lines().next().expect("job id line").trim().to_string();
    let done = wait_until(&http, &api, &job, "the job to finish", Duration::from_secs(600), |s| s["phase"] == "done").await;
    assert!(s3.root().join(BUCKET).join("elsewhere").join(&job).join("dataset.json").is_file(), "outputs under --out");
    let ds = &done["dataset"];
    let failed = ds["failed_images"].as_u64().expect("failed count");
    assert!((1..=30).contains(&failed), "sticky failures only, the rest retried: {ds}");
    assert_eq!(ds["diagnosed_images"].as_u64().expect("diagnosed") + failed, 300);
    assert!(ds["errors_by_reason"]["model_http_5xx"].as_u64().unwrap_or(0) >= 1, "{ds}");
    // the live status counts failures by reason as the shards report them
    assert_eq!(done["errors_by_reason"], ds["errors_by_reason"], "{done}");
    assert!(ds["instructions"].as_u64().unwrap_or(0) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_truth_is_a_detector_and_a_judge_matches_dftg_run() {
    if !broker_available() {
        return;
    }
    let vhost = Vhost::new("detector");
    let s3 = start_s3().await;
    let work = tempfile::tempdir().expect("temp dir");
    let corpus = work.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, 120, 23).expect("corpus");
    copy_dir(&corpus, &s3.root().join(BUCKET).join("corpus"));
    let env = process_env(&vhost, &s3, &format!("s3://{BUCKET}/jobs"));
    let corpus_str = corpus.to_str().expect("utf-8");
    // one simulator plays the model under diagnosis, the detector (10% missed, 5% false boxes)
    // and the judge
    let (_sim, sim_url) = spawn_listening(
        &[
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--corpus",
            corpus_str,
            "--profile",
            "people-everywhere",
            "--sim-detector-miss-rate",
            "0.1",
            "--sim-detector-false-rate",
            "0.05",
        ],
        &env,
    );
    let root = sim_url.trim_end_matches('/').trim_end_matches("/v1").to_string();
    let (detector, judge) = (format!("{root}/hf/detect"), format!("{root}/judge/v1"));
    let env = with_policy(env, &root);
    let (_coordinator, api) = spawn_listening(&["coordinator", "--listen", "127.0.0.1:0"], &env);
    let _w = [
        spawn(&["worker", "--role", "inference"], &env),
        spawn(&["worker", "--role", "inference"], &env),
        spawn(&["worker", "--role", "generator"], &env),
    ];
    let http = reqwest::Client::new();
    let spec = format!(
        "{}[truth]\nsource = \"detector\"\n[truth.detector]\nkind = \"http\"\napi = \"hf\"\nendpoint = \"{detector}\"\n[truth.judge]\nkind = \"openai\"\nendpoint = \"{judge}\"\nmodel = \"{}\"\n",
        // few requests in flight: the test S3 server holds 64 connections at once
        job_toml("s3://dftg/corpus", &sim_url, 40).replace("max_in_flight = 32", "max_in_flight = 8"),
        dftg_model::sim::JUDGE_MODEL
    );
    let r = http.post(format!("{api}/v1/jobs")).body(spec).send().await.expect("submit");
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let job = r.json::<serde_json::Value>().await.expect("json")["job_id"].as_str().expect("job id").to_string();
    wait_until(&http, &api, &job, "the job to finish", Duration::from_secs(600), |s| s["phase"] == "done").await;

    let local_out = work.path().join("local");
    let st = Command::new(dftg())
        .args([
            "run",
            "--corpus",
            corpus_str,
            "--endpoint",
            &sim_url,
            "--model-name",
            "sim",
            "--shard-size",
            "40",
            "--in-flight",
            "8",
            "--timeout",
            "10",
            "--truth",
            "detector",
            "--detector-endpoint",
            &detector,
            "--detector-api",
            "hf",
            "--judge-endpoint",
            &judge,
            "--judge-model",
            dftg_model::sim::JUDGE_MODEL,
            "--out",
        ])
        .arg(&local_out)
        .arg("--quiet")
        .status()
        .expect("dftg run");
    assert!(st.success());
    let local_job: PathBuf = std::fs::read_dir(&local_out).expect("out").next().expect("job dir").expect("entry").path();
    let out = s3.root().join(BUCKET).join("jobs").join(&job);
    for sub in ["plan", "diagnoses", "summaries", "instructions"] {
        let (a, b) = (sorted_files(&out.join(sub)), sorted_files(&local_job.join(sub)));
        assert!(!a.is_empty(), "{sub} is empty");
        assert!(a == b, "{sub} differ between the distributed and the embedded run");
    }
    for f in ["profile.json", "generation-plan.json"] {
        assert_eq!(std::fs::read(out.join(f)).expect(f), std::fs::read(local_job.join(f)).expect(f), "{f} differs");
    }
    // the truth came from the services: evidence from the detector and, on the uncertain band, the judge
    let mut sources = std::collections::BTreeMap::<String, usize>::new();
    for (_, bytes) in sorted_files(&out.join("diagnoses")) {
        for line in String::from_utf8(bytes).expect("utf-8").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("record");
            for e in v["evidence"].as_array().into_iter().flatten() {
                *sources.entry(e["source"].as_str().unwrap_or("?").to_string()).or_default() += 1;
            }
        }
    }
    assert!(sources.get("detector").copied().unwrap_or(0) > 0 && sources.get("judge").copied().unwrap_or(0) > 0, "{sources:?}");
}

/// `submit --model sim:NAME`: refused unless the operator passes `--allow-sim`; with it the
/// workers run the simulator in process (its corpus read from the bucket) and the diagnoses
/// equal `dftg run`'s. `dftg status` prints a summary that says where the outputs are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulator_job_runs_inside_the_workers_when_the_operator_allows_it() {
    if !broker_available() {
        return;
    }
    let vhost = Vhost::new("sim");
    let s3 = start_s3().await;
    let work = tempfile::tempdir().expect("temp dir");
    let corpus = work.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, 200, 23).expect("corpus");
    copy_dir(&corpus, &s3.root().join(BUCKET).join("corpus"));
    let mut env = process_env(&vhost, &s3, &format!("s3://{BUCKET}/jobs"));
    env.push(("DFTG_ALLOW_STORES".into(), format!("s3://{BUCKET}/corpus")));
    // the dftg commands run off the runtime's threads: the S3 server in this process serves on them
    async fn output(mut cmd: Command) -> std::process::Output {
        tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output().expect("run dftg")).await.expect("join")
    }
    let submit = |api: &str| {
        let mut cmd = Command::new(dftg());
        // --in-flight 8: the test S3 server holds 64 connections at once; more wait for a
        // free one and time out (30 s) on the worker's side
        cmd.envs(env.iter().cloned())
            .args(["submit", "--corpus", "s3://dftg/corpus", "--model", "sim:kitchenware", "--name", "sim in workers"])
            .args(["--shard-size", "50", "--in-flight", "8", "--coordinator", api, "--wait"]);
        output(cmd)
    };
    {
        let (_refusing, api) = spawn_listening(&["coordinator", "--listen", "127.0.0.1:0"], &env);
        let out = submit(&api).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("model.kind") && stderr.contains("--allow-sim"), "{stderr}");
    }
    let (_coordinator, api) = spawn_listening(&["coordinator", "--listen", "127.0.0.1:0", "--allow-sim"], &env);
    let _w =
        [spawn(&["worker", "--role", "inference", "--allow-sim"], &env), spawn(&["worker", "--role", "generator", "--allow-sim"], &env)];
    let out = submit(&api).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let job = stdout.lines().next().expect("job id line").trim().to_string();
    assert!(job.starts_with("sim-in-workers-"), "{job}");
    assert!(stdout.contains(&format!("outputs: s3://{BUCKET}/jobs/{job}/")), "{stdout}");

    let mut cmd = Command::new(dftg());
    cmd.envs(env.iter().cloned()).args(["status", &job, "--coordinator", &api]);
    let status = output(cmd).await;
    let summary = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.status.success(), "{summary}");
    assert!(summary.starts_with(&format!("job {job}: done")) && summary.contains("diagnose: 4/4 shards, 200 images"), "{summary}");
    assert!(summary.contains(&format!("read first: s3://{BUCKET}/jobs/{job}/report.html")), "{summary}");
    assert!(summary.lines().count() < 15, "{summary}");
    let json =
        Command::new(dftg()).envs(env.iter().cloned()).args(["status", &job, "--json", "--coordinator", &api]).output().expect("status");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status --json is JSON");
    assert_eq!(v["phase"], "done");

    let local_out = work.path().join("local");
    let corpus_str = corpus.to_str().expect("utf-8");
    let st = Command::new(dftg())
        .args(["run", "--corpus", corpus_str, "--model", "sim:kitchenware", "--shard-size", "50", "--quiet", "--out"])
        .arg(&local_out)
        .stdout(Stdio::null())
        .status()
        .expect("dftg run");
    assert!(st.success());
    let local_job: PathBuf = std::fs::read_dir(&local_out).expect("out").next().expect("job dir").expect("entry").path();
    let out = s3.root().join(BUCKET).join("jobs").join(&job);
    let (a, b) = (sorted_files(&out.join("diagnoses")), sorted_files(&local_job.join("diagnoses")));
    assert!(!a.is_empty() && a == b, "diagnoses differ between the workers' simulator and dftg run");
    assert_eq!(std::fs::read(out.join("profile.json")).expect("profile"), std::fs::read(local_job.join("profile.json")).expect("profile"));
}

/// Messages left in the vhost's queues, by queue.
fn queue_depths(vhost: &str) -> Vec<(String, u64)> {
    let out = Command::new("rabbitmqctl").args(["list_queues", "-p", vhost, "-q", "name", "messages"]).output().expect("rabbitmqctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (name, n) = (it.next()?, it.next()?.parse().ok()?);
            Some((name.to_string(), n))
        })
        .collect()
}

// 8 requests in flight: the in-process S3 test server holds 64 connections at once
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_diagnosis_stops_early_leaves_no_messages_and_matches_dftg_run() {
    if !broker_available() {
        return;
    }
    let vhost = Vhost::new("adaptive");
    let s3 = start_s3().await;
    let work = tempfile::tempdir().expect("temp dir");
    let corpus = work.path().join("corpus");
    dftg_pipeline::synth::write_replicated_corpus_dir(&corpus, 4000, 200, 1).expect("corpus");
    copy_dir(&corpus, &s3.root().join(BUCKET).join("corpus"));
    let env = process_env(&vhost, &s3, &format!("s3://{BUCKET}/jobs"));
    let corpus_str = corpus.to_str().expect("utf-8");
    let (_sim, sim_url) = spawn_listening(&["sim", "--listen", "127.0.0.1:0", "--corpus", corpus_str, "--profile", "kitchenware"], &env);
    let env = with_policy(env, &sim_url);
    let (_coordinator, api) = spawn_listening(&["coordinator", "--listen", "127.0.0.1:0"], &env);
    let _workers = [
        spawn(&["worker", "--role", "inference"], &env),
        spawn(&["worker", "--role", "inference"], &env),
        spawn(&["worker", "--role", "generator"], &env),
    ];
    let http = reqwest::Client::new();
    let stop = "[diagnosis]\nstop_when = { top_k = 7, confidence = 0.9, waves = 10 }\n";
    let spec = format!(
        "{}[generation]\nbudget = 100\n{stop}",
        job_toml("s3://dftg/corpus", &sim_url, 100).replace("max_in_flight = 32", "max_in_flight = 8")
    );
    let r = http.post(format!("{api}/v1/jobs")).body(spec).send().await.expect("submit");
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let job = r.json::<serde_json::Value>().await.expect("json")["job_id"].as_str().expect("job id").to_string();
    let done = wait_until(&http, &api, &job, "the job to finish", Duration::from_secs(600), |s| s["phase"] == "done").await;
    let d = &done["dataset"]["diagnosis"];
    assert_eq!(d["stopped_early"], true, "{d}");
    let diagnosed = d["images_diagnosed"].as_u64().expect("images_diagnosed");
    assert!(diagnosed < 4000 && d["model_calls_saved"].as_u64() == Some(4000 - diagnosed), "{d}");
    // the waves never published are not in any queue; nothing else is left either
    let left: Vec<_> = queue_depths(&vhost.0).into_iter().filter(|(_, n)| *n > 0).collect();
    assert!(left.is_empty(), "messages left in the queues: {left:?}");
    let out = s3.root().join(BUCKET).join("jobs").join(&job);
    assert_eq!(sorted_files(&out.join("diagnoses")).len() as u64 * 100, diagnosed);

    // `dftg run` with the same stopping rule stops at the same wave with the same profile
    let local_out = work.path().join("local");
    let st = Command::new(dftg())
        .args(["run", "--corpus", corpus_str, "--endpoint", &sim_url, "--model-name", "sim", "--shard-size", "100", "--in-flight", "8"])
        .args(["--timeout", "10", "--budget", "100", "--stop-top-k", "7", "--stop-confidence", "0.9", "--stop-waves", "10", "--quiet"])
        .arg("--out")
        .arg(&local_out)
        .status()
        .expect("dftg run");
    assert!(st.success());
    let local_job: PathBuf = std::fs::read_dir(&local_out).expect("out").next().expect("job dir").expect("entry").path();
    let local: serde_json::Value =
        serde_json::from_slice(&std::fs::read(local_job.join("dataset.json")).expect("dataset.json")).expect("json");
    assert_eq!(local["diagnosis"]["images_diagnosed"], d["images_diagnosed"]);
    assert_eq!(local["diagnosis"]["top"], d["top"]);
    assert_eq!(std::fs::read(out.join("profile.json")).expect("profile"), std::fs::read(local_job.join("profile.json")).expect("profile"));
}
