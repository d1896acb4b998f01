//! The verification gate: nothing reaches the dataset unchecked, whoever wrote it.
//!
//! 1. shape and length ([`super::parse_reply`], before this);
//! 2. the answers' claims, read by the job's extractor (negation-aware), hold no absent object,
//!    wrong count or wrong attribute of the image's truth;
//! 3. type rules: a negative's question names the target and its answer denies it; a positive
//!    affirms; a count answer states the true count; an attribute answer states the value; a
//!    corrected description keeps ≥ 90% of the original's correct mentions; a false premise is
//!    corrected; a multi-turn conversation asks about the target and answers it right;
//! 4. no duplicate of an item already accepted for the image (normalised text).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::check::diagnose_extraction;
use crate::extract::{ExtractScratch, Extraction, Extractor};
use crate::llava::InstructionType;
use crate::record::HallucinationKind;
use crate::truth::{ImageTruth, ObjectTruth};

use super::{normalise, ReplyError, WrittenItem};

/// Share of the original's correct mentions a corrected description must keep.
pub const MIN_KEPT: f64 = 0.9;

/// Why an item was refused. The names are the `reason` of `writer/rejections.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    MalformedJson,
    MissingField,
    Length,
    AbsentObject,
    WrongCount,
    WrongAttribute,
    QuestionMissingTarget,
    AffirmsTarget,
    DeniesTarget,
    CountNotStated,
    AttributeNotStated,
    PremiseNotCorrected,
    LostContent,
    Duplicate,
    /// The writer's transport failed (timeouts, errors after retries): nothing to check.
    WriterFailed,
}

impl Rejection {
    pub const ALL: [Rejection; 15] = [
        Rejection::MalformedJson,
        Rejection::MissingField,
        Rejection::Length,
        Rejection::AbsentObject,
        Rejection::WrongCount,
        Rejection::WrongAttribute,
        Rejection::QuestionMissingTarget,
        Rejection::AffirmsTarget,
        Rejection::DeniesTarget,
        Rejection::CountNotStated,
        Rejection::AttributeNotStated,
        Rejection::PremiseNotCorrected,
        Rejection::LostContent,
        Rejection::Duplicate,
        Rejection::WriterFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MalformedJson => "malformed_json",
            Rejection::MissingField => "missing_field",
            Rejection::Length => "length",
            Rejection::AbsentObject => "absent_object",
            Rejection::WrongCount => "wrong_count",
            Rejection::WrongAttribute => "wrong_attribute",
            Rejection::QuestionMissingTarget => "question_missing_target",
            Rejection::AffirmsTarget => "affirms_target",
            Rejection::DeniesTarget => "denies_target",
            Rejection::CountNotStated => "count_not_stated",
            Rejection::AttributeNotStated => "attribute_not_stated",
            Rejection::PremiseNotCorrected => "premise_not_corrected",
            Rejection::LostContent => "lost_content",
            Rejection::Duplicate => "duplicate",
            Rejection::WriterFailed => "writer_failed",
        }
    }

    /// What the writer is told when asked to rewrite.
    pub fn advice(self) -> &'static str {
        match self {
            Rejection::MalformedJson => "the reply was not one JSON object; reply with JSON only",
            Rejection::MissingField => "the reply lacked a required field of the schema",
            Rejection::Length => "a field was empty or too long",
            Rejection::AbsentObject => "the answer asserts an object that is not in the image; state only objects listed in the facts",
            Rejection::WrongCount => "the answer states a wrong count; use the counts in the facts",
            Rejection::WrongAttribute => "the answer states a wrong attribute; use only the attribute values in the facts",
            Rejection::QuestionMissingTarget => "the question must name the target object",
            Rejection::AffirmsTarget => "the target is not in the image: the answer must clearly say it is not there",
            Rejection::DeniesTarget => "the target is in the image: the answer must say so",
            Rejection::CountNotStated => "the answer must state the target's count with its name",
            Rejection::AttributeNotStated => "the answer must state the asked attribute of the target with its name",
            Rejection::PremiseNotCorrected => "the question presumes an absent object: the answer must say it is not in the image",
            Rejection::LostContent => "the corrected description dropped correct content; keep every correct claim of the original",
            Rejection::Duplicate => "this question was already asked about this image; write a different one",
            Rejection::WriterFailed => "the writer did not answer",
        }
    }
}

