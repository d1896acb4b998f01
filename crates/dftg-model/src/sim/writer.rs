//! The simulated writer: answers writer requests (a facts block, a `response_format` schema
//! named `dftg_writer_<type>`) with the JSON reply of `dftg_core::writer`, in varied natural
//! text that is true to the facts, with one seeded mistake in a configured share of replies.
//!
//! - A request is a writer request when its `response_format.json_schema.name` starts with
//!   [`SCHEMA_NAME_PREFIX`], or when a message holds a facts block (servers that ignore
//!   schemas). No image is needed.
//! - The facts come from the first user message that holds them (else from a system
//!   message), and the image, if any, is ignored. A re-ask is the same
//!   conversation with the previous reply and a rejection appended: it gets a fresh draw.
//! - Every choice is seeded by (simulator seed, the facts message text, the number of
//!   assistant messages), never by arrival order: runs repeat byte for byte.
//! - Clean replies name only the facts' objects, with true counts and listed attribute values,
//!   and deny absent targets with a negation the extractor reads.
//! - Mistakes ([`WriterMistake`]) are drawn per request at `error_rate`, one per reply, and
//!   logged with the request's `X-Request-Id` to `sim-writer-truth.jsonl`.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
pub(super) use dftg_core::english::plural;
use dftg_core::english::{article, number_words as number_word};
use dftg_core::llava::InstructionType;
use dftg_core::writer::{find_facts, normalise, FactObject, Facts, QaPair, MAX_TURNS, MIN_TURNS, SCHEMA_NAME_PREFIX};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::SimError;
use crate::api::{ChatRequest, ChatResponse, Choice, ContentPart, MessageContent, ResponseMessage, Usage};
use dftg_core::seed::StableHasher;

/// The writer's log, in the truth log's directory.
pub const WRITER_LOG_FILE: &str = "sim-writer-truth.jsonl";
/// Longest `X-Request-Id` kept in the log (the header is untrusted).
pub const MAX_REQUEST_ID_CHARS: usize = 128;
/// Turns of a multi-turn conversation when the facts do not say.
const DEFAULT_TURNS: usize = 3;

/// How the simulated writer errs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimWriterConfig {
    /// Share of writer replies that carry one mistake.
    pub error_rate: f64,
}

impl Default for SimWriterConfig {
    fn default() -> Self {
        SimWriterConfig { error_rate: 0.1 }
    }
}

impl SimWriterConfig {
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(SimError::Config {
                field: "writer.error_rate".into(),
                reason: format!("{} is not a probability in [0, 1]", self.error_rate),
            });
        }
        Ok(())
    }
}

/// The one mistake a writer reply may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterMistake {
    /// Asserts an object that is not in the image.
    AbsentObject,
    /// States a count off by one or two.
    WrongCount,
    /// States a colour the object does not have.
    WrongAttribute,
    /// Affirms the absent target of a negative or false-premise item.
    AffirmsTarget,
    /// The JSON is cut in the middle.
    MalformedJson,
    /// A required field is left out.
    MissingField,
    /// Repeats a question the facts say to avoid.
    Duplicate,
}

impl WriterMistake {
    pub const ALL: [WriterMistake; 7] = [
        WriterMistake::AbsentObject,
        WriterMistake::WrongCount,
        WriterMistake::WrongAttribute,
        WriterMistake::AffirmsTarget,
        WriterMistake::MalformedJson,
        WriterMistake::MissingField,
        WriterMistake::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WriterMistake::AbsentObject => "absent_object",
            WriterMistake::WrongCount => "wrong_count",
            WriterMistake::WrongAttribute => "wrong_attribute",
            WriterMistake::AffirmsTarget => "affirms_target",
            WriterMistake::MalformedJson => "malformed_json",
            WriterMistake::MissingField => "missing_field",
            WriterMistake::Duplicate => "duplicate",
        }
    }
}

/// One line of `sim-writer-truth.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterLogEntry {
    pub request_id: Option<String>,
    pub mistake: Option<WriterMistake>,
}

/// A writer reply: the message content and the mistake it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterReply {
    pub text: String,
    pub mistake: Option<WriterMistake>,
}

/// The simulated writer (pure: the server adds HTTP and the log).
#[derive(Debug, Clone)]
pub struct SimWriter {
    seed: u64,
    config: SimWriterConfig,
}

impl SimWriter {
    pub fn new(seed: u64, config: SimWriterConfig) -> Result<Self, SimError> {
        config.validate()?;
        Ok(SimWriter { seed, config })
    }

    pub fn config(&self) -> &SimWriterConfig {
        &self.config
    }

    /// The reply to `facts`; `content` is the text that held them and `attempt` the number of
    /// replies already given in the conversation (the seed).
    pub fn write(&self, facts: &Facts, content: &str, attempt: u64) -> WriterReply {
        let h = |domain: &str| StableHasher::new(domain).u64(self.seed).str(content).u64(attempt);
        let mut w = Writer::new(facts, h("writer-text").rng());
        let draft = w.draft();
        let mut mrng = h("writer-mistake-kind").rng();
        let mistake = if h("writer-mistake").unit() < self.config.error_rate {
            let kinds = applicable(facts, &draft);
            kinds.choose(&mut mrng).copied()
        } else {
            None
        };
        let text = match mistake {
            None => draft.to_json(),
            Some(kind) => w.with_mistake(draft, kind, &mut mrng),
        };
        WriterReply { text, mistake }
    }
}

/// A writer request read from the wire.
#[derive(Debug, Clone)]
pub(super) struct WriterRequest {
    pub facts: Facts,
    /// The text of the message that held the facts.
    pub content: String,
    /// Assistant messages so far: re-asks get a fresh draw.
    pub attempt: u64,
    pub prompt_tokens: u32,
}

