//! `HttpDetector`: a detector service over HTTP in one of the [`DetectorApi`] contracts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tokio::sync::Semaphore;

use super::snap::Snapper;
use super::wire::{parse_reply, request_body};
use super::{distinct_labels, DetectReply, DetectRequest, Detection, Detector, DetectorApi};
use crate::client::call::{parse_retry_after, request_budget, Caller};
use crate::client::openai::transport_error;
use crate::client::{ModelError, RetryPolicy};

/// Largest successful reply read by default: a box is about 100 bytes of JSON, so 1 MiB is
/// ten thousand boxes, far more than any image has.
pub const DEFAULT_MAX_DETECTOR_REPLY_BYTES: usize = 1 << 20;
/// The reply limit may not be set above this.
const MAX_REPLY_LIMIT: usize = 64 << 20;
/// Error bodies are not quoted, only measured, so little of them is read.
const MAX_ERROR_BODY: usize = 4 << 10;
/// Longest label accepted, in bytes: labels are concept names, not prose.
const MAX_LABEL_BYTES: usize = 200;
/// Labels per request at most, whatever the config says (Grounding DINO's text encoder takes
/// 256 tokens; a label is at least one token plus a separator).
const MAX_LABELS_PER_REQUEST: usize = 128;

/// Where the detector is and how to talk to it.
#[derive(Clone)]
pub struct DetectorConfig {
    /// `hf`: the full URL posted to (an Inference Endpoint's URL, or the simulator's
    /// `http://host:port/hf/detect`). `roboflow*`: the server's root, e.g.
    /// `http://127.0.0.1:9001`; the route is appended ([`DetectorApi::path`]).
    pub base_url: String,
    pub api: DetectorApi,
    /// `hf`: sent as `Authorization: Bearer …`; `roboflow*`: as the body's `api_key`, the
    /// server's convention. Never logged.
    pub api_key: Option<String>,
    /// Requests in flight at once, over all callers of this detector.
    pub max_in_flight: usize,
    /// Per attempt: connect, send, and read the whole answer.
    pub request_timeout: Duration,
    /// Per request, over all attempts and backoff waits, from the moment the first attempt
    /// gets an in-flight slot; `None`: [`crate::client::DEFAULT_BUDGET_TIMEOUTS`] × `request_timeout`.
    pub request_budget: Option<Duration>,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Seed of the backoff jitter; `None` draws from entropy.
    pub jitter_seed: Option<u64>,
    /// Labels per request (1..=128); longer lists are split into several requests.
    pub max_labels_per_request: usize,
    /// The service drops boxes below this (`threshold`, `box_threshold` and `text_threshold`,
    /// `confidence`). Keep it below the absent threshold of
    /// [`dftg_core::detection::Thresholds`], or the uncertain band is never seen.
    pub box_threshold: f32,
    /// Largest successful reply body read; a larger one is a `reply_too_long` error.
    pub max_reply_bytes: usize,
}

impl DetectorConfig {
    /// Defaults for everything but where the service is and which contract it speaks.
    pub fn new(base_url: impl Into<String>, api: DetectorApi) -> Self {
        DetectorConfig {
            base_url: base_url.into(),
            api,
            api_key: None,
            max_in_flight: 16,
            request_timeout: Duration::from_secs(30),
            request_budget: None,
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            jitter_seed: None,
            max_labels_per_request: 32,
            box_threshold: 0.1,
            max_reply_bytes: DEFAULT_MAX_DETECTOR_REPLY_BYTES,
        }
    }
}

/// Hand-written so the key and URL credentials never reach a log line.
impl fmt::Debug for DetectorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetectorConfig")
            .field("base_url", &redact_url(&self.base_url))
            .field("api", &self.api)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_in_flight", &self.max_in_flight)
            .field("request_timeout", &self.request_timeout)
            .field("request_budget", &self.request_budget)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .field("jitter_seed", &self.jitter_seed)
            .field("max_labels_per_request", &self.max_labels_per_request)
            .field("box_threshold", &self.box_threshold)
            .field("max_reply_bytes", &self.max_reply_bytes)
            .finish()
    }
}

