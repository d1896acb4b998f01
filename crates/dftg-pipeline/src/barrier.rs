//! The barrier between the stages: the diagnosis summaries of every shard folded into the
//! model's profile and the generation plan, with the budget split across shards.

use std::collections::BTreeSet;

use futures::StreamExt;

use dftg_core::generate::{allocate_to_shards, plan_generation, GenerationPlan, GENERATION_SCHEMA_VERSION};
use dftg_core::profile::{Profile, Summary};
use dftg_runtime::BlobStore;

use crate::error::{to_json, PipelineError};
use crate::generate::{read_json, StoredGenerationPlan};
use crate::job_state::JobInfo;
use crate::layout;

/// Shard objects read at once by the coordinator (each is one store round trip).
pub(crate) const READS_IN_FLIGHT: usize = 16;

/// Folds the shard summaries into one (read concurrently, folded in shard order). Shards in
/// `skip` (given up: no output) count as empty.
pub async fn merged_summaries(store: &dyn BlobStore, shards: u32, skip: &BTreeSet<u32>) -> Result<(Summary, Vec<Summary>), PipelineError> {
    let mut total = Summary::default();
    let mut each = Vec::with_capacity(shards as usize);
    let mut reads = futures::stream::iter(0..shards)
        .map(|shard| async move {
            if skip.contains(&shard) {
                return Ok(Summary::default());
            }
            read_json::<Summary>(store, &layout::summary_shard(shard)).await
        })
        .buffered(READS_IN_FLIGHT);
    while let Some(s) = reads.next().await {
        let s = s?;
        total.merge(&s);
        each.push(s);
    }
    Ok((total, each))
}

/// The barrier: profile and generation plan from the diagnosis summaries. Also returns the
/// merged summary, which the dataset manifest reuses.
pub async fn build_profile_and_plan(
    ctx: &JobInfo,
    shards: u32,
    given_up: &BTreeSet<u32>,
) -> Result<(Profile, GenerationPlan, Summary), PipelineError> {
    let (total, each) = merged_summaries(ctx.store.as_ref(), shards, given_up).await?;
    let profile = Profile::build(&ctx.spec.model_name(), &total);
    ctx.store.put(layout::PROFILE, to_json(layout::PROFILE, &profile, true)?).await?;
    let plan = plan_generation(&profile, &total, &ctx.spec.generation);
    let stored =
        StoredGenerationPlan { schema_version: GENERATION_SCHEMA_VERSION, plan: plan.clone(), shards: allocate_to_shards(&plan, &each) };
    ctx.store.put(layout::GENERATION_PLAN, to_json(layout::GENERATION_PLAN, &stored, true)?).await?;
    Ok((profile, plan, total))
}
