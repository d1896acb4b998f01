//! The simulated detector and judge, without HTTP: what they "see" in an image, decided from
//! the corpus truth with configurable errors. Every choice is a pure function of (seed, image
//! key, concept, …): the same question always gets the same answer, whichever contract,
//! chunking or order it arrives in.
//!
//! **Detector.** Each present object gets one box per instance (its count, 1 when unknown, at
//! most [`MAX_INSTANCES`]), laid out on a grid so that instances never overlap (a count after
//! NMS is then exactly the number of confident boxes). Each instance has a size class, drawn
//! from a per-concept distribution (some concepts are mostly small). An instance is missed
//! with probability `miss_rate × w / mean(w)`, capped at 0.95, where the weight `w` is 2.0 for
//! small, 0.8 for medium and 0.4 for large instances, ×1.5 in a crowd (count ≥ 4), and the mean
//! is taken over every instance of the corpus: over the corpus, the expected share of missed
//! instances is `miss_rate` (below the cap). Missed means what a detector evaluation counts:
//! no box at the operating threshold (0.35, Grounding DINO's box threshold). A missed instance
//! still gets a weak box in the uncertain band [0.15, 0.35) with probability
//! [`MISSED_WEAK_SHARE`] and no box at all otherwise; a found one scores in [0.35, 0.95). 8 % of
//! boxed instances also get a lower-scored duplicate box (IoU > 0.8, removed by NMS). An
//! absent concept that co-occurs in the corpus with one of the image's objects gets a false box
//! with probability `false_rate` (a second one a quarter of those times), scoring in
//! [0.05, 0.15) 35 % of the time, in [0.15, 0.35) 45 %, and in [0.35, 0.60) 20 %; an absent
//! concept that never co-occurs with what is there gets none.
//! Boxes below the request's threshold are not returned.
//!
//! **Judge.** Answers "Is there a … in the image?" from the truth and "What {family} is the
//! …?" with a true value when the truth knows one; each answer is wrong with probability
//! `judge_error_rate`. Without a known value it names a seeded value of the family.

use std::sync::Arc;

use dftg_core::vocab::{pluralize_word, ConceptId, Vocabulary};
use serde::{Deserialize, Serialize};

use super::corpus::{SimCorpus, SimImage};
use super::text;
use super::SimError;
use dftg_core::seed::StableHasher;

/// Boxes per present object at most (COCO has images with dozens of people).
pub const MAX_INSTANCES: u32 = 50;
/// An object with at least this many instances is a crowd: instances are missed more often.
pub const CROWD: u32 = 4;
/// Image size assumed when the bytes are neither PNG nor JPEG (test corpora use stand-ins).
pub const DEFAULT_IMAGE_SIZE: (u32, u32) = (640, 480);
/// Highest probability of missing an instance, whatever the weights.
const MAX_MISS: f64 = 0.95;
const CROWD_WEIGHT: f64 = 1.5;
/// Share of missed instances that still get a box in the uncertain band: an open-vocabulary
/// detector usually scores a missed object above nothing, just below its box threshold.
pub const MISSED_WEAK_SHARE: f64 = 0.5;
const DUPLICATE_RATE: f64 = 0.08;
const SECOND_FALSE_BOX: f64 = 0.25;

/// How the simulated detector and judge err (`--sim-detector-miss-rate`,
/// `--sim-detector-false-rate`, `--sim-judge-error-rate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimVisionConfig {
    /// Expected share of object instances the detector misses, over the corpus.
    pub detector_miss_rate: f64,
    /// Probability that an absent concept that co-occurs with what is there gets a false box.
    pub detector_false_rate: f64,
    /// Probability that a judge answer is wrong.
    pub judge_error_rate: f64,
    /// Fixed time each detector and judge request takes (ms), like a real service's.
    pub latency_ms: u64,
}

impl Default for SimVisionConfig {
    fn default() -> Self {
        SimVisionConfig { detector_miss_rate: 0.1, detector_false_rate: 0.1, judge_error_rate: 0.03, latency_ms: 0 }
    }
}

