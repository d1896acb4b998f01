//! Extraction + checking on the real captions of ../shared/data/pope/captions, one thread:
//! `cargo bench -p dftg-core --bench diagnose`. Prints captions/s (median of runs), by wall time
//! and by this thread's CPU time (the machine may be shared), for:
//! - the pipeline's own check (`check::diagnose`: claims with counts and attributes checked
//!   against the truth, the diagnosis record built), which is what the diagnose stage runs;
//!   on the POPE captions (truth: object names) and on LLaVA-Bench COCO's reference captions
//!   (truth with instance counts, so count claims are checked too);
//! - dftg's own extractor with the CHAIR set check, and the CHAIR-compatible one;
//! - the time nltk's tagger takes to load.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use dftg_core::chair::{ChairScratch, ChairTally, ChairVocab, PerceptronTagger};
use dftg_core::check::diagnose;
use dftg_core::extract::{ExtractScratch, Extraction, Extractor};
use dftg_core::truth::{parse_object_map, ImageTruth, ObjectTruth};
use dftg_core::vocab::Vocabulary;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// On-CPU seconds of this thread (Linux schedstat), if available.
fn cpu_secs() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(text.split_whitespace().next()?.parse::<f64>().ok()? * 1e-9)
}

/// Wall and CPU seconds since `start`.
fn elapsed(start: (Instant, Option<f64>)) -> (f64, Option<f64>) {
    (start.0.elapsed().as_secs_f64(), start.1.zip(cpu_secs()).map(|(a, b)| b - a))
}

fn now() -> (Instant, Option<f64>) {
    (Instant::now(), cpu_secs())
}

/// Per-run (wall, CPU) seconds → "median N captions/s (M per CPU-second)".
fn rates(times: &[(f64, Option<f64>)], n: usize) -> String {
    let wall = median(times.iter().map(|t| n as f64 / t.0).collect());
    let cpu = median(times.iter().filter_map(|t| t.1).map(|c| n as f64 / c.max(1e-9)).collect());
    format!("median {wall:.0} captions/s ({cpu:.0} per CPU-second)")
}

/// LLaVA-Bench COCO: each image's truth with instance counts, and its reference captions.
fn llava_bench(dir: &std::path::Path) -> Vec<(ImageTruth, Vec<String>)> {
    let text = std::fs::read_to_string(dir.join("llava-bench-coco80/caps_boxes_coco2014_val_80.jsonl")).expect("llava-bench");
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let mut objects: Vec<ObjectTruth> = Vec::new();
            for i in v["instances"].as_array().expect("instances") {
                let name = i["category"].as_str().expect("category");
                match objects.iter_mut().find(|o| o.name == name) {
                    Some(o) => o.count = o.count.map(|n| n + 1),
                    None => objects.push(ObjectTruth { name: name.to_string(), count: Some(1), attributes: Default::default() }),
                }
            }
            let captions = v["captions"].as_array().expect("captions").iter().filter_map(|c| c.as_str().map(str::to_string)).collect();
            (ImageTruth { image: v["id"].as_str().unwrap_or_default().to_string(), file: None, objects }, captions)
        })
        .collect()
}

