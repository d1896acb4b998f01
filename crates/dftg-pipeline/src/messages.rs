//! Queue messages: small, versioned, references only (never image bytes).

use std::collections::BTreeMap;

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
    /// Failed images by reason (diagnose); optional, so older events still decode.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_by_reason: BTreeMap<String, u64>,
}

/// Shard tasks are a few dozen bytes; anything larger is not ours.
pub const MAX_TASK_BYTES: usize = 4096;
/// Shard events carry a bounded error text and a few reason counts.
pub const MAX_EVENT_BYTES: usize = 64 << 10;

/// A message every queue consumer can trust the job id of.
pub trait JobMessage: serde::de::DeserializeOwned {
    /// "task", "event": how reasons name it.
    const KIND: &'static str;
    fn job_id(&self) -> &str;
}

impl JobMessage for ShardTask {
    const KIND: &'static str = "task";
    fn job_id(&self) -> &str {
        &self.job_id
    }
}

impl JobMessage for ShardEvent {
    const KIND: &'static str = "event";
    fn job_id(&self) -> &str {
        &self.job_id
    }
}

/// A message from the queue, or why it is not one: at most `max` bytes, decodable, with a
/// valid job id. The reason is a fixed text: the payload is never quoted.
pub fn decode_message<T: JobMessage>(payload: &[u8], max: usize) -> Result<T, String> {
    let kind = T::KIND;
    if payload.len() > max {
        return Err(format!("the {kind} is {} bytes, more than {max}", payload.len()));
    }
    let msg: T =
        dftg_runtime::codec::decode(payload).map_err(|_| format!("the {kind} is not a dftg shard {kind} (msgpack decode failed)"))?;
    if !crate::job::is_job_id(msg.job_id()) {
        return Err(format!("the {kind} names an invalid job id"));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard event as written before `errors_by_reason` existed.
    #[derive(Serialize)]
    struct EventWithoutReasons {
        schema_version: u32,
        job_id: String,
        stage: Stage,
        shard: u32,
        items: u64,
        failed: u64,
        already_done: bool,
    }

    #[test]
    fn events_round_trip_and_older_events_still_decode() {
        let mut reasons = BTreeMap::new();
        reasons.insert("missing_image".to_string(), 2);
        let ev = ShardEvent {
            schema_version: MESSAGE_SCHEMA_VERSION,
            job_id: "j".into(),
            stage: Stage::Diagnose,
            shard: 3,
            items: 10,
            failed: 2,
            already_done: false,
            error: None,
            errors_by_reason: reasons,
        };
        let back: ShardEvent = dftg_runtime::codec::decode(&dftg_runtime::codec::encode(&ev).unwrap()).unwrap();
        assert_eq!(back, ev);
        let old = EventWithoutReasons {
            schema_version: 1,
            job_id: "j".into(),
            stage: Stage::Generate,
            shard: 1,
            items: 5,
            failed: 0,
            already_done: true,
        };
        let back: ShardEvent = dftg_runtime::codec::decode(&dftg_runtime::codec::encode(&old).unwrap()).unwrap();
        assert!(back.errors_by_reason.is_empty() && back.error.is_none() && back.already_done);
    }
}
