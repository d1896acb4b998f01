//! dftg-pipeline: the stages of DFTG as workers, and the embedded runner.
//!
//! Layout, one file per stage:
//! - `job`         — the job spec (TOML/JSON, versioned, validated naming the bad field)
//! - `corpus`      — ground truth and image bytes from a corpus store; per-image errors
//! - `plan`        — planning: ground truth streamed into plan shards (flat memory)
//! - `coco_parts`  — planning a COCO file too large to hold: split by image into parts
//! - `layout`      — object keys under `<out>/<job-id>/`
//! - `messages`    — versioned queue messages (shard tasks and events)
//! - `diagnose`    — stage 1 worker: ask, extract, check → diagnosis shard + summary
//! - `coordinator` — barrier (profile + generation plan), dataset manifest, job state
//! - `generate`    — stage 2 worker: items written, gated, re-asked or written by the
//!   templates → instruction shard in LLaVA format, writer stats and rejections
//! - `writer`      — the writer: prompts as templates (`configs/writer/`), the LLM writer
//!   (OpenAI-compatible, JSON schema output), an in-memory scripted writer
//! - `report`      — the self-contained `report.html`
//! - `train`       — training-ready files: LLaVA, ShareGPT (`messages`), LLaMA-Factory's `dataset_info.json`
//! - `policy`      — what a job may touch: allowed stores, endpoints, vocabularies
//! - `worker`      — the queue loop shared by both shapes (ack after write, requeue, DLQ)
//! - `runner`      — the embedded shape: in-process queue, local store, one process
//! - `verify`      — stage 1 step 3 with models: detector verdicts, judge on the uncertain band
//! - `synth`       — the synthetic example corpus (scenes with co-occurrence, PNG images)

pub mod coco_parts;
pub mod coordinator;
pub mod corpus;
pub mod diagnose;
pub mod driver;
pub mod error;
pub mod generate;
pub mod http;
pub mod job;
pub mod layout;
pub mod messages;
pub mod metrics;
pub mod model_setup;
pub mod plan;
pub mod policy;
pub mod report;
pub mod runner;
pub mod service;
pub mod synth;
pub mod train;
pub mod verify;
pub mod worker;
pub mod writer;

pub use error::PipelineError;
