//! Why a model request failed, with a reason code that is counted per job.

use std::time::Duration;

/// The failure classes; each maps to one `reason()` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelErrorKind {
    /// Connection refused, DNS failure, connection lost: `model_unreachable`.
    Unreachable,
    /// No complete answer within the request timeout (or HTTP 408): `model_timeout`.
    Timeout,
    /// HTTP 5xx: `model_http_5xx`.
    Http5xx,
    /// HTTP 429: `model_rate_limited`.
    RateLimited,
    /// Any other non-success status (e.g. 400 for an image the server refuses): `model_rejected`.
    Rejected,
    /// 2xx but not a chat completion (not JSON, no choices): `model_malformed_response`.
    MalformedResponse,
    /// A completion whose content is empty, whitespace or null: `model_empty_response`.
    EmptyResponse,
    /// A reply longer than the client's reply limit (or a body too large to hold one):
    /// `reply_too_long`. Not a caption; refused whole rather than truncated, so no record is
    /// built from a cut-off text.
    ReplyTooLong,
}

impl ModelErrorKind {
    pub const ALL: [ModelErrorKind; 8] = [
        ModelErrorKind::Unreachable,
        ModelErrorKind::Timeout,
        ModelErrorKind::Http5xx,
        ModelErrorKind::RateLimited,
        ModelErrorKind::Rejected,
        ModelErrorKind::MalformedResponse,
        ModelErrorKind::EmptyResponse,
        ModelErrorKind::ReplyTooLong,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            ModelErrorKind::Unreachable => "model_unreachable",
            ModelErrorKind::Timeout => "model_timeout",
            ModelErrorKind::Http5xx => "model_http_5xx",
            ModelErrorKind::RateLimited => "model_rate_limited",
            ModelErrorKind::Rejected => "model_rejected",
            ModelErrorKind::MalformedResponse => "model_malformed_response",
            ModelErrorKind::EmptyResponse => "model_empty_response",
            ModelErrorKind::ReplyTooLong => "reply_too_long",
        }
    }

    /// Transient failures are retried. A rejection would be rejected again; an empty answer is
    /// usually a deterministic refusal, and a runaway reply would run away again, so asking
    /// again mostly wastes model time.
    pub fn retryable(self) -> bool {
        match self {
            ModelErrorKind::Unreachable
            | ModelErrorKind::Timeout
            | ModelErrorKind::Http5xx
            | ModelErrorKind::RateLimited
            | ModelErrorKind::MalformedResponse => true,
            ModelErrorKind::Rejected | ModelErrorKind::EmptyResponse | ModelErrorKind::ReplyTooLong => false,
        }
    }
}

/// A failed model request. The message is lowercase and names what failed (endpoint URL,
/// status, for error statuses a short printable-ascii excerpt of the body); it never contains
/// the API key or the text of a reply.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (attempts: {attempts})")]
pub struct ModelError {
    kind: ModelErrorKind,
    message: String,
    status: Option<u16>,
    retry_after: Option<Duration>,
    attempts: u32,
}

impl ModelError {
    /// A failure after one attempt; `with_attempts` corrects the count after retries.
    pub fn new(kind: ModelErrorKind, message: impl Into<String>) -> Self {
        ModelError { kind, message: bounded(message.into()), status: None, retry_after: None, attempts: 1 }
    }

    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(ModelErrorKind::Unreachable, message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ModelErrorKind::Timeout, message)
    }
    pub fn http_5xx(status: u16, message: impl Into<String>) -> Self {
        Self::new(ModelErrorKind::Http5xx, message).with_status(status)
    }
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ModelErrorKind::RateLimited, message).with_status(429)
    }
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::new(ModelErrorKind::Rejected, message)
    }
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(ModelErrorKind::MalformedResponse, message)
    }
    pub fn empty(message: impl Into<String>) -> Self {
        Self::new(ModelErrorKind::EmptyResponse, message)
    }
    pub fn reply_too_long(message: impl Into<String>) -> Self {
        Self::new(ModelErrorKind::ReplyTooLong, message)
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
    /// Appends why the client stopped here (e.g. the retry budget), keeping the cap.
    pub(crate) fn with_note(mut self, note: &str) -> Self {
        self.message = bounded(format!("{}; {note}", self.message));
        self
    }
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    pub fn kind(&self) -> ModelErrorKind {
        self.kind
    }
    /// Short snake_case code, counted in the job's output.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }
    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }
    /// Attempts made before giving up (at least 1).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
    /// HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }
    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
    /// The message without the attempt count.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Messages are capped: they end up in records, logs and job status, and parts of them (error
/// bodies, transport causes) come from the endpoint.
pub const MAX_MESSAGE_BYTES: usize = 512;

fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_capped_at_a_char_boundary() {
        let e = ModelError::malformed("é".repeat(MAX_MESSAGE_BYTES));
        assert!(e.message().len() <= MAX_MESSAGE_BYTES + '…'.len_utf8(), "{}", e.message().len());
        assert!(e.message().ends_with('…'));
        assert_eq!(ModelError::timeout("short").message(), "short");
    }
}