impl From<ReplyError> for Rejection {
    fn from(e: ReplyError) -> Self {
        match e {
            ReplyError::MalformedJson => Rejection::MalformedJson,
            ReplyError::MissingField => Rejection::MissingField,
            ReplyError::Length => Rejection::Length,
        }
    }
}

/// What the gate checks one item against (vocabulary names, not natural names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateInput {
    pub kind: InstructionType,
    pub image: String,
    pub truth: Vec<ObjectTruth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_family: Option<String>,
    /// Corrected descriptions: the original's correct mentions, one entry per mention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub original_correct: Vec<String>,
}

impl GateInput {
    fn target_present(&self) -> bool {
        self.target.as_deref().is_some_and(|t| self.truth.iter().any(|o| o.name == t))
    }
}

/// Items accepted so far, per image (shards partition images, so per shard is per job).
#[derive(Debug, Default)]
pub struct Accepted {
    questions: BTreeMap<String, BTreeSet<String>>,
}

impl Accepted {
    pub fn is_duplicate(&self, image: &str, item: &WrittenItem) -> bool {
        self.questions.get(image).is_some_and(|seen| item.turns.iter().any(|t| seen.contains(&normalise(&t.question))))
    }

    pub fn insert(&mut self, image: &str, item: &WrittenItem) {
        let seen = self.questions.entry(image.to_string()).or_default();
        for t in &item.turns {
            seen.insert(normalise(&t.question));
        }
    }

