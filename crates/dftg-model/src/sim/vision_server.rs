//! The HTTP face of the simulated detector and judge, served by `dftg sim` next to the model:
//!
//! | route | contract |
//! |---|---|
//! | `POST /hf/detect` | Hugging Face zero-shot-object-detection (the full URL is the endpoint) |
//! | `POST /grounding_dino/infer` | Roboflow inference server, Grounding DINO (phrases as labels) |
//! | `POST /yolo_world/infer` | Roboflow inference server, YOLO-World |
//! | `POST /judge/v1/chat/completions`, `GET /judge/v1/models` | OpenAI chat completions, the judge |
//!
//! Decisions come from [`SimVision`]; each (image, label) and (image, question) is written
//! once, as a [`DetectorLogEntry`] or [`JudgeLogEntry`] line, to the vision log beside the
//! truth log (`sim-truth.jsonl` → `sim-truth-vision.jsonl`, see `vision_log_path`), so the
//! truth log keeps its one shape. Each request takes the configured latency (`latency_ms`);
//! faults are the model's knob only.
//!
//! Request defaults follow the real services: `threshold` 0.1 (HF pipeline), `box_threshold`
//! 0.5 (Roboflow Grounding DINO), `confidence` 0.4 (Roboflow YOLO-World); at most
//! [`MAX_LABELS`] labels a request, and Grounding DINO prompts of at most 256 tokens (a word
//! or separator a token), like its text encoder.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::server::{decode_data_url, prompt_and_image, SimHandle};
use super::vision::{image_size, DetectorLabelLog, DetectorLogEntry, JudgeDecision, JudgeLogEntry, SimBox, SimVision, DEFAULT_IMAGE_SIZE};
use crate::api::{ChatRequest, ChatResponse, Choice, ModelCard, ModelList, ResponseMessage, Usage};
use crate::detect::DetectorApi;
use dftg_core::seed::StableHasher;

/// Labels per detector request at most.
pub const MAX_LABELS: usize = 256;
/// Grounding DINO's text encoder length.
const MAX_PROMPT_TOKENS: usize = 256;
/// The route of the HF contract.
pub const HF_DETECT_PATH: &str = "/hf/detect";
/// The judge's OpenAI base path.
pub const JUDGE_BASE_PATH: &str = "/judge/v1";
/// The model name the judge serves.
pub const JUDGE_MODEL: &str = "dftg-sim-judge";

/// What the simulated detector and judge have served so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisionStats {
    pub detector_requests: u64,
    /// Boxes returned over all detector requests.
    pub detector_boxes: u64,
    pub judge_requests: u64,
    /// 400s: unparsable requests, undecodable images, too many labels.
    pub bad_requests: u64,
    /// 400s for image content the corpus does not know.
    pub unknown_images: u64,
    pub truth_log_write_errors: u64,
}

#[derive(Default)]
struct Counters {
    detector_requests: AtomicU64,
    detector_boxes: AtomicU64,
    judge_requests: AtomicU64,
    bad_requests: AtomicU64,
    unknown_images: AtomicU64,
    truth_log_write_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Default)]
struct VisionLog {
    seen_labels: HashSet<(String, String)>,
    seen_questions: HashSet<(String, String)>,
    detector: Vec<DetectorLogEntry>,
    judge: Vec<JudgeLogEntry>,
    file: Option<std::fs::File>,
}

/// The running simulated detector and judge: their decisions so far and their counters.
pub struct VisionService {
    engine: SimVision,
    log: Mutex<VisionLog>,
    stats: Counters,
}

impl std::fmt::Debug for VisionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionService").field("config", self.engine.config()).finish_non_exhaustive()
    }
}

/// Why a request was refused: status and a message that quotes nothing from the request.
struct Refusal(StatusCode, String);