fn main() {
    let data = std::env::var("DFTG_DATA").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data").to_string());
    let dir = std::path::Path::new(&data);
    if !dir.join("pope/captions").is_dir() {
        eprintln!("skipping: reference data not found at {data}");
        return;
    }
    let gt: HashMap<String, Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("coco2014-objects/pope_caption2000.json")).expect("gt")).expect("gt json");
    let mut caps: Vec<(String, String)> = Vec::new();
    for e in std::fs::read_dir(dir.join("pope/captions")).expect("captions dir") {
        for line in std::fs::read_to_string(e.expect("entry").path()).expect("read").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            caps.push((v["image_id"].to_string(), v["caption"].as_str().unwrap_or_default().to_string()));
        }
    }
    let runs = 7;
    let extractor = Extractor::new(Arc::new(Vocabulary::coco80()));
    let names_only: HashMap<String, ImageTruth> =
        parse_object_map(&std::fs::read_to_string(dir.join("coco2014-objects/pope_caption2000.json")).expect("gt"))
            .expect("object map")
            .into_iter()
            .map(|t| (t.image.clone(), t))
            .collect();
    let pope: Vec<(&ImageTruth, &str)> = caps.iter().map(|(id, c)| (&names_only[id], c.as_str())).collect();
    let counted = llava_bench(dir);
    let counted: Vec<(&ImageTruth, &str)> = counted.iter().flat_map(|(t, cs)| cs.iter().map(move |c| (t, c.as_str()))).collect();
    for (what, set) in [("POPE captions, truth = object names", &pope), ("LLaVA-Bench reference captions, truth with counts", &counted)] {
        // a small set is passed over several times per run, so a run lasts long enough to time
        let passes = (20_000 / set.len().max(1)).max(1);
        let mut times = Vec::new();
        let mut hallucinations = 0usize;
        for _ in 0..runs {
            let mut scratch = ExtractScratch::default();
            hallucinations = 0;
            let t = now();
            for _ in 0..passes {
                for (truth, caption) in set {
                    let record = diagnose(&extractor, &mut scratch, truth, "Describe the image in detail.", caption);
                    hallucinations += record.hallucinations.len();
                    std::hint::black_box(&record);
                }
            }
            times.push(elapsed(t));
        }
        println!(
            "pipeline check (diagnosis records), {what}: {} over {} captions × {passes} passes, {} hallucinations a pass ({runs} runs)",
            rates(&times, set.len() * passes),
            set.len(),
            hallucinations / passes
        );
    }
    let mut times = Vec::new();
    for _ in 0..runs {
        let mut scratch = ExtractScratch::default();
        let mut ex = Extraction::default();
        let mut tally = ChairTally::default();
        let (mut m, mut h): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        let t = now();
        for (id, c) in &caps {
            extractor.extract_into(c, &mut scratch, &mut ex);
            m.clear();
            m.extend(ex.mentions.iter().map(|x| extractor.vocab().name(x.concept)));
            h.clear();
            tally.add(&m, &gt[id], &mut h);
        }
        times.push(elapsed(t));
        std::hint::black_box(tally.chair_i());
    }
    println!("own extractor + check: {} over {} captions ({} runs)", rates(&times, caps.len()), caps.len(), runs);
    // nltk's tagger: reading and parsing its weights is the compat mode's fixed cost
    let file = |kind: &str| {
        std::fs::read_to_string(dir.join(format!("nltk-tagger/averaged_perceptron_tagger_eng.{kind}.json"))).expect("tagger file")
    };
    let mut loads = Vec::new();
    let mut tagger = None;
    for _ in 0..runs {
        let t = now();
        tagger = Some(PerceptronTagger::from_json(&file("weights"), &file("tagdict"), &file("classes")).expect("tagger"));
        loads.push(elapsed(t));
    }
    let wall = median(loads.iter().map(|l| l.0 * 1e3).collect());
    let cpu = median(loads.iter().filter_map(|l| l.1).map(|c| c * 1e3).collect());
    println!("tagger load (read + parse): median {wall:.1} ms ({cpu:.1} ms CPU; {runs} runs)");
    let chair = ChairVocab::from_sources(
        &std::fs::read_to_string(dir.join("chair-vocab/synonyms.txt")).expect("synonyms"),
        &std::fs::read_to_string(dir.join("chair-vocab/double_words.json")).expect("double words"),
        Arc::new(tagger.expect("tagger")),
    )
    .expect("chair vocab");
    let mut times = Vec::new();
    for _ in 0..runs {
        let mut scratch = ChairScratch::default();
        let mut tally = ChairTally::default();
        let (mut m, mut h): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        let t = now();
        for (id, c) in &caps {
            chair.mentioned_into(c, &mut scratch, &mut m);
            h.clear();
            tally.add(&m, &gt[id], &mut h);
        }
        times.push(elapsed(t));
        std::hint::black_box(tally.chair_i());
    }
    println!("chair-compatible + check: {} over {} captions ({} runs)", rates(&times, caps.len()), caps.len(), runs);
}
