//! `OpenAiClient`: any OpenAI-compatible chat-completions server (vLLM, Ollama `/v1`, SGLang,
//! llama.cpp server).

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tokio::sync::Semaphore;
use tracing::{field, Instrument as _};

use super::call::{request_budget, Caller};
use super::retry::{parse_retry_after, RetryPolicy};
use super::{ModelClient, ModelError, ModelReply, ModelRequest};
use crate::api::{ChatMessage, ChatRequest, ChatResponse, ContentPart, ImageUrl, MessageContent, ModelList};

/// Environment variables read for the API key, in order.
pub const API_KEY_ENV: [&str; 2] = ["DFTG_API_KEY", "OPENAI_API_KEY"];

/// Longest reply text accepted by default: captions are 1–2 KB, so 64 KiB is a runaway
/// generation, not a description (see [`OpenAiConfig::max_reply_bytes`]).
pub const DEFAULT_MAX_REPLY_BYTES: usize = 64 << 10;
/// A request's time budget over all its attempts and backoff waits, in request timeouts, when
/// the config sets none (see [`OpenAiConfig::request_budget`]).
pub const DEFAULT_BUDGET_TIMEOUTS: u32 = 4;
/// No successful body is read past this, whatever the reply limit (the model list included).
const MAX_SUCCESS_BODY: usize = 8 << 20;
/// JSON around the reply text in a completion body: ids, usage, role, finish reason, and the
/// extra fields some servers add.
const REPLY_BODY_OVERHEAD: usize = 64 << 10;
/// Error bodies are only excerpted, so little of them is read.
const MAX_ERROR_BODY: usize = 4 << 10;
/// Characters of an error body quoted in an error message.
const EXCERPT_CHARS: usize = 120;

/// The largest completion body read for a reply limit: escaping can grow the text (quotes and
/// newlines double, `\uXXXX` triples a two-byte character), hence 4×, plus the JSON around it.
fn reply_body_limit(max_reply_bytes: usize) -> usize {
    max_reply_bytes.saturating_mul(4).saturating_add(REPLY_BODY_OVERHEAD).min(MAX_SUCCESS_BODY)
}

/// The first non-empty key among [`API_KEY_ENV`], looked up with `lookup` (a parameter so tests
/// need not mutate the process environment).
pub fn api_key_from(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    API_KEY_ENV.iter().find_map(|name| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()))
}

/// Where the model is and how to talk to it.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// Up to and including the API version, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer …` when present. Never logged.
    pub api_key: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// Per attempt: connect, send, and read the whole answer.
    pub request_timeout: Duration,
    /// Per request, over all attempts and backoff waits, counted from the moment the first
    /// attempt gets an in-flight slot; `None`: [`DEFAULT_BUDGET_TIMEOUTS`] × `request_timeout`.
    /// An attempt never runs past it, and no retry starts after it.
    pub request_budget: Option<Duration>,
    /// Longest reply text accepted (bytes of UTF-8), at most 2 MiB; a longer reply, or a body
    /// too large to hold one, is a `reply_too_long` error. The body is read only up to a few
    /// times this, so memory per request stays small whatever the server sends.
    pub max_reply_bytes: usize,
    pub connect_timeout: Duration,
    /// Requests in flight at once, over all callers of this client.
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    /// Seed of the backoff jitter; `None` draws from entropy (see [`RetryPolicy`]).
    pub jitter_seed: Option<u64>,
}

impl Default for OpenAiConfig {
    /// Defaults without touching the environment; [`OpenAiConfig::new`] also reads the key.
    fn default() -> Self {
        OpenAiConfig {
            base_url: "http://127.0.0.1:8000/v1".to_owned(),
            model: String::new(),
            api_key: None,
            max_tokens: Some(512),
            temperature: None,
            request_timeout: Duration::from_secs(60),
            request_budget: None,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            connect_timeout: Duration::from_secs(10),
            max_in_flight: 64,
            retry: RetryPolicy::default(),
            jitter_seed: None,
        }
    }
}