impl SimVisionConfig {
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        for (field, p) in [
            ("detector_miss_rate", self.detector_miss_rate),
            ("detector_false_rate", self.detector_false_rate),
            ("judge_error_rate", self.judge_error_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(SimError::Config { field: field.into(), reason: format!("{p} is not a probability in [0, 1]") });
            }
        }
        if self.latency_ms > 60_000 {
            return Err(SimError::Config { field: "latency_ms".into(), reason: "at most 60000".into() });
        }
        Ok(())
    }
}

/// Size class of an instance: drives how often it is missed and how well it scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeClass {
    Small,
    Medium,
    Large,
}

impl SizeClass {
    fn miss_weight(self) -> f64 {
        match self {
            SizeClass::Small => 2.0,
            SizeClass::Medium => 0.8,
            SizeClass::Large => 0.4,
        }
    }
    /// Box side as a fraction of its grid cell.
    fn side(self) -> (f64, f64) {
        match self {
            SizeClass::Small => (0.08, 0.2),
            SizeClass::Medium => (0.2, 0.5),
            SizeClass::Large => (0.5, 0.9),
        }
    }
}

/// Why a simulated box exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxKind {
    /// An instance that is there.
    True,
    /// A second, lower-scored box on an instance.
    Duplicate,
    /// A box for an absent concept.
    False,
}

/// One box the simulated detector returns.
#[derive(Debug, Clone, PartialEq)]
pub struct SimBox {
    /// The label as the service writes it (a requested label, or a phrase naming it).
    pub label: String,
    pub score: f32,
    /// Corners in pixels.
    pub bbox: [f32; 4],
    pub kind: BoxKind,
    /// Index of the requested label in the request.
    pub class_id: usize,
}

/// What the detector saw of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceLog {
    pub size: SizeClass,
    pub crowd: bool,
    /// Score of its box; `None` when the detector gave it none (a missed instance may also
    /// have a weak box, below 0.35).
    pub score: Option<f32>,
    /// Score of its duplicate box, when it got one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<f32>,
}

/// The detector's decisions on one requested label of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorLabelLog {
    pub label: String,
    /// The vocabulary concept the label names; `None` for labels the vocabulary lacks (never
    /// present, never given false boxes).
    pub concept: Option<String>,
    /// Whether the concept is in the image (the truth).
    pub present: bool,
    /// Present concepts: one entry per simulated instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceLog>,
    /// Absent concepts: whether the concept co-occurs in the corpus with the image's objects
    /// (only those get false boxes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tempting: bool,
    /// Scores of the false boxes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub false_boxes: Vec<f32>,
    /// Whether any box of the label was returned (at or above the request's threshold).
    pub reported: bool,
    /// Best returned score.
    pub score: Option<f32>,
}

/// A truth-log line of the detector: its decisions on the labels of one request that no
/// earlier request about the image asked (each (image, label) is logged once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorLogEntry {
    pub image: String,
    /// `hf`, `grounding_dino` or `yolo_world`: the contract the request came in.
    pub api: String,
    /// The request's box threshold.
    pub threshold: f32,
    pub detector: Vec<DetectorLabelLog>,
}

/// What a judge question was about and what is true.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JudgeTruth {
    /// "Is there a … in the image?"; `truth`: whether it is.
    Exists { truth: bool },
    /// "What {family} is the …?"; `truth`: the known values (empty: unknown, or the concept is
    /// not in the image).
    Attribute { family: String, truth: Vec<String> },
    /// A question the simulated judge does not understand (answered "I cannot tell.").
    Unparsed,
}

/// The judge's decision on one question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeDecision {
    pub question: String,
    pub concept: Option<String>,
    #[serde(flatten)]
    pub truth: JudgeTruth,
    /// The reply text.
    pub answer: String,
    /// Whether the judge was made to answer wrongly.
    pub erred: bool,
}

/// A truth-log line of the judge: one (image, question), logged once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeLogEntry {
    pub image: String,
    pub judge: JudgeDecision,
}

/// The simulated detector and judge over a corpus.
#[derive(Debug, Clone)]
pub struct SimVision {
    corpus: Arc<SimCorpus>,
    seed: u64,
    config: SimVisionConfig,
    /// Mean miss weight over the corpus's instances (see the module docs).
    mean_weight: f64,
}

/// One label's boxes before the threshold.
struct LabelScene {
    boxes: Vec<SimBox>,
    log: DetectorLabelLog,
}

