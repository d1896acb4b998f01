//! Targeted data generation (the second stage of DFTG).
//!
//! Global allocation, local selection:
//! 1. [`plan_generation`] splits the budget over instruction types and over concepts by their
//!    share of the profile (a temperature flattens or sharpens it; a floor per concept);
//! 2. [`allocate_to_shards`] splits each concept's quota across shards in proportion to the
//!    shards' candidates (images where the model hallucinated the concept first);
//! 3. [`generate_shard`] picks, inside one shard, the best-ranked candidates for its quota and
//!    writes LLaVA records: negatives where the concept is absent (most tempting first:
//!    hallucinated here, then triggers present), balancing positives, count and attribute
//!    questions, and the model's own descriptions corrected.
//!
//! Every choice is seeded by (job seed, image key, concept): same output for any sharding.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::correct::correct_description;
use crate::english::number_words;
use crate::extract::{ExtractScratch, Extractor};
use crate::llava::{InstructionMeta, InstructionType, LlavaRecord, Turn, WriterMeta};
use crate::profile::{Profile, Summary};
use crate::record::{DiagnosisRecord, Hallucination, HallucinationKind};
use crate::seed::{rng_for, stable_hash};
use crate::truth::ObjectTruth;
use crate::vocab::Vocabulary;
use crate::writer::gate::{verify, Accepted, GateInput, Rejection};
use crate::writer::{FactAttribute, FactError, FactObject, Facts, WrittenItem};
use crate::CoreError;

pub const GENERATION_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationConfig {
    /// Total instructions; `None`: twice the number of diagnosed images.
    pub budget: Option<u64>,
    /// Share exponent 1/T: T > 1 flattens toward uniform, T < 1 sharpens.
    pub temperature: f64,
    /// Minimum negatives per targeted concept (when the budget allows).
    pub floor: u64,
    /// Positives per negative.
    pub positive_ratio: f64,
    pub count_fraction: f64,
    pub attribute_fraction: f64,
    pub correction_fraction: f64,
    /// Questions that presume an absent target ("What color is the dog?"), answered by
    /// correcting the premise.
    pub false_premise_fraction: f64,
    /// Conversations about one image with the target among their turns.
    pub multi_turn_fraction: f64,
    /// Turns of a multi-turn conversation.
    pub multi_turn_turns: u32,
    /// Concepts targeted at most (most hallucinated first).
    pub max_concepts: usize,
    /// Who writes the items (`[generation.writer]`).
    pub writer: crate::writer::WriterSpec,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            budget: None,
            temperature: 1.0,
            floor: 2,
            positive_ratio: 1.0,
            count_fraction: 0.1,
            attribute_fraction: 0.1,
            correction_fraction: 0.15,
            false_premise_fraction: 0.08,
            multi_turn_fraction: 0.08,
            multi_turn_turns: 3,
            max_concepts: 30,
            writer: crate::writer::WriterSpec::default(),
        }
    }
}

impl GenerationConfig {
    pub fn validate(&self) -> Result<(), CoreError> {
        let f = |name: &str, v: f64, lo: f64, hi: f64| {
            if !(lo..=hi).contains(&v) || v.is_nan() {
                Err(CoreError::invalid(format!("generation.{name}"), format!("{v} is outside [{lo}, {hi}]")))
            } else {
                Ok(())
            }
        };
        f("temperature", self.temperature, 0.05, 100.0)?;
        f("positive_ratio", self.positive_ratio, 0.0, 10.0)?;
        f("count_fraction", self.count_fraction, 0.0, 1.0)?;
        f("attribute_fraction", self.attribute_fraction, 0.0, 1.0)?;
        f("correction_fraction", self.correction_fraction, 0.0, 1.0)?;
        f("false_premise_fraction", self.false_premise_fraction, 0.0, 1.0)?;
        f("multi_turn_fraction", self.multi_turn_fraction, 0.0, 1.0)?;
        let typed = self.count_fraction
            + self.attribute_fraction
            + self.correction_fraction
            + self.false_premise_fraction
            + self.multi_turn_fraction;
        if typed > 1.0 {
            return Err(CoreError::invalid(
                "generation",
                "count, attribute, correction, false premise and multi-turn fractions sum above 1",
            ));
        }
        if !(crate::writer::MIN_TURNS as u32..=4).contains(&self.multi_turn_turns) {
            return Err(CoreError::invalid("generation.multi_turn_turns", "must be between 2 and 4"));
        }
        self.writer.validate()?;
        if self.max_concepts == 0 {
            return Err(CoreError::invalid("generation.max_concepts", "must be at least 1"));
        }
        Ok(())
    }
}

