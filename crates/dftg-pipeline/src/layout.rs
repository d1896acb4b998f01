//! Object keys under a job prefix (`<out>/<job-id>/`). Every output has a deterministic key:
//! a finished object is the commit record of its work.

pub const JOB: &str = "job.json";
pub const PROFILE: &str = "profile.json";
pub const GENERATION_PLAN: &str = "generation-plan.json";
pub const DATASET: &str = "dataset.json";
pub const REPORT: &str = "report.html";
pub const SIM_TRUTH: &str = "sim-truth.jsonl";
/// Every reply the gate refused, merged from the shards at the end of the job.
pub const WRITER_REJECTIONS: &str = "writer/rejections.jsonl";
pub const WRITER_REJECTIONS_PREFIX: &str = "writer/rejections/";
pub const WRITER_STATS_PREFIX: &str = "writer/stats/";
/// Training-ready files (`train.rs`), written when the job finishes.
pub const TRAIN_LLAVA: &str = "train/llava.json";
pub const TRAIN_SHAREGPT: &str = "train/sharegpt.json";
pub const TRAIN_DATASET_INFO: &str = "train/dataset_info.json";

pub fn plan_shard(shard: u32) -> String {
    format!("plan/shard-{shard:05}.jsonl")
}

pub fn diagnosis_shard(shard: u32) -> String {
    format!("diagnoses/shard-{shard:05}.jsonl")
}

/// The mergeable summary of a diagnosis shard (derived from it; rewritten if missing).
pub fn summary_shard(shard: u32) -> String {
    format!("summaries/shard-{shard:05}.json")
}

pub fn instruction_shard(shard: u32) -> String {
    format!("instructions/shard-{shard:05}.json")
}

/// One generate shard's refused replies (`{"request_id", "item", "reason"}` a line).
pub fn writer_rejections_shard(shard: u32) -> String {
    format!("{WRITER_REJECTIONS_PREFIX}shard-{shard:05}.jsonl")
}

/// One generate shard's writer counts and tokens.
pub fn writer_stats_shard(shard: u32) -> String {
    format!("{WRITER_STATS_PREFIX}shard-{shard:05}.json")
}
