//! The records that flow between stages: mentions, hallucinations, one diagnosis per image.
//! These are the on-disk schema of `diagnoses/shard-*.jsonl` (schema version 1).

use serde::{Deserialize, Serialize};

use crate::truth::ObjectTruth;

pub const DIAGNOSIS_SCHEMA_VERSION: u32 = 1;

/// An attribute the text claims for a mentioned object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeClaim {
    pub family: String,
    pub value: String,
    /// Byte span of the attribute word in the response.
    pub span: (u32, u32),
}

/// One object the text asserts is in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mention {
    pub concept: String,
    /// The words as written ("puppies").
    pub text: String,
    /// Byte span in the response.
    pub span: (u32, u32),
    /// Explicit quantity ("two dogs", "a pair of skis"), when the text gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeClaim>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HallucinationKind {
    Object,
    Count,
    Attribute,
}

impl HallucinationKind {
    pub const ALL: [HallucinationKind; 3] = [HallucinationKind::Object, HallucinationKind::Count, HallucinationKind::Attribute];

    pub fn as_str(self) -> &'static str {
        match self {
            HallucinationKind::Object => "object",
            HallucinationKind::Count => "count",
            HallucinationKind::Attribute => "attribute",
        }
    }
}

/// A claim that contradicts the image, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hallucination {
    pub kind: HallucinationKind,
    pub concept: String,
    /// Byte span of the evidence in the response.
    pub span: (u32, u32),
    /// The evidence text.
    pub evidence: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known: Vec<String>,
}

/// CHAIR-style numbers for one response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageScores {
    /// Object mentions (repeats counted).
    pub mentions: u32,
    /// Object-hallucinated mentions (repeats counted).
    pub hallucinated_mentions: u32,
    /// 1 when at least one object hallucination.
    pub chair_s: f64,
    /// hallucinated_mentions / mentions (0 without mentions).
    pub chair_i: f64,
    /// Distinct true objects mentioned / true objects.
    pub coverage: f64,
    pub truth_objects: u32,
    pub covered_objects: u32,
}

/// One image's diagnosis: the line written to `diagnoses/shard-*.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagnosisRecord {
    pub schema_version: u32,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub prompt: String,
    pub response: String,
    pub mentions: Vec<Mention>,
    /// Concepts the text explicitly denies ("there are no people"): not claims.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub negated: Vec<String>,
    pub truth: Vec<ObjectTruth>,
    pub hallucinations: Vec<Hallucination>,
    pub scores: ImageScores,
    /// Why this image has no diagnosis (model failed, corrupt image, …); empty response then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ImageError>,
}

/// A per-image failure, with a reason code that is counted in `dataset.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageError {
    /// Short machine-readable reason: `model_unreachable`, `model_http_5xx`, `corrupt_image`, …
    pub reason: String,
    pub message: String,
}
