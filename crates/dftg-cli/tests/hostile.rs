//! Hostile inputs against the distributed shape as real processes: coordinator, inference and
//! generator workers and the model simulator are `dftg` processes; RabbitMQ (a vhost and a
//! user of each test's own) and the S3 test server are real. Every dftg process runs with
//! secrets in its environment (model API key, AWS secret key, an AMQP password in its URL, a
//! canary variable) and logs to a file; at the end of each test every HTTP answer, CLI output,
//! dead-letter reason, `/metrics` text, process log and stored object is scanned for those
//! secrets and for the text of /etc/passwd.
//!
//! What is asserted, by the items:
//! 1. anonymous file read and secret leak: the API needs a bearer token (401 otherwise, except
//!    /healthz, /readyz, /metrics); without tokens the coordinator refuses a wildcard address;
//!    `vocabulary` / `chair_vocab` paths are refused; no file text or secret shows anywhere.
//! 2. jobs choose only among what the operator allowed (`--allow-store`, `--allow-endpoint`,
//!    `--vocab-dir`): `out`, `corpus.path`, `model.endpoint` outside them get 400 naming the
//!    field, nothing is created at submit, an internal service is never reached; workers
//!    refuse such jobs too (a `job.json` planted in the store).
//! 3. poison tasks (100 KB job_id, undecodable payloads, timeout_secs = 1e300) are
//!    dead-lettered with a reason of at most 4 KiB and the same worker goes on consuming.
//! 4. max_attempts = 4294967295 is refused.
//! 5. jobs end: no annotations or a missing prefix → `failed` and `submit --wait` exits
//!    non-zero; a dead-lettered diagnose shard shows its real reason; cancel and delete work.
//! 6. `--help` shows no password; endpoint credentials are refused (never stored).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use dftg_pipeline::messages::{ShardTask, Stage, DIAGNOSE_QUEUE, MESSAGE_SCHEMA_VERSION};
use dftg_runtime::queue::TaskQueue;
use reqwest::Method;
use support::*;

const SHORT: Duration = Duration::from_secs(30);
const JOB_DEADLINE: Duration = Duration::from_secs(120);