impl SimVision {
    pub fn new(corpus: Arc<SimCorpus>, seed: u64, config: SimVisionConfig) -> Result<Self, SimError> {
        config.validate()?;
        let mut vision = SimVision { corpus, seed, config, mean_weight: 1.0 };
        vision.mean_weight = vision.corpus_mean_weight();
        Ok(vision)
    }

    pub fn config(&self) -> &SimVisionConfig {
        &self.config
    }

    pub fn corpus(&self) -> &SimCorpus {
        &self.corpus
    }

    fn vocab(&self) -> &Vocabulary {
        self.corpus.vocabulary()
    }

    fn unit(&self, domain: &str, key: &str, concept: &str, i: u64) -> f64 {
        StableHasher::new(domain).u64(self.seed).str(key).str(concept).u64(i).unit()
    }

    /// (P(small), P(large)) of a concept's instances: some concepts are mostly small.
    fn size_odds(&self, concept: &str) -> (f64, f64) {
        let bias = StableHasher::new("size-bias").u64(self.seed).str(concept).unit();
        (0.15 + 0.3 * bias, 0.35 - 0.3 * bias)
    }

    fn expected_size_weight(&self, concept: &str) -> f64 {
        let (small, large) = self.size_odds(concept);
        small * SizeClass::Small.miss_weight()
            + (1.0 - small - large) * SizeClass::Medium.miss_weight()
            + large * SizeClass::Large.miss_weight()
    }

    fn corpus_mean_weight(&self) -> f64 {
        let vocab = self.vocab();
        let (mut sum, mut n) = (0.0, 0u64);
        for key in self.corpus.keys() {
            let Some(img) = self.corpus.image(key) else {
                continue;
            };
            for o in &img.objects {
                let count = instances(o.count);
                let crowd = if count >= CROWD { CROWD_WEIGHT } else { 1.0 };
                sum += f64::from(count) * self.expected_size_weight(vocab.name(o.concept)) * crowd;
                n += u64::from(count);
            }
        }
        if n == 0 || sum <= 0.0 {
            1.0
        } else {
            sum / n as f64
        }
    }

    /// The detector's boxes for `labels` in image `key` of `size` (pixels), only those at or
    /// above `threshold`, and its decisions per label; `None` for an unknown key.
    pub fn detect(
        &self,
        key: &str,
        labels: &[String],
        size: (u32, u32),
        threshold: f32,
        phrases: bool,
    ) -> Option<(Vec<SimBox>, Vec<DetectorLabelLog>)> {
        let img = self.corpus.image(key)?;
        let mut boxes = Vec::new();
        let mut logs = Vec::with_capacity(labels.len());
        for (class_id, label) in labels.iter().enumerate() {
            if label.trim().is_empty() {
                continue;
            }
            let mut scene = self.label_scene(key, img, label, size);
            scene.boxes.retain(|b| b.score >= threshold);
            scene.log.reported = !scene.boxes.is_empty();
            scene.log.score = scene.boxes.iter().map(|b| b.score).reduce(f32::max);
            for (i, b) in scene.boxes.iter_mut().enumerate() {
                b.class_id = class_id;
                if phrases {
                    b.label = self.phrase_for(key, label, i as u64);
                }
            }
            boxes.extend(scene.boxes);
            logs.push(scene.log);
        }
        Some((boxes, logs))
    }

    /// Grounding DINO names what it grounded with a phrase; the simulator only uses phrases a
    /// client can map back to the label (case, punctuation, an article, a regular plural).
    fn phrase_for(&self, key: &str, label: &str, i: u64) -> String {
        let u = self.unit("phrase", key, label, i);
        if u < 0.75 {
            label.to_owned()
        } else if u < 0.80 {
            text::capitalize(label)
        } else if u < 0.85 {
            format!("{label}.")
        } else if u < 0.95 {
            format!("the {label}")
        } else {
            match label.rsplit_once(' ') {
                Some((head, last)) => {
                    format!("{head} {}", pluralize_word(last, &ahash::AHashMap::new()))
                }
                None => pluralize_word(label, &ahash::AHashMap::new()),
            }
        }
    }

