//! The HTTP face of the simulator: OpenAI chat completions over axum, with latency and
//! fault injection, replay mode and the truth log.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ahash::AHashMap;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::corpus::SimCorpus;
use super::engine::{Simulator, TruthLogEntry};
use super::profile::SimProfile;
use super::vision::{SimVision, SimVisionConfig};
use super::vision_server::{self, VisionService};
use super::writer::{self, SimWriter, SimWriterConfig, WriterLog, WriterLogEntry, WriterRequest};
use super::SimError;
use crate::api::{ChatRequest, ChatResponse, Choice, ContentPart, MessageContent, ModelCard, ModelList, ResponseMessage, Usage};
use dftg_core::seed::StableHasher;

/// Added latency per chat request. Zero latency never sleeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    #[default]
    None,
    /// Always `ms`.
    Fixed { ms: u64 },
    /// `base_ms` plus uniform `[0, jitter_ms]`.
    Uniform { base_ms: u64, jitter_ms: u64 },
    /// Log-normal with the given median and sigma (of the underlying normal).
    LogNormal { median_ms: f64, sigma: f64 },
}

impl Latency {
    fn validate(&self) -> Result<(), SimError> {
        if let Latency::LogNormal { median_ms, sigma } = self {
            if !median_ms.is_finite() || *median_ms < 0.0 || !sigma.is_finite() || *sigma < 0.0 {
                return Err(SimError::Config {
                    field: "latency".into(),
                    reason: format!("log-normal needs median_ms >= 0 and sigma >= 0, got {median_ms} and {sigma}"),
                });
            }
        }
        Ok(())
    }

    /// The delay of request number `n` (deterministic in `seed` and `n`).
    pub fn draw(&self, seed: u64, n: u64) -> Duration {
        let u = |i: u64| StableHasher::new("latency").u64(seed).u64(n).u64(i).unit();
        match *self {
            Latency::None => Duration::ZERO,
            Latency::Fixed { ms } => Duration::from_millis(ms),
            Latency::Uniform { base_ms, jitter_ms } => {
                let j = if jitter_ms == 0 { 0 } else { (u(0) * (jitter_ms as f64 + 1.0)) as u64 };
                Duration::from_millis(base_ms.saturating_add(j.min(jitter_ms)))
            }
            Latency::LogNormal { median_ms, sigma } => {
                // Box–Muller.
                let (u1, u2) = (u(0).max(f64::MIN_POSITIVE), u(1));
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                let ms = median_ms * (sigma * z).exp();
                // a NaN (from a NaN or infinite parameter) survives clamp and would panic here
                Duration::try_from_secs_f64((ms / 1000.0).clamp(0.0, 3600.0)).unwrap_or(Duration::ZERO)
            }
        }
    }
}

/// Fault injection. Probabilities are per chat request, drawn from a seeded counter (so a
/// retry can succeed); sticky images fail every time (chosen by key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// HTTP 500 with an OpenAI error body.
    pub http_500: f64,
    /// HTTP 503 with an OpenAI error body.
    pub http_503: f64,
    /// Hold the request `hang_ms` before answering (longer than the client's timeout).
    pub timeout: f64,
    pub hang_ms: u64,
    /// HTTP 200 whose body is not valid JSON.
    pub malformed_json: f64,
    /// HTTP 200 with valid JSON but no `choices`.
    pub missing_choices: f64,
    /// Fraction of images (by key) that fail on every request with `sticky_status`.
    pub sticky_fraction: f64,
    pub sticky_status: u16,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            http_500: 0.0,
            http_503: 0.0,
            timeout: 0.0,
            hang_ms: 30_000,
            malformed_json: 0.0,
            missing_choices: 0.0,
            sticky_fraction: 0.0,
            sticky_status: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Http500,
    Http503,
    Timeout,
    MalformedJson,
    MissingChoices,
}