/// A config that cannot work, found before any request.
#[derive(Debug, thiserror::Error)]
pub enum DetectorConfigError {
    #[error("invalid detector config: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("cannot build the http client for the detector: {0}")]
    Http(#[source] reqwest::Error),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DetectorConfigError {
    DetectorConfigError::Invalid { field, reason: reason.into() }
}

/// The HTTP detector. Cheap to clone; clones share the connection pool and the in-flight
/// bound.
#[derive(Clone)]
pub struct HttpDetector {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: DetectorConfig,
    url: Url,
    /// The URL without credentials, for messages and logs.
    shown: String,
    /// `{api} {shown}`: the service in cache keys.
    service: String,
    auth: Option<HeaderValue>,
    caller: Caller,
}

impl fmt::Debug for HttpDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpDetector").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

/// A response read up to a size limit.
struct Raw {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Bytes,
    truncated: bool,
}

impl HttpDetector {
    pub fn new(config: DetectorConfig) -> Result<Self, DetectorConfigError> {
        let base = config.base_url.trim().trim_end_matches('/');
        let parsed = Url::parse(base).map_err(|e| invalid("base_url", format!("not a url: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
            return Err(invalid("base_url", "not an http(s) url"));
        }
        let url = Url::parse(&format!("{base}{}", config.api.path()))
            .map_err(|e| invalid("base_url", format!("cannot append {}: {e}", config.api.path())))?;
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
        if !(1..=MAX_LABELS_PER_REQUEST).contains(&config.max_labels_per_request) {
            return Err(invalid("max_labels_per_request", format!("must be in 1..={MAX_LABELS_PER_REQUEST}")));
        }
        if !(0.0..=1.0).contains(&config.box_threshold) {
            return Err(invalid("box_threshold", "must be in [0, 1]"));
        }
        if !(1..=MAX_REPLY_LIMIT).contains(&config.max_reply_bytes) {
            return Err(invalid("max_reply_bytes", format!("must be in 1..={MAX_REPLY_LIMIT}")));
        }
        let key = config.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty());
        let auth = match (config.api, key) {
            (DetectorApi::Hf, Some(key)) => {
                // the key is deliberately not quoted in the error
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| invalid("api_key", "contains characters not allowed in an http header"))?;
                value.set_sensitive(true);
                Some(value)
            }
            _ => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.max_in_flight)
            .tcp_nodelay(true)
            // a redirected POST turns into a GET: report it instead of following it
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dftg/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(DetectorConfigError::Http)?;
        let budget = request_budget(config.request_budget, config.request_timeout);
        let caller = Caller::new(config.max_in_flight, config.retry.clone(), config.jitter_seed, config.request_timeout, budget);
        let shown = redact_url(url.as_str());
        Ok(HttpDetector { inner: Arc::new(Inner { http, service: format!("{} {shown}", config.api), shown, url, auth, caller, config }) })
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.inner.config
    }

    /// Attempts in flight right now (for a gauge).
    pub fn in_flight(&self) -> usize {
        self.inner.caller.in_flight()
    }

    async fn detect_inner(&self, req: &DetectRequest) -> Result<DetectReply, ModelError> {
        let shown = &self.inner.shown;
        let labels = distinct_labels(&req.labels);
        if labels.is_empty() {
            return Ok(DetectReply::default());
        }
        if let Some(i) = labels.iter().position(|l| l.len() > MAX_LABEL_BYTES) {
            return Err(ModelError::rejected(format!("label {i} for {shown} is longer than {MAX_LABEL_BYTES} bytes")));
        }
        if req.image.is_empty() {
            return Err(ModelError::rejected(format!("empty image for {shown}")));
        }
        let image_b64 = base64::engine::general_purpose::STANDARD.encode(&req.image);
        let chunks = labels.chunks(self.inner.config.max_labels_per_request);
        let replies = futures::future::try_join_all(chunks.map(|chunk| self.detect_chunk(&image_b64, chunk))).await?;
        let mut out = DetectReply::default();
        for (detections, attempts, unmatched) in replies {
            out.detections.extend(detections);
            out.requests += 1;
            out.attempts += attempts;
            out.unmatched += unmatched;
        }
        Ok(out)
    }