fn message_text(content: &MessageContent) -> String {
    match content {
        MessageContent::Text(t) => t.clone(),
        MessageContent::Parts(parts) => parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => Some(text.as_str()),
                ContentPart::ImageUrl { .. } => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// `None` when `req` is no writer request; an error when it names a writer schema but holds no
/// facts block.
pub(super) fn writer_request(req: &ChatRequest) -> Option<Result<WriterRequest, String>> {
    let by_schema = req
        .response_format
        .as_ref()
        .and_then(|f| f.get("json_schema"))
        .and_then(|s| s.get("name"))
        .and_then(|n| n.as_str())
        .is_some_and(|n| n.starts_with(SCHEMA_NAME_PREFIX));
    let texts: Vec<(&str, String)> = req.messages.iter().map(|m| (m.role.as_str(), message_text(&m.content))).collect();
    // a cheap test first: ordinary model requests hold no fenced JSON
    let holding = |user: bool| {
        texts
            .iter()
            .filter(|(role, t)| (*role == "user") == user && *role != "assistant" && t.contains("```json"))
            .find_map(|(_, t)| find_facts(t).map(|f| (f, t)))
    };
    // the first user message that holds facts; a system prompt holding them will do
    let found = holding(true).or_else(|| holding(false));
    let (facts, content) = match found {
        Some(x) => x,
        None if by_schema => return Some(Err("writer request without a facts block in a user message".into())),
        None => return None,
    };
    let attempt = req.messages.iter().filter(|m| m.role == "assistant").count() as u64;
    let image = req
        .messages
        .iter()
        .any(|m| matches!(&m.content, MessageContent::Parts(p) if p.iter().any(|p| matches!(p, ContentPart::ImageUrl { .. }))));
    let words: usize = texts.iter().map(|(_, t)| t.split_whitespace().count()).sum();
    let prompt_tokens = (words as u32).saturating_add(if image { 576 } else { 0 });
    Some(Ok(WriterRequest { facts, content: content.clone(), attempt, prompt_tokens }))
}

/// The `X-Request-Id` header, bounded and printable (it is untrusted).
pub(super) fn request_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-request-id")?;
    let s = String::from_utf8_lossy(v.as_bytes());
    let id: String = s.chars().filter(|c| !c.is_control()).take(MAX_REQUEST_ID_CHARS).collect();
    let id = id.trim().to_string();
    (!id.is_empty()).then_some(id)
}

/// `<dir of the truth log>/sim-writer-truth.jsonl`.
pub fn writer_log_path(truth_log: &Path) -> PathBuf {
    truth_log.with_file_name(WRITER_LOG_FILE)
}

/// What the writer has logged, in memory and (with a truth log) on disk.
#[derive(Debug, Default)]
pub(super) struct WriterLog {
    pub file: Option<std::fs::File>,
    pub entries: Vec<WriterLogEntry>,
}

impl WriterLog {
    pub fn open(truth_log: Option<&Path>) -> Result<Self, SimError> {
        let file = match truth_log {
            // append: a resumed job keeps what an earlier run logged
            Some(p) => {
                let path = writer_log_path(p);
                Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|source| SimError::Io { path: path.clone(), source })?,
                )
            }
            None => None,
        };
        Ok(WriterLog { file, entries: Vec::new() })
    }

    pub fn record(&mut self, entry: WriterLogEntry) -> std::io::Result<()> {
        let written = match self.file.as_mut() {
            Some(f) => serde_json::to_vec(&entry).map_err(std::io::Error::other).and_then(|mut line| {
                line.push(b'\n');
                f.write_all(&line)
            }),
            None => Ok(()),
        };
        self.entries.push(entry);
        written
    }
}

/// The chat completion carrying a writer reply.
pub(super) fn completion(model: &str, seed: u64, req: &WriterRequest, text: String) -> Response {
    let id = StableHasher::new("writer-completion-id").u64(seed).str(&req.content).u64(req.attempt).finish();
    let completion_tokens = text.split_whitespace().count() as u32;
    let resp = ChatResponse {
        id: format!("chatcmpl-sim-writer-{id:016x}"),
        object: "chat.completion".into(),
        created: 0,
        model: model.to_string(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage { role: "assistant".into(), content: Some(text) },
            finish_reason: Some("stop".into()),
        }],
        usage: Some(Usage {
            prompt_tokens: req.prompt_tokens,
            completion_tokens,
            total_tokens: req.prompt_tokens.saturating_add(completion_tokens),
        }),
    };
    axum::Json(resp).into_response()
}

// ---------------------------------------------------------------------------------------------
// Words

/// Plain colour words for wrong attributes.
const COLOURS: [&str; 11] = ["red", "blue", "green", "yellow", "white", "black", "brown", "orange", "pink", "purple", "gray"];

/// Common objects to assert when the facts name no absent concept.
const COMMON_OBJECTS: [&str; 12] = ["dog", "cat", "person", "car", "chair", "cup", "bottle", "bird", "horse", "umbrella", "clock", "bench"];

fn with_article(phrase: &str) -> String {
    format!("{} {phrase}", article(phrase))
}

/// A name that is plural in form ("skis", "scissors"): one of it is "a pair of skis".
fn pair_noun(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.ends_with('s') && !l.ends_with("ss") && !l.ends_with("us") && plural(name) == name
}

/// One of `noun` ("a dog", "an apple", "a pair of red skis"); `noun` may start with a colour.
fn one(noun: &str) -> String {
    if pair_noun(noun) {
        format!("a pair of {noun}")
    } else {
        with_article(noun)
    }
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "two" → "two dogs", 1 → "one dog"; a known count of one may read "a dog".
fn counted(name: &str, count: u32, colour: Option<&str>, rng: &mut ChaCha8Rng, allow_article: bool) -> String {
    let noun = match colour {
        Some(c) => format!("{c} {}", if count == 1 { name.to_string() } else { plural(name) }),
        None => {
            if count == 1 {
                name.to_string()
            } else {
                plural(name)
            }
        }
    };
    if count == 1 {
        let forms: &[&str] = if allow_article { &["a", "one", "a single"] } else { &["one", "a single"] };
        match *pick(rng, forms) {
            "a" => one(&noun),
            w if pair_noun(&noun) => format!("{w} pair of {noun}"),
            w => format!("{w} {noun}"),
        }
    } else {
        format!("{} {noun}", number_word(count))
    }
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.gen_range(0..xs.len())]
}

