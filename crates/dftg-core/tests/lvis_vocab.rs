//! The bundled LVIS vocabulary on real captions (`$DFTG_DATA/pope/captions`, the POPE captions of
//! five models): how the exclusion list was chosen, the hand-labelled precision sample, speed.
//!
//! Halves: captions of even image ids choose the exclusions (`measure_exclusions`, ignored:
//! prints), odd image ids are held out for the precision sample. The exclusion rule: a
//! single-word form that fires at least `MIN_SEEN` times in the choosing half and that nltk's
//! tagger calls a noun in fewer than half of them is a candidate ("can", "spread"), confirmed by
//! reading (see `configs/vocab/lvis-exclude.txt`). Multi-word names are left out: the tagger
//! reads "trash can" as a modal.
//!
//! Data: `$DFTG_DATA`, else `$DFTG_SHARED_DATA`, else `<crate>/../../../shared/data`; skipped with a message when absent,
//! except under `CI=true`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use dftg_core::chair::PerceptronTagger;
use dftg_core::extract::Extractor;
use dftg_core::vocab::Vocabulary;
use dftg_core::vocab_build::{self, BuildOptions, CategoryFormat};
use rand::seq::SliceRandom;
use rand::SeedableRng;

mod support;
use support::read;

use support::POPE_CAPTION_FILES as FILES;
const MIN_SEEN: usize = 10;

fn data_dir() -> Option<PathBuf> {
    support::shared_data(&["lvis-v1", "pope/captions", "nltk-tagger"])
}

fn project(rel: &str) -> String {
    read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel))
}

