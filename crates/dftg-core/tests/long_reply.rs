//! Extraction time on pathological 64 KiB replies (the client's default reply limit), for
//! BENCHMARKS.md: `cargo test -p dftg-core --release --test long_reply -- --ignored --nocapture`.
//! Ignored by default: it measures, it does not assert a time (the machine is shared).

use std::sync::Arc;
use std::time::Instant;

use dftg_core::extract::{ExtractScratch, Extraction, Extractor};
use dftg_core::vocab::Vocabulary;

/// `unit` repeated up to 64 KiB.
fn repeated(unit: &str) -> String {
    unit.repeat((64 << 10) / unit.len())
}

pub fn inputs() -> Vec<(&'static str, String)> {
    vec![
        ("one noun repeated (\"dog \")", repeated("dog ")),
        ("attributes chained by and (\"red orange and \")", repeated("red orange and ")),
        ("a mention, then be-verbs, then absent words", format!("dog {}{}", "is ".repeat(8 << 10), "missing ".repeat(4 << 10))),
        ("one long negation list (\"no dog, cat, \")", format!("no {}", repeated("dog, cat, "))),
        ("short sentences (\"A red car. \")", repeated("A red car. ")),
        ("one word of 64 KiB", "x".repeat(64 << 10)),
    ]
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn bench_extraction_of_64_kib_replies() {
    let extractor = Extractor::new(Arc::new(Vocabulary::coco80()));
    let mut scratch = ExtractScratch::default();
    let mut out = Extraction::default();
    for (name, text) in inputs() {
        let runs = 7;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            extractor.extract_into(&text, &mut scratch, &mut out);
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "{name}: {} bytes, median {:.3} ms, mentions {}, negated {}",
            text.len(),
            times[runs / 2].as_secs_f64() * 1000.0,
            out.mentions.len(),
            out.negated.len()
        );
    }
}