/// Instructions of each type for one concept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quota {
    pub negative: u64,
    pub positive: u64,
    pub count: u64,
    pub attribute: u64,
    pub false_premise: u64,
    pub multi_turn: u64,
}

impl Quota {
    pub fn total(&self) -> u64 {
        self.negative + self.positive + self.count + self.attribute + self.false_premise + self.multi_turn
    }
}

/// The corpus-wide split of the budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationPlan {
    pub budget: u64,
    pub concepts: BTreeMap<String, Quota>,
    pub corrections: u64,
    /// Turns of each multi-turn conversation.
    #[serde(default = "default_turns")]
    pub turns: u32,
}

fn default_turns() -> u32 {
    GenerationConfig::default().multi_turn_turns
}

/// Splits `total` in proportion to `weights` (largest remainder, ties to the lower index),
/// never giving an index more than its cap.
pub fn allocate_capped(total: u64, weights: &[f64], caps: &[u64]) -> Vec<u64> {
    let n = weights.len();
    let mut out = vec![0u64; n];
    let mut left = total.min(caps.iter().sum());
    // repeat: caps may bind, freeing budget for the others
    while left > 0 {
        let open: Vec<usize> = (0..n).filter(|&i| out[i] < caps[i] && weights[i] > 0.0).collect();
        if open.is_empty() {
            break;
        }
        let wsum: f64 = open.iter().map(|&i| weights[i]).sum();
        let mut given = 0u64;
        let mut rems: Vec<(f64, usize)> = Vec::with_capacity(open.len());
        for &i in &open {
            let exact = left as f64 * weights[i] / wsum;
            let room = caps[i] - out[i];
            let take = (exact.floor() as u64).min(room);
            out[i] += take;
            given += take;
            rems.push((exact - exact.floor(), i));
        }
        let mut rest = left - given;
        rems.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, i) in rems {
            if rest == 0 {
                break;
            }
            if out[i] < caps[i] {
                out[i] += 1;
                rest -= 1;
            }
        }
        if rest == left {
            break;
        }
        left = rest;
    }
    out
}

