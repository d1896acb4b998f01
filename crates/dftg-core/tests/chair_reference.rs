//! The CHAIR-compatible mode against the reference CHAIR outputs (nltk tokenizer, tagger and
//! WordNet lemmatizer, as in the OPERA repository) on the 10 POPE caption files.
//!
//! Acceptance per file: every caption's mentioned and hallucinated lists identical (order and
//! repeats), so CHAIR_s, CHAIR_i and recall equal too. Tokenizer, tagger (nltk's perceptron on
//! its trained weights, `$DFTG_DATA/nltk-tagger`) and lemmatizer replay the reference's.
//!
//! Data: `$DFTG_DATA`, else `$DFTG_SHARED_DATA`, else `<crate>/../../../shared/data`. Without it the test is skipped with a
//! message, except under `CI=true`, where it fails. With `CHAIR_DUMP_DIR` set, the outputs are
//! also written there for `shared/tools/chair_compare.py` (`<name>.stdout.json`,
//! `<name>.per_caption.jsonl`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dftg_core::chair::{ChairScratch, ChairTally, ChairVocab, PerceptronTagger};

mod support;
use support::read;

use support::POPE_CAPTION_FILES as FILES;

fn data_dir() -> Option<PathBuf> {
    support::shared_data(&["chair-reference", "nltk-tagger"])
}

/// nltk's tagger from `<data>/nltk-tagger`, with the time its loading took.
fn load_tagger(dir: &Path) -> (Arc<PerceptronTagger>, f64) {
    let start = Instant::now();
    let file = |kind: &str| read(dir.join(format!("nltk-tagger/averaged_perceptron_tagger_eng.{kind}.json")));
    let tagger = PerceptronTagger::from_json(&file("weights"), &file("tagdict"), &file("classes")).unwrap();
    (Arc::new(tagger), start.elapsed().as_secs_f64())
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn image_key(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect()
}

struct Caption {
    caption: String,
    gt: Vec<String>,
}

#[test]
fn chair_mode_matches_reference_outputs() {
    let Some(dir) = data_dir() else { return };
    let (tagger, load_secs) = load_tagger(&dir);
    eprintln!("tagger loaded in {:.1} ms", load_secs * 1e3);
    let vocab =
        ChairVocab::from_sources(&read(dir.join("chair-vocab/synonyms.txt")), &read(dir.join("chair-vocab/double_words.json")), tagger)
            .unwrap();
    let truth: HashMap<String, Vec<String>> = serde_json::from_str(&read(dir.join("coco2014-objects/imid_to_objects.json"))).unwrap();

    let mut failures = Vec::new();
    let mut all: Vec<Caption> = Vec::new();
    let mut scratch = ChairScratch::default();
    let mut mentioned = Vec::new();
    for name in FILES {
        let captions = json_lines(&read(dir.join(format!("pope/captions/{name}.jsonl"))));
        let reference = json_lines(&read(dir.join(format!("chair-reference/{name}.jsonl"))));
        let overall = &reference[0]["overall"];
        let rows = &reference[1..];
        assert_eq!(captions.len(), rows.len(), "{name}: caption and reference line counts differ");

        let mut tally = ChairTally::default();
        let (mut same_hall, mut same_ment) = (0usize, 0usize);
        let mut first_differences = Vec::new();
        let mut per_caption = String::new();
        for (c, r) in captions.iter().zip(rows) {
            let id = image_key(&c["image_id"]);
            assert_eq!(id, image_key(&r["image_id"]), "{name}: image order differs");
            let gt = truth.get(&id).unwrap_or_else(|| panic!("{name}: no ground truth for image {id}"));
            let caption = c["caption"].as_str().unwrap();
            vocab.mentioned_into(caption, &mut scratch, &mut mentioned);
            let mut hallucinated = Vec::new();
            tally.add(&mentioned, gt, &mut hallucinated);
            let (h_ok, m_ok) = (hallucinated == strings(&r["hallucinated"]), mentioned == strings(&r["mentioned"]));
            same_hall += usize::from(h_ok);
            same_ment += usize::from(m_ok);
            if !(h_ok && m_ok) && first_differences.len() < 5 {
                first_differences.push(format!("{id}: {caption:?}: ours {mentioned:?}, reference {}", r["mentioned"]));
            }
            per_caption.push_str(
                &serde_json::json!({"image_id": c["image_id"], "mentioned": mentioned, "hallucinated": hallucinated}).to_string(),
            );
            per_caption.push('\n');
            all.push(Caption { caption: caption.to_string(), gt: gt.clone() });
        }
        // For the shared checker: CHAIR_DUMP_DIR gets <name>.stdout.json and <name>.per_caption.jsonl.
        if let Some(out) = std::env::var_os("CHAIR_DUMP_DIR").map(PathBuf::from) {
            let overall = serde_json::json!({"chair_s": tally.chair_s(), "chair_i": tally.chair_i(), "recall": tally.recall()});
            std::fs::write(out.join(format!("{name}.stdout.json")), overall.to_string()).unwrap();
            std::fs::write(out.join(format!("{name}.per_caption.jsonl")), &per_caption).unwrap();
        }
        let n = rows.len() as f64;
        let d_s = (tally.chair_s() - overall["chair_s"].as_f64().unwrap()) * 100.0;
        let d_i = (tally.chair_i() - overall["chair_i"].as_f64().unwrap()) * 100.0;
        let d_r = (tally.recall() - overall["recall"].as_f64().unwrap()) * 100.0;
        let (agree_h, agree_m) = (same_hall as f64 / n, same_ment as f64 / n);
        eprintln!(
            "{name:26} d_chair_s={d_s:+.2}pt d_chair_i={d_i:+.2}pt d_recall={d_r:+.2}pt hallucinated_agree={agree_h:.4} mentioned_agree={agree_m:.4}"
        );
        for d in &first_differences {
            eprintln!("  differs: {d}");
        }
        // deltas only from float summation order (the reference sums per caption in Python)
        if same_hall != rows.len() || same_ment != rows.len() || d_s.abs() > 1e-9 || d_i.abs() > 1e-9 || d_r.abs() > 1e-9 {
            failures.push(name);
        }
    }
    assert!(failures.is_empty(), "not identical to the reference: {failures:?}");

    // Throughput of extraction + checking on one core (meaningful in release builds). The
    // machine may be shared, so on-CPU time of this thread is reported next to wall time.
    let default_reps = if cfg!(debug_assertions) { 1 } else { 5 };
    let reps: usize = std::env::var("CHAIR_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_reps);
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (start, cpu_start) = (Instant::now(), thread_cpu_ns());
        let mut tally = ChairTally::default();
        let mut hallucinated = Vec::new();
        for c in &all {
            vocab.mentioned_into(&c.caption, &mut scratch, &mut mentioned);
            hallucinated.clear();
            tally.add(&mentioned, &c.gt, &mut hallucinated);
        }
        std::hint::black_box(&tally);
        wall.push(all.len() as f64 / start.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (cpu_start, thread_cpu_ns()) {
            cpu.push(all.len() as f64 / ((b.saturating_sub(a)).max(1) as f64 * 1e-9));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    eprintln!(
        "throughput: {:.0} captions/s wall, {:.0} captions per CPU-second (medians of {reps} passes over {} captions, extraction + checking{})",
        median(&mut wall),
        median(&mut cpu),
        all.len(),
        if cfg!(debug_assertions) { ", debug build" } else { "" }
    );
}

/// On-CPU time of the current thread (Linux schedstat), if available.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}
