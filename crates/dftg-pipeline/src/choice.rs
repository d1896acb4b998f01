//! The job spec's choices as enums, parsed once where a spec enters (a job file, a queue
//! message, a flag). Each is written back as the string it was read from, so job files, job
//! ids and messages keep their form. A value that is none of the choices is refused naming the
//! field and the choices, never echoing the value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use dftg_core::vocab::Builtin as BuiltinVocabulary;

use crate::job::limits::MAX_TEXT_FIELD_LEN;

/// A value that is none of a field's choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {expected}")]
pub struct ChoiceError {
    pub field: &'static str,
    pub expected: &'static str,
}

/// `model.kind`: who plays the model under diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ModelKind {
    /// `sim:PROFILE`: the built-in simulator with a bundled profile name or a profile file.
    Sim(String),
    /// `replay:FILE.jsonl`: recorded captions served through the simulator.
    Replay(String),
    /// `openai`: any OpenAI-compatible endpoint (`model.endpoint`, `model.name`).
    OpenAi,
}

impl ModelKind {
    pub fn is_openai(&self) -> bool {
        *self == ModelKind::OpenAi
    }

    /// The profile of a `sim:` model.
    pub fn sim_profile(&self) -> Option<&str> {
        match self {
            ModelKind::Sim(p) => Some(p),
            _ => None,
        }
    }
}

/// The bundled simulator with its default profile.
impl Default for ModelKind {
    fn default() -> Self {
        ModelKind::Sim(dftg_model::sim::DEFAULT_PROFILE.into())
    }
}

impl FromStr for ModelKind {
    type Err = ChoiceError;
    fn from_str(s: &str) -> Result<Self, ChoiceError> {
        let bad = |expected| ChoiceError { field: "model.kind", expected };
        if s.len() > MAX_TEXT_FIELD_LEN || s.chars().any(char::is_control) {
            return Err(bad("at most 1024 bytes without control characters"));
        }
        if s == "openai" {
            Ok(ModelKind::OpenAi)
        } else if let Some(profile) = s.strip_prefix("sim:") {
            if profile.is_empty() {
                return Err(bad("sim: needs a profile name"));
            }
            Ok(ModelKind::Sim(profile.to_string()))
        } else if let Some(file) = s.strip_prefix("replay:") {
            if file.is_empty() {
                return Err(bad("replay: needs a JSONL file"));
            }
            Ok(ModelKind::Replay(file.to_string()))
        } else {
            Err(bad("unknown model scheme (sim:NAME, replay:FILE, openai)"))
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelKind::Sim(p) => write!(f, "sim:{p}"),
            ModelKind::Replay(file) => write!(f, "replay:{file}"),
            ModelKind::OpenAi => f.write_str("openai"),
        }
    }
}

dftg_core::string_form!(ModelKind);

