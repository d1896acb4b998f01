//! The writer of the generate stage: a language model asked for each item from its facts
//! block, with prompts that are data (`configs/writer/*.j2`, rendered by minijinja; an operator
//! overrides any of them with `DFTG_WRITER_PROMPTS=DIR`), structured output by JSON schema
//! (`response_format` `json_schema`), and re-asks that quote the gate's reason.
//!
//! `Writer` is the narrow trait the stage talks to; `LlmWriter` speaks the OpenAI
//! chat-completions API (any server, the simulator included); `ScriptedWriter` answers from a
//! function, for tests.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use futures::future::BoxFuture;

use dftg_core::llava::InstructionType;
use dftg_core::tokens::TokenUsage;
use dftg_core::writer::gate::Rejection;
use dftg_core::writer::{facts_block, reply_schema, schema_name, Facts};
use dftg_model::api::{ChatMessage, ChatRequest, ContentPart, ImageUrl, MessageContent};
use dftg_model::client::{ModelError, OpenAiClient};

use crate::error::PipelineError;

/// Environment variable naming the operator's prompt directory.
pub const PROMPTS_ENV: &str = "DFTG_WRITER_PROMPTS";

const BUILTIN: [(&str, &str); 9] = [
    ("system.j2", include_str!("../../../configs/writer/system.j2")),
    ("rewrite.j2", include_str!("../../../configs/writer/rewrite.j2")),
    ("negative_existence.j2", include_str!("../../../configs/writer/negative_existence.j2")),
    ("positive_existence.j2", include_str!("../../../configs/writer/positive_existence.j2")),
    ("count.j2", include_str!("../../../configs/writer/count.j2")),
    ("attribute.j2", include_str!("../../../configs/writer/attribute.j2")),
    ("corrected_description.j2", include_str!("../../../configs/writer/corrected_description.j2")),
    ("multi_turn.j2", include_str!("../../../configs/writer/multi_turn.j2")),
    ("false_premise.j2", include_str!("../../../configs/writer/false_premise.j2")),
];

/// Longest prompt template read from an operator's directory.
const MAX_TEMPLATE_BYTES: u64 = 64 << 10;

/// The writer's prompt templates, one per instruction type plus the system and rewrite ones.
pub struct Prompts {
    env: minijinja::Environment<'static>,
}

impl Prompts {
    /// The bundled templates.
    pub fn builtin() -> Result<Self, PipelineError> {
        Self::with_overrides(None)
    }

    /// The bundled templates, with any file of the same name in `dir` in place of its own.
    pub fn with_overrides(dir: Option<&Path>) -> Result<Self, PipelineError> {
        let mut env = minijinja::Environment::new();
        // prompts are plain text: nothing to escape, and keep the newline after a block tag
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        for (name, text) in BUILTIN {
            let text = match dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(path) => read_template(&path, name)?,
                None => text.to_string(),
            };
            env.add_template_owned(name, text).map_err(|e| PipelineError::invalid(format!("writer prompt {name}"), e.to_string()))?;
        }
        Ok(Prompts { env })
    }

    /// From `DFTG_WRITER_PROMPTS` when set, else the bundled ones.
    pub fn from_env() -> Result<Self, PipelineError> {
        match std::env::var_os(PROMPTS_ENV) {
            Some(dir) => Self::with_overrides(Some(Path::new(&dir))),
            None => Self::builtin(),
        }
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String, PipelineError> {
        let t = self.env.get_template(name).map_err(|e| PipelineError::invalid(format!("writer prompt {name}"), e.to_string()))?;
        t.render(ctx).map_err(|e| PipelineError::invalid(format!("writer prompt {name}"), e.to_string()))
    }

    pub fn system(&self) -> Result<String, PipelineError> {
        self.render("system.j2", minijinja::context! {})
    }

    /// The user message asking for one item.
    pub fn ask(&self, kind: InstructionType, facts: &Facts) -> Result<String, PipelineError> {
        let schema = serde_json::to_string_pretty(&reply_schema(kind)).unwrap_or_default();
        let ctx = minijinja::context! {
            facts => facts_block(facts),
            schema => schema,
            target => facts.target.clone().unwrap_or_default(),
            target_present => facts.target_present.unwrap_or(false),
            family => facts.target_attribute.as_ref().map(|a| a.family.clone()).unwrap_or_default(),
            turns => facts.turns.unwrap_or(3),
            kind => kind.as_str(),
        };
        self.render(&format!("{}.j2", kind.as_str()), ctx)
    }

    pub fn rewrite(&self, why: Rejection) -> Result<String, PipelineError> {
        self.render("rewrite.j2", minijinja::context! { reason => why.as_str(), advice => why.advice() })
    }
}

