//! `ScriptedDetector`: an in-memory detector for unit tests of the pipeline. No I/O.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::snap::Snapper;
use super::{distinct_labels, DetectReply, DetectRequest, Detection, Detector};
use crate::client::{image_hash, ModelError};

/// Boxes per image (by [`image_hash`]), answered the way [`super::HttpDetector`] answers:
/// only boxes whose label snaps to a requested label, relabelled with the requested spelling;
/// one request per call. An image without a script has no boxes; a scripted error is returned
/// every time. Records the labels of every call.
#[derive(Debug, Default)]
pub struct ScriptedDetector {
    boxes: HashMap<String, Vec<Detection>>,
    errors: HashMap<String, ModelError>,
    asked: Mutex<Vec<Vec<String>>>,
}

impl ScriptedDetector {
    pub fn new() -> Self {
        ScriptedDetector::default()
    }

    /// The detector's boxes on `image` (labels as a detector would return them).
    pub fn with_boxes(mut self, image: &[u8], boxes: Vec<Detection>) -> Self {
        self.boxes.insert(image_hash(image), boxes);
        self
    }

    /// Every request about `image` fails with `error`.
    pub fn with_error(mut self, image: &[u8], error: ModelError) -> Self {
        self.errors.insert(image_hash(image), error);
        self
    }

    /// The labels asked so far, one list per call.
    pub fn asked(&self) -> Vec<Vec<String>> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Detector for ScriptedDetector {
    fn detect<'a>(&'a self, req: &'a DetectRequest) -> BoxFuture<'a, Result<DetectReply, ModelError>> {
        let labels = distinct_labels(&req.labels);
        if labels.is_empty() {
            return Box::pin(futures::future::ready(Ok(DetectReply::default())));
        }
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).push(labels.clone());
        let hash = image_hash(&req.image);
        if let Some(e) = self.errors.get(&hash) {
            return Box::pin(futures::future::ready(Err(e.clone())));
        }
        let snapper = Snapper::new(&labels);
        let mut reply = DetectReply { requests: 1, attempts: 1, ..DetectReply::default() };
        // boxes of labels not asked about are not returned at all, so they are not `unmatched`
        for d in self.boxes.get(&hash).into_iter().flatten() {
            if let Some(i) = snapper.snap(&d.label) {
                reply.detections.push(Detection { label: labels[i].clone(), ..d.clone() });
            }
        }
        Box::pin(futures::future::ready(Ok(reply)))
    }

    fn service(&self) -> &str {
        "scripted"
    }
}