fn frame(rng: &mut ChaCha8Rng, frames: &[&'static str]) -> &'static str {
    frames[rng.gen_range(0..frames.len())]
}

/// Fills `{key}` placeholders.
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    cap(&out)
}

fn be(count: u32) -> &'static str {
    if count == 1 {
        "is"
    } else {
        "are"
    }
}

// ---------------------------------------------------------------------------------------------
// Frames: many per type, so that no opening dominates a job

const EXISTENCE_Q: &[&str] = &[
    "Is there {a} {in}?",
    "Are there any {p} {in}?",
    "Can you see {a} anywhere {in}?",
    "Do you see any {p} here?",
    "Does this image contain {a}?",
    "Does the photo show {a}?",
    "Is {a} visible {in}?",
    "Could you tell me whether there is {a} {in}?",
    "I'm wondering if there's {a} {in}. Is there?",
    "Any {p} {in}?",
    "Would you say this picture includes {a}?",
    "Looking at the image, is there {a}?",
    "Please check: is there {a} somewhere {in}?",
    "Can {a} be spotted {in}?",
    "Is it true that the image has {a} in it?",
    "Do any {p} appear {in}?",
    "Tell me, is there {a} {in}?",
    "Quick check: are there {p} {in}?",
    "Would I find {a} if I looked closely {in}?",
    "Has the photographer captured {a} {in}?",
    "Is {a} part of this scene?",
    "Does {a} show up anywhere {in}?",
    "Am I right that there's {a} {in}?",
    "Do you notice {a} {in}?",
];

const DENIALS: &[&str] = &[
    "No, there is no {n} in this picture.",
    "No, there isn't {a} in the image.",
    "No. I don't see any {p} in this photo.",
    "There are no {p} in this image.",
    "No, the picture does not show any {p}.",
    "No {n} is visible in this scene.",
    "No, this photo contains no {p}.",
    "No, there aren't any {p} here.",
    "Not at all: there is no {n} anywhere in the image.",
    "No, I can't find any {p} in the picture.",
    "There isn't {a} in this photo.",
    "No, the image has no {p} in it.",
];

const PREMISE_Q: &[&str] = &[
    "What color is the {n}?",
    "Where is the {n} {in}?",
    "What is the {n} doing?",
    "Where is the {n} sitting?",
    "What is next to the {n}?",
    "Can you describe the {n} {in}?",
    "Why is the {n} placed there?",
    "What is the {n} made of?",
    "Which side of the image is the {n} on?",
    "Is the {n} facing the camera?",
    "What does the {n} look like?",
    "How large is the {n} compared to the other objects?",
    "Tell me about the {n} in the foreground.",
    "What shape is the {n}?",
    "How far is the {n} from the camera?",
    "In this photo, what is the {n} next to?",
    "What is the {n} holding?",
    "Is the {n} moving or standing still?",
    "How old does the {n} look?",
    "Why is the {n} in the middle of the scene?",
    "What is behind the {n}?",
    "What kind of {n} is shown {in}?",
];

const PREMISE_A: &[&str] = &[
    "There is no {n} in this image.",
    "Actually, there isn't {a} in the picture.",
    "The image does not contain any {p}.",
    "I can't answer that, because there are no {p} in this photo.",
    "There's no {n} to describe here.",
    "No {n} is visible in this scene, so I can't say.",
    "The picture has no {p} at all.",
    "Sorry, I don't see any {p} in the image.",
    "There are no {p} in this photo.",
    "The premise is wrong: the image contains no {p}.",
    "Nothing like that: there isn't {a} anywhere in the picture.",
    "No {n} can be seen in this image.",
];

/// What is there, after a denial.
const TAILS: &[&str] = &[
    " The image shows {list}.",
    " What I can see is {list}.",
    " Instead, the picture contains {list}.",
    " It does show {list}, though.",
    " The scene has {list}.",
    " You can see {list} instead.",
    " The photo features {list}.",
    "",
    "",
];

/// What else is there, after an affirmation.
const ALSO_TAILS: &[&str] =
    &[" The image also shows {list}.", " The picture also contains {list}.", " You can also see {list}.", "", "", ""];

const AFFIRMS: &[&str] = &[
    "Yes, there {be} {np} in the image.",
    "Yes, I can see {np}.",
    "Yes. The picture shows {np}.",
    "Yes, {np} {be} visible in this scene.",
    "Yes: the photo contains {np}.",
    "Yes, the image includes {np}.",
    "Yes, there {be} {np} here.",
    "Yes, you can spot {np} in the picture.",
    "Indeed, {np} {be} in the photo.",
    "Yes, {np} can be seen in this image.",
    "Sure, the scene has {np}.",
    "Yes, the photo shows {np}.",
];

const COUNT_Q: &[&str] = &[
    "How many {p} are there {in}?",
    "How many {p} can you see?",
    "What is the number of {p} {in}?",
    "Can you count the {p} {in}?",
    "Count the {p} {in}. How many are there?",
    "How many {p} does this image show?",
    "Could you tell me how many {p} appear {in}?",
    "What's the total number of {p} visible here?",
    "In this photo, how many {p} are there?",
    "Please count the {p} you can see.",
    "Do you know how many {p} this picture contains?",
    "I need the number of {p} {in}. What is it?",
    "Tell me the number of {p} shown {in}.",
    "Looking at the scene, how many {p} do you see?",
    "What count of {p} does the image show?",
    "Quick question: how many {p} are {in}?",
    "How many {p} do you notice {in}?",
    "Give me a count of the {p} {in}.",
    "What number of {p} appear {in}?",
    "Could you count up the {p} for me?",
    "Are you able to say how many {p} there are {in}?",
];

