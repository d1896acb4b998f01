//! POPE and before/after through the real `dftg` binary: `dftg pope build` on a synthetic corpus,
//! `dftg eval pope` against simulator profiles whose hallucination is known by construction,
//! scoring a hand-computed answer file, the official POPE question files, and `dftg compare`
//! on jobs of a treated and an over-corrected model.
//!
//! Reference data (`$DFTG_DATA`, else `<workspace>/../shared/data`) is needed by one test; it
//! skips with a message without it, except under `CI=true`, where missing data fails.

use std::path::{Path, PathBuf};

mod support;
use support::{dftg_output as dftg, ok};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

#[test]
fn eval_pope_reproduces_popes_metrics_on_a_hand_computed_fixture() {
    let dir = tempfile::tempdir().unwrap();
    // 6 yes labels, 4 no; POPE reads the first sentence, drops commas, and says "no" only for
    // the words No / no / not, so:
    let lines = [
        (1, "yes", "Yes, there is a dog in the image."), // tp
        (2, "yes", "yes"),                               // tp
        (3, "yes", "NO"),                                // tp: only No / no / not count
        (4, "yes", "Yes. But there is no cat."),         // tp: the second sentence is ignored
        (5, "yes", "There is not a dog."),               // fn
        (6, "yes", "No,there is"),                       // tp: "No,there" → "Nothere"
        (7, "no", "No, there is no cat."),               // tn
        (8, "no", "no"),                                 // tn
        (9, "no", "I do not think so"),                  // tn
        (10, "no", "Sure, a cat sits there."),           // fp
    ];
    let answers = dir.path().join("answers.jsonl");
    let text: String =
        lines.iter().map(|(id, label, a)| format!("{}\n", serde_json::json!({"question_id": id, "label": label, "answer": a}))).collect();
    std::fs::write(&answers, text).unwrap();
    let r = json(&ok(&["eval", "pope", "--answers", s(&answers)]));
    // tp 5, fn 1, tn 3, fp 1: accuracy 8/10, precision 5/6, recall 5/6, f1 5/6, yes-ratio 6/10
    assert_eq!((r["tp"].as_u64(), r["fn"].as_u64(), r["tn"].as_u64(), r["fp"].as_u64()), (Some(5), Some(1), Some(3), Some(1)), "{r}");
    for (k, want) in [("accuracy", 0.8), ("precision", 5.0 / 6.0), ("recall", 5.0 / 6.0), ("f1", 5.0 / 6.0), ("yes_ratio", 0.6)] {
        assert!((f(&r, k) - want).abs() < 1e-12, "{k}: {r}");
    }
    assert_eq!(r["questions"], 10);

    // an answer file without labels (LLaVA's: "text") takes them from the question file
    let questions = dir.path().join("coco_pope_popular.json");
    let q: String = lines
        .iter()
        .map(|(id, label, _)| {
            format!(
                "{}\n",
                serde_json::json!({"question_id": id, "image": "a.jpg", "text": "Is there a dog in the image?", "label": label})
            )
        })
        .collect();
    std::fs::write(&questions, q).unwrap();
    let bare = dir.path().join("llava.jsonl");
    let b: String = lines.iter().rev().map(|(id, _, a)| format!("{}\n", serde_json::json!({"question_id": id, "text": a}))).collect();
    std::fs::write(&bare, b).unwrap();
    let r2 = json(&ok(&["eval", "pope", "--answers", s(&bare), "--questions", s(&questions)]));
    assert_eq!((r2["f1"].clone(), r2["yes_ratio"].clone(), r2["set"].as_str()), (r["f1"].clone(), r["yes_ratio"].clone(), Some("popular")));

    // a bad label is refused naming the line, without quoting it
    std::fs::write(&answers, "{\"question_id\": 1, \"label\": \"SECRET-maybe\", \"answer\": \"yes\"}\n").unwrap();
    let out = dftg(&["eval", "pope", "--answers", s(&answers)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 1") && err.contains("label") && !err.contains("SECRET"), "{err}");
}

/// A synthetic corpus and its POPE questions, built twice to check they repeat.
fn corpus_with_questions(dir: &Path, images: &str) -> (PathBuf, PathBuf) {
    let corpus = dir.join("corpus");
    ok(&["corpus", "synth", "--images", images, "--seed", "5", "--out", s(&corpus)]);
    let q = dir.join("q");
    let built = ok(&["pope", "build", "--corpus", s(&corpus), "--out", s(&q), "--seed", "9"]);
    assert!(built.contains("adversarial.jsonl"), "{built}");
    let again = dir.join("q2");
    ok(&["pope", "build", "--corpus", s(&corpus), "--out", s(&again), "--seed", "9"]);
    let other = dir.join("q3");
    ok(&["pope", "build", "--corpus", s(&corpus), "--out", s(&other), "--seed", "10"]);
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    for f in ["random.jsonl", "popular.jsonl", "adversarial.jsonl"] {
        assert_eq!(read(&q, f), read(&again, f), "{f} repeats for one seed");
    }
    assert_ne!(read(&q, "random.jsonl"), read(&other, "random.jsonl"), "the seed matters");
    (corpus, q)
}

#[test]
fn built_questions_rank_simulator_profiles_as_they_hallucinate() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, q) = corpus_with_questions(dir.path(), "150");
    let adversarial = q.join("adversarial.jsonl");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&adversarial).unwrap().lines().map(json).collect();
    assert!(lines.len() >= 300 && lines.len().is_multiple_of(6), "{} questions", lines.len());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["question_id"], i as u64 + 1);
        assert_eq!(l["label"], if i % 2 == 0 { "yes" } else { "no" });
        assert!(l["text"].as_str().unwrap().starts_with("Is there a"), "{l}");
        assert!(corpus.join(l["image"].as_str().unwrap()).is_file(), "{l}: the image is a corpus file");
    }

    let eval = |profile: &str| {
        let answers = dir.path().join(format!("{profile}.answers.jsonl"));
        let r = json(&ok(&[
            "eval",
            "pope",
            "--questions",
            s(&adversarial),
            "--corpus",
            s(&corpus),
            "--model",
            &format!("sim:{profile}"),
            "--answers-out",
            s(&answers),
            "--quiet",
        ]));
        assert_eq!((r["questions"].as_u64(), r["failed"].as_u64()), (Some(lines.len() as u64), Some(0)), "{r}");
        // the raw answers score to the same numbers without a model
        let again = json(&ok(&["eval", "pope", "--answers", s(&answers)]));
        assert_eq!((again["f1"].clone(), again["yes_ratio"].clone()), (r["f1"].clone(), r["yes_ratio"].clone()));
        r
    };
    // people-everywhere-treated is people-everywhere with every affinity the same or lower, so it
    // hallucinates less by construction; mild has a base rate of 0.12 and one hallucination per
    // image at most
    let heavy = eval("people-everywhere");
    let treated = eval("people-everywhere-treated");
    let mild = eval("mild");
    for (more, less) in [(&heavy, &treated), (&heavy, &mild)] {
        assert!(f(more, "yes_ratio") > f(less, "yes_ratio"), "yes-ratio: {more} vs {less}");
        assert!(f(more, "f1") < f(less, "f1"), "f1: {more} vs {less}");
        assert!(more["fp"].as_u64() > less["fp"].as_u64(), "false yes: {more} vs {less}");
    }
    // nobody here denies what is there
    for r in [&heavy, &treated, &mild] {
        assert_eq!(f(r, "recall"), 1.0, "{r}");
    }
    // the over-corrected profile says no to present objects: recall and yes-ratio fall
    let over = eval("people-everywhere-overcorrected");
    assert!(f(&over, "recall") < 0.8 && f(&over, "yes_ratio") < 0.45, "{over}");

    // answers repeat: same model, same seed, same bytes
    let a = std::fs::read(dir.path().join("people-everywhere.answers.jsonl")).unwrap();
    eval("people-everywhere");
    assert_eq!(a, std::fs::read(dir.path().join("people-everywhere.answers.jsonl")).unwrap());
}

