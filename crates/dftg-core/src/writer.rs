//! The writer's contract: the facts a writer is given for one item, the reply it must give,
//! and how a reply is read.
//!
//! - [`Facts`] is the JSON block every writer receives (a language model, the simulator, or
//!   the template writer): the image's objects with counts and attributes in natural names, the
//!   model's own description and its diagnosed hallucinations, the target concept and the
//!   instruction type. The facts are all a writer may state.
//! - [`reply_schema`] is the JSON schema asked for per instruction type (`response_format`
//!   `json_schema`); [`parse_reply`] reads a reply leniently (code fences, the first JSON object)
//!   and validates shape and length, for servers that ignore the schema.
//! - `gate` proves a written item against the truth; `template` is the offline writer.

pub mod gate;
pub mod template;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::llava::InstructionType;
use crate::record::HallucinationKind;

/// The facts block's schema version (in every writer request).
pub const FACTS_SCHEMA_VERSION: u32 = 1;
/// The name prefix of the `response_format` schemas; the simulator routes writer requests by it.
pub const SCHEMA_NAME_PREFIX: &str = "dftg_writer_";
/// Longest question, answer and description a reply may hold (characters).
pub const MAX_QUESTION_CHARS: usize = 300;
pub const MAX_ANSWER_CHARS: usize = 1200;
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
/// Turns of a multi-turn conversation.
pub const MIN_TURNS: usize = 2;
pub const MAX_TURNS: usize = 6;

/// Who writes the remedy data. Serialized as its name; an unknown name is refused without
/// being echoed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum WriterKind {
    /// Sentence frames, offline (the default).
    #[default]
    Template,
    /// Any OpenAI-compatible chat endpoint: vLLM, SGLang, Ollama, llama.cpp server, a hosted API.
    OpenAi,
    /// The simulator (the job's own, or the one at `endpoint`).
    Sim,
}

impl WriterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WriterKind::Template => "template",
            WriterKind::OpenAi => "openai",
            WriterKind::Sim => "sim",
        }
    }
}

impl std::fmt::Display for WriterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

crate::string_form!(WriterKind);

impl std::str::FromStr for WriterKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "template" => Ok(WriterKind::Template),
            "openai" => Ok(WriterKind::OpenAi),
            "sim" => Ok(WriterKind::Sim),
            _ => Err("generation.writer.kind: template, openai or sim".into()),
        }
    }
}

/// `[generation.writer]` of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterSpec {
    pub kind: WriterKind,
    /// Base URL (`http://host:8000/v1`); `sim` without one uses the job's simulator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Model name sent in requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub max_in_flight: usize,
    pub timeout_secs: f64,
    /// Transport attempts per request (5xx, timeouts), not rewrites.
    pub max_attempts: u32,
    pub temperature: f32,
    pub max_tokens: u32,
    /// Send the image too (vision writers).
    pub with_image: bool,
    /// Re-asks after a refused reply, before the template writer takes over.
    pub max_rewrites: u32,
    /// The simulated writer: share of replies that carry an injected mistake.
    pub sim_error_rate: f64,
}

impl Default for WriterSpec {
    fn default() -> Self {
        WriterSpec {
            kind: WriterKind::Template,
            endpoint: None,
            model: None,
            max_in_flight: 64,
            timeout_secs: 120.0,
            max_attempts: 4,
            temperature: 0.7,
            max_tokens: 1024,
            with_image: false,
            max_rewrites: 2,
            sim_error_rate: 0.0,
        }
    }
}