/// (file, image id, caption) of every POPE caption.
fn captions(dir: &std::path::Path) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    for f in FILES {
        for line in read(dir.join(format!("pope/captions/{f}.jsonl"))).lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push((f.to_string(), v["image_id"].as_u64().unwrap(), v["caption"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// The LVIS vocabulary as the bundled file is built, with or without the exclusion list.
fn lvis(dir: &std::path::Path, exclude: bool) -> Vocabulary {
    let cats = vocab_build::parse_categories(&read(dir.join("lvis-v1/categories.jsonl")), CategoryFormat::Lvis).unwrap();
    let exclude = if exclude { vocab_build::parse_exclusions(&project("configs/vocab/lvis-exclude.txt")) } else { Default::default() };
    let opts = BuildOptions { name: "lvis", header: vec![], exclude, base: Some(dftg_core::vocab::COCO80_TOML) };
    Vocabulary::from_toml(&vocab_build::build_vocabulary_toml(&cats, &opts).unwrap().0).unwrap()
}

/// Words of a caption with byte ranges, punctuation as its own token (enough for the tagger).
fn words(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let word = c.is_alphanumeric() || c == '-' || c == '\'';
        match (word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
        if !word && !c.is_whitespace() {
            out.push((i, i + c.len_utf8()));
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

#[test]
fn bundled_lvis_is_what_the_command_builds() {
    let Some(dir) = data_dir() else { return };
    let cats = vocab_build::parse_categories(&read(dir.join("lvis-v1/categories.jsonl")), CategoryFormat::Lvis).unwrap();
    let opts = BuildOptions {
        name: "lvis",
        header: vec![],
        exclude: vocab_build::parse_exclusions(&project("configs/vocab/lvis-exclude.txt")),
        base: Some(dftg_core::vocab::COCO80_TOML),
    };
    let (built, report) = vocab_build::build_vocabulary_toml(&cats, &opts).unwrap();
    let body = |t: &str| t.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    assert!(body(dftg_core::vocab::LVIS_TOML) == body(&built), "configs/vocab/lvis.toml is stale: regenerate it (see its header)");
    assert!(report.unused_exclusions.is_empty(), "exclusions no category uses: {:?}", report.unused_exclusions);
    assert_eq!(Vocabulary::lvis().len(), 1203);
}

/// Prints, per surface firing in the choosing half, how often the tagger calls it a noun, the
/// words the rule excludes, and their noun share in the held-out half.
#[test]
#[ignore = "measurement: prints the exclusion candidates"]
fn measure_exclusions() {
    let Some(dir) = data_dir() else { return };
    let file = |kind: &str| read(dir.join(format!("nltk-tagger/averaged_perceptron_tagger_eng.{kind}.json")));
    let tagger = PerceptronTagger::from_json(&file("weights"), &file("tagdict"), &file("classes")).unwrap();
    let x = Extractor::new(Arc::new(lvis(&dir, false)));
    // surface → [seen, noun] per half
    let mut stats: BTreeMap<String, [[usize; 2]; 2]> = BTreeMap::new();
    for (_, id, cap) in captions(&dir) {
        let half = (id % 2) as usize;
        let ws = words(&cap);
        let tags = tagger.tag(&ws.iter().map(|&(s, e)| &cap[s..e]).collect::<Vec<_>>());
        for m in x.extract(&cap).mentions {
            let (s, e) = (m.span.0 as usize, m.span.1 as usize);
            let surface = cap[s..e].to_lowercase();
            let noun = ws.iter().position(|&(_, we)| we == e).is_some_and(|k| tags[k].starts_with("NN"));
            let st = stats.entry(surface).or_default();
            st[half][0] += 1;
            st[half][1] += noun as usize;
        }
    }
    for (surface, st) in &stats {
        let [seen, noun] = st[0];
        if !surface.contains(' ') && seen >= MIN_SEEN && noun * 2 < seen {
            let [seen_b, noun_b] = st[1];
            println!("CANDIDATE {surface:?}\tchoosing half {noun}/{seen} noun\theld-out {noun_b}/{seen_b} noun");
        }
    }
}

/// Mentions of one vocabulary in the held-out half, as (file, image id, span, concept name).
fn held_out_mentions(dir: &std::path::Path, x: &Extractor) -> Vec<(String, u64, (u32, u32), String)> {
    let mut out = Vec::new();
    for (f, id, cap) in captions(dir) {
        if id % 2 == 1 {
            for m in x.extract(&cap).mentions {
                out.push((f.clone(), id, m.span, x.vocab().name(m.concept).to_string()));
            }
        }
    }
    out
}

/// Writes the unlabelled precision sample (100 random held-out mentions per vocabulary) to
/// `$SAMPLE_OUT`; labels were then added by reading each caption.
#[test]
#[ignore = "measurement: writes the sample to label"]
fn write_precision_sample() {
    let Some(dir) = data_dir() else { return };
    let caps: BTreeMap<(String, u64), String> = captions(&dir).into_iter().map(|(f, id, c)| ((f, id), c)).collect();
    let mut out = String::new();
    for (name, vocab) in [("coco80", Vocabulary::coco80()), ("lvis", lvis(&dir, true))] {
        let mut all = held_out_mentions(&dir, &Extractor::new(Arc::new(vocab)));
        all.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(2026));
        for (f, id, span, concept) in all.into_iter().take(100) {
            let cap = &caps[&(f.clone(), id)];
            let (s, e) = (span.0 as usize, span.1 as usize);
            let a = cap[..s].char_indices().rev().nth(70).map(|(i, _)| i).unwrap_or(0);
            let b = cap[e..].char_indices().nth(50).map(|(i, _)| e + i).unwrap_or(cap.len());
            let context = format!("{}[[{}]]{}", &cap[a..s], &cap[s..e], &cap[e..b]).replace('\n', " ");
            // the context is for the person labelling; the stored sample drops it (no caption text)
            let line = serde_json::json!({"vocabulary": name, "file": f, "image_id": id, "span": [span.0, span.1],
                "surface": &cap[s..e], "concept": concept, "context": context});
            out.push_str(&line.to_string());
            out.push('\n');
        }
    }
    std::fs::write(std::env::var("SAMPLE_OUT").unwrap_or("/tmp/lvis-sample.jsonl".into()), out).unwrap();
}

/// The labelled sample (`tests/data/lvis-precision-sample.jsonl`): 100 random mentions per
/// vocabulary from the held-out half, each read in its caption and labelled `object: true` when
/// the text claims an object of that concept is in the image (a depicted or reflected one
/// counts; a modifier such as "horse trailer", a place such as "bus stops", another sense such
/// as the baseball "batter", or a general statement does not; `why` says which). Every sampled
/// mention must still be extracted, else the figures in BENCHMARKS.md no longer hold. The
/// sample points into the shared captions (file, image id, byte span) and copies no caption text.
#[test]
fn precision_sample_still_reads_the_same() {
    let Some(dir) = data_dir() else { return };
    let caps: BTreeMap<(String, u64), String> = captions(&dir).into_iter().map(|(f, id, c)| ((f, id), c)).collect();
    let sample = project("crates/dftg-core/tests/data/lvis-precision-sample.jsonl");
    let extractors = [("coco80", Extractor::new(Arc::new(Vocabulary::coco80()))), ("lvis", Extractor::new(Arc::new(Vocabulary::lvis())))];
    let mut tally: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for line in sample.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = v["vocabulary"].as_str().unwrap();
        let x = &extractors.iter().find(|(n, _)| *n == name).unwrap().1;
        let cap = &caps[&(v["file"].as_str().unwrap().to_string(), v["image_id"].as_u64().unwrap())];
        let span = (v["span"][0].as_u64().unwrap() as u32, v["span"][1].as_u64().unwrap() as u32);
        // the same head, read alone or inside a longer phrase ("monitors" in "computer monitors")
        let found = x
            .extract(cap)
            .mentions
            .iter()
            .any(|m| m.span.0 <= span.0 && span.1 <= m.span.1 && x.vocab().name(m.concept) == v["concept"].as_str().unwrap());
        let object = v["object"].as_bool().unwrap();
        // a mention labelled "not an object" that is no longer read is a false claim gone;
        // a real one that is no longer read is a regression
        assert!(found || !object, "{name} no longer reads {} at {span:?} in {cap:?}: relabel the sample", v["surface"]);
        let t = tally.entry(if name == "lvis" { "lvis" } else { "coco80" }).or_default();
        t.0 += usize::from(found && object);
        t.1 += usize::from(found);
        t.2 += 1;
    }
    for (name, (ok, n, drawn)) in &tally {
        println!(
            "{name}: {ok}/{n} mentions still read are object claims ({:.0}%); {} of the {drawn} drawn no longer read, all false claims",
            100.0 * *ok as f64 / *n as f64,
            drawn - n
        );
    }
    assert_eq!(tally.values().map(|t| t.2).collect::<Vec<_>>(), [100, 100]);
}

/// Extraction throughput over all 20,000 captions, both vocabularies (run with `--release`).
#[test]
#[ignore = "measurement: timing"]
fn extraction_throughput() {
    let Some(dir) = data_dir() else { return };
    let caps: Vec<String> = captions(&dir).into_iter().map(|c| c.2).collect();
    let bytes: usize = caps.iter().map(String::len).sum();
    for (name, load) in [("coco80", Vocabulary::coco80 as fn() -> Vocabulary), ("lvis", Vocabulary::lvis)] {
        let built = std::time::Instant::now();
        let x = Extractor::new(Arc::new(load()));
        let build = built.elapsed().as_secs_f64();
        let mut scratch = dftg_core::extract::ExtractScratch::default();
        let mut out = dftg_core::extract::Extraction::default();
        let mut best = f64::MAX;
        let mut mentions = 0;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            mentions = 0;
            for c in &caps {
                x.extract_into(c, &mut scratch, &mut out);
                mentions += out.mentions.len();
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{name}: vocabulary parsed and extractor built in {:.1} ms; {} captions ({:.1} MB) in {:.1} ms (best of 5): {:.0} captions/s, {:.1} MB/s; {mentions} mentions",
            build * 1e3,
            caps.len(),
            bytes as f64 / 1e6,
            best * 1e3,
            caps.len() as f64 / best,
            bytes as f64 / 1e6 / best
        );
    }
}
