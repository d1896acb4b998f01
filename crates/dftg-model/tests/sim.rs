//! The model simulator over real HTTP: determinism, profiles, truth log, yes/no answers,
//! replay, faults and latency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use dftg_core::record::HallucinationKind;
use dftg_core::truth::{ImageTruth, ObjectTruth};
use dftg_model::api::{ChatMessage, ChatRequest, ChatResponse, ContentPart, ImageUrl, MessageContent};
use dftg_model::sim::{
    self, profile_by_name, Faults, Latency, ReplayCaptions, SimConfig, SimCorpus, SimHandle, SimTask, StableHasher, TruthLogEntry,
};

const DETAIL: &str = "Describe this image in detail.";
const BRIEF: &str = "Provide a brief description of the given image.";

/// Scenes that share objects, so co-occurrence matters: (object, colours it may have).
const SCENES: &[&[(&str, &[&str])]] = &[
    &[
        ("oven", &["silver", "black"]),
        ("sink", &["white"]),
        ("refrigerator", &["white"]),
        ("bowl", &["white"]),
        ("cup", &["red", "white"]),
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
    &[
        ("sandwich", &[]),
        ("donut", &["pink"]),
        ("cake", &["white"]),
        ("broccoli", &["green"]),
        ("bowl", &["white"]),
        ("banana", &["yellow"]),
        ("dining table", &["brown"]),
    ],
    &[("dog", &["brown", "black"]), ("person", &[]), ("bench", &["brown"]), ("frisbee", &["red"]), ("bird", &["gray"])],
    &[("zebra", &[]), ("giraffe", &[]), ("elephant", &["gray"])],
];

fn synthetic(n: usize) -> Vec<(ImageTruth, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let scene = SCENES[i % SCENES.len()];
            let u = |what: &str, j: usize| StableHasher::new("it-corpus").u64(i as u64).str(what).u64(j as u64).unit();
            let mut objects = Vec::new();
            for (j, (name, colours)) in scene.iter().enumerate() {
                if j > 1 && u("keep", j) < 0.4 {
                    continue;
                }
                let count = (u("count-known", j) < 0.8).then(|| 1 + (u("count", j) * 4.0) as u32);
                let mut attributes = BTreeMap::new();
                if !colours.is_empty() && u("colour-known", j) < 0.7 {
                    let c = colours[(u("colour", j) * colours.len() as f64) as usize];
                    attributes.insert("color".to_string(), vec![c.to_string()]);
                }
                objects.push(ObjectTruth { name: name.to_string(), count, attributes });
            }
            (ImageTruth { image: format!("img{i}"), file: None, objects }, bytes_of(i))
        })
        .collect()
}

fn bytes_of(i: usize) -> Vec<u8> {
    format!("img-{i}").into_bytes()
}

fn corpus(n: usize) -> Arc<SimCorpus> {
    Arc::new(SimCorpus::new(synthetic(n)).expect("synthetic corpus"))
}

async fn start(corpus: Arc<SimCorpus>, config: SimConfig) -> SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    sim::start(corpus, config, listener).await.unwrap()
}

fn config(profile: &str) -> SimConfig {
    SimConfig::new(profile_by_name(profile).unwrap()).with_seed(11)
}

fn request(bytes: &[u8], prompt: &str) -> ChatRequest {
    let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes));
    ChatRequest {
        model: "whatever".into(),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: MessageContent::Parts(vec![
                ContentPart::Text { text: prompt.into() },
                ContentPart::ImageUrl { image_url: ImageUrl { url } },
            ]),
        }],
        max_tokens: Some(512),
        temperature: Some(0.0),
        response_format: None,
    }
}

async fn post(client: &reqwest::Client, h: &SimHandle, body: &ChatRequest) -> reqwest::Response {
    client.post(format!("{}/chat/completions", h.base_url())).json(body).send().await.unwrap()
}