const COUNT_A: &[&str] = &[
    "There {be} {cnt} in the image.",
    "I count {cnt} in this picture.",
    "{cnt} {be} visible.",
    "The picture shows {cnt}.",
    "I can see {cnt}.",
    "There {be} exactly {cnt} here.",
    "The image contains {cnt}.",
    "In total, there {be} {cnt}.",
    "{word}: the photo shows {cnt}.",
    "You can see {cnt} in the photo.",
    "The answer is {word}; there {be} {cnt} in the scene.",
    "Altogether, {cnt} {be} in the image.",
];

const ATTRIBUTE_Q: &[&str] = &[
    "What {f} {be} {the}?",
    "What is the {f} of {the} {in}?",
    "Which {f} {does} {the} have?",
    "Can you tell me the {f} of {the}?",
    "Describe the {f} of {the}.",
    "How would you describe the {f} of {the}?",
    "Tell me what {f} {the} {be}.",
    "Looking at {the}, what {f} {be} {it}?",
    "In this picture, what {f} {be} {the}?",
    "Do you know the {f} of {the} shown here?",
    "I'd like to know the {f} of {the}. What is it?",
    "What {f} would you say {the} {be}?",
    "Could you identify the {f} of {the} {in}?",
    "Please name the {f} of {the}.",
    "{the}: what {f} {be} {it}?",
    "Focusing on {the}, which {f} {does} {it} have?",
    "Which {f} best describes {the}?",
    "If you had to name the {f} of {the}, what would it be?",
    "How does {the} look in terms of {f}?",
    "Can you identify what {f} {the} {be}?",
    "Would you mind telling me the {f} of {the}?",
];

const ATTRIBUTE_A: &[&str] = &[
    "{the} {be} {v}.",
    "{its} {avn}.",
    "{the} in the image {be} {v}.",
    "{the} {looks} {v}.",
    "{the} {appears} to be {v}.",
    "It is {v}: the picture shows {avn}.",
    "{the} here {be} {v}.",
    "You can see that {the} {be} {v}.",
    "The {f} of {the} is {v}.",
    "{v}. {the} {be} {v}.",
    "I'd say {the} {be} {v}.",
    "The photo shows {avn}.",
];

/// Attribute answers with the value directly before the noun only.
const ATTRIBUTE_BEFORE_NOUN: &[&str] = &[
    "{its} {avn}.",
    "The photo shows {avn}.",
    "The image shows {avn}.",
    "You can see {avn} here.",
    "What I see {be} {avn}.",
    "This picture has {avn}.",
];

/// Values that name no object, safe after "is".
const PREDICATIVE_SAFE: &[&str] = &[
    "red", "blue", "green", "yellow", "white", "black", "brown", "pink", "purple", "gray", "grey", "silver", "gold", "beige", "tan",
    "small", "large", "big", "tiny", "huge", "tall", "short", "wooden", "striped", "dark", "light",
];

const ABSENT_ADDS: &[&str] = &[
    " There is also {a} next to it.",
    " I can also see {a} in the background.",
    " {a} is visible nearby as well.",
    " There is also {a} in the picture.",
];

const WRONG_COLOUR_ADDS: &[&str] = &[" Note the {vn} in the scene.", " Look at the {vn} in the picture.", " You can clearly see the {vn}."];

const WRONG_COUNT_ADDS: &[&str] = &[" There {be} {cnt} in the image.", " I count {cnt} in total.", " The picture shows {cnt}."];

/// Where, in a question.
const PLACES: &[&str] = &[
    "in this image",
    "in the picture",
    "in this photo",
    "in the photograph",
    "in this scene",
    "in the shot",
    "in this frame",
    "in the image",
];

const FOLLOW_UPS: &[&str] = &["And ", "Also, ", "One more thing: ", "Next, "];

// ---------------------------------------------------------------------------------------------
// Drafts

/// A clean reply before it is serialised.
#[derive(Debug, Clone)]
enum Draft {
    Single(QaPair),
    Description(String),
    Turns(Vec<QaPair>),
}

#[derive(Serialize)]
struct DescriptionReply<'a> {
    description: &'a str,
}

#[derive(Serialize)]
struct TurnsReply<'a> {
    turns: &'a [QaPair],
}

impl Draft {
    fn to_json(&self) -> String {
        // serialising plain strings cannot fail
        match self {
            Draft::Single(qa) => serde_json::to_string(qa),
            Draft::Description(d) => serde_json::to_string(&DescriptionReply { description: d }),
            Draft::Turns(t) => serde_json::to_string(&TurnsReply { turns: t }),
        }
        .unwrap_or_default()
    }

    /// The answer a content mistake is added to.
    fn answer_mut(&mut self, rng: &mut ChaCha8Rng) -> &mut String {
        match self {
            Draft::Single(qa) => &mut qa.answer,
            Draft::Description(d) => d,
            Draft::Turns(t) => {
                let i = rng.gen_range(0..t.len());
                &mut t[i].answer
            }
        }
    }
}

/// Mistakes that can be made in a reply to `facts`.
fn applicable(facts: &Facts, draft: &Draft) -> Vec<WriterMistake> {
    let mut out = vec![WriterMistake::AbsentObject, WriterMistake::MalformedJson, WriterMistake::MissingField];
    if facts.objects.iter().any(|o| o.count.is_some_and(|c| c >= 1)) {
        out.push(WriterMistake::WrongCount);
    }
    if facts.objects.iter().any(|o| !wrong_colours(o).is_empty()) {
        out.push(WriterMistake::WrongAttribute);
    }
    let negative = matches!(facts.instruction, InstructionType::NegativeExistence | InstructionType::FalsePremise);
    if negative && matches!(draft, Draft::Single(_)) && target_absent(facts).is_some() {
        out.push(WriterMistake::AffirmsTarget);
    }
    if !facts.avoid.iter().all(|a| a.trim().is_empty()) && !matches!(draft, Draft::Description(_)) {
        out.push(WriterMistake::Duplicate);
    }
    out
}

