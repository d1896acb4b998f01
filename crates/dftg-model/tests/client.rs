//! The model client against a real HTTP server on 127.0.0.1 (axum, written here; the
//! simulator is not used so these tests pin the client alone).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use dftg_model::client::{
    image_hash, ModelClient, ModelError, ModelErrorKind, ModelRequest, OpenAiClient, OpenAiConfig, RetryPolicy, ScriptedClient,
    MAX_ATTEMPTS, MAX_MESSAGE_BYTES,
};
use serde_json::{json, Value};
use tokio::sync::{Barrier, Notify};

const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\nnot really a png";
const PROMPT: &str = "Describe the image in detail.";

/// Serves `router` on an ephemeral port; returns the base URL (`http://127.0.0.1:N/v1`).
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    format!("http://{addr}/v1")
}

fn config(base: &str) -> OpenAiConfig {
    OpenAiConfig {
        base_url: base.to_owned(),
        model: "test-model".to_owned(),
        api_key: None,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        retry: RetryPolicy { max_attempts: 4, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) },
        jitter_seed: Some(7),
        ..OpenAiConfig::default()
    }
}

fn client(config: OpenAiConfig) -> OpenAiClient {
    OpenAiClient::new(config).expect("valid config")
}

fn request() -> ModelRequest {
    ModelRequest::new(Bytes::from_static(IMAGE), "image/png", PROMPT)
}

fn completion(content: Value) -> String {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    })
    .to_string()
}

/// One canned answer of the scripted server.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
}

fn canned(status: u16, body: impl Into<String>) -> Canned {
    Canned { status, headers: Vec::new(), body: body.into() }
}

fn ok(text: &str) -> Canned {
    canned(200, completion(json!(text)))
}