/// The reply text, asserting a 200 with a well-formed completion.
async fn ask(client: &reqwest::Client, h: &SimHandle, bytes: &[u8], prompt: &str) -> String {
    let r = post(client, h, &request(bytes, prompt)).await;
    assert_eq!(r.status(), 200);
    let resp: ChatResponse = r.json().await.unwrap();
    assert_eq!(resp.choices.len(), 1);
    resp.choices[0].message.content.clone().unwrap()
}

fn object_counts(entries: &[TruthLogEntry]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in entries {
        for h in &e.hallucinated {
            if h.kind == HallucinationKind::Object {
                *m.entry(h.concept.clone()).or_default() += 1;
            }
        }
    }
    m
}

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var("DFTG_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("reference data directory {} is missing (set DFTG_DATA)", dir.display());
    }
    eprintln!("SKIPPED: reference data directory {} not found (set DFTG_DATA)", dir.display());
    None
}

#[tokio::test]
async fn description_is_deterministic_per_image_and_prompt_and_differs_between_images() {
    let corpus = corpus(28);
    let h = start(corpus.clone(), config("people-everywhere")).await;
    let client = reqwest::Client::new();
    let mut texts = BTreeSet::new();
    for i in 0..28 {
        let a = ask(&client, &h, &bytes_of(i), DETAIL).await;
        let b = ask(&client, &h, &bytes_of(i), DETAIL).await;
        assert_eq!(a, b, "same image and prompt must get the identical reply");
        assert!(a.split_terminator(". ").count() >= 2, "a detailed description has several sentences: {a}");
        texts.insert(a);
    }
    assert_eq!(texts.len(), 28, "descriptions differ between images");
    // A second simulator with the same seed answers the same, whatever the request order.
    let h2 = start(corpus, config("people-everywhere")).await;
    for i in (0..28).rev() {
        assert!(texts.contains(&ask(&client, &h2, &bytes_of(i), DETAIL).await));
    }
    h.shutdown().await.unwrap();
    h2.shutdown().await.unwrap();
}

#[tokio::test]
async fn profiles_have_clearly_different_hallucination_distributions() {
    let corpus = corpus(140);
    let client = reqwest::Client::new();
    let mut dists = Vec::new();
    for profile in ["people-everywhere", "kitchenware"] {
        let h = start(corpus.clone(), config(profile)).await;
        for i in 0..140 {
            ask(&client, &h, &bytes_of(i), DETAIL).await;
        }
        let counts = object_counts(&h.truth_log_entries());
        h.shutdown().await.unwrap();
        dists.push(counts);
    }
    let (people, kitchen) = (&dists[0], &dists[1]);
    let share = |d: &BTreeMap<String, usize>, set: &[&str]| {
        let total: usize = d.values().sum();
        let inside: usize = d.iter().filter(|(k, _)| set.contains(&k.as_str())).map(|(_, v)| v).sum();
        inside as f64 / total.max(1) as f64
    };
    const PEOPLE: &[&str] = &["person", "chair", "dining table", "couch", "bench", "handbag", "car"];
    const KITCHEN: &[&str] = &["cup", "bowl", "fork", "knife", "spoon", "bottle", "wine glass"];
    let top = |d: &BTreeMap<String, usize>| d.iter().max_by_key(|(k, v)| (**v, std::cmp::Reverse((*k).clone()))).map(|(k, _)| k.clone());
    assert!(people.values().sum::<usize>() >= 30, "{people:?}");
    assert!(kitchen.values().sum::<usize>() >= 30, "{kitchen:?}");
    assert!(share(people, PEOPLE) > 0.8, "people-everywhere: {people:?}");
    assert!(share(kitchen, KITCHEN) > 0.8, "kitchenware: {kitchen:?}");
    assert!(["person", "chair", "dining table"].contains(&top(people).unwrap().as_str()), "{people:?}");
    assert!(KITCHEN.contains(&top(kitchen).unwrap().as_str()), "{kitchen:?}");
    // Jensen–Shannon divergence (bits) between the two concept distributions.
    let keys: BTreeSet<&String> = people.keys().chain(kitchen.keys()).collect();
    let norm = |d: &BTreeMap<String, usize>| {
        let t = d.values().sum::<usize>() as f64;
        keys.iter().map(|k| d.get(*k).copied().unwrap_or(0) as f64 / t).collect::<Vec<f64>>()
    };
    let (p, q) = (norm(people), norm(kitchen));
    let kl = |a: &[f64], m: &[f64]| a.iter().zip(m).filter(|(x, _)| **x > 0.0).map(|(x, y)| x * (x / y).log2()).sum::<f64>();
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    let js = 0.5 * kl(&p, &m) + 0.5 * kl(&q, &m);
    eprintln!("people-everywhere: {people:?}\nkitchenware: {kitchen:?}\nJS divergence: {js:.3} bits");
    assert!(js > 0.6, "JS divergence {js:.3} between {people:?} and {kitchen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_log_has_one_line_per_image_and_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truth.jsonl");
    let h = start(corpus(21), config("kitchenware").with_truth_log(&path)).await;
    let client = reqwest::Client::new();
    // Every (image, prompt) three times, concurrently.
    let mut jobs = Vec::new();
    for _round in 0..3 {
        for i in 0..21 {
            for prompt in [DETAIL, BRIEF] {
                let (client, h) = (&client, &h);
                jobs.push(async move { ask(client, h, &bytes_of(i), prompt).await });
            }
        }
    }
    futures::future::join_all(jobs).await;
    let entries = h.truth_log_entries();
    assert_eq!(entries.len(), 42);
    let keys: BTreeSet<(String, String)> = entries.iter().map(|e| (e.image.clone(), e.prompt.clone())).collect();
    assert_eq!(keys.len(), 42);
    assert!(entries.iter().all(|e| e.task == SimTask::Describe));
    let stats = h.stats();
    assert_eq!(stats.descriptions, 126);
    h.shutdown().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let from_file: Vec<TruthLogEntry> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(from_file.len(), 42);
    assert_eq!(from_file.iter().map(|e| (e.image.clone(), e.prompt.clone())).collect::<BTreeSet<_>>(), keys);
    // The line format the brief names.
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(first["image"].is_string() && first["prompt"].is_string() && first["hallucinated"].is_array());
}

