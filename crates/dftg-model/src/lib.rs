//! dftg-model: how dftg reaches the model under diagnosis, and the model simulator.
//!
//! Layout:
//! - `api`    — OpenAI chat-completions wire types (shared by client and simulator)
//! - `client` — the `ModelClient` trait, the HTTP client for any OpenAI-compatible server
//!              (bounded in-flight, timeouts, retries with backoff and jitter), and an
//!              in-memory implementation for unit tests
//! - `sim`    — the simulator: an OpenAI-compatible server that knows the corpus ground truth
//!              and hallucinates from a named profile (see `configs/sim/`)

pub mod api;
pub mod client;
pub mod sim;