/// Answers the n-th request with the n-th canned reply (the last one repeats) and records
/// what it received.
#[derive(Clone, Default)]
struct Script {
    replies: Arc<Vec<Canned>>,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

impl Script {
    fn new(replies: Vec<Canned>) -> Self {
        Script { replies: Arc::new(replies), ..Script::default() }
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    fn seen(&self) -> Vec<(HeaderMap, Bytes)> {
        self.seen.lock().expect("lock").clone()
    }
    async fn serve(&self) -> String {
        let router =
            Router::new().route("/v1/chat/completions", post(scripted)).route("/v1/models", get(scripted)).with_state(self.clone());
        serve(router).await
    }
}

async fn scripted(State(script): State<Script>, headers: HeaderMap, body: Bytes) -> Response {
    let n = script.hits.fetch_add(1, Ordering::SeqCst);
    script.seen.lock().expect("lock").push((headers, body));
    let reply = &script.replies[n.min(script.replies.len() - 1)];
    let mut response = (StatusCode::from_u16(reply.status).expect("status"), reply.body.clone()).into_response();
    for (name, value) in &reply.headers {
        response.headers_mut().insert(*name, value.parse().expect("header value"));
    }
    response
}

async fn fail(client: &OpenAiClient) -> ModelError {
    match client.complete(&request()).await {
        Ok(reply) => panic!("expected an error, got {reply:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn usage_is_optional_and_partial_usage_still_reads() {
    let no_usage = json!({"choices": [{"message": {"role": "assistant", "content": "A cat."}}]}).to_string();
    let partial = json!({"choices": [{"message": {"role": "assistant", "content": "A cat."}}], "usage": {"prompt_tokens": 9}}).to_string();
    let script = Script::new(vec![canned(200, no_usage), canned(200, partial)]);
    let client = client(config(&script.serve().await));
    assert_eq!(client.complete(&request()).await.expect("completion").usage, None);
    assert_eq!(client.complete(&request()).await.expect("completion").usage, Some(dftg_core::tokens::TokenUsage::new(9, 0)));
}

#[tokio::test]
async fn sends_the_openai_request_and_returns_the_text() {
    let script = Script::new(vec![ok("A dog on a red sofa.")]);
    let base = script.serve().await;
    let client = client(OpenAiConfig { api_key: Some("sk-test".into()), max_tokens: Some(77), temperature: Some(0.5), ..config(&base) });
    assert_eq!(client.name(), "test-model");

    let reply = client.complete(&request()).await.expect("completion");
    assert_eq!(reply.text, "A dog on a red sofa.");
    assert_eq!(reply.attempts, 1);
    assert_eq!(reply.usage, Some(dftg_core::tokens::TokenUsage::new(10, 5)));

    let seen = script.seen();
    assert_eq!(seen.len(), 1);
    let (headers, body) = &seen[0];
    assert_eq!(headers.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer sk-test"));
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    let body: Value = serde_json::from_slice(body).expect("json body");
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["max_tokens"], 77);
    assert_eq!(body["temperature"], 0.5);
    let data_url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(IMAGE));
    assert_eq!(
        body["messages"],
        json!([{
            "role": "user",
            "content": [
                {"type": "text", "text": PROMPT},
                {"type": "image_url", "image_url": {"url": data_url}}
            ]
        }])
    );
}

#[tokio::test]
async fn no_key_no_auth_header_and_unset_options_are_omitted() {
    let script = Script::new(vec![ok("fine")]);
    let base = script.serve().await;
    let client = client(OpenAiConfig { max_tokens: None, temperature: None, ..config(&base) });
    client.complete(&request()).await.expect("completion");
    let (headers, body) = &script.seen()[0];
    assert!(headers.get("authorization").is_none());
    let body: Value = serde_json::from_slice(body).expect("json body");
    assert!(body.get("max_tokens").is_none() && body.get("temperature").is_none(), "{body}");
}

#[tokio::test]
async fn retries_500_503_429_then_succeeds() {
    let script = Script::new(vec![
        canned(500, "boom"),
        Canned { status: 503, headers: vec![("retry-after", "0")], body: "overloaded".into() },
        Canned { status: 429, headers: vec![("retry-after", "0")], body: "slow down".into() },
        ok("third time lucky"),
    ]);
    let base = script.serve().await;
    let reply = client(config(&base)).complete(&request()).await.expect("completion after retries");
    assert_eq!(reply.text, "third time lucky");
    assert_eq!(reply.attempts, 4);
    assert_eq!(script.hits(), 4);
}

#[tokio::test]
async fn gives_up_after_max_attempts_with_http_5xx() {
    let script = Script::new(vec![canned(502, "upstream\n   down")]);
    let base = script.serve().await;
    let client = client(OpenAiConfig { retry: RetryPolicy { max_attempts: 3, ..config(&base).retry }, ..config(&base) });
    let e = fail(&client).await;
    assert_eq!(e.reason(), "model_http_5xx");
    assert_eq!(e.kind(), ModelErrorKind::Http5xx);
    assert_eq!(e.attempts(), 3);
    assert_eq!(e.status(), Some(502));
    assert_eq!(script.hits(), 3);
    assert_eq!(e.message(), format!("http 502 from {base}/chat/completions; body \"upstream down\""));
    assert_eq!(e.to_string(), format!("{} (attempts: 3)", e.message()));
}

#[tokio::test]
async fn rate_limit_exhausted_is_reported_with_retry_after() {
    let script = Script::new(vec![Canned { status: 429, headers: vec![("retry-after", "0")], body: "quota".into() }]);
    let base = script.serve().await;
    let client = client(OpenAiConfig { retry: RetryPolicy { max_attempts: 2, ..config(&base).retry }, ..config(&base) });
    let e = fail(&client).await;
    assert_eq!(e.reason(), "model_rate_limited");
    assert_eq!((e.attempts(), script.hits()), (2, 2));
    assert_eq!(e.retry_after(), Some(Duration::ZERO));
    assert!(e.retryable());
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let script = Script::new(vec![canned(400, "image too large")]);
    let base = script.serve().await;
    let e = fail(&client(config(&base))).await;
    assert_eq!(e.reason(), "model_rejected");
    assert!(!e.retryable());
    assert_eq!((e.attempts(), script.hits()), (1, 1));
    assert_eq!(e.status(), Some(400));
    assert_eq!(e.message(), format!("http 400 from {base}/chat/completions; body \"image too large\""));
}

#[tokio::test]
async fn malformed_body_is_retried_then_reported() {
    let script = Script::new(vec![canned(200, "<html>not json</html>")]);
    let base = script.serve().await;
    let client = client(OpenAiConfig { retry: RetryPolicy { max_attempts: 3, ..config(&base).retry }, ..config(&base) });
    let e = fail(&client).await;
    assert_eq!(e.reason(), "model_malformed_response");
    assert_eq!((e.attempts(), script.hits()), (3, 3));
    assert_eq!(e.message(), format!("malformed response from {base}/chat/completions (http 200): not json at line 1 column 1 (21 bytes)"));
    assert!(!e.message().contains("html"), "a successful body is model output and is not quoted: {e}");
}

#[tokio::test]
async fn no_choices_is_malformed() {
    let script = Script::new(vec![canned(200, r#"{"error":{"message":"oops"}}"#), canned(200, r#"{"choices":[]}"#)]);
    let base = script.serve().await;
    let client = client(OpenAiConfig { retry: RetryPolicy { max_attempts: 2, ..config(&base).retry }, ..config(&base) });
    let e = fail(&client).await;
    assert_eq!(e.reason(), "model_malformed_response");
    assert!(e.message().contains("has no choices"), "{e}");
    assert_eq!(script.hits(), 2);
}

#[tokio::test]
async fn malformed_then_good_succeeds() {
    let script = Script::new(vec![canned(200, "{truncated"), ok("recovered")]);
    let base = script.serve().await;
    let reply = client(config(&base)).complete(&request()).await.expect("completion");
    assert_eq!((reply.text.as_str(), reply.attempts), ("recovered", 2));
}

#[tokio::test]
async fn empty_or_null_content_is_an_empty_response() {
    for content in [json!(""), json!("  \n "), Value::Null] {
        let script = Script::new(vec![canned(200, completion(content.clone())), ok("never reached")]);
        let base = script.serve().await;
        let e = fail(&client(config(&base))).await;
        assert_eq!(e.reason(), "model_empty_response", "content {content}");
        assert_eq!((e.attempts(), script.hits()), (1, 1), "content {content}");
        assert!(e.message().starts_with(&format!("empty response from {base}/chat/completions")), "{e}");
        assert!(e.message().ends_with("finish_reason stop"), "{e}");
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<String>().await
            }
        }),
    );
    let base = serve(router).await;
    let client = client(OpenAiConfig {
        request_timeout: Duration::from_millis(200),
        retry: RetryPolicy { max_attempts: 2, ..config(&base).retry },
        ..config(&base)
    });
    let e = fail(&client).await;
    assert_eq!(e.reason(), "model_timeout");
    assert_eq!(e.attempts(), 2);
    assert!(e.message().contains(&format!("{base}/chat/completions")) && e.message().contains("200 ms"), "{e}");
    // Each attempt reached the handler unless the machine is very slow.
    assert!((1..=2).contains(&hits.load(Ordering::SeqCst)));
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let base = format!("http://127.0.0.1:{port}/v1");
    let client = client(OpenAiConfig { retry: RetryPolicy { max_attempts: 2, ..config(&base).retry }, ..config(&base) });
    let e = fail(&client).await;
    assert_eq!(e.reason(), "model_unreachable");
    assert_eq!(e.attempts(), 2);
    assert!(e.message().starts_with(&format!("cannot connect to {base}/chat/completions")), "{e}");
    assert_eq!(e.message(), e.message().to_lowercase());
}

#[derive(Default)]
struct Concurrency {
    current: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

#[tokio::test]
async fn in_flight_requests_are_bounded() {
    const BOUND: usize = 4;
    const CALLS: usize = 20; // a multiple of BOUND, so every barrier generation fills
    let state = Arc::new(Concurrency::default());
    // Each request waits until BOUND are inside together (so the server provably sees BOUND
    // at once), then stays a little longer only to create overlap: a request past the bound
    // would arrive meanwhile and push `max` over BOUND.
    let barrier = Arc::new(Barrier::new(BOUND));
    let handler_state = state.clone();
    let router = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let state = handler_state.clone();
            let barrier = barrier.clone();
            async move {
                let now = state.current.fetch_add(1, Ordering::SeqCst) + 1;
                state.max.fetch_max(now, Ordering::SeqCst);
                state.total.fetch_add(1, Ordering::SeqCst);
                barrier.wait().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                state.current.fetch_sub(1, Ordering::SeqCst);
                completion(json!("ok"))
            }
        }),
    );
    let base = serve(router).await;
    let client: Arc<dyn ModelClient> = Arc::new(client(OpenAiConfig { max_in_flight: BOUND, ..config(&base) }));
    let request = request();
    let calls = (0..CALLS).map(|_| client.complete(&request));
    let results = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(calls))
        .await
        .unwrap_or_else(|_| panic!("stuck; server saw at most {} at once", state.max.load(Ordering::SeqCst)));
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(state.max.load(Ordering::SeqCst), BOUND);
    assert_eq!(state.total.load(Ordering::SeqCst), CALLS);
}