impl Faults {
    fn validate(&self) -> Result<(), SimError> {
        let ps = [
            ("faults.http_500", self.http_500),
            ("faults.http_503", self.http_503),
            ("faults.timeout", self.timeout),
            ("faults.malformed_json", self.malformed_json),
            ("faults.missing_choices", self.missing_choices),
            ("faults.sticky_fraction", self.sticky_fraction),
        ];
        for (field, p) in ps {
            if !(0.0..=1.0).contains(&p) {
                return Err(SimError::Config { field: field.into(), reason: format!("{p} is not a probability in [0, 1]") });
            }
        }
        let sum: f64 = ps[..5].iter().map(|(_, p)| p).sum();
        if sum > 1.0 + 1e-9 {
            return Err(SimError::Config {
                field: "faults".into(),
                reason: format!("per-request fault probabilities sum to {sum}, more than 1"),
            });
        }
        if !(400..=599).contains(&self.sticky_status) {
            return Err(SimError::Config {
                field: "faults.sticky_status".into(),
                reason: format!("{} is not an HTTP error status", self.sticky_status),
            });
        }
        Ok(())
    }

    fn draw(&self, seed: u64, n: u64) -> Option<Fault> {
        let u = StableHasher::new("fault").u64(seed).u64(n).unit();
        let mut acc = 0.0;
        for (p, f) in [
            (self.http_500, Fault::Http500),
            (self.http_503, Fault::Http503),
            (self.timeout, Fault::Timeout),
            (self.malformed_json, Fault::MalformedJson),
            (self.missing_choices, Fault::MissingChoices),
        ] {
            acc += p;
            if u < acc {
                return Some(f);
            }
        }
        None
    }

    /// Whether image `key` always fails under this seed.
    pub fn is_sticky(&self, seed: u64, key: &str) -> bool {
        self.sticky_fraction > 0.0 && StableHasher::new("sticky").u64(seed).str(key).unit() < self.sticky_fraction
    }
}

/// Recorded real responses by image key (replay mode).
#[derive(Debug, Clone, Default)]
pub struct ReplayCaptions {
    by_image: AHashMap<String, String>,
}

#[derive(Deserialize)]
struct ReplayLine {
    #[serde(alias = "image", alias = "id", alias = "key")]
    image_id: serde_json::Value,
    #[serde(alias = "text", alias = "response")]
    caption: String,
}

impl ReplayCaptions {
    /// Reads JSONL lines `{"image_id": 40468, "caption": "..."}`; the first line of an image wins.
    pub fn from_reader(reader: impl BufRead, origin: &str) -> Result<Self, SimError> {
        let mut by_image = AHashMap::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| SimError::Replay { origin: origin.into(), line: i + 1, reason: e.to_string() })?;
            if line.trim().is_empty() {
                continue;
            }
            let l: ReplayLine =
                serde_json::from_str(&line).map_err(|e| SimError::Replay { origin: origin.into(), line: i + 1, reason: e.to_string() })?;
            let key = dftg_core::truth::image_key(&l.image_id).ok_or_else(|| SimError::Replay {
                origin: origin.into(),
                line: i + 1,
                reason: "\"image_id\" must be a string or a number".into(),
            })?;
            by_image.entry(key).or_insert(l.caption);
        }
        Ok(ReplayCaptions { by_image })
    }

    pub fn from_jsonl_file(path: impl AsRef<Path>) -> Result<Self, SimError> {
        let path = path.as_ref();
        let f = std::fs::File::open(path).map_err(|source| SimError::Io { path: path.to_path_buf(), source })?;
        Self::from_reader(std::io::BufReader::new(f), &path.display().to_string())
    }

    pub fn insert(&mut self, key: impl Into<String>, caption: impl Into<String>) {
        self.by_image.insert(key.into(), caption.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.by_image.get(key).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_image.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_image.is_empty()
    }
}

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every choice (with the image key and the prompt).
    pub seed: u64,
    pub profile: SimProfile,
    /// Name served by `/v1/models` and echoed in responses (any requested name is accepted).
    pub model_name: String,
    pub latency: Latency,
    pub faults: Faults,
    /// Where to write the truth log (JSONL, truncated at start); the vision and writer logs go
    /// beside it (`<stem>-vision.jsonl`, `sim-writer-truth.jsonl`).
    pub truth_log: Option<PathBuf>,
    /// Serve these recorded captions instead of simulated descriptions.
    pub replay: Option<Arc<ReplayCaptions>>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Errors of the simulated detector and judge (see [`super::SimVision`]).
    pub vision: SimVisionConfig,
    /// Mistakes of the simulated writer (see [`super::SimWriter`]).
    pub writer: SimWriterConfig,
}

