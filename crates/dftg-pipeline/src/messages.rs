//! Queue messages: small, versioned, references only (never image bytes).

use serde::{Deserialize, Serialize};

pub const MESSAGE_SCHEMA_VERSION: u32 = 1;

pub const DIAGNOSE_QUEUE: &str = "dftg.diagnose";
pub const GENERATE_QUEUE: &str = "dftg.generate";
pub const EVENTS_QUEUE: &str = "dftg.events";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Diagnose,
    Generate,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Diagnose => "diagnose",
            Stage::Generate => "generate",
        }
    }
}

/// "Process shard N of job J at stage S." Everything else is read from the job's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTask {
    pub schema_version: u32,
    pub job_id: String,
    pub stage: Stage,
    pub shard: u32,
}

/// A worker finished (or gave up on) a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEvent {
    pub schema_version: u32,
    pub job_id: String,
    pub stage: Stage,
    pub shard: u32,
    /// Images (diagnose) or instructions (generate) written.
    pub items: u64,
    /// Images that failed with a per-image error.
    pub failed: u64,
    /// True when the output already existed (redelivery): nothing was redone.
    pub already_done: bool,
    /// Set when the task was given up (dead-lettered): the shard has no output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