/// The global plan from the merged profile and summary.
pub fn plan_generation(profile: &Profile, summary: &Summary, cfg: &GenerationConfig) -> GenerationPlan {
    let budget = cfg.budget.unwrap_or(summary.images * 2);
    let corrections = ((budget as f64 * cfg.correction_fraction).round() as u64).min(summary.hallucinated_images);
    let rest = budget - corrections;
    let any_count = summary.concepts.values().any(|c| c.count_known > 0);
    let any_attr = summary.concepts.values().any(|c| c.attributes_known > 0);
    let counts = if any_count { (rest as f64 * cfg.count_fraction).round() as u64 } else { 0 };
    let attrs = if any_attr { (rest as f64 * cfg.attribute_fraction).round() as u64 } else { 0 };
    let premises = (rest as f64 * cfg.false_premise_fraction).round() as u64;
    let conversations = (rest as f64 * cfg.multi_turn_fraction).round() as u64;
    let existence = rest.saturating_sub(counts + attrs + premises + conversations);
    let negatives = (existence as f64 / (1.0 + cfg.positive_ratio)).round() as u64;

    let targeted: Vec<&crate::profile::ConceptProfile> =
        profile.concepts.iter().filter(|c| c.hallucinations > 0).take(cfg.max_concepts).collect();
    let mut plan = GenerationPlan { budget, concepts: BTreeMap::new(), corrections, turns: cfg.multi_turn_turns };
    if targeted.is_empty() {
        return plan;
    }
    let weights: Vec<f64> = targeted.iter().map(|c| c.share.powf(1.0 / cfg.temperature)).collect();
    let caps: Vec<u64> = targeted.iter().map(|c| c.opportunities).collect();
    // the floor first, then the rest by weight
    let floors: Vec<u64> = caps.iter().map(|&cap| cfg.floor.min(cap)).collect();
    let floor_total: u64 = floors.iter().sum();
    let mut neg = if floor_total <= negatives { floors.clone() } else { allocate_capped(negatives, &vec![1.0; targeted.len()], &floors) };
    let remaining_caps: Vec<u64> = caps.iter().zip(&neg).map(|(c, n)| c - n).collect();
    let extra = allocate_capped(negatives.saturating_sub(neg.iter().sum()), &weights, &remaining_caps);
    for (n, e) in neg.iter_mut().zip(extra) {
        *n += e;
    }
    let present = |name: &str| summary.concepts.get(name).map(|c| c.present).unwrap_or(0);
    // false premises and conversations go where negatives go, on the other absent images
    let spare: Vec<u64> = caps.iter().zip(&neg).map(|(c, n)| c - n).collect();
    let fp = allocate_capped(premises, &weights, &spare);
    let spare: Vec<u64> = spare.iter().zip(&fp).map(|(c, n)| c - n).collect();
    let mt = allocate_capped(conversations, &weights, &spare);
    for (i, (c, n)) in targeted.iter().zip(&neg).enumerate() {
        let positive = ((*n as f64 * cfg.positive_ratio).round() as u64).min(present(&c.concept));
        let quota = Quota { negative: *n, positive, false_premise: fp[i], multi_turn: mt[i], ..Quota::default() };
        plan.concepts.insert(c.concept.clone(), quota);
    }
    plan.turns = cfg.multi_turn_turns;
    // count and attribute questions: where this model miscounts / misnames attributes, else
    // on the targeted concepts, always where the truth knows the answer
    let spread = |total: u64, known: &dyn Fn(&str) -> u64, errors: &dyn Fn(&str) -> u64| -> Vec<(String, u64)> {
        let names: Vec<&String> = summary.concepts.iter().filter(|(n, _)| known(n) > 0).map(|(n, _)| n).collect();
        let has_errors = names.iter().any(|n| errors(n) > 0);
        let weights: Vec<f64> = names
            .iter()
            .map(|n| {
                let w = if has_errors { errors(n) as f64 } else { 0.0 };
                let t = targeted.iter().find(|c| &c.concept == *n).map(|c| c.share).unwrap_or(0.0);
                w + t * 0.5 + 1e-3
            })
            .collect();
        let caps: Vec<u64> = names.iter().map(|n| known(n)).collect();
        names.into_iter().cloned().zip(allocate_capped(total, &weights, &caps)).collect()
    };
    let sc = |n: &str| summary.concepts.get(n).cloned().unwrap_or_default();
    for (name, k) in spread(counts, &|n| sc(n).count_known, &|n| sc(n).count_hallucinations) {
        if k > 0 {
            plan.concepts.entry(name).or_default().count = k;
        }
    }
    for (name, k) in spread(attrs, &|n| sc(n).attributes_known, &|n| sc(n).attribute_hallucinations) {
        if k > 0 {
            plan.concepts.entry(name).or_default().attribute = k;
        }
    }
    plan
}

/// What one generator shard must produce.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardQuota {
    pub concepts: BTreeMap<String, Quota>,
    pub corrections: u64,
    #[serde(default = "default_turns")]
    pub turns: u32,
}

/// Splits the plan across shards in proportion to each shard's candidates (from the shards'
/// summaries): images where the model hallucinated the concept first, then other chances.
pub fn allocate_to_shards(plan: &GenerationPlan, shards: &[Summary]) -> Vec<ShardQuota> {
    let mut out = vec![ShardQuota { turns: plan.turns, ..ShardQuota::default() }; shards.len()];
    let get = |s: &Summary, n: &str| s.concepts.get(n).cloned().unwrap_or_default();
    let split = |total: u64, caps: Vec<u64>| allocate_capped(total, &caps.iter().map(|&c| c as f64).collect::<Vec<_>>(), &caps);
    for (name, q) in &plan.concepts {
        let tempting: Vec<u64> = shards.iter().map(|s| get(s, name).hallucinated).collect();
        let first = split(q.negative, tempting.clone());
        let others: Vec<u64> = shards.iter().zip(&tempting).map(|(s, t)| get(s, name).opportunities - t).collect();
        let second = split(q.negative - first.iter().sum::<u64>(), others.clone());
        // what negatives leave of each shard's absent images hosts premises, then conversations
        let left: Vec<u64> =
            others.iter().zip(&tempting).enumerate().map(|(i, (o, t))| (o + t).saturating_sub(first[i] + second[i])).collect();
        let fp = split(q.false_premise, left.clone());
        let left: Vec<u64> = left.iter().zip(&fp).map(|(l, f)| l - f).collect();
        let mt = split(q.multi_turn, left);
        let pos = split(q.positive, shards.iter().map(|s| get(s, name).present).collect());
        let cnt = split(q.count, shards.iter().map(|s| get(s, name).count_known).collect());
        let att = split(q.attribute, shards.iter().map(|s| get(s, name).attributes_known).collect());
        for i in 0..shards.len() {
            let quota = Quota {
                negative: first[i] + second[i],
                positive: pos[i],
                count: cnt[i],
                attribute: att[i],
                false_premise: fp[i],
                multi_turn: mt[i],
            };
            if quota.total() > 0 {
                out[i].concepts.insert(name.clone(), quota);
            }
        }
    }
    let corr = split(plan.corrections, shards.iter().map(|s| s.hallucinated_images).collect());
    for (o, c) in out.iter_mut().zip(corr) {
        o.corrections = c;
    }
    out
}

