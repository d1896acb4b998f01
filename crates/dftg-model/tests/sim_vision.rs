//! dftg's detector and judge clients against the simulator over real HTTP: the simulated
//! detector's misses and false boxes, and the judge's wrong answers, match their configured
//! rates; what the clients receive matches the truth log line for line; the three detector
//! contracts agree.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dftg_core::truth::{ImageTruth, ObjectTruth};
use dftg_model::client::{OpenAiClient, RetryPolicy};
use dftg_model::detect::{decide, DetectRequest, Detection, Detector, DetectorApi, DetectorConfig, HttpDetector, Thresholds, Verdict};
use dftg_model::judge::{judge_config, Judge};
use dftg_model::sim::{
    self, profile_by_name, DetectorLabelLog, DetectorLogEntry, JudgeLogEntry, JudgeTruth, SimConfig, SimCorpus, SimHandle, SimVisionConfig,
    SizeClass, StableHasher,
};

/// Scenes that share objects, so co-occurrence makes some absent concepts tempting.
const SCENES: &[&[(&str, &[&str])]] = &[
    &[
        ("oven", &["silver", "black"]),
        ("sink", &["white"]),
        ("refrigerator", &["white"]),
        ("bowl", &["white"]),
        ("cup", &["red"]),
        ("person", &[]),
        ("bottle", &["green"]),
    ],
    &[
        ("dining table", &["brown"]),
        ("pizza", &[]),
        ("cup", &["white"]),
        ("fork", &["silver"]),
        ("knife", &["silver"]),
        ("chair", &["brown"]),
        ("person", &[]),
        ("wine glass", &[]),
    ],
    &[
        ("car", &["red", "blue", "white"]),
        ("person", &[]),
        ("traffic light", &[]),
        ("bus", &["yellow"]),
        ("truck", &["white"]),
        ("bicycle", &["black"]),
    ],
    &[
        ("couch", &["gray", "brown"]),
        ("tv", &["black"]),
        ("chair", &["brown"]),
        ("person", &[]),
        ("potted plant", &["green"]),
        ("remote", &["black"]),
    ],
    &[("dog", &["brown", "black"]), ("person", &[]), ("bench", &["brown"]), ("frisbee", &["red"]), ("bird", &["gray"])],
    &[("zebra", &[]), ("giraffe", &[]), ("elephant", &["gray"])],
];

/// Concepts in no scene: never present, never tempting.
const ELSEWHERE: &[&str] = &["toothbrush", "hair drier", "kite", "surfboard"];

fn synthetic(n: usize) -> Vec<(ImageTruth, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let scene = SCENES[i % SCENES.len()];
            let u = |what: &str, j: usize| StableHasher::new("vision-corpus").u64(i as u64).str(what).u64(j as u64).unit();
            let mut objects = Vec::new();
            for (j, (name, colours)) in scene.iter().enumerate() {
                if j > 1 && u("keep", j) < 0.4 {
                    continue;
                }
                // mostly one to three, sometimes a crowd
                let count = (u("count-known", j) < 0.85).then(|| 1 + (u("count", j).powi(2) * 9.0) as u32);
                let mut attributes = BTreeMap::new();
                if !colours.is_empty() && u("colour-known", j) < 0.7 {
                    let c = colours[(u("colour", j) * colours.len() as f64) as usize];
                    attributes.insert("color".to_string(), vec![c.to_string()]);
                }
                objects.push(ObjectTruth { name: name.to_string(), count, attributes });
            }
            (ImageTruth { image: format!("img{i}"), file: None, objects }, format!("vision-img-{i}").into_bytes())
        })
        .collect()
}

async fn start(corpus: Arc<SimCorpus>, vision: SimVisionConfig, log: &std::path::Path) -> SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimConfig::new(profile_by_name("mild").unwrap()).with_seed(7).with_vision(vision).with_truth_log(log);
    sim::start(corpus, config, listener).await.unwrap()
}

fn detector(h: &SimHandle, api: DetectorApi, threshold: f32, per_request: usize) -> HttpDetector {
    HttpDetector::new(DetectorConfig {
        box_threshold: threshold,
        max_labels_per_request: per_request,
        max_in_flight: 8,
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy::none(),
        jitter_seed: Some(1),
        ..DetectorConfig::new(h.detector_url(api), api)
    })
    .unwrap()
}

/// Labels asked about an image, claims-first style: what is there, up to four absent concepts
/// that co-occur with it in the corpus, and one that never does.
fn labels_for(corpus: &SimCorpus, truth: &ImageTruth, i: usize) -> Vec<String> {
    let present: Vec<&str> = truth.objects.iter().map(|o| o.name.as_str()).collect();
    let mut labels: Vec<String> = present.iter().map(|s| s.to_string()).collect();
    let tempting = SCENES
        .iter()
        .flat_map(|s| s.iter().map(|(n, _)| *n))
        .filter(|c| !present.contains(c) && present.iter().any(|p| corpus.cooccurrence(p, c) > 0));
    for c in tempting {
        if !labels.iter().any(|l| l == c) && labels.len() < present.len() + 4 {
            labels.push(c.to_string());
        }
    }
    labels.push(ELSEWHERE[i % ELSEWHERE.len()].to_string());
    labels
}