impl VisionService {
    /// The service's fixed latency, spent before answering.
    async fn pause(&self) {
        let ms = self.engine.config().latency_ms;
        if ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    /// `truth_log`: a handle on the simulator's truth log (opened for appending), or none.
    pub(crate) fn new(engine: SimVision, truth_log: Option<std::fs::File>) -> Self {
        VisionService { engine, log: Mutex::new(VisionLog { file: truth_log, ..VisionLog::default() }), stats: Counters::default() }
    }

    /// The simulated detector and judge (same decisions as the routes, without HTTP).
    pub fn engine(&self) -> &SimVision {
        &self.engine
    }

    /// The detector's truth-log lines so far, in the order they were written.
    pub fn detector_log(&self) -> Vec<DetectorLogEntry> {
        self.lock().detector.clone()
    }

    /// The judge's truth-log lines so far, in the order they were written.
    pub fn judge_log(&self) -> Vec<JudgeLogEntry> {
        self.lock().judge.clone()
    }

    pub fn stats(&self) -> VisionStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.stats;
        VisionStats {
            detector_requests: g(&s.detector_requests),
            detector_boxes: g(&s.detector_boxes),
            judge_requests: g(&s.judge_requests),
            bad_requests: g(&s.bad_requests),
            unknown_images: g(&s.unknown_images),
            truth_log_write_errors: g(&s.truth_log_write_errors),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VisionLog> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_line(&self, file: Option<&mut std::fs::File>, line: &impl Serialize) {
        let Some(f) = file else { return };
        // one write per line
        let written = serde_json::to_vec(line).map_err(std::io::Error::other).and_then(|mut bytes| {
            bytes.push(b'\n');
            f.write_all(&bytes)
        });
        if let Err(e) = written {
            bump(&self.stats.truth_log_write_errors);
            tracing::error!(error = %e, "simulator: cannot write the truth log");
        }
    }

    fn record_detector(&self, image: &str, api: &str, threshold: f32, labels: Vec<DetectorLabelLog>) {
        let mut log = self.lock();
        let fresh: Vec<DetectorLabelLog> =
            labels.into_iter().filter(|l| log.seen_labels.insert((image.to_owned(), l.label.to_lowercase()))).collect();
        if fresh.is_empty() {
            return;
        }
        let entry = DetectorLogEntry { image: image.to_owned(), api: api.to_owned(), threshold, detector: fresh };
        let log = &mut *log;
        self.write_line(log.file.as_mut(), &entry);
        log.detector.push(entry);
    }

    fn record_judge(&self, image: &str, decision: JudgeDecision) {
        let mut log = self.lock();
        if !log.seen_questions.insert((image.to_owned(), decision.question.clone())) {
            return;
        }
        let entry = JudgeLogEntry { image: image.to_owned(), judge: decision };
        let log = &mut *log;
        self.write_line(log.file.as_mut(), &entry);
        log.judge.push(entry);
    }

    /// The boxes for one detector request, and the image size they are in.
    fn detect(
        &self,
        image_b64: &str,
        labels: &[String],
        threshold: Option<f32>,
        api: DetectorApi,
    ) -> Result<(Vec<SimBox>, (u32, u32)), Refusal> {
        bump(&self.stats.detector_requests);
        let threshold = threshold.unwrap_or(match api {
            DetectorApi::Hf => 0.1,
            DetectorApi::GroundingDino => 0.5,
            DetectorApi::YoloWorld => 0.4,
        });
        if !(0.0..=1.0).contains(&threshold) {
            return Err(self.bad("the threshold must be in [0, 1]"));
        }
        if labels.len() > MAX_LABELS {
            return Err(self.bad(format!("at most {MAX_LABELS} labels per request")));
        }
        if api == DetectorApi::GroundingDino {
            let tokens: usize = labels.iter().map(|l| l.split_whitespace().count() + 1).sum();
            if tokens > MAX_PROMPT_TOKENS {
                return Err(self.bad(format!("the text prompt has {tokens} tokens, more than {MAX_PROMPT_TOKENS}")));
            }
        }
        let bytes = decode_base64(image_b64).ok_or_else(|| self.bad("the image is not valid base64"))?;
        let corpus = self.engine.corpus();
        let Some(key) = corpus.key_for_bytes(&bytes) else {
            bump(&self.stats.unknown_images);
            return Err(Refusal(StatusCode::BAD_REQUEST, format!("unknown image ({} bytes)", bytes.len())));
        };
        let size = image_size(&bytes).unwrap_or(DEFAULT_IMAGE_SIZE);
        let labels: Vec<String> = labels.iter().map(|l| l.trim().to_owned()).collect();
        let phrases = api == DetectorApi::GroundingDino;
        let Some((boxes, logs)) = self.engine.detect(key, &labels, size, threshold, phrases) else {
            bump(&self.stats.unknown_images);
            return Err(Refusal(StatusCode::BAD_REQUEST, "unknown image key".to_owned()));
        };
        let api_name = match api {
            DetectorApi::Hf => "hf",
            DetectorApi::GroundingDino => "grounding_dino",
            DetectorApi::YoloWorld => "yolo_world",
        };
        self.record_detector(key, api_name, threshold, logs);
        self.stats.detector_boxes.fetch_add(boxes.len() as u64, Ordering::Relaxed);
        tracing::debug!(image = %key, boxes = boxes.len(), api = api_name, "simulated detection");
        Ok((boxes, size))
    }

    fn bad(&self, message: impl Into<String>) -> Refusal {
        bump(&self.stats.bad_requests);
        Refusal(StatusCode::BAD_REQUEST, message.into())
    }
}

/// Base64 as servers accept it: padding optional, whitespace ignored, URL-safe alphabet too.
fn decode_base64(data: &str) -> Option<Vec<u8>> {
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent).with_decode_allow_trailing_bits(true);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    standard.decode(&cleaned).or_else(|_| url_safe.decode(&cleaned)).ok()
}

/// The routes, with their state; merged into the simulator's router.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(service: Arc<VisionService>) -> Router<S> {
    Router::new()
        .route(HF_DETECT_PATH, post(hf_detect))
        .route("/grounding_dino/infer", post(grounding_dino))
        .route("/yolo_world/infer", post(yolo_world))
        .route(&format!("{JUDGE_BASE_PATH}/chat/completions"), post(judge))
        .route(&format!("{JUDGE_BASE_PATH}/models"), get(judge_models))
        .with_state(service)
}

