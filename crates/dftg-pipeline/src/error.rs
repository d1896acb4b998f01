//! Pipeline errors, each saying whether to retry, requeue or give up, and the bound on any
//! error text that leaves the process (status, logs, metrics, queue headers).

use thiserror::Error;

/// The most bytes of error text that reach a status document, a log line or a queue header.
pub const MAX_ERROR_TEXT: usize = 1024;

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
    /// One of our own documents could not be encoded: a bug, never written half-done.
    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },
    #[error("model setup failed: {0}")]
    Model(String),
    #[error("job cancelled")]
    Cancelled,
    /// The coordinator holds as many running jobs as it may.
    #[error("too many jobs: {0}")]
    Busy(String),
    /// The job ran but cannot finish (too many failed images, nothing to diagnose).
    #[error("job failed: {0}")]
    Failed(String),
}

impl PipelineError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        PipelineError::Invalid { field: bounded(&field.into(), 128), reason: bounded(&reason.into(), MAX_ERROR_TEXT) }
    }

    /// Worth retrying the same task later.
    pub fn retryable(&self) -> bool {
        match self {
            PipelineError::Store(e) => e.retryable(),
            PipelineError::Queue(e) => e.retryable(),
            _ => false,
        }
    }

    /// The message, bounded, for anything that leaves the process.
    pub fn report(&self) -> String {
        bounded(&self.to_string(), MAX_ERROR_TEXT)
    }
}

/// At most `max` bytes of `text` (cut at a character boundary, marked when cut), with control
/// characters replaced by spaces so one message stays one log line.
pub fn bounded(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 16));
    for c in text.chars() {
        if out.len() + c.len_utf8() > max {
            out.push_str(" …(cut)");
            return out;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// Our own document as JSON bytes; a failure is an error, never an empty object.
pub fn to_json<T: serde::Serialize>(what: &str, value: &T, pretty: bool) -> Result<bytes::Bytes, PipelineError> {
    let r = if pretty { serde_json::to_vec_pretty(value) } else { serde_json::to_vec(value) };
    r.map(bytes::Bytes::from).map_err(|e| PipelineError::Encode { what: what.to_string(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_at_a_char_boundary_and_flattens_lines() {
        assert_eq!(bounded("a\nb", 10), "a b");
        let long = "é".repeat(1000);
        let cut = bounded(&long, 101);
        assert!(cut.len() <= 101 + " …(cut)".len(), "{}", cut.len());
        assert!(cut.ends_with("(cut)"));
        let e = PipelineError::invalid("x", "y".repeat(100_000));
        assert!(e.report().len() <= MAX_ERROR_TEXT + 16);
    }
}
