//! Hallucination checking (stage 1, step 4): claims against the truth.
//!
//! - object: a claimed concept that is not in the image;
//! - count: an explicit count that differs from a known count (only when the count is not
//!   about a subset: "two men and a woman" is not a claim that there are two persons);
//! - attribute: a claimed value that contradicts the known values of that object in the same
//!   family ("a blue car" when the car is known to be red; unknown families are not checked).
//!
//! Object hallucinations are reported once per concept per image (first span as evidence);
//! the CHAIR-style scores count every mention.

use crate::extract::{ExtractScratch, Extraction, Extractor};
use crate::record::{AttributeClaim, DiagnosisRecord, Hallucination, HallucinationKind, ImageScores, Mention, DIAGNOSIS_SCHEMA_VERSION};
use crate::truth::ImageTruth;
use crate::vocab::{AttributeId, ConceptId, Vocabulary};

/// An image's truth resolved against a vocabulary.
#[derive(Debug, Clone, Default)]
pub struct TruthView {
    pub objects: Vec<TruthObject>,
}

#[derive(Debug, Clone)]
pub struct TruthObject {
    /// `None` for names the vocabulary does not know (kept for coverage).
    pub concept: Option<ConceptId>,
    pub count: Option<u32>,
    pub attributes: Vec<AttributeId>,
}

impl TruthView {
    pub fn new(vocab: &Vocabulary, truth: &ImageTruth) -> Self {
        let objects = truth
            .objects
            .iter()
            .map(|o| TruthObject {
                concept: vocab.lookup(&o.name),
                count: o.count,
                attributes: o
                    .attributes
                    .iter()
                    .flat_map(|(family, values)| values.iter().filter_map(|v| vocab.attribute(family, v)))
                    .collect(),
            })
            .collect();
        TruthView { objects }
    }

    pub fn get(&self, concept: ConceptId) -> Option<&TruthObject> {
        self.objects.iter().find(|o| o.concept == Some(concept))
    }

    pub fn has(&self, concept: ConceptId) -> bool {
        self.get(concept).is_some()
    }
}

/// Hallucinations and scores of one extraction against one truth.
pub fn check(vocab: &Vocabulary, text: &str, ex: &Extraction, truth: &TruthView) -> (Vec<Hallucination>, ImageScores) {
    let mut out: Vec<Hallucination> = Vec::new();
    let mut hallucinated_mentions = 0u32;
    let mut covered: Vec<ConceptId> = Vec::new();
    let evidence = |span: (u32, u32)| text.get(span.0 as usize..span.1 as usize).unwrap_or("").to_string();
    for (idx, m) in ex.mentions.iter().enumerate() {
        let Some(t) = truth.get(m.concept) else {
            hallucinated_mentions += 1;
            if !out.iter().any(|h| h.kind == HallucinationKind::Object && h.concept == vocab.name(m.concept)) {
                out.push(Hallucination {
                    kind: HallucinationKind::Object,
                    concept: vocab.name(m.concept).to_string(),
                    span: m.span,
                    evidence: evidence(m.span),
                    claimed_count: None,
                    true_count: None,
                    family: None,
                    claimed: None,
                    known: Vec::new(),
                });
            }
            continue;
        };
        if !covered.contains(&m.concept) {
            covered.push(m.concept);
        }
        if let (Some(claimed), Some(actual)) = (m.count, t.count) {
            // a subset ("two men" of three persons) shares its sentence with another mention
            let subset = ex.mentions.iter().enumerate().any(|(j, o)| j != idx && o.concept == m.concept && o.sentence == m.sentence);
            let reported = out.iter().any(|h| h.kind == HallucinationKind::Count && h.concept == vocab.name(m.concept));
            if claimed != actual && !subset && !reported {
                out.push(Hallucination {
                    kind: HallucinationKind::Count,
                    concept: vocab.name(m.concept).to_string(),
                    span: m.span,
                    evidence: evidence(count_span(text, m.span)),
                    claimed_count: Some(claimed),
                    true_count: Some(actual),
                    family: None,
                    claimed: None,
                    known: Vec::new(),
                });
            }
        }
        for (attr, span) in m.attributes() {
            let known: Vec<AttributeId> = t.attributes.iter().copied().filter(|a| a.family == attr.family).collect();
            if known.is_empty() || known.contains(&attr) {
                continue;
            }
            let (family, value) = vocab.attribute_name(attr);
            let dup = out.iter().any(|h| {
                h.kind == HallucinationKind::Attribute && h.concept == vocab.name(m.concept) && h.claimed.as_deref() == Some(value)
            });
            if dup {
                continue;
            }
            out.push(Hallucination {
                kind: HallucinationKind::Attribute,
                concept: vocab.name(m.concept).to_string(),
                span,
                evidence: evidence((span.0, m.span.1)),
                claimed_count: None,
                true_count: None,
                family: Some(family.to_string()),
                claimed: Some(value.to_string()),
                known: known.iter().map(|a| vocab.attribute_name(*a).1.to_string()).collect(),
            });
        }
    }
    let mentions = ex.mentions.len() as u32;
    let truth_objects = truth.objects.len() as u32;
    let covered_objects = covered.len() as u32;
    let scores = ImageScores {
        mentions,
        hallucinated_mentions,
        chair_s: if hallucinated_mentions > 0 { 1.0 } else { 0.0 },
        chair_i: if mentions > 0 { hallucinated_mentions as f64 / mentions as f64 } else { 0.0 },
        coverage: if truth_objects > 0 { covered_objects as f64 / truth_objects as f64 } else { 0.0 },
        truth_objects,
        covered_objects,
    };
    (out, scores)
}

