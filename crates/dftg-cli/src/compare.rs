//! `dftg compare A/profile.json B/profile.json`

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use dftg_core::compare::compare;
use dftg_core::profile::Profile;

#[derive(Args)]
pub struct CompareArgs {
    pub a: std::path::PathBuf,
    pub b: std::path::PathBuf,
    /// Size of the top-k lists.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn load(path: &std::path::Path) -> anyhow::Result<Profile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read profile {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a dftg profile.json", path.display()))
}

pub fn main(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let (a, b) = (load(&args.a)?, load(&args.b)?);
    let c = compare(&a, &b, args.top);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("A: {} ({} images, CHAIR_s {:.3}, CHAIR_i {:.3})", a.model, a.images, a.chair_s, a.chair_i);
    println!("B: {} ({} images, CHAIR_s {:.3}, CHAIR_i {:.3})", b.model, b.images, b.chair_s, b.chair_i);
    println!("Jensen-Shannon divergence of hallucination distributions: {:.4} (0 = same, 1 = disjoint)", c.jensen_shannon);
    println!("top-{} overlap: {:.2}", c.top_k, c.top_k_overlap);
    println!("top A: {}", c.top_a.join(", "));
    println!("top B: {}", c.top_b.join(", "));
    println!("{:<16} {:>8} {:>8} {:>8} {:>8}", "concept", "share A", "share B", "rate A", "rate B");
    for d in &c.most_different {
        println!("{:<16} {:>8.3} {:>8.3} {:>8.3} {:>8.3}", d.concept, d.share_a, d.share_b, d.rate_a, d.rate_b);
    }
    Ok(ExitCode::SUCCESS)
}