/// Colours an object with a known colour does not have.
fn wrong_colours(o: &FactObject) -> Vec<&'static str> {
    match o.attributes.get("color") {
        Some(vals) if !vals.is_empty() => COLOURS.iter().copied().filter(|c| !vals.iter().any(|v| v.eq_ignore_ascii_case(c))).collect(),
        _ => Vec::new(),
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// The target, when the facts say it is absent.
fn target_absent(facts: &Facts) -> Option<&str> {
    let t = facts.target.as_deref()?;
    (!target_present(facts)).then_some(t)
}

fn target_present(facts: &Facts) -> bool {
    match (facts.target.as_deref(), facts.target_present) {
        (_, Some(p)) => p,
        (Some(t), None) => facts.objects.iter().any(|o| same_name(&o.name, t)),
        (None, None) => false,
    }
}

/// What a turn or a single item asks about.
#[derive(Debug, Clone)]
enum Topic<'a> {
    /// Whether the target or another concept is absent: a denial.
    Absent(&'a str),
    Present(&'a str, Option<u32>),
    Count(&'a str, u32),
    Attribute(&'a str, Option<u32>, String, Vec<String>),
}

struct Writer<'a> {
    facts: &'a Facts,
    rng: ChaCha8Rng,
    avoid: HashSet<String>,
}

impl<'a> Writer<'a> {
    fn new(facts: &'a Facts, rng: ChaCha8Rng) -> Self {
        let avoid = facts.avoid.iter().map(|q| normalise(q)).collect();
        Writer { facts, rng, avoid }
    }

    fn object(&self, name: &str) -> Option<&'a FactObject> {
        self.facts.objects.iter().find(|o| same_name(&o.name, name))
    }

    /// One of `frames` filled, whose question is neither to be avoided nor already asked.
    fn question(&mut self, frames: &[&str], vars: &[(&str, &str)]) -> String {
        let mut order: Vec<usize> = (0..frames.len()).collect();
        order.shuffle(&mut self.rng);
        // where: varied, so frames do not repeat their endings
        let place = frame(&mut self.rng, PLACES);
        let mut vars = vars.to_vec();
        vars.push(("in", place));
        let mut first = None;
        for i in order {
            let q = fill(frames[i], &vars);
            if !self.avoid.contains(&normalise(&q)) {
                self.avoid.insert(normalise(&q));
                return q;
            }
            first.get_or_insert(q);
        }
        first.unwrap_or_default()
    }

    /// A short list of what is in the image (true counts and colours), without `except`.
    fn scene_list(&mut self, except: Option<&str>, max: usize) -> Option<String> {
        let mut objs: Vec<&FactObject> = self.facts.objects.iter().filter(|o| except.is_none_or(|e| !same_name(&o.name, e))).collect();
        if objs.is_empty() {
            return None;
        }
        objs.shuffle(&mut self.rng);
        let k = self.rng.gen_range(1..=max.min(objs.len()));
        let parts: Vec<String> = objs[..k].iter().map(|o| self.described(o)).collect();
        Some(match parts.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => return None,
        })
    }

    /// "two brown dogs", "a frisbee", "some people" — only what the facts say.
    fn described(&mut self, o: &FactObject) -> String {
        let colour = self.colour_of(o);
        match o.count {
            Some(c) if c >= 1 => counted(&o.name, c, colour.as_deref(), &mut self.rng, true),
            _ => {
                let noun = match &colour {
                    Some(c) => format!("{c} {}", o.name),
                    None => o.name.clone(),
                };
                one(&noun)
            }
        }
    }

    /// One of the object's known colours, sometimes.
    fn colour_of(&mut self, o: &FactObject) -> Option<String> {
        let vals = o.attributes.get("color").filter(|v| !v.is_empty())?;
        if self.rng.gen_bool(0.5) {
            Some(pick(&mut self.rng, vals).clone())
        } else {
            None
        }
    }

    fn tail(&mut self, frames: &[&'static str], except: Option<&str>) -> String {
        let chosen = frame(&mut self.rng, frames);
        if chosen.is_empty() {
            return String::new();
        }
        match self.scene_list(except, 3) {
            Some(list) => chosen.replace("{list}", &list),
            None => String::new(),
        }
    }

    fn draft(&mut self) -> Draft {
        let f = self.facts;
        match f.instruction {
            InstructionType::CorrectedDescription => {
                let d = f.draft.as_deref().map(str::trim).filter(|d| !d.is_empty());
                Draft::Description(match d {
                    Some(d) => d.to_string(),
                    None => match self.scene_list(None, 4) {
                        Some(list) => format!("The image shows {list}."),
                        None => "The image shows a scene without clearly identifiable objects.".into(),
                    },
                })
            }
            InstructionType::MultiTurn => Draft::Turns(self.turns()),
            kind => {
                let topic = self.single_topic(kind);
                Draft::Single(self.qa(kind, topic, true))
            }
        }
    }

    /// What a single-turn item is about, as the facts say.
    fn single_topic(&mut self, kind: InstructionType) -> Option<Topic<'a>> {
        let f = self.facts;
        let target = match f.target.as_deref() {
            Some(t) => t,
            None => match kind {
                InstructionType::NegativeExistence | InstructionType::FalsePremise => f.absent.first().map(String::as_str)?,
                _ => f.objects.first().map(|o| o.name.as_str())?,
            },
        };
        let present = if f.target.is_some() { target_present(f) } else { self.object(target).is_some() };
        if !present {
            return Some(Topic::Absent(target));
        }
        let obj = self.object(target);
        let count = f.target_count.or(obj.and_then(|o| o.count)).filter(|c| *c >= 1);
        Some(match kind {
            InstructionType::Count => match count {
                Some(c) => Topic::Count(target, c),
                None => Topic::Present(target, None),
            },
            InstructionType::Attribute => {
                let attr = f
                    .target_attribute
                    .as_ref()
                    .map(|a| (a.family.clone(), a.values.clone()))
                    .or_else(|| obj.and_then(|o| o.attributes.iter().next().map(|(k, v)| (k.clone(), v.clone()))))
                    .filter(|(_, v)| !v.is_empty());
                match attr {
                    Some((family, values)) => Topic::Attribute(target, count, family, values),
                    None => Topic::Present(target, count),
                }
            }
            _ => Topic::Present(target, count),
        })
    }

    /// A question and a true answer about `topic`; `tails` adds what else is there.
    fn qa(&mut self, kind: InstructionType, topic: Option<Topic<'a>>, tails: bool) -> QaPair {
        let Some(topic) = topic else {
            let q = self.question(&["What can you see in this image?", "Can you describe this picture briefly?"], &[]);
            let answer = match self.scene_list(None, 3) {
                Some(list) => format!("The image shows {list}."),
                None => "The image shows a scene without clearly identifiable objects.".into(),
            };
            return QaPair { question: q, answer };
        };
        match topic {
            Topic::Absent(n) => {
                let (a, p) = (one(n), plural(n));
                let vars = [("n", n), ("a", a.as_str()), ("p", p.as_str())];
                let premise = kind == InstructionType::FalsePremise;
                let question = self.question(if premise { PREMISE_Q } else { EXISTENCE_Q }, &vars);
                let denials = if premise { PREMISE_A } else { DENIALS };
                // "no skis", never "there isn't a pair of skis": the negation must reach the noun
                let denials: Vec<&'static str> =
                    denials.iter().copied().filter(|d| !pair_noun(n) || !(d.contains("{a}") || d.contains("{n}"))).collect();
                let deny = fill(frame(&mut self.rng, &denials), &vars);
                let tail = if tails { self.tail(TAILS, Some(n)) } else { String::new() };
                QaPair { question, answer: format!("{deny}{tail}") }
            }
            Topic::Present(n, count) => {
                let (a, p) = (one(n), plural(n));
                let vars = [("n", n), ("a", a.as_str()), ("p", p.as_str())];
                let question = self.question(EXISTENCE_Q, &vars);
                let colour = self.object(n).and_then(|o| self.colour_of(o));
                let c = count.unwrap_or(1);
                let np = match count {
                    Some(c) => counted(n, c, colour.as_deref(), &mut self.rng, true),
                    None => one(&colour.map(|c| format!("{c} {n}")).unwrap_or_else(|| n.to_string())),
                };
                let answer = fill(frame(&mut self.rng, AFFIRMS), &[("np", np.as_str()), ("be", be(c))]);
                let tail = if tails { self.tail(ALSO_TAILS, Some(n)) } else { String::new() };
                QaPair { question, answer: format!("{answer}{tail}") }
            }
            Topic::Count(n, c) => {
                let p = plural(n);
                let question = self.question(COUNT_Q, &[("p", p.as_str())]);
                QaPair { question, answer: self.count_answer(n, c) }
            }
            Topic::Attribute(n, count, family, values) => {
                let many = count.is_some_and(|c| c > 1);
                let the = format!("the {}", if many { plural(n) } else { n.to_string() });
                let vars = [
                    ("f", family.as_str()),
                    ("the", the.as_str()),
                    ("be", if many { "are" } else { "is" }),
                    ("does", if many { "do" } else { "does" }),
                    ("it", if many { "they" } else { "it" }),
                ];
                let question = self.question(ATTRIBUTE_Q, &vars);
                let v = match values.as_slice() {
                    [a, b, ..] if self.rng.gen_bool(0.5) => format!("{a} and {b}"),
                    vals => pick(&mut self.rng, vals).clone(),
                };
                QaPair { question, answer: self.attribute_answer(n, many, &family, &v) }
            }
        }
    }

    fn count_answer(&mut self, n: &str, c: u32) -> String {
        let cnt = counted(n, c, None, &mut self.rng, false);
        let word = number_word(c);
        fill(frame(&mut self.rng, COUNT_A), &[("cnt", cnt.as_str()), ("be", be(c)), ("word", word.as_str())])
    }

    fn attribute_answer(&mut self, n: &str, many: bool, family: &str, v: &str) -> String {
        let noun = if many { plural(n) } else { n.to_string() };
        let the = format!("the {noun}");
        let avn = if many { format!("{v} {noun}") } else { one(&format!("{v} {noun}")) };
        let vars = [
            ("the", the.as_str()),
            ("be", if many { "are" } else { "is" }),
            ("its", if many { "they're" } else { "it's" }),
            ("looks", if many { "look" } else { "looks" }),
            ("appears", if many { "appear" } else { "appears" }),
            ("avn", avn.as_str()),
            ("v", v),
            ("f", family),
        ];
        // a value that is also a noun ("orange", "glass") reads as an object unless it sits
        // directly before the noun
        let frames = if v.split(" and ").all(|w| PREDICATIVE_SAFE.contains(&w)) { ATTRIBUTE_A } else { ATTRIBUTE_BEFORE_NOUN };
        // a sentence may start with a placeholder: capitalise every sentence
        let s = fill(frame(&mut self.rng, frames), &vars);
        s.split(". ").map(cap).collect::<Vec<_>>().join(". ")
    }

    /// Turns about present objects, one about the target at a seeded position.
    fn turns(&mut self) -> Vec<QaPair> {
        let f = self.facts;
        let n = f.turns.map(|t| t as usize).unwrap_or(DEFAULT_TURNS).clamp(MIN_TURNS, MAX_TURNS);
        let target_topic = f.target.as_deref().map(|t| {
            if !target_present(f) {
                return Topic::Absent(t);
            }
            let count = f.target_count.or(self.object(t).and_then(|o| o.count)).filter(|c| *c >= 1);
            match count {
                Some(c) if self.rng.gen_bool(0.5) => Topic::Count(t, c),
                _ => Topic::Present(t, count),
            }
        });
        // the other turns: existence, count and attribute questions about present objects
        let mut pool: Vec<Topic<'a>> = Vec::new();
        for o in &f.objects {
            if f.target.as_deref().is_some_and(|t| same_name(t, &o.name)) {
                continue;
            }
            let count = o.count.filter(|c| *c >= 1);
            pool.push(Topic::Present(&o.name, count));
            if let Some(c) = count {
                pool.push(Topic::Count(&o.name, c));
            }
            if let Some((fam, vals)) = o.attributes.iter().find(|(_, v)| !v.is_empty()) {
                pool.push(Topic::Attribute(&o.name, count, fam.clone(), vals.clone()));
            }
        }
        for a in &f.absent {
            if pool.len() >= n || f.target.as_deref().is_some_and(|t| same_name(t, a)) {
                continue;
            }
            pool.push(Topic::Absent(a));
        }
        pool.shuffle(&mut self.rng);
        // one turn per object first, then second questions about the same objects
        let mut seen: Vec<&str> = Vec::new();
        let (mut firsts, rest): (Vec<Topic<'a>>, Vec<Topic<'a>>) = pool.into_iter().partition(|t| {
            let name = topic_name(t);
            let first = !seen.contains(&name);
            seen.push(name);
            first
        });
        firsts.extend(rest);
        let pool = firsts;
        let others = n - usize::from(target_topic.is_some());
        let mut topics: Vec<Option<Topic<'a>>> = pool.into_iter().take(others).map(Some).collect();
        while topics.len() < others {
            topics.push(None);
        }
        if let Some(t) = target_topic {
            let at = self.rng.gen_range(0..=topics.len());
            topics.insert(at, Some(t));
        }
        let mut out = Vec::with_capacity(n);
        for (i, topic) in topics.into_iter().enumerate() {
            let tails = self.rng.gen_bool(0.3);
            let mut qa = self.qa(InstructionType::MultiTurn, topic, tails);
            if i > 0 && self.rng.gen_bool(0.3) {
                qa.question = follow_up(frame(&mut self.rng, FOLLOW_UPS), &qa.question);
            }
            out.push(qa);
        }
        out
    }

    /// The reply with one mistake of `kind`, the rest clean.
    fn with_mistake(&mut self, mut draft: Draft, kind: WriterMistake, rng: &mut ChaCha8Rng) -> String {
        let f = self.facts;
        match kind {
            WriterMistake::AbsentObject => {
                let absent: Vec<&str> = f.absent.iter().map(String::as_str).filter(|a| self.object(a).is_none()).collect();
                let others: Vec<&str> = absent.iter().copied().filter(|a| f.target.as_deref().is_none_or(|t| !same_name(t, a))).collect();
                let choice = if !others.is_empty() {
                    *pick(rng, &others)
                } else if !absent.is_empty() {
                    *pick(rng, &absent)
                } else if let Some(t) = target_absent(f) {
                    t
                } else {
                    let common: Vec<&str> = COMMON_OBJECTS
                        .iter()
                        .copied()
                        .filter(|c| self.object(c).is_none() && f.target.as_deref().is_none_or(|t| !same_name(t, c)))
                        .collect();
                    common.choose(rng).copied().unwrap_or("giraffe")
                };
                let a = one(choice);
                let add = frame(rng, ABSENT_ADDS).replace("{a}", &a);
                // a sentence of its own, capitalised
                let add = format!(" {}", cap(add.trim_start()));
                draft.answer_mut(rng).push_str(&add);
                draft.to_json()
            }
            WriterMistake::WrongCount => {
                let counted_objs: Vec<&FactObject> = f.objects.iter().filter(|o| o.count.is_some_and(|c| c >= 1)).collect();
                // a count item gets its own answer wrong; others get one sentence more
                let count_target = match (&mut draft, f.instruction) {
                    (Draft::Single(_), InstructionType::Count) => {
                        f.target.as_deref().and_then(|t| counted_objs.iter().find(|o| same_name(&o.name, t)))
                    }
                    _ => None,
                };
                let o = match count_target.or_else(|| counted_objs.choose(rng)) {
                    Some(o) => *o,
                    None => return draft.to_json(),
                };
                let c = o.count.unwrap_or(1);
                let d = rng.gen_range(1..=2u32);
                let wrong = if c > d && rng.gen_bool(0.5) { c - d } else { c + d };
                let cnt = format!("{} {}", number_word(wrong), if wrong == 1 { o.name.clone() } else { plural(&o.name) });
                match (&mut draft, count_target.is_some()) {
                    (Draft::Single(qa), true) => {
                        let word = number_word(wrong);
                        qa.answer = fill(frame(rng, COUNT_A), &[("cnt", cnt.as_str()), ("be", be(wrong)), ("word", word.as_str())]);
                    }
                    (d, _) => {
                        let add = fill(frame(rng, WRONG_COUNT_ADDS).trim_start(), &[("cnt", cnt.as_str()), ("be", be(wrong))]);
                        d.answer_mut(rng).push_str(&format!(" {add}"));
                    }
                }
                draft.to_json()
            }
            WriterMistake::WrongAttribute => {
                let coloured: Vec<&FactObject> = f.objects.iter().filter(|o| !wrong_colours(o).is_empty()).collect();
                let attr_target = match (&draft, f.instruction, f.target_attribute.as_ref()) {
                    (Draft::Single(_), InstructionType::Attribute, Some(a)) if a.family == "color" => {
                        f.target.as_deref().and_then(|t| coloured.iter().find(|o| same_name(&o.name, t)))
                    }
                    _ => None,
                };
                let o = match attr_target.or_else(|| coloured.choose(rng)) {
                    Some(o) => *o,
                    None => return draft.to_json(),
                };
                let colours = wrong_colours(o);
                let wrong = *pick(rng, &colours);
                let many = o.count.is_some_and(|c| c > 1);
                let noun = if many { plural(&o.name) } else { o.name.clone() };
                match (&mut draft, attr_target.is_some()) {
                    (Draft::Single(qa), true) => {
                        // colour directly before the noun, where a reader checks it
                        let avn = if many { format!("{wrong} {noun}") } else { one(&format!("{wrong} {noun}")) };
                        let frames = ["{its} {avn}.", "The photo shows {avn}.", "It is {v}: the picture shows {avn}."];
                        let vars = [("its", if many { "they're" } else { "it's" }), ("avn", avn.as_str()), ("v", wrong)];
                        qa.answer = fill(frame(rng, &frames), &vars);
                    }
                    (d, _) => {
                        let vn = format!("{wrong} {noun}");
                        let add = frame(rng, WRONG_COLOUR_ADDS).replace("{vn}", &vn);
                        d.answer_mut(rng).push_str(&add);
                    }
                }
                draft.to_json()
            }
            WriterMistake::AffirmsTarget => {
                if let (Draft::Single(qa), Some(t)) = (&mut draft, target_absent(f)) {
                    let a = one(t);
                    let frames: &[&str] = if f.instruction == InstructionType::FalsePremise {
                        &[
                            "The {n} is near the center of the picture.",
                            "The {n} is on the left side of the image.",
                            "The {n} is in the foreground.",
                        ]
                    } else {
                        &["Yes, there is {a} in this picture.", "Yes, I can see {a} in the image.", "Yes, the photo shows {a}."]
                    };
                    qa.answer = fill(frame(rng, frames), &[("n", t), ("a", a.as_str())]);
                }
                draft.to_json()
            }
            WriterMistake::MalformedJson => {
                let json = draft.to_json();
                // cut inside the first object holding the fields, so no complete object is left
                let cut = match &draft {
                    Draft::Turns(t) => {
                        let first = t.first().and_then(|qa| serde_json::to_string(qa).ok()).map(|s| s.len()).unwrap_or(0);
                        "{\"turns\":[".len() + first / 2
                    }
                    _ => json.len() / 2,
                };
                let mut cut = cut.min(json.len());
                while !json.is_char_boundary(cut) {
                    cut -= 1;
                }
                json[..cut].to_string()
            }
            WriterMistake::MissingField => match &draft {
                Draft::Single(qa) => serde_json::json!({ "question": qa.question }).to_string(),
                Draft::Description(d) => serde_json::json!({ "text": d }).to_string(),
                Draft::Turns(t) => {
                    if rng.gen_bool(0.5) {
                        serde_json::json!({ "conversation": t }).to_string()
                    } else {
                        let i = rng.gen_range(0..t.len());
                        let turns: Vec<serde_json::Value> = t
                            .iter()
                            .enumerate()
                            .map(|(j, qa)| {
                                if i == j {
                                    serde_json::json!({ "question": qa.question })
                                } else {
                                    serde_json::json!({ "question": qa.question, "answer": qa.answer })
                                }
                            })
                            .collect();
                        serde_json::json!({ "turns": turns }).to_string()
                    }
                }
            },
            WriterMistake::Duplicate => {
                let avoid: Vec<&str> = f.avoid.iter().map(|a| a.trim()).filter(|a| !a.is_empty()).collect();
                if let Some(q) = avoid.choose(rng) {
                    match &mut draft {
                        Draft::Single(qa) => qa.question = q.to_string(),
                        Draft::Turns(t) => {
                            let i = rng.gen_range(0..t.len());
                            t[i].question = q.to_string();
                        }
                        Draft::Description(_) => {}
                    }
                }
                draft.to_json()
            }
        }
    }
}

fn topic_name<'a>(t: &Topic<'a>) -> &'a str {
    match t {
        Topic::Absent(n) | Topic::Present(n, _) | Topic::Count(n, _) | Topic::Attribute(n, ..) => n,
    }
}