    /// One request (with its retries) for one chunk of labels.
    async fn detect_chunk(&self, image_b64: &str, labels: &[String]) -> Result<(Vec<Detection>, u32, u32), ModelError> {
        let config = &self.inner.config;
        let key = config.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty());
        let body = request_body(config.api, image_b64, labels, config.box_threshold, key)
            .map(Bytes::from)
            .map_err(|e| ModelError::rejected(format!("cannot encode the request for {}: {e}", self.inner.shown)))?;
        let ((detections, unmatched), attempts) =
            self.inner.caller.call(&self.inner.shown, |timeout| self.attempt(body.clone(), timeout, labels)).await?;
        Ok((detections, attempts, unmatched))
    }

    async fn attempt(&self, body: Bytes, timeout: Duration, labels: &[String]) -> Result<(Vec<Detection>, u32), ModelError> {
        let shown = &self.inner.shown;
        let mut request = self.inner.http.post(self.inner.url.clone()).timeout(timeout).header(CONTENT_TYPE, "application/json").body(body);
        if let Some(auth) = &self.inner.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let raw = fetch(request, shown, self.inner.config.max_reply_bytes, timeout).await?;
        let code = raw.status.as_u16();
        if !raw.status.is_success() {
            return Err(status_error(&raw, shown));
        }
        if raw.truncated {
            // refused whole and not retried: the same question would get the same runaway reply
            return Err(ModelError::reply_too_long(format!(
                "reply from {shown} (http {code}) exceeds {} bytes",
                self.inner.config.max_reply_bytes
            ))
            .with_status(code));
        }
        let boxes = parse_reply(self.inner.config.api, &raw.body)
            .map_err(|problem| ModelError::malformed(format!("malformed reply from {shown} (http {code}): {problem}")).with_status(code))?;
        let snapper = Snapper::new(labels);
        let mut detections = Vec::with_capacity(boxes.len());
        let mut unmatched = 0u32;
        for b in boxes {
            match snapper.snap(&b.label) {
                Some(i) => detections.push(Detection { label: labels[i].clone(), score: b.score, bbox: b.bbox }),
                None => unmatched = unmatched.saturating_add(1),
            }
        }
        Ok((detections, unmatched))
    }
}

impl Detector for HttpDetector {
    fn detect<'a>(&'a self, req: &'a DetectRequest) -> BoxFuture<'a, Result<DetectReply, ModelError>> {
        Box::pin(self.detect_inner(req))
    }

    fn service(&self) -> &str {
        &self.inner.service
    }
}