impl SimConfig {
    pub fn new(profile: SimProfile) -> Self {
        SimConfig {
            seed: 0,
            model_name: format!("dftg-sim-{}", profile.name),
            profile,
            latency: Latency::None,
            faults: Faults::default(),
            truth_log: None,
            replay: None,
            max_body_bytes: 64 << 20,
            vision: SimVisionConfig::default(),
            writer: SimWriterConfig::default(),
        }
    }

    pub fn with_writer(mut self, writer: SimWriterConfig) -> Self {
        self.writer = writer;
        self
    }

    pub fn with_vision(mut self, vision: SimVisionConfig) -> Self {
        self.vision = vision;
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn with_latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    pub fn with_truth_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.truth_log = Some(path.into());
        self
    }

    pub fn with_replay(mut self, replay: ReplayCaptions) -> Self {
        self.replay = Some(Arc::new(replay));
        self
    }

    pub fn with_model_name(mut self, name: impl Into<String>) -> Self {
        self.model_name = name.into();
        self
    }
}

/// What the simulator has served so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Chat-completion requests received.
    pub requests: u64,
    /// Successful replies (descriptions, answers, replays).
    pub replies: u64,
    pub descriptions: u64,
    pub yes_no_answers: u64,
    pub replayed: u64,
    /// 400s: unparsable requests, missing or undecodable images.
    pub bad_requests: u64,
    /// 400s for image content the corpus does not know.
    pub unknown_images: u64,
    pub http_500: u64,
    pub http_503: u64,
    pub timeouts: u64,
    pub malformed_json: u64,
    pub missing_choices: u64,
    pub sticky_failures: u64,
    /// Requests that slept for latency (zero latency never does).
    pub latency_sleeps: u64,
    pub truth_log_write_errors: u64,
    /// Writer replies (also counted in `replies`), and those that carry a mistake.
    #[serde(default)]
    pub writer_replies: u64,
    #[serde(default)]
    pub writer_mistakes: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    replies: AtomicU64,
    descriptions: AtomicU64,
    yes_no_answers: AtomicU64,
    replayed: AtomicU64,
    bad_requests: AtomicU64,
    unknown_images: AtomicU64,
    http_500: AtomicU64,
    http_503: AtomicU64,
    timeouts: AtomicU64,
    malformed_json: AtomicU64,
    missing_choices: AtomicU64,
    sticky_failures: AtomicU64,
    latency_sleeps: AtomicU64,
    truth_log_write_errors: AtomicU64,
    writer_replies: AtomicU64,
    writer_mistakes: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> SimStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            requests: g(&self.requests),
            replies: g(&self.replies),
            descriptions: g(&self.descriptions),
            yes_no_answers: g(&self.yes_no_answers),
            replayed: g(&self.replayed),
            bad_requests: g(&self.bad_requests),
            unknown_images: g(&self.unknown_images),
            http_500: g(&self.http_500),
            http_503: g(&self.http_503),
            timeouts: g(&self.timeouts),
            malformed_json: g(&self.malformed_json),
            missing_choices: g(&self.missing_choices),
            sticky_failures: g(&self.sticky_failures),
            latency_sleeps: g(&self.latency_sleeps),
            truth_log_write_errors: g(&self.truth_log_write_errors),
            writer_replies: g(&self.writer_replies),
            writer_mistakes: g(&self.writer_mistakes),
        }
    }
}

#[derive(Default)]
struct TruthLog {
    seen: HashSet<(String, String)>,
    entries: Vec<TruthLogEntry>,
    file: Option<std::fs::File>,
}

struct AppState {
    sim: Simulator,
    config: SimConfig,
    counter: AtomicU64,
    log: Mutex<TruthLog>,
    stats: Counters,
    shutdown: watch::Receiver<bool>,
    vision: Arc<VisionService>,
    writer: SimWriter,
    writer_log: Mutex<WriterLog>,
}

impl AppState {
    /// A writer reply, logged with the request's id.
    fn write(&self, req: &WriterRequest, headers: &HeaderMap) -> Response {
        let reply = self.writer.write(&req.facts, &req.content, req.attempt);
        bump(&self.stats.replies);
        bump(&self.stats.writer_replies);
        if reply.mistake.is_some() {
            bump(&self.stats.writer_mistakes);
        }
        let entry = WriterLogEntry { request_id: writer::request_id(headers), mistake: reply.mistake };
        let mut log = match self.writer_log.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = log.record(entry) {
            bump(&self.stats.truth_log_write_errors);
            tracing::error!(error = %e, "simulator: cannot write the writer log");
        }
        drop(log);
        writer::completion(&self.config.model_name, self.config.seed, req, reply.text)
    }