impl OpenAiConfig {
    /// Defaults for `base_url` and `model`, with the API key from `DFTG_API_KEY`, else
    /// `OPENAI_API_KEY` (absent or empty: no auth header).
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: api_key_from(|name| std::env::var(name).ok()),
            ..OpenAiConfig::default()
        }
    }
}

/// Hand-written so the key never reaches a log line.
impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &redact_url(&self.base_url))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .field("request_timeout", &self.request_timeout)
            .field("request_budget", &self.request_budget)
            .field("max_reply_bytes", &self.max_reply_bytes)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("retry", &self.retry)
            .field("jitter_seed", &self.jitter_seed)
            .finish()
    }
}

/// A config that cannot work, found before any request.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("invalid model endpoint config: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("cannot build the http client: {0}")]
    Http(#[source] reqwest::Error),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ClientConfigError {
    ClientConfigError::Invalid { field, reason: reason.into() }
}

/// A successful chat completion.
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    /// Attempts used, 1 when the first one succeeded.
    pub attempts: u32,
    /// Duration of the successful attempt.
    pub latency: Duration,
    /// Tokens, as the server counted them (absent when it does not say).
    pub usage: Option<dftg_core::tokens::TokenUsage>,
}

/// The HTTP client for an OpenAI-compatible server. Cheap to clone; clones share the
/// connection pool and the in-flight bound.
#[derive(Clone)]
pub struct OpenAiClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: OpenAiConfig,
    completions_url: Url,
    models_url: Url,
    /// The URLs without credentials, for messages and logs.
    completions_shown: String,
    models_shown: String,
    auth: Option<HeaderValue>,
    /// The in-flight bound, timeouts, budget and retries (shared with the detector client).
    caller: Caller,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

/// A response read up to a size limit.
struct Raw {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Bytes,
    truncated: bool,
}