fn s(p: &std::path::Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// A job spec: `top` holds extra top-level keys, `model` extra `[model]` keys (timeout_secs
/// included: give it there).
fn spec(top: &str, corpus: &str, endpoint: &str, model: &str) -> String {
    format!(
        "seed = 5\nshard_size = 2\n{top}\n[corpus]\npath = \"{corpus}\"\n[model]\nkind = \"openai\"\nendpoint = \"{endpoint}\"\nname = \"sim\"\nmax_in_flight = 8\n{model}\n"
    )
}

fn task(job_id: &str) -> Bytes {
    let t = ShardTask { schema_version: MESSAGE_SCHEMA_VERSION, job_id: job_id.to_string(), stage: Stage::Diagnose, shard: 0 };
    dftg_runtime::codec::encode(&t).expect("encode task")
}

fn is_2xx(status: u16) -> bool {
    (200..300).contains(&status)
}

// -----------------------------------------------------------------------------------------------

/// Items 1 and 6: the API needs a bearer token from `--token-file` / `DFTG_TOKEN_FILE`; the
/// coordinator refuses a non-loopback address without tokens; the CLI sends `DFTG_TOKEN`;
/// `--help` shows no secret from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_a_token_and_help_shows_no_secret() {
    if !broker_available() {
        return;
    }
    let c = Cluster::new("hostile-auth", 4, 31).await;
    let (p, sec) = (&c.problems, &c.secrets);
    let endpoint = "http://127.0.0.1:9/v1";
    let tokens = s(&c.token_file());

    // --help with a password in DFTG_AMQP_URL (and in DFTG_AMQP_PASSWORD) and a token in DFTG_TOKEN
    let help_env = c.env_with(&[("DFTG_TOKEN", &sec.token), ("DFTG_AMQP_PASSWORD", &sec.amqp_password), ("DFTG_TOKEN_FILE", &tokens)]);
    for args in [
        &["--help"][..],
        &["coordinator", "--help"],
        &["worker", "--help"],
        &["submit", "--help"],
        &["status", "--help"],
        &["cancel", "--help"],
    ] {
        let out = c.cli(args, &help_env, SHORT).await;
        p.check(out.success(), || format!("`dftg {}` failed: {}", args.join(" "), sec.redact(&out.stderr)));
        let text = format!("{}{}", out.stdout, out.stderr);
        let wanted: &[&str] = match args[0] {
            "coordinator" => &["--token-file", "--allow-store", "--allow-endpoint", "--vocab-dir"],
            "worker" => &["--allow-store", "--allow-endpoint", "--vocab-dir"],
            _ => &[],
        };
        for flag in wanted {
            p.check(text.contains(flag), || format!("`dftg {}` does not document {flag}", args.join(" ")));
        }
    }

    // without tokens, a wildcard address is refused (the process ends, non-zero, saying why)
    let open_args = ["coordinator", "--listen", "0.0.0.0:0", "--allow-store", CORPUS, "--allow-endpoint", endpoint];
    let mut open = c.spawn("coordinator-without-tokens", &open_args, &c.env());
    let start = Instant::now();
    let ended = loop {
        if let Some(st) = open.exited() {
            break Some(st);
        }
        if open.log_text().contains("listening on") || start.elapsed() > SHORT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match ended {
        Some(st) => {
            p.check(!st.success(), || format!("the coordinator refused 0.0.0.0 without tokens but exited {st}"));
            p.check(open.log_text().to_lowercase().contains("token"), || {
                format!("the refusal to listen on 0.0.0.0 without tokens does not say why (no mention of a token): {}", sec.redact(&open.log_tail(10)))
            });
        }
        None => p.add("`dftg coordinator --listen 0.0.0.0:0` without --token-file / DFTG_TOKEN_FILE started serving (it must refuse a non-loopback address without tokens)"),
    }
    drop(open);

    // with DFTG_TOKEN_FILE it serves on every interface
    let env = c.env_with(&[("DFTG_TOKEN_FILE", &tokens)]);
    let (_coordinator, url) = c.spawn_listening("coordinator", &open_args, &env).await;
    let api = c.api(&url);
    let spec = job_toml(CORPUS, endpoint, 2, 1);
    let wrong = bearer(&sec.wrong_token);
    let basic = format!("Basic {}", sec.token);
    let no_auth: [(&str, Option<&str>); 5] = [
        ("no Authorization header", None),
        ("a wrong bearer token", Some(wrong.as_str())),
        ("an empty bearer token", Some("Bearer ")),
        ("the token as Basic credentials", Some(basic.as_str())),
        ("the token without a scheme", Some(sec.token.as_str())),
    ];
    let calls: [(Method, &str, Option<&str>); 6] = [
        (Method::GET, "/v1/jobs", None),
        (Method::POST, "/v1/jobs", Some(spec.as_str())),
        (Method::GET, "/v1/jobs/some-job", None),
        (Method::POST, "/v1/jobs/some-job/cancel", Some("")),
        (Method::DELETE, "/v1/jobs/some-job", None),
        (Method::POST, "/v1/jobs", Some(spec.as_str())),
    ];
    for (label, auth) in no_auth {
        for (method, path, body) in &calls {
            let r = api.call(method.clone(), path, *body, auth).await;
            p.check(r.status == 401, || format!("{method} {path} with {label}: expected 401, got {}", r.short()));
        }
    }
    match api.job_ids(&sec.token).await {
        Some(ids) => p.check(ids.is_empty(), || format!("unauthenticated submissions created jobs: {ids:?}")),
        None => p.add("GET /v1/jobs with a valid token did not answer 200 with a job list"),
    }
    for t in [&sec.token, &sec.token2] {
        let r = api.get("/v1/jobs", t).await;
        p.check(r.status == 200, || format!("GET /v1/jobs with a token of the token file: expected 200, got {}", r.short()));
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = api.call(Method::GET, path, None, None).await;
        p.check(r.status == 200, || format!("GET {path} without a token: expected 200, got {}", r.short()));
    }

    // the CLI sends DFTG_TOKEN; without it, it is refused
    let job_file = c.dir().join("job.toml");
    std::fs::write(&job_file, &spec).expect("job file");
    let job_file = s(&job_file);
    let (without, with) = (c.env(), c.env_with(&[("DFTG_TOKEN", &sec.token)]));
    let out = c.cli(&["submit", &job_file, "--coordinator", &url], &without, SHORT).await;
    p.check(!out.success(), || "`dftg submit` without DFTG_TOKEN succeeded".into());
    let out = c.cli(&["submit", &job_file, "--coordinator", &url], &with, SHORT).await;
    assert!(out.success(), "`dftg submit` with DFTG_TOKEN failed: {}", sec.redact(&out.stderr));
    let job = out.first_line();
    // no worker runs here: the job waits for its diagnose shards
    api.wait_job(&job, &sec.token, "diagnosing", SHORT, |v| v["phase"] == "diagnosing").await;

    let out = c.cli(&["status", &job, "--coordinator", &url], &without, SHORT).await;
    p.check(!out.success(), || "`dftg status JOB` without DFTG_TOKEN succeeded".into());
    let out = c.cli(&["status", &job, "--coordinator", &url], &with, SHORT).await;
    p.check(out.success() && out.stdout.contains(&job), || format!("`dftg status JOB` with DFTG_TOKEN: {}", sec.redact(&out.stderr)));

    let r = api.call(Method::POST, &format!("/v1/jobs/{job}/cancel"), Some(""), None).await;
    p.check(r.status == 401, || format!("cancel without a token: expected 401, got {}", r.short()));
    let out = c.cli(&["cancel", &job, "--coordinator", &url], &without, SHORT).await;
    p.check(!out.success(), || "`dftg cancel JOB` without DFTG_TOKEN succeeded".into());
    let r = api.job(&job, &sec.token).await;
    p.check(r.json()["phase"] == "diagnosing", || format!("an unauthenticated cancel changed the job: {}", r.short()));
    let out = c.cli(&["cancel", &job, "--coordinator", &url], &with, SHORT).await;
    p.check(out.success(), || format!("`dftg cancel JOB` with DFTG_TOKEN failed: {}", sec.redact(&out.stderr)));
    if let Err(last) = api.poll_job(&job, &sec.token, SHORT, |v| v["phase"] == "cancelled").await {
        p.add(format!("after `dftg cancel`, the job is not cancelled: {last}"));
    }

    c.scan_for_leaks(&[]);
    p.finish();
}

// -----------------------------------------------------------------------------------------------

/// Items 1, 2, 4, 5 (submit checks) and 6: hostile specs get 400 naming the field, nothing is
/// created or reached, and a job inside the operator's roots (a vocabulary by name) runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_job_specs_are_refused_naming_the_field() {
    if !broker_available() {
        return;
    }
    let c = Cluster::new("hostile-specs", 4, 32).await;
    let (p, sec) = (&c.problems, &c.secrets);
    let token = sec.token.clone();
    let (_sim, sim) = c.sim(&[]).await;
    let internal = InternalService::start().await;
    let vocab_dir = c.dir().join("vocab");
    std::fs::create_dir_all(&vocab_dir).expect("vocab dir");
    std::fs::write(vocab_dir.join("mini.toml"), dftg_core::vocab::COCO80_TOML).expect("vocabulary");
    let (vocab_dir, tokens) = (s(&vocab_dir), s(&c.token_file()));
    let coordinator_args = [
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        &tokens,
        "--allow-store",
        CORPUS,
        "--allow-endpoint",
        &sim,
        "--vocab-dir",
        &vocab_dir,
    ];
    let (_coordinator, url) = c.spawn_listening("coordinator", &coordinator_args, &c.env()).await;
    let worker_env = c.env_with(&[("DFTG_ALLOW_STORES", &format!("{CORPUS},s3://dftg/unused")), ("DFTG_ALLOW_ENDPOINTS", &sim)]);
    let metrics = format!("127.0.0.1:{}", free_port());
    let _inference =
        c.spawn("inference", &["worker", "--role", "inference", "--vocab-dir", &vocab_dir, "--metrics-listen", &metrics], &worker_env);
    let _generator = c.spawn("generator", &["worker", "--role", "generator", "--vocab-dir", &vocab_dir], &worker_env);
    let api = c.api(&url);

    let ok_model = "timeout_secs = 10";
    let escape_out = c.dir().join("escape-out");
    let escape_out2 = c.dir().join("escape-out2");
    let escape_corpus = c.dir().join("escape-corpus");
    let sim_authority = sim.trim_start_matches("http://").trim_end_matches("/v1").to_string();
    let internal_authority = internal.url.trim_start_matches("http://").to_string();
    let long_id = "a".repeat(8000);
    let cases: Vec<(&str, String, &str)> = vec![
        // item 1: vocabularies are names, never paths
        ("vocabulary = /proc/self/environ", spec("vocabulary = \"/proc/self/environ\"", CORPUS, &sim, ok_model), "vocabulary"),
        ("vocabulary = /etc/passwd", spec("vocabulary = \"/etc/passwd\"", CORPUS, &sim, ok_model), "vocabulary"),
        ("vocabulary = ../../../../etc/passwd", spec("vocabulary = \"../../../../etc/passwd\"", CORPUS, &sim, ok_model), "vocabulary"),
        ("vocabulary = mini.toml (a file name)", spec("vocabulary = \"mini.toml\"", CORPUS, &sim, ok_model), "vocabulary"),
        (
            "vocabulary = /proc/self/environ (JSON spec)",
            serde_json::json!({"corpus": {"path": CORPUS}, "model": {"kind": "openai", "endpoint": sim, "name": "sim"}, "vocabulary": "/proc/self/environ"})
                .to_string(),
            "vocabulary",
        ),
        // item 5: vocabulary and chair_vocab are checked at submit
        ("vocabulary = nosuch (not in --vocab-dir)", spec("vocabulary = \"nosuch\"", CORPUS, &sim, ok_model), "vocabulary"),
        ("chair_vocab = /etc", spec("extractor = \"chair-compat\"\nchair_vocab = \"/etc\"", CORPUS, &sim, ok_model), "chair_vocab"),
        ("chair_vocab = nosuch", spec("extractor = \"chair-compat\"\nchair_vocab = \"nosuch\"", CORPUS, &sim, ok_model), "chair_vocab"),
        // item 2: outputs only under allowed stores
        ("out = file:// outside the allowed stores", spec(&format!("out = \"file://{}\"", escape_out.display()), CORPUS, &sim, ok_model), "out"),
        ("out = a bare local path", spec(&format!("out = \"{}\"", escape_out2.display()), CORPUS, &sim, ok_model), "out"),
        ("out = another prefix of the bucket", spec("out = \"s3://dftg/elsewhere\"", CORPUS, &sim, ok_model), "out"),
        ("out = the store with ..", spec("out = \"s3://dftg/jobs/../elsewhere\"", CORPUS, &sim, ok_model), "out"),
        ("out = the store's name as a prefix (s3://dftg/jobsx)", spec("out = \"s3://dftg/jobsx\"", CORPUS, &sim, ok_model), "out"),
        ("out = another bucket", spec("out = \"s3://dftg-other/jobs\"", CORPUS, &sim, ok_model), "out"),
        // item 2: corpora only under allowed stores
        ("corpus.path = /etc", spec("", "/etc", &sim, ok_model), "corpus.path"),
        ("corpus.path = file:///etc", spec("", "file:///etc", &sim, ok_model), "corpus.path"),
        ("corpus.path = a new file:// folder", spec("", &format!("file://{}", escape_corpus.display()), &sim, ok_model), "corpus.path"),
        ("corpus.path = the corpus with ..", spec("", "s3://dftg/corpus/../jobs", &sim, ok_model), "corpus.path"),
        ("corpus.path = the corpus's name as a prefix", spec("", "s3://dftg/corpus-private", &sim, ok_model), "corpus.path"),
        ("corpus.path = another bucket", spec("", "s3://other-bucket/corpus", &sim, ok_model), "corpus.path"),
        // item 2: endpoints only under allowed prefixes, without credentials, query or fragment
        ("model.endpoint = an internal service", spec("", CORPUS, &format!("{}/v1", internal.url), ok_model), "model.endpoint"),
        ("model.endpoint = the cloud metadata service", spec("", CORPUS, "http://169.254.169.254/latest/meta-data", ok_model), "model.endpoint"),
        (
            "model.endpoint with user:password@",
            spec("", CORPUS, &format!("http://dftg:{}@{sim_authority}/v1", sec.endpoint_password), ok_model),
            "model.endpoint",
        ),
        ("model.endpoint with a query", spec("", CORPUS, &format!("{sim}?x=1"), ok_model), "model.endpoint"),
        ("model.endpoint with a fragment", spec("", CORPUS, &format!("{sim}#f"), ok_model), "model.endpoint"),
        ("model.endpoint extending the allowed path (/v1x)", spec("", CORPUS, &format!("{sim}x"), ok_model), "model.endpoint"),
        ("model.endpoint climbing out with ..", spec("", CORPUS, &format!("{sim}/../admin"), ok_model), "model.endpoint"),
        ("model.endpoint over https", spec("", CORPUS, &sim.replace("http://", "https://"), ok_model), "model.endpoint"),
        (
            "model.endpoint with the allowed host as user info",
            spec("", CORPUS, &format!("http://{sim_authority}@{internal_authority}/v1"), ok_model),
            "model.endpoint",
        ),
        ("model.kind = replay:/etc/passwd", format!("[corpus]\npath = \"{CORPUS}\"\n[model]\nkind = \"replay:/etc/passwd\"\n"), "model.kind"),
        // items 3 and 4: numbers that break the workers
        ("model.timeout_secs = 1e300", spec("", CORPUS, &sim, "timeout_secs = 1e300"), "model.timeout_secs"),
        ("model.timeout_secs = inf", spec("", CORPUS, &sim, "timeout_secs = inf"), "model.timeout_secs"),
        ("model.max_attempts = 4294967295", spec("", CORPUS, &sim, "timeout_secs = 10\nmax_attempts = 4294967295"), "model.max_attempts"),
        ("an 8000-byte job_id", spec(&format!("job_id = \"{long_id}\""), CORPUS, &sim, ok_model), "job_id"),
    ];
    for (label, body, field) in &cases {
        let r = api.post("/v1/jobs", body, &token).await;
        let v = r.json();
        p.check(r.status == 400 && v["field"] == *field, || {
            format!("{label}: expected 400 with \"field\": {field:?}, got {}", sec.redact(&r.short()))
        });
        p.check(r.status != 400 || v["error"].as_str().is_some_and(|e| !e.trim().is_empty()), || {
            format!("{label}: the 400 has no \"error\" text")
        });
    }
    for dir in [&escape_out, &escape_out2, &escape_corpus] {
        p.check(!dir.exists(), || format!("a refused job created {}", dir.display()));
    }
    match api.job_ids(&token).await {
        Some(ids) => p.check(ids.is_empty(), || {
            format!("refused specs were registered as jobs: {:?}", ids.iter().map(|i| short_id(i)).collect::<Vec<_>>())
        }),
        None => p.add("GET /v1/jobs did not answer a job list"),
    }

    // inside the operator's roots, with a vocabulary by name from --vocab-dir: runs to the end
    let job = api.submit(&spec("vocabulary = \"mini\"", CORPUS, &sim, ok_model), &token).await;
    match api.poll_final(&job, &token, JOB_DEADLINE).await {
        Ok(v) => p.check(v["phase"] == "done", || format!("the allowed job ended {}: {}", v["phase"], sec.redact(&v.to_string()))),
        Err(last) => p.add(format!("the allowed job did not end within {JOB_DEADLINE:?}: {}", sec.redact(&last))),
    }

    // metrics of the coordinator and the worker are evidence too
    let r = api.call(Method::GET, "/metrics", None, None).await;
    p.check(r.status == 200, || format!("coordinator /metrics: {}", r.short()));
    let r = api.call(Method::GET, &format!("http://{metrics}/metrics"), None, None).await;
    p.check(r.status == 200, || format!("worker /metrics: {}", r.short()));

    let reached = internal.requests();
    p.check(reached.is_empty(), || {
        format!("{} request(s) reached the internal service (Authorization header sent: {})", reached.len(), internal.saw_authorization())
    });
    c.scan_for_leaks(&[]);
    p.finish();
}