    /// Sleeps `d`, or less if the simulator shuts down; true when it shut down.
    async fn pause(&self, d: Duration) -> bool {
        let mut rx = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = rx.wait_for(|v| *v) => true,
        }
    }

    fn record(&self, entry: &TruthLogEntry) {
        let mut log = match self.log.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !log.seen.insert((entry.image.clone(), entry.prompt.clone())) {
            return;
        }
        if let Some(f) = log.file.as_mut() {
            let written = serde_json::to_vec(entry).map_err(std::io::Error::other).and_then(|mut line| {
                line.push(b'\n');
                f.write_all(&line)
            });
            if let Err(e) = written {
                bump(&self.stats.truth_log_write_errors);
                tracing::error!(error = %e, "simulator: cannot write the truth log");
            }
        }
        log.entries.push(entry.clone());
    }
}

/// A running simulator. Dropping it shuts the server down too.
pub struct SimHandle {
    /// Listening address; the OpenAI base URL is `http://{addr}/v1`.
    pub addr: SocketAddr,
    state: Arc<AppState>,
    shutdown_tx: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl SimHandle {
    /// `http://{addr}/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn model_name(&self) -> &str {
        &self.state.config.model_name
    }

    /// The truth log so far, in the order entries were first produced.
    pub fn truth_log_entries(&self) -> Vec<TruthLogEntry> {
        match self.state.log.lock() {
            Ok(g) => g.entries.clone(),
            Err(poisoned) => poisoned.into_inner().entries.clone(),
        }
    }

    pub fn stats(&self) -> SimStats {
        self.state.stats.snapshot()
    }

    /// The simulated model (same decisions as the server, without HTTP).
    pub fn simulator(&self) -> &Simulator {
        &self.state.sim
    }

    /// The simulated detector and judge: their decisions so far (see [`VisionService`]).
    pub fn vision(&self) -> &VisionService {
        &self.state.vision
    }

    /// The simulated writer (same replies as the server, without HTTP).
    pub fn writer(&self) -> &SimWriter {
        &self.state.writer
    }

    /// The writer's log so far, in the order replies were given.
    pub fn writer_log_entries(&self) -> Vec<WriterLogEntry> {
        match self.state.writer_log.lock() {
            Ok(g) => g.entries.clone(),
            Err(poisoned) => poisoned.into_inner().entries.clone(),
        }
    }

    /// Whether image `key` fails on every request.
    pub fn is_sticky(&self, key: &str) -> bool {
        self.state.config.faults.is_sticky(self.state.config.seed, key)
    }