impl OpenAiClient {
    pub fn new(config: OpenAiConfig) -> Result<Self, ClientConfigError> {
        let base = config.base_url.trim().trim_end_matches('/');
        let parsed = Url::parse(base).map_err(|e| invalid("base_url", format!("{:?} is not a url: {e}", redact_url(base))))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
            return Err(invalid("base_url", format!("{:?} is not an http(s) url", redact_url(base))));
        }
        let completions_url = Url::parse(&format!("{base}/chat/completions"))
            .map_err(|e| invalid("base_url", format!("cannot append /chat/completions: {e}")))?;
        let models_url = Url::parse(&format!("{base}/models")).map_err(|e| invalid("base_url", format!("cannot append /models: {e}")))?;
        if config.model.trim().is_empty() {
            return Err(invalid("model", "must not be empty"));
        }
        if config.max_in_flight == 0 || config.max_in_flight > Semaphore::MAX_PERMITS {
            return Err(invalid("max_in_flight", format!("must be in 1..={}", Semaphore::MAX_PERMITS)));
        }
        if config.request_timeout.is_zero() {
            return Err(invalid("request_timeout", "must be positive"));
        }
        if config.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be positive"));
        }
        if config.request_budget.is_some_and(|b| b.is_zero()) {
            return Err(invalid("request_budget", "must be positive"));
        }
        if config.max_reply_bytes == 0 || config.max_reply_bytes > MAX_SUCCESS_BODY / 4 {
            return Err(invalid("max_reply_bytes", format!("must be in 1..={}", MAX_SUCCESS_BODY / 4)));
        }
        if let Some(t) = config.temperature {
            if !t.is_finite() || t < 0.0 {
                return Err(invalid("temperature", format!("{t} is not a non-negative number")));
            }
        }
        let auth = match config.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            Some(key) => {
                // The key is deliberately not quoted in the error.
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| invalid("api_key", "contains characters not allowed in an http header"))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // Idle connections for every slot, so a full pipeline reuses connections.
            .pool_max_idle_per_host(config.max_in_flight)
            .tcp_nodelay(true)
            // A redirected POST turns into a GET: report it instead of following it.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dftg/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientConfigError::Http)?;
        let budget = request_budget(config.request_budget, config.request_timeout);
        let caller = Caller::new(config.max_in_flight, config.retry.clone(), config.jitter_seed, config.request_timeout, budget);
        Ok(OpenAiClient {
            inner: Arc::new(Inner {
                http,
                completions_shown: redact_url(completions_url.as_str()),
                models_shown: redact_url(models_url.as_str()),
                completions_url,
                models_url,
                auth,
                caller,
                config,
            }),
        })
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.inner.config
    }

    /// Attempts in flight right now (for a gauge).
    pub fn in_flight(&self) -> usize {
        self.inner.caller.in_flight()
    }

    /// `GET {base_url}/models`, one attempt: a startup health check, so the caller decides
    /// whether to wait and try again. Does not take an in-flight slot.
    pub async fn list_models(&self) -> Result<ModelList, ModelError> {
        let url = &self.inner.models_shown;
        let timeout = self.inner.config.request_timeout;
        let request = self.authorized(self.inner.http.get(self.inner.models_url.clone()), timeout);
        let raw = self.fetch(request, url, MAX_SUCCESS_BODY, timeout).await?;
        if !raw.status.is_success() {
            return Err(status_error(&raw, url));
        }
        let code = raw.status.as_u16();
        if raw.truncated {
            return Err(
                ModelError::malformed(format!("model list from {url} (http {code}) exceeds {MAX_SUCCESS_BODY} bytes")).with_status(code)
            );
        }
        serde_json::from_slice(&raw.body).map_err(|e| {
            ModelError::malformed(format!("malformed model list from {url} (http {code}): {}", json_problem(&e, raw.body.len())))
                .with_status(code)
        })
    }

    fn authorized(&self, request: reqwest::RequestBuilder, timeout: Duration) -> reqwest::RequestBuilder {
        let request = request.timeout(timeout);
        match &self.inner.auth {
            Some(auth) => request.header(AUTHORIZATION, auth.clone()),
            None => request,
        }
    }

    /// Sends and reads the body up to `success_limit` bytes (error bodies: less), mapping
    /// transport failures; statuses are left to the caller. Reading stops at the limit, so a
    /// server cannot make the client hold more.
    async fn fetch(&self, request: reqwest::RequestBuilder, url: &str, success_limit: usize, timeout: Duration) -> Result<Raw, ModelError> {
        let mut response = request.send().await.map_err(|e| transport_error(e, url, timeout))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let limit = if status.is_success() { success_limit } else { MAX_ERROR_BODY };
        let mut body = Vec::new();
        let mut truncated = response.content_length().is_some_and(|n| n > limit as u64);
        while !truncated {
            match response.chunk().await.map_err(|e| transport_error(e, url, timeout))? {
                Some(chunk) => {
                    let room = limit - body.len();
                    truncated = chunk.len() > room;
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                None => break,
            }
        }
        Ok(Raw { status, retry_after, body: Bytes::from(body), truncated })
    }

    /// The JSON body; built once per request and shared (as `Bytes`) by every attempt.
    fn encode(&self, req: &ModelRequest) -> Result<Bytes, ModelError> {
        encode_chat_body(
            &self.inner.config.model,
            &req.prompt,
            &req.mime,
            &req.image,
            self.inner.config.max_tokens,
            self.inner.config.temperature,
        )
        .map_err(|e| ModelError::rejected(format!("cannot encode the request for {}: {e}", self.inner.completions_shown)))
    }

    /// One attempt, inside the caller's in-flight slot and timeout. The first attempt encodes
    /// the body (so requests queued for a slot hold no encoded copy of their image); the
    /// retries reuse it.
    async fn attempt(
        &self,
        encode: &(dyn Fn() -> Result<Bytes, ModelError> + Send + Sync),
        request_id: Option<&str>,
        body: &OnceLock<Bytes>,
        timeout: Duration,
    ) -> Result<(String, Option<dftg_core::tokens::TokenUsage>, Duration), ModelError> {
        let url = &self.inner.completions_shown;
        let config = &self.inner.config;
        let started = Instant::now();
        let payload = match body.get() {
            Some(b) => b.clone(),
            None => {
                let encoded = encode()?;
                body.get_or_init(|| encoded).clone()
            }
        };
        let mut request = self
            .authorized(self.inner.http.post(self.inner.completions_url.clone()), timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(payload);
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        let raw = self.fetch(request, url, reply_body_limit(config.max_reply_bytes), timeout).await;
        let latency = started.elapsed();
        tracing::debug!(
            status = raw.as_ref().ok().map(|r| r.status.as_u16()),
            latency_ms = latency.as_millis() as u64,
            "model attempt done"
        );
        let raw = raw?;
        interpret_completion(&raw, url, config.max_reply_bytes).map(|(text, usage)| (text, usage, latency))
    }

    async fn complete_inner(&self, req: &ModelRequest) -> Result<ModelReply, ModelError> {
        let c = self.send(&|| self.encode(req), None).await?;
        Ok(ModelReply { text: c.text, attempts: c.attempts, latency: c.latency, usage: c.usage })
    }

    /// Any chat-completions request (the writer's: text, a schema, maybe an image), through the
    /// same in-flight bound, timeouts and retries as the model's. `request_id` is sent as
    /// `X-Request-Id`.
    pub async fn chat(&self, request: &ChatRequest, request_id: Option<&str>) -> Result<Completion, ModelError> {
        let url = &self.inner.completions_shown;
        let encode = || {
            serde_json::to_vec(request)
                .map(Bytes::from)
                .map_err(|e| ModelError::rejected(format!("cannot encode the request for {url}: {e}")))
        };
        let span = tracing::info_span!(
            "chat_request",
            model = %request.model,
            attempts = field::Empty,
            status = field::Empty,
            latency_ms = field::Empty,
            reason = field::Empty,
        );
        self.send(&encode, request_id).instrument(span).await
    }

    async fn send(
        &self,
        encode: &(dyn Fn() -> Result<Bytes, ModelError> + Send + Sync),
        request_id: Option<&str>,
    ) -> Result<Completion, ModelError> {
        let span = tracing::Span::current();
        let body = OnceLock::new();
        let mut attempt = 0u32;
        let result = self
            .inner
            .caller
            .call(&self.inner.completions_shown, |timeout| {
                attempt += 1;
                span.record("attempts", attempt);
                self.attempt(encode, request_id, &body, timeout)
            })
            .await;
        match result {
            Ok(((text, usage, latency), attempts)) => {
                span.record("status", 200u16);
                span.record("latency_ms", latency.as_millis() as u64);
                Ok(Completion { text, attempts, latency, usage })
            }
            Err(e) => {
                if let Some(status) = e.status() {
                    span.record("status", status);
                }
                span.record("reason", e.reason());
                Err(e)
            }
        }
    }
}

impl ModelClient for OpenAiClient {
    fn complete<'a>(&'a self, req: &'a ModelRequest) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        let span = tracing::info_span!(
            "model_request",
            model = %self.inner.config.model,
            image_bytes = req.image.len(),
            attempts = field::Empty,
            status = field::Empty,
            latency_ms = field::Empty,
            reason = field::Empty,
        );
        Box::pin(self.complete_inner(req).instrument(span))
    }

    fn name(&self) -> &str {
        &self.inner.config.model
    }
}

