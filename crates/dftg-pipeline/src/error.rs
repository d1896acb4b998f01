//! Pipeline errors, each saying whether to retry, requeue or give up.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PipelineError {
    /// The job spec or an input file is wrong: refuse, do not retry.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Storage failed: the task is requeued.
    #[error(transparent)]
    Store(#[from] dftg_runtime::StoreError),
    #[error(transparent)]
    Queue(#[from] dftg_runtime::QueueError),
    /// A stored object is not what this version can read: dead-letter.
    #[error("corrupt object {key}: {reason}")]
    CorruptObject { key: String, reason: String },
    #[error("model setup failed: {0}")]
    Model(String),
    #[error("job cancelled")]
    Cancelled,
}

impl PipelineError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        PipelineError::Invalid { field: field.into(), reason: reason.into() }
    }

    /// Worth retrying the same task later.
    pub fn retryable(&self) -> bool {
        match self {
            PipelineError::Store(e) => e.retryable(),
            PipelineError::Queue(e) => e.retryable(),
            _ => false,
        }
    }
}
