//! The generate stage (generator worker): one instruction shard from one diagnosis shard, the
//! profile and this shard's quota. Create-only put; redelivery is harmless.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use dftg_core::generate::{generate_shard, GenerationPlan, ShardQuota};
use dftg_core::llava::LlavaRecord;
use dftg_core::profile::Profile;
use dftg_core::record::DiagnosisRecord;
use dftg_runtime::PutOutcome;

use crate::diagnose::{read_jsonl, JobContext};
use crate::error::{to_json, PipelineError};
use crate::layout;

/// `generation-plan.json`: the global plan and each shard's part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredGenerationPlan {
    pub schema_version: u32,
    pub plan: GenerationPlan,
    pub shards: Vec<ShardQuota>,
}

pub async fn read_json<T: serde::de::DeserializeOwned>(store: &dyn dftg_runtime::BlobStore, key: &str) -> Result<T, PipelineError> {
    let bytes = store.get(key).await?.ok_or_else(|| PipelineError::CorruptObject { key: key.into(), reason: "missing".into() })?;
    serde_json::from_slice(&bytes).map_err(|e| PipelineError::CorruptObject { key: key.into(), reason: e.to_string() })
}

/// What every generate shard of a job reads: the profile and the generation plan.
pub struct GenerationInputs {
    pub profile: Profile,
    pub plan: StoredGenerationPlan,
}

pub struct GenerateOutcome {
    pub instructions: u64,
    pub already_done: bool,
}

pub async fn run_generate_shard(ctx: &JobContext, shard: u32) -> Result<GenerateOutcome, PipelineError> {
    let out_key = layout::instruction_shard(shard);
    if let Some(existing) = ctx.info.store.get(&out_key).await? {
        let records: Vec<LlavaRecord> =
            serde_json::from_slice(&existing).map_err(|e| PipelineError::CorruptObject { key: out_key.clone(), reason: e.to_string() })?;
        return Ok(GenerateOutcome { instructions: records.len() as u64, already_done: true });
    }
    let store = ctx.info.store.as_ref();
    let diagnoses_key = layout::diagnosis_shard(shard);
    let (inputs, diagnoses) = futures::try_join!(
        ctx.generation_inputs.get_or_try_init(|| async {
            let (profile, plan) = futures::try_join!(
                read_json::<Profile>(store, layout::PROFILE),
                read_json::<StoredGenerationPlan>(store, layout::GENERATION_PLAN)
            )?;
            Ok::<_, PipelineError>(Arc::new(GenerationInputs { profile, plan }))
        }),
        read_jsonl::<DiagnosisRecord>(store, &diagnoses_key),
    )?;
    let quota = inputs.plan.shards.get(shard as usize).cloned().ok_or_else(|| PipelineError::CorruptObject {
        key: layout::GENERATION_PLAN.into(),
        reason: format!("no quota for shard {shard}"),
    })?;
    let records = generate_shard(&ctx.extractor, &inputs.profile, &diagnoses, &quota, ctx.info.spec.seed);
    let bytes = to_json(&out_key, &records, true)?;
    let outcome = ctx.info.store.put_create(&out_key, bytes).await?;
    if outcome == PutOutcome::Created {
        for r in &records {
            crate::metrics::metrics().instructions_generated.with_label_values(&[r.meta.kind.as_str()]).inc();
        }
    }
    Ok(GenerateOutcome { instructions: records.len() as u64, already_done: outcome == PutOutcome::AlreadyExists })
}