/// A completion's text, or why there is none. A successful body is model output: messages
/// describe it (size, where the JSON broke) but never quote it.
fn interpret_completion(
    raw: &Raw,
    url: &str,
    max_reply_bytes: usize,
) -> Result<(String, Option<dftg_core::tokens::TokenUsage>), ModelError> {
    if !raw.status.is_success() {
        return Err(status_error(raw, url));
    }
    let code = raw.status.as_u16();
    if raw.truncated {
        return Err(ModelError::reply_too_long(format!(
            "response from {url} (http {code}) exceeds {} bytes, more than a reply of at most {max_reply_bytes} bytes needs",
            reply_body_limit(max_reply_bytes)
        ))
        .with_status(code));
    }
    let parsed: ChatResponse = serde_json::from_slice(&raw.body).map_err(|e| {
        ModelError::malformed(format!("malformed response from {url} (http {code}): {}", json_problem(&e, raw.body.len())))
            .with_status(code)
    })?;
    let usage = parsed.usage.as_ref().map(|u| u.tokens());
    let Some(choice) = parsed.choices.into_iter().next() else {
        return Err(
            ModelError::malformed(format!("response from {url} (http {code}) has no choices ({} bytes)", raw.body.len())).with_status(code)
        );
    };
    match choice.message.content {
        Some(text) if text.len() > max_reply_bytes => Err(ModelError::reply_too_long(format!(
            "reply from {url} (http {code}) is {} bytes, over the limit of {max_reply_bytes} bytes",
            text.len()
        ))
        .with_status(code)),
        Some(text) if !text.trim().is_empty() => Ok((text, usage)),
        content => Err(ModelError::empty(format!(
            "empty response from {url} (http {code}): content is {}, finish_reason {}",
            if content.is_none() { "null" } else { "blank" },
            match choice.finish_reason.as_deref() {
                // the server's word, shown only when it is one of the documented values
                Some(r @ ("stop" | "length" | "content_filter" | "tool_calls" | "function_call")) => r,
                Some(_) => "other",
                None => "absent",
            }
        ))
        .with_status(code)),
    }
}