// -----------------------------------------------------------------------------------------------

/// Items 1, 2 and 3 at the workers: poison tasks and jobs planted in the store past the
/// coordinator are dead-lettered with a bounded reason that holds no secret or file text, no
/// internal service is reached, and the same worker process then runs a good job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_tasks_are_dead_lettered_and_the_worker_keeps_consuming() {
    if !broker_available() {
        return;
    }
    let c = Cluster::new("hostile-poison", 4, 33).await;
    let (p, sec) = (&c.problems, &c.secrets);
    let token = sec.token.clone();
    let (_sim, sim) = c.sim(&[]).await;
    let internal = InternalService::start().await;
    let tokens = s(&c.token_file());
    let coordinator_args =
        ["coordinator", "--listen", "127.0.0.1:0", "--token-file", &tokens, "--allow-store", CORPUS, "--allow-endpoint", &sim];
    let (_coordinator, url) = c.spawn_listening("coordinator", &coordinator_args, &c.env()).await;
    let worker_env = c.env_with(&[("DFTG_ALLOW_STORES", CORPUS), ("DFTG_ALLOW_ENDPOINTS", &sim)]);
    let metrics = format!("127.0.0.1:{}", free_port());
    // one task at a time: a task that kills its loop kills this worker
    let mut inference =
        c.spawn("inference", &["worker", "--role", "inference", "--prefetch", "1", "--metrics-listen", &metrics], &worker_env);
    let _generator = c.spawn("generator", &["worker", "--role", "generator"], &worker_env);
    let api = c.api(&url);

    // a good job: the workers work, and its job.json and plan are the templates of planted jobs
    let first = api.submit(&job_toml(CORPUS, &sim, 2, 1), &token).await;
    api.wait_done(&first, &token, JOB_DEADLINE).await;

    // jobs written straight into the store (as an older coordinator, or anyone with store
    // access, could): the workers check them again
    let jobs_dir = c.bucket_dir().join("jobs");
    let template: serde_json::Value =
        serde_json::from_slice(&std::fs::read(jobs_dir.join(&first).join("job.json")).expect("job.json")).expect("job.json is JSON");
    let plant = |id: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut state = template.clone();
        state["job_id"] = id.into();
        state["phase"] = "diagnosing".into();
        state["spec"]["job_id"] = id.into();
        edit(&mut state["spec"]);
        let dir = jobs_dir.join(id);
        copy_dir(&jobs_dir.join(&first).join("plan"), &dir.join("plan"));
        std::fs::write(dir.join("job.json"), serde_json::to_vec_pretty(&state).expect("json")).expect("plant job.json");
        std::fs::create_dir_all(jobs_dir.join("jobs")).expect("index dir");
        std::fs::write(jobs_dir.join("jobs").join(format!("{id}.json")), serde_json::json!({ "job_id": id }).to_string())
            .expect("plant index entry");
    };
    let internal_endpoint = format!("{}/v1", internal.url);
    plant("planted-environ", &|s| s["vocabulary"] = "/proc/self/environ".into());
    plant("planted-passwd", &|s| s["vocabulary"] = "/etc/passwd".into());
    plant("planted-endpoint", &|s| s["model"]["endpoint"] = internal_endpoint.clone().into());
    plant("planted-corpus", &|s| s["corpus"]["path"] = "file:///etc".into());
    plant("planted-timeout", &|s| s["model"]["timeout_secs"] = serde_json::json!(1e300));

    let huge_id = "j".repeat(100_000);
    let poison: Vec<(&str, Bytes)> = vec![
        ("an undecodable payload", Bytes::from_static(b"\xc1 not a task")),
        ("a 100 KB MessagePack string", dftg_runtime::codec::encode(&"x".repeat(100_000)).expect("encode")),
        ("a task whose job_id is a path", task("../../../etc/passwd")),
        ("a planted job whose vocabulary is /proc/self/environ", task("planted-environ")),
        ("a planted job whose vocabulary is /etc/passwd", task("planted-passwd")),
        ("a planted job whose endpoint is not allowed", task("planted-endpoint")),
        ("a planted job whose corpus is file:///etc", task("planted-corpus")),
        ("a task with a 100 KB job_id", task(&huge_id)),
        ("a planted job whose timeout_secs is 1e300", task("planted-timeout")),
    ];
    let q = c.queue().await;
    for (_, payload) in &poison {
        q.publish(DIAGNOSE_QUEUE, payload.clone()).await.expect("publish poison");
    }

    // every poison task leaves the queue through the dead-letter queue, the worker alive
    let start = Instant::now();
    loop {
        if let Some(st) = inference.exited() {
            p.add(format!("the inference worker exited ({st}) on poison tasks; its log ends:\n{}", sec.redact(&inference.log_tail(15))));
            break;
        }
        let dead = q.dead_letter_depth(DIAGNOSE_QUEUE).await.unwrap_or(0);
        let left = c.vhost.messages(DIAGNOSE_QUEUE).await;
        if dead >= poison.len() as u64 && left == Some(0) {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            p.add(format!(
                "poison tasks not settled within 90 s: {dead} of {} dead-lettered, {left:?} still in {DIAGNOSE_QUEUE}",
                poison.len()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dead = q.take_dead_letters(DIAGNOSE_QUEUE, 100).await.expect("read the dead letters");
    for d in &dead {
        c.evidence.add("a dead-letter reason header (x-dftg-reason)", d.reason.clone());
        p.check(d.reason.len() <= MAX_REASON_BYTES, || {
            format!("a dead-letter reason of {} bytes (at most {MAX_REASON_BYTES})", d.reason.len())
        });
        p.check(!d.reason.trim().is_empty(), || "a dead letter without a reason".into());
    }
    for (label, payload) in &poison {
        p.check(dead.iter().any(|d| d.payload == *payload), || format!("{label} was not dead-lettered"));
    }
    let reached = internal.requests();
    p.check(reached.is_empty(), || {
        format!(
            "{} request(s) from a worker reached the internal service (Authorization header sent: {})",
            reached.len(),
            internal.saw_authorization()
        )
    });

    // the same worker process goes on: a good job after the poison runs to the end
    if inference.exited().is_none() {
        let second = api.submit(&job_toml(CORPUS, &sim, 2, 2), &token).await;
        match api.poll_final(&second, &token, JOB_DEADLINE).await {
            Ok(v) => {
                p.check(v["phase"] == "done", || format!("the job after the poison ended {}: {}", v["phase"], sec.redact(&v.to_string())))
            }
            Err(last) => p.add(format!("the job after the poison did not end within {JOB_DEADLINE:?}: {}", sec.redact(&last))),
        }
        p.check(inference.exited().is_none(), || "the inference worker exited after the poison tasks".into());
    }

    let r = api.call(Method::GET, "/metrics", None, None).await;
    p.check(r.status == 200, || format!("coordinator /metrics: {}", r.short()));
    if inference.exited().is_none() {
        let r = api.call(Method::GET, &format!("http://{metrics}/metrics"), None, None).await;
        p.check(r.status == 200, || format!("worker /metrics: {}", r.short()));
    }
    c.scan_for_leaks(&[]);
    p.finish();
}

// -----------------------------------------------------------------------------------------------

/// Item 5: jobs end once their cause is known, and can be cancelled and deleted (also across a
/// coordinator restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_end_when_their_cause_is_known_and_can_be_cancelled_and_deleted() {
    if !broker_available() {
        return;
    }
    let c = Cluster::new("hostile-lifecycle", 4, 34).await;
    let (p, sec) = (&c.problems, &c.secrets);
    let token = sec.token.clone();
    // a prefix with images but no ground truth
    let noann = "s3://dftg/noann";
    copy_dir(&c.corpus.join("images"), &c.bucket_dir().join("noann").join("images"));
    let (_sim, sim) = c.sim(&[]).await;
    let tokens = s(&c.token_file());
    let coordinator_args = [
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        &tokens,
        "--allow-store",
        CORPUS,
        "--allow-store",
        noann,
        "--allow-endpoint",
        &sim,
    ];
    let (coordinator, url) = c.spawn_listening("coordinator", &coordinator_args, &c.env()).await;
    let mut coordinator = Some(coordinator);
    let worker_env = c.env_with(&[("DFTG_ALLOW_STORES", &format!("{CORPUS},{noann}")), ("DFTG_ALLOW_ENDPOINTS", &sim)]);
    let _generator = c.spawn("generator", &["worker", "--role", "generator"], &worker_env);
    let api = c.api(&url);
    let cli_env = c.env_with(&[("DFTG_TOKEN", &token)]);

    // a corpus prefix that does not exist: `dftg submit --wait` ends non-zero, the job `failed`
    let job_file = c.dir().join("missing.toml");
    std::fs::write(&job_file, job_toml(&format!("{CORPUS}/no-such-prefix"), &sim, 2, 41)).expect("job file");
    let out = c.cli(&["submit", &s(&job_file), "--coordinator", &url, "--wait"], &cli_env, Duration::from_secs(60)).await;
    p.check(!out.timed_out, || "`dftg submit --wait` on a corpus prefix that does not exist did not end within 60 s".into());
    p.check(out.timed_out || !out.success(), || "`dftg submit --wait` exited 0 for a job on a corpus prefix that does not exist".into());
    let missing_job = out.first_line();
    if missing_job.is_empty() {
        // refused at submit instead: acceptable if it names the corpus
        p.check(out.stderr.contains("corpus"), || {
            format!("`dftg submit` gave no job id and no reason naming the corpus: {}", sec.redact(&out.stderr))
        });
    } else {
        match api.poll_final(&missing_job, &token, SHORT).await {
            Ok(v) => {
                p.check(v["phase"] == "failed", || format!("the job on a missing prefix ended {} (expected failed)", v["phase"]));
                p.check(v["error"].as_str().is_some_and(|e| !e.is_empty()), || {
                    format!("the failed job on a missing prefix has no error: {v}")
                });
            }
            Err(last) => p.add(format!("the job on a missing corpus prefix never reached a final phase: {last}")),
        }
    }

    // a corpus without annotations: `failed`, with the reason
    let noann_job = api.submit(&job_toml(noann, &sim, 2, 42), &token).await;
    match api.poll_final(&noann_job, &token, SHORT).await {
        Ok(v) => {
            p.check(v["phase"] == "failed", || format!("the job on a corpus without annotations ended {} (expected failed)", v["phase"]));
            p.check(v["error"].as_str().is_some_and(|e| !e.is_empty()), || format!("the failed job without annotations has no error: {v}"));
        }
        Err(last) => p.add(format!("the job on a corpus without annotations never reached a final phase: {last}")),
    }

    // a diagnose shard that is dead-lettered (its plan shard is corrupt): the job ends and
    // shows the real reason, not the barrier's missing summary
    let d = api.submit(&job_toml(CORPUS, &sim, 2, 43), &token).await;
    api.wait_job(&d, &token, "diagnosing with 2 shards", SHORT, |v| v["phase"] == "diagnosing" && v["diagnose"]["shards_total"] == 2).await;
    let plan0 = c.bucket_dir().join("jobs").join(&d).join("plan").join("shard-00000.jsonl");
    assert!(plan0.is_file(), "no plan shard at {}", plan0.display());
    let garbage = "this line is not a plan entry: corrupt-input-marker";
    std::fs::write(&plan0, format!("{garbage}\n")).expect("corrupt the plan shard");
    let inference = c.spawn("inference", &["worker", "--role", "inference", "--prefetch", "1"], &worker_env);
    match api.poll_final(&d, &token, JOB_DEADLINE).await {
        Ok(v) => {
            let text = v.to_string();
            p.check(v["phase"] == "done" || v["phase"] == "failed", || format!("the job with a dead-lettered shard ended {}", v["phase"]));
            p.check(!text.contains("summaries/shard-00000.json: missing"), || {
                format!(
                    "the job with a dead-lettered shard reports the barrier's missing summary instead of the shard's reason: {}",
                    sec.redact(&text)
                )
            });
            p.check(v["failed_shards"].as_object().is_some_and(|m| !m.is_empty()), || {
                format!("the dead-lettered shard is not in failed_shards: {}", sec.redact(&text))
            });
            p.check(text.contains("plan/shard-00000.jsonl"), || {
                format!("the status does not show the shard's real reason (its corrupt plan shard): {}", sec.redact(&text))
            });
            p.check(!text.contains("corrupt-input-marker"), || "the status echoes the corrupt object's content".into());
        }
        Err(last) => p.add(format!("the job with a dead-lettered diagnose shard never reached a final phase: {}", sec.redact(&last))),
    }
    let q = c.queue().await;
    for dl in q.take_dead_letters(DIAGNOSE_QUEUE, 100).await.expect("dead letters") {
        p.check(dl.reason.len() <= MAX_REASON_BYTES, || format!("a dead-letter reason of {} bytes", dl.reason.len()));
        p.check(!dl.reason.contains("corrupt-input-marker"), || "a dead-letter reason echoes the corrupt object's content".into());
        c.evidence.add("a dead-letter reason header (x-dftg-reason)", dl.reason);
    }
    // from here on no inference worker runs: jobs wait in diagnosing until cancelled
    drop(inference);

    let e = api.submit(&job_toml(CORPUS, &sim, 2, 51), &token).await;
    let f = api.submit(&job_toml(CORPUS, &sim, 2, 52), &token).await;
    let g = api.submit(&job_toml(CORPUS, &sim, 2, 53), &token).await;
    for j in [&e, &f, &g] {
        api.wait_job(j, &token, "diagnosing", SHORT, |v| v["phase"] == "diagnosing").await;
    }
    // cancel over HTTP
    let r = api.post(&format!("/v1/jobs/{e}/cancel"), "", &token).await;
    p.check(is_2xx(r.status) && r.json()["cancelled"] == true, || format!("POST /v1/jobs/E/cancel: {}", r.short()));
    if let Err(last) = api.poll_job(&e, &token, SHORT, |v| v["phase"] == "cancelled").await {
        p.add(format!("after POST /v1/jobs/E/cancel the job is not cancelled: {last}"));
    }
    // cancel with the CLI
    let out = c.cli(&["cancel", &f, "--coordinator", &url], &cli_env, SHORT).await;
    p.check(out.success(), || format!("`dftg cancel JOB` failed: {}", sec.redact(&out.stderr)));
    if let Err(last) = api.poll_job(&f, &token, SHORT, |v| v["phase"] == "cancelled").await {
        p.add(format!("after `dftg cancel` the job is not cancelled: {last}"));
    }
    // delete a cancelled job
    let r = api.delete(&format!("/v1/jobs/{e}"), &token).await;
    p.check(r.status == 200 || r.status == 204, || format!("DELETE of a cancelled job: expected 200 or 204, got {}", r.short()));
    let r = api.job(&e, &token).await;
    p.check(r.status == 404, || format!("GET of a deleted job: expected 404, got {}", r.short()));
    // delete a running job: cancels it first, or 409 until it is cancelled
    let r = api.delete(&format!("/v1/jobs/{g}"), &token).await;
    if r.status == 409 {
        let r = api.post(&format!("/v1/jobs/{g}/cancel"), "", &token).await;
        p.check(is_2xx(r.status), || format!("cancel after a 409 on DELETE: {}", r.short()));
        if let Err(last) = api.poll_job(&g, &token, SHORT, |v| v["phase"] == "cancelled").await {
            p.add(format!("after cancel the running job is not cancelled: {last}"));
        }
        let r = api.delete(&format!("/v1/jobs/{g}"), &token).await;
        p.check(r.status == 200 || r.status == 204, || format!("DELETE of a job cancelled after a 409: {}", r.short()));
    } else {
        p.check(r.status == 200 || r.status == 204, || format!("DELETE of a running job: expected 200, 204 or 409, got {}", r.short()));
    }
    if let Err(last) = api.poll_http_status(&g, &token, 404, SHORT).await {
        p.add(format!("a deleted running job still answers: {last}"));
    }
    let r = api.delete("/v1/jobs/no-such-job", &token).await;
    p.check(r.status == 404, || format!("DELETE of an unknown job: expected 404, got {}", r.short()));
    if let Some(ids) = api.job_ids(&token).await {
        p.check(!ids.contains(&e) && !ids.contains(&g), || "deleted jobs are still listed".into());
    }

    // a restarted coordinator keeps deletions, cancellations and failures
    drop(coordinator.take());
    let (_coordinator2, url2) = c.spawn_listening("coordinator-restarted", &coordinator_args, &c.env()).await;
    let api2 = c.api(&url2);
    for (name, j) in [("E", &e), ("G", &g)] {
        let r = api2.job(j, &token).await;
        p.check(r.status == 404, || format!("after a restart the deleted job {name} answers {}", r.short()));
    }
    let r = api2.job(&f, &token).await;
    p.check(r.json()["phase"] == "cancelled", || format!("after a restart the cancelled job answers {}", r.short()));
    match api2.poll_final(&noann_job, &token, SHORT).await {
        Ok(v) => p.check(v["phase"] == "failed", || format!("after a restart the job without annotations is {}", v["phase"])),
        Err(last) => p.add(format!("after a restart the job without annotations never reached a final phase: {last}")),
    }

    // the corrupt plan shard is the test's own writing
    c.scan_for_leaks(&["/plan/"]);
    p.finish();
}
