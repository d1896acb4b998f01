//! The model under diagnosis, as the pipeline sees it.
//!
//! - [`ModelClient`] — the object-safe trait the pipeline holds as `Arc<dyn ModelClient>`
//! - [`OpenAiClient`] — any OpenAI-compatible server (vLLM, Ollama `/v1`, SGLang, llama.cpp):
//!   bounded in-flight requests, timeouts, retries with capped exponential backoff and full
//!   jitter, `Retry-After`, at most [`MAX_ATTEMPTS`] attempts within a time budget per
//!   request, replies of at most [`DEFAULT_MAX_REPLY_BYTES`] (configurable) read without
//!   holding more than a small multiple of that
//! - [`ScriptedClient`] — in-memory replies for unit tests of the pipeline, no I/O (feature `testing`)
//! - [`ModelError`] — every failure carries a short `reason()` code that is counted per job

pub(crate) mod call;
mod error;
pub(crate) mod openai;
mod retry;
#[cfg(any(test, feature = "testing"))]
mod scripted;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use error::MAX_MESSAGE_BYTES;
pub use error::{ModelError, ModelErrorKind};
pub use openai::{api_key_from, ClientConfigError, OpenAiClient, OpenAiConfig, DEFAULT_BUDGET_TIMEOUTS, DEFAULT_MAX_REPLY_BYTES};
pub use retry::{RetryPolicy, MAX_ATTEMPTS};
#[cfg(any(test, feature = "testing"))]
pub use scripted::{image_hash, ScriptedClient};

/// What the pipeline asks of the model under diagnosis. Object-safe (the pipeline holds
/// `Arc<dyn ModelClient>`).
pub trait ModelClient: Send + Sync + 'static {
    /// Ask the model about one image. Retries (if any) happen inside.
    fn complete<'a>(&'a self, req: &'a ModelRequest) -> BoxFuture<'a, Result<ModelReply, ModelError>>;
    /// The model name, for records.
    fn name(&self) -> &str;
}

/// Lets generic code take an `Arc<dyn ModelClient>` (or `Arc<OpenAiClient>`) directly.
impl<T: ModelClient + ?Sized> ModelClient for Arc<T> {
    fn complete<'a>(&'a self, req: &'a ModelRequest) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        (**self).complete(req)
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

/// One question about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRequest {
    /// Encoded image bytes, sent inline as a data URL.
    pub image: Bytes,
    /// `image/png`, `image/jpeg`, …
    pub mime: String,
    pub prompt: String,
}

impl ModelRequest {
    pub fn new(image: impl Into<Bytes>, mime: impl Into<String>, prompt: impl Into<String>) -> Self {
        ModelRequest { image: image.into(), mime: mime.into(), prompt: prompt.into() }
    }
}

/// The model's answer. `text` is never empty or whitespace-only (that is an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelReply {
    pub text: String,
    /// Attempts used, 1 when the first one succeeded.
    pub attempts: u32,
    /// Duration of the successful attempt (request sent → body read); excludes queueing for
    /// an in-flight slot and earlier failed attempts, so it measures the model, not the client.
    pub latency: Duration,
    /// Tokens of the successful attempt, when the server reported `usage`.
    pub usage: Option<dftg_core::tokens::TokenUsage>,
}