#[tokio::test]
async fn backoff_does_not_hold_an_in_flight_slot() {
    // With one slot, a request sleeping 30 s on Retry-After must not block another request.
    #[derive(Clone)]
    struct S {
        first_failed: Arc<Notify>,
    }
    async fn handler(State(s): State<S>, body: Bytes) -> Response {
        let body: Value = serde_json::from_slice(&body).expect("json");
        if body["messages"][0]["content"][0]["text"] == "slow" {
            s.first_failed.notify_one();
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "30")], "busy").into_response()
        } else {
            completion(json!("fast answer")).into_response()
        }
    }
    let state = S { first_failed: Arc::new(Notify::new()) };
    let router = Router::new().route("/v1/chat/completions", post(handler)).with_state(state.clone());
    let base = serve(router).await;
    let client = client(OpenAiConfig {
        max_in_flight: 1,
        retry: RetryPolicy { max_attempts: 2, base_delay: Duration::from_millis(1), max_delay: Duration::from_secs(30) },
        ..config(&base)
    });

    let slow_client = client.clone();
    let slow = tokio::spawn(async move { slow_client.complete(&ModelRequest::new(Bytes::from_static(IMAGE), "image/png", "slow")).await });
    state.first_failed.notified().await;
    let fast = ModelRequest::new(Bytes::from_static(IMAGE), "image/png", "fast");
    let reply = tokio::time::timeout(Duration::from_secs(10), client.complete(&fast))
        .await
        .expect("the backoff sleep held the only slot")
        .expect("completion");
    assert_eq!(reply.text, "fast answer");
    assert!(!slow.is_finished(), "the slow request should still be honouring retry-after");
    slow.abort();
}

