//! dftg-model: how dftg reaches the model under diagnosis, and the model simulator.
//!
//! Layout:
//! - `api`    — OpenAI chat-completions wire types (shared by client and simulator)
//! - `client` — the `ModelClient` trait, the HTTP client for any OpenAI-compatible server
//!   (bounded in-flight, timeouts, retries with backoff and jitter), and an
//!   in-memory implementation for unit tests
//! - `detect` — the open-vocabulary detector: the `Detector` trait, the HTTP client for the
//!   Hugging Face and Roboflow (Grounding DINO, YOLO-World) contracts, label snapping
//! - `judge`  — yes/no and one-word attribute questions to a strong VLM, read as POPE reads them
//! - `cache`  — a bounded per-job cache of detector and judge answers
//! - `sim`    — the simulator: an OpenAI-compatible server that knows the corpus ground truth
//!   and hallucinates from a named profile (see `configs/sim/`); it also serves the
//!   detector contracts and a judge from the same truth, with configurable errors

pub mod api;
pub mod cache;
pub mod client;
pub mod detect;
pub mod judge;
pub mod sim;