#[tokio::test]
async fn injected_hallucinations_contradict_the_ground_truth() {
    let corpus = corpus(70);
    let client = reqwest::Client::new();
    let mut kinds = BTreeMap::new();
    for profile in ["people-everywhere", "kitchenware"] {
        let h = start(corpus.clone(), config(profile)).await;
        let mut replies = BTreeMap::new();
        for i in 0..70 {
            replies.insert(format!("img{i}"), ask(&client, &h, &bytes_of(i), DETAIL).await);
        }
        for e in h.truth_log_entries() {
            let truth = corpus.truth(&e.image).unwrap();
            let reply = &replies[&e.image];
            for x in &e.hallucinated {
                *kinds.entry(x.kind).or_insert(0) += 1;
                assert_eq!(&reply[x.span.0 as usize..x.span.1 as usize], x.text, "span of {x:?}");
                match x.kind {
                    HallucinationKind::Object => {
                        assert!(!truth.has(&x.concept), "{x:?} is present in {truth:?}");
                        assert!(truth.has(x.trigger.as_deref().unwrap()));
                    }
                    HallucinationKind::Count => {
                        let o = truth.object(&x.concept).unwrap();
                        assert_eq!(x.true_count, o.count);
                        assert!(o.count.is_some() && x.claimed_count.is_some() && x.claimed_count != o.count);
                    }
                    HallucinationKind::Attribute => {
                        let o = truth.object(&x.concept).unwrap();
                        let known = &o.attributes[x.family.as_deref().unwrap()];
                        assert!(!known.contains(x.claimed.as_ref().unwrap()), "{x:?} vs {o:?}");
                        assert!(x.text.to_lowercase().contains(x.claimed.as_deref().unwrap()));
                    }
                }
            }
            for n in &e.negated {
                assert!(!truth.has(n));
                assert!(!e.hallucinated.iter().any(|x| &x.concept == n && x.kind == HallucinationKind::Object));
            }
            for m in &e.mentioned {
                assert!(truth.has(m));
            }
        }
        h.shutdown().await.unwrap();
    }
    for kind in HallucinationKind::ALL {
        assert!(kinds.get(&kind).copied().unwrap_or(0) >= 5, "too few {kind:?}: {kinds:?}");
    }
}