fn read_template(path: &Path, name: &str) -> Result<String, PipelineError> {
    let too_big = std::fs::metadata(path).map(|m| m.len() > MAX_TEMPLATE_BYTES).unwrap_or(false);
    if too_big {
        return Err(PipelineError::invalid(format!("writer prompt {name}"), "larger than 64 KiB"));
    }
    std::fs::read_to_string(path).map_err(|e| PipelineError::invalid(format!("writer prompt {name}"), e.to_string()))
}

/// One request to a writer.
pub struct WriteCall<'a> {
    /// Sent as `X-Request-Id`; unique in the job.
    pub request_id: &'a str,
    pub kind: InstructionType,
    pub facts: &'a Facts,
    /// The image's bytes and MIME type, for writers that see.
    pub image: Option<(&'a [u8], &'a str)>,
    /// Earlier replies to this item and why each was refused.
    pub history: &'a [(String, Rejection)],
}

/// A writer's reply.
#[derive(Debug, Clone, Default)]
pub struct WriterReply {
    pub text: String,
    pub tokens: TokenUsage,
}

/// What the generate stage asks items of.
pub trait Writer: Send + Sync + 'static {
    fn write<'a>(&'a self, call: WriteCall<'a>) -> BoxFuture<'a, Result<WriterReply, ModelError>>;
    /// `sim`, `openai:<model>`: recorded in each record's `meta.writer.by`.
    fn label(&self) -> &str;
    /// Whether to fetch the image for each item.
    fn wants_image(&self) -> bool {
        false
    }
    /// Replies asked for per item at most, rewrites included.
    fn max_attempts(&self) -> u32;
}

/// A writer behind an OpenAI-compatible chat endpoint.
pub struct LlmWriter {
    client: OpenAiClient,
    prompts: Arc<Prompts>,
    label: String,
    temperature: f32,
    max_tokens: u32,
    with_image: bool,
    max_rewrites: u32,
}

impl LlmWriter {
    pub fn new(client: OpenAiClient, prompts: Arc<Prompts>, label: String, spec: &dftg_core::writer::WriterSpec) -> Self {
        LlmWriter {
            client,
            prompts,
            label,
            temperature: spec.temperature,
            max_tokens: spec.max_tokens,
            with_image: spec.with_image,
            max_rewrites: spec.max_rewrites,
        }
    }

    /// The chat request for `call` (public so tests can see exactly what is sent).
    pub fn request(&self, call: &WriteCall<'_>) -> Result<ChatRequest, PipelineError> {
        let mut parts = vec![ContentPart::Text { text: self.prompts.ask(call.kind, call.facts)? }];
        if let Some((bytes, mime)) = call.image {
            let mut url = format!("data:{mime};base64,");
            base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut url);
            parts.push(ContentPart::ImageUrl { image_url: ImageUrl { url } });
        }
        let mut messages = vec![
            ChatMessage { role: "system".into(), content: MessageContent::Text(self.prompts.system()?) },
            ChatMessage { role: "user".into(), content: MessageContent::Parts(parts) },
        ];
        for (reply, why) in call.history {
            messages.push(ChatMessage { role: "assistant".into(), content: MessageContent::Text(reply.clone()) });
            messages.push(ChatMessage { role: "user".into(), content: MessageContent::Text(self.prompts.rewrite(*why)?) });
        }
        Ok(ChatRequest {
            model: self.client.config().model.clone(),
            messages,
            max_tokens: Some(self.max_tokens),
            temperature: Some(self.temperature),
            response_format: Some(serde_json::json!({
                "type": "json_schema",
                "json_schema": {"name": schema_name(call.kind), "schema": reply_schema(call.kind), "strict": true}
            })),
        })
    }
}

