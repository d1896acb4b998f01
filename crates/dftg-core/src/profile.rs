//! The model's hallucination profile, built by folding mergeable shard summaries.
//!
//! A [`Summary`] is computed from one shard of diagnoses; summaries merge associatively and
//! commutatively, so a coordinator folds them as they arrive, in any order, in memory
//! proportional to the vocabulary (not the corpus). [`Profile::build`] turns the merged
//! summary into `profile.json`: per concept its mentions, hallucinations, opportunities,
//! rate, share and triggers (present objects whose co-occurrence with the hallucination is
//! most above chance).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::{DiagnosisRecord, HallucinationKind};
use crate::tokens::TokenUsage;

pub const PROFILE_SCHEMA_VERSION: u32 = 1;

/// Per-concept counters of a summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConceptCounts {
    /// Mentions in responses (repeats counted).
    pub mentions: u64,
    /// Images whose truth holds the concept.
    pub present: u64,
    /// Diagnosed images whose truth lacks the concept: the chances to hallucinate it.
    pub opportunities: u64,
    /// Images with an object hallucination of the concept.
    pub hallucinated: u64,
    pub count_hallucinations: u64,
    pub attribute_hallucinations: u64,
    /// Images where the concept is present but the response does not mention it.
    pub missed: u64,
    /// Images where the concept is present with a known count / known attributes.
    pub count_known: u64,
    pub attributes_known: u64,
    /// Images where a claim of the concept was left unverified (detector unsure, no judge).
    #[serde(default)]
    pub unverified: u64,
}

/// Mergeable counts of a set of diagnoses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub images: u64,
    pub failed_images: u64,
    pub errors_by_reason: BTreeMap<String, u64>,
    pub concepts: BTreeMap<String, ConceptCounts>,
    /// hallucinated concept → present concept → images with both.
    pub co_hallucinated: BTreeMap<String, BTreeMap<String, u64>>,
    /// present concept → present concept → images with both (upper triangle by name).
    pub co_present: BTreeMap<String, BTreeMap<String, u64>>,
    pub kinds: BTreeMap<HallucinationKind, u64>,
    pub mentions: u64,
    pub hallucinated_mentions: u64,
    pub hallucinated_images: u64,
    pub truth_objects: u64,
    pub covered_objects: u64,
    /// Tokens the model under diagnosis used (failed images included: a reply whose
    /// checking failed was still paid for). Summaries written before it read as zero.
    #[serde(default)]
    pub tokens: TokenUsage,
}

impl Summary {
    /// Adds one diagnosis. `vocabulary` lists every concept that can be hallucinated, so the
    /// opportunities of concepts absent from an image are counted.
    pub fn add(&mut self, d: &DiagnosisRecord, vocabulary: &[&str]) {
        if let Some(t) = d.tokens {
            self.tokens.add(t);
        }
        if let Some(err) = &d.error {
            self.failed_images += 1;
            *self.errors_by_reason.entry(err.reason.clone()).or_default() += 1;
            return;
        }
        self.images += 1;
        self.mentions += d.scores.mentions as u64;
        self.hallucinated_mentions += d.scores.hallucinated_mentions as u64;
        self.truth_objects += d.scores.truth_objects as u64;
        self.covered_objects += d.scores.covered_objects as u64;
        if d.scores.hallucinated_mentions > 0 {
            self.hallucinated_images += 1;
        }
        for m in &d.mentions {
            self.concepts.entry(m.concept.clone()).or_default().mentions += 1;
        }
        // a concept absent from the truth is a chance to hallucinate it, unless its claim was
        // left unverified (then nobody knows); with a detector, concepts nobody claimed are
        // assumed absent, as most concepts are from most images
        for name in vocabulary {
            if !d.truth.iter().any(|o| o.name == *name) && !d.unverified.iter().any(|u| u.concept == *name) {
                self.concepts.entry((*name).to_string()).or_default().opportunities += 1;
            }
        }
        for u in &d.unverified {
            self.concepts.entry(u.concept.clone()).or_default().unverified += 1;
        }
        for o in &d.truth {
            let c = self.concepts.entry(o.name.clone()).or_default();
            c.present += 1;
            if o.count.is_some() {
                c.count_known += 1;
            }
            if !o.attributes.is_empty() {
                c.attributes_known += 1;
            }
            if !d.mentions.iter().any(|m| m.concept == o.name) {
                c.missed += 1;
            }
        }
        for (i, a) in d.truth.iter().enumerate() {
            for b in &d.truth[i + 1..] {
                let (x, y) = if a.name <= b.name { (&a.name, &b.name) } else { (&b.name, &a.name) };
                *self.co_present.entry(x.clone()).or_default().entry(y.clone()).or_default() += 1;
            }
        }
        for h in &d.hallucinations {
            *self.kinds.entry(h.kind).or_default() += 1;
            let c = self.concepts.entry(h.concept.clone()).or_default();
            match h.kind {
                HallucinationKind::Object => {
                    c.hallucinated += 1;
                    let row = self.co_hallucinated.entry(h.concept.clone()).or_default();
                    for o in &d.truth {
                        *row.entry(o.name.clone()).or_default() += 1;
                    }
                }
                HallucinationKind::Count => c.count_hallucinations += 1,
                HallucinationKind::Attribute => c.attribute_hallucinations += 1,
            }
        }
    }