/// One image's view for generation (several prompts merge into one view).
struct ImageView<'a> {
    key: &'a str,
    image: String,
    truth: &'a [ObjectTruth],
    hallucinated: BTreeSet<&'a str>,
    count_errors: BTreeSet<&'a str>,
    attribute_errors: BTreeSet<&'a str>,
    mentioned: BTreeSet<&'a str>,
    errors: Vec<&'a Hallucination>,
    /// Concepts whose presence the truth establishes; `None`: all (annotations).
    known: Option<BTreeSet<&'a str>>,
}

impl ImageView<'_> {
    fn knows(&self, concept: &str) -> bool {
        self.known.as_ref().is_none_or(|k| k.contains(concept))
    }

    fn has(&self, concept: &str) -> bool {
        self.truth.iter().any(|o| o.name == concept)
    }
}

/// One item to write: what it is about, the facts a writer gets, what the gate checks it by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRequest {
    /// The record id (unique in the job).
    pub id: String,
    /// The record's image path.
    pub image: String,
    pub kind: InstructionType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept: Option<String>,
    pub why: String,
    /// The question of a corrected description: the model's own prompt.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prompt: String,
    pub facts: Facts,
    pub gate: GateInput,
}

/// The natural name of a vocabulary concept ("ball" for "sports ball").
pub fn natural_name(vocab: &Vocabulary, concept: &str) -> String {
    vocab.lookup(concept).map(|id| vocab.concept(id).natural_name().to_string()).unwrap_or_else(|| concept.to_string())
}

struct FactsContext<'a> {
    vocab: &'a Vocabulary,
    /// The concepts this model hallucinates most, most first.
    top: Vec<&'a str>,
    turns: u32,
}

impl FactsContext<'_> {
    fn facts(&self, v: &ImageView, kind: InstructionType, target: Option<&str>) -> Facts {
        let name = |c: &str| natural_name(self.vocab, c);
        let objects = v.truth.iter().map(|o| FactObject::from_truth(o, name(&o.name))).collect();
        let absent = self.top.iter().filter(|c| !v.has(c) && v.knows(c)).take(5).map(|c| name(c)).collect();
        let hallucinations = v
            .errors
            .iter()
            .map(|h| FactError {
                kind: h.kind,
                concept: name(&h.concept),
                said: h.claimed.clone().unwrap_or_else(|| h.evidence.clone()),
                truth: match h.kind {
                    HallucinationKind::Object => None,
                    HallucinationKind::Count => h.true_count.map(number_words),
                    HallucinationKind::Attribute => (!h.known.is_empty()).then(|| h.known.join(" and ")),
                },
            })
            .collect();
        let target_object = target.and_then(|t| v.truth.iter().find(|o| o.name == t));
        Facts {
            target: target.map(name),
            target_present: target.map(|t| v.has(t)),
            target_count: target_object.and_then(|o| o.count),
            absent,
            hallucinations,
            turns: (kind == InstructionType::MultiTurn).then_some(self.turns),
            ..Facts::new(kind, objects)
        }
    }

    fn request(&self, v: &ImageView, tag: &str, kind: InstructionType, concept: &str, why: String) -> ItemRequest {
        let facts = self.facts(v, kind, Some(concept));
        let gate = GateInput {
            kind,
            image: v.key.to_string(),
            truth: v.truth.to_vec(),
            target: Some(concept.to_string()),
            target_count: facts.target_count,
            target_family: None,
            original_correct: Vec::new(),
        };
        ItemRequest {
            id: format!("{}:{tag}:{}", v.key, concept.replace(' ', "_")),
            image: v.image.clone(),
            kind,
            concept: Some(concept.to_string()),
            why,
            prompt: String::new(),
            facts,
            gate,
        }
    }
}