#[tokio::test]
async fn list_models_for_the_health_check() {
    let list = json!({"object": "list", "data": [{"id": "test-model", "object": "model", "owned_by": "me", "created": 5}]});
    let script = Script::new(vec![canned(200, list.to_string())]);
    let base = script.serve().await;
    let client = client(OpenAiConfig { api_key: Some("sk-test".into()), ..config(&base) });
    let models = client.list_models().await.expect("model list");
    assert_eq!(models.data.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["test-model"]);
    let (headers, _) = &script.seen()[0];
    assert_eq!(headers.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer sk-test"));

    let down = Script::new(vec![canned(503, "loading model")]);
    let base = down.serve().await;
    let e = client_for(&base).list_models().await.expect_err("503");
    assert_eq!((e.reason(), e.attempts(), down.hits()), ("model_http_5xx", 1, 1));
    assert!(e.message().contains(&format!("{base}/models")), "{e}");
}

fn client_for(base: &str) -> OpenAiClient {
    client(config(base))
}

#[tokio::test]
async fn scripted_client_answers_from_a_closure_or_a_map() {
    let by_closure = ScriptedClient::new("sim-a", |req: &ModelRequest| {
        if req.prompt.contains("fail") {
            Err(ModelError::http_5xx(503, "scripted outage"))
        } else {
            Ok(format!("{} bytes of {}", req.image.len(), req.mime))
        }
    });
    let model: Arc<dyn ModelClient> = Arc::new(by_closure);
    assert_eq!(model.name(), "sim-a");
    let reply = model.complete(&request()).await.expect("reply");
    assert_eq!((reply.text.as_str(), reply.attempts), ("24 bytes of image/png", 1));
    let e = model.complete(&ModelRequest::new(Bytes::new(), "image/png", "fail")).await.expect_err("scripted error");
    assert_eq!((e.reason(), e.attempts(), e.status()), ("model_http_5xx", 1, Some(503)));

    let by_map = ScriptedClient::from_map("sim-b", [(image_hash(IMAGE), "a cat".to_owned()), (image_hash(b"blank"), " ".to_owned())]);
    assert_eq!(by_map.complete(&request()).await.expect("known image").text, "a cat");
    let blank = ModelRequest::new(Bytes::from_static(b"blank"), "image/png", PROMPT);
    assert_eq!(by_map.complete(&blank).await.expect_err("blank").reason(), "model_empty_response");
    let unknown = ModelRequest::new(Bytes::from_static(b"other"), "image/png", PROMPT);
    let e = by_map.complete(&unknown).await.expect_err("unknown image");
    assert_eq!(e.reason(), "model_rejected");
    assert!(e.message().contains(&image_hash(b"other")), "{e}");
    assert_eq!(by_map.calls(), 3);
}

#[test]
fn reason_codes_are_stable() {
    let reasons: Vec<&str> = ModelErrorKind::ALL.iter().map(|k| k.reason()).collect();
    assert_eq!(
        reasons,
        [
            "model_unreachable",
            "model_timeout",
            "model_http_5xx",
            "model_rate_limited",
            "model_rejected",
            "model_malformed_response",
            "model_empty_response",
            "reply_too_long"
        ]
    );
    let retryable: Vec<bool> = ModelErrorKind::ALL.iter().map(|k| k.retryable()).collect();
    assert_eq!(retryable, [true, true, true, true, false, true, false, false]);
}

#[tokio::test]
async fn a_reply_over_the_limit_is_reply_too_long_and_not_retried() {
    let limit = 100;
    let script = Script::new(vec![ok(&"a".repeat(limit + 1)), ok(&"b".repeat(limit))]);
    let base = script.serve().await;
    let client = client(OpenAiConfig { max_reply_bytes: limit, ..config(&base) });
    let e = fail(&client).await;
    assert_eq!((e.reason(), e.attempts(), script.hits()), ("reply_too_long", 1, 1));
    assert!(!e.retryable());
    assert_eq!(e.message(), format!("reply from {base}/chat/completions (http 200) is 101 bytes, over the limit of 100 bytes"));
    // exactly at the limit is fine
    assert_eq!(client.complete(&request()).await.expect("at the limit").text.len(), limit);
}

/// A body just under the old 8 MiB cap, streamed without a length (so the client must stop
/// reading on its own), is refused as too long after reading at most the body limit.
#[tokio::test]
async fn a_huge_streamed_body_is_refused_while_reading() {
    use futures::StreamExt as _;
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let router = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let counter = counter.clone();
            async move {
                let head = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":""#;
                let chunk = Bytes::from(vec![b'w'; 64 << 10]);
                let chunks = futures::stream::iter(
                    std::iter::once(Bytes::from_static(head.as_bytes())).chain(std::iter::repeat_n(chunk, 127)),
                )
                .map(move |c| {
                    counter.fetch_add(c.len(), Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(c)
                });
                axum::body::Body::from_stream(chunks)
            }
        }),
    );
    let base = serve(router).await;
    let e = fail(&client(config(&base))).await;
    assert_eq!((e.reason(), e.attempts()), ("reply_too_long", 1));
    assert!(e.message().contains("exceeds") && !e.message().contains("www"), "{e}");
    assert!(e.message().len() < 300, "{e}");
}

