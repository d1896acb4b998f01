//! Token counts of model calls, as OpenAI-compatible servers report them (`usage`). Users pay
//! per token, so every job adds up what each model it called used, by role: `subject` (the
//! model under diagnosis), `writer` (the model that writes instruction data).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The model under diagnosis.
pub const ROLE_SUBJECT: &str = "subject";
/// The model that writes instruction data.
pub const ROLE_WRITER: &str = "writer";

/// Tokens by role (`dataset.json`'s `tokens`).
pub type TokensByRole = BTreeMap<String, TokenUsage>;

/// Prompt and completion tokens of one call or of many, added up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenUsage {
    #[serde(default)]
    pub prompt: u64,
    #[serde(default)]
    pub completion: u64,
}

impl TokenUsage {
    pub fn new(prompt: u64, completion: u64) -> Self {
        TokenUsage { prompt, completion }
    }

    /// Adds `other` (saturating: a counter never wraps to a small number).
    pub fn add(&mut self, other: TokenUsage) {
        self.prompt = self.prompt.saturating_add(other.prompt);
        self.completion = self.completion.saturating_add(other.completion);
    }

    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }

    pub fn is_zero(&self) -> bool {
        self.prompt == 0 && self.completion == 0
    }
}

/// Adds `usage` to `role`'s entry of `map`.
pub fn add_to_role(map: &mut TokensByRole, role: &str, usage: TokenUsage) {
    map.entry(role.to_string()).or_default().add(usage);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_saturates_and_reads_partial_json() {
        let mut t = TokenUsage::new(3, 4);
        t.add(TokenUsage::new(10, 1));
        assert_eq!(t, TokenUsage::new(13, 5));
        assert_eq!(t.total(), 18);
        t.add(TokenUsage::new(u64::MAX, 0));
        assert_eq!(t.prompt, u64::MAX);
        let read: TokenUsage = serde_json::from_str(r#"{"prompt": 7}"#).unwrap();
        assert_eq!(read, TokenUsage::new(7, 0));
        let mut by_role = TokensByRole::new();
        add_to_role(&mut by_role, ROLE_SUBJECT, TokenUsage::new(1, 2));
        add_to_role(&mut by_role, ROLE_SUBJECT, TokenUsage::new(1, 2));
        assert_eq!(serde_json::to_string(&by_role).unwrap(), r#"{"subject":{"prompt":2,"completion":4}}"#);
    }
}
