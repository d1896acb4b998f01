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
    /// The concepts whose presence or absence was established for this image. Absent: the
    /// truth covers the whole vocabulary (annotations). With a detector only the claimed
    /// concepts (and the always-checked ones) are known: other concepts are neither asked
    /// about in generation nor assumed absent there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<Vec<String>>,
    /// Claims neither confirmed nor refused (the detector was unsure and no judge decided):
    /// not hallucinations, not correct mentions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unverified: Vec<Unverified>,
    /// What each checked claim's verdict rests on, so any verdict can be audited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<ClaimEvidence>,
    /// What the model's reply cost, as its server reported it (absent: no usage reported, or
    /// no reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<crate::tokens::TokenUsage>,
}

impl DiagnosisRecord {
    /// Whether the truth of this image knows about `concept` (present or absent).
    pub fn knows(&self, concept: &str) -> bool {
        match &self.checked {
            None => true,
            Some(c) => c.iter().any(|x| x == concept),
        }
    }
}

/// A claim left undecided, with the detector's best score for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unverified {
    pub concept: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

/// Where a verdict comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceSource {
    Annotation,
    Detector,
    Judge,
}

/// The verdict on one claimed concept and what it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimEvidence {
    pub concept: String,
    /// `present`, `absent` or `unverified`.
    pub verdict: String,
    pub source: EvidenceSource,
    /// The best detector score for the concept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// The best box, `[xmin, ymin, xmax, ymax]` in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    /// Boxes at or above the present threshold after NMS, when the count could be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// The judge's raw answer (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// A per-image failure, with a reason code that is counted in `dataset.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageError {
    /// Short machine-readable reason: `model_unreachable`, `model_http_5xx`, `corrupt_image`, …
    pub reason: String,
    pub message: String,
}
