//! Helpers shared by the process-level integration suites: `dftg` processes whose stdout and
//! stderr go to log files, a RabbitMQ vhost and user of a test's own, the S3 test server with a
//! synthetic corpus, an HTTP client that keeps every answer it got, and a scan of everything a
//! test saw (answers, logs, metrics, dead-letter reasons, CLI output, stored objects) for
//! secrets and for the text of local files.
//!
//! Synchronisation is by polling observable state (a log line, an HTTP answer, a queue depth)
//! with a deadline; no assertion depends on a polling interval.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dftg_runtime::s3_test_server::S3TestServer;

pub const BUCKET: &str = "dftg";
/// The coordinator's and workers' own store (`--store` / `DFTG_STORE_URL`).
pub const STORE: &str = "s3://dftg/jobs";
/// Where each test's corpus lies in the bucket.
pub const CORPUS: &str = "s3://dftg/corpus";
/// Bound on a dead-letter reason header (`x-dftg-reason`).
pub const MAX_REASON_BYTES: usize = 4096;
pub const FINAL_PHASES: [&str; 3] = ["done", "failed", "cancelled"];
/// Log filter of every dftg process under test: our crates at debug, libraries at info.
pub const LOG_FILTER: &str = "info,dftg=debug,dftg_pipeline=debug,dftg_runtime=debug,dftg_model=debug,dftg_core=debug";

/// The `dftg` binary under test: this build's, or `DFTG_TEST_BIN` (to replay a suite against
/// another build, e.g. the commit before a fix, and see which checks it fails).
pub fn dftg() -> String {
    std::env::var("DFTG_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dftg").to_string())
}

fn nonce() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{:x}{:x}{:x}", std::process::id(), nanos, SEQ.fetch_add(1, Ordering::SeqCst))
}

/// A `dftg` command with none of the caller's `DFTG_*` variables (a developer's shell must not
/// change what a test sees), and the given environment.
pub fn dftg_command(args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(dftg());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DFTG_") {
            cmd.env_remove(&k);
        }
    }
    cmd.args(args).envs(env.iter().cloned()).stdin(Stdio::null());
    cmd
}

/// `dftg ARGS` run to completion, its output kept.
pub fn dftg_output(args: &[&str]) -> std::process::Output {
    dftg_command(args, &[]).output().expect("run dftg")
}

