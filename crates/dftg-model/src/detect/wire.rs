//! The detector contracts on the wire: request bodies and reply parsing, without I/O.
//!
//! Replies are read leniently about extra fields (servers add `time`, `class_id`,
//! `detection_id`, `image` …) and strictly about the ones dftg uses: a wrong type, a score
//! outside [0, 1], a box that is not finite or has a negative size is a malformed reply, never
//! a silently wrong detection.

use crate::client::openai::json_problem;
use serde::{Deserialize, Serialize};

use super::DetectorApi;

/// A box as the service returned it, before its label is snapped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawBox {
    pub label: String,
    pub score: f32,
    /// Corners in pixels.
    pub bbox: [f32; 4],
}

#[derive(Serialize)]
struct HfRequest<'a> {
    inputs: &'a str,
    parameters: HfParameters<'a>,
}

#[derive(Serialize)]
struct HfParameters<'a> {
    candidate_labels: &'a [String],
    /// Extra parameter of the task; the transformers pipeline drops boxes below it.
    threshold: f32,
}

#[derive(Serialize)]
struct RoboflowImage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    value: &'a str,
}

#[derive(Serialize)]
struct GroundingDinoRequest<'a> {
    image: RoboflowImage<'a>,
    text: &'a [String],
    box_threshold: f32,
    text_threshold: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<&'a str>,
}

#[derive(Serialize)]
struct YoloWorldRequest<'a> {
    image: RoboflowImage<'a>,
    text: &'a [String],
    confidence: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<&'a str>,
}

/// The JSON body asking `api` for `labels` in the image (`image_b64`: standard base64).
/// Roboflow's server takes its key in the body; the HF contract sends it as a header instead.
pub(crate) fn request_body(
    api: DetectorApi,
    image_b64: &str,
    labels: &[String],
    threshold: f32,
    api_key: Option<&str>,
) -> Result<Vec<u8>, serde_json::Error> {
    let image = RoboflowImage { kind: "base64", value: image_b64 };
    match api {
        DetectorApi::Hf => {
            serde_json::to_vec(&HfRequest { inputs: image_b64, parameters: HfParameters { candidate_labels: labels, threshold } })
        }
        DetectorApi::GroundingDino => {
            serde_json::to_vec(&GroundingDinoRequest { image, text: labels, box_threshold: threshold, text_threshold: threshold, api_key })
        }
        DetectorApi::YoloWorld => serde_json::to_vec(&YoloWorldRequest { image, text: labels, confidence: threshold, api_key }),
    }
}

#[derive(Deserialize)]
struct HfDetection {
    label: String,
    score: f64,
    #[serde(rename = "box")]
    bbox: HfBox,
}

#[derive(Deserialize)]
struct HfBox {
    xmin: f64,
    ymin: f64,
    xmax: f64,
    ymax: f64,
}

#[derive(Deserialize)]
struct RoboflowReply {
    predictions: Vec<RoboflowPrediction>,
}

/// Roboflow boxes are centre and size.
#[derive(Deserialize)]
struct RoboflowPrediction {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
    confidence: f64,
    class: String,
}

/// The boxes of a successful reply, or what is wrong with it (never quoting it: the reply is
/// the service's text).
pub(crate) fn parse_reply(api: DetectorApi, body: &[u8]) -> Result<Vec<RawBox>, String> {
    match api {
        DetectorApi::Hf => {
            let dets: Vec<HfDetection> = serde_json::from_slice(body).map_err(|e| json_problem(&e, body.len()))?;
            dets.into_iter()
                .enumerate()
                .map(|(i, d)| {
                    let b = d.bbox;
                    checked(i, d.label, d.score, [b.xmin, b.ymin, b.xmax, b.ymax])
                })
                .collect()
        }
        DetectorApi::GroundingDino | DetectorApi::YoloWorld => {
            let reply: RoboflowReply = serde_json::from_slice(body).map_err(|e| json_problem(&e, body.len()))?;
            reply
                .predictions
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    if !(p.width >= 0.0 && p.height >= 0.0) {
                        return Err(format!("prediction {i} has a negative or missing size"));
                    }
                    let (hw, hh) = (p.width / 2.0, p.height / 2.0);
                    checked(i, p.class, p.confidence, [p.x - hw, p.y - hh, p.x + hw, p.y + hh])
                })
                .collect()
        }
    }
}