/// "And " + "how many dogs …" (keeps "I" capitalised).
fn follow_up(prefix: &str, question: &str) -> String {
    let keep = question.starts_with("I ") || question.starts_with("I'");
    let rest = if keep {
        question.to_string()
    } else {
        let mut c = question.chars();
        match c.next() {
            Some(f) => f.to_lowercase().chain(c).collect(),
            None => String::new(),
        }
    };
    format!("{prefix}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_of_singular_names() {
        let cases = [
            ("dog", "dogs"),
            ("bus", "buses"),
            ("bench", "benches"),
            ("butterfly", "butterflies"),
            ("toy", "toys"),
            ("man", "men"),
            ("woman", "women"),
            ("person", "people"),
            ("child", "children"),
            ("mouse", "mice"),
            ("knife", "knives"),
            ("sheep", "sheep"),
            ("skis", "skis"),
            ("scissors", "scissors"),
            ("wine glass", "wine glasses"),
            ("dining table", "dining tables"),
            ("box", "boxes"),
            ("bottle of wine", "bottles of wine"),
        ];
        for (s, p) in cases {
            assert_eq!(plural(s), p, "{s}");
        }
        assert_eq!(with_article("apple"), "an apple");
        assert_eq!(with_article("umbrella"), "an umbrella");
        assert_eq!(with_article("unicycle"), "a unicycle");
        assert_eq!(with_article("red frisbee"), "a red frisbee");
        assert_eq!(with_article("orange cup"), "an orange cup");
        assert_eq!(one("skis"), "a pair of skis");
        assert_eq!(one("red scissors"), "a pair of red scissors");
        assert_eq!(one("bus"), "a bus");
    }

    #[test]
    fn request_ids_are_bounded_and_printable() {
        let mut h = HeaderMap::new();
        assert_eq!(request_id(&h), None);
        h.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(request_id(&h).as_deref(), Some("abc-123"));
        h.insert("x-request-id", "x".repeat(500).parse().unwrap());
        assert_eq!(request_id(&h).map(|s| s.len()), Some(MAX_REQUEST_ID_CHARS));
        h.insert("x-request-id", axum::http::HeaderValue::from_bytes(b"a\tb\xffc").unwrap());
        let id = request_id(&h).unwrap();
        assert!(id.chars().all(|c| !c.is_control()), "{id:?}");
    }

    #[test]
    fn follow_ups_lowercase_the_question_but_not_i() {
        assert_eq!(follow_up("And ", "How many dogs are there?"), "And how many dogs are there?");
        assert_eq!(follow_up("And ", "I'm wondering if there's a cat."), "And I'm wondering if there's a cat.");
    }
}
