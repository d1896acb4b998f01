//! Diagnosis without annotations: the simulated detector (missing 10% of objects, 5% false
//! boxes) and the simulated judge give the truth, scored against what the simulator really
//! injected. The job never reads the annotation file (the simulator does, to play the model,
//! the detector and the judge).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use dftg_core::profile::Profile;
use dftg_core::record::{DiagnosisRecord, EvidenceSource};
use dftg_pipeline::job::{DetectorSpec, JobSpec, JudgeSpec, ModelKind, ModelSpec, TruthSource};
use dftg_pipeline::runner::{LocalJob, NoProgress, RunOptions};
use tokio_util::sync::CancellationToken;

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn diagnoses(job: &Path) -> Vec<DiagnosisRecord> {
    let mut files: Vec<_> = std::fs::read_dir(job.join("diagnoses")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().flat_map(|f| read_jsonl(f)).map(|v| serde_json::from_value(v).unwrap()).collect()
}

async fn run(spec: &JobSpec, out: &Path) -> std::path::PathBuf {
    let job = LocalJob::prepare(spec, out).await.unwrap();
    job.run(RunOptions { workers: 3, progress: Arc::new(NoProgress), shutdown: CancellationToken::new() }).await.unwrap();
    out.join(spec.id())
}

/// (image file, concept) of every object hallucination the simulator injected.
fn injected(job: &Path, files: &BTreeMap<String, String>) -> BTreeSet<(String, String)> {
    read_jsonl(&job.join("sim-truth.jsonl"))
        .iter()
        .flat_map(|r| {
            let file = files[r["image"].as_str().unwrap()].clone();
            r["hallucinated"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| h["kind"] == "object")
                .map(move |h| (file.clone(), h["concept"].as_str().unwrap().to_string()))
        })
        .collect()
}

fn found(records: &[DiagnosisRecord]) -> BTreeSet<(String, String)> {
    records
        .iter()
        .flat_map(|d| {
            d.hallucinations.iter().filter(|h| h.kind.as_str() == "object").map(move |h| (d.file.clone().unwrap(), h.concept.clone()))
        })
        .collect()
}

fn precision_recall(found: &BTreeSet<(String, String)>, truth: &BTreeSet<(String, String)>) -> (f64, f64) {
    let tp = found.intersection(truth).count() as f64;
    (tp / found.len().max(1) as f64, tp / truth.len().max(1) as f64)
}

fn top(job: &Path, k: usize) -> BTreeSet<String> {
    let p: Profile = serde_json::from_slice(&std::fs::read(job.join("profile.json")).unwrap()).unwrap();
    p.concepts.iter().take(k).map(|c| c.concept.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_detector_and_judge_find_the_injected_hallucinations() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    dftg_pipeline::synth::write_corpus_dir(&corpus, 1500, 7).unwrap();
    let coco: serde_json::Value = serde_json::from_slice(&std::fs::read(corpus.join("annotations.json")).unwrap()).unwrap();
    let files: BTreeMap<String, String> =
        coco["images"].as_array().unwrap().iter().map(|i| (i["id"].to_string(), i["file_name"].as_str().unwrap().to_string())).collect();
    let model = ModelSpec { kind: ModelKind::Sim("people-everywhere".into()), ..ModelSpec::default() };
    let annotated = JobSpec::new(corpus.to_str().unwrap(), model);
    let detector = DetectorSpec { sim_miss_rate: 0.1, sim_false_rate: 0.05, ..DetectorSpec::sim() };
    let mut judged = annotated.clone();
    judged.truth.source = TruthSource::Detector;
    judged.truth.detector = Some(detector.clone());
    judged.truth.judge = Some(JudgeSpec::sim());
    let mut unjudged = judged.clone();
    unjudged.truth.judge = None;

    let a = run(&annotated, &dir.path().join("a")).await;
    let j = run(&judged, &dir.path().join("j")).await;
    let u = run(&unjudged, &dir.path().join("u")).await;

    // the plan comes from the image listing: no annotation was read into it
    let plan = read_jsonl(&j.join("plan/shard-00000.jsonl"));
    assert!(plan.iter().all(|e| e["objects"].as_array().is_none_or(|o| o.is_empty())), "detector jobs plan without truth");
    assert_eq!(plan[0]["image"], "000001");

    let truth = injected(&j, &files);
    assert!(truth.len() > 500, "enough hallucinations to score: {}", truth.len());
    let records = diagnoses(&j);
    let (p, r) = precision_recall(&found(&records), &truth);
    assert!(p >= 0.95 && r >= 0.90, "with the judge: precision {p:.3}, recall {r:.3}");
    // every checked claim keeps its evidence; judge answers keep question and answer
    for d in &records {
        for m in &d.mentions {
            assert!(d.evidence.iter().any(|e| e.concept == m.concept), "{}: no evidence for {}", d.image, m.concept);
        }
        for e in d.evidence.iter().filter(|e| e.source == EvidenceSource::Judge) {
            assert!(e.question.is_some() && e.answer.is_some(), "{e:?}");
        }
    }
    assert!(records.iter().any(|d| d.evidence.iter().any(|e| e.source == EvidenceSource::Judge)));
    // the profile's clearly separated top concepts are those of the run on the annotations
    assert_eq!(top(&j, 5), top(&a, 5));

    // without a judge the uncertain claims stay unverified, counted, never hallucinations
    let records = diagnoses(&u);
    let unverified: usize = records.iter().map(|d| d.unverified.len()).sum();
    assert!(unverified > 0);
    for d in &records {
        for v in &d.unverified {
            assert!(
                !d.hallucinations.iter().any(|h| h.concept == v.concept),
                "{}: {} both unverified and hallucinated",
                d.image,
                v.concept
            );
        }
    }
    let summary_unverified: u64 = {
        let mut n = 0;
        for f in std::fs::read_dir(u.join("summaries")).unwrap() {
            let s: dftg_core::profile::Summary = serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap();
            n += s.concepts.values().map(|c| c.unverified).sum::<u64>();
        }
        n
    };
    assert_eq!(summary_unverified as usize, unverified, "the summaries count the unverified claims");
    let claims: usize = records.iter().map(|d| d.evidence.len()).sum();
    let (p_u, r_u) = precision_recall(&found(&records), &truth);
    assert!(p_u < p, "the judge is what lifts precision: {p_u:.3} without, {p:.3} with");
    // the bar without a judge: a detector that misses 10% of instances at its box
    // threshold (half of those still scored in the uncertain band, so unverified)
    assert!(p_u >= 0.90 && r_u >= 0.90, "without the judge: precision {p_u:.3}, recall {r_u:.3}");
    assert_eq!(top(&u, 5), top(&a, 5));
    eprintln!(
        "detector truth: with judge P={p:.3} R={r:.3}; without P={p_u:.3} R={r_u:.3}, {unverified} of {claims} checked claims unverified ({:.1}%)",
        100.0 * unverified as f64 / claims.max(1) as f64
    );
}
