//! dftg-pipeline: the stages of DFTG as workers, and the embedded runner.
//!
//! Layout, one file per job:
//! - `job`         — the job spec (TOML/JSON, versioned, validated naming the bad field)
//! - `choice`      — the spec's choices (model kind, extractor, formats, vocabulary) as enums
//! - `policy`      — what a job may touch: allowed stores, endpoints, vocabularies
//! - `layout`      — object keys under `<out>/<job-id>/`
//! - `messages`    — versioned queue messages (shard tasks and events)
//! - `corpus`      — ground truth and image bytes from a corpus store; per-image errors
//! - `plan`        — planning: ground truth streamed into plan shards (flat memory)
//! - `coco_parts`  — planning a COCO file too large to hold: split by image into parts
//! - `diagnose`    — stage 1 worker: ask, extract, check → diagnosis shard + summary
//! - `verify`      — stage 1 step 3 with models: detector verdicts, judge on the uncertain band
//! - `barrier`     — between the stages: summaries → profile + generation plan
//! - `generate`    — stage 2 worker: items written, gated, re-asked or written by the
//!   templates → instruction shard in LLaVA format, writer stats and rejections
//! - `writer`      — the writer: prompts as templates (`configs/writer/`), the LLM writer
//!   (OpenAI-compatible, JSON schema output), an in-memory scripted writer (feature `testing`)
//! - `dataset`     — the end of a job: `dataset.json` and the training-ready files
//! - `train`       — training-ready files: LLaVA, ShareGPT (`messages`), LLaMA-Factory's `dataset_info.json`
//! - `report`      — the self-contained `report.html`
//! - `job_state`   — `job.json`: the spec as accepted, the phase, the shard count
//! - `job_driver`  — one job's loop, both shapes: plan, publish, follow events, barrier, finish
//! - `worker`      — the queue loop shared by both shapes (ack after write, requeue, DLQ)
//! - `runner`      — the embedded shape: in-process queue, local store, one process
//! - `coordinator` — the distributed coordinator: accepts jobs, routes events, resumes
//! - `job_index`   — where jobs live (`jobs/` index) and the workers' lookup of a job
//! - `http`        — the coordinator's API; `metrics` — Prometheus metrics
//! - `model_setup` — the job's model, detector, judge and writer clients (and simulators)
//! - `synth`       — the synthetic example corpus (scenes with co-occurrence, PNG images)

pub mod barrier;
pub mod choice;
pub mod coco_parts;
pub mod coordinator;
pub mod corpus;
pub mod dataset;
pub mod diagnose;
pub mod error;
pub mod generate;
pub mod http;
pub mod job;
pub mod job_driver;
pub mod job_index;
pub mod job_state;
pub mod layout;
pub mod messages;
pub mod metrics;
pub mod model_setup;
pub mod plan;
pub mod policy;
pub mod report;
pub mod runner;
pub mod synth;
pub mod train;
pub mod verify;
pub mod worker;
pub mod writer;

pub use error::PipelineError;
