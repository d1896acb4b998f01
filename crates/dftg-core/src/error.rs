//! Errors of the pure domain code: always about an input that was wrong.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoreError {
    /// An input (file, field, line) is not what it must be. Not retryable.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl CoreError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CoreError::Invalid { field: field.into(), reason: reason.into() }
    }
}