    fn label_scene(&self, key: &str, img: &SimImage, label: &str, (w, h): (u32, u32)) -> LabelScene {
        let vocab = self.vocab();
        let concept = vocab.lookup(label);
        let mut log = DetectorLabelLog {
            label: label.to_owned(),
            concept: concept.map(|c| vocab.name(c).to_owned()),
            present: false,
            instances: Vec::new(),
            tempting: false,
            false_boxes: Vec::new(),
            reported: false,
            score: None,
        };
        let Some(c) = concept else {
            return LabelScene { boxes: Vec::new(), log };
        };
        let name = vocab.name(c);
        let (w, h) = (f64::from(w.max(1)), f64::from(h.max(1)));
        let mut boxes = Vec::new();
        match img.objects.iter().find(|o| o.concept == c) {
            Some(o) => {
                log.present = true;
                let n = instances(o.count);
                let crowd = n >= CROWD;
                let cells = grid_cells(n, self.unit("grid", key, name, 0));
                let (p_small, p_large) = self.size_odds(name);
                for (i, cell) in (0..n).zip(cells) {
                    let at = |what: &str| self.unit(what, key, name, u64::from(i));
                    let u = at("size");
                    let size = if u < p_small {
                        SizeClass::Small
                    } else if u >= 1.0 - p_large {
                        SizeClass::Large
                    } else {
                        SizeClass::Medium
                    };
                    let weight = size.miss_weight() * if crowd { CROWD_WEIGHT } else { 1.0 };
                    let p_miss = (self.config.detector_miss_rate * weight / self.mean_weight).min(MAX_MISS);
                    let mut entry = InstanceLog { size, crowd, score: None, duplicate: None };
                    let missed = at("miss") < p_miss;
                    if !missed || at("weak") < MISSED_WEAK_SHARE {
                        // 0.199: a weak score must not round up to the threshold
                        let s = if missed { 0.15 + 0.199 * at("score") } else { 0.35 + 0.6 * at("score") };
                        let score = quantize(s);
                        let bbox = cell_box(cell, (w, h), size, |j| at(&format!("box{j}")));
                        entry.score = Some(score);
                        boxes.push(SimBox { label: label.to_owned(), score, bbox, kind: BoxKind::True, class_id: 0 });
                        if at("duplicate") < DUPLICATE_RATE {
                            let dup = quantize(f64::from(score) * (0.5 + 0.3 * at("duplicate-score")));
                            let (bw, bh) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
                            let dx = (at("dup-x") as f32 - 0.5) * 0.08 * bw;
                            let dy = (at("dup-y") as f32 - 0.5) * 0.08 * bh;
                            let (fw, fh) = (w as f32, h as f32);
                            let moved = [
                                (bbox[0] + dx).clamp(0.0, fw),
                                (bbox[1] + dy).clamp(0.0, fh),
                                (bbox[2] + dx).clamp(0.0, fw),
                                (bbox[3] + dy).clamp(0.0, fh),
                            ];
                            entry.duplicate = Some(dup);
                            boxes.push(SimBox { label: label.to_owned(), score: dup, bbox: moved, kind: BoxKind::Duplicate, class_id: 0 });
                        }
                    }
                    log.instances.push(entry);
                }
            }
            None => {
                log.tempting = img.objects.iter().any(|o| self.corpus.cooc_id(o.concept, c) > 0);
                if log.tempting && self.unit("false", key, name, 0) < self.config.detector_false_rate {
                    let n = if self.unit("false-second", key, name, 0) < SECOND_FALSE_BOX { 2 } else { 1 };
                    for i in 0..n {
                        let at = |what: &str| self.unit(what, key, name, i);
                        let v = at("false-band");
                        let s = if v < 0.35 {
                            0.05 + 0.1 * at("false-score")
                        } else if v < 0.8 {
                            0.15 + 0.2 * at("false-score")
                        } else {
                            0.35 + 0.25 * at("false-score")
                        };
                        let score = quantize(s);
                        let size = if at("false-size") < 0.5 { SizeClass::Small } else { SizeClass::Medium };
                        let bbox = cell_box((0.0, 0.0, 1.0, 1.0), (w, h), size, |j| at(&format!("false-box{j}")));
                        log.false_boxes.push(score);
                        boxes.push(SimBox { label: label.to_owned(), score, bbox, kind: BoxKind::False, class_id: 0 });
                    }
                }
            }
        }
        LabelScene { boxes, log }
    }