    pub fn merge(&mut self, other: &Summary) {
        self.images += other.images;
        self.failed_images += other.failed_images;
        for (k, v) in &other.errors_by_reason {
            *self.errors_by_reason.entry(k.clone()).or_default() += v;
        }
        for (k, o) in &other.concepts {
            let c = self.concepts.entry(k.clone()).or_default();
            c.mentions += o.mentions;
            c.present += o.present;
            c.opportunities += o.opportunities;
            c.hallucinated += o.hallucinated;
            c.count_hallucinations += o.count_hallucinations;
            c.attribute_hallucinations += o.attribute_hallucinations;
            c.missed += o.missed;
            c.count_known += o.count_known;
            c.attributes_known += o.attributes_known;
            c.unverified += o.unverified;
        }
        merge_nested(&mut self.co_hallucinated, &other.co_hallucinated);
        merge_nested(&mut self.co_present, &other.co_present);
        for (k, v) in &other.kinds {
            *self.kinds.entry(*k).or_default() += v;
        }
        self.mentions += other.mentions;
        self.hallucinated_mentions += other.hallucinated_mentions;
        self.hallucinated_images += other.hallucinated_images;
        self.truth_objects += other.truth_objects;
        self.covered_objects += other.covered_objects;
        self.tokens.add(other.tokens);
    }

    fn both_present(&self, a: &str, b: &str) -> u64 {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        self.co_present.get(x).and_then(|r| r.get(y)).copied().unwrap_or(0)
    }
}

fn merge_nested(into: &mut BTreeMap<String, BTreeMap<String, u64>>, from: &BTreeMap<String, BTreeMap<String, u64>>) {
    for (k, row) in from {
        let dst = into.entry(k.clone()).or_default();
        for (k2, v) in row {
            *dst.entry(k2.clone()).or_default() += v;
        }
    }
}

/// A present object that makes a hallucination more likely than chance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub concept: String,
    /// P(hallucinated | trigger present, concept absent) / P(hallucinated | concept absent).
    pub lift: f64,
    /// Images where the trigger was present and the concept hallucinated.
    pub co_occurrences: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptProfile {
    pub concept: String,
    pub mentions: u64,
    /// Images with an object hallucination of this concept.
    pub hallucinations: u64,
    pub opportunities: u64,
    /// hallucinations / opportunities.
    pub rate: f64,
    /// Share of all object hallucinations.
    pub share: f64,
    pub count_hallucinations: u64,
    pub attribute_hallucinations: u64,
    pub present: u64,
    pub missed: u64,
    pub triggers: Vec<Trigger>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub schema_version: u32,
    pub model: String,
    pub images: u64,
    pub failed_images: u64,
    pub errors_by_reason: BTreeMap<String, u64>,
    /// Hallucinations per kind ("object", "count", "attribute").
    pub totals: BTreeMap<String, u64>,
    pub chair_s: f64,
    pub chair_i: f64,
    pub recall: f64,
    /// Concepts with at least one hallucination or mention, most hallucinated first.
    pub concepts: Vec<ConceptProfile>,
}

/// Triggers kept per concept.
pub const MAX_TRIGGERS: usize = 5;
/// A trigger needs at least this many co-occurrences to be more than noise.
pub const MIN_TRIGGER_SUPPORT: u64 = 2;

impl Profile {
    pub fn build(model: &str, s: &Summary) -> Profile {
        let total_object: u64 = s.concepts.values().map(|c| c.hallucinated).sum();
        let mut concepts: Vec<ConceptProfile> = s
            .concepts
            .iter()
            .filter(|(_, c)| c.hallucinated + c.mentions + c.count_hallucinations + c.attribute_hallucinations > 0)
            .map(|(name, c)| ConceptProfile {
                concept: name.clone(),
                mentions: c.mentions,
                hallucinations: c.hallucinated,
                opportunities: c.opportunities,
                rate: ratio(c.hallucinated, c.opportunities),
                share: ratio(c.hallucinated, total_object),
                count_hallucinations: c.count_hallucinations,
                attribute_hallucinations: c.attribute_hallucinations,
                present: c.present,
                missed: c.missed,
                triggers: triggers(s, name, c),
            })
            .collect();
        concepts.sort_by(|a, b| b.hallucinations.cmp(&a.hallucinations).then(b.mentions.cmp(&a.mentions)).then(a.concept.cmp(&b.concept)));
        Profile {
            schema_version: PROFILE_SCHEMA_VERSION,
            model: model.to_string(),
            images: s.images,
            failed_images: s.failed_images,
            errors_by_reason: s.errors_by_reason.clone(),
            totals: HallucinationKind::ALL.iter().map(|k| (k.as_str().to_string(), s.kinds.get(k).copied().unwrap_or(0))).collect(),
            chair_s: ratio(s.hallucinated_images, s.images),
            chair_i: ratio(s.hallucinated_mentions, s.mentions),
            recall: ratio(s.covered_objects, s.truth_objects),
            concepts,
        }
    }

