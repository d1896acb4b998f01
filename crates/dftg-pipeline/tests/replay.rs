//! Real model outputs through the pipeline: the recorded MiniGPT-4 and mPLUG-Owl captions of
//! ../shared/data/pope/captions, served by the simulator's replay mode, diagnosed in the
//! CHAIR-compatible mode. The profiles' per-concept hallucination counts equal the reference
//! CHAIR results exactly, and `compare` shows the two models hallucinate differently.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use dftg_core::profile::Profile;
use dftg_pipeline::job::{ExtractorKind, JobSpec, ModelKind, ModelSpec};
use dftg_pipeline::runner::{LocalJob, NoProgress, RunOptions};
use tokio_util::sync::CancellationToken;

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var("DFTG_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    if dir.join("pope/captions").is_dir() && dir.join("nltk-tagger").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("reference data (pope/captions/, nltk-tagger/) not found at {}", dir.display());
    }
    eprintln!("skipping: reference data (pope/captions/, nltk-tagger/) not found at {}", dir.display());
    None
}

/// Images where each concept is hallucinated, from a chair-reference file.
fn reference_counts(path: &std::path::Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines().skip(1) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut seen: Vec<&str> = v["hallucinated"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        seen.sort();
        seen.dedup();
        for c in seen {
            *out.entry(c.to_string()).or_default() += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_real_captions_give_the_reference_profile() {
    let Some(data) = data_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut profiles = Vec::new();
    for model in ["minigpt-4", "mplug"] {
        let captions = data.join(format!("pope/captions/{model}.instruction1.jsonl"));
        let corpus = dir.path().join(format!("corpus-{model}"));
        let ids = dftg_pipeline::synth::image_ids_of_jsonl(&std::fs::read_to_string(&captions).unwrap()).unwrap();
        let objects = std::fs::read_to_string(data.join("coco2014-objects/pope_caption2000.json")).unwrap();
        assert_eq!(dftg_pipeline::synth::write_object_map_corpus(&corpus, &objects, Some(&ids)).unwrap(), 2000);
        let mut spec = JobSpec::new(
            corpus.to_str().unwrap(),
            ModelSpec { kind: ModelKind::Replay(captions.display().to_string()), name: Some(model.to_string()), ..ModelSpec::default() },
        );
        spec.extractor = ExtractorKind::ChairCompat;
        spec.chair_vocab = Some(data.join("chair-vocab").display().to_string());
        spec.shard_size = 250;
        let out = dir.path().join(format!("out-{model}"));
        let job = LocalJob::prepare(&spec, &out).await.unwrap();
        let report = job.run(RunOptions { workers: 2, progress: Arc::new(NoProgress), shutdown: CancellationToken::new() }).await.unwrap();
        assert_eq!(report.manifest.diagnosed_images, 2000);
        let profile: Profile = serde_json::from_str(&std::fs::read_to_string(out.join(spec.id()).join("profile.json")).unwrap()).unwrap();
        let reference = reference_counts(&data.join(format!("chair-reference/{model}.instruction1.jsonl")));
        let ours: BTreeMap<String, u64> =
            profile.concepts.iter().filter(|c| c.hallucinations > 0).map(|c| (c.concept.clone(), c.hallucinations)).collect();
        let concepts: std::collections::BTreeSet<&String> = reference.keys().chain(ours.keys()).collect();
        let differ: Vec<(&String, u64, u64)> = concepts
            .iter()
            .map(|c| (*c, *ours.get(*c).unwrap_or(&0), *reference.get(*c).unwrap_or(&0)))
            .filter(|(_, a, b)| a != b)
            .collect();
        let total_ours: u64 = ours.values().sum();
        let total_ref: u64 = reference.values().sum();
        eprintln!(
            "{model}: {}/{} concepts with the reference's count; totals {total_ours} vs {total_ref}; top {:?}",
            concepts.len() - differ.len(),
            concepts.len(),
            profile.concepts.iter().take(5).map(|c| (&c.concept, c.hallucinations)).collect::<Vec<_>>()
        );
        // same tokenizer, tagger and lemmas as the reference: every count is exact
        assert!(differ.is_empty(), "{model}: (concept, ours, reference) differ: {differ:?}");
        assert_eq!(total_ours, total_ref, "{model}");
        profiles.push(profile);
    }
    let c = dftg_core::compare::compare(&profiles[0], &profiles[1], 10);
    eprintln!(
        "minigpt-4 vs mplug: jensen-shannon {:.3}, top-10 overlap {:.2}, most different {:?}",
        c.jensen_shannon,
        c.top_k_overlap,
        c.most_different.iter().take(4).map(|d| &d.concept).collect::<Vec<_>>()
    );
    assert!(c.jensen_shannon > 0.01, "two real models hallucinate differently");
}