/// The items one shard must write, in a fixed order. `seed` is the job seed.
pub fn plan_shard_items(
    extractor: &Extractor,
    profile: &Profile,
    diagnoses: &[DiagnosisRecord],
    quota: &ShardQuota,
    seed: u64,
) -> Vec<ItemRequest> {
    let vocab = extractor.vocab();
    let mut views: BTreeMap<&str, ImageView> = BTreeMap::new();
    for d in diagnoses.iter().filter(|d| d.error.is_none()) {
        let v = views.entry(d.image.as_str()).or_insert_with(|| ImageView {
            key: &d.image,
            image: d.file.clone().unwrap_or_else(|| d.image.clone()),
            truth: &d.truth,
            hallucinated: BTreeSet::new(),
            count_errors: BTreeSet::new(),
            attribute_errors: BTreeSet::new(),
            mentioned: BTreeSet::new(),
            errors: Vec::new(),
            known: Some(BTreeSet::new()),
        });
        // an image is known about a concept when any of its records' truth is
        match (&mut v.known, &d.checked) {
            (_, None) => v.known = None,
            (Some(k), Some(c)) => k.extend(c.iter().map(String::as_str)),
            (None, Some(_)) => {}
        }
        for h in &d.hallucinations {
            match h.kind {
                HallucinationKind::Object => v.hallucinated.insert(h.concept.as_str()),
                HallucinationKind::Count => v.count_errors.insert(h.concept.as_str()),
                HallucinationKind::Attribute => v.attribute_errors.insert(h.concept.as_str()),
            };
            v.errors.push(h);
        }
        for m in &d.mentions {
            v.mentioned.insert(m.concept.as_str());
        }
    }
    let views: Vec<ImageView> = views.into_values().collect();
    let ctx = FactsContext {
        vocab,
        top: profile.concepts.iter().filter(|c| c.hallucinations > 0).take(8).map(|c| c.concept.as_str()).collect(),
        turns: quota.turns,
    };
    let mut out = Vec::new();
    let tie = |key: &str, concept: &str, kind: &str| stable_hash(seed, &[key, concept, kind]);
    for (concept, q) in &quota.concepts {
        if vocab.lookup(concept).is_none() {
            continue;
        }
        let triggers: Vec<(&str, f64)> =
            profile.concept(concept).map(|p| p.triggers.iter().map(|t| (t.concept.as_str(), t.lift)).collect()).unwrap_or_default();
        // absent here, most tempting first: negatives, then false premises, then conversations
        let mut cands: Vec<(u8, f64, u64, &ImageView)> = views
            .iter()
            // an absence must be known: with a detector, only checked concepts
            .filter(|v| !v.has(concept) && v.knows(concept))
            .map(|v| {
                let score: f64 = triggers.iter().filter(|(t, _)| v.has(t)).map(|(_, l)| l).sum();
                let tier = if v.hallucinated.contains(concept.as_str()) {
                    0
                } else if score > 0.0 {
                    1
                } else {
                    2
                };
                (tier, score, tie(v.key, concept, "negative"), v)
            })
            .collect();
        cands.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
        let why_absent = |tier: u8, score: f64, v: &ImageView| match tier {
            0 => format!("the model hallucinated {concept} on this image"),
            1 => format!(
                "{concept} is absent but its triggers are present ({}; summed lift {:.2})",
                triggers.iter().filter(|(t, _)| v.has(t)).map(|(t, _)| *t).collect::<Vec<_>>().join(", "),
                score
            ),
            _ => format!("{concept} is absent from this image"),
        };
        let mut absent_images = cands.into_iter();
        let absent_kinds = [
            (q.negative, "neg", InstructionType::NegativeExistence),
            (q.false_premise, "premise", InstructionType::FalsePremise),
            (q.multi_turn, "chat", InstructionType::MultiTurn),
        ];
        for (n, tag, kind) in absent_kinds {
            for (tier, score, _, v) in absent_images.by_ref().take(n as usize) {
                out.push(ctx.request(v, tag, kind, concept, why_absent(tier, score, v)));
            }
        }
        // positives: present here; images where the model missed it first
        let mut pos: Vec<(u8, u64, &ImageView)> = views
            .iter()
            .filter(|v| v.has(concept))
            .map(|v| (u8::from(v.mentioned.contains(concept.as_str())), tie(v.key, concept, "positive"), v))
            .collect();
        pos.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        for (mentioned, _, v) in pos.into_iter().take(q.positive as usize) {
            let why = if mentioned == 0 {
                format!("{concept} is present and the model did not mention it")
            } else {
                format!("{concept} is present; balances the negatives")
            };
            out.push(ctx.request(v, "pos", InstructionType::PositiveExistence, concept, why));
        }
        // counts where the truth knows the count; miscounted images first
        let mut cnt: Vec<(u8, u64, &ImageView)> = views
            .iter()
            .filter(|v| v.truth.iter().any(|o| o.name == *concept && o.count.is_some()))
            .map(|v| (u8::from(!v.count_errors.contains(concept.as_str())), tie(v.key, concept, "count"), v))
            .collect();
        cnt.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        for (ok, _, v) in cnt.into_iter().take(q.count as usize) {
            let why =
                if ok == 0 { format!("the model miscounted {concept} on this image") } else { format!("the count of {concept} is known") };
            out.push(ctx.request(v, "count", InstructionType::Count, concept, why));
        }
        // attributes where known; misnamed images first
        let mut att: Vec<(u8, u64, &ImageView, &ObjectTruth)> = views
            .iter()
            .filter_map(|v| {
                let o = v.truth.iter().find(|o| o.name == *concept && o.attributes.values().any(|x| !x.is_empty()))?;
                Some((u8::from(!v.attribute_errors.contains(concept.as_str())), tie(v.key, concept, "attribute"), v, o))
            })
            .collect();
        att.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        for (ok, _, v, o) in att.into_iter().take(q.attribute as usize) {
            let families: Vec<(&String, &Vec<String>)> = o.attributes.iter().filter(|(_, v)| !v.is_empty()).collect();
            let mut rng = rng_for(seed, &[v.key, concept, "attribute-family"]);
            let Some((family, values)) = families.choose(&mut rng) else { continue };
            let why = if ok == 0 {
                format!("the model named a wrong attribute of {concept} on this image")
            } else {
                format!("the {family} of {concept} is known")
            };
            let mut r = ctx.request(v, &format!("attr-{family}"), InstructionType::Attribute, concept, why);
            r.facts.target_attribute = Some(FactAttribute { family: family.to_string(), values: values.to_vec() });
            r.gate.target_family = Some(family.to_string());
            out.push(r);
        }
    }
    // the model's own descriptions, corrected (needs the spans of the claims)
    let mut scratch = ExtractScratch::default();
    let quota_corrections = if extractor.has_spans() { quota.corrections } else { 0 };
    let mut corr: Vec<(u64, &DiagnosisRecord)> = diagnoses
        .iter()
        .filter(|d| d.error.is_none() && !d.hallucinations.is_empty())
        .map(|d| (stable_hash(seed, &[&d.image, &d.prompt, "correction"]), d))
        .collect();
    corr.sort_by_key(|(h, _)| *h);
    let mut made = 0;
    let mut ids = BTreeSet::new();
    for (_, d) in corr {
        if made >= quota_corrections {
            break;
        }
        let id = format!("{}:corrected:{:016x}", d.image, stable_hash(0, &[&d.prompt]));
        if ids.contains(&id) {
            continue;
        }
        let Some(draft) = correct_description(extractor, &mut scratch, d) else { continue };
        let Some(v) = views.iter().find(|v| v.key == d.image) else { continue };
        let present: BTreeSet<&str> = d.truth.iter().map(|o| o.name.as_str()).collect();
        let original_correct: Vec<String> =
            d.mentions.iter().filter(|m| present.contains(m.concept.as_str())).map(|m| m.concept.clone()).collect();
        // a description whose fix loses much of what was right teaches saying less: take another
        if crate::writer::gate::kept_share(extractor, &mut scratch, &original_correct, &draft) < crate::writer::gate::MIN_KEPT {
            continue;
        }
        let kinds: Vec<String> = d.hallucinations.iter().map(|h| format!("{} {}", h.kind.as_str(), h.concept)).collect();
        let mut facts = ctx.facts(v, InstructionType::CorrectedDescription, None);
        facts.hallucinations.retain(|e| d.hallucinations.iter().any(|h| natural_name(vocab, &h.concept) == e.concept));
        facts.description = Some(d.response.clone());
        facts.draft = Some(draft);
        let gate = GateInput {
            kind: InstructionType::CorrectedDescription,
            image: d.image.clone(),
            truth: d.truth.clone(),
            target: None,
            target_count: None,
            target_family: None,
            original_correct,
        };
        ids.insert(id.clone());
        out.push(ItemRequest {
            id,
            image: d.file.clone().unwrap_or_else(|| d.image.clone()),
            kind: InstructionType::CorrectedDescription,
            concept: None,
            why: format!("the model's description with its hallucinations removed ({})", kinds.join(", ")),
            prompt: d.prompt.clone(),
            facts,
            gate,
        });
        made += 1;
    }
    out
}