    /// The judge's reply to `prompt` about image `key`, and its decision; `None` for an unknown
    /// key.
    pub fn judge(&self, key: &str, prompt: &str) -> Option<(String, JudgeDecision)> {
        let img = self.corpus.image(key)?;
        let vocab = self.vocab();
        let question = prompt.trim().to_owned();
        let lower = question.to_lowercase();
        let asked = lower.split('?').next().unwrap_or("");
        let words = text::words(asked);
        let first = words.first().map(|(_, w)| w.as_str()).unwrap_or("");
        let concept_in = |from_word: usize| {
            let start = words.get(from_word).map_or(asked.len(), |(at, _)| *at);
            text::scan_phrases(vocab, &asked[start..]).into_iter().find_map(|h| h.concept)
        };
        let unparsed = || JudgeDecision {
            question: question.clone(),
            concept: None,
            truth: JudgeTruth::Unparsed,
            answer: "I cannot tell.".to_owned(),
            erred: false,
        };
        if first == "what" {
            // "what {family} is|are the {concept}"
            let family = words.get(1).and_then(|(_, f)| vocab.families().iter().position(|x| x.name == *f));
            let (Some(fi), Some(c)) = (family, concept_in(2)) else {
                return Some((unparsed().answer.clone(), unparsed()));
            };
            let decision = self.judge_attribute(key, img, question.clone(), fi, c);
            return Some((decision.answer.clone(), decision));
        }
        if !lower.contains('?') || !AUXILIARIES.contains(&first) {
            return Some((unparsed().answer.clone(), unparsed()));
        }
        let Some(c) = concept_in(1) else {
            return Some((unparsed().answer.clone(), unparsed()));
        };
        let name = vocab.name(c);
        let truth = img.objects.iter().any(|o| o.concept == c);
        let erred = self.unit("judge-error", key, name, 0) < self.config.judge_error_rate;
        let yes = truth != erred;
        let variants: [&str; 3] = if yes {
            ["Yes.", "Yes, there is.", "Yes, there is one in the image."]
        } else {
            ["No.", "No, there is not.", "No, there is none in the image."]
        };
        let answer = variants[(self.unit("judge-phrasing", key, name, 0) * 3.0) as usize % 3].to_owned();
        let decision =
            JudgeDecision { question, concept: Some(name.to_owned()), truth: JudgeTruth::Exists { truth }, answer: answer.clone(), erred };
        Some((answer, decision))
    }

    fn judge_attribute(&self, key: &str, img: &SimImage, question: String, fi: usize, c: ConceptId) -> JudgeDecision {
        let vocab = self.vocab();
        let family = &vocab.families()[fi];
        let name = vocab.name(c);
        let known: Vec<&str> = img
            .objects
            .iter()
            .find(|o| o.concept == c)
            .and_then(|o| o.attributes.iter().find(|(f, _)| usize::from(*f) == fi))
            .map(|(_, vs)| vs.iter().map(|v| family.values[usize::from(*v)].as_str()).collect())
            .unwrap_or_default();
        let domain = format!("judge-{}", family.name);
        let pick = |what: &str, from: &[&str]| -> Option<String> {
            let u = self.unit(what, key, name, fi as u64);
            from.get((u * from.len() as f64) as usize).map(|v| v.to_string())
        };
        let wrong: Vec<&str> = family.values.iter().map(String::as_str).filter(|v| !known.contains(v)).collect();
        let erred =
            !known.is_empty() && !wrong.is_empty() && self.unit("judge-error", key, name, 1 + fi as u64) < self.config.judge_error_rate;
        let value = if known.is_empty() {
            let all: Vec<&str> = family.values.iter().map(String::as_str).collect();
            pick(&domain, &all)
        } else if erred {
            pick(&domain, &wrong)
        } else {
            pick(&domain, &known)
        };
        let answer = match value {
            Some(v) => format!("{}.", text::capitalize(&v)),
            None => "I cannot tell.".to_owned(),
        };
        JudgeDecision {
            question,
            concept: Some(name.to_owned()),
            truth: JudgeTruth::Attribute { family: family.name.clone(), truth: known.iter().map(|v| v.to_string()).collect() },
            answer,
            erred,
        }
    }
}