fn checked(i: usize, label: String, score: f64, corners: [f64; 4]) -> Result<RawBox, String> {
    if !(0.0..=1.0).contains(&score) {
        return Err(format!("detection {i} has a score outside [0, 1]"));
    }
    let bbox = corners.map(|v| v as f32);
    if bbox.iter().any(|v| !v.is_finite()) {
        return Err(format!("detection {i} has a box coordinate that is not a finite number"));
    }
    // corners in either order describe the same box
    let [x0, y0, x1, y1] = bbox;
    Ok(RawBox { label, score: score as f32, bbox: [x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1)] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn request_bodies_follow_each_contract() {
        let l = labels(&["dog", "wine glass"]);
        let hf: serde_json::Value = serde_json::from_slice(&request_body(DetectorApi::Hf, "QUJD", &l, 0.1, Some("k")).unwrap()).unwrap();
        assert_eq!(hf, serde_json::json!({"inputs": "QUJD", "parameters": {"candidate_labels": ["dog", "wine glass"], "threshold": 0.1}}));
        let gd: serde_json::Value =
            serde_json::from_slice(&request_body(DetectorApi::GroundingDino, "QUJD", &l, 0.1, Some("k")).unwrap()).unwrap();
        assert_eq!(
            gd,
            serde_json::json!({"image": {"type": "base64", "value": "QUJD"}, "text": ["dog", "wine glass"],
                "box_threshold": 0.1, "text_threshold": 0.1, "api_key": "k"})
        );
        let yw: serde_json::Value = serde_json::from_slice(&request_body(DetectorApi::YoloWorld, "QUJD", &l, 0.2, None).unwrap()).unwrap();
        assert_eq!(yw, serde_json::json!({"image": {"type": "base64", "value": "QUJD"}, "text": ["dog", "wine glass"], "confidence": 0.2}));
    }

    #[test]
    fn hf_replies_parse_with_extra_fields_and_integer_pixels() {
        let body = br#"[{"score": 0.9, "label": "dog", "box": {"xmin": 10, "ymin": 20, "xmax": 110, "ymax": 220}, "extra": 1},
                        {"score": 0.2, "label": "cat", "box": {"xmin": 5.5, "ymin": 1, "xmax": 2.5, "ymax": 3}}]"#;
        let boxes = parse_reply(DetectorApi::Hf, body).unwrap();
        assert_eq!(
            boxes,
            vec![
                RawBox { label: "dog".into(), score: 0.9, bbox: [10.0, 20.0, 110.0, 220.0] },
                // corners given in the wrong order are put right
                RawBox { label: "cat".into(), score: 0.2, bbox: [2.5, 1.0, 5.5, 3.0] },
            ]
        );
        assert_eq!(parse_reply(DetectorApi::Hf, b"[]").unwrap(), vec![]);
    }

    #[test]
    fn roboflow_centre_boxes_become_corners() {
        let body = br#"{"time": 0.1, "image": {"width": 640, "height": 480},
            "predictions": [{"x": 100, "y": 50, "width": 40, "height": 20, "confidence": 0.7, "class": "a dog", "class_id": 0}]}"#;
        for api in [DetectorApi::GroundingDino, DetectorApi::YoloWorld] {
            let boxes = parse_reply(api, body).unwrap();
            assert_eq!(boxes, vec![RawBox { label: "a dog".into(), score: 0.7, bbox: [80.0, 40.0, 120.0, 60.0] }]);
        }
        assert_eq!(parse_reply(DetectorApi::GroundingDino, br#"{"predictions": []}"#).unwrap(), vec![]);
    }

    #[test]
    fn malformed_replies_are_described_without_quoting_them() {
        let cases: &[(DetectorApi, &[u8], &str)] = &[
            (DetectorApi::Hf, b"", "truncated json"),
            (DetectorApi::Hf, b"<html>SECRET</html>", "not json"),
            (DetectorApi::Hf, b"null", "wrong shape"),
            (DetectorApi::Hf, br#"{"predictions": []}"#, "wrong shape"),
            (
                DetectorApi::Hf,
                br#"[{"score": "SECRET", "label": "dog", "box": {"xmin": 0, "ymin": 0, "xmax": 1, "ymax": 1}}]"#,
                "wrong shape",
            ),
            (DetectorApi::Hf, br#"[{"score": 0.5, "label": "dog"}]"#, "wrong shape"),
            (DetectorApi::Hf, br#"[{"score": 1.5, "label": "dog", "box": {"xmin": 0, "ymin": 0, "xmax": 1, "ymax": 1}}]"#, "score outside"),
            (
                DetectorApi::Hf,
                br#"[{"score": 0.5, "label": "dog", "box": {"xmin": 0, "ymin": 0, "xmax": 1e300, "ymax": 1}}]"#,
                "not a finite",
            ),
            (DetectorApi::GroundingDino, br#"[]"#, "wrong shape"),
            (
                DetectorApi::GroundingDino,
                br#"{"predictions": [{"x": 1, "y": 1, "width": -2, "height": 1, "confidence": 0.5, "class": "dog"}]}"#,
                "negative",
            ),
            (
                DetectorApi::YoloWorld,
                br#"{"predictions": [{"x": 1, "y": 1, "width": 2, "height": 1, "confidence": 0.5, "class": 7}]}"#,
                "wrong shape",
            ),
            (
                DetectorApi::YoloWorld,
                br#"{"predictions": [{"x": 1, "y": 1, "width": 2, "height": 1, "confidence": -0.1, "class": "SECRET"}]}"#,
                "score outside",
            ),
        ];
        for (api, body, expected) in cases {
            let problem = parse_reply(*api, body).unwrap_err();
            assert!(problem.contains(expected), "{api:?} {:?}: {problem}", String::from_utf8_lossy(body));
            assert!(!problem.contains("SECRET"), "{problem}");
        }
    }
}