/// Sends and reads the body up to `limit` bytes (error bodies: less), mapping transport
/// failures; statuses are left to the caller. Reading stops at the limit, so a server cannot
/// make the client hold more.
async fn fetch(request: reqwest::RequestBuilder, url: &str, limit: usize, timeout: Duration) -> Result<Raw, ModelError> {
    let mut response = request.send().await.map_err(|e| transport_error(e, url, timeout))?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let limit = if status.is_success() { limit } else { MAX_ERROR_BODY };
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

/// The error for a non-success status. The body is the service's text: measured, not quoted.
fn status_error(raw: &Raw, url: &str) -> ModelError {
    let code = raw.status.as_u16();
    let len = raw.body.len();
    let more = if raw.truncated { "+" } else { "" };
    match code {
        429 => ModelError::rate_limited(format!("rate limited by {url} (http 429, {len}{more} bytes)")).with_retry_after(raw.retry_after),
        // the server gave up waiting for us: transient, like a timeout
        408 => ModelError::timeout(format!("http 408 from {url} ({len}{more} bytes)")).with_status(code),
        500..=599 => ModelError::http_5xx(code, format!("http {code} from {url} ({len}{more} bytes)")).with_retry_after(if code == 503 {
            raw.retry_after
        } else {
            None
        }),
        _ => ModelError::rejected(format!("http {code} from {url} ({len}{more} bytes)")).with_status(code),
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(RETRY_AFTER)?.to_str().ok().and_then(parse_retry_after)
}

/// The URL with any user:password removed; unparsable text is not shown at all.
fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() || !parsed.username().is_empty() {
                // both only fail for URLs without a host, which have no credentials to hide
                let _ = parsed.set_password(None);
                let _ = parsed.set_username("");
            }
            parsed.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(api: DetectorApi) -> DetectorConfig {
        DetectorConfig::new("http://127.0.0.1:9/", api)
    }

    #[test]
    fn urls_per_contract() {
        let url = |api| HttpDetector::new(ok(api)).unwrap().inner.url.to_string();
        assert_eq!(url(DetectorApi::Hf), "http://127.0.0.1:9/");
        assert_eq!(url(DetectorApi::GroundingDino), "http://127.0.0.1:9/grounding_dino/infer");
        assert_eq!(url(DetectorApi::YoloWorld), "http://127.0.0.1:9/yolo_world/infer");
        let hf = HttpDetector::new(DetectorConfig::new("https://u:pw@x.endpoints.huggingface.cloud/detect", DetectorApi::Hf)).unwrap();
        assert_eq!(hf.service(), "hf https://x.endpoints.huggingface.cloud/detect");
    }

    #[test]
    fn bad_configs_are_refused_with_the_field() {
        let field = |c: DetectorConfig| match HttpDetector::new(c) {
            Err(DetectorConfigError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        let g = DetectorApi::GroundingDino;
        assert_eq!(field(DetectorConfig { base_url: "not a url".into(), ..ok(g) }), "base_url");
        assert_eq!(field(DetectorConfig { base_url: "ftp://x".into(), ..ok(g) }), "base_url");
        assert_eq!(field(DetectorConfig { max_in_flight: 0, ..ok(g) }), "max_in_flight");
        assert_eq!(field(DetectorConfig { request_timeout: Duration::ZERO, ..ok(g) }), "request_timeout");
        assert_eq!(field(DetectorConfig { request_budget: Some(Duration::ZERO), ..ok(g) }), "request_budget");
        assert_eq!(field(DetectorConfig { max_labels_per_request: 0, ..ok(g) }), "max_labels_per_request");
        assert_eq!(field(DetectorConfig { max_labels_per_request: 1000, ..ok(g) }), "max_labels_per_request");
        assert_eq!(field(DetectorConfig { box_threshold: f32::NAN, ..ok(g) }), "box_threshold");
        assert_eq!(field(DetectorConfig { max_reply_bytes: 0, ..ok(g) }), "max_reply_bytes");
        let bad_key = DetectorConfig { api_key: Some("sk\nSECRET".into()), ..ok(DetectorApi::Hf) };
        let msg = HttpDetector::new(bad_key).map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("api_key") && !msg.contains("SECRET"), "{msg}");
        let bad_url = DetectorConfig { base_url: "http://[SECRET".into(), ..ok(g) };
        let msg = HttpDetector::new(bad_url).map(|_| ()).unwrap_err().to_string();
        assert!(!msg.contains("SECRET"), "{msg}");
        // extreme but valid numbers build a detector (no overflow, no panic)
        let extreme = DetectorConfig { request_timeout: Duration::MAX, connect_timeout: Duration::MAX, ..ok(g) };
        assert!(HttpDetector::new(extreme).is_ok());
    }

    #[test]
    fn debug_never_shows_the_key_or_url_credentials() {
        let config = DetectorConfig {
            api_key: Some("sk-secret".into()),
            ..DetectorConfig::new("http://user:pw@host:1", DetectorApi::GroundingDino)
        };
        let shown = format!("{:?}", HttpDetector::new(config).unwrap());
        assert!(!shown.contains("sk-secret") && !shown.contains(":pw@"), "{shown}");
    }

    #[test]
    fn status_errors_measure_the_body_and_never_quote_it() {
        let raw = |code: u16, retry: Option<Duration>| Raw {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: retry,
            body: Bytes::from_static(b"SECRET image too large"),
            truncated: false,
        };
        let e = status_error(&raw(400, None), "u");
        assert_eq!((e.reason(), e.status()), ("model_rejected", Some(400)));
        assert!(!e.message().contains("SECRET") && e.message().contains("22 bytes"), "{}", e.message());
        let e = status_error(&raw(429, Some(Duration::from_secs(2))), "u");
        assert_eq!((e.reason(), e.retry_after()), ("model_rate_limited", Some(Duration::from_secs(2))));
        let e = status_error(&raw(503, Some(Duration::from_secs(1))), "u");
        assert_eq!((e.reason(), e.retry_after()), ("model_http_5xx", Some(Duration::from_secs(1))));
        assert_eq!(status_error(&raw(500, Some(Duration::from_secs(1))), "u").retry_after(), None);
        assert_eq!(status_error(&raw(408, None), "u").reason(), "model_timeout");
    }
}
