//! The detector client against a real HTTP server on 127.0.0.1 (axum, written here, so these
//! tests pin the client alone): failure modes and their error kinds, retries, chunking, the
//! in-flight bound, credentials.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use dftg_model::client::{ModelErrorKind, RetryPolicy};
use dftg_model::detect::{DetectRequest, Detector, DetectorApi, DetectorConfig, HttpDetector};
use serde_json::{json, Value};
use tokio::sync::Barrier;

const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\nnot really a png";

/// What the fake detector does with one request.
#[derive(Clone)]
enum Behave {
    /// This status and body (and `Retry-After`, when given).
    Reply(u16, String, Option<&'static str>),
    /// Never answer.
    Hang,
    /// Answer with one box per requested label, in the contract of the path.
    Detect,
}

/// One request as the fake detector saw it.
#[derive(Clone)]
struct Seen {
    path: String,
    labels: Vec<String>,
    auth: Option<String>,
    body: Value,
}

struct Fake {
    /// Behaviours for the next requests, then `default`.
    script: Mutex<VecDeque<Behave>>,
    default: Behave,
    /// Requests whose labels contain this one fail with 400.
    fail_label: Option<&'static str>,
    /// Requests wait here in groups of its size before answering.
    barrier: Option<Barrier>,
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Fake {
    fn new(default: Behave) -> Self {
        Fake {
            script: Mutex::new(VecDeque::new()),
            default,
            fail_label: None,
            barrier: None,
            seen: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    fn then(self, first: Vec<Behave>) -> Self {
        *self.script.lock().unwrap() = first.into();
        self
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn labels(&self) -> Vec<Vec<String>> {
        self.seen.lock().unwrap().iter().map(|s| s.labels.clone()).collect()
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(State(fake): State<Arc<Fake>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let now = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&fake.in_flight);
    fake.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let labels_value = v.get("text").or_else(|| v.pointer("/parameters/candidate_labels")).cloned().unwrap_or(json!([]));
    let labels: Vec<String> = serde_json::from_value(labels_value).unwrap_or_default();
    let auth = headers.get("authorization").map(|h| h.to_str().unwrap_or("").to_owned());
    fake.seen.lock().unwrap().push(Seen { path: uri.path().to_owned(), labels: labels.clone(), auth, body: v });
    if let Some(barrier) = &fake.barrier {
        barrier.wait().await;
    }
    if fake.fail_label.is_some_and(|bad| labels.iter().any(|l| l == bad)) {
        return (StatusCode::BAD_REQUEST, "label not allowed").into_response();
    }
    let behave = fake.script.lock().unwrap().pop_front().unwrap_or_else(|| fake.default.clone());
    match behave {
        Behave::Reply(status, body, retry_after) => {
            let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
            if let Some(ra) = retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            r
        }
        Behave::Hang => std::future::pending().await,
        Behave::Detect if uri.path().ends_with("/infer") => {
            let predictions: Vec<Value> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| json!({"x": 10 + 20 * i, "y": 10, "width": 10, "height": 10, "confidence": 0.9, "class": l}))
                .collect();
            axum::Json(json!({ "predictions": predictions })).into_response()
        }
        Behave::Detect => {
            let boxes: Vec<Value> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| json!({"score": 0.9, "label": l, "box": {"xmin": 20 * i, "ymin": 0, "xmax": 20 * i + 10, "ymax": 10}}))
                .collect();
            axum::Json(boxes).into_response()
        }
    }
}

/// Serves `fake` on an ephemeral port; returns `http://127.0.0.1:N`.
async fn serve(fake: Arc<Fake>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let app = Router::new().fallback(handle).with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

fn config(base: &str, api: DetectorApi) -> DetectorConfig {
    DetectorConfig {
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        retry: RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) },
        jitter_seed: Some(7),
        ..DetectorConfig::new(base, api)
    }
}

fn detector(config: DetectorConfig) -> HttpDetector {
    HttpDetector::new(config).expect("valid config")
}

fn request(labels: &[&str]) -> DetectRequest {
    DetectRequest::new(Bytes::from_static(IMAGE), labels.iter().copied())
}

#[tokio::test]
async fn transient_failures_are_retried_until_the_reply() {
    let fake = Arc::new(
        Fake::new(Behave::Detect).then(vec![Behave::Reply(503, "overloaded".into(), Some("0")), Behave::Reply(500, "oops".into(), None)]),
    );
    let base = serve(fake.clone()).await;
    let reply = detector(config(&base, DetectorApi::GroundingDino)).detect(&request(&["dog", "cat"])).await.unwrap();
    assert_eq!((reply.requests, reply.attempts, reply.unmatched), (1, 3, 0));
    let labels: Vec<&str> = reply.detections.iter().map(|d| d.label.as_str()).collect();
    assert_eq!(labels, ["dog", "cat"]);
    // centre (10, 10), size 10 → corners
    assert_eq!(reply.detections[0].bbox, [5.0, 5.0, 15.0, 15.0]);
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn each_failure_gets_its_kind_and_the_body_is_never_quoted() {
    let cases: Vec<(Behave, ModelErrorKind, u32)> = vec![
        (Behave::Reply(400, "SECRET bad image".into(), None), ModelErrorKind::Rejected, 1),
        (Behave::Reply(404, "SECRET no such route".into(), None), ModelErrorKind::Rejected, 1),
        (Behave::Reply(429, "SECRET slow down".into(), Some("0")), ModelErrorKind::RateLimited, 3),
        (Behave::Reply(408, "SECRET".into(), None), ModelErrorKind::Timeout, 3),
        (Behave::Reply(502, "SECRET".into(), None), ModelErrorKind::Http5xx, 3),
        (Behave::Reply(200, "<html>SECRET</html>".into(), None), ModelErrorKind::MalformedResponse, 3),
        (Behave::Reply(200, String::new(), None), ModelErrorKind::MalformedResponse, 3),
        (Behave::Reply(200, "null".into(), None), ModelErrorKind::MalformedResponse, 3),
        (
            Behave::Reply(
                200,
                r#"{"predictions": [{"x": 1, "y": 1, "width": 1, "height": 1, "confidence": "SECRET", "class": "dog"}]}"#.into(),
                None,
            ),
            ModelErrorKind::MalformedResponse,
            3,
        ),
    ];
    for (behave, kind, attempts) in cases {
        let fake = Arc::new(Fake::new(behave));
        let base = serve(fake.clone()).await;
        let e = detector(config(&base, DetectorApi::GroundingDino)).detect(&request(&["dog"])).await.unwrap_err();
        assert_eq!((e.kind(), e.attempts()), (kind, attempts), "{e}");
        assert_eq!(fake.requests(), attempts as usize);
        assert!(!e.message().contains("SECRET"), "{}", e.message());
        assert!(e.message().contains(&base), "{}", e.message());
    }
}

#[tokio::test]
async fn an_oversized_reply_is_refused_without_reading_it_all() {
    let huge = json!({"predictions": [], "padding": "x".repeat(64 << 10)}).to_string();
    let fake = Arc::new(Fake::new(Behave::Reply(200, huge, None)));
    let base = serve(fake.clone()).await;
    let small = DetectorConfig { max_reply_bytes: 4 << 10, ..config(&base, DetectorApi::YoloWorld) };
    let e = detector(small).detect(&request(&["dog"])).await.unwrap_err();
    // not retried: the same question would get the same runaway reply
    assert_eq!((e.kind(), e.attempts()), (ModelErrorKind::ReplyTooLong, 1));
    assert!(e.message().contains("exceeds 4096 bytes"), "{}", e.message());
}

#[tokio::test]
async fn a_detector_that_never_answers_times_out() {
    let fake = Arc::new(Fake::new(Behave::Hang));
    let base = serve(fake.clone()).await;
    let slow = DetectorConfig {
        request_timeout: Duration::from_millis(200),
        retry: RetryPolicy { max_attempts: 2, base_delay: Duration::ZERO, max_delay: Duration::ZERO },
        ..config(&base, DetectorApi::Hf)
    };
    let e = detector(slow).detect(&request(&["dog"])).await.unwrap_err();
    assert_eq!((e.kind(), e.attempts()), (ModelErrorKind::Timeout, 2));
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn an_unreachable_detector_is_reported_as_such() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = DetectorConfig { retry: RetryPolicy::none(), ..config(&format!("http://{addr}"), DetectorApi::GroundingDino) };
    let e = detector(c).detect(&request(&["dog"])).await.unwrap_err();
    assert_eq!((e.kind(), e.reason()), (ModelErrorKind::Unreachable, "model_unreachable"));
}

#[tokio::test]
async fn long_label_lists_are_chunked_and_bounded_in_flight() {
    // requests wait for each other in pairs: with a bound of 2 they answer, and a third
    // request in flight would show in the maximum
    let fake = Arc::new(Fake { barrier: Some(Barrier::new(2)), ..Fake::new(Behave::Detect) });
    let base = serve(fake.clone()).await;
    let c = DetectorConfig { max_in_flight: 2, max_labels_per_request: 2, ..config(&base, DetectorApi::GroundingDino) };
    let labels = ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10", "a11", "a12"];
    let det = detector(c);
    let reply = tokio::time::timeout(Duration::from_secs(20), det.detect(&request(&labels))).await.expect("no deadlock").unwrap();
    assert_eq!((reply.requests, reply.attempts), (6, 6));
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 2);
    let mut asked: Vec<String> = fake.labels().into_iter().inspect(|chunk| assert_eq!(chunk.len(), 2)).flatten().collect();
    asked.sort();
    let mut expected: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(asked, expected);
    let mut got: Vec<String> = reply.detections.iter().map(|d| d.label.clone()).collect();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(det.in_flight(), 0);
}

#[tokio::test]
async fn one_failed_chunk_fails_its_image_and_no_other() {
    let fake = Arc::new(Fake { fail_label: Some("bad"), ..Fake::new(Behave::Detect) });
    let base = serve(fake.clone()).await;
    let det = detector(DetectorConfig { max_labels_per_request: 2, ..config(&base, DetectorApi::Hf) });
    let (bad, good) = (request(&["dog", "cat", "bad"]), request(&["dog", "cat", "bus"]));
    let (failed, fine) = tokio::join!(det.detect(&bad), det.detect(&good));
    assert_eq!(failed.unwrap_err().kind(), ModelErrorKind::Rejected);
    assert_eq!(fine.unwrap().detections.len(), 3);
}

#[tokio::test]
async fn nothing_to_ask_sends_nothing() {
    let fake = Arc::new(Fake::new(Behave::Detect));
    let base = serve(fake.clone()).await;
    let reply = detector(config(&base, DetectorApi::Hf)).detect(&request(&["", "  "])).await.unwrap();
    assert_eq!((reply.requests, reply.detections.len()), (0, 0));
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn keys_go_where_each_contract_expects_them_and_phrases_are_snapped() {
    let fake = Arc::new(Fake::new(Behave::Detect).then(vec![Behave::Reply(
            200,
            json!([{"score": 0.8, "label": "Dogs", "box": {"xmin": 0, "ymin": 0, "xmax": 5, "ymax": 5}},
                                  {"score": 0.7, "label": "a red fire hydrant", "box": {"xmin": 0, "ymin": 0, "xmax": 5, "ymax": 5}},
                                  {"score": 0.6, "label": "unicorn", "box": {"xmin": 0, "ymin": 0, "xmax": 5, "ymax": 5}}])
            .to_string(),
            None,
        )]));
    let base = serve(fake.clone()).await;
    let hf = detector(DetectorConfig { api_key: Some("hf-key".into()), ..config(&format!("{base}/models/owlv2"), DetectorApi::Hf) });
    let reply = hf.detect(&request(&["dog", "fire hydrant"])).await.unwrap();
    let labels: Vec<&str> = reply.detections.iter().map(|d| d.label.as_str()).collect();
    assert_eq!((labels, reply.unmatched), (vec!["dog", "fire hydrant"], 1));
    let rf = detector(DetectorConfig { api_key: Some("rf-key".into()), ..config(&base, DetectorApi::YoloWorld) });
    rf.detect(&request(&["dog"])).await.unwrap();
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/models/owlv2");
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer hf-key"));
    assert!(seen[0].body.get("api_key").is_none());
    let threshold = seen[0].body.pointer("/parameters/threshold").and_then(Value::as_f64).unwrap();
    assert!((threshold - 0.1).abs() < 1e-6, "{threshold}");
    assert_eq!(seen[1].path, "/yolo_world/infer");
    assert_eq!(seen[1].auth, None);
    assert_eq!(seen[1].body["api_key"], "rf-key");
    assert_eq!(seen[1].body["image"]["type"], "base64");
}
