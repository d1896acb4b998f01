//! The hand-labelled claims evaluation set (`tests/data/claims-eval/`, see its README): 480 real
//! captions of eight models, each labelled by careful reading with the COCO categories it really
//! claims are in the image: the first draw of 320 (whose even draws were read to write the rules
//! of issue 11, the odd ones held out) and a fresh draw of 160 made after the rules were written.
//! Both extraction modes are scored against the labels:
//!
//! - object claims: per caption, the set of concepts extracted vs the labelled set (micro
//!   precision and recall over caption × concept pairs);
//! - hallucinations: the same sets minus the image's COCO 2014 objects (`coco2014-objects/`).
//!
//! Printed per mode, per part of the sample (drawn at random, or drawn where a naive reader is
//! fooled), with every disagreement of the own extractor when `DFTG_CLAIMS_EVAL_VERBOSE=1`.
//!
//! Data: `$DFTG_DATA`, else `$DFTG_SHARED_DATA`, else `<crate>/../../../shared/data`; skipped
//! with a message when absent, except under `CI=true`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dftg_core::chair::{ChairScratch, ChairVocab, PerceptronTagger};
use dftg_core::extract::{ExtractScratch, Extraction, Extractor};
use dftg_core::vocab::Vocabulary;

mod support;
use support::read;

fn data_dir() -> Option<PathBuf> {
    support::shared_data(&["pope/captions", "opera-captions", "coco2014-objects", "chair-vocab", "nltk-tagger"])
}

/// `pope:mplug.instruction1` → `pope/captions/mplug.instruction1.jsonl`,
/// `opera:llava-1.5.beam5` → `opera-captions/llava-1.5/beam5.jsonl`.
fn source_path(dir: &Path, source: &str) -> PathBuf {
    match source.split_once(':') {
        Some(("pope", file)) => dir.join(format!("pope/captions/{file}.jsonl")),
        Some(("opera", rest)) => {
            let (model, decoding) = rest.rsplit_once('.').unwrap();
            dir.join(format!("opera-captions/{model}/{decoding}.jsonl"))
        }
        _ => panic!("unknown source {source}"),
    }
}

struct Item {
    n: u64,
    /// Of the fresh draw (made after the rules were written), not of the first 320.
    fresh: bool,
    why: String,
    caption: String,
    claimed: BTreeSet<String>,
    truth: BTreeSet<String>,
    id: String,
}

fn load(dir: &Path) -> Vec<Item> {
    let labels = read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/claims-eval/labels.jsonl"));
    let truth: HashMap<String, Vec<String>> = serde_json::from_str(&read(dir.join("coco2014-objects/imid_to_objects.json"))).unwrap();
    let mut files: HashMap<String, HashMap<u64, String>> = HashMap::new();
    let mut items = Vec::new();
    for line in labels.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let source = v["source"].as_str().unwrap().to_string();
        let image = v["image_id"].as_u64().unwrap();
        let captions = files.entry(source.clone()).or_insert_with(|| {
            read(source_path(dir, &source))
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let c: serde_json::Value = serde_json::from_str(l).unwrap();
                    (c["image_id"].as_u64().unwrap(), c["caption"].as_str().unwrap().to_string())
                })
                .collect()
        });
        let caption = captions.get(&image).unwrap_or_else(|| panic!("{source}: no caption for image {image}")).clone();
        let names = |x: &serde_json::Value| x.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        items.push(Item {
            n: v["n"].as_u64().unwrap(),
            fresh: v["draw"].as_str() == Some("fresh"),
            why: v["why"].as_str().unwrap().to_string(),
            caption,
            claimed: names(&v["claimed"]),
            truth: truth.get(&image.to_string()).unwrap_or_else(|| panic!("no COCO objects for image {image}")).iter().cloned().collect(),
            id: format!("{} {source} {image}", v["n"]),
        });
    }
    items
}

#[derive(Default, Clone, Copy)]
struct Score {
    tp: usize,
    fp: usize,
    fn_: usize,
}

impl Score {
    fn add(&mut self, got: &BTreeSet<String>, want: &BTreeSet<String>) {
        self.tp += got.intersection(want).count();
        self.fp += got.difference(want).count();
        self.fn_ += want.difference(got).count();
    }
    fn precision(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fp).max(1) as f64
    }
    fn recall(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fn_).max(1) as f64
    }
}

/// Claims and hallucinations scores of one mode, overall and per part of the sample.
struct Report {
    claims: BTreeMap<String, Score>,
    hallucinations: BTreeMap<String, Score>,
}

fn score(items: &[Item], mut mode: impl FnMut(&str) -> BTreeSet<String>, mut on_miss: impl FnMut(&Item, &BTreeSet<String>)) -> Report {
    let mut r = Report { claims: BTreeMap::new(), hallucinations: BTreeMap::new() };
    for item in items {
        let got = mode(&item.caption);
        if got != item.claimed {
            on_miss(item, &got);
        }
        let got_h: BTreeSet<String> = got.difference(&item.truth).cloned().collect();
        let want_h: BTreeSet<String> = item.claimed.difference(&item.truth).cloned().collect();
        // even draws of the first 320 were read to design the rules of issue 11; odd draws and
        // the fresh draw are held out
        let half = if item.fresh {
            "fresh"
        } else if item.n % 2 == 0 {
            "even"
        } else {
            "odd"
        };
        let mut parts = vec!["all", if item.why == "random" { "random" } else { "traps" }, half];
        if !item.fresh {
            parts.push("first");
        }
        for part in parts {
            r.claims.entry(part.into()).or_default().add(&got, &item.claimed);
            r.hallucinations.entry(part.into()).or_default().add(&got_h, &want_h);
        }
    }
    r
}