    /// Questions already accepted for `image`, for the writer's `avoid` list.
    pub fn questions_for(&self, image: &str) -> Vec<String> {
        self.questions.get(image).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

struct Reading {
    asserted: BTreeSet<String>,
    negated: BTreeSet<String>,
}

fn read(extractor: &Extractor, scratch: &mut ExtractScratch, text: &str) -> (Reading, Extraction) {
    let mut ex = Extraction::default();
    extractor.extract_into(text, scratch, &mut ex);
    let vocab = extractor.vocab();
    let asserted = ex.mentions.iter().map(|m| vocab.name(m.concept).to_string()).collect();
    let negated = ex.negated.iter().map(|(c, _)| vocab.name(*c).to_string()).collect();
    (Reading { asserted, negated }, ex)
}

fn denies(r: &Reading, target: &str) -> bool {
    r.negated.contains(target) && !r.asserted.contains(target)
}

/// Checks one written item; `Ok` means it may enter the dataset.
pub fn verify(
    extractor: &Extractor,
    scratch: &mut ExtractScratch,
    input: &GateInput,
    item: &WrittenItem,
    accepted: &Accepted,
) -> Result<(), Rejection> {
    if item.turns.is_empty() {
        return Err(Rejection::MissingField);
    }
    let truth = ImageTruth { image: input.image.clone(), file: None, objects: input.truth.clone() };
    let target = input.target.as_deref();
    let present = input.target_present();
    let mut names_target = false;
    for turn in &item.turns {
        let (q, _) = read(extractor, scratch, &turn.question);
        // the answer is read once: the type rules, the claims check and the attribute check share it
        let (a, ex) = read(extractor, scratch, &turn.answer);
        let asks = target.is_some_and(|t| q.asserted.contains(t) || q.negated.contains(t));
        names_target |= asks;
        let answer_mentions_target = target.is_some_and(|t| a.asserted.contains(t));
        // type rules first: their reasons say more than the claims check would
        match input.kind {
            InstructionType::NegativeExistence | InstructionType::FalsePremise => {
                let t = target.ok_or(Rejection::QuestionMissingTarget)?;
                if !asks {
                    return Err(Rejection::QuestionMissingTarget);
                }
                if !denies(&a, t) {
                    return Err(if input.kind == InstructionType::FalsePremise && !answer_mentions_target {
                        Rejection::PremiseNotCorrected
                    } else {
                        Rejection::AffirmsTarget
                    });
                }
            }
            InstructionType::PositiveExistence | InstructionType::Count | InstructionType::Attribute => {
                let t = target.ok_or(Rejection::QuestionMissingTarget)?;
                if !asks {
                    return Err(Rejection::QuestionMissingTarget);
                }
                if a.negated.contains(t) || !answer_mentions_target || starts_with_no(&turn.answer) {
                    return Err(Rejection::DeniesTarget);
                }
            }
            InstructionType::MultiTurn => {
                if let Some(t) = target.filter(|_| asks) {
                    if !present && !denies(&a, t) {
                        return Err(Rejection::AffirmsTarget);
                    }
                    if present && (a.negated.contains(t) || starts_with_no(&turn.answer)) {
                        return Err(Rejection::DeniesTarget);
                    }
                }
            }
            InstructionType::CorrectedDescription => {}
        }
        let d = diagnose_extraction(extractor.vocab(), &ex, &truth, "", &turn.answer);
        let said_after = predicative_attributes(extractor, &turn.answer, &ex);
        let wrong_after = said_after.iter().any(|(c, family, value)| {
            truth.objects.iter().any(|o| o.name == *c && o.attributes.get(family).is_some_and(|known| !known.contains(value)))
        });
        if wrong_after && d.hallucinations.iter().all(|h| h.kind == HallucinationKind::Attribute) {
            return Err(Rejection::WrongAttribute);
        }
        if let Some(h) = d.hallucinations.iter().min_by_key(|h| h.kind) {
            return Err(match h.kind {
                HallucinationKind::Object => Rejection::AbsentObject,
                HallucinationKind::Count => Rejection::WrongCount,
                HallucinationKind::Attribute => Rejection::WrongAttribute,
            });
        }
        match input.kind {
            InstructionType::Count => {
                let (t, n) = (target.unwrap_or_default(), input.target_count.ok_or(Rejection::CountNotStated)?);
                let stated = d.mentions.iter().any(|m| m.concept == t && (m.count == Some(n) || (n == 1 && m.count.is_none())));
                if !stated {
                    return Err(Rejection::CountNotStated);
                }
            }
            InstructionType::Attribute => {
                let t = target.unwrap_or_default();
                let family = input.target_family.as_deref();
                let stated = d.mentions.iter().any(|m| m.concept == t && m.attributes.iter().any(|a| family.is_none_or(|f| a.family == f)))
                    || said_after.iter().any(|(c, f, _)| c == t && family.is_none_or(|x| x == f));
                if !stated {
                    return Err(Rejection::AttributeNotStated);
                }
            }
            InstructionType::CorrectedDescription if kept_share(extractor, scratch, &input.original_correct, &turn.answer) < MIN_KEPT => {
                return Err(Rejection::LostContent);
            }
            _ => {}
        }
    }
    if target.is_some() && input.kind != InstructionType::CorrectedDescription && !names_target {
        return Err(Rejection::QuestionMissingTarget);
    }
    if accepted.is_duplicate(&input.image, item) {
        return Err(Rejection::Duplicate);
    }
    Ok(())
}

/// "The frisbee is red and white", "The TV in the image is black", "The bananas appear to be
/// green": attributes said after a copula, which the caption extractor (built for descriptions'
/// prenominal adjectives) does not attach. Returns (concept, family, value).
fn predicative_attributes(extractor: &Extractor, text: &str, ex: &Extraction) -> Vec<(String, String, String)> {
    const COPULAS: [&str; 10] = ["is", "are", "was", "were", "looks", "look", "appears", "appear", "seems", "seem"];
    // words between the copula and the value ("appear to be mostly light green")
    const FILLERS: [&str; 16] =
        ["a", "an", "to", "be", "mostly", "all", "light", "dark", "bright", "and", "or", "both", "colored", "coloured", "in", "color"];
    // at most this many words between the noun and its copula ("in the image", "here")
    const MAX_GAP: usize = 4;
    let vocab = extractor.vocab();
    let mut out = Vec::new();
    for (i, m) in ex.mentions.iter().enumerate() {
        let end = ex.mentions.get(i + 1).map(|n| n.span.0 as usize).unwrap_or(text.len());
        let rest = text.get(m.span.1 as usize..end.max(m.span.1 as usize)).unwrap_or("");
        // the clause right after the noun: stop at sentence or clause punctuation
        let clause = rest.split(['.', ';', '!', '?', ':', ',']).next().unwrap_or("");
        let words: Vec<String> =
            clause.split(|c: char| !c.is_alphanumeric() && c != '-').filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
        let Some(at) = words.iter().take(MAX_GAP + 1).position(|w| COPULAS.contains(&w.as_str())) else { continue };
        for w in &words[at + 1..] {
            if let Some(id) = vocab.attribute_word(w) {
                let (family, value) = vocab.attribute_name(id);
                out.push((vocab.name(m.concept).to_string(), family.to_string(), value.to_string()));
            } else if !FILLERS.contains(&w.as_str()) {
                break;
            }
        }
    }
    out
}

/// Share of `original` (one concept name per correct mention) that `text` still mentions,
/// counted with multiplicity; 1 when there was nothing to keep.
pub fn kept_share(extractor: &Extractor, scratch: &mut ExtractScratch, original: &[String], text: &str) -> f64 {
    let (_, ex) = read(extractor, scratch, text);
    kept_of(original, ex.mentions.iter().map(|m| extractor.vocab().name(m.concept)))
}

/// [`kept_share`] over mentions already read (concept names, one per mention).
fn kept_of<'a>(original: &[String], mentions: impl Iterator<Item = &'a str>) -> f64 {
    if original.is_empty() {
        return 1.0;
    }
    let mut have: BTreeMap<&str, usize> = BTreeMap::new();
    for m in mentions {
        *have.entry(m).or_default() += 1;
    }
    let mut kept = 0usize;
    for c in original {
        if let Some(n) = have.get_mut(c.as_str()).filter(|n| **n > 0) {
            *n -= 1;
            kept += 1;
        }
    }
    kept as f64 / original.len() as f64
}

fn starts_with_no(answer: &str) -> bool {
    let first = answer.trim_start().split(|c: char| !c.is_alphanumeric()).next().unwrap_or("");
    first.eq_ignore_ascii_case("no")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::QaPair;
    use std::sync::Arc;

    fn setup() -> (Extractor, ExtractScratch) {
        (Extractor::new(Arc::new(crate::vocab::Vocabulary::coco80())), ExtractScratch::default())
    }

    fn truth() -> Vec<ObjectTruth> {
        vec![
            ObjectTruth { name: "dog".into(), count: Some(2), attributes: [("color".to_string(), vec!["black".to_string()])].into() },
            ObjectTruth { name: "frisbee".into(), count: Some(1), attributes: [("color".to_string(), vec!["red".to_string()])].into() },
        ]
    }

    fn input(kind: InstructionType, target: &str) -> GateInput {
        GateInput {
            kind,
            image: "img".into(),
            truth: truth(),
            target: Some(target.into()),
            target_count: truth().iter().find(|o| o.name == target).and_then(|o| o.count),
            target_family: (kind == InstructionType::Attribute).then(|| "color".to_string()),
            original_correct: vec![],
        }
    }

    fn qa(q: &str, a: &str) -> WrittenItem {
        WrittenItem { turns: vec![QaPair { question: q.into(), answer: a.into() }] }
    }

    #[test]
    fn negatives_must_deny_the_target_and_claim_only_what_is_there() {
        let (e, mut s) = setup();
        let acc = Accepted::default();
        let i = input(InstructionType::NegativeExistence, "cat");
        let check = |item: &WrittenItem, s: &mut ExtractScratch| verify(&e, s, &i, item, &acc);
        assert_eq!(check(&qa("Is there a cat here?", "No, there is no cat. Two dogs play with a red frisbee."), &mut s), Ok(()));
        assert_eq!(check(&qa("Is there a cat here?", "Yes, a cat sits by the dogs."), &mut s), Err(Rejection::AffirmsTarget));
        assert_eq!(check(&qa("What is in the picture?", "There is no cat."), &mut s), Err(Rejection::QuestionMissingTarget));
        assert_eq!(check(&qa("Is there a cat?", "No cat, but a man throws a frisbee."), &mut s), Err(Rejection::AbsentObject));
        assert_eq!(check(&qa("Is there a cat?", "No cat; three dogs play."), &mut s), Err(Rejection::WrongCount));
        assert_eq!(check(&qa("Is there a cat?", "No cat; the frisbee is blue."), &mut s), Err(Rejection::WrongAttribute));
    }

    #[test]
    fn positives_counts_attributes_and_premises_follow_their_rules() {
        let (e, mut s) = setup();
        let acc = Accepted::default();
        let pos = input(InstructionType::PositiveExistence, "dog");
        assert_eq!(verify(&e, &mut s, &pos, &qa("Are there dogs?", "Yes, there are two dogs."), &acc), Ok(()));
        assert_eq!(verify(&e, &mut s, &pos, &qa("Are there dogs?", "No, there are no dogs."), &acc), Err(Rejection::DeniesTarget));
        let cnt = input(InstructionType::Count, "dog");
        assert_eq!(verify(&e, &mut s, &cnt, &qa("How many dogs are there?", "There are two dogs."), &acc), Ok(()));
        assert_eq!(verify(&e, &mut s, &cnt, &qa("How many dogs are there?", "There are three dogs."), &acc), Err(Rejection::WrongCount));
        assert_eq!(verify(&e, &mut s, &cnt, &qa("How many dogs are there?", "I see dogs."), &acc), Err(Rejection::CountNotStated));
        let att = input(InstructionType::Attribute, "frisbee");
        assert_eq!(verify(&e, &mut s, &att, &qa("What color is the frisbee?", "The frisbee is red."), &acc), Ok(()));
        for said in ["The frisbee in the image is red.", "The frisbee appears to be red.", "The frisbee here is red."] {
            assert_eq!(verify(&e, &mut s, &att, &qa("What color is the frisbee?", said), &acc), Ok(()), "{said}");
        }
        let wrong = qa("What color is the frisbee?", "The frisbee in this photo appears to be green.");
        assert_eq!(verify(&e, &mut s, &att, &wrong, &acc), Err(Rejection::WrongAttribute));
        assert_eq!(
            verify(&e, &mut s, &att, &qa("What color is the frisbee?", "The frisbee is green."), &acc),
            Err(Rejection::WrongAttribute)
        );
        let fp = input(InstructionType::FalsePremise, "cat");
        assert_eq!(verify(&e, &mut s, &fp, &qa("What color is the cat's collar?", "There is no cat in this image."), &acc), Ok(()));
        assert_eq!(
            verify(&e, &mut s, &fp, &qa("What color is the cat's collar?", "The collar is red."), &acc),
            Err(Rejection::PremiseNotCorrected)
        );
    }

    #[test]
    fn duplicates_and_lost_content_are_refused() {
        let (e, mut s) = setup();
        let mut acc = Accepted::default();
        let i = input(InstructionType::NegativeExistence, "cat");
        let item = qa("Is there a cat here?", "No, there is no cat.");
        assert_eq!(verify(&e, &mut s, &i, &item, &acc), Ok(()));
        acc.insert("img", &item);
        assert_eq!(verify(&e, &mut s, &i, &qa("Is there a CAT here", "No cat at all."), &acc), Err(Rejection::Duplicate));
        let mut c = input(InstructionType::CorrectedDescription, "dog");
        c.target = None;
        c.original_correct = vec!["dog".into(), "frisbee".into()];
        assert_eq!(verify(&e, &mut s, &c, &qa("Describe.", "Two dogs chase a red frisbee."), &acc), Ok(()));
        assert_eq!(verify(&e, &mut s, &c, &qa("Describe.", "Two dogs run."), &acc), Err(Rejection::LostContent));
    }

    #[test]
    fn multi_turn_answers_the_target_right() {
        let (e, mut s) = setup();
        let acc = Accepted::default();
        let i = input(InstructionType::MultiTurn, "cat");
        let good = WrittenItem {
            turns: vec![
                QaPair { question: "How many dogs are there?".into(), answer: "There are two dogs.".into() },
                QaPair { question: "Is there a cat?".into(), answer: "No, there is no cat.".into() },
            ],
        };
        assert_eq!(verify(&e, &mut s, &i, &good, &acc), Ok(()));
        let mut bad = good.clone();
        bad.turns[1].answer = "Yes, there is a cat.".into();
        assert_eq!(verify(&e, &mut s, &i, &bad, &acc), Err(Rejection::AffirmsTarget));
        let mut missing = good.clone();
        missing.turns.truncate(1);
        assert_eq!(verify(&e, &mut s, &i, &missing, &acc), Err(Rejection::QuestionMissingTarget));
    }
}