#[test]
fn questions_naming_images_outside_the_corpus_fail_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    ok(&["corpus", "synth", "--images", "3", "--seed", "1", "--out", s(&corpus)]);
    let q = dir.path().join("q.jsonl");
    let lines = [
        serde_json::json!({"question_id": 1, "image": "images/000001.png", "text": "Is there a person in the image?", "label": "yes"}),
        serde_json::json!({"question_id": 2, "image": "../../../../etc/passwd", "text": "Is there a person in the image?", "label": "no"}),
        serde_json::json!({"question_id": 3, "image": "nope.png", "text": "Is there a person in the image?", "label": "no"}),
    ];
    std::fs::write(&q, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let answers = dir.path().join("a.jsonl");
    let out = dftg(&[
        "eval",
        "pope",
        "--questions",
        s(&q),
        "--corpus",
        s(&corpus),
        "--model",
        "sim:mild",
        "--answers-out",
        s(&answers),
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(1), "some questions failed: exit 1");
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        (r["questions"].as_u64(), r["failed"].as_u64(), r["failed_by_reason"]["missing_image"].as_u64()),
        (Some(1), Some(2), Some(2)),
        "{r}"
    );
    let written = std::fs::read_to_string(&answers).unwrap();
    assert_eq!(written.lines().count(), 3);
    assert!(written.lines().nth(1).unwrap().contains("\"answer\":null"), "{written}");
}

fn data_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("DFTG_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    };
    if dir.join("pope/questions").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("reference data not found at {} (set DFTG_DATA)", dir.display());
    }
    eprintln!("SKIPPED: reference data not found at {} (set DFTG_DATA)", dir.display());
    None
}

