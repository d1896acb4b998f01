//! `dftg vocab from-categories` and the built-in `lvis` vocabulary through the real binary:
//! a category list becomes a vocabulary that `dftg run` accepts, and `--vocabulary lvis` runs
//! the bundled example corpus against the simulator end to end.

use std::path::{Path, PathBuf};

use dftg_core::vocab::Vocabulary;

mod support;
use support::{dftg_output as dftg, ok};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn read_json(p: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not json: {e}", p.display()))
}

/// The one job directory `dftg run --out DIR` made.
fn job_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// (concept names of the profile, diagnosed images) of a `dftg run` on the example corpus.
fn run(vocabulary: &str, out: &Path) -> (Vec<String>, u64) {
    ok(&["run", "--vocabulary", vocabulary, "--out", s(out), "--quiet"]);
    let job = job_dir(out);
    assert_eq!(read_json(job.join("job.json"))["spec"]["vocabulary"].as_str(), Some(vocabulary));
    let profile = read_json(job.join("profile.json"));
    let names = profile["concepts"].as_array().unwrap().iter().map(|c| c["concept"].as_str().unwrap().to_string()).collect();
    let dataset = read_json(job.join("dataset.json"));
    assert_eq!(dataset["failed_images"].as_u64(), Some(0), "{dataset}");
    (names, dataset["diagnosed_images"].as_u64().unwrap())
}

#[test]
fn run_with_the_lvis_vocabulary_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (lvis, diagnosed) = run("lvis", &dir.path().join("lvis"));
    let (coco, coco_diagnosed) = run("coco80", &dir.path().join("coco"));
    assert_eq!(diagnosed, coco_diagnosed);
    assert!(diagnosed > 0);
    let coco80 = Vocabulary::coco80();
    let lvis_vocab = Vocabulary::lvis();
    assert!(lvis.iter().all(|c| lvis_vocab.lookup(c).is_some()), "{lvis:?}");
    assert!(coco.iter().all(|c| coco80.lookup(c).is_some()), "{coco:?}");
    // the same replies read with the larger vocabulary name objects COCO has no word for
    assert!(lvis.iter().any(|c| coco80.lookup(c).is_none()), "{lvis:?}");
}

#[test]
fn a_category_list_becomes_a_vocabulary_that_run_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let names = dir.path().join("names.txt");
    std::fs::write(&names, "# my detector\nperson, people, man\ndog\nbat_(animal)\nbaseball_bat\nstand\ndining_table, table\n").unwrap();
    let exclude = dir.path().join("exclude.txt");
    std::fs::write(&exclude, "stand  # a verb in captions\n").unwrap();
    let out = dir.path().join("mine.toml");
    let said = ok(&["vocab", "from-categories", "--input", s(&names), "--format", "names", "--exclude", s(&exclude), "--out", s(&out)]);
    assert!(said.contains("6 concepts") && said.contains("1 excluded"), "{said}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("# dftg vocabulary \"mine\": generated"), "{text}");
    assert!(text.contains("--format names --exclude exclude.txt"), "the header names the command: {text}");
    let v = Vocabulary::from_toml(&text).unwrap();
    assert_eq!(v.phrase("bats").unwrap().concept, v.lookup("bat (animal)"));
    assert_eq!(v.phrase("stand").unwrap().concept, None);
    let run_out = dir.path().join("run");
    let (concepts, _) = run(s(&out), &run_out);
    assert!(concepts.iter().all(|c| v.lookup(c).is_some()), "{concepts:?}");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"name\": 7}\n").unwrap();
    let failed = dftg(&["vocab", "from-categories", "--input", s(&bad), "--out", s(&dir.path().join("x.toml"))]);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("line 1"), "{err}");
    assert!(!dir.path().join("x.toml").exists(), "nothing written for a bad list");
}
