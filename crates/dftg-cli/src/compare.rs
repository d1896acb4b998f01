//! `dftg compare BEFORE AFTER`: two job folders (or store prefixes) before and after a remedy →
//! `compare.html` and `compare.json` (`dftg_core::before_after`); or two `profile.json` files →
//! how the two models' hallucinations differ.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use dftg_core::before_after::{compare_jobs, BeforeAfter, JobFacts};
use dftg_core::compare::compare;
use dftg_core::pope::json_problem;
use dftg_core::profile::{Profile, Summary};
use dftg_pipeline::generate::StoredGenerationPlan;
use dftg_pipeline::layout;
use dftg_runtime::{BlobStore, ObjectBlobStore};

use crate::pope::{PopeResults, POPE_RESULTS};

#[derive(Args)]
pub struct CompareArgs {
    /// The job before the remedy: its folder or store prefix (s3://bucket/prefix/job-id); or a
    /// profile.json (then AFTER is one too, and the profiles are compared).
    #[arg(value_name = "BEFORE")]
    pub a: String,
    /// The job after the remedy: its folder or store prefix (or a second profile.json).
    #[arg(value_name = "AFTER")]
    pub b: String,
    /// Size of the top-k lists (profiles).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Directory of the report (compare.html, compare.json), for two jobs.
    #[arg(long, default_value = "compare")]
    pub out: PathBuf,
    /// Confidence level of every interval, for two jobs.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
}

fn load(path: &Path) -> anyhow::Result<Profile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read profile {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a dftg profile.json", path.display()))
}

pub fn main(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let (pa, pb) = (Path::new(&args.a), Path::new(&args.b));
    if pa.is_file() && pb.is_file() {
        return profiles(&args, pa, pb);
    }
    crate::runtime()?.block_on(jobs(args))
}

fn profiles(args: &CompareArgs, pa: &Path, pb: &Path) -> anyhow::Result<ExitCode> {
    let (a, b) = (load(pa)?, load(pb)?);
    let c = compare(&a, &b, args.top);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("A: {} ({} images, CHAIR_s {:.3}, CHAIR_i {:.3})", a.model, a.images, a.chair_s, a.chair_i);
    outln!("B: {} ({} images, CHAIR_s {:.3}, CHAIR_i {:.3})", b.model, b.images, b.chair_s, b.chair_i);
    outln!("Jensen-Shannon divergence of hallucination distributions: {:.4} (0 = same, 1 = disjoint)", c.jensen_shannon);
    outln!("top-{} overlap: {:.2}", c.top_k, c.top_k_overlap);
    outln!("top A: {}", c.top_a.join(", "));
    outln!("top B: {}", c.top_b.join(", "));
    outln!("{:<16} {:>8} {:>8} {:>8} {:>8}", "concept", "share A", "share B", "rate A", "rate B");
    for d in &c.most_different {
        outln!("{:<16} {:>8.3} {:>8.3} {:>8.3} {:>8.3}", d.concept, d.share_a, d.share_b, d.rate_a, d.rate_b);
    }
    Ok(ExitCode::SUCCESS)
}

/// The facts of one job folder: merged summaries, the plan's targets, POPE results if any.
async fn job_facts(location: &str) -> anyhow::Result<JobFacts> {
    let store = ObjectBlobStore::from_url_existing(location).with_context(|| format!("cannot open job {location}"))?;
    let read = |key: &'static str| {
        let store = &store;
        async move { store.get(key).await.with_context(|| format!("cannot read {location}/{key}")) }
    };
    let profile =
        read(layout::PROFILE).await?.with_context(|| format!("{location} has no {}: not a finished dftg job", layout::PROFILE))?;
    let profile: Profile =
        serde_json::from_slice(&profile).map_err(|e| anyhow::anyhow!("{location}/{}: {}", layout::PROFILE, json_problem(&e)))?;
    let mut summary = Summary::default();
    let keys = store.list("summaries/").await.with_context(|| format!("cannot list {location}/summaries/"))?;
    for key in keys.iter().filter(|k| k.ends_with(".json")) {
        let bytes = store.get(key).await?.with_context(|| format!("{location}/{key} vanished"))?;
        let s: Summary = serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{location}/{key}: {}", json_problem(&e)))?;
        summary.merge(&s);
    }
    anyhow::ensure!(summary.images > 0, "{location} has no diagnosed images (summaries/ is empty)");
    let targeted = match read(layout::GENERATION_PLAN).await? {
        Some(bytes) => {
            let plan: StoredGenerationPlan = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{location}/{}: {}", layout::GENERATION_PLAN, json_problem(&e)))?;
            plan.plan.concepts.into_iter().filter(|(_, q)| q.negative > 0).map(|(c, q)| (c, q.negative)).collect()
        }
        None => Default::default(),
    };
    let pope = match read(POPE_RESULTS).await? {
        Some(bytes) => {
            let r: PopeResults =
                serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{location}/{POPE_RESULTS}: {}", json_problem(&e)))?;
            r.sets.into_iter().map(|(k, v)| (k, v.confusion())).collect()
        }
        None => Default::default(),
    };
    let job = location.trim_end_matches('/').rsplit('/').next().unwrap_or(location).to_string();
    Ok(JobFacts { job, model: profile.model, summary, targeted, pope })
}

async fn jobs(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let before = job_facts(&args.a).await?;
    let after = job_facts(&args.b).await?;
    let report = compare_jobs(&before, &after, args.confidence)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let json = serde_json::to_string_pretty(&report)?;
    let (json_path, html_path) = (args.out.join("compare.json"), args.out.join("compare.html"));
    std::fs::write(&json_path, &json).with_context(|| format!("cannot write {}", json_path.display()))?;
    std::fs::write(&html_path, crate::compare_html::render(&report)).with_context(|| format!("cannot write {}", html_path.display()))?;
    if args.json {
        outln!("{json}");
    } else {
        print_summary(&report);
        outln!("report: {} (and {})", html_path.display(), json_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(r: &BeforeAfter) {
    outln!("before: {} ({})", r.before_job, r.before_model);
    outln!("after:  {} ({})", r.after_job, r.after_model);
    outln!("verdict: {}", r.verdict.headline());
    for f in &r.findings {
        outln!("  - {f}");
    }
}
