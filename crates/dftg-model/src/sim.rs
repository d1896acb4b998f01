//! The model simulator: an OpenAI-compatible server that stands in for the model under
//! diagnosis in every test and in the embedded default `dftg run`.
//!
//! - It **knows the corpus** ([`SimCorpus`]): each image's ground truth, recognised by the
//!   sha256 of the bytes in the request's `data:` URL. Unknown content is a 400.
//! - It **describes** an image in varied natural language from templates over the
//!   vocabulary's surface forms, with counts, attributes and negations of absent concepts,
//!   and **injects hallucinations** from a named [`SimProfile`] (`configs/sim/*.toml`):
//!   objects (absent concepts made tempting by the corpus's co-occurrence statistics, times the
//!   profile's affinity), wrong counts and wrong attribute values.
//! - It answers **yes/no existence questions** consistently with the same decisions; an
//!   over-corrected profile (`denial_rate`) also denies present objects.
//! - Every choice is seeded from (seed, profile name, image key, prompt), never from order
//!   or time: the same image and prompt always get the identical reply.
//! - It writes a **truth log** of what it injected (one line per (image, prompt)).
//! - **Replay mode** serves recorded real captions by image key instead.
//! - **Knobs**: latency, and per-request faults (5xx, hangs, malformed bodies), plus images
//!   that always fail.
//! - It also plays the **detector and the judge** ([`SimVision`]): the Hugging Face and
//!   Roboflow detector contracts and an OpenAI-compatible judge, answering from the same truth
//!   with configurable misses, false boxes and wrong answers, logged to the same truth log.
//! - It plays the **writer** too ([`SimWriter`]): requests with a facts block (or a
//!   `dftg_writer_*` response schema) get the JSON reply of `dftg_core::writer`, true to the
//!   facts, with one seeded mistake at `error_rate`, logged to `sim-writer-truth.jsonl`.
//!
//! Routes: `POST /v1/chat/completions`, `GET /v1/models`, `GET /healthz`; the detector's
//! `POST /hf/detect`, `POST /grounding_dino/infer`, `POST /yolo_world/infer`; the judge's
//! `POST /judge/v1/chat/completions`, `GET /judge/v1/models` (see `vision_server`).
//!
//! Notes for callers:
//! - The prompt is the text of the last user message; the image is its first `image_url` part
//!   (a base64 `data:` URL). Any model name is accepted; `max_tokens` and `temperature` are
//!   ignored (replies are never truncated).
//! - A yes/no existence question is a prompt that starts with an auxiliary ("Is", "Are",
//!   "Does", …), contains "?", and asks no open question ("describe", "what", …). Its truth-log
//!   line has `"task": "yes_no"`; descriptions have `"task": "describe"`.
//! - In replay mode every prompt about an image gets its recorded caption, and nothing is
//!   written to the truth log (nothing was injected).
//! - Per-request faults are drawn from a counter seeded by `SimConfig::seed`, so a retry can
//!   succeed; sticky images (by key) fail every time.

mod corpus;
mod engine;
mod profile;
mod server;
mod text;
mod vision;
mod vision_server;
mod writer;
mod yes_no;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use thiserror::Error;

pub use corpus::{image_digest, load_corpus_dir, ImageDigest, SimCorpus, SimCorpusBuilder};
pub use dftg_core::seed::{fnv1a64, splitmix64, StableHasher};
pub use engine::{InjectedHallucination, ObjectHallucination, SimReply, SimTask, Simulator, TruthLogEntry};
pub use profile::{bundled_profile_names, profile_by_name, SimProfile, BUNDLED_PROFILES, DEFAULT_PROFILE};
pub use server::{start, start_on, vision_log_path, Faults, Latency, ReplayCaptions, SimConfig, SimHandle, SimStats};
pub use vision::{
    image_size, BoxKind, DetectorLabelLog, DetectorLogEntry, InstanceLog, JudgeDecision, JudgeLogEntry, JudgeTruth, SimBox, SimVision,
    SimVisionConfig, SizeClass, CROWD, DEFAULT_IMAGE_SIZE, MAX_INSTANCES,
};
pub use vision_server::{VisionService, VisionStats, HF_DETECT_PATH, JUDGE_BASE_PATH, JUDGE_MODEL, MAX_LABELS};
pub use writer::{
    writer_log_path, SimWriter, SimWriterConfig, WriterLogEntry, WriterMistake, WriterReply, MAX_REQUEST_ID_CHARS, WRITER_LOG_FILE,
};

/// Everything that can go wrong setting up or running the simulator.
#[derive(Debug, Error)]
pub enum SimError {
    #[error("unknown simulator profile {name:?} (bundled profiles: {available})")]
    UnknownProfile { name: String, available: String },
    #[error("invalid simulator profile {origin}: {reason}")]
    InvalidProfile { origin: String, reason: String },
    #[error("invalid simulator corpus: {what} {reason}")]
    Corpus { what: String, reason: String },
    #[error("invalid simulator config {field}: {reason}")]
    Config { field: String, reason: String },
    #[error("invalid replay captions {origin} line {line}: {reason}")]
    Replay { origin: String, line: usize, reason: String },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("simulator server failed: {0}")]
    Serve(#[source] std::io::Error),
}