/// The detector's and judge's lines, which go beside the truth log (whose lines keep their
/// one shape).
fn read_log(path: &std::path::Path) -> (Vec<DetectorLogEntry>, Vec<JudgeLogEntry>) {
    if let Ok(truth) = std::fs::read_to_string(path) {
        for line in truth.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v.get("hallucinated").is_some(), "the truth log holds only the model's lines: {line}");
        }
    }
    let text = std::fs::read_to_string(sim::vision_log_path(path)).unwrap();
    let (mut det, mut judge) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v.get("detector").is_some() {
            det.push(serde_json::from_value(v).unwrap());
        } else if v.get("judge").is_some() {
            judge.push(serde_json::from_value(v).unwrap());
        } else {
            assert!(v.get("hallucinated").is_some(), "unknown truth-log line {line}");
        }
    }
    (det, judge)
}

fn share(hits: usize, of: usize) -> f64 {
    hits as f64 / of.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detector_misses_and_false_boxes_match_the_configuration() {
    let items = synthetic(420);
    let truths: Vec<ImageTruth> = items.iter().map(|(t, _)| t.clone()).collect();
    let images: Vec<Bytes> = items.iter().map(|(_, b)| Bytes::from(b.clone())).collect();
    let corpus = Arc::new(SimCorpus::new(items).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truth.jsonl");
    let (miss, false_rate) = (0.2, 0.3);
    let h = start(
        corpus.clone(),
        SimVisionConfig { detector_miss_rate: miss, detector_false_rate: false_rate, judge_error_rate: 0.0, latency_ms: 0 },
        &path,
    )
    .await;
    // Grounding DINO: phrases for labels, so snapping is on the path; small chunks, so chunking too
    let det = detector(&h, DetectorApi::GroundingDino, 0.0, 4);
    let mut replies: HashMap<String, (Vec<String>, Vec<Detection>)> = HashMap::new();
    let mut requests = 0;
    for (i, (truth, image)) in truths.iter().zip(&images).enumerate() {
        let labels = labels_for(&corpus, truth, i);
        let reply = det.detect(&DetectRequest::new(image.clone(), labels.clone())).await.unwrap();
        assert_eq!(reply.requests as usize, labels.len().div_ceil(4));
        assert_eq!(reply.unmatched, 0, "every phrase the simulator sends names a requested label");
        requests += reply.requests;
        replies.insert(truth.image.clone(), (labels, reply.detections));
    }
    let (logged, _) = read_log(&path);
    assert_eq!(logged, h.vision().detector_log(), "the file and the in-memory log agree");
    assert_eq!(h.vision().stats().detector_requests, u64::from(requests));
    let by_label: HashMap<(String, String), DetectorLabelLog> =
        logged.iter().flat_map(|e| e.detector.iter().map(move |l| ((e.image.clone(), l.label.clone()), l.clone()))).collect();

    // what the client received is what the simulator decided, box for box
    let t = Thresholds::default();
    let (mut present_total, mut present_found, mut absent_total, mut absent_called) = (0, 0, 0, 0);
    let mut counts_checked = 0;
    for (image, (labels, dets)) in &replies {
        for label in labels {
            let log = &by_label[&(image.clone(), label.clone())];
            let mine: Vec<&Detection> = dets.iter().filter(|d| d.label == *label).collect();
            let seen = log.instances.iter().filter(|i| i.score.is_some()).count();
            let dups = log.instances.iter().filter(|i| i.duplicate.is_some()).count();
            assert_eq!(mine.len(), seen + dups + log.false_boxes.len(), "{image} {label}");
            assert_eq!(mine.iter().map(|d| d.score).reduce(f32::max), log.score, "{image} {label}");
            let verdict = decide(dets, label, &t);
            if let (true, Verdict::Present { count: Some(n), .. }) = (log.present, &verdict) {
                // instances never overlap and duplicates are suppressed: the count is exact
                let confident = log.instances.iter().filter(|i| i.score.is_some_and(|s| s >= 0.35)).count();
                assert_eq!(*n as usize, confident, "{image} {label}");
                counts_checked += 1;
                assert!(log.instances.iter().all(|i| i.score.is_none_or(|s| !(0.15..0.35).contains(&s))));
            }
            if log.present {
                present_total += 1;
                present_found += usize::from(!verdict.is_absent());
            } else {
                absent_total += 1;
                absent_called += usize::from(verdict.is_present());
            }
        }
    }

    let instances: Vec<_> = by_label.values().flat_map(|l| l.instances.iter()).collect();
    let missed = |f: &dyn Fn(&&dftg_model::sim::InstanceLog) -> bool| {
        let of: Vec<_> = instances.iter().filter(|i| f(i)).collect();
        // missed as a detector evaluation counts it: no box at the operating threshold
        (share(of.iter().filter(|i| i.score.is_none_or(|s| s < 0.35)).count(), of.len()), of.len())
    };
    let (all, n) = missed(&|_| true);
    let (small, _) = missed(&|i| i.size == SizeClass::Small);
    let (medium, _) = missed(&|i| i.size == SizeClass::Medium);
    let (large, _) = missed(&|i| i.size == SizeClass::Large);
    let (crowd, n_crowd) = missed(&|i| i.crowd);
    let (alone, _) = missed(&|i| !i.crowd);
    let tempting: Vec<_> = by_label.values().filter(|l| !l.present && l.tempting).collect();
    let false_share = share(tempting.iter().filter(|l| !l.false_boxes.is_empty()).count(), tempting.len());
    let untempting_false: usize = by_label.values().filter(|l| !l.present && !l.tempting).map(|l| l.false_boxes.len()).sum();
    eprintln!(
        "instances {n} (crowd {n_crowd}): missed {all:.3} (small {small:.3}, medium {medium:.3}, large {large:.3}; crowd {crowd:.3}, alone {alone:.3}); \
         tempting absent labels {}: false boxes {false_share:.3}; labels present {present_total}: detected {:.3}, counted {counts_checked}; absent {absent_total}: called present {:.3}",
        tempting.len(),
        share(present_found, present_total),
        share(absent_called, absent_total),
    );
    assert!(n > 2000 && n_crowd > 300 && tempting.len() > 800, "the corpus is too small to measure");
    assert!((all - miss).abs() < 0.03, "missed {all}, configured {miss}");
    assert!(small > medium && medium > large, "{small} {medium} {large}");
    assert!(crowd > alone, "{crowd} {alone}");
    assert!((false_share - false_rate).abs() < 0.05, "false boxes on {false_share}, configured {false_rate}");
    assert_eq!(untempting_false, 0);
    // at the verdict level: most present labels are seen (a label is lost only when all its
    // instances are), and a false box is called present only when it scores high
    assert!(share(present_found, present_total) > 0.88);
    assert!(counts_checked > present_total / 2, "{counts_checked} of {present_total}");
    assert!(share(absent_called, absent_total) < false_rate * 0.4);
}

#[tokio::test]
async fn the_three_contracts_see_the_same_boxes() {
    let items = synthetic(36);
    let truths: Vec<ImageTruth> = items.iter().map(|(t, _)| t.clone()).collect();
    let images: Vec<Bytes> = items.iter().map(|(_, b)| Bytes::from(b.clone())).collect();
    let corpus = Arc::new(SimCorpus::new(items).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let h = start(corpus.clone(), SimVisionConfig { detector_false_rate: 0.5, ..SimVisionConfig::default() }, &dir.path().join("t.jsonl"))
        .await;
    let detectors: Vec<HttpDetector> = DetectorApi::ALL.iter().map(|api| detector(&h, *api, 0.1, 32)).collect();
    let mut boxes_seen = 0;
    for (i, (truth, image)) in truths.iter().zip(&images).enumerate() {
        let req = DetectRequest::new(image.clone(), labels_for(&corpus, truth, i));
        let mut per_api = Vec::new();
        for det in &detectors {
            let reply = det.detect(&req).await.unwrap();
            let mut summary: Vec<(String, u32)> =
                reply.detections.iter().map(|d| (d.label.clone(), (d.score * 1000.0).round() as u32)).collect();
            summary.sort();
            assert!(reply.detections.iter().all(|d| d.score >= 0.1));
            per_api.push((summary, reply.detections));
        }
        assert_eq!(per_api[0].0, per_api[1].0, "hf and grounding dino differ on {}", truth.image);
        assert_eq!(per_api[1].0, per_api[2].0, "grounding dino and yolo-world differ on {}", truth.image);
        // hf sends whole pixels, roboflow centres: the same boxes within rounding
        for (a, b) in per_api[0].1.iter().zip(&per_api[2].1) {
            assert!(a.bbox.iter().zip(&b.bbox).all(|(x, y)| (x - y).abs() <= 0.6), "{a:?} {b:?}");
        }
        boxes_seen += per_api[0].1.len();
    }
    assert!(boxes_seen > 100, "{boxes_seen}");
    // each (image, label) is logged once, whichever contract asked first
    let logged = h.vision().detector_log();
    let labels: usize = logged.iter().map(|e| e.detector.len()).sum();
    let asked: usize = truths.iter().enumerate().map(|(i, t)| labels_for(&corpus, t, i).len()).sum();
    assert_eq!(labels, asked);
    assert!(logged.iter().all(|e| e.api == "hf"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judge_errors_match_the_configuration() {
    let items = synthetic(300);
    let truths: Vec<ImageTruth> = items.iter().map(|(t, _)| t.clone()).collect();
    let images: Vec<Bytes> = items.iter().map(|(_, b)| Bytes::from(b.clone())).collect();
    let corpus = Arc::new(SimCorpus::new(items).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truth.jsonl");
    let error_rate = 0.1;
    let h = start(corpus.clone(), SimVisionConfig { judge_error_rate: error_rate, ..SimVisionConfig::default() }, &path).await;
    let client = OpenAiClient::new(judge_config(h.judge_base_url(), "judge")).unwrap();
    let judge = Judge::new(Arc::new(client));
    let vocab = corpus.vocabulary();
    let (mut asked, mut wrong, mut colours, mut wrong_colours) = (0, 0, 0, 0);
    for (i, (truth, image)) in truths.iter().zip(&images).enumerate() {
        for label in labels_for(&corpus, truth, i) {
            let a = judge.exists(image, "image/png", &label).await.unwrap();
            asked += 1;
            wrong += usize::from(a.answer != truth.has(&label));
        }
        for o in truth.objects.iter().filter(|o| o.attributes.contains_key("color")) {
            let a = judge.attribute(image, "image/png", &o.name, "color", vocab).await.unwrap();
            let known = &o.attributes["color"];
            colours += 1;
            wrong_colours += usize::from(!a.answer.as_ref().is_some_and(|v| known.contains(v)));
        }
    }
    let (_, logged) = read_log(&path);
    assert_eq!(logged, h.vision().judge_log());
    // every answer the client read is the one the simulator logged, and wrong exactly when it erred
    let erred = logged.iter().filter(|e| e.judge.erred).count();
    assert_eq!(erred, wrong + wrong_colours);
    for e in &logged {
        match &e.judge.truth {
            JudgeTruth::Exists { truth } => assert_eq!(dftg_core::pope::parse_answer(&e.judge.answer), *truth != e.judge.erred),
            JudgeTruth::Attribute { truth, .. } => assert!(!truth.is_empty()),
            JudgeTruth::Unparsed => {
                panic!("the simulator did not understand {:?}", e.judge.question)
            }
        }
    }
    let (exists_share, colour_share) = (share(wrong, asked), share(wrong_colours, colours));
    eprintln!("judge: {asked} yes/no questions, wrong {exists_share:.3}; {colours} colour questions, wrong {colour_share:.3}");
    assert!(asked > 2000 && colours > 400);
    assert!((exists_share - error_rate).abs() < 0.03, "{exists_share}");
    assert!((colour_share - error_rate).abs() < 0.05, "{colour_share}");
}

#[tokio::test]
async fn detector_and_judge_routes_refuse_bad_requests_without_quoting_them() {
    let corpus = Arc::new(SimCorpus::new(synthetic(3)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let h = start(corpus, SimVisionConfig::default(), &dir.path().join("t.jsonl")).await;
    let http = reqwest::Client::new();
    let post = |url: String, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let gd = format!("{}/grounding_dino/infer", h.detector_url(DetectorApi::GroundingDino));
    let unknown = "U0VDUkVULWltYWdl"; // "SECRET-image"
    for (url, body) in [
        (gd.clone(), serde_json::json!({"image": {"type": "url", "value": "http://SECRET"}, "text": ["dog"]})),
        (gd.clone(), serde_json::json!({"image": {"type": "base64", "value": unknown}, "text": ["dog"]})),
        (gd.clone(), serde_json::json!({"image": {"type": "base64", "value": "!!SECRET!!"}, "text": ["dog"]})),
        (gd.clone(), serde_json::json!({"image": {"type": "base64", "value": unknown}, "text": vec!["SECRET dog"; 300]})),
        (h.detector_url(DetectorApi::Hf), serde_json::json!({"inputs": unknown, "parameters": {}})),
        (
            h.detector_url(DetectorApi::Hf),
            serde_json::json!({"inputs": unknown, "parameters": {"candidate_labels": ["dog"], "threshold": 7}}),
        ),
        (format!("{}/chat/completions", h.judge_base_url()), serde_json::json!({"SECRET": 1})),
    ] {
        let (status, text) = post(url.clone(), body).await;
        assert_eq!(status, 400, "{url}: {text}");
        assert!(!text.contains("SECRET"), "{url}: {text}");
    }
    let stats = h.vision().stats();
    assert_eq!((stats.bad_requests, stats.unknown_images), (6, 1));
    assert!(h.vision().detector_log().is_empty() && h.vision().judge_log().is_empty());
}