/// The template writer's item for `req`, avoiding the questions in `avoid` (those `accepted`
/// holds for the image), checked by the gate against `accepted`: the item and the facts it was
/// written from (with `avoid`), or why the
/// gate refused it; `None` when the frames have nothing for the request. One path for the
/// template writer and for the fallback after a language model's failed rewrites.
pub fn template_item(
    extractor: &Extractor,
    scratch: &mut ExtractScratch,
    req: &ItemRequest,
    avoid: Vec<String>,
    accepted: &Accepted,
    seed: u64,
) -> Option<Result<(WrittenItem, Facts), Rejection>> {
    let item = write_with_template(extractor.vocab(), req, &avoid, seed)?;
    Some(verify(extractor, scratch, &req.gate, &item, accepted).map(|()| (item, Facts { avoid, ..req.facts.clone() })))
}

/// The template writer's item for `req`, avoiding the questions in `avoid`.
pub fn write_with_template(vocab: &Vocabulary, req: &ItemRequest, avoid: &[String], seed: u64) -> Option<WrittenItem> {
    let seen: BTreeSet<String> = avoid.iter().map(|q| crate::writer::normalise(q)).collect();
    let mut last = None;
    // a few draws: the frames are few and one image may already hold a question
    for attempt in 0..6u32 {
        let mut rng = rng_for(seed, &[&req.id, "template", &attempt.to_string()]);
        let mut item = crate::writer::template::write(vocab, &req.facts, &mut rng)?;
        if req.kind == InstructionType::CorrectedDescription {
            item.turns[0].question = req.prompt.clone();
        }
        if !item.turns.iter().any(|t| seen.contains(&crate::writer::normalise(&t.question))) {
            return Some(item);
        }
        last = Some(item);
    }
    last
}

