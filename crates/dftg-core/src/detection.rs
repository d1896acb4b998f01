//! Image information from an open-vocabulary detector (stage 1, step 3, without annotations):
//! what the detector's boxes say about one claimed concept.
//!
//! Pure: the detector client (`dftg_model::detect`) fetches [`Detection`]s, this module turns
//! them into a [`Verdict`] per concept. Two thresholds split the score range in three:
//!
//! ```text
//! 0 ──── absent ──── absent_threshold ──── uncertain ──── present_threshold ──── present ──── 1
//! ```
//!
//! - **present**: some box of the concept scores at least `present_threshold` (default 0.35);
//! - **absent**: no box scores at least `absent_threshold` (default 0.15);
//! - **uncertain** otherwise: the judge (a yes/no question to a strong VLM) decides.
//!
//! Counts are the boxes at or above `present_threshold` after per-label non-maximum
//! suppression (IoU 0.5). A count is only reported when no box of the concept that survived
//! suppression sits in the uncertain band: a half-seen instance could be one more object.
//! Lower-scored duplicates of a confident box are suppressed first, so they do not make a
//! count uncertain.

use serde::{Deserialize, Serialize};

/// One box from the detector, its label snapped to a requested label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The requested label this box answers (exactly as requested).
    pub label: String,
    /// Detector confidence in [0, 1].
    pub score: f32,
    /// Corners in pixels: `[xmin, ymin, xmax, ymax]`, `xmin <= xmax`, `ymin <= ymax`.
    pub bbox: [f32; 4],
}

/// Where the score range splits; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// A box at or above this makes the concept present and counts as an instance.
    pub present: f32,
    /// Below this for every box, the concept is absent.
    pub absent: f32,
    /// Boxes of one label overlapping more than this are the same instance.
    pub nms_iou: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { present: 0.35, absent: 0.15, nms_iou: 0.5 }
    }
}

/// Thresholds that cannot split the score range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error("invalid detector threshold {field}: {value} is not in [0, 1]")]
    OutOfRange { field: &'static str, value: f32 },
    #[error("invalid detector thresholds: absent ({absent}) is above present ({present})")]
    Inverted { absent: f32, present: f32 },
}

impl Thresholds {
    /// Each value in [0, 1] and `absent <= present` (equal values leave no uncertain band).
    pub fn validate(&self) -> Result<(), ThresholdError> {
        for (field, value) in [("present", self.present), ("absent", self.absent), ("nms_iou", self.nms_iou)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ThresholdError::OutOfRange { field, value });
            }
        }
        if self.absent > self.present {
            return Err(ThresholdError::Inverted { absent: self.absent, present: self.present });
        }
        Ok(())
    }
}

/// What the detector says about one concept in one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Present {
        /// Instances (boxes at or above the present threshold after suppression); `None` when
        /// a box in the uncertain band makes the number unreliable, so no count claim may be
        /// checked against it.
        count: Option<u32>,
        /// The best score.
        score: f32,
        /// The counted boxes, best first.
        boxes: Vec<[f32; 4]>,
    },
    Absent {
        /// The best score of any box of the concept; `None` when there was none.
        best_score: Option<f32>,
    },
    Uncertain {
        best_score: f32,
    },
}

impl Verdict {
    pub fn is_present(&self) -> bool {
        matches!(self, Verdict::Present { .. })
    }
    pub fn is_absent(&self) -> bool {
        matches!(self, Verdict::Absent { .. })
    }
    pub fn is_uncertain(&self) -> bool {
        matches!(self, Verdict::Uncertain { .. })
    }
}

/// Intersection over union of two corner boxes; 0 when either has no area.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 && union.is_finite() {
        inter / union
    } else {
        0.0
    }
}

/// Greedy non-maximum suppression within each label: best score first, a box is dropped when
/// it overlaps a kept box of the same label by more than `iou_threshold`. Boxes of different
/// labels never suppress each other (a person on a bench is two objects). The result is
/// ordered by label, then score (best first); ties keep the input order.
pub fn nms_per_label(detections: &[Detection], iou_threshold: f32) -> Vec<Detection> {
    let mut order: Vec<usize> = (0..detections.len()).collect();
    order.sort_by(|&a, &b| {
        let (da, db) = (&detections[a], &detections[b]);
        da.label.cmp(&db.label).then(db.score.total_cmp(&da.score)).then(a.cmp(&b))
    });
    let mut kept: Vec<Detection> = Vec::with_capacity(detections.len());
    let mut label_start = 0;
    for i in order {
        let d = &detections[i];
        if kept.last().is_some_and(|k| k.label != d.label) {
            label_start = kept.len();
        }
        if kept[label_start..].iter().all(|k| iou(&k.bbox, &d.bbox) <= iou_threshold) {
            kept.push(d.clone());
        }
    }
    kept
}