fn status_error(raw: &Raw, url: &str) -> ModelError {
    let code = raw.status.as_u16();
    let body = excerpt(&raw.body);
    match code {
        429 => ModelError::rate_limited(format!("rate limited by {url} (http 429); body {body}")).with_retry_after(raw.retry_after),
        // The server gave up waiting for us: transient, like a timeout.
        408 => ModelError::timeout(format!("http 408 from {url}; body {body}")).with_status(code),
        500..=599 => ModelError::http_5xx(code, format!("http {code} from {url}; body {body}")).with_retry_after(if code == 503 {
            raw.retry_after
        } else {
            None
        }),
        _ => ModelError::rejected(format!("http {code} from {url}; body {body}")).with_status(code),
    }
}

/// What is wrong with a body that did not parse, without quoting it: serde's own message may
/// quote the offending value ("invalid type: string \"…\"").
pub(crate) fn json_problem(e: &serde_json::Error, len: usize) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Syntax => "not json",
        serde_json::error::Category::Eof => "truncated json",
        serde_json::error::Category::Data => "json of the wrong shape",
        serde_json::error::Category::Io => "unreadable",
    };
    format!("{what} at line {} column {} ({len} bytes)", e.line(), e.column())
}

pub(crate) fn transport_error(e: reqwest::Error, url: &str, timeout: Duration) -> ModelError {
    if e.is_connect() {
        ModelError::unreachable(format!("cannot connect to {url}: {}", root_cause(e)))
    } else if e.is_timeout() {
        ModelError::timeout(format!("no complete answer from {url} within {} ms", timeout.as_millis()))
    } else {
        ModelError::unreachable(format!("request to {url} failed: {}", root_cause(e)))
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(RETRY_AFTER)?.to_str().ok().and_then(parse_retry_after)
}

/// The innermost cause (e.g. "connection refused (os error 111)"), without the URL reqwest
/// would print (it may carry credentials).
fn root_cause(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string().to_lowercase()
}

/// A short, quoted, single-line excerpt of an error body: printable ASCII only (any other
/// character becomes `?`), whitespace collapsed, at most [`EXCERPT_CHARS`] characters; servers
/// say useful things there ("image too large"), but nothing else of the body is kept.
fn excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty)".to_owned();
    }
    let mut out = String::with_capacity(EXCERPT_CHARS + 4);
    let mut gap = false;
    let mut cut = false;
    for &b in body {
        // UTF-8 continuation bytes: their character already became one `?`
        if (0x80..0xc0).contains(&b) {
            continue;
        }
        if b.is_ascii_whitespace() || b.is_ascii_control() {
            gap = !out.is_empty();
            continue;
        }
        if out.len() + usize::from(gap) >= EXCERPT_CHARS {
            cut = true;
            break;
        }
        if gap {
            out.push(' ');
            gap = false;
        }
        out.push(if b.is_ascii_graphic() { char::from(b) } else { '?' });
    }
    if cut {
        out.push('…');
    }
    format!("{out:?}")
}

/// The URL with any user:password removed.
fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() || !parsed.username().is_empty() {
                // Both only fail for URLs without a host, which have no credentials to hide.
                let _ = parsed.set_password(None);
                let _ = parsed.set_username("");
            }
            parsed.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => url.to_owned(),
    }
}