/// The record for an accepted item.
pub fn to_record(req: &ItemRequest, item: &WrittenItem, writer: Option<WriterMeta>) -> LlavaRecord {
    let mut conversations = Vec::with_capacity(item.turns.len() * 2);
    for (i, t) in item.turns.iter().enumerate() {
        let question = if i == 0 { format!("<image>\n{}", t.question) } else { t.question.clone() };
        conversations.push(Turn { from: "human".into(), value: question });
        conversations.push(Turn { from: "gpt".into(), value: t.answer.clone() });
    }
    LlavaRecord {
        id: req.id.clone(),
        image: req.image.clone(),
        conversations,
        meta: InstructionMeta { kind: req.kind, concept: req.concept.clone(), why: req.why.clone(), writer },
    }
}

/// Instructions for one shard of diagnoses, written by the template writer and gated.
/// `seed` is the job seed.
pub fn generate_shard(
    extractor: &Extractor,
    profile: &Profile,
    diagnoses: &[DiagnosisRecord],
    quota: &ShardQuota,
    seed: u64,
) -> Vec<LlavaRecord> {
    let mut scratch = ExtractScratch::default();
    let mut accepted = Accepted::default();
    let mut out = Vec::new();
    for req in plan_shard_items(extractor, profile, diagnoses, quota, seed) {
        let avoid = accepted.questions_for(&req.gate.image);
        if let Some(Ok((item, facts))) = template_item(extractor, &mut scratch, &req, avoid, &accepted, seed) {
            accepted.insert(&req.gate.image, &item);
            let meta = WriterMeta { by: "template".into(), attempts: 1, request_id: None, facts: Some(facts) };
            out.push(to_record(&req, &item, Some(meta)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::diagnose;

    #[test]
    fn allocation_is_proportional_capped_and_exact() {
        assert_eq!(allocate_capped(10, &[1.0, 1.0], &[100, 100]), vec![5, 5]);
        assert_eq!(allocate_capped(10, &[3.0, 1.0], &[100, 1]), vec![9, 1]);
        assert_eq!(allocate_capped(7, &[1.0, 1.0, 1.0], &[100, 100, 100]).iter().sum::<u64>(), 7);
        assert_eq!(allocate_capped(50, &[1.0, 1.0], &[3, 4]), vec![3, 4]);
        assert_eq!(allocate_capped(5, &[0.0, 1.0], &[10, 10]), vec![0, 5]);
    }

    fn corpus() -> (Extractor, Vec<DiagnosisRecord>) {
        use crate::truth::ImageTruth;
        use std::sync::Arc;
        let e = Extractor::new(Arc::new(Vocabulary::coco80()));
        let mut s = ExtractScratch::default();
        let obj = |n: &str, c: u32, color: Option<&str>| ObjectTruth {
            name: n.into(),
            count: Some(c),
            attributes: color.map(|c| [("color".to_string(), vec![c.to_string()])].into_iter().collect()).unwrap_or_default(),
        };
        let mut out = Vec::new();
        for i in 0..40 {
            let (truth, text) = if i % 2 == 0 {
                (
                    vec![obj("dining table", 1, Some("brown")), obj("pizza", 1, None)],
                    "A pizza sits on a blue table. A fork lies next to it. Three cups stand nearby.",
                )
            } else {
                (vec![obj("dog", 2, Some("black")), obj("frisbee", 1, Some("red"))], "Three dogs chase a red frisbee. A man throws it.")
            };
            let t = ImageTruth { image: format!("img{i}"), file: Some(format!("images/img{i}.png")), objects: truth };
            out.push(diagnose(&e, &mut s, &t, "Describe the image in detail.", text));
        }
        (e, out)
    }

    #[test]
    fn generated_data_is_grounded_and_follows_the_profile() {
        let (e, diags) = corpus();
        let names: Vec<&str> = e.vocab().concepts().iter().map(|c| c.name.as_str()).collect();
        let mut shards = vec![Summary::default(), Summary::default()];
        for (i, d) in diags.iter().enumerate() {
            shards[i % 2].add(d, &names);
        }
        let mut total = Summary::default();
        shards.iter().for_each(|s| total.merge(s));
        let profile = Profile::build("m", &total);
        let plan = plan_generation(&profile, &total, &GenerationConfig { budget: Some(60), ..Default::default() });
        let quotas = allocate_to_shards(&plan, &shards);
        let mut records = Vec::new();
        for (i, q) in quotas.iter().enumerate() {
            let part: Vec<DiagnosisRecord> = diags.iter().enumerate().filter(|(j, _)| j % 2 == i).map(|(_, d)| d.clone()).collect();
            records.extend(generate_shard(&e, &profile, &part, q, 7));
        }
        assert!(!records.is_empty());
        let truth_of = |img: &str| &diags.iter().find(|d| d.file.as_deref() == Some(img)).unwrap().truth;
        let mut negatives = BTreeMap::<String, u64>::new();
        for r in &records {
            r.validate().unwrap();
            let concept = r.meta.concept.clone().unwrap_or_default();
            let present = truth_of(&r.image).iter().any(|o| o.name == concept);
            match r.meta.kind {
                InstructionType::NegativeExistence => {
                    assert!(!present, "{r:?}");
                    *negatives.entry(concept).or_default() += 1;
                }
                InstructionType::PositiveExistence | InstructionType::Count => assert!(present, "{r:?}"),
                InstructionType::CorrectedDescription => {
                    let d = diags.iter().find(|d| d.file.as_deref() == Some(r.image.as_str())).unwrap();
                    let t = crate::truth::ImageTruth { image: d.image.clone(), file: None, objects: d.truth.clone() };
                    let again = diagnose(&e, &mut ExtractScratch::default(), &t, "p", &r.conversations[1].value);
                    assert!(again.hallucinations.is_empty(), "{:?} -> {:?}", r.conversations[1].value, again.hallucinations);
                }
                InstructionType::Attribute | InstructionType::MultiTurn | InstructionType::FalsePremise => {}
            }
        }
        // fork and cup are hallucinated equally often (20 images each): equal negatives
        assert_eq!(negatives.get("fork"), negatives.get("cup"));
        assert!(negatives.get("person").copied().unwrap_or(0) > 0);
        let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), records.len(), "ids are unique");
        // the same inputs in one shard give the same records as a set
        let whole = generate_shard(&e, &profile, &diags, &allocate_to_shards(&plan, &[total.clone()])[0], 7);
        assert_eq!(whole.len(), records.len());
    }
}