#[tokio::test]
async fn attempts_are_capped_whatever_the_policy_says() {
    let script = Script::new(vec![canned(500, "boom")]);
    let base = script.serve().await;
    let client = client(OpenAiConfig {
        retry: RetryPolicy { max_attempts: u32::MAX, base_delay: Duration::ZERO, max_delay: Duration::ZERO },
        ..config(&base)
    });
    let e = fail(&client).await;
    assert_eq!((e.reason(), e.attempts(), script.hits()), ("model_http_5xx", MAX_ATTEMPTS, MAX_ATTEMPTS as usize));
}

#[tokio::test]
async fn the_request_budget_ends_retries_and_cuts_the_attempt_short() {
    let router = Router::new().route("/v1/chat/completions", post(std::future::pending::<String>));
    let base = serve(router).await;
    let client = client(OpenAiConfig {
        request_timeout: Duration::from_secs(3600),
        request_budget: Some(Duration::from_millis(300)),
        retry: RetryPolicy { max_attempts: 10, base_delay: Duration::ZERO, max_delay: Duration::ZERO },
        ..config(&base)
    });
    // the guard only turns a hang into a failure; the budget itself ends the request
    let e = tokio::time::timeout(Duration::from_secs(60), fail(&client)).await.expect("the budget did not end the request");
    assert_eq!((e.reason(), e.attempts()), ("model_timeout", 1));
    assert!(e.message().ends_with("request budget spent"), "{e}");
}

#[tokio::test]
async fn error_bodies_are_excerpted_short_and_printable() {
    let body = format!("{}\u{1b}[2J secret tail", "é".repeat(50_000));
    let script = Script::new(vec![canned(400, body)]);
    let base = script.serve().await;
    let e = fail(&client(config(&base))).await;
    assert_eq!(e.reason(), "model_rejected");
    assert!(e.message().len() <= MAX_MESSAGE_BYTES, "{}", e.message().len());
    assert!(e.message().is_ascii() || e.message().ends_with('…') || e.message().ends_with("…\""), "{e}");
    assert!(!e.message().contains('\u{1b}') && !e.message().contains("secret"), "{e}");
}

#[tokio::test]
async fn an_unknown_finish_reason_is_not_echoed() {
    let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "\u{1b}[31minjected"}]});
    let script = Script::new(vec![canned(200, body.to_string())]);
    let base = script.serve().await;
    let e = fail(&client(config(&base))).await;
    assert_eq!(e.reason(), "model_empty_response");
    assert!(e.message().ends_with("finish_reason other") && !e.message().contains("injected"), "{e}");
}