impl WriterSpec {
    pub fn validate(&self) -> Result<(), crate::CoreError> {
        use crate::CoreError;
        if !(1..=1024).contains(&self.max_in_flight) {
            return Err(CoreError::invalid("generation.writer.max_in_flight", "must be between 1 and 1024"));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(CoreError::invalid("generation.writer.max_attempts", "must be between 1 and 10"));
        }
        if self.max_rewrites > 5 {
            return Err(CoreError::invalid("generation.writer.max_rewrites", "must be at most 5"));
        }
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return Err(CoreError::invalid("generation.writer.temperature", "must be between 0 and 2"));
        }
        if !(16..=16384).contains(&self.max_tokens) {
            return Err(CoreError::invalid("generation.writer.max_tokens", "must be between 16 and 16384"));
        }
        if !(self.timeout_secs.is_finite() && self.timeout_secs > 0.0 && self.timeout_secs <= 3600.0) {
            return Err(CoreError::invalid("generation.writer.timeout_secs", "must be a positive number of seconds up to 3600"));
        }
        if !(0.0..=1.0).contains(&self.sim_error_rate) {
            return Err(CoreError::invalid("generation.writer.sim_error_rate", "must be between 0 and 1"));
        }
        if self.kind == WriterKind::OpenAi && (self.endpoint.is_none() || self.model.is_none()) {
            return Err(CoreError::invalid("generation.writer", "an openai writer needs an endpoint and a model"));
        }
        for (field, v) in [("generation.writer.endpoint", &self.endpoint), ("generation.writer.model", &self.model)] {
            if v.as_ref().is_some_and(|v| v.len() > 1024 || v.trim().is_empty()) {
                return Err(CoreError::invalid(field, "must be non-empty and at most 1024 characters"));
            }
        }
        Ok(())
    }
}

/// One object of the image, as the writer may name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactObject {
    /// The natural name ("ball", "TV", "table").
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// family → values ("color" → ["red"]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// One hallucination the model made on this image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactError {
    pub kind: HallucinationKind,
    /// Natural name of the concept.
    pub concept: String,
    /// What the model said ("three dogs", "blue").
    pub said: String,
    /// What is true, when known ("two", "brown").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth: Option<String>,
}

/// The attribute an attribute question asks about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactAttribute {
    pub family: String,
    pub values: Vec<String>,
}

/// Everything a writer knows about one item to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub schema_version: u32,
    pub instruction: InstructionType,
    /// The concept the item is about (natural name); none for corrected descriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Whether the target is in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_present: Option<bool>,
    /// For count questions: the target's true count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_count: Option<u32>,
    /// For attribute questions: the family asked about and its true values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_attribute: Option<FactAttribute>,
    /// What is in the image (the truth).
    pub objects: Vec<FactObject>,
    /// Concepts known to be absent that this model tends to hallucinate (never to be asserted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent: Vec<String>,
    /// The model's own description (corrected descriptions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Corrected descriptions: the model's description with its errors mechanically fixed
    /// (wrong counts and attributes replaced, absent objects removed); the writer polishes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    /// The model's hallucinations on this image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hallucinations: Vec<FactError>,
    /// Questions already accepted for this image: do not repeat them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<String>,
    /// Multi-turn conversations: how many turns to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<u32>,
}

impl Facts {
    /// The facts of one `instruction` on an image holding `objects`, at this schema version;
    /// everything else empty, for the caller to fill in.
    pub fn new(instruction: InstructionType, objects: Vec<FactObject>) -> Self {
        Facts {
            schema_version: FACTS_SCHEMA_VERSION,
            instruction,
            target: None,
            target_present: None,
            target_count: None,
            target_attribute: None,
            objects,
            absent: Vec::new(),
            description: None,
            draft: None,
            hallucinations: Vec::new(),
            avoid: Vec::new(),
            turns: None,
        }
    }
}

impl FactObject {
    /// An object of the truth under the name the writer may use (`name`).
    pub fn from_truth(object: &crate::truth::ObjectTruth, name: String) -> Self {
        FactObject { name, count: object.count, attributes: object.attributes.clone() }
    }
}

/// One question and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaPair {
    pub question: String,
    pub answer: String,
}

/// A written item: one or more turns. A corrected description is one turn whose question is
/// the model's original prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenItem {
    pub turns: Vec<QaPair>,
}

/// Why a reply could not be read; each is also a gate rejection reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ReplyError {
    #[error("the reply holds no JSON object")]
    MalformedJson,
    #[error("the reply lacks a required field")]
    MissingField,
    #[error("a field of the reply is empty or over its length bound")]
    Length,
}