/// Widens a noun span back to the number word before it ("two large dogs").
fn count_span(text: &str, span: (u32, u32)) -> (u32, u32) {
    let head = &text[..span.0 as usize];
    let mut end = head.len();
    for _ in 0..4 {
        let word_end = head[..end].trim_end_matches(|c: char| !c.is_alphanumeric()).len();
        let word_start = head[..word_end].rfind(|c: char| !c.is_alphanumeric()).map(|p| p + 1).unwrap_or(0);
        if word_start == word_end {
            break;
        }
        if crate::english::number_value(&head[word_start..word_end].to_ascii_lowercase()).is_some() {
            return (word_start as u32, span.1);
        }
        end = word_start;
    }
    span
}

/// Record form of the extracted mentions.
pub fn mentions_of(vocab: &Vocabulary, text: &str, ex: &Extraction) -> Vec<Mention> {
    ex.mentions
        .iter()
        .map(|m| Mention {
            concept: vocab.name(m.concept).to_string(),
            text: text.get(m.span.0 as usize..m.span.1 as usize).unwrap_or("").to_string(),
            span: m.span,
            count: m.count,
            attributes: m
                .attributes()
                .map(|(a, span)| {
                    let (family, value) = vocab.attribute_name(a);
                    AttributeClaim { family: family.to_string(), value: value.to_string(), span }
                })
                .collect(),
        })
        .collect()
}

/// Stage-1 steps 2–4 for one response: the diagnosis record of one image.
pub fn diagnose(extractor: &Extractor, scratch: &mut ExtractScratch, truth: &ImageTruth, prompt: &str, response: &str) -> DiagnosisRecord {
    let mut ex = Extraction::default();
    extractor.extract_into(response, scratch, &mut ex);
    diagnose_extraction(extractor.vocab(), &ex, truth, prompt, response)
}

/// Steps 3–4 on an extraction already made (the detector path extracts first to know what to
/// ask). Mentions of concepts in `unverified` must already be removed from `ex`.
pub fn diagnose_extraction(vocab: &Vocabulary, ex: &Extraction, truth: &ImageTruth, prompt: &str, response: &str) -> DiagnosisRecord {
    let view = TruthView::new(vocab, truth);
    let (hallucinations, scores) = check(vocab, response, ex, &view);
    let mut negated: Vec<String> = Vec::new();
    for (c, _) in &ex.negated {
        let name = vocab.name(*c);
        if !negated.iter().any(|n| n == name) {
            negated.push(name.to_string());
        }
    }
    DiagnosisRecord {
        schema_version: DIAGNOSIS_SCHEMA_VERSION,
        image: truth.image.clone(),
        file: truth.file.clone(),
        prompt: prompt.to_string(),
        response: response.to_string(),
        mentions: mentions_of(vocab, response, ex),
        negated,
        truth: truth.objects.clone(),
        hallucinations,
        scores,
        error: None,
        checked: None,
        unverified: Vec::new(),
        evidence: Vec::new(),
        tokens: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::truth::ObjectTruth;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn obj(name: &str, count: Option<u32>, color: Option<&str>) -> ObjectTruth {
        let mut attributes = BTreeMap::new();
        if let Some(c) = color {
            attributes.insert("color".to_string(), vec![c.to_string()]);
        }
        ObjectTruth { name: name.into(), count, attributes }
    }

    #[test]
    fn finds_object_count_and_attribute_hallucinations_with_evidence() {
        let e = Extractor::new(Arc::new(Vocabulary::coco80()));
        let truth = ImageTruth {
            image: "1".into(),
            file: None,
            objects: vec![obj("dog", Some(2), Some("brown")), obj("car", Some(1), Some("red")), obj("person", Some(3), None)],
        };
        let text = "Three dogs play near a blue car. A cat watches. There are no buses. Two men and a woman walk.";
        let d = diagnose(&e, &mut ExtractScratch::default(), &truth, "Describe.", text);
        let kinds: Vec<(&str, &str, &str)> =
            d.hallucinations.iter().map(|h| (h.kind.as_str(), h.concept.as_str(), h.evidence.as_str())).collect();
        assert_eq!(
            kinds,
            [("count", "dog", "Three dogs"), ("attribute", "car", "blue car"), ("object", "cat", "cat")],
            "{:#?}",
            d.hallucinations
        );
        assert_eq!(d.negated, ["bus"]);
        assert_eq!(d.scores.mentions, 5);
        assert_eq!(d.scores.hallucinated_mentions, 1);
        assert_eq!(d.scores.chair_s, 1.0);
        assert_eq!(d.scores.covered_objects, 3);
    }
}