    /// Stops accepting, cancels hanging requests and waits for the server to finish.
    pub async fn shutdown(mut self) -> Result<(), SimError> {
        let _ = self.shutdown_tx.send(true);
        match self.task.take() {
            Some(task) => match task.await {
                Ok(r) => r.map_err(SimError::Serve),
                Err(e) => Err(SimError::Serve(std::io::Error::other(e.to_string()))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

/// Binds `addr` and starts the simulator there.
pub async fn start_on(addr: SocketAddr, corpus: impl Into<Arc<SimCorpus>>, config: SimConfig) -> Result<SimHandle, SimError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(SimError::Serve)?;
    start(corpus, config, listener).await
}

/// Starts the simulator on `listener` (e.g. bound to `127.0.0.1:0`).
pub async fn start(corpus: impl Into<Arc<SimCorpus>>, config: SimConfig, listener: tokio::net::TcpListener) -> Result<SimHandle, SimError> {
    config.faults.validate()?;
    config.latency.validate()?;
    if config.model_name.trim().is_empty() {
        return Err(SimError::Config { field: "model_name".into(), reason: "must not be empty".into() });
    }
    let corpus: Arc<SimCorpus> = corpus.into();
    let sim = Simulator::new(corpus.clone(), config.profile.clone(), config.seed)?;
    let vision = SimVision::new(corpus, config.seed, config.vision.clone())?;
    let sim_writer = SimWriter::new(config.seed, config.writer.clone())?;
    let file = match &config.truth_log {
        // append: a resumed job keeps what an earlier run of the simulator logged
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| SimError::Io { path: path.clone(), source })?,
        ),
        None => None,
    };
    // the detector's and judge's decisions go beside it, in `<stem>-vision.jsonl`: the truth
    // log keeps its one shape (what the subject model hallucinated, per image)
    let vision_log = match &config.truth_log {
        Some(path) => {
            let vision_path = vision_log_path(path);
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&vision_path)
                    .map_err(|source| SimError::Io { path: vision_path.clone(), source })?,
            )
        }
        None => None,
    };
    let vision = Arc::new(VisionService::new(vision, vision_log));
    // after the truth log: an unwritable directory is reported by the truth log's path
    let writer_log = WriterLog::open(config.truth_log.as_deref())?;
    let addr = listener.local_addr().map_err(SimError::Serve)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let max_body = config.max_body_bytes;
    let state = Arc::new(AppState {
        sim,
        config,
        counter: AtomicU64::new(0),
        log: Mutex::new(TruthLog { file, ..TruthLog::default() }),
        stats: Counters::default(),
        shutdown: shutdown_rx.clone(),
        vision: vision.clone(),
        writer: sim_writer,
        writer_log: Mutex::new(writer_log),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .merge(vision_server::routes(vision))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state.clone());
    let mut rx = shutdown_rx;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
    });
    tracing::info!(%addr, profile = %state.config.profile.name, "model simulator listening");
    Ok(SimHandle { addr, state, shutdown_tx, task: Some(task) })
}

fn error_response(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"message": message.into(), "type": kind, "code": null}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn bad_request(state: &AppState, message: impl Into<String>) -> Response {
    bump(&state.stats.bad_requests);
    error_response(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown route (the simulator serves /v1/chat/completions and /v1/models)",
    )
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let list = ModelList {
        object: "list".into(),
        data: vec![ModelCard { id: state.config.model_name.clone(), object: "model".into(), owned_by: "dftg".into() }],
    };
    axum::Json(list).into_response()
}

/// The prompt (text of the last user message) and the image URL of a request.
pub(super) fn prompt_and_image(req: &ChatRequest) -> Result<(String, String), String> {
    let user = req.messages.iter().rev().find(|m| m.role == "user").ok_or("the request has no user message")?;
    let mut texts: Vec<&str> = Vec::new();
    let mut image: Option<&str> = None;
    match &user.content {
        MessageContent::Text(t) => texts.push(t),
        MessageContent::Parts(parts) => {
            for p in parts {
                match p {
                    ContentPart::Text { text } => texts.push(text),
                    ContentPart::ImageUrl { image_url } => {
                        if image.is_none() {
                            image = Some(&image_url.url);
                        }
                    }
                }
            }
        }
    }
    if image.is_none() {
        image = req.messages.iter().rev().find_map(|m| match &m.content {
            MessageContent::Parts(parts) => parts.iter().find_map(|p| match p {
                ContentPart::ImageUrl { image_url } => Some(image_url.url.as_str()),
                ContentPart::Text { .. } => None,
            }),
            MessageContent::Text(_) => None,
        });
    }
    let image = image.ok_or("the request has no image_url part")?;
    Ok((texts.join("\n").trim().to_string(), image.to_string()))
}

pub(super) fn decode_data_url(url: &str) -> Result<Vec<u8>, String> {
    let Some(rest) = url.strip_prefix("data:") else {
        let shown: String = url.chars().take(40).collect();
        return Err(format!("image_url must be a data: URL with the image bytes inline, got {shown:?}"));
    };
    let (meta, data) = rest.split_once(',').ok_or("malformed data URL: no comma before the data")?;
    if !meta.to_ascii_lowercase().split(';').any(|p| p == "base64") {
        return Err("only base64 data URLs are supported".into());
    }
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent).with_decode_allow_trailing_bits(true);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    standard.decode(&cleaned).or_else(|_| url_safe.decode(&cleaned)).map_err(|e| format!("the data URL is not valid base64: {e}"))
}

