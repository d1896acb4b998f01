//! `ScriptedClient`: an in-memory model for unit tests of the pipeline. No I/O.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::{ModelClient, ModelError, ModelReply, ModelRequest};

type Script = dyn Fn(&ModelRequest) -> Result<String, ModelError> + Send + Sync;

/// Lowercase hex SHA-256 of the image bytes: the key of [`ScriptedClient::from_map`].
pub fn image_hash(image: &[u8]) -> String {
    hex::encode(Sha256::digest(image))
}

/// Answers from a closure (or a map image hash → reply). Applies the same rule as the HTTP
/// client: a blank reply is a `model_empty_response` error, never a description.
pub struct ScriptedClient {
    name: String,
    script: Box<Script>,
    calls: AtomicU64,
}

impl ScriptedClient {
    pub fn new(name: impl Into<String>, script: impl Fn(&ModelRequest) -> Result<String, ModelError> + Send + Sync + 'static) -> Self {
        ScriptedClient { name: name.into(), script: Box::new(script), calls: AtomicU64::new(0) }
    }

    /// Replies keyed by [`image_hash`]; an unknown image is `model_rejected`.
    pub fn from_map(name: impl Into<String>, replies: impl IntoIterator<Item = (String, String)>) -> Self {
        let replies: HashMap<String, String> = replies.into_iter().collect();
        Self::new(name, move |req| {
            let hash = image_hash(&req.image);
            replies.get(&hash).cloned().ok_or_else(|| ModelError::rejected(format!("scripted model has no reply for image sha256 {hash}")))
        })
    }

    /// The same reply for every image.
    pub fn constant(name: impl Into<String>, reply: impl Into<String>) -> Self {
        let reply = reply.into();
        Self::new(name, move |_| Ok(reply.clone()))
    }

    /// Requests answered so far, errors included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for ScriptedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedClient").field("name", &self.name).field("calls", &self.calls()).finish()
    }
}

impl ModelClient for ScriptedClient {
    fn complete<'a>(&'a self, req: &'a ModelRequest) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = (self.script)(req).and_then(|text| {
            if text.trim().is_empty() {
                Err(ModelError::empty(format!("empty response from scripted model {}", self.name)))
            } else {
                Ok(ModelReply { text, attempts: 1, latency: started.elapsed(), usage: None })
            }
        });
        Box::pin(futures::future::ready(result))
    }

    fn name(&self) -> &str {
        &self.name
    }
}