/// What the reply for `kind` must look like.
pub fn reply_schema(kind: InstructionType) -> serde_json::Value {
    use serde_json::json;
    let qa = json!({
        "type": "object",
        "properties": {
            "question": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS},
            "answer": {"type": "string", "minLength": 1, "maxLength": MAX_ANSWER_CHARS}
        },
        "required": ["question", "answer"],
        "additionalProperties": false
    });
    match kind {
        InstructionType::CorrectedDescription => json!({
            "type": "object",
            "properties": {"description": {"type": "string", "minLength": 1, "maxLength": MAX_DESCRIPTION_CHARS}},
            "required": ["description"],
            "additionalProperties": false
        }),
        InstructionType::MultiTurn => json!({
            "type": "object",
            "properties": {"turns": {"type": "array", "minItems": MIN_TURNS, "maxItems": MAX_TURNS, "items": qa}},
            "required": ["turns"],
            "additionalProperties": false
        }),
        _ => qa,
    }
}

/// The `response_format` schema name for `kind` (`dftg_writer_negative_existence`, …).
pub fn schema_name(kind: InstructionType) -> String {
    format!("{SCHEMA_NAME_PREFIX}{}", kind.as_str())
}

/// The first JSON object in `text`: the whole text, inside a code fence, or after prose.
pub fn first_json_object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let t = text.trim();
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(t) {
        return Some(m);
    }
    // every '{' is a candidate start; the streaming deserializer stops at the object's end
    for (i, _) in t.match_indices('{') {
        let mut de = serde_json::Deserializer::from_str(&t[i..]).into_iter::<serde_json::Value>();
        if let Some(Ok(serde_json::Value::Object(m))) = de.next() {
            return Some(m);
        }
    }
    None
}

fn text_field(m: &serde_json::Map<String, serde_json::Value>, name: &str, max: usize) -> Result<String, ReplyError> {
    let v = m.get(name).and_then(|v| v.as_str()).ok_or(ReplyError::MissingField)?;
    let v = v.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(ReplyError::Length);
    }
    Ok(v.to_string())
}

fn qa_pair(m: &serde_json::Map<String, serde_json::Value>) -> Result<QaPair, ReplyError> {
    Ok(QaPair { question: text_field(m, "question", MAX_QUESTION_CHARS)?, answer: text_field(m, "answer", MAX_ANSWER_CHARS)? })
}

/// Reads a writer's reply for `kind`. `prompt` is the question of a corrected description.
pub fn parse_reply(kind: InstructionType, text: &str, prompt: &str) -> Result<WrittenItem, ReplyError> {
    let m = first_json_object(text).ok_or(ReplyError::MalformedJson)?;
    let turns = match kind {
        InstructionType::CorrectedDescription => {
            vec![QaPair { question: prompt.to_string(), answer: text_field(&m, "description", MAX_DESCRIPTION_CHARS)? }]
        }
        InstructionType::MultiTurn => {
            let turns = m.get("turns").and_then(|v| v.as_array()).ok_or(ReplyError::MissingField)?;
            if !(MIN_TURNS..=MAX_TURNS).contains(&turns.len()) {
                return Err(ReplyError::Length);
            }
            turns.iter().map(|t| t.as_object().ok_or(ReplyError::MissingField).and_then(qa_pair)).collect::<Result<Vec<_>, _>>()?
        }
        _ => vec![qa_pair(&m)?],
    };
    Ok(WrittenItem { turns })
}

/// The facts as they appear in a writer prompt: one fenced JSON block.
pub fn facts_block(facts: &Facts) -> String {
    // serialising plain data cannot fail; an empty object would be refused by the gate anyway
    let json = serde_json::to_string_pretty(facts).unwrap_or_default();
    format!("```json\n{json}\n```")
}