impl SimHandle {
    /// The URL a detector client of contract `api` is configured with: the full endpoint for
    /// `hf`, the server root for the Roboflow contracts.
    pub fn detector_url(&self, api: DetectorApi) -> String {
        match api {
            DetectorApi::Hf => format!("http://{}{HF_DETECT_PATH}", self.addr),
            DetectorApi::GroundingDino | DetectorApi::YoloWorld => format!("http://{}", self.addr),
        }
    }

    /// The judge's OpenAI base URL, `http://{addr}/judge/v1`.
    pub fn judge_base_url(&self) -> String {
        format!("http://{}{JUDGE_BASE_PATH}", self.addr)
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Deserialize)]
struct HfRequest {
    inputs: String,
    parameters: HfParameters,
}

#[derive(Deserialize)]
struct HfParameters {
    candidate_labels: Vec<String>,
    #[serde(default)]
    threshold: Option<f32>,
}

#[derive(Serialize)]
struct HfBox {
    xmin: i64,
    ymin: i64,
    xmax: i64,
    ymax: i64,
}

#[derive(Serialize)]
struct HfDetection<'a> {
    score: f32,
    label: &'a str,
    #[serde(rename = "box")]
    bbox: HfBox,
}

async fn hf_detect(State(svc): State<Arc<VisionService>>, body: Bytes) -> Response {
    svc.pause().await;
    let hf_error = |Refusal(status, message): Refusal| json(status, serde_json::json!({ "error": message }).to_string());
    let req: HfRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => return hf_error(svc.bad(r#"the body must be {"inputs": base64 image, "parameters": {"candidate_labels": [...]}}"#)),
    };
    match svc.detect(&req.inputs, &req.parameters.candidate_labels, req.parameters.threshold, DetectorApi::Hf) {
        Ok((boxes, _)) => {
            // the transformers pipeline returns whole pixels
            let px = |v: f32| v.round() as i64;
            let out: Vec<HfDetection> = boxes
                .iter()
                .map(|b| HfDetection {
                    score: b.score,
                    label: &b.label,
                    bbox: HfBox { xmin: px(b.bbox[0]), ymin: px(b.bbox[1]), xmax: px(b.bbox[2]), ymax: px(b.bbox[3]) },
                })
                .collect();
            axum::Json(out).into_response()
        }
        Err(r) => hf_error(r),
    }
}

#[derive(Deserialize)]
struct RoboflowImageIn {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Deserialize)]
struct RoboflowRequest {
    image: RoboflowImageIn,
    text: Vec<String>,
    #[serde(default)]
    box_threshold: Option<f32>,
    #[serde(default)]
    confidence: Option<f32>,
}

#[derive(Serialize)]
struct RoboflowPrediction<'a> {
    x: f32,
    y: f32,
    width: f32,
    height: f32,
    confidence: f32,
    class: &'a str,
    class_id: usize,
    detection_id: String,
}