fn completion(state: &AppState, key: &str, prompt: &str, text: String) -> Response {
    let id = StableHasher::new("completion-id").u64(state.config.seed).str(key).str(prompt).finish();
    let prompt_tokens = prompt.split_whitespace().count() as u32 + 576;
    let completion_tokens = text.split_whitespace().count() as u32;
    let resp = ChatResponse {
        id: format!("chatcmpl-sim-{id:016x}"),
        object: "chat.completion".into(),
        created: 0,
        model: state.config.model_name.clone(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage { role: "assistant".into(), content: Some(text) },
            finish_reason: Some("stop".into()),
        }],
        usage: Some(Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }),
    };
    axum::Json(resp).into_response()
}

async fn chat(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let st = &*state;
    bump(&st.stats.requests);
    let n = st.counter.fetch_add(1, Ordering::Relaxed);
    let seed = st.config.seed;

    let delay = st.config.latency.draw(seed, n);
    if !delay.is_zero() {
        bump(&st.stats.latency_sleeps);
        if st.pause(delay).await {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the simulator is shutting down");
        }
    }

    match st.config.faults.draw(seed, n) {
        Some(Fault::Http500) => {
            bump(&st.stats.http_500);
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "simulated internal server error");
        }
        Some(Fault::Http503) => {
            bump(&st.stats.http_503);
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "server_error", "simulated overload, try again later");
        }
        Some(Fault::Timeout) => {
            bump(&st.stats.timeouts);
            if st.pause(Duration::from_millis(st.config.faults.hang_ms)).await {
                return error_response(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the simulator is shutting down");
            }
        }
        Some(Fault::MalformedJson) => {
            bump(&st.stats.malformed_json);
            let body = format!(
                "{{\"id\":\"chatcmpl-sim-broken-{n}\",\"object\":\"chat.completion\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"The image sh"
            );
            return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
        Some(Fault::MissingChoices) => {
            bump(&st.stats.missing_choices);
            let body = serde_json::json!({
                "id": format!("chatcmpl-sim-nochoices-{n}"),
                "object": "chat.completion",
                "created": 0,
                "model": st.config.model_name,
            });
            return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        }
        None => {}
    }

    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(st, format!("the request body is not a chat completion request: {e}")),
    };
    // writer requests need no image: they are answered from their facts block
    if let Some(w) = writer::writer_request(&req) {
        return match w {
            Ok(w) => st.write(&w, &headers),
            Err(e) => bad_request(st, e),
        };
    }
    let (prompt, url) = match prompt_and_image(&req) {
        Ok(x) => x,
        Err(e) => return bad_request(st, e),
    };
    let bytes = match decode_data_url(&url) {
        Ok(b) => b,
        Err(e) => return bad_request(st, e),
    };
    let corpus = st.sim.corpus();
    let Some(key) = corpus.key_for_bytes(&bytes) else {
        bump(&st.stats.unknown_images);
        let digest = hex::encode(super::corpus::image_digest(&bytes));
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("unknown image: no corpus image has sha256 {digest} ({} bytes)", bytes.len()),
        );
    };
    if st.config.faults.is_sticky(seed, key) {
        bump(&st.stats.sticky_failures);
        let status = StatusCode::from_u16(st.config.faults.sticky_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(status, "server_error", format!("simulated persistent failure for image {key}"));
    }

    if let Some(replay) = &st.config.replay {
        return match replay.get(key) {
            Some(caption) => {
                bump(&st.stats.replayed);
                bump(&st.stats.replies);
                completion(st, key, &prompt, caption.to_string())
            }
            None => bad_request(st, format!("replay mode: no recorded caption for image {key}")),
        };
    }

    let Some(reply) = st.sim.respond(key, &prompt) else {
        return bad_request(st, format!("unknown image key {key}"));
    };
    match reply.entry.task {
        super::engine::SimTask::Describe => bump(&st.stats.descriptions),
        super::engine::SimTask::YesNo => bump(&st.stats.yes_no_answers),
    }
    bump(&st.stats.replies);
    st.record(&reply.entry);
    tracing::debug!(image = %key, injected = reply.entry.hallucinated.len(), "simulator reply");
    completion(st, key, &prompt, reply.text)
}

/// Where the simulated detector and judge log their decisions, beside the truth log:
/// `sim-truth.jsonl` → `sim-truth-vision.jsonl`.
pub fn vision_log_path(truth_log: &std::path::Path) -> PathBuf {
    let stem = truth_log.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "sim-truth".into());
    truth_log.with_file_name(format!("{stem}-vision.jsonl"))
}
