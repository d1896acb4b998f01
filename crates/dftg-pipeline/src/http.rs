//! The coordinator's HTTP API: submit a job (TOML or JSON job spec), job status, list,
//! cancel; health and readiness. A bad spec is refused with 400 naming the field.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::error::PipelineError;
use crate::job::JobSpec;
use crate::service::Coordinator;

/// Extra routes (e.g. `/metrics`) are merged by the caller.
pub fn router(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(status))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .with_state(coordinator)
        .merge(crate::metrics::route())
}

fn error(code: StatusCode, e: &PipelineError) -> Response {
    let field = match e {
        PipelineError::Invalid { field, .. } => Some(field.clone()),
        _ => None,
    };
    (code, Json(json!({"error": e.to_string(), "field": field}))).into_response()
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
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

async fn list(State(c): State<Arc<Coordinator>>) -> Response {
    Json(json!({"jobs": c.list().await})).into_response()
}

async fn status(State(c): State<Arc<Coordinator>>, Path(id): Path<String>) -> Response {
    match c.status(&id).await {
        Some(s) => Json(s).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no job {id}")}))).into_response(),
    }
}

async fn cancel(State(c): State<Arc<Coordinator>>, Path(id): Path<String>) -> Response {
    if c.cancel(&id) {
        Json(json!({"job_id": id, "cancelled": true})).into_response()
    } else {
        (StatusCode::NOT_FOUND, Json(json!({"error": format!("no job {id}")}))).into_response()
    }
}