/// `dftg ARGS`, which must succeed: its stdout (both streams in the failure message).
pub fn ok(args: &[&str]) -> String {
    let out = dftg_output(args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "dftg {args:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout
}

// ---------------------------------------------------------------------------------------------
// processes

/// A child process whose stdout and stderr go to one log file; killed when dropped.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `dftg ARGS` with its output in `<dir>/<name>.log` (a fresh file each time).
    pub fn spawn(dir: &Path, name: &str, args: &[&str], env: &[(String, String)]) -> Proc {
        let log = fresh_path(dir, name, "log");
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = dftg_command(args, env).stdout(out).stderr(err).spawn().unwrap_or_else(|e| panic!("spawn dftg {args:?}: {e}"));
        Proc { name: name.to_string(), log, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once it has exited; `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits for the "listening on http://ADDR" line and returns the URL (a wildcard address is
    /// replaced by loopback so the test can connect).
    pub async fn listening_url(&mut self, deadline: Duration) -> String {
        let start = Instant::now();
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| l.contains("listening on http://")) {
                let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("url").trim_end_matches([',', ')']);
                return url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://127.0.0.1:");
            }
            if let Some(st) = self.exited() {
                panic!("{} exited ({st}) before listening; its log ends:\n{}", self.name, self.log_tail(40));
            }
            assert!(start.elapsed() < deadline, "{} did not listen within {deadline:?}; its log ends:\n{}", self.name, self.log_tail(40));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fresh_path(dir: &Path, name: &str, ext: &str) -> PathBuf {
    let mut n = 0;
    loop {
        let p = if n == 0 { dir.join(format!("{name}.{ext}")) } else { dir.join(format!("{name}-{n}.{ext}")) };
        if !p.exists() {
            return p;
        }
        n += 1;
    }
}

pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// What a short-lived `dftg` command did.
#[derive(Debug)]
pub struct CliOutput {
    /// `None` when it was killed at the deadline.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn first_line(&self) -> String {
        self.stdout.lines().next().unwrap_or("").trim().to_string()
    }
}

/// Runs `dftg ARGS` to its end (killed at `deadline`), off the async runtime's threads.
pub async fn run_dftg(dir: &Path, args: &[&str], env: &[(String, String)], deadline: Duration) -> CliOutput {
    let (out_path, err_path) = (fresh_path(dir, "cli", "out"), fresh_path(dir, "cli", "err"));
    File::create(&err_path).expect("reserve");
    let out = File::create(&out_path).expect("cli stdout");
    let err = File::create(&err_path).expect("cli stderr");
    let mut child = dftg_command(args, env).stdout(out).stderr(err).spawn().unwrap_or_else(|e| panic!("spawn dftg {args:?}: {e}"));
    let (code, timed_out) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return (st.code(), false);
            }
            if start.elapsed() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return (None, true);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("cli runner");
    CliOutput { code, timed_out, stdout: read_lossy(&out_path), stderr: read_lossy(&err_path) }
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

pub fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// False (and a visible SKIPPED line) when no broker listens on 127.0.0.1:5672; under CI a
/// missing broker is a failure.
pub fn broker_available() -> bool {
    let up = std::net::TcpStream::connect_timeout(&"127.0.0.1:5672".parse().expect("addr"), Duration::from_secs(2)).is_ok();
    if !up {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("RabbitMQ is not reachable at 127.0.0.1:5672 (the test script starts it)");
        }
        eprintln!("SKIPPED: RabbitMQ is not reachable at 127.0.0.1:5672");
    }
    up
}

/// A vhost of its own (guest may use it, for the test's own connection), deleted at the end.
pub struct Vhost(pub String);

impl Vhost {
    pub fn new(tag: &str) -> Self {
        let name = format!("dftg-test-{tag}-{}", std::process::id());
        rabbitmqctl(&["delete_vhost", &name]);
        assert!(rabbitmqctl(&["add_vhost", &name]), "rabbitmqctl add_vhost");
        assert!(rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]), "rabbitmqctl set_permissions");
        Vhost(name)
    }

    /// The test's own connection (guest).
    pub fn guest_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.0)
    }

    /// Messages in `queue`, ready and unacknowledged (`None` when the queue does not exist).
    pub async fn messages(&self, queue: &str) -> Option<u64> {
        let (vhost, queue) = (self.0.clone(), queue.to_string());
        tokio::task::spawn_blocking(move || {
            let out = Command::new("rabbitmqctl")
                .args(["list_queues", "-p", &vhost, "-q", "--no-table-headers", "name", "messages"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(queue.as_str())).then(|| it.next().and_then(|n| n.parse().ok())).flatten()
            })
        })
        .await
        .ok()
        .flatten()
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.0]);
    }
}

/// A RabbitMQ user of the test's own with a distinctive password, allowed on one vhost;
/// deleted at the end.
pub struct AmqpUser {
    pub name: String,
    pub password: String,
}

impl AmqpUser {
    pub fn new(tag: &str, vhost: &Vhost) -> Self {
        let name = format!("dftg-test-{tag}-{}", std::process::id());
        let password = format!("amqp-SECRET-{}", nonce());
        rabbitmqctl(&["delete_user", &name]);
        assert!(rabbitmqctl(&["add_user", &name, &password]), "rabbitmqctl add_user");
        assert!(rabbitmqctl(&["set_permissions", "-p", &vhost.0, &name, ".*", ".*", ".*"]), "rabbitmqctl set_permissions");
        AmqpUser { name, password }
    }

    pub fn url(&self, vhost: &Vhost) -> String {
        format!("amqp://{}:{}@127.0.0.1:5672/{}", self.name, self.password, vhost.0)
    }
}

impl Drop for AmqpUser {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_user", &self.name]);
    }
}

// ---------------------------------------------------------------------------------------------
// secrets and evidence

/// Strings that must never show outside the place they were given: (what it is, its text).
pub struct Secrets {
    pub api_key: String,
    pub openai_key: String,
    pub canary: String,
    pub token: String,
    pub token2: String,
    pub wrong_token: String,
    pub amqp_password: String,
    pub endpoint_password: String,
    /// Text of local files (the first line of /etc/passwd).
    pub file_markers: Vec<String>,
}

impl Secrets {
    pub fn new(amqp_password: &str) -> Self {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let mut file_markers = vec!["root:x:0:0".to_string()];
        if let Some(first) = passwd.lines().next().filter(|l| l.len() >= 8) {
            file_markers.push(first.to_string());
        }
        Secrets {
            api_key: format!("sk-SECRET-api-{}", nonce()),
            openai_key: format!("sk-SECRET-openai-{}", nonce()),
            canary: format!("canary-SECRET-{}", nonce()),
            token: format!("tok-SECRET-a-{}", nonce()),
            token2: format!("tok-SECRET-b-{}", nonce()),
            wrong_token: format!("wrong-SECRET-{}", nonce()),
            amqp_password: amqp_password.to_string(),
            endpoint_password: format!("endpw-SECRET-{}", nonce()),
            file_markers,
        }
    }

    /// Every needle with its label.
    pub fn needles(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("the model API key (DFTG_API_KEY)".to_string(), self.api_key.clone()),
            ("OPENAI_API_KEY".to_string(), self.openai_key.clone()),
            ("an environment variable (/proc/self/environ)".to_string(), self.canary.clone()),
            ("an API token".to_string(), self.token.clone()),
            ("the second API token".to_string(), self.token2.clone()),
            ("a presented (wrong) bearer token".to_string(), self.wrong_token.clone()),
            ("the AMQP password".to_string(), self.amqp_password.clone()),
            ("the AWS secret access key".to_string(), dftg_runtime::s3_test_server::SECRET_KEY.to_string()),
            ("an endpoint password (user:pw@)".to_string(), self.endpoint_password.clone()),
        ];
        for m in &self.file_markers {
            v.push(("the text of /etc/passwd".to_string(), m.clone()));
        }
        v
    }

    /// The secrets every dftg process under test holds in its environment.
    pub fn process_env(&self) -> Vec<(String, String)> {
        vec![
            ("DFTG_API_KEY".into(), self.api_key.clone()),
            ("OPENAI_API_KEY".into(), self.openai_key.clone()),
            ("DFTG_TEST_CANARY".into(), self.canary.clone()),
        ]
    }

    /// `text` with every secret replaced by its label (for failure messages).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (label, needle) in self.needles() {
            if !needle.is_empty() {
                out = out.replace(&needle, &format!("<{label}>"));
            }
        }
        out
    }

    /// The findings in `text` (labelled, with the secret itself blanked out).
    pub fn scan(&self, what: &str, text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (label, needle) in self.needles() {
            if needle.is_empty() {
                continue;
            }
            if let Some(at) = text.find(&needle) {
                let from = floor_char(text, at.saturating_sub(100));
                let to = floor_char(text, (at + needle.len() + 100).min(text.len()));
                let context = text[from..to].replace(&needle, &format!("<{label}>")).replace('\n', "⏎");
                found.push(format!("{label} appears in {what}: …{context}…"));
            }
        }
        found
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Everything a test saw from the processes under test, to be scanned for leaks at the end.
#[derive(Clone, Default)]
pub struct Evidence(Arc<Mutex<Seen>>);

/// (where, text) of everything seen, and the texts already recorded.
type Seen = (Vec<(String, String)>, HashSet<String>);

impl Evidence {
    pub fn add(&self, what: impl Into<String>, text: impl Into<String>) {
        let (what, text) = (what.into(), text.into());
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.1.insert(text.clone()) {
            g.0.push((what, text));
        }
    }

    pub fn items(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }
}

/// Failed checks, collected so one run shows every broken item; `finish` panics with all.
#[derive(Default)]
pub struct Problems(Mutex<Vec<String>>);

impl Problems {
    pub fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let w = what();
            eprintln!("PROBLEM: {w}");
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(w);
        }
    }

    pub fn add(&self, what: impl Into<String>) {
        self.check(false, || what.into());
    }

    pub fn extend(&self, found: Vec<String>) {
        for f in found {
            self.add(f);
        }
    }

    pub fn finish(&self) {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !all.is_empty() {
            panic!("{} problem(s):\n- {}", all.len(), all.join("\n- "));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One answer: status, headers and body as text (status 0: no answer at all).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body, cut for messages.
    pub fn short(&self) -> String {
        let end = floor_char(&self.body, self.body.len().min(400));
        format!("{} {}", self.status, &self.body[..end])
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A client of one coordinator that keeps every answer as evidence.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
    evidence: Evidence,
}

impl Api {
    pub fn new(base: &str, evidence: &Evidence) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
        Api { base: base.trim_end_matches('/').to_string(), http, evidence: evidence.clone() }
    }

    /// `auth` is the whole Authorization header value (see [`bearer`]), or none.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<&str>, auth: Option<&str>) -> Reply {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) };
        let mut req = self.http.request(method.clone(), &url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let r = match req.send().await {
            Ok(r) => r,
            // status 0: no answer (the process is gone or hangs); checks report it, polls go on
            Err(e) => return Reply { status: 0, headers: String::new(), body: format!("no answer to {method} {url}: {e}") },
        };
        let status = r.status().as_u16();
        let headers =
            r.headers().iter().map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes()))).collect::<Vec<_>>().join("\n");
        let body = r.text().await.unwrap_or_default();
        self.evidence.add(format!("the answer to {method} {path} ({status})"), format!("{headers}\n\n{body}"));
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(reqwest::Method::GET, path, None, Some(&bearer(token))).await
    }

    pub async fn post(&self, path: &str, body: &str, token: &str) -> Reply {
        self.call(reqwest::Method::POST, path, Some(body), Some(&bearer(token))).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(reqwest::Method::DELETE, path, None, Some(&bearer(token))).await
    }

    /// Submits a spec that must be accepted; returns the job id.
    pub async fn submit(&self, spec: &str, token: &str) -> String {
        let r = self.post("/v1/jobs", spec, token).await;
        assert!(r.status == 201 || r.status == 200, "submit refused: {}", r.short());
        r.json()["job_id"].as_str().unwrap_or_else(|| panic!("no job_id in {}", r.short())).to_string()
    }

    pub async fn job(&self, job: &str, token: &str) -> Reply {
        self.get(&format!("/v1/jobs/{job}"), token).await
    }

    /// Polls the job's status until `f` holds; at the deadline, `Err` with the last answer.
    pub async fn poll_job(
        &self,
        job: &str,
        token: &str,
        deadline: Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value, String> {
        let start = Instant::now();
        loop {
            let r = self.job(job, token).await;
            if r.status == 200 {
                let v = r.json();
                if f(&v) {
                    return Ok(v);
                }
            }
            if start.elapsed() >= deadline {
                return Err(r.short());
            }
            // polling an HTTP API; no assertion depends on the interval
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the job's status until `f` holds; panics at the deadline with the last status.
    pub async fn wait_job(
        &self,
        job: &str,
        token: &str,
        what: &str,
        deadline: Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        match self.poll_job(job, token, deadline, f).await {
            Ok(v) => v,
            Err(last) => panic!("timed out after {deadline:?} waiting for {what} of job {}; last answer: {last}", short_id(job)),
        }
    }

    /// Polls until the job's phase is one of `done`, `failed`, `cancelled`.
    pub async fn poll_final(&self, job: &str, token: &str, deadline: Duration) -> Result<serde_json::Value, String> {
        self.poll_job(job, token, deadline, |s| FINAL_PHASES.contains(&s["phase"].as_str().unwrap_or(""))).await
    }

    /// Waits for the job to end and requires `done`.
    pub async fn wait_done(&self, job: &str, token: &str, deadline: Duration) -> serde_json::Value {
        match self.poll_final(job, token, deadline).await {
            Ok(v) if v["phase"] == "done" => v,
            Ok(v) => panic!("job {} ended {} instead of done: {v}", short_id(job), v["phase"]),
            Err(last) => panic!("job {} did not end within {deadline:?}; last answer: {last}", short_id(job)),
        }
    }

    /// Polls `GET /v1/jobs/{job}` until it answers `status`.
    pub async fn poll_http_status(&self, job: &str, token: &str, status: u16, deadline: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let r = self.job(job, token).await;
            if r.status == status {
                return Ok(());
            }
            if start.elapsed() >= deadline {
                return Err(r.short());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The job ids the coordinator lists.
    pub async fn job_ids(&self, token: &str) -> Option<Vec<String>> {
        let r = self.get("/v1/jobs", token).await;
        if r.status != 200 {
            return None;
        }
        let v = r.json();
        let list = v["jobs"].as_array().or_else(|| v.as_array())?.clone();
        Some(list.iter().filter_map(|j| j["job_id"].as_str().map(str::to_string)).collect())
    }
}

pub fn short_id(id: &str) -> String {
    if id.len() > 60 {
        format!("{}…({} bytes)", &id[..floor_char(id, 40)], id.len())
    } else {
        id.to_string()
    }
}

/// A free loopback port (for processes that do not print their address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------------------------
// a service the jobs must not reach

/// A stand-in for an internal service (cloud metadata, an admin API): an HTTP server on a
/// loopback port that records every request (its head, Authorization included).
pub struct InternalService {
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl InternalService {
    pub async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind internal service");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, peer)) = listener.accept().await else { return };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    let read = async {
                        while head.len() < 64 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
                    let text = if head.is_empty() {
                        format!("(a connection from {peer}, nothing sent)")
                    } else {
                        String::from_utf8_lossy(&head).into_owned()
                    };
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(text);
                    let body = "{\"internal\":\"reached\"}";
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        InternalService { url, requests, task }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a request carried an Authorization header.
    pub fn saw_authorization(&self) -> bool {
        self.requests().iter().any(|r| r.to_ascii_lowercase().contains("\nauthorization:"))
    }
}

impl Drop for InternalService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// a test's services

pub fn copy_dir(from: &Path, to: &Path) {
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

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A job spec on `corpus` with an OpenAI-compatible `endpoint`.
pub fn job_toml(corpus: &str, endpoint: &str, shard_size: usize, seed: u64) -> String {
    format!(
        "seed = {seed}\nshard_size = {shard_size}\n[corpus]\npath = \"{corpus}\"\n[model]\nkind = \"openai\"\nendpoint = \"{endpoint}\"\nname = \"sim\"\nmax_in_flight = 8\ntimeout_secs = 10\n"
    )
}

/// One test's world: a broker vhost and user, the S3 server holding a small corpus, secrets in
/// every dftg process's environment, and what the test saw.
pub struct Cluster {
    pub secrets: Secrets,
    pub evidence: Evidence,
    pub problems: Problems,
    /// Logs of the processes under test (scanned at the end).
    pub logs: Mutex<Vec<PathBuf>>,
    pub s3: S3TestServer,
    /// The corpus on local disk (for the simulator); the same files are under `corpus/` in the bucket.
    pub corpus: PathBuf,
    pub work: tempfile::TempDir,
    pub user: AmqpUser,
    pub vhost: Vhost,
}

impl Cluster {
    pub async fn new(tag: &str, images: usize, seed: u64) -> Self {
        let vhost = Vhost::new(tag);
        let user = AmqpUser::new(tag, &vhost);
        let secrets = Secrets::new(&user.password);
        let s3 = S3TestServer::start(BUCKET).await.expect("s3 test server");
        let work = tempfile::tempdir().expect("temp dir");
        let corpus = work.path().join("corpus");
        dftg_pipeline::synth::write_corpus_dir(&corpus, images, seed).expect("corpus");
        copy_dir(&corpus, &s3.root().join(BUCKET).join("corpus"));
        std::fs::create_dir_all(work.path().join("logs")).expect("logs dir");
        Cluster {
            secrets,
            evidence: Evidence::default(),
            problems: Problems::default(),
            logs: Mutex::new(Vec::new()),
            s3,
            corpus,
            work,
            user,
            vhost,
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.work.path().to_path_buf()
    }

    pub fn bucket_dir(&self) -> PathBuf {
        self.s3.root().join(BUCKET)
    }

    /// The environment of every dftg process under test: broker (the test user, password in
    /// the URL), store, S3 access, secrets, log level.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("DFTG_AMQP_URL".to_string(), self.user.url(&self.vhost)),
            ("DFTG_STORE_URL".to_string(), STORE.to_string()),
            ("DFTG_LOG".to_string(), LOG_FILTER.to_string()),
        ];
        env.extend(self.s3.aws_env());
        env.extend(self.secrets.process_env());
        env
    }

    /// `self.env()` plus `extra`.
    pub fn env_with(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    /// A token file with both API tokens (and a blank line, which must grant nothing).
    pub fn token_file(&self) -> PathBuf {
        let p = self.work.path().join("tokens");
        std::fs::write(&p, format!("{}\n\n{}\n", self.secrets.token, self.secrets.token2)).expect("token file");
        p
    }

    /// A dftg process under test (its log is scanned at the end).
    pub fn spawn(&self, name: &str, args: &[&str], env: &[(String, String)]) -> Proc {
        let p = Proc::spawn(&self.work.path().join("logs"), name, args, env);
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).push(p.log.clone());
        p
    }

    pub async fn spawn_listening(&self, name: &str, args: &[&str], env: &[(String, String)]) -> (Proc, String) {
        let mut p = self.spawn(name, args, env);
        let url = p.listening_url(Duration::from_secs(60)).await;
        (p, url)
    }

    /// The model simulator on this test's corpus (a fixture: no secrets, its log not scanned).
    pub async fn sim(&self, extra: &[&str]) -> (Proc, String) {
        let corpus = self.corpus.to_str().expect("utf-8").to_string();
        let mut args = vec!["sim", "--listen", "127.0.0.1:0", "--corpus", &corpus, "--profile", "kitchenware"];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn(&self.work.path().join("logs"), "sim", &args, &[]);
        let url = p.listening_url(Duration::from_secs(60)).await;
        (p, url)
    }

    pub fn api(&self, base: &str) -> Api {
        Api::new(base, &self.evidence)
    }

    /// Runs a dftg command under test; its output is evidence.
    pub async fn cli(&self, args: &[&str], env: &[(String, String)], deadline: Duration) -> CliOutput {
        let out = run_dftg(self.work.path(), args, env, deadline).await;
        let shown: Vec<&str> = args.iter().map(|a| if a.len() > 80 { "…" } else { *a }).collect();
        self.evidence.add(format!("the output of `dftg {}`", shown.join(" ")), format!("{}\n{}", out.stdout, out.stderr));
        out
    }

    /// The test's own broker connection (guest on the test's vhost).
    pub async fn queue(&self) -> dftg_runtime::AmqpQueue {
        dftg_runtime::AmqpQueue::connect(&self.vhost.guest_url()).await.expect("amqp")
    }

    /// Scans the answers, CLI outputs, dead-letter reasons and metrics the test saw, every log
    /// of a process under test, and every object in the bucket (except paths containing one of
    /// `skip`, which the test wrote itself) for secrets and file text.
    pub fn scan_for_leaks(&self, skip: &[&str]) {
        let mut found = Vec::new();
        let evidence = self.evidence.items();
        for (what, text) in &evidence {
            found.extend(self.secrets.scan(what, text));
        }
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut log_lines = 0;
        for log in &logs {
            let name = log.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            // the first line showing each secret, and how many lines do
            let mut first: Vec<(String, String, usize)> = Vec::new();
            for (i, line) in read_lossy(log).lines().enumerate() {
                log_lines += 1;
                for finding in self.secrets.scan(&format!("line {} of the log of {name}", i + 1), line) {
                    let label = finding.split(" appears in ").next().unwrap_or("").to_string();
                    match first.iter_mut().find(|(l, _, _)| *l == label) {
                        Some(entry) => entry.2 += 1,
                        None => first.push((label, finding, 1)),
                    }
                }
            }
            found.extend(first.into_iter().map(|(_, f, n)| if n > 1 { format!("{f} (and {} more lines)", n - 1) } else { f }));
        }
        let bucket = self.s3.root().to_path_buf();
        let mut objects = 0;
        for f in files_under(&bucket) {
            let rel = f.strip_prefix(&bucket).unwrap_or(&f).to_string_lossy().into_owned();
            if skip.iter().any(|s| rel.contains(s)) || rel.ends_with(".png") {
                continue;
            }
            objects += 1;
            found.extend(self.secrets.scan(&format!("the stored object {rel}"), &read_lossy(&f)));
        }
        eprintln!(
            "leak scan: {} answers / outputs / reasons, {log_lines} log lines of {} processes, {objects} stored objects; {} finding(s)",
            evidence.len(),
            logs.len(),
            found.len()
        );
        // one finding per (secret, place kind) is enough to read; keep them all but dedup text
        let mut seen = HashSet::new();
        found.retain(|f| seen.insert(f.clone()));
        self.problems.extend(found);
    }
}
