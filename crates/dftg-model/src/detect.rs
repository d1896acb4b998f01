//! The open-vocabulary detector: which of the claimed labels are in an image, where, and how
//! many (image information for corpora without annotations; see DESIGN.md, "Models in the
//! loop").
//!
//! - [`Detector`] — the object-safe trait the pipeline holds as `Arc<dyn Detector>`
//! - [`HttpDetector`] — a detector service over HTTP, in one of three contracts
//!   ([`DetectorApi`]): the Hugging Face zero-shot-object-detection task, or Roboflow's
//!   inference server running Grounding DINO or YOLO-World. Bounded in-flight requests,
//!   timeouts, a time budget and retries with jitter (the same [`RetryPolicy`] and error kinds
//!   as the model client), labels split into requests of at most
//!   [`DetectorConfig::max_labels_per_request`], returned labels snapped to the requested ones
//! - [`ScriptedDetector`] — in-memory boxes for unit tests of the pipeline, no I/O (feature `testing`)
//! - [`detect_cached`] — asks only for the labels a job's [`CallCache`] does not hold yet
//!
//! Claims-first: ask about the concepts a caption claims (plus any always-checked list), in one
//! request per image, not one per vocabulary word. What the boxes mean for a concept
//! (present / absent / uncertain, counts) is decided by the pure
//! [`dftg_core::detection::decide`].
//!
//! [`RetryPolicy`]: crate::client::RetryPolicy

mod http;
#[cfg(any(test, feature = "testing"))]
mod scripted;
mod snap;
mod wire;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use dftg_core::detection::{decide, iou, nms_per_label, Detection, ThresholdError, Thresholds, Verdict};
pub use http::{DetectorConfig, DetectorConfigError, HttpDetector, DEFAULT_MAX_DETECTOR_REPLY_BYTES};
#[cfg(any(test, feature = "testing"))]
pub use scripted::ScriptedDetector;

use crate::cache::{CacheKey, CallCache};
use crate::client::ModelError;

/// Which wire contract the detector service speaks (`truth.detector.api` in a job spec).
/// Serialized as its name; an unknown name is refused without being echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DetectorApi {
    /// `hf`: the Hugging Face zero-shot-object-detection task (Inference Endpoints, custom
    /// handlers). The configured URL is the full URL posted to.
    Hf,
    /// `roboflow`: Grounding DINO on Roboflow's inference server, `POST {url}/grounding_dino/infer`.
    GroundingDino,
    /// `roboflow-yolo-world`: YOLO-World on Roboflow's inference server, `POST {url}/yolo_world/infer`.
    YoloWorld,
}

impl DetectorApi {
    pub const ALL: [DetectorApi; 3] = [DetectorApi::Hf, DetectorApi::GroundingDino, DetectorApi::YoloWorld];

    /// The name in job specs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorApi::Hf => "hf",
            DetectorApi::GroundingDino => "roboflow",
            DetectorApi::YoloWorld => "roboflow-yolo-world",
        }
    }

    /// Appended to the configured URL to reach the detection route.
    pub fn path(self) -> &'static str {
        match self {
            DetectorApi::Hf => "",
            DetectorApi::GroundingDino => "/grounding_dino/infer",
            DetectorApi::YoloWorld => "/yolo_world/infer",
        }
    }
}

