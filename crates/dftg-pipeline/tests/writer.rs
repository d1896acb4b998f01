//! The writer end to end (issue 10): the simulated writer injecting mistakes, the gate scored
//! against the simulator's log of what it injected, the final dataset re-diagnosed, the budget,
//! and the variety of the questions against the template writer's on the same job.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dftg_core::extract::{ExtractScratch, Extractor};
use dftg_core::llava::{InstructionType, LlavaRecord};
use dftg_core::record::DiagnosisRecord;
use dftg_core::truth::ImageTruth;
use dftg_core::vocab::Vocabulary;
use dftg_core::writer::WriterKind;
use dftg_pipeline::dataset::DatasetManifest;
use dftg_pipeline::job::{JobSpec, ModelKind, ModelSpec};
use dftg_pipeline::runner::{LocalJob, NoProgress, RunOptions};
use tokio_util::sync::CancellationToken;

async fn run(out: &Path, spec: &JobSpec) -> (PathBuf, DatasetManifest) {
    let job = LocalJob::prepare(spec, out).await.unwrap();
    let report = job.run(RunOptions { workers: 3, progress: Arc::new(NoProgress), shutdown: CancellationToken::new() }).await.unwrap();
    (out.join(spec.id()), report.manifest)
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

fn instructions(job: &Path) -> Vec<LlavaRecord> {
    let mut files: Vec<_> = std::fs::read_dir(job.join("instructions")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().flat_map(|f| serde_json::from_str::<Vec<LlavaRecord>>(&std::fs::read_to_string(f).unwrap()).unwrap()).collect()
}

fn diagnoses(job: &Path) -> Vec<DiagnosisRecord> {
    let mut files: Vec<_> = std::fs::read_dir(job.join("diagnoses")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str::<DiagnosisRecord>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn spec(corpus: &Path, writer: WriterKind, error_rate: f64) -> JobSpec {
    let mut spec =
        JobSpec::new(corpus.to_str().unwrap(), ModelSpec { kind: ModelKind::Sim("people-everywhere".into()), ..ModelSpec::default() });
    spec.shard_size = 50;
    spec.generation.writer.kind = writer;
    spec.generation.writer.sim_error_rate = error_rate;
    spec
}

/// The questions a writer wrote (a corrected description's question is the model's own prompt).
fn questions(records: &[LlavaRecord]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.meta.kind != InstructionType::CorrectedDescription)
        .flat_map(|r| r.conversations.iter().step_by(2).map(|t| t.value.replace("<image>", "").trim().to_string()))
        .collect()
}

fn words(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

fn distinct_bigrams(qs: &[String]) -> usize {
    qs.iter().flat_map(|q| words(q).windows(2).map(|w| w.join(" ")).collect::<Vec<_>>()).collect::<BTreeSet<_>>().len()
}

/// The most common first three words, as a share of all questions.
fn top_opening(qs: &[String]) -> (String, f64) {
    let mut n: BTreeMap<String, usize> = BTreeMap::new();
    for q in qs {
        *n.entry(words(q).into_iter().take(3).collect::<Vec<_>>().join(" ")).or_default() += 1;
    }
    let (top, count) = n.into_iter().max_by_key(|(_, c)| *c).unwrap_or_default();
    (top, count as f64 / qs.len().max(1) as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_catches_the_simulated_writers_mistakes_and_the_dataset_is_true() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, 400, 11).unwrap();
    let (job, manifest) = run(&dir.path().join("out"), &spec(&corpus, WriterKind::Sim, 0.15)).await;

    // every request the simulator answered, with the mistake it injected (or none)
    let log = read_jsonl(&job.join("sim-writer-truth.jsonl"));
    let mistakes: BTreeMap<String, Option<String>> =
        log.iter().map(|r| (r["request_id"].as_str().unwrap().to_string(), r["mistake"].as_str().map(str::to_string))).collect();
    assert_eq!(mistakes.len(), log.len(), "request ids are unique in the job");
    let refused: BTreeMap<String, String> = read_jsonl(&job.join("writer/rejections.jsonl"))
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap().to_string(), r["reason"].as_str().unwrap().to_string()))
        .collect();
    let injected: Vec<(&String, &String)> = mistakes.iter().filter_map(|(id, m)| m.as_ref().map(|m| (id, m))).collect();
    let clean = mistakes.len() - injected.len();
    let caught = injected.iter().filter(|(id, _)| refused.contains_key(*id)).count();
    let wrongly = mistakes.iter().filter(|(id, m)| m.is_none() && refused.contains_key(*id)).count();
    let kinds: BTreeSet<&str> = injected.iter().map(|(_, m)| m.as_str()).collect();
    eprintln!(
        "writer requests {}, injected {} ({kinds:?}), caught {caught}, clean {clean}, refused clean {wrongly}",
        mistakes.len(),
        injected.len()
    );
    let share = injected.len() as f64 / mistakes.len() as f64;
    assert!((0.10..=0.20).contains(&share), "the simulator injected mistakes into {share:.3} of replies, not about 0.15");
    assert!(kinds.len() >= 6, "most kinds of mistake were injected: {kinds:?}");
    assert!(caught as f64 >= 0.99 * injected.len() as f64, "caught {caught} of {} injected mistakes", injected.len());
    assert!(wrongly as f64 <= 0.03 * clean as f64, "refused {wrongly} of {clean} clean replies");

    // the budget is met, and dataset.json tells the writer's story
    let budget = manifest.plan.budget as f64;
    assert!(
        (manifest.instructions as f64 - budget).abs() <= 0.01 * budget,
        "{} instructions for a budget of {budget}",
        manifest.instructions
    );
    assert_eq!(manifest.writer.kind, "sim");
    assert_eq!(manifest.writer.accepted, manifest.instructions);
    assert_eq!(manifest.writer.rejected.values().sum::<u64>() as usize, refused.len());
    assert!(manifest.writer.rewrites > 0);
    let writer_tokens = manifest.tokens.get("writer").copied().unwrap_or_default();
    assert!(writer_tokens.prompt > 0 && writer_tokens.completion > 0, "writer tokens are recorded: {writer_tokens:?}");
    for t in [InstructionType::MultiTurn, InstructionType::FalsePremise, InstructionType::CorrectedDescription] {
        assert!(manifest.by_type.get(t.as_str()).copied().unwrap_or(0) > 0, "no {} items", t.as_str());
    }

    // re-diagnose every answer of the final dataset against the image's truth
    let extractor = Extractor::new(Arc::new(Vocabulary::coco80()));
    let mut scratch = ExtractScratch::default();
    let truth: BTreeMap<String, ImageTruth> = diagnoses(&job)
        .into_iter()
        .map(|d| (d.file.clone().unwrap_or(d.image.clone()), ImageTruth { image: d.image, file: None, objects: d.truth }))
        .collect();
    let records = instructions(&job);
    let mut by_writer: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        r.validate().unwrap();
        let meta = r.meta.writer.as_ref().expect("every record says who wrote it");
        assert!(meta.facts.is_some() && meta.attempts >= 1, "{r:?}");
        *by_writer.entry(meta.by.clone()).or_default() += 1;
        let t = &truth[&r.image];
        for answer in r.conversations.iter().skip(1).step_by(2) {
            let again = dftg_core::check::diagnose(&extractor, &mut scratch, t, "", &answer.value);
            assert!(again.hallucinations.is_empty(), "{}: {:?} -> {:?}", r.id, answer.value, again.hallucinations);
        }
    }
    eprintln!("records by writer: {by_writer:?}");
    assert!(by_writer.get("sim").copied().unwrap_or(0) as f64 >= 0.95 * records.len() as f64, "{by_writer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_writer_asks_more_varied_questions_than_the_templates() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, 300, 12).unwrap();
    let (sim_job, sim) = run(&dir.path().join("out-sim"), &spec(&corpus, WriterKind::Sim, 0.0)).await;
    let (tpl_job, tpl) = run(&dir.path().join("out-template"), &spec(&corpus, WriterKind::Template, 0.0)).await;
    assert_eq!(sim.plan, tpl.plan, "the same job plans the same items whoever writes them");
    let (qs_sim, qs_tpl) = (questions(&instructions(&sim_job)), questions(&instructions(&tpl_job)));
    let (b_sim, b_tpl) = (distinct_bigrams(&qs_sim), distinct_bigrams(&qs_tpl));
    let (top, share) = top_opening(&qs_sim);
    let (tpl_top, tpl_share) = top_opening(&qs_tpl);
    eprintln!(
        "distinct question bigrams: sim {b_sim}, template {b_tpl} ({:.2}x); top opening sim {top:?} {share:.3}, template {tpl_top:?} {tpl_share:.3}",
        b_sim as f64 / b_tpl as f64
    );
    assert!(b_sim >= 2 * b_tpl, "sim {b_sim} vs template {b_tpl} distinct bigrams");
    assert!(share <= 0.15, "the opening {top:?} starts {share:.3} of the simulated writer's questions");
    assert_eq!(tpl.writer.kind, "template");
    assert!(tpl.writer.rejected.is_empty() && tpl.writer.fallbacks == 0, "the template writer's items pass the gate: {:?}", tpl.writer);
    assert!(!tpl_job.join("writer/rejections.jsonl").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vision_writer_gets_the_image_and_its_items_pass_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, 60, 13).unwrap();
    let mut spec = spec(&corpus, WriterKind::Sim, 0.0);
    spec.generation.writer.with_image = true;
    let (job, manifest) = run(&dir.path().join("out"), &spec).await;
    assert_eq!(manifest.writer.kind, "sim");
    assert!(manifest.writer.accepted > 0 && manifest.writer.fallbacks == 0, "{:?}", manifest.writer);
    // the image travels base64 in the prompt: the writer's prompt tokens grow accordingly
    let per_item = manifest.tokens["writer"].prompt as f64 / manifest.writer.accepted as f64;
    let (_, without) = run(&dir.path().join("out-text"), &self::spec(&corpus, WriterKind::Sim, 0.0)).await;
    let per_item_text = without.tokens["writer"].prompt as f64 / without.writer.accepted as f64;
    assert!(per_item > per_item_text, "with the image {per_item:.0} prompt tokens an item, without {per_item_text:.0}");
    assert!(instructions(&job).iter().all(|r| r.meta.writer.as_ref().is_some_and(|w| w.by == "sim")));
}