/// The official files name COCO val2014 images, which are not shipped: a corpus of placeholder
/// images for the same 500 images' ground truth stands in, and the simulator answers from it.
#[test]
fn the_official_pope_files_run_unchanged() {
    let Some(data) = data_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("coco500");
    ok(&["corpus", "from-object-map", "--objects", s(&data.join("coco2014-objects/pope_coco500.json")), "--out", s(&corpus)]);
    for set in ["random", "popular", "adversarial"] {
        let file = data.join(format!("pope/questions/coco_pope_{set}.json"));
        let answers = dir.path().join(format!("{set}.jsonl"));
        let r = json(&ok(&[
            "eval",
            "pope",
            "--questions",
            s(&file),
            "--corpus",
            s(&corpus),
            "--model",
            "sim:people-everywhere",
            "--answers-out",
            s(&answers),
            "--quiet",
        ]));
        assert_eq!((r["set"].as_str(), r["questions"].as_u64(), r["failed"].as_u64()), (Some(set), Some(3000), Some(0)), "{r}");
        assert_eq!((r["tp"].as_u64(), r["fn"].as_u64()), (Some(1500), Some(0)), "every present object is seen: {r}");
        assert!(r["fp"].as_u64().unwrap() > 0, "people-everywhere says yes to some absent objects: {r}");
        let scored = json(&ok(&["eval", "pope", "--answers", s(&answers), "--questions", s(&file)]));
        assert_eq!((scored["accuracy"].clone(), scored["set"].as_str()), (r["accuracy"].clone(), Some(set)));
    }
}

#[test]
fn compare_shows_the_targeted_rates_falling_and_flags_the_over_corrected_model() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, q) = corpus_with_questions(dir.path(), "200");
    let out = dir.path().join("out");
    let run = |profile: &str| {
        let text = ok(&["run", "--corpus", s(&corpus), "--model", &format!("sim:{profile}"), "--out", s(&out), "--quiet"]);
        let job = text.lines().next().and_then(|l| l.split_whitespace().nth(1)).expect("job id").to_string();
        let job_dir = out.join(job);
        ok(&[
            "eval",
            "pope",
            "--questions",
            s(&q.join("adversarial.jsonl")),
            "--corpus",
            s(&corpus),
            "--model",
            &format!("sim:{profile}"),
            "--job-dir",
            s(&job_dir),
            "--quiet",
        ]);
        job_dir
    };
    let before = run("people-everywhere");
    let treated = run("people-everywhere-treated");
    let over = run("people-everywhere-overcorrected");

    let compare = |after: &Path, name: &str| {
        let report = dir.path().join(name);
        let text = ok(&["compare", s(&before), s(after), "--out", s(&report)]);
        let html = std::fs::read_to_string(report.join("compare.html")).unwrap();
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"), "self-contained");
        (text, json(&std::fs::read_to_string(report.join("compare.json")).unwrap()), html)
    };

    let (text, r, html) = compare(&treated, "treated");
    assert_eq!(r["verdict"], "improved", "{text}");
    assert!(text.contains("the remedy worked") && html.contains("the remedy worked"), "{text}");
    assert_eq!(r["targeted"]["change"], "fell");
    let concept = |r: &serde_json::Value, name: &str| {
        r["concepts"].as_array().unwrap().iter().find(|c| c["concept"] == name).cloned().unwrap_or_else(|| panic!("no {name}"))
    };
    for name in ["person", "chair", "dining table"] {
        let c = concept(&r, name);
        assert_eq!(c["targeted"], true, "{name} is a target of people-everywhere's plan");
        assert!(f(&c["hallucination"]["after"], "rate") < f(&c["hallucination"]["before"], "rate"), "{name}: {c}");
    }
    assert!(r["worse"].as_array().unwrap().is_empty(), "{text}");
    let pope = &r["pope"][0];
    assert_eq!(
        (pope["set"].as_str(), pope["false_yes"]["change"].as_str(), pope["recall"]["change"].as_str()),
        (Some("adversarial"), Some("fell"), Some("within")),
        "{pope}"
    );

    let (text, r, html) = compare(&over, "over");
    assert_eq!(r["verdict"], "over_corrected", "{text}");
    assert!(html.contains("over-corrected"), "the banner says it");
    assert_eq!(r["targeted"]["change"], "fell", "it does hallucinate less");
    assert_eq!(r["recall"]["change"], "fell");
    assert_eq!((r["pope"][0]["recall"]["change"].as_str(), r["pope"][0]["yes_ratio"]["change"].as_str()), (Some("fell"), Some("fell")));
    let person = concept(&r, "person");
    assert!(f(&person["miss"]["after"], "rate") > f(&person["miss"]["before"], "rate"), "person is left out more often: {person}");

    // the same job twice: nothing to vouch for
    let (_, r, _) = compare(&before, "same");
    assert_eq!(r["verdict"], "inconclusive");

    // two profile.json files: the profile comparison, as before
    let p = ok(&["compare", s(&before.join("profile.json")), s(&treated.join("profile.json")), "--json"]);
    assert!(json(&p)["jensen_shannon"].as_f64().is_some(), "{p}");
}