impl fmt::Display for DetectorApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A detector api name that is none of [`DetectorApi::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("truth.detector.api: hf, roboflow or roboflow-yolo-world")]
pub struct UnknownDetectorApi;

dftg_core::string_form!(DetectorApi);

impl FromStr for DetectorApi {
    type Err = UnknownDetectorApi;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DetectorApi::ALL.into_iter().find(|api| api.as_str() == s.trim()).ok_or(UnknownDetectorApi)
    }
}

/// Which of `labels` are in one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectRequest {
    /// Encoded image bytes (PNG, JPEG, …), sent base64-encoded.
    pub image: Bytes,
    /// Labels to look for, e.g. the concepts a caption claims. Blank labels are ignored and
    /// duplicates (up to case) asked once, under their first spelling.
    pub labels: Vec<String>,
}

impl DetectRequest {
    pub fn new(image: impl Into<Bytes>, labels: impl IntoIterator<Item = impl Into<String>>) -> Self {
        DetectRequest { image: image.into(), labels: labels.into_iter().map(Into::into).collect() }
    }
}

/// The boxes found for a request, every label one of the requested ones.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DetectReply {
    pub detections: Vec<Detection>,
    /// HTTP requests the reply took (one per chunk of labels; 0 when nothing was asked).
    pub requests: u32,
    /// Attempts over all requests, retries included.
    pub attempts: u32,
    /// Returned boxes dropped because their label named none of the requested labels.
    pub unmatched: u32,
}

/// What the pipeline asks of a detector. Object-safe (the pipeline holds `Arc<dyn Detector>`).
pub trait Detector: Send + Sync + 'static {
    /// Boxes for the requested labels in one image; retries (if any) happen inside. An image
    /// whose labels span several requests fails as a whole when one of them fails, so no
    /// label reads as absent because its request was lost.
    fn detect<'a>(&'a self, req: &'a DetectRequest) -> BoxFuture<'a, Result<DetectReply, ModelError>>;
    /// Names the service in cache keys and records (its contract and URL, without
    /// credentials).
    fn service(&self) -> &str;
}

impl<T: Detector + ?Sized> Detector for Arc<T> {
    fn detect<'a>(&'a self, req: &'a DetectRequest) -> BoxFuture<'a, Result<DetectReply, ModelError>> {
        (**self).detect(req)
    }
    fn service(&self) -> &str {
        (**self).service()
    }
}

/// The labels of a request as they are asked: trimmed, blanks dropped, duplicates up to case
/// dropped (the first spelling stays).
pub(crate) fn distinct_labels(labels: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    labels.iter().map(|l| l.trim()).filter(|l| !l.is_empty() && seen.insert(l.to_lowercase())).map(str::to_owned).collect()
}

/// [`Detector::detect`] through a job's cache: labels answered before for this image and
/// service are taken from `cache`, the others asked in one call (which may be several
/// requests) and cached one label each, an empty list for a label without boxes. `requests`
/// and `attempts` count only what was asked now (0 when everything was cached).
///
/// A label's boxes come from the first request that asked about it; a detector whose answer
/// for one label depends on the others in the prompt (Grounding DINO) may answer a later,
/// different prompt a little differently, which the cache deliberately ignores.
pub async fn detect_cached(
    detector: &(impl Detector + ?Sized),
    cache: &CallCache<Vec<Detection>>,
    image_key: &str,
    req: &DetectRequest,
) -> Result<DetectReply, ModelError> {
    let service = detector.service();
    let labels = distinct_labels(&req.labels);
    let mut detections = Vec::new();
    let mut missing = Vec::new();
    for label in labels {
        match cache.get(&CacheKey::new(image_key, service, label.as_str())) {
            Some(cached) => detections.extend(cached),
            None => missing.push(label),
        }
    }
    if missing.is_empty() {
        return Ok(DetectReply { detections, ..DetectReply::default() });
    }
    let asked = DetectRequest { image: req.image.clone(), labels: missing };
    let reply = detector.detect(&asked).await?;
    for label in &asked.labels {
        let own: Vec<Detection> = reply.detections.iter().filter(|d| d.label == *label).cloned().collect();
        cache.insert(CacheKey::new(image_key, service, label.as_str()), own);
    }
    detections.extend(reply.detections);
    Ok(DetectReply { detections, ..reply })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_round_trip_and_unknown_names_are_not_echoed() {
        for api in DetectorApi::ALL {
            assert_eq!(api.as_str().parse::<DetectorApi>(), Ok(api));
            assert_eq!(api.to_string(), api.as_str());
        }
        assert_eq!(" roboflow ".parse::<DetectorApi>(), Ok(DetectorApi::GroundingDino));
        let err = "hf\u{1b}[31m-evil".parse::<DetectorApi>().unwrap_err().to_string();
        assert!(!err.contains("evil"), "{err}");
    }

    #[test]
    fn labels_are_asked_once() {
        let labels: Vec<String> = ["dog", " Dog", "", "  ", "cat", "dog"].iter().map(|s| s.to_string()).collect();
        assert_eq!(distinct_labels(&labels), vec!["dog".to_string(), "cat".to_string()]);
    }

    #[tokio::test]
    async fn cached_labels_are_not_asked_again() {
        let image = Bytes::from_static(b"img-1");
        let det =
            ScriptedDetector::new().with_boxes(&image, vec![Detection { label: "dog".into(), score: 0.9, bbox: [0.0, 0.0, 1.0, 1.0] }]);
        let cache = CallCache::new(16);
        let first = detect_cached(&det, &cache, "1", &DetectRequest::new(image.clone(), ["dog", "cat"])).await.unwrap();
        assert_eq!((first.requests, first.detections.len()), (1, 1));
        assert_eq!(det.asked(), vec![vec!["dog".to_string(), "cat".to_string()]]);
        // dog and cat (no boxes) are cached; only bus is asked
        let second = detect_cached(&det, &cache, "1", &DetectRequest::new(image.clone(), ["cat", "dog", "bus"])).await.unwrap();
        assert_eq!((second.requests, second.detections.len()), (1, 1));
        assert_eq!(det.asked()[1], vec!["bus".to_string()]);
        let third = detect_cached(&det, &cache, "1", &DetectRequest::new(image.clone(), ["bus", "dog"])).await.unwrap();
        assert_eq!((third.requests, third.attempts, third.detections.len()), (0, 0, 1));
        assert_eq!(det.asked().len(), 2);
        // another image key is another entry
        detect_cached(&det, &cache, "2", &DetectRequest::new(image, ["dog"])).await.unwrap();
        assert_eq!(det.asked().len(), 3);
    }
}