const AUXILIARIES: &[&str] = &["is", "are", "does", "do", "can", "could", "was", "were", "has", "have"];

/// Simulated instances of an object: its count, 1 when unknown, at most [`MAX_INSTANCES`].
fn instances(count: Option<u32>) -> u32 {
    count.unwrap_or(1).clamp(1, MAX_INSTANCES)
}

/// Scores as the service sends them: three decimals, so a score read back from JSON is the
/// same `f32` as the one logged.
fn quantize(s: f64) -> f32 {
    ((s.clamp(0.0, 1.0) * 1000.0).round() / 1000.0) as f32
}

/// `n` distinct cells (x0, y0, x1, y1 as fractions of the image) of the smallest near-square
/// grid with room for `n`, in a seeded order.
fn grid_cells(n: u32, u: f64) -> Vec<(f64, f64, f64, f64)> {
    let cols = (f64::from(n).sqrt().ceil() as u32).max(1);
    let rows = n.div_ceil(cols).max(1);
    let total = cols * rows;
    // a stride coprime with the cell count visits every cell once, from a seeded start
    let start = (u * f64::from(total)) as u32 % total;
    let stride = (1..=total).rev().find(|s| gcd(*s, total) == 1 && *s <= total / 2 + 1).unwrap_or(1);
    (0..n)
        .map(|i| {
            let cell = (start + i * stride) % total;
            let (cx, cy) = (cell % cols, cell / cols);
            let (fw, fh) = (1.0 / f64::from(cols), 1.0 / f64::from(rows));
            (f64::from(cx) * fw, f64::from(cy) * fh, f64::from(cx + 1) * fw, f64::from(cy + 1) * fh)
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A box of `size` inside `cell` (fractions) of a `w × h` image, placed by `u(0..4)`.
fn cell_box(cell: (f64, f64, f64, f64), (w, h): (f64, f64), size: SizeClass, u: impl Fn(u32) -> f64) -> [f32; 4] {
    let (lo, hi) = size.side();
    let (cw, ch) = ((cell.2 - cell.0) * w, (cell.3 - cell.1) * h);
    let bw = cw * (lo + (hi - lo) * u(0));
    let bh = ch * (lo + (hi - lo) * u(1));
    let x0 = cell.0 * w + (cw - bw) * u(2);
    let y0 = cell.1 * h + (ch - bh) * u(3);
    [x0 as f32, y0 as f32, (x0 + bw) as f32, (y0 + bh) as f32]
}

/// Width and height of a PNG or JPEG image from its header; `None` for anything else.
pub fn image_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    let be16 = |i: usize| bytes.get(i..i + 2).map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])));
    let size = if bytes.starts_with(PNG) && bytes.get(12..16) == Some(b"IHDR") {
        let be32 = |i: usize| bytes.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        (be32(16)?, be32(20)?)
    } else if bytes.starts_with(&[0xff, 0xd8]) {
        let mut i = 2;
        loop {
            // markers may be padded with 0xff
            while bytes.get(i) == Some(&0xff) && bytes.get(i + 1) == Some(&0xff) {
                i += 1;
            }
            if bytes.get(i) != Some(&0xff) {
                return None;
            }
            let marker = *bytes.get(i + 1)?;
            match marker {
                // start of frame (not DHT, JPG, DAC): height, then width
                0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => break (be16(i + 7)?, be16(i + 5)?),
                // markers without a length
                0x01 | 0xd0..=0xd8 => i += 2,
                0xd9 | 0xda => return None,
                _ => i += 2 + usize::try_from(be16(i + 2)?).ok()?,
            }
        }
    } else {
        return None;
    };
    (size.0 > 0 && size.1 > 0).then_some(size)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dftg_core::detection::{iou, nms_per_label, Detection};
    use dftg_core::truth::{ImageTruth, ObjectTruth};

    use super::*;

    fn corpus() -> Arc<SimCorpus> {
        let obj = |name: &str, count: Option<u32>, color: Option<&str>| ObjectTruth {
            name: name.into(),
            count,
            attributes: color.map(|c| BTreeMap::from([("color".to_string(), vec![c.to_string()])])).unwrap_or_default(),
        };
        let items = vec![
            (
                ImageTruth { image: "a".into(), file: None, objects: vec![obj("person", Some(7), None), obj("car", Some(2), Some("red"))] },
                b"a".to_vec(),
            ),
            (ImageTruth { image: "b".into(), file: None, objects: vec![obj("car", None, None), obj("bus", Some(1), None)] }, b"b".to_vec()),
            (ImageTruth { image: "c".into(), file: None, objects: vec![obj("dog", Some(1), None)] }, b"c".to_vec()),
        ];
        Arc::new(SimCorpus::new(items).unwrap())
    }

    fn labels(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn png_and_jpeg_sizes_are_read_from_the_header() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&640u32.to_be_bytes());
        png.extend_from_slice(&427u32.to_be_bytes());
        assert_eq!(image_size(&png), Some((640, 427)));
        // SOI, an APP0 segment of 16 bytes, padding, then SOF0 with height 300 and width 500
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10];
        jpeg.extend_from_slice(&[0u8; 14]);
        jpeg.extend_from_slice(&[0xff, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x01, 0x2c, 0x01, 0xf4]);
        assert_eq!(image_size(&jpeg), Some((500, 300)));
        assert_eq!(image_size(b"img-1"), None);
        assert_eq!(image_size(&jpeg[..12]), None);
        assert_eq!(image_size(&[0xff, 0xd8, 0xff, 0xda]), None);
        assert_eq!(image_size(&png[..20]), None);
    }

    #[test]
    fn grid_cells_are_distinct_and_inside_the_image() {
        for n in [1u32, 2, 3, 4, 5, 7, 9, 10, 50] {
            for u in [0.0, 0.37, 0.99] {
                let cells = grid_cells(n, u);
                assert_eq!(cells.len(), n as usize);
                for (i, a) in cells.iter().enumerate() {
                    assert!(a.0 >= 0.0 && a.1 >= 0.0 && a.2 <= 1.0 + 1e-9 && a.3 <= 1.0 + 1e-9, "{a:?}");
                    for b in &cells[..i] {
                        assert_ne!(a, b, "n {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn decisions_are_pure_and_independent_of_the_other_labels() {
        let v = SimVision::new(corpus(), 3, SimVisionConfig { detector_miss_rate: 0.3, ..SimVisionConfig::default() }).unwrap();
        let (all, logs) = v.detect("a", &labels(&["person", "car", "bus", "dog"]), (640, 480), 0.0, false).unwrap();
        let (again, _) = v.detect("a", &labels(&["person", "car", "bus", "dog"]), (640, 480), 0.0, false).unwrap();
        assert_eq!(all, again);
        let (cars, _) = v.detect("a", &labels(&["car"]), (640, 480), 0.0, false).unwrap();
        let cars_in_all: Vec<SimBox> = all.iter().filter(|b| b.label == "car").map(|b| SimBox { class_id: 0, ..b.clone() }).collect();
        assert_eq!(cars, cars_in_all);
        assert!(all.iter().filter(|b| b.label == "car").all(|b| b.class_id == 1));
        assert_eq!(logs.len(), 4);
        assert!(logs[0].present && logs[0].instances.len() == 7 && logs[0].instances.iter().all(|i| i.crowd));
        assert!(logs[1].present && logs[1].instances.len() == 2 && logs[1].instances.iter().all(|i| !i.crowd));
        // bus co-occurs with car in the corpus (image b); dog never co-occurs with anything here
        assert!(!logs[2].present && logs[2].tempting);
        assert!(!logs[3].present && !logs[3].tempting && logs[3].false_boxes.is_empty());
        assert!(v.detect("nope", &labels(&["car"]), (640, 480), 0.0, false).is_none());
        // an unknown label is simply absent
        let (none, logs) = v.detect("a", &labels(&["unicorn"]), (640, 480), 0.0, false).unwrap();
        assert!(none.is_empty() && logs[0].concept.is_none() && !logs[0].present);
    }

    #[test]
    fn true_boxes_never_overlap_so_nms_keeps_every_instance() {
        let config = SimVisionConfig { detector_miss_rate: 0.0, detector_false_rate: 0.0, ..SimVisionConfig::default() };
        let v = SimVision::new(corpus(), 9, config).unwrap();
        for seed_image in ["a", "b"] {
            let (boxes, logs) = v.detect(seed_image, &labels(&["person", "car"]), (800, 600), 0.0, false).unwrap();
            let dets: Vec<Detection> = boxes.iter().map(|b| Detection { label: b.label.clone(), score: b.score, bbox: b.bbox }).collect();
            let kept = nms_per_label(&dets, 0.5);
            let truly: usize = logs.iter().map(|l| l.instances.len()).sum();
            assert_eq!(kept.len(), truly, "{seed_image}");
            for b in &boxes {
                assert!(b.bbox[0] >= 0.0 && b.bbox[1] >= 0.0 && b.bbox[2] <= 800.5 && b.bbox[3] <= 600.5, "{b:?}");
            }
            for (i, a) in boxes.iter().enumerate().filter(|(_, b)| b.kind == BoxKind::True) {
                for b in boxes[..i].iter().filter(|b| b.kind == BoxKind::True && b.label == a.label) {
                    assert_eq!(iou(&a.bbox, &b.bbox), 0.0);
                }
            }
        }
    }

    #[test]
    fn the_threshold_hides_low_boxes_and_phrases_name_the_label() {
        let v = SimVision::new(corpus(), 5, SimVisionConfig::default()).unwrap();
        let ls = labels(&["person", "car", "traffic light"]);
        let (low, _) = v.detect("a", &ls, (640, 480), 0.0, false).unwrap();
        let (high, logs) = v.detect("a", &ls, (640, 480), 0.3, true).unwrap();
        assert_eq!(high.len(), low.iter().filter(|b| b.score >= 0.3).count());
        assert!(high.iter().all(|b| b.score >= 0.3));
        for l in &logs {
            assert_eq!(l.reported, l.score.is_some());
        }
        for b in &high {
            assert!(ls.iter().any(|l| b.label.to_lowercase().contains(l.as_str())), "{}", b.label);
        }
    }

    #[test]
    fn the_judge_reads_both_questions() {
        let v = SimVision::new(corpus(), 1, SimVisionConfig { judge_error_rate: 0.0, ..SimVisionConfig::default() }).unwrap();
        let (yes, d) = v.judge("a", "Is there a car in the image? Answer yes or no.").unwrap();
        assert!(dftg_core::pope::parse_answer(&yes) && d.truth == JudgeTruth::Exists { truth: true } && !d.erred);
        let (no, d) = v.judge("a", "Is there a dog in the image? Answer yes or no.").unwrap();
        assert!(!dftg_core::pope::parse_answer(&no) && d.concept.as_deref() == Some("dog"));
        let (red, d) = v.judge("a", "What color is the car? Answer with one word.").unwrap();
        assert_eq!(red, "Red.");
        assert_eq!(d.truth, JudgeTruth::Attribute { family: "color".into(), truth: vec!["red".into()] });
        let (_, d) = v.judge("b", "What color is the car? Answer with one word.").unwrap();
        assert_eq!(d.truth, JudgeTruth::Attribute { family: "color".into(), truth: vec![] });
        for odd in ["Describe the image.", "What smell is the car?", "Is there a unicorn here?"] {
            let (text, d) = v.judge("a", odd).unwrap();
            assert_eq!((text.as_str(), &d.truth), ("I cannot tell.", &JudgeTruth::Unparsed), "{odd}");
        }
        let always_wrong = SimVision::new(corpus(), 1, SimVisionConfig { judge_error_rate: 1.0, ..SimVisionConfig::default() }).unwrap();
        let (answer, d) = always_wrong.judge("a", "Is there a car in the image? Answer yes or no.").unwrap();
        assert!(!dftg_core::pope::parse_answer(&answer) && d.erred);
        let (wrong, d) = always_wrong.judge("a", "What color is the car? Answer with one word.").unwrap();
        assert!(wrong != "Red." && d.erred, "{wrong}");
    }

    #[test]
    fn rates_must_be_probabilities() {
        let bad = SimVisionConfig { detector_false_rate: 1.5, ..SimVisionConfig::default() };
        let err = SimVision::new(corpus(), 1, bad).unwrap_err().to_string();
        assert!(err.contains("detector_false_rate"), "{err}");
    }
}