#[derive(Serialize)]
struct RoboflowSize {
    width: u32,
    height: u32,
}

#[derive(Serialize)]
struct RoboflowReply<'a> {
    time: f32,
    image: RoboflowSize,
    predictions: Vec<RoboflowPrediction<'a>>,
}

async fn grounding_dino(State(svc): State<Arc<VisionService>>, body: Bytes) -> Response {
    svc.pause().await;
    roboflow(&svc, &body, DetectorApi::GroundingDino)
}

async fn yolo_world(State(svc): State<Arc<VisionService>>, body: Bytes) -> Response {
    svc.pause().await;
    roboflow(&svc, &body, DetectorApi::YoloWorld)
}

fn roboflow(svc: &VisionService, body: &[u8], api: DetectorApi) -> Response {
    let error = |Refusal(status, message): Refusal| json(status, serde_json::json!({ "message": message }).to_string());
    let req: RoboflowRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) => return error(svc.bad(r#"the body must be {"image": {"type": "base64", "value": ...}, "text": [...]}"#)),
    };
    if req.image.kind != "base64" {
        return error(svc.bad("only base64 images are supported"));
    }
    let threshold = if api == DetectorApi::GroundingDino { req.box_threshold } else { req.confidence };
    match svc.detect(&req.image.value, &req.text, threshold, api) {
        Ok((boxes, (width, height))) => {
            let predictions = boxes
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let id = StableHasher::new("detection-id").str(&b.label).u64(i as u64).u64(u64::from(b.score.to_bits())).finish();
                    RoboflowPrediction {
                        x: (b.bbox[0] + b.bbox[2]) / 2.0,
                        y: (b.bbox[1] + b.bbox[3]) / 2.0,
                        width: b.bbox[2] - b.bbox[0],
                        height: b.bbox[3] - b.bbox[1],
                        confidence: b.score,
                        class: &b.label,
                        class_id: b.class_id,
                        detection_id: format!("{id:016x}"),
                    }
                })
                .collect();
            axum::Json(RoboflowReply { time: 0.0, image: RoboflowSize { width, height }, predictions }).into_response()
        }
        Err(r) => error(r),
    }
}

fn openai_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"message": message.into(), "type": "invalid_request_error", "code": null}});
    json(status, body.to_string())
}

async fn judge(State(svc): State<Arc<VisionService>>, body: Bytes) -> Response {
    bump(&svc.stats.judge_requests);
    svc.pause().await;
    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => {
            bump(&svc.stats.bad_requests);
            return openai_error(StatusCode::BAD_REQUEST, "the request body is not a chat completion request");
        }
    };
    let Ok((prompt, url)) = prompt_and_image(&req) else {
        bump(&svc.stats.bad_requests);
        return openai_error(StatusCode::BAD_REQUEST, "the request needs a user message with a text and an image_url part");
    };
    let Ok(bytes) = decode_data_url(&url) else {
        bump(&svc.stats.bad_requests);
        return openai_error(StatusCode::BAD_REQUEST, "image_url must be a base64 data: url");
    };
    let Some(key) = svc.engine.corpus().key_for_bytes(&bytes) else {
        bump(&svc.stats.unknown_images);
        return openai_error(StatusCode::BAD_REQUEST, format!("unknown image ({} bytes)", bytes.len()));
    };
    let Some((text, decision)) = svc.engine.judge(key, &prompt) else {
        bump(&svc.stats.unknown_images);
        return openai_error(StatusCode::BAD_REQUEST, "unknown image key");
    };
    svc.record_judge(key, decision);
    let id = StableHasher::new("judge-id").str(key).str(&prompt).finish();
    let prompt_tokens = prompt.split_whitespace().count() as u32 + 576;
    let completion_tokens = text.split_whitespace().count() as u32;
    let resp = ChatResponse {
        id: format!("chatcmpl-judge-{id:016x}"),
        object: "chat.completion".into(),
        created: 0,
        model: JUDGE_MODEL.into(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage { role: "assistant".into(), content: Some(text) },
            finish_reason: Some("stop".into()),
        }],
        usage: Some(Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }),
    };
    axum::Json(resp).into_response()
}

async fn judge_models() -> Response {
    let list = ModelList {
        object: "list".into(),
        data: vec![ModelCard { id: JUDGE_MODEL.into(), object: "model".into(), owned_by: "dftg".into() }],
    };
    axum::Json(list).into_response()
}