/// The verdict on `concept` from the detections of one image (labels compared exactly: the
/// detector client snaps returned labels to the requested ones). See the module docs.
pub fn decide(detections: &[Detection], concept: &str, thresholds: &Thresholds) -> Verdict {
    let own: Vec<Detection> = detections.iter().filter(|d| d.label == concept).cloned().collect();
    let best = own.iter().map(|d| d.score).reduce(f32::max);
    let kept = nms_per_label(&own, thresholds.nms_iou);
    let counted: Vec<&Detection> = kept.iter().filter(|d| d.score >= thresholds.present).collect();
    match best {
        Some(score) if !counted.is_empty() => {
            let half_seen = kept.iter().any(|d| d.score >= thresholds.absent && d.score < thresholds.present);
            Verdict::Present {
                count: (!half_seen).then(|| u32::try_from(counted.len()).unwrap_or(u32::MAX)),
                score,
                boxes: counted.iter().map(|d| d.bbox).collect(),
            }
        }
        Some(score) if score >= thresholds.absent => Verdict::Uncertain { best_score: score },
        best_score => Verdict::Absent { best_score },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { label: label.into(), score, bbox }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[10.0, 0.0, 20.0, 10.0]), 0.0);
        // half overlap: 50 / 150
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&[1.0, 1.0, 1.0, 5.0], &a), 0.0);
        assert_eq!(iou(&[0.0, 0.0, f32::INFINITY, 1.0], &a), 0.0);
    }

    #[test]
    fn nms_suppresses_overlaps_within_a_label_only() {
        let dets = vec![
            det("dog", 0.5, [0.0, 0.0, 10.0, 10.0]),
            det("dog", 0.9, [1.0, 0.0, 11.0, 10.0]), // IoU 0.82 with the first: keeps this one
            det("dog", 0.4, [50.0, 50.0, 60.0, 60.0]),
            det("cat", 0.3, [0.0, 0.0, 10.0, 10.0]),  // same place, other label: kept
            det("dog", 0.45, [5.0, 0.0, 15.0, 10.0]), // IoU 0.43 with the kept 0.9 box: kept
        ];
        let kept = nms_per_label(&dets, 0.5);
        let shown: Vec<(&str, f32)> = kept.iter().map(|d| (d.label.as_str(), d.score)).collect();
        assert_eq!(shown, vec![("cat", 0.3), ("dog", 0.9), ("dog", 0.45), ("dog", 0.4)]);
        // at exactly the threshold a box is kept (suppression needs more overlap)
        let at = vec![det("a", 0.9, [0.0, 0.0, 10.0, 10.0]), det("a", 0.8, [5.0, 0.0, 15.0, 10.0])];
        assert_eq!(nms_per_label(&at, 1.0 / 3.0).len(), 2);
        assert_eq!(nms_per_label(&at, 0.3).len(), 1);
        assert!(nms_per_label(&[], 0.5).is_empty());
    }

    #[test]
    fn decisions_at_the_thresholds() {
        let t = Thresholds::default();
        let one = |score: f32| vec![det("car", score, [0.0, 0.0, 10.0, 10.0])];
        assert!(matches!(decide(&one(0.35), "car", &t), Verdict::Present { count: Some(1), .. }));
        assert!(matches!(decide(&one(0.3499), "car", &t), Verdict::Uncertain { .. }));
        assert!(matches!(decide(&one(0.15), "car", &t), Verdict::Uncertain { .. }));
        assert_eq!(decide(&one(0.1499), "car", &t), Verdict::Absent { best_score: Some(0.1499) });
        assert_eq!(decide(&[], "car", &t), Verdict::Absent { best_score: None });
        // other labels do not count, nor do labels that differ in case (snapping made them exact)
        assert_eq!(decide(&one(0.9), "Car", &t), Verdict::Absent { best_score: None });
        assert_eq!(decide(&one(0.9), "bus", &t), Verdict::Absent { best_score: None });
    }

    #[test]
    fn counts_need_a_clear_band_after_suppression() {
        let t = Thresholds::default();
        let dets = vec![
            det("cup", 0.8, [0.0, 0.0, 10.0, 10.0]),
            det("cup", 0.6, [20.0, 0.0, 30.0, 10.0]),
            det("cup", 0.2, [0.5, 0.0, 10.5, 10.0]),  // a duplicate of the first: suppressed
            det("cup", 0.1, [40.0, 0.0, 50.0, 10.0]), // below the band: harmless
        ];
        let v = decide(&dets, "cup", &t);
        assert_eq!(v, Verdict::Present { count: Some(2), score: 0.8, boxes: vec![[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]] });
        let mut half_seen = dets.clone();
        half_seen.push(det("cup", 0.25, [60.0, 0.0, 70.0, 10.0]));
        match decide(&half_seen, "cup", &t) {
            Verdict::Present { count, boxes, .. } => {
                assert_eq!(count, None);
                assert_eq!(boxes.len(), 2);
            }
            other => panic!("expected present, got {other:?}"),
        }
        // the best score is reported even when suppression removed nothing at that level
        let uncertain = vec![det("cup", 0.2, [0.0, 0.0, 1.0, 1.0]), det("cup", 0.3, [5.0, 5.0, 6.0, 6.0])];
        assert_eq!(decide(&uncertain, "cup", &t), Verdict::Uncertain { best_score: 0.3 });
    }

    #[test]
    fn thresholds_are_validated() {
        assert_eq!(Thresholds::default().validate(), Ok(()));
        let bad = Thresholds { present: 1.5, ..Thresholds::default() };
        assert_eq!(bad.validate(), Err(ThresholdError::OutOfRange { field: "present", value: 1.5 }));
        let nan = Thresholds { nms_iou: f32::NAN, ..Thresholds::default() };
        assert!(matches!(nan.validate(), Err(ThresholdError::OutOfRange { field: "nms_iou", .. })));
        let inverted = Thresholds { present: 0.2, absent: 0.3, nms_iou: 0.5 };
        assert!(inverted.validate().unwrap_err().to_string().contains("absent (0.3) is above present (0.2)"));
    }

    #[test]
    fn verdicts_serialize_with_a_tag() {
        let v = Verdict::Absent { best_score: None };
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"verdict":"absent","best_score":null}"#);
        let p = Verdict::Present { count: Some(2), score: 0.5, boxes: vec![] };
        let back: Verdict = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