impl Writer for LlmWriter {
    fn write<'a>(&'a self, call: WriteCall<'a>) -> BoxFuture<'a, Result<WriterReply, ModelError>> {
        Box::pin(async move {
            let request = self.request(&call).map_err(|e| ModelError::rejected(e.to_string()))?;
            let c = self.client.chat(&request, Some(call.request_id)).await?;
            let tokens = c.usage.unwrap_or_default();
            Ok(WriterReply { text: c.text, tokens })
        })
    }

    fn label(&self) -> &str {
        &self.label
    }

    fn wants_image(&self) -> bool {
        self.with_image
    }

    fn max_attempts(&self) -> u32 {
        self.max_rewrites + 1
    }
}

#[cfg(any(test, feature = "testing"))]
type Script = dyn Fn(&WriteCall<'_>) -> Result<String, ModelError> + Send + Sync;

/// A writer that answers from a function: the in-memory implementation, for tests.
#[cfg(any(test, feature = "testing"))]
pub struct ScriptedWriter {
    script: Box<Script>,
    max_rewrites: u32,
}

#[cfg(any(test, feature = "testing"))]
impl ScriptedWriter {
    pub fn new(max_rewrites: u32, script: impl Fn(&WriteCall<'_>) -> Result<String, ModelError> + Send + Sync + 'static) -> Self {
        ScriptedWriter { script: Box::new(script), max_rewrites }
    }
}

#[cfg(any(test, feature = "testing"))]
impl Writer for ScriptedWriter {
    fn write<'a>(&'a self, call: WriteCall<'a>) -> BoxFuture<'a, Result<WriterReply, ModelError>> {
        let reply = (self.script)(&call).map(|text| WriterReply { text, tokens: TokenUsage::default() });
        Box::pin(async move { reply })
    }

    fn label(&self) -> &str {
        "scripted"
    }

    fn max_attempts(&self) -> u32 {
        self.max_rewrites + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dftg_core::writer::FactObject;

    fn facts() -> Facts {
        Facts {
            target: Some("dog".into()),
            target_present: Some(false),
            absent: vec!["dog".into()],
            ..Facts::new(
                InstructionType::NegativeExistence,
                vec![FactObject { name: "ball".into(), count: Some(2), attributes: Default::default() }],
            )
        }
    }

    #[test]
    fn every_type_has_a_prompt_that_carries_the_facts() {
        let p = Prompts::builtin().unwrap();
        for kind in InstructionType::ALL {
            let mut f = facts();
            f.instruction = kind;
            let text = p.ask(kind, &f).unwrap();
            assert_eq!(dftg_core::writer::find_facts(&text), Some(f), "{kind:?}");
            assert!(text.contains("\"required\""), "{kind:?}: the schema is in the prompt");
        }
        assert!(p.rewrite(Rejection::AbsentObject).unwrap().contains("not in the image"));
    }

    #[test]
    fn an_operator_overrides_one_prompt_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("count.j2"), "COUNT {{ target }} {{ facts }}").unwrap();
        let p = Prompts::with_overrides(Some(dir.path())).unwrap();
        let mut f = facts();
        f.instruction = InstructionType::Count;
        assert!(p.ask(InstructionType::Count, &f).unwrap().starts_with("COUNT dog"));
        assert!(p.ask(InstructionType::NegativeExistence, &facts()).unwrap().contains("NOT in the image"));
        std::fs::write(dir.path().join("count.j2"), "{% if %}").unwrap();
        assert!(Prompts::with_overrides(Some(dir.path())).is_err(), "a broken template is refused at start");
    }
}
