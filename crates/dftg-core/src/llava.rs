//! The output format: LLaVA conversation records, trainable with LLaVA, LLaMA-Factory, ms-swift.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstructionType {
    NegativeExistence,
    PositiveExistence,
    Count,
    Attribute,
    CorrectedDescription,
    /// A conversation about one image that mixes the other types, the target among its turns.
    MultiTurn,
    /// A question that presumes an absent object ("What colour is the dog's collar?"),
    /// answered by correcting the premise.
    FalsePremise,
}

impl InstructionType {
    pub const ALL: [InstructionType; 7] = [
        InstructionType::NegativeExistence,
        InstructionType::PositiveExistence,
        InstructionType::Count,
        InstructionType::Attribute,
        InstructionType::CorrectedDescription,
        InstructionType::MultiTurn,
        InstructionType::FalsePremise,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstructionType::NegativeExistence => "negative_existence",
            InstructionType::PositiveExistence => "positive_existence",
            InstructionType::Count => "count",
            InstructionType::Attribute => "attribute",
            InstructionType::CorrectedDescription => "corrected_description",
            InstructionType::MultiTurn => "multi_turn",
            InstructionType::FalsePremise => "false_premise",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// "human" or "gpt".
    pub from: String,
    pub value: String,
}

/// Why a record exists: dftg's extension, ignored by trainers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionMeta {
    #[serde(rename = "type")]
    pub kind: InstructionType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept: Option<String>,
    pub why: String,
    /// Who wrote the record, in how many attempts, from which facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<WriterMeta>,
}

/// The writer's part of a record's `meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterMeta {
    /// `template`, `sim`, or `openai:<model>`; `template-fallback` when the writer's attempts
    /// were all refused.
    pub by: String,
    /// Replies asked for (the first plus rewrites).
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The facts block the writer was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<crate::writer::Facts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlavaRecord {
    pub id: String,
    pub image: String,
    pub conversations: Vec<Turn>,
    pub meta: InstructionMeta,
}

impl LlavaRecord {
    /// A single-turn record: `<image>` on the first human turn.
    pub fn single_turn(id: String, image: String, question: &str, answer: String, meta: InstructionMeta) -> Self {
        LlavaRecord {
            id,
            image,
            conversations: vec![
                Turn { from: "human".into(), value: format!("<image>\n{question}") },
                Turn { from: "gpt".into(), value: answer },
            ],
            meta,
        }
    }

    /// The checks LLaVA trainers rely on; `Err` names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() {
            return Err("empty id".into());
        }
        if self.image.is_empty() {
            return Err(format!("record {}: empty image", self.id));
        }
        if self.conversations.len() < 2 || !self.conversations.len().is_multiple_of(2) {
            return Err(format!("record {}: conversations must be human/gpt pairs", self.id));
        }
        for (i, t) in self.conversations.iter().enumerate() {
            let want = if i % 2 == 0 { "human" } else { "gpt" };
            if t.from != want {
                return Err(format!("record {}: turn {i} is from {:?}, expected {want:?}", self.id, t.from));
            }
            if t.value.trim().is_empty() {
                return Err(format!("record {}: turn {i} is empty", self.id));
            }
        }
        let first = &self.conversations[0].value;
        if first.matches("<image>").count() != 1 {
            return Err(format!("record {}: the first human turn must hold one <image> token", self.id));
        }
        if self.conversations[1..].iter().any(|t| t.value.contains("<image>")) {
            return Err(format!("record {}: <image> appears after the first turn", self.id));
        }
        Ok(())
    }
}