#[tokio::test]
async fn bad_requests_get_openai_style_400s() {
    let h = start(corpus(7), config("mild")).await;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", h.base_url());
    let check = |status: reqwest::StatusCode, body: serde_json::Value, needle: &str| {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    };
    // Unknown image content.
    let r = post(&client, &h, &request(b"not in the corpus", DETAIL)).await;
    check(r.status(), r.json().await.unwrap(), "unknown image");
    // Not a data URL.
    let mut req = request(b"x", DETAIL);
    req.messages[0].content =
        MessageContent::Parts(vec![ContentPart::ImageUrl { image_url: ImageUrl { url: "https://example.com/a.png".into() } }]);
    let r = post(&client, &h, &req).await;
    check(r.status(), r.json().await.unwrap(), "data: URL");
    // Not base64.
    req.messages[0].content =
        MessageContent::Parts(vec![ContentPart::ImageUrl { image_url: ImageUrl { url: "data:image/png;base64,@@@@".into() } }]);
    let r = post(&client, &h, &req).await;
    check(r.status(), r.json().await.unwrap(), "base64");
    // No image at all.
    req.messages[0].content = MessageContent::Text("Describe the image.".into());
    let r = post(&client, &h, &req).await;
    check(r.status(), r.json().await.unwrap(), "image_url");
    // Not a chat request.
    let r = client.post(&url).header("content-type", "application/json").body("{\"nope\": 1}").send().await.unwrap();
    check(r.status(), r.json().await.unwrap(), "chat completion request");
    let stats = h.stats();
    assert_eq!(stats.unknown_images, 1);
    assert_eq!(stats.bad_requests, 4);
    assert!(h.truth_log_entries().is_empty());
    // Padding-free base64 of a known image is still recognised.
    let mut req = request(b"x", DETAIL);
    let bytes = bytes_of(3);
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
    req.messages[0].content = MessageContent::Parts(vec![
        ContentPart::Text { text: DETAIL.into() },
        ContentPart::ImageUrl { image_url: ImageUrl { url: format!("data:image/jpeg;base64,{b64}") } },
    ]);
    assert_eq!(post(&client, &h, &req).await.status(), 200);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn yes_no_answers_agree_with_the_truth_log() {
    let corpus = corpus(42);
    let h = start(corpus.clone(), config("people-everywhere")).await;
    let client = reqwest::Client::new();
    let probe = ["person", "chair", "dining table", "cup", "dog", "car", "zebra", "couch", "bench", "knife"];
    let mut yes_for_absent = 0;
    for i in 0..42 {
        let key = format!("img{i}");
        ask(&client, &h, &bytes_of(i), DETAIL).await;
        let entry = h.truth_log_entries().into_iter().find(|e| e.image == key && e.prompt == DETAIL).unwrap();
        let described: BTreeSet<&str> =
            entry.hallucinated.iter().filter(|x| x.kind == HallucinationKind::Object).map(|x| x.concept.as_str()).collect();
        let truth = corpus.truth(&key).unwrap();
        for concept in probe {
            let q = format!("Is there a {concept} in the image?");
            let a = ask(&client, &h, &bytes_of(i), &q).await;
            let expect_yes = truth.has(concept) || described.contains(concept);
            assert_eq!(a.starts_with("Yes"), expect_yes, "{key}: {q} -> {a}");
            assert_eq!(a.starts_with("No"), !expect_yes, "{key}: {q} -> {a}");
            yes_for_absent += usize::from(expect_yes && !truth.has(concept));
        }
        // Plural form too.
        let a = ask(&client, &h, &bytes_of(i), "Are there any people in this picture?").await;
        assert_eq!(a.starts_with("Yes"), truth.has("person") || described.contains("person"), "{a}");
    }
    assert!(yes_for_absent > 5, "{yes_for_absent}");
    let answers: Vec<TruthLogEntry> = h.truth_log_entries().into_iter().filter(|e| e.task == SimTask::YesNo).collect();
    assert_eq!(answers.len(), 42 * (probe.len() + 1));
    assert!(answers.iter().all(|e| e.hallucinated.iter().all(|x| x.kind == HallucinationKind::Object)));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn replay_serves_the_recorded_caption() {
    let Some(data) = data_dir() else { return };
    let path = data.join("pope/captions/minigpt-4.instruction1.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().take(3).map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<String> = lines.iter().map(|l| l["image_id"].to_string()).collect();
    let replay = ReplayCaptions::from_jsonl_file(&path).unwrap();
    assert!(replay.len() >= 1000);
    let items = ids.iter().map(|id| (ImageTruth { image: id.clone(), file: None, objects: Vec::new() }, format!("coco-{id}").into_bytes()));
    let corpus = Arc::new(SimCorpus::new(items).unwrap());
    let h = start(corpus, config("mild").with_replay(replay)).await;
    let client = reqwest::Client::new();
    for (id, line) in ids.iter().zip(&lines) {
        let got = ask(&client, &h, format!("coco-{id}").as_bytes(), line["prompt"].as_str().unwrap()).await;
        assert_eq!(got, line["caption"].as_str().unwrap());
    }
    assert_eq!(h.stats().replayed, 3);
    h.shutdown().await.unwrap();
    // A bad line is refused with its number.
    let err = ReplayCaptions::from_reader("{\"image_id\": 1, \"caption\": \"x\"}\n{broken\n".as_bytes(), "t.jsonl").unwrap_err();
    assert!(err.to_string().contains("t.jsonl line 2"), "{err}");
}

/// Outcome of one request: status, or a marker for 200s that are not completions.
async fn outcome(client: &reqwest::Client, h: &SimHandle, i: usize) -> String {
    let r = post(client, h, &request(&bytes_of(i), DETAIL)).await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    if status != 200 {
        let v: serde_json::Value = serde_json::from_str(&body).expect("error bodies are JSON");
        assert!(v["error"]["message"].is_string());
        return status.to_string();
    }
    match serde_json::from_str::<serde_json::Value>(&body) {
        Err(_) => "invalid-json".into(),
        Ok(v) if v.get("choices").is_none() => "no-choices".into(),
        Ok(v) => {
            assert!(v["choices"][0]["message"]["content"].is_string());
            "ok".into()
        }
    }
}

#[tokio::test]
async fn fault_rates_match_the_configuration_and_are_deterministic() {
    let corpus = corpus(20);
    let faults = Faults { http_500: 0.1, http_503: 0.1, malformed_json: 0.1, missing_choices: 0.1, ..Faults::default() };
    let client = reqwest::Client::new();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let h = start(corpus.clone(), config("mild").with_faults(faults.clone())).await;
        let mut outcomes = Vec::new();
        for n in 0..400 {
            outcomes.push(outcome(&client, &h, n % 20).await);
        }
        let stats = h.stats();
        h.shutdown().await.unwrap();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for o in &outcomes {
            *counts.entry(o.clone()).or_default() += 1;
        }
        for kind in ["500", "503", "invalid-json", "no-choices"] {
            let c = counts.get(kind).copied().unwrap_or(0);
            assert!((15..=70).contains(&c), "{kind}: {c} of 400 at rate 0.1 ({counts:?})");
        }
        let ok = counts.get("ok").copied().unwrap_or(0);
        assert!((190..=290).contains(&ok), "{counts:?}");
        assert_eq!(stats.http_500 as usize, counts["500"]);
        assert_eq!(stats.http_503 as usize, counts["503"]);
        assert_eq!(stats.malformed_json as usize, counts["invalid-json"]);
        assert_eq!(stats.missing_choices as usize, counts["no-choices"]);
        assert_eq!(stats.replies as usize, ok);
        runs.push(outcomes);
    }
    assert_eq!(runs[0], runs[1], "same seed, same request sequence → same faults");
    // Faults are per request: every image succeeds within a few retries.
    let h = start(corpus.clone(), config("mild").with_faults(faults)).await;
    for i in 0..20 {
        let mut ok = false;
        for _ in 0..12 {
            if outcome(&client, &h, i).await == "ok" {
                ok = true;
                break;
            }
        }
        assert!(ok, "image {i} never succeeded");
    }
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn sticky_images_fail_on_every_retry() {
    let corpus = corpus(40);
    let faults = Faults { sticky_fraction: 0.25, sticky_status: 503, ..Faults::default() };
    let h = start(corpus.clone(), config("mild").with_faults(faults)).await;
    let client = reqwest::Client::new();
    let sticky: Vec<usize> = (0..40).filter(|i| h.is_sticky(&format!("img{i}"))).collect();
    assert!((3..=20).contains(&sticky.len()), "{sticky:?}");
    for i in 0..40 {
        for _ in 0..3 {
            let o = outcome(&client, &h, i).await;
            assert_eq!(o, if sticky.contains(&i) { "503" } else { "ok" }, "image {i}");
        }
    }
    assert_eq!(h.stats().sticky_failures as usize, sticky.len() * 3);
    h.shutdown().await.unwrap();
    let bad = Faults { sticky_status: 200, ..Faults::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = sim::start(corpus, config("mild").with_faults(bad), listener).await.unwrap_err();
    assert!(err.to_string().contains("faults.sticky_status"), "{err}");
}

#[tokio::test]
async fn timeout_fault_holds_the_request_past_the_client_timeout() {
    let faults = Faults { timeout: 1.0, hang_ms: 60_000, ..Faults::default() };
    let h = start(corpus(7), config("mild").with_faults(faults)).await;
    let client = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let started = Instant::now();
    let err = client.post(format!("{}/chat/completions", h.base_url())).json(&request(&bytes_of(1), DETAIL)).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(h.stats().timeouts, 1);
    // Shutting down cancels the hanging request instead of waiting a minute.
    let started = Instant::now();
    h.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

#[tokio::test]
async fn zero_latency_never_sleeps_and_configured_latency_does() {
    let corpus = corpus(7);
    let client = reqwest::Client::new();
    for latency in [Latency::None, Latency::Fixed { ms: 0 }, Latency::Uniform { base_ms: 0, jitter_ms: 0 }] {
        let h = start(corpus.clone(), config("mild").with_latency(latency.clone())).await;
        for i in 0..30 {
            ask(&client, &h, &bytes_of(i % 7), DETAIL).await;
        }
        assert_eq!(h.stats().latency_sleeps, 0, "{latency:?} must not sleep");
        h.shutdown().await.unwrap();
    }
    let h = start(corpus.clone(), config("mild").with_latency(Latency::Fixed { ms: 40 })).await;
    for i in 0..3 {
        let started = Instant::now();
        ask(&client, &h, &bytes_of(i), DETAIL).await;
        assert!(started.elapsed() >= Duration::from_millis(40));
    }
    assert_eq!(h.stats().latency_sleeps, 3);
    h.shutdown().await.unwrap();
    // Distributions are seeded draws.
    let ln = Latency::LogNormal { median_ms: 50.0, sigma: 0.5 };
    let draws: Vec<Duration> = (0..200).map(|n| ln.draw(1, n)).collect();
    assert_eq!(draws, (0..200).map(|n| ln.draw(1, n)).collect::<Vec<_>>());
    let mut ms: Vec<f64> = draws.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    assert!((35.0..70.0).contains(&ms[100]), "median {}", ms[100]);
    let un = Latency::Uniform { base_ms: 10, jitter_ms: 5 };
    assert!((0..200).map(|n| un.draw(1, n)).all(|d| (10..=15).contains(&(d.as_millis() as u64))));
    // hostile numbers give some delay, never a panic
    assert_eq!(Latency::LogNormal { median_ms: f64::NAN, sigma: 1.0 }.draw(1, 1), Duration::ZERO);
    assert_eq!(Latency::LogNormal { median_ms: 1.0, sigma: f64::INFINITY }.draw(1, 1).as_secs(), 3600);
    assert_eq!(Latency::Uniform { base_ms: u64::MAX, jitter_ms: u64::MAX }.draw(1, 1), Duration::from_millis(u64::MAX));
}

#[tokio::test]
async fn models_and_healthz() {
    let h = start(corpus(7), config("kitchenware").with_model_name("sim-kitchen")).await;
    let client = reqwest::Client::new();
    let models: serde_json::Value = client.get(format!("{}/models", h.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "sim-kitchen");
    let r = client.get(format!("http://{}/healthz", h.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(format!("http://{}/v1/nothing", h.addr)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let resp: ChatResponse = post(&client, &h, &request(&bytes_of(0), DETAIL)).await.json().await.unwrap();
    assert_eq!(resp.model, "sim-kitchen");
    assert_eq!(resp.object, "chat.completion");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn corpus_directories_load_from_coco_or_manifest() {
    let client = reqwest::Client::new();
    // COCO instances JSON.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("images")).unwrap();
    std::fs::write(dir.path().join("images/1.jpg"), b"coco image one").unwrap();
    std::fs::write(dir.path().join("images/2.jpg"), b"coco image two").unwrap();
    std::fs::write(
        dir.path().join("annotations.json"),
        r#"{"images":[{"id":1,"file_name":"images/1.jpg"},{"id":2,"file_name":"images/2.jpg"}],
            "annotations":[{"image_id":1,"category_id":18},{"image_id":1,"category_id":18},{"image_id":2,"category_id":1}],
            "categories":[{"id":1,"name":"person"},{"id":18,"name":"dog"}]}"#,
    )
    .unwrap();
    let corpus = sim::load_corpus_dir(dir.path()).unwrap();
    assert_eq!(corpus.len(), 2);
    assert_eq!(corpus.key_for_bytes(b"coco image one"), Some("1"));
    assert_eq!(corpus.truth("1").unwrap().object("dog").unwrap().count, Some(2));
    let h = start(Arc::new(corpus), config("mild")).await;
    let a = ask(&client, &h, b"coco image one", "Is there a dog in the image?").await;
    assert!(a.starts_with("Yes"), "{a}");
    h.shutdown().await.unwrap();

    // JSONL manifest.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.png"), b"manifest a").unwrap();
    std::fs::write(
        dir.path().join("manifest.jsonl"),
        "{\"image\": \"a\", \"file\": \"a.png\", \"objects\": [{\"name\": \"cat\", \"count\": 1, \"attributes\": {\"color\": [\"black\"]}}]}\n\n",
    )
    .unwrap();
    let corpus = SimCorpus::load_dir(dir.path()).unwrap();
    assert_eq!(corpus.key_for_bytes(b"manifest a"), Some("a"));

    // Errors name what is wrong.
    std::fs::write(dir.path().join("manifest.jsonl"), "{\"image\": \"b\", \"file\": \"missing.png\", \"objects\": []}\n").unwrap();
    // a missing image is skipped (the pipeline reports it per image); the simulator cannot see it
    let corpus = sim::load_corpus_dir(dir.path()).unwrap();
    assert_eq!(corpus.len(), 0);
    std::fs::write(dir.path().join("manifest.jsonl"), "{\"image\": \"b\", \"file\": \"a.png\", \"objects\": [\"unicorn\"]}\n").unwrap();
    let err = sim::load_corpus_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("unicorn") && err.contains("\"b\""), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = sim::load_corpus_dir(empty.path()).unwrap_err().to_string();
    assert!(err.contains("annotations.json") && err.contains("manifest.jsonl"), "{err}");
    // Duplicate keys are refused.
    let dup = vec![
        (ImageTruth { image: "k".into(), file: None, objects: vec![] }, b"1".to_vec()),
        (ImageTruth { image: "k".into(), file: None, objects: vec![] }, b"2".to_vec()),
    ];
    let err = SimCorpus::new(dup).unwrap_err().to_string();
    assert!(err.contains("duplicate image key") && err.contains("\"k\""), "{err}");
}

#[tokio::test]
async fn truth_log_path_errors_name_the_path() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = config("mild").with_truth_log("/nonexistent-dir/truth.jsonl");
    let err = sim::start(corpus(7), cfg, listener).await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent-dir/truth.jsonl"), "{err}");
}

#[test]
fn bundled_profiles_resolve_by_name_and_file() {
    let p = sim::SimProfile::resolve("sim:kitchenware").unwrap();
    assert_eq!(p.name, "kitchenware");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.toml");
    std::fs::write(&path, "schema_version = 1\nname = \"custom\"\nbase_rate = 0.5\n[affinity]\nclock = 1.0\n").unwrap();
    assert_eq!(sim::SimProfile::resolve(path.to_str().unwrap()).unwrap().name, "custom");
    let err = profile_by_name("sim:nope").unwrap_err().to_string();
    assert!(err.contains("people-everywhere"), "{err}");
}

/// The contract with the project's extractor: what the simulator injects is what the
/// extractor + checker find (object precision and recall ≥ 0.95, count and attribute ≥ 0.90).
#[test]
fn the_project_extractor_recovers_injected_hallucinations() {
    use dftg_core::check::diagnose;
    use dftg_core::extract::{ExtractScratch, Extractor};

    let corpus = corpus(140);
    let extractor = Extractor::new(Arc::new(corpus.vocabulary().clone()));
    let mut scratch = ExtractScratch::default();
    // (true positives, injected, found) per kind
    let mut tally: BTreeMap<HallucinationKind, (usize, usize, usize)> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    let prompts = [DETAIL, BRIEF, "What do you see in this picture?"];
    for profile in sim::bundled_profile_names() {
        for seed in [1u64, 2, 3] {
            let sim = sim::Simulator::new(corpus.clone(), profile_by_name(profile).unwrap(), seed).unwrap();
            for key in corpus.keys() {
                let truth = corpus.truth(key).unwrap();
                for prompt in prompts {
                    let reply = sim.respond(key, prompt).unwrap();
                    let record = diagnose(&extractor, &mut scratch, truth, prompt, &reply.text);
                    let id = |kind: HallucinationKind, concept: &str, claimed: Option<&str>| {
                        (kind, concept.to_string(), if kind == HallucinationKind::Attribute { claimed.map(str::to_string) } else { None })
                    };
                    let injected: BTreeSet<_> =
                        reply.entry.hallucinated.iter().map(|h| id(h.kind, &h.concept, h.claimed.as_deref())).collect();
                    let found: BTreeSet<_> = record.hallucinations.iter().map(|h| id(h.kind, &h.concept, h.claimed.as_deref())).collect();
                    for kind in HallucinationKind::ALL {
                        let i: BTreeSet<_> = injected.iter().filter(|x| x.0 == kind).collect();
                        let f: BTreeSet<_> = found.iter().filter(|x| x.0 == kind).collect();
                        let t = tally.entry(kind).or_default();
                        t.0 += i.intersection(&f).count();
                        t.1 += i.len();
                        t.2 += f.len();
                    }
                    if std::env::var("SIM_SHOW_MISSES").is_ok() && injected != found {
                        eprintln!("{}\n  injected {injected:?}\n  found    {found:?}", reply.text);
                    }
                    if injected != found && misses.len() < 8 {
                        misses.push(format!("{}\n  injected {injected:?}\n  found    {found:?}", reply.text));
                    }
                    // Negated concepts are read as negated, never as claims.
                    for n in &reply.entry.negated {
                        assert!(record.negated.contains(n), "{n} not read as negated in {:?}", reply.text);
                    }
                }
            }
        }
    }
    for (kind, (tp, injected, found)) in &tally {
        let recall = *tp as f64 / (*injected).max(1) as f64;
        let precision = *tp as f64 / (*found).max(1) as f64;
        eprintln!("{kind:?}: injected {injected}, found {found}, precision {precision:.3}, recall {recall:.3}");
        let bar = if *kind == HallucinationKind::Object { 0.95 } else { 0.90 };
        assert!(*injected >= 50, "too few {kind:?} injected: {injected}");
        assert!(precision >= bar && recall >= bar, "{kind:?}: precision {precision:.3} recall {recall:.3}\n{}", misses.join("\n"));
    }
}
