//! A job's state, the same in both shapes: `job.json` (the spec as accepted, the phase, the
//! shard count) in the job's store, so a restarted coordinator resumes where it was.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use dftg_runtime::BlobStore;

use crate::error::{to_json, PipelineError};
use crate::job::JobSpec;
use crate::layout;

/// What the coordinator knows of a job (no model, no extractor).
pub struct JobInfo {
    pub job_id: String,
    pub spec: JobSpec,
    /// The job's output prefix `<out>/<job-id>/`.
    pub store: Arc<dyn BlobStore>,
    pub corpus: Arc<dyn BlobStore>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Planning,
    Diagnosing,
    Profiling,
    Generating,
    Finishing,
    Done,
    Failed,
    Cancelled,
}

/// `job.json`: the spec as accepted and the job's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub schema_version: u32,
    pub job_id: String,
    pub spec: JobSpec,
    pub phase: Phase,
    pub shards: u32,
    pub images: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the job reached a final phase (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
}

impl JobState {
    /// A job about to be planned.
    pub fn new(job_id: &str, spec: &JobSpec) -> Self {
        JobState {
            schema_version: 1,
            job_id: job_id.to_string(),
            spec: spec.clone(),
            phase: Phase::Planning,
            shards: 0,
            images: 0,
            error: None,
            finished_at: None,
        }
    }
}

pub async fn write_state(store: &dyn BlobStore, state: &JobState) -> Result<(), PipelineError> {
    store.put(layout::JOB, to_json(layout::JOB, state, true)?).await?;
    Ok(())
}

pub async fn read_state(store: &dyn BlobStore) -> Result<Option<JobState>, PipelineError> {
    match store.get(layout::JOB).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| PipelineError::CorruptObject { key: layout::JOB.into(), reason: e.to_string() }),
    }
}