    pub fn concept(&self, name: &str) -> Option<&ConceptProfile> {
        self.concepts.iter().find(|c| c.concept == name)
    }
}

fn triggers(s: &Summary, name: &str, c: &ConceptCounts) -> Vec<Trigger> {
    let Some(row) = s.co_hallucinated.get(name) else {
        return Vec::new();
    };
    let base = ratio(c.hallucinated, c.opportunities);
    if base == 0.0 {
        return Vec::new();
    }
    let mut out: Vec<Trigger> = row
        .iter()
        // a trigger must explain a real part of the hallucinations, not a rare coincidence
        .filter(|(t, n)| t.as_str() != name && **n >= MIN_TRIGGER_SUPPORT.max(c.hallucinated.div_ceil(10)))
        .filter_map(|(t, &n)| {
            let present = s.concepts.get(t)?.present;
            // images where the trigger is present and the concept absent
            let chances = present.saturating_sub(s.both_present(name, t));
            let lift = ratio(n, chances) / base;
            (lift > 1.0).then(|| Trigger { concept: t.clone(), lift: round4(lift), co_occurrences: n })
        })
        .collect();
    out.sort_by(|a, b| b.lift.total_cmp(&a.lift).then(b.co_occurrences.cmp(&a.co_occurrences)).then(a.concept.cmp(&b.concept)));
    out.truncate(MAX_TRIGGERS);
    out
}

pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::diagnose;
    use crate::extract::{ExtractScratch, Extractor};
    use crate::truth::{ImageTruth, ObjectTruth};
    use crate::vocab::Vocabulary;
    use std::sync::Arc;

    fn truth(key: &str, names: &[&str]) -> ImageTruth {
        ImageTruth {
            image: key.into(),
            file: None,
            objects: names.iter().map(|n| ObjectTruth { name: n.to_string(), count: None, attributes: Default::default() }).collect(),
        }
    }

    fn records() -> Vec<DiagnosisRecord> {
        let e = Extractor::new(Arc::new(Vocabulary::coco80()));
        let mut s = ExtractScratch::default();
        let cases = [
            (truth("1", &["dining table", "pizza"]), "A pizza on a table with a fork."),
            (truth("2", &["dining table", "cake"]), "A cake on a table with a fork and a knife."),
            (truth("3", &["dog"]), "A dog."),
            (truth("4", &["dog", "frisbee"]), "A dog catches a frisbee. A man watches."),
            (truth("5", &["dining table", "sandwich"]), "A sandwich on a table, a fork nearby."),
        ];
        cases
            .iter()
            .enumerate()
            .map(|(i, (t, r))| DiagnosisRecord { tokens: Some(TokenUsage::new(10, i as u64)), ..diagnose(&e, &mut s, t, "p", r) })
            .collect()
    }

    #[test]
    fn merge_is_order_independent_and_profile_finds_triggers() {
        let vocab = Vocabulary::coco80();
        let names: Vec<&str> = vocab.concepts().iter().map(|c| c.name.as_str()).collect();
        let recs = records();
        let mut whole = Summary::default();
        recs.iter().for_each(|r| whole.add(r, &names));
        let mut a = Summary::default();
        let mut b = Summary::default();
        recs[..2].iter().for_each(|r| a.add(r, &names));
        recs[2..].iter().for_each(|r| b.add(r, &names));
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ba, whole);
        assert_eq!(whole.tokens, TokenUsage::new(50, 10));
        // a summary written before tokens were counted still reads
        let mut old = serde_json::to_value(&whole).unwrap();
        old.as_object_mut().unwrap().remove("tokens");
        assert_eq!(serde_json::from_value::<Summary>(old).unwrap().tokens, TokenUsage::default());
        let p = Profile::build("m", &whole);
        assert_eq!(p.concepts[0].concept, "fork");
        assert_eq!(p.concepts[0].hallucinations, 3);
        assert_eq!(p.concepts[0].opportunities, 5);
        assert!((p.concepts[0].share - 3.0 / 5.0).abs() < 1e-12);
        let t: Vec<&str> = p.concepts[0].triggers.iter().map(|t| t.concept.as_str()).collect();
        assert_eq!(t, ["dining table"]);
        assert_eq!(p.totals["object"], 5);
        assert!((p.chair_s - 4.0 / 5.0).abs() < 1e-12);
    }
}
