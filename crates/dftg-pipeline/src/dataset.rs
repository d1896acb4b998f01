//! The end of a job: `dataset.json` (what was generated, by type and concept, and what failed)
//! and the training-ready files (`train`).

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use dftg_core::generate::GenerationPlan;
use dftg_core::llava::LlavaRecord;
use dftg_core::profile::Summary;
use dftg_core::tokens::{TokensByRole, ROLE_SUBJECT};

use crate::barrier::READS_IN_FLIGHT;
use crate::error::{to_json, PipelineError};
use crate::job_state::JobInfo;
use crate::layout;
use crate::train::{TrainFiles, TrainWriter};

/// `dataset.json`: what was generated, by type and concept, and what failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetManifest {
    pub schema_version: u32,
    pub job_id: String,
    pub model: String,
    pub prompts: Vec<String>,
    pub images: u64,
    pub diagnosed_images: u64,
    pub failed_images: u64,
    pub errors_by_reason: BTreeMap<String, u64>,
    /// Tokens the job's models used, by role (`subject`: the model under diagnosis), as their
    /// servers reported them; 0 when a server reports no usage.
    #[serde(default)]
    pub tokens: TokensByRole,
    pub instructions: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_concept: BTreeMap<String, u64>,
    pub by_type_and_concept: BTreeMap<String, BTreeMap<String, u64>>,
    pub shards: Vec<DatasetShard>,
    /// The training-ready files (`train/`); absent in manifests written before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainFiles>,
    pub plan: GenerationPlan,
    /// Shards whose task was given up, with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_shards: BTreeMap<String, String>,
    /// Who wrote the items, and what the gate refused.
    #[serde(default)]
    pub writer: WriterSummary,
    /// How much of the corpus was diagnosed, and why it stopped; absent in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<DiagnosisSummary>,
}

/// `dataset.json`'s `diagnosis` block: adaptive diagnosis's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiagnosisSummary {
    /// Images in the shards dispatched to the diagnose stage.
    pub images_diagnosed: u64,
    pub images_total: u64,
    /// True when the stopping rule ended the diagnosis before every image was asked about.
    pub stopped_early: bool,
    pub reason: String,
    /// The family confidence at which the top-k set was separated at the last look (0 when
    /// not separated; absent without `stop_when`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Calls to the model under diagnosis not made: undiagnosed images × prompts.
    pub model_calls_saved: u64,
    /// The top-k set at the last look (with `stop_when`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<String>,
    /// Waves dispatched of those planned (with `stop_when`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waves_dispatched: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waves_planned: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// `dataset.json`'s `writer` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriterSummary {
    /// `template`, `sim` or `openai`.
    pub kind: String,
    pub accepted: u64,
    pub rejected: BTreeMap<String, u64>,
    pub rewrites: u64,
    pub fallbacks: u64,
    pub dropped: u64,
    /// Where every refused reply is listed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rejections: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetShard {
    pub diagnoses: String,
    pub instructions: String,
    pub records: u64,
}

pub async fn write_dataset(
    ctx: &JobInfo,
    shards: u32,
    plan: &GenerationPlan,
    total: &Summary,
    failed_shards: BTreeMap<String, String>,
    diagnosis: DiagnosisSummary,
) -> Result<DatasetManifest, PipelineError> {
    let mut m = DatasetManifest {
        schema_version: 1,
        job_id: ctx.job_id.clone(),
        model: ctx.spec.model_name(),
        prompts: ctx.spec.prompts.clone(),
        images: 0,
        diagnosed_images: total.images,
        failed_images: total.failed_images,
        errors_by_reason: total.errors_by_reason.clone(),
        tokens: TokensByRole::from([(ROLE_SUBJECT.to_string(), total.tokens)]),
        instructions: 0,
        by_type: BTreeMap::new(),
        by_concept: BTreeMap::new(),
        by_type_and_concept: BTreeMap::new(),
        shards: Vec::new(),
        train: None,
        plan: plan.clone(),
        failed_shards,
        writer: WriterSummary { kind: ctx.spec.generation.writer.kind.as_str().to_string(), ..WriterSummary::default() },
        diagnosis: Some(diagnosis),
    };
    let mut writer = crate::generate::WriterStats::default();
    let mut rejections: Vec<u8> = Vec::new();
    let store = ctx.store.as_ref();
    let mut train = TrainWriter::new();
    let mut reads = futures::stream::iter(0..shards)
        .map(|shard| async move {
            let key = layout::instruction_shard(shard);
            let records: Vec<LlavaRecord> = match store.get(&key).await? {
                Some(b) => {
                    serde_json::from_slice(&b).map_err(|e| PipelineError::CorruptObject { key: key.clone(), reason: e.to_string() })?
                }
                None => Vec::new(),
            };
            let stats_key = layout::writer_stats_shard(shard);
            let stats: crate::generate::WriterStats = match store.get(&stats_key).await? {
                Some(b) => {
                    serde_json::from_slice(&b).map_err(|e| PipelineError::CorruptObject { key: stats_key, reason: e.to_string() })?
                }
                None => crate::generate::WriterStats::default(),
            };
            let refused = store.get(&layout::writer_rejections_shard(shard)).await?;
            Ok::<_, PipelineError>((shard, key, records, stats, refused))
        })
        .buffered(READS_IN_FLIGHT);
    while let Some(read) = reads.next().await {
        let (shard, key, records, stats, refused) = read?;
        writer.merge(&stats);
        if let Some(lines) = refused {
            rejections.extend_from_slice(&lines);
        }
        for r in &records {
            let t = r.meta.kind.as_str().to_string();
            let c = r.meta.concept.clone().unwrap_or_else(|| "-".to_string());
            *m.by_type.entry(t.clone()).or_default() += 1;
            *m.by_concept.entry(c.clone()).or_default() += 1;
            *m.by_type_and_concept.entry(t).or_default().entry(c).or_default() += 1;
            train.push(r)?;
        }
        m.instructions += records.len() as u64;
        m.shards.push(DatasetShard { diagnoses: layout::diagnosis_shard(shard), instructions: key, records: records.len() as u64 });
    }
    // distinct images: diagnoses count one record per prompt
    let prompts = ctx.spec.prompts.len().max(1) as u64;
    m.images = (total.images + total.failed_images) / prompts;
    m.writer.accepted = writer.accepted;
    m.writer.rejected = writer.rejected;
    m.writer.rewrites = writer.rewrites;
    m.writer.fallbacks = writer.fallbacks;
    m.writer.dropped = writer.dropped;
    if !writer.tokens.is_zero() {
        dftg_core::tokens::add_to_role(&mut m.tokens, dftg_core::tokens::ROLE_WRITER, writer.tokens);
    }
    if ctx.spec.generation.writer.kind != dftg_core::writer::WriterKind::Template {
        // rewritten whole on a re-run of the finish: the shards' files are the record
        ctx.store.put(layout::WRITER_REJECTIONS, bytes::Bytes::from(rejections)).await?;
        m.writer.rejections = layout::WRITER_REJECTIONS.to_string();
    }
    // before the manifest that names them
    m.train = Some(train.write(store, &ctx.spec.corpus.path).await?);
    ctx.store.put(layout::DATASET, to_json(layout::DATASET, &m, true)?).await?;
    Ok(m)
}