fn print(name: &str, r: &Report) {
    for (part, c) in &r.claims {
        let h = &r.hallucinations[part];
        eprintln!(
            "{name:6} {part:6} claims P={:.3} R={:.3} (tp {} fp {} fn {})  hallucinations P={:.3} R={:.3} (tp {} fp {} fn {})",
            c.precision(),
            c.recall(),
            c.tp,
            c.fp,
            c.fn_,
            h.precision(),
            h.recall(),
            h.tp,
            h.fp,
            h.fn_
        );
    }
}

fn own_set(extractor: &Extractor, scratch: &mut ExtractScratch, out: &mut Extraction, text: &str) -> BTreeSet<String> {
    extractor.extract_into(text, scratch, out);
    out.mentions.iter().map(|m| extractor.vocab().name(m.concept).to_string()).collect()
}

#[test]
fn both_modes_against_the_hand_labels() {
    let Some(dir) = data_dir() else { return };
    let items = load(&dir);
    assert_eq!(items.len(), 480);
    assert_eq!(items.iter().filter(|i| i.fresh).count(), 160);
    let vocab = Arc::new(Vocabulary::coco80());
    let extractor = Extractor::new(vocab.clone());
    let names: BTreeSet<&str> = vocab.concepts().iter().map(|c| c.name.as_str()).collect();
    for item in &items {
        for c in &item.claimed {
            assert!(names.contains(c.as_str()), "{}: label {c:?} is not a coco80 concept", item.id);
        }
    }
    let verbose = std::env::var("DFTG_CLAIMS_EVAL_VERBOSE").as_deref() == Ok("1");
    let (mut scratch, mut out) = (ExtractScratch::default(), Extraction::default());
    let own = score(
        &items,
        |t| own_set(&extractor, &mut scratch, &mut out, t),
        |item, got| {
            if verbose {
                let extra: Vec<_> = got.difference(&item.claimed).collect();
                let missed: Vec<_> = item.claimed.difference(got).collect();
                eprintln!("own differs {} ({}): extra {extra:?} missed {missed:?}\n  {:?}", item.id, item.why, item.caption);
            }
        },
    );
    let file = |kind: &str| read(dir.join(format!("nltk-tagger/averaged_perceptron_tagger_eng.{kind}.json")));
    let tagger = Arc::new(PerceptronTagger::from_json(&file("weights"), &file("tagdict"), &file("classes")).unwrap());
    let chair =
        ChairVocab::from_sources(&read(dir.join("chair-vocab/synonyms.txt")), &read(dir.join("chair-vocab/double_words.json")), tagger)
            .unwrap();
    let mut cs = ChairScratch::default();
    let mut mentioned = Vec::new();
    let chair_report = score(
        &items,
        |t| {
            chair.mentioned_into(t, &mut cs, &mut mentioned);
            mentioned.iter().map(|s| s.to_string()).collect()
        },
        |_, _| {},
    );
    print("own", &own);
    print("chair", &chair_report);

    // speed of the own extractor over the captions (printed; the targets live in BENCHMARKS.md)
    let start = Instant::now();
    let mut n = 0usize;
    for _ in 0..20 {
        for item in &items {
            n += own_set(&extractor, &mut scratch, &mut out, &item.caption).len();
        }
    }
    eprintln!("own extractor: {:.1} µs a caption ({n} concepts)", start.elapsed().as_secs_f64() * 1e6 / (20 * items.len()) as f64);

    // The own extractor must stay well ahead of CHAIR's reading on the traps, and not fall
    // below these floors (the measured values are in BENCHMARKS.md; the target is 0.95).
    let (c, h) = (&own.claims["first"], &own.hallucinations["first"]);
    let (cc, ch) = (&chair_report.claims["first"], &chair_report.hallucinations["first"]);
    assert!(c.precision() > cc.precision() && h.precision() > ch.precision(), "own extractor not more precise than CHAIR");
    // and on the fresh draw, which no rule was written from
    let (fc, fh) = (&own.claims["fresh"], &own.hallucinations["fresh"]);
    let (fcc, fch) = (&chair_report.claims["fresh"], &chair_report.hallucinations["fresh"]);
    assert!(fc.precision() > fcc.precision() && fh.precision() > fch.precision(), "fresh draw: own extractor not more precise than CHAIR");
    assert!(c.precision() >= FLOOR.0 && c.recall() >= FLOOR.1, "own claims P={:.3} R={:.3}", c.precision(), c.recall());
    assert!(h.precision() >= FLOOR.2 && h.recall() >= FLOOR.3, "own hallucinations P={:.3} R={:.3}", h.precision(), h.recall());
}

/// Regression floors (claims P, R; hallucinations P, R) a little under what was measured on the
/// first 320 (0.971, 0.995, 0.951, 0.983; see BENCHMARKS.md for the halves and the fresh draw).
const FLOOR: (f64, f64, f64, f64) = (0.96, 0.98, 0.94, 0.97);