/// The facts of a writer prompt: the first fenced JSON block that reads as [`Facts`].
pub fn find_facts(prompt: &str) -> Option<Facts> {
    let mut rest = prompt;
    while let Some(i) = rest.find("```json") {
        let body = &rest[i + 7..];
        let end = body.find("```")?;
        if let Ok(f) = serde_json::from_str::<Facts>(body[..end].trim()) {
            return Some(f);
        }
        rest = &body[end + 3..];
    }
    None
}

/// Lowercase words joined by one space: how duplicates are compared.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for w in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(w.chars().flat_map(char::to_lowercase));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_leniently_and_validated() {
        let k = InstructionType::NegativeExistence;
        let ok = parse_reply(k, r#"{"question": "Is there a dog?", "answer": "No."}"#, "").unwrap();
        assert_eq!(ok.turns[0].question, "Is there a dog?");
        let fenced = "Sure!\n```json\n{\"question\": \"Is there a dog?\", \"answer\": \"No, there isn't.\"}\n```";
        assert_eq!(parse_reply(k, fenced, "").unwrap().turns[0].answer, "No, there isn't.");
        let prose = "Here it is: {\"question\": \"Q {x}?\", \"answer\": \"A\"} hope that helps {";
        assert_eq!(parse_reply(k, prose, "").unwrap().turns[0].question, "Q {x}?");
        assert_eq!(parse_reply(k, "{\"question\": \"Is there", ""), Err(ReplyError::MalformedJson));
        assert_eq!(parse_reply(k, "no json here", ""), Err(ReplyError::MalformedJson));
        assert_eq!(parse_reply(k, r#"{"question": "Is there a dog?"}"#, ""), Err(ReplyError::MissingField));
        assert_eq!(parse_reply(k, r#"{"question": "  ", "answer": "No."}"#, ""), Err(ReplyError::Length));
        let long = format!(r#"{{"question": "Q?", "answer": "{}"}}"#, "a".repeat(MAX_ANSWER_CHARS + 1));
        assert_eq!(parse_reply(k, &long, ""), Err(ReplyError::Length));
        let c = parse_reply(InstructionType::CorrectedDescription, r#"{"description": "A dog."}"#, "Describe.").unwrap();
        assert_eq!(c.turns, vec![QaPair { question: "Describe.".into(), answer: "A dog.".into() }]);
        let one_turn = r#"{"turns": [{"question": "Q?", "answer": "A."}]}"#;
        assert_eq!(parse_reply(InstructionType::MultiTurn, one_turn, ""), Err(ReplyError::Length));
        let two = r#"{"turns": [{"question": "Q?", "answer": "A."}, {"question": "R?", "answer": "B."}]}"#;
        assert_eq!(parse_reply(InstructionType::MultiTurn, two, "").unwrap().turns.len(), 2);
    }

    #[test]
    fn facts_round_trip_through_a_prompt() {
        let facts = Facts {
            target: Some("dog".into()),
            target_present: Some(false),
            absent: vec!["dog".into()],
            ..Facts::new(
                InstructionType::NegativeExistence,
                vec![FactObject { name: "ball".into(), count: Some(2), attributes: BTreeMap::new() }],
            )
        };
        let prompt = format!("Example:\n```json\n{{\"not\": \"facts\"}}\n```\nFacts:\n{}\nWrite it.", facts_block(&facts));
        assert_eq!(find_facts(&prompt), Some(facts));
        assert_eq!(find_facts("no block"), None);
    }

    #[test]
    fn schemas_name_their_type() {
        assert_eq!(schema_name(InstructionType::Count), "dftg_writer_count");
        assert_eq!(reply_schema(InstructionType::MultiTurn)["properties"]["turns"]["maxItems"], MAX_TURNS);
        assert_eq!(reply_schema(InstructionType::Count)["required"][1], "answer");
    }

    #[test]
    fn normalised_text_ignores_case_and_punctuation() {
        assert_eq!(normalise("Is there a Dog?"), normalise("is there  a dog"));
        assert_ne!(normalise("Is there a dog?"), normalise("Is there a cat?"));
    }
}