/// Declares a choice of fixed names: the enum, `as_str`, `FromStr`, `Display` and serde.
macro_rules! named_choice {
    ($(#[$meta:meta])* $name:ident, $field:literal, $expected:literal, { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name in job specs and on the command line.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = ChoiceError;
            fn from_str(s: &str) -> Result<Self, ChoiceError> {
                Self::ALL.iter().copied().find(|c| c.as_str() == s).ok_or(ChoiceError { field: $field, expected: $expected })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        dftg_core::string_form!($name);
    };
}

named_choice!(
    /// `extractor`: how captions are read into claims.
    ExtractorKind, "extractor", "dftg or chair-compat", {
        /// The careful reader (negation, counts, attributes).
        Dftg = "dftg",
        /// The reference CHAIR metric's reading (object mentions only), to compare with
        /// published numbers.
        ChairCompat = "chair-compat",
    }
);

named_choice!(
    /// `corpus.format`: the ground-truth file's format.
    CorpusFormat, "corpus.format", "coco, jsonl or object-map", {
        /// COCO instances JSON.
        Coco = "coco",
        /// A JSONL manifest, one image per line.
        Jsonl = "jsonl",
        /// `{image id: [object names]}` (POPE's and OPERA's `imid_to_objects.json`).
        ObjectMap = "object-map",
    }
);

named_choice!(
    /// `truth.detector.kind`.
    DetectorKind, "truth.detector.kind", "sim or http", {
        /// The simulator plays the detector from the corpus's annotations.
        Sim = "sim",
        /// A detector service at `truth.detector.endpoint`.
        Http = "http",
    }
);

named_choice!(
    /// `truth.judge.kind`.
    JudgeKind, "truth.judge.kind", "sim or openai", {
        /// The simulator judges.
        Sim = "sim",
        /// Any OpenAI-compatible vision endpoint.
        OpenAi = "openai",
    }
);

named_choice!(
    /// `truth.source`: where the image information comes from.
    #[derive(Default)]
    TruthSource, "truth.source", "annotations, detector or annotations+detector", {
        /// The corpus's annotations (COCO instances, a manifest, an object map).
        #[default]
        Annotations = "annotations",
        /// A detector (and optionally a judge); the annotation file is not read even if present.
        Detector = "detector",
        /// Annotations for the concepts they cover, the detector for the others.
        AnnotationsAndDetector = "annotations+detector",
    }
);

/// `vocabulary`: a vocabulary compiled into dftg, or a vocabulary file the policy resolves
/// (a name in the operator's vocabulary directory, or under the open policy a path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum VocabularyChoice {
    Builtin(BuiltinVocabulary),
    File(String),
}

impl Default for VocabularyChoice {
    fn default() -> Self {
        VocabularyChoice::Builtin(BuiltinVocabulary::Coco80)
    }
}

impl FromStr for VocabularyChoice {
    type Err = ChoiceError;
    fn from_str(s: &str) -> Result<Self, ChoiceError> {
        if s.trim().is_empty() || s.len() > MAX_TEXT_FIELD_LEN || s.chars().any(char::is_control) {
            return Err(ChoiceError {
                field: "vocabulary",
                expected: "coco80, lvis, or a vocabulary file of at most 1024 bytes without control characters",
            });
        }
        Ok(BuiltinVocabulary::from_name(s).map_or_else(|| VocabularyChoice::File(s.to_string()), VocabularyChoice::Builtin))
    }
}

impl fmt::Display for VocabularyChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VocabularyChoice::Builtin(b) => f.write_str(b.name()),
            VocabularyChoice::File(name) => f.write_str(name),
        }
    }
}

dftg_core::string_form!(VocabularyChoice);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_read_back_as_the_strings_they_were_read_from() {
        for text in ["sim:kitchenware", "sim:configs/sim/mild.toml", "replay:captions.jsonl", "openai"] {
            let kind: ModelKind = text.parse().unwrap();
            assert_eq!(kind.to_string(), text);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("{text:?}"));
        }
        for text in ["coco80", "lvis", "objects365", "configs/vocab/x.toml"] {
            assert_eq!(text.parse::<VocabularyChoice>().unwrap().to_string(), text);
        }
        assert_eq!("lvis".parse::<VocabularyChoice>().unwrap(), VocabularyChoice::Builtin(BuiltinVocabulary::Lvis));
        for e in ExtractorKind::ALL {
            assert_eq!(e.as_str().parse::<ExtractorKind>().unwrap(), *e);
        }
        let format: CorpusFormat = serde_json::from_str("\"object-map\"").unwrap();
        assert_eq!(format, CorpusFormat::ObjectMap);
    }

    #[test]
    fn a_value_outside_the_choices_is_refused_naming_the_field_not_the_value() {
        let secret = "SECRET-VALUE";
        let errors = [
            secret.parse::<ModelKind>().unwrap_err(),
            "sim:".parse::<ModelKind>().unwrap_err(),
            "replay:".parse::<ModelKind>().unwrap_err(),
            secret.parse::<ExtractorKind>().unwrap_err(),
            secret.parse::<CorpusFormat>().unwrap_err(),
            secret.parse::<DetectorKind>().unwrap_err(),
            secret.parse::<JudgeKind>().unwrap_err(),
            "".parse::<VocabularyChoice>().unwrap_err(),
            "a\u{7}b".parse::<VocabularyChoice>().unwrap_err(),
        ];
        let fields = [
            "model.kind",
            "model.kind",
            "model.kind",
            "extractor",
            "corpus.format",
            "truth.detector.kind",
            "truth.judge.kind",
            "vocabulary",
            "vocabulary",
        ];
        for (err, field) in errors.iter().zip(fields) {
            assert_eq!(err.field, field);
            assert!(!err.to_string().contains(secret), "{err}");
        }
        let via_serde = serde_json::from_str::<ExtractorKind>(&format!("{secret:?}")).unwrap_err().to_string();
        assert!(via_serde.contains("extractor") && !via_serde.contains(secret), "{via_serde}");
    }
}
