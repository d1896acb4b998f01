//! The coordinator's HTTP API: submit a job (TOML or JSON job spec), job status, list,
//! cancel, delete; health and readiness. Every route but `/healthz`, `/readyz` and
//! `/metrics` needs a bearer token from the operator's token file. A bad spec is refused with
//! 400 naming the field; error texts are bounded and never quote an input file.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::coordinator::{CancelOutcome, Coordinator};
use crate::error::PipelineError;
use crate::job::{is_job_id, JobSpec};

/// Largest job spec accepted (a spec is a few hundred bytes).
pub const MAX_SPEC_BYTES: usize = 64 << 10;
/// Tokens are compared as SHA-256 digests, so the comparison takes the same time whatever
/// the token's length and wherever it differs.
const MIN_TOKEN_LEN: usize = 16;

/// The bearer tokens the API accepts. Empty: no authentication (the coordinator then binds
/// only loopback).
#[derive(Clone, Default)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.digests.len())
    }
}

impl Tokens {
    /// One token per line; blank lines and `#` comments are skipped. The text is never
    /// echoed: errors say which line is wrong, not what it holds.
    pub fn parse(text: &str) -> Result<Self, PipelineError> {
        let mut digests = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.len() < MIN_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(PipelineError::invalid(
                    "token-file",
                    format!("line {}: a token is at least {MIN_TOKEN_LEN} printable characters", i + 1),
                ));
            }
            digests.push(digest(t));
        }
        if digests.is_empty() {
            return Err(PipelineError::invalid("token-file", "holds no token"));
        }
        Ok(Tokens { digests })
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the tokens; every configured token is compared, each in
    /// constant time.
    pub fn accepts(&self, presented: &str) -> bool {
        let d = digest(presented);
        let mut found = 0u8;
        for known in &self.digests {
            let diff = known.iter().zip(d.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found |= u8::from(diff == 0);
        }
        found == 1
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The API, with `tokens` required on every route but health, readiness and metrics.
pub fn router(coordinator: Arc<Coordinator>, tokens: Tokens) -> Router {
    let ready_check = coordinator.clone();
    let api = Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(status).delete(delete))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .layer(DefaultBodyLimit::max(MAX_SPEC_BYTES))
        .route_layer(middleware::from_fn_with_state(Arc::new(tokens), authenticate))
        .with_state(coordinator);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(move || ready(ready_check.clone())))
        .merge(api)
        .merge(crate::metrics::route())
}

/// 200 when the store and the broker answer, 503 with the part that does not.
async fn ready(c: Arc<Coordinator>) -> Response {
    match c.ready().await {
        Ok(()) => "ready".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn authenticate(State(tokens): State<Arc<Tokens>>, request: Request, next: Next) -> Response {
    if tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if tokens.accepts(t.trim()) => next.run(request).await,
        _ => {
            crate::metrics::metrics().api_unauthorized.inc();
            let mut r = (StatusCode::UNAUTHORIZED, Json(json!({"error": "missing or wrong bearer token"}))).into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            r
        }
    }
}

fn error(code: StatusCode, e: &PipelineError) -> Response {
    let field = match e {
        PipelineError::Invalid { field, .. } => Some(field.clone()),
        _ => None,
    };
    (code, Json(json!({"error": e.report(), "field": field}))).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "no such job"}))).into_response()
}

async fn submit(State(c): State<Arc<Coordinator>>, body: Bytes) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => return error(StatusCode::BAD_REQUEST, &PipelineError::invalid("job", "the body is not UTF-8 text")),
    };
    let spec = match JobSpec::parse(text) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match c.submit(spec).await {
        Ok(job_id) => (StatusCode::CREATED, Json(json!({"job_id": job_id}))).into_response(),
        Err(e @ PipelineError::Invalid { .. }) => error(StatusCode::BAD_REQUEST, &e),
        Err(e @ PipelineError::Busy(_)) => error(StatusCode::TOO_MANY_REQUESTS, &e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

async fn list(State(c): State<Arc<Coordinator>>) -> Response {
    Json(json!({"jobs": c.list().await})).into_response()
}

async fn status(State(c): State<Arc<Coordinator>>, Path(id): Path<String>) -> Response {
    if !is_job_id(&id) {
        return not_found();
    }
    match c.status(&id).await {
        // `outputs`: where the job writes, beside the status (clients ignore what they do not know)
        Some(s) => match (serde_json::to_value(&s), c.outputs(&id)) {
            (Ok(serde_json::Value::Object(mut v)), Some(outputs)) => {
                v.insert("outputs".into(), serde_json::Value::String(outputs));
                Json(serde_json::Value::Object(v)).into_response()
            }
            _ => Json(s).into_response(),
        },
        None => not_found(),
    }
}

async fn cancel(State(c): State<Arc<Coordinator>>, Path(id): Path<String>) -> Response {
    if !is_job_id(&id) {
        return not_found();
    }
    match c.cancel(&id) {
        CancelOutcome::Cancelled => Json(json!({"job_id": id, "cancelled": true})).into_response(),
        CancelOutcome::AlreadyEnded(phase) => {
            (StatusCode::CONFLICT, Json(json!({"job_id": id, "cancelled": false, "error": "the job has already ended", "phase": phase})))
                .into_response()
        }
        CancelOutcome::NotFound => not_found(),
    }
}

async fn delete(State(c): State<Arc<Coordinator>>, Path(id): Path<String>) -> Response {
    if !is_job_id(&id) {
        return not_found();
    }
    match c.delete(&id).await {
        Ok(true) => Json(json!({"job_id": id, "deleted": true})).into_response(),
        Ok(false) => not_found(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_parsed_per_line_and_compared_exactly() {
        let t = Tokens::parse("# operators\n0123456789abcdef-one\n\n0123456789abcdef-two\n").unwrap();
        assert!(t.accepts("0123456789abcdef-one") && t.accepts("0123456789abcdef-two"));
        assert!(!t.accepts("0123456789abcdef-on") && !t.accepts("") && !t.accepts("0123456789abcdef-one "));
        assert!(Tokens::parse("# nothing\n").is_err());
        let err = Tokens::parse("short-secret\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && !err.contains("short-secret"), "{err}");
    }
}