/// The chat-completions body asking `prompt` about the image. The base64 data URL (tens of KB)
/// needs no JSON escaping, so it is encoded straight into the body, spliced into a skeleton
/// serialized with an empty URL, instead of being built as a string and escaped byte by byte.
pub fn encode_chat_body(
    model: &str,
    prompt: &str,
    mime: &str,
    image: &[u8],
    max_tokens: Option<u32>,
    temperature: Option<f32>,
) -> Result<Bytes, serde_json::Error> {
    let chat = ChatRequest {
        model: model.to_owned(),
        messages: vec![ChatMessage {
            role: "user".to_owned(),
            content: MessageContent::Parts(vec![
                ContentPart::Text { text: prompt.to_owned() },
                ContentPart::ImageUrl { image_url: ImageUrl { url: String::new() } },
            ]),
        }],
        max_tokens,
        temperature,
        response_format: None,
    };
    let skeleton = serde_json::to_vec(&chat)?;
    // inside JSON strings quotes are escaped, so this byte sequence is only the structural one
    const HOLE: &[u8] = br#""image_url":{"url":""#;
    let Some(at) = skeleton.windows(HOLE.len()).position(|w| w == HOLE).map(|p| p + HOLE.len()) else {
        return Ok(Bytes::from(skeleton));
    };
    let mime = serde_json::to_string(mime.trim())?;
    let mime = &mime[1..mime.len() - 1];
    let encoded_len = image.len().div_ceil(3) * 4;
    let mut body = Vec::with_capacity(skeleton.len() + mime.len() + 13 + encoded_len);
    body.extend_from_slice(&skeleton[..at]);
    body.extend_from_slice(b"data:");
    body.extend_from_slice(mime.as_bytes());
    body.extend_from_slice(b";base64,");
    let start = body.len();
    body.resize(start + encoded_len, 0);
    let written = base64::engine::general_purpose::STANDARD.encode_slice(image, &mut body[start..]).unwrap_or(0);
    body.truncate(start + written);
    body.extend_from_slice(&skeleton[at..]);
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_prefers_dftg_then_openai_and_skips_empty() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(api_key_from(env(&[("DFTG_API_KEY", "a"), ("OPENAI_API_KEY", "b")])), Some("a".into()));
        assert_eq!(api_key_from(env(&[("OPENAI_API_KEY", "b")])), Some("b".into()));
        assert_eq!(api_key_from(env(&[("DFTG_API_KEY", "  "), ("OPENAI_API_KEY", "b")])), Some("b".into()));
        assert_eq!(api_key_from(env(&[])), None);
    }

    #[test]
    fn debug_never_shows_the_key_or_url_credentials() {
        let config = OpenAiConfig {
            base_url: "http://user:pw@host:1/v1".into(),
            model: "m".into(),
            api_key: Some("sk-secret".into()),
            ..OpenAiConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(!shown.contains("pw"), "{shown}");
        let client = OpenAiClient::new(config).expect("valid config");
        let shown = format!("{client:?}");
        assert!(!shown.contains("sk-secret") && !shown.contains(":pw@"), "{shown}");
        assert_eq!(client.inner.completions_shown, "http://host:1/v1/chat/completions");
    }

    #[test]
    fn bad_configs_are_refused_with_the_field() {
        let ok = || OpenAiConfig { model: "m".into(), ..OpenAiConfig::default() };
        let field = |c: OpenAiConfig| match OpenAiClient::new(c) {
            Err(ClientConfigError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert_eq!(field(OpenAiConfig { base_url: "not a url".into(), ..ok() }), "base_url");
        assert_eq!(field(OpenAiConfig { base_url: "ftp://x/v1".into(), ..ok() }), "base_url");
        assert_eq!(field(OpenAiConfig { model: " ".into(), ..ok() }), "model");
        assert_eq!(field(OpenAiConfig { max_in_flight: 0, ..ok() }), "max_in_flight");
        assert_eq!(field(OpenAiConfig { request_timeout: Duration::ZERO, ..ok() }), "request_timeout");
        assert_eq!(field(OpenAiConfig { temperature: Some(f32::NAN), ..ok() }), "temperature");
        assert_eq!(field(OpenAiConfig { request_budget: Some(Duration::ZERO), ..ok() }), "request_budget");
        assert_eq!(field(OpenAiConfig { max_reply_bytes: 0, ..ok() }), "max_reply_bytes");
        assert_eq!(field(OpenAiConfig { max_reply_bytes: usize::MAX, ..ok() }), "max_reply_bytes");
        // extreme but valid numbers build a client (no overflow, no panic)
        let extreme = OpenAiConfig {
            request_timeout: Duration::MAX,
            connect_timeout: Duration::MAX,
            retry: RetryPolicy { max_attempts: u32::MAX, base_delay: Duration::MAX, max_delay: Duration::MAX },
            ..ok()
        };
        let client = OpenAiClient::new(extreme).expect("extreme config");
        assert_eq!(client.inner.caller.budget(), None, "a budget that overflows is none, not a panic");
        let bad_key = OpenAiConfig { api_key: Some("sk\nx".into()), ..ok() };
        let msg = OpenAiClient::new(bad_key).map(|_| ()).map_err(|e| e.to_string());
        assert!(matches!(&msg, Err(m) if m.contains("api_key") && !m.contains("sk\nx")), "{msg:?}");
    }

    #[test]
    fn trailing_slash_in_base_url_is_ignored() {
        let c = OpenAiClient::new(OpenAiConfig { base_url: "http://h:1/v1/".into(), model: "m".into(), ..OpenAiConfig::default() })
            .expect("valid");
        assert_eq!(c.inner.completions_url.as_str(), "http://h:1/v1/chat/completions");
        assert_eq!(c.inner.models_url.as_str(), "http://h:1/v1/models");
    }

    #[test]
    fn excerpts_are_short_single_line_printable_ascii_and_quoted() {
        assert_eq!(excerpt(b""), "(empty)");
        assert_eq!(excerpt(b"bad\n  image"), "\"bad image\"");
        assert_eq!(excerpt("caf\u{e9} \u{1b}[31mred\u{7}".as_bytes()), "\"caf? [31mred\"");
        assert_eq!(excerpt(b"say \"hi\""), "\"say \\\"hi\\\"\"");
        let long = "x".repeat(100_000);
        let e = excerpt(long.as_bytes());
        assert!(e.chars().count() <= EXCERPT_CHARS + 3 && e.ends_with("…\""), "{e}");
    }

    #[test]
    fn json_problems_never_quote_the_body() {
        let e = serde_json::from_slice::<ChatResponse>(br#"{"choices":"secret reply text"}"#).unwrap_err();
        let shown = json_problem(&e, 31);
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.starts_with("json of the wrong shape at line 1"), "{shown}");
        let e = serde_json::from_slice::<ChatResponse>(b"<html>").unwrap_err();
        assert!(json_problem(&e, 6).starts_with("not json"));
    }

    #[test]
    fn the_body_limit_follows_the_reply_limit() {
        assert_eq!(reply_body_limit(DEFAULT_MAX_REPLY_BYTES), 4 * DEFAULT_MAX_REPLY_BYTES + REPLY_BODY_OVERHEAD);
        assert_eq!(reply_body_limit(usize::MAX), MAX_SUCCESS_BODY);
    }

    #[test]
    fn spliced_body_equals_the_serialized_request() {
        let image: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let prompt = "Describe \"this\" image_url\":{\"url\":\"\" in detail.";
        let body = encode_chat_body("m\"x", prompt, "image/png", &image, Some(64), None).unwrap();
        let mut url = String::from("data:image/png;base64,");
        base64::engine::general_purpose::STANDARD.encode_string(&image, &mut url);
        let expected = ChatRequest {
            model: "m\"x".into(),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: MessageContent::Parts(vec![
                    ContentPart::Text { text: prompt.into() },
                    ContentPart::ImageUrl { image_url: ImageUrl { url } },
                ]),
            }],
            max_tokens: Some(64),
            temperature: None,
            response_format: None,
        };
        assert_eq!(&body[..], &serde_json::to_vec(&expected).unwrap()[..]);
    }
}
