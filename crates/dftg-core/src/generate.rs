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

use crate::correct::{correct_description, number_words};
use crate::extract::{ExtractScratch, Extractor};
use crate::llava::{InstructionMeta, InstructionType, LlavaRecord};
use crate::profile::{Profile, Summary};
use crate::record::{DiagnosisRecord, HallucinationKind};
use crate::seed::{rng_for, stable_hash};
use crate::truth::ObjectTruth;
use crate::vocab::Vocabulary;
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
    /// Concepts targeted at most (most hallucinated first).
    pub max_concepts: usize,
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
            max_concepts: 30,
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
        if self.count_fraction + self.attribute_fraction + self.correction_fraction > 1.0 {
            return Err(CoreError::invalid("generation", "count, attribute and correction fractions sum above 1"));
        }
        if self.max_concepts == 0 {
            return Err(CoreError::invalid("generation.max_concepts", "must be at least 1"));
        }
        Ok(())
    }
}

/// Instructions of each type for one concept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub negative: u64,
    pub positive: u64,
    pub count: u64,
    pub attribute: u64,
}

impl Quota {
    pub fn total(&self) -> u64 {
        self.negative + self.positive + self.count + self.attribute
    }
}

/// The corpus-wide split of the budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationPlan {
    pub budget: u64,
    pub concepts: BTreeMap<String, Quota>,
    pub corrections: u64,
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
    let existence = rest - counts - attrs;
    let negatives = (existence as f64 / (1.0 + cfg.positive_ratio)).round() as u64;

    let targeted: Vec<&crate::profile::ConceptProfile> =
        profile.concepts.iter().filter(|c| c.hallucinations > 0).take(cfg.max_concepts).collect();
    let mut plan = GenerationPlan { budget, concepts: BTreeMap::new(), corrections };
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
    for (c, n) in targeted.iter().zip(&neg) {
        let positive = ((*n as f64 * cfg.positive_ratio).round() as u64).min(present(&c.concept));
        plan.concepts.insert(c.concept.clone(), Quota { negative: *n, positive, count: 0, attribute: 0 });
    }
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
}

/// Splits the plan across shards in proportion to each shard's candidates (from the shards'
/// summaries): images where the model hallucinated the concept first, then other chances.
pub fn allocate_to_shards(plan: &GenerationPlan, shards: &[Summary]) -> Vec<ShardQuota> {
    let mut out = vec![ShardQuota::default(); shards.len()];
    let get = |s: &Summary, n: &str| s.concepts.get(n).cloned().unwrap_or_default();
    let split = |total: u64, caps: Vec<u64>| allocate_capped(total, &caps.iter().map(|&c| c as f64).collect::<Vec<_>>(), &caps);
    for (name, q) in &plan.concepts {
        let tempting: Vec<u64> = shards.iter().map(|s| get(s, name).hallucinated).collect();
        let first = split(q.negative, tempting.clone());
        let others: Vec<u64> = shards.iter().zip(&tempting).map(|(s, t)| get(s, name).opportunities - t).collect();
        let second = split(q.negative - first.iter().sum::<u64>(), others);
        let pos = split(q.positive, shards.iter().map(|s| get(s, name).present).collect());
        let cnt = split(q.count, shards.iter().map(|s| get(s, name).count_known).collect());
        let att = split(q.attribute, shards.iter().map(|s| get(s, name).attributes_known).collect());
        for i in 0..shards.len() {
            let quota = Quota { negative: first[i] + second[i], positive: pos[i], count: cnt[i], attribute: att[i] };
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
    /// Concepts whose presence the truth establishes; `None`: all (annotations).
    known: Option<BTreeSet<&'a str>>,
}

impl ImageView<'_> {
    fn knows(&self, concept: &str) -> bool {
        self.known.as_ref().is_none_or(|k| k.contains(concept))
    }
}

/// Instructions for one shard of diagnoses. `seed` is the job seed.
pub fn generate_shard(
    extractor: &Extractor,
    profile: &Profile,
    diagnoses: &[DiagnosisRecord],
    quota: &ShardQuota,
    seed: u64,
) -> Vec<LlavaRecord> {
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
        }
        for m in &d.mentions {
            v.mentioned.insert(m.concept.as_str());
        }
    }
    let views: Vec<ImageView> = views.into_values().collect();
    let mut out = Vec::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut push = |r: LlavaRecord, out: &mut Vec<LlavaRecord>| {
        let question = r.conversations[0].value.clone();
        if seen.insert((r.image.clone(), question)) {
            out.push(r);
        }
    };
    let tie = |key: &str, concept: &str, kind: &str| stable_hash(seed, &[key, concept, kind]);
    for (concept, q) in &quota.concepts {
        let Some(cid) = vocab.lookup(concept) else { continue };
        let c = vocab.concept(cid);
        let triggers: Vec<(&str, f64)> =
            profile.concept(concept).map(|p| p.triggers.iter().map(|t| (t.concept.as_str(), t.lift)).collect()).unwrap_or_default();
        // negatives: absent here, most tempting first
        let mut cands: Vec<(u8, f64, u64, &ImageView)> = views
            .iter()
            // a negative needs a known absence: with a detector, only checked concepts
            .filter(|v| !v.truth.iter().any(|o| o.name == *concept) && v.knows(concept))
            .map(|v| {
                let score: f64 = triggers.iter().filter(|(t, _)| v.truth.iter().any(|o| o.name == *t)).map(|(_, l)| l).sum();
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
        for (tier, score, _, v) in cands.into_iter().take(q.negative as usize) {
            let why = match tier {
                0 => format!("the model hallucinated {concept} on this image"),
                1 => format!(
                    "{concept} is absent but its triggers are present ({}; summed lift {:.2})",
                    triggers.iter().filter(|(t, _)| v.truth.iter().any(|o| o.name == *t)).map(|(t, _)| *t).collect::<Vec<_>>().join(", "),
                    score
                ),
                _ => format!("{concept} is absent from this image"),
            };
            let mut rng = rng_for(seed, &[v.key, concept, "negative-phrasing"]);
            let (question, answer) = negative_qa(vocab, c, v.truth, &mut rng);
            push(record(v, "neg", concept, &question, answer, InstructionType::NegativeExistence, why), &mut out);
        }
        // positives: present here; images where the model missed it first
        let mut pos: Vec<(u8, u64, &ImageView)> = views
            .iter()
            .filter(|v| v.truth.iter().any(|o| o.name == *concept))
            .map(|v| (u8::from(v.mentioned.contains(concept.as_str())), tie(v.key, concept, "positive"), v))
            .collect();
        pos.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        for (mentioned, _, v) in pos.into_iter().take(q.positive as usize) {
            let why = if mentioned == 0 {
                format!("{concept} is present and the model did not mention it")
            } else {
                format!("{concept} is present; balances the negatives")
            };
            let Some(obj) = v.truth.iter().find(|o| o.name == *concept) else { continue };
            let mut rng = rng_for(seed, &[v.key, concept, "positive-phrasing"]);
            let (question, answer) = positive_qa(c, obj, &mut rng);
            push(record(v, "pos", concept, &question, answer, InstructionType::PositiveExistence, why), &mut out);
        }
        // counts where the truth knows the count; miscounted images first
        let mut cnt: Vec<(u8, u64, &ImageView, u32)> = views
            .iter()
            .filter_map(|v| {
                let n = v.truth.iter().find(|o| o.name == *concept)?.count?;
                Some((u8::from(!v.count_errors.contains(concept.as_str())), tie(v.key, concept, "count"), v, n))
            })
            .collect();
        cnt.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        for (ok, _, v, n) in cnt.into_iter().take(q.count as usize) {
            let why =
                if ok == 0 { format!("the model miscounted {concept} on this image") } else { format!("the count of {concept} is known") };
            let mut rng = rng_for(seed, &[v.key, concept, "count-phrasing"]);
            let (question, answer) = count_qa(c, n, &mut rng);
            push(record(v, "count", concept, &question, answer, InstructionType::Count, why), &mut out);
        }
        // attributes where known; misnamed images first
        let mut att: Vec<(u8, u64, &ImageView, &ObjectTruth)> = views
            .iter()
            .filter_map(|v| {
                let o = v.truth.iter().find(|o| o.name == *concept && !o.attributes.is_empty())?;
                Some((u8::from(!v.attribute_errors.contains(concept.as_str())), tie(v.key, concept, "attribute"), v, o))
            })
            .collect();
        att.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        for (ok, _, v, o) in att.into_iter().take(q.attribute as usize) {
            let mut rng = rng_for(seed, &[v.key, concept, "attribute-phrasing"]);
            let Some((family, question, answer)) = attribute_qa(c, o, &mut rng) else { continue };
            let why = if ok == 0 {
                format!("the model named a wrong attribute of {concept} on this image")
            } else {
                format!("the {family} of {concept} is known")
            };
            push(record(v, &format!("attr-{family}"), concept, &question, answer, InstructionType::Attribute, why), &mut out);
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
    for (_, d) in corr {
        if made >= quota_corrections {
            break;
        }
        let Some(text) = correct_description(extractor, &mut scratch, d) else { continue };
        let kinds: Vec<String> = d.hallucinations.iter().map(|h| format!("{} {}", h.kind.as_str(), h.concept)).collect();
        let r = LlavaRecord::single_turn(
            format!("{}:corrected:{:016x}", d.image, stable_hash(0, &[&d.prompt])),
            d.file.clone().unwrap_or_else(|| d.image.clone()),
            &d.prompt,
            text,
            InstructionMeta {
                kind: InstructionType::CorrectedDescription,
                concept: None,
                why: format!("the model's description with its hallucinations removed ({})", kinds.join(", ")),
            },
        );
        let before = out.len();
        push(r, &mut out);
        if out.len() > before {
            made += 1;
        }
    }
    out
}

fn record(v: &ImageView, tag: &str, concept: &str, question: &str, answer: String, kind: InstructionType, why: String) -> LlavaRecord {
    LlavaRecord::single_turn(
        format!("{}:{tag}:{}", v.key, concept.replace(' ', "_")),
        v.image.clone(),
        question,
        answer,
        InstructionMeta { kind, concept: Some(concept.to_string()), why },
    )
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// "two dogs", "a car", "some people" (count unknown).
fn noun_phrase(c: &crate::vocab::Concept, count: Option<u32>) -> String {
    let (singular, plural) = (&c.synonyms[0], &c.plurals[0]);
    match count {
        Some(1) => format!("{} {singular}", article(singular)),
        Some(n) => format!("{} {plural}", number_words(n)),
        None if singular == plural => format!("some {plural}"),
        None => format!("{} {singular}", article(singular)),
    }
}

/// A short grounded summary of the scene: "a man, two dogs and a car".
fn scene_summary(vocab: &Vocabulary, truth: &[ObjectTruth]) -> String {
    let parts: Vec<String> =
        truth.iter().take(4).filter_map(|o| vocab.lookup(&o.name).map(|id| noun_phrase(vocab.concept(id), o.count))).collect();
    match parts.len() {
        0 => "other things".to_string(),
        1 => parts[0].clone(),
        n => format!("{} and {}", parts[..n - 1].join(", "), parts[n - 1]),
    }
}

fn pick<'a, R: rand::Rng>(rng: &mut R, options: &'a [&'a str]) -> &'a str {
    options.choose(rng).copied().unwrap_or(options[0])
}

fn negative_qa<R: rand::Rng>(vocab: &Vocabulary, c: &crate::vocab::Concept, truth: &[ObjectTruth], rng: &mut R) -> (String, String) {
    let (s, p) = (&c.synonyms[0], &c.plurals[0]);
    let a = article(s);
    let q = pick(
        rng,
        &[
            "Is there {a} {s} in the image?",
            "Can you see any {p} in this picture?",
            "Does this image contain {a} {s}?",
            "Are there any {p} in the photo?",
            "Is {a} {s} visible anywhere in the image?",
        ],
    );
    let ans = pick(
        rng,
        &[
            "No, there is no {s} in the image. It shows {scene}.",
            "No. The image does not contain any {p}; it shows {scene}.",
            "No, I don't see any {p} here. The picture shows {scene}.",
        ],
    );
    let scene = scene_summary(vocab, truth);
    let fill = |t: &str| t.replace("{a}", a).replace("{s}", s).replace("{p}", p).replace("{scene}", &scene);
    (fill(q), fill(ans))
}

fn positive_qa<R: rand::Rng>(c: &crate::vocab::Concept, o: &ObjectTruth, rng: &mut R) -> (String, String) {
    let (s, p) = (&c.synonyms[0], &c.plurals[0]);
    let a = article(s);
    let q = pick(
        rng,
        &[
            "Is there {a} {s} in the image?",
            "Can you see any {p} in this picture?",
            "Does this image contain {a} {s}?",
            "Are there any {p} in the photo?",
        ],
    );
    let ans = match o.count {
        Some(n) if n > 1 => format!("Yes, there are {} {p} in the image.", number_words(n)),
        _ => format!("Yes, there is {a} {s} in the image."),
    };
    (q.replace("{a}", a).replace("{s}", s).replace("{p}", p), ans)
}

fn count_qa<R: rand::Rng>(c: &crate::vocab::Concept, n: u32, rng: &mut R) -> (String, String) {
    let (s, p) = (&c.synonyms[0], &c.plurals[0]);
    let q = pick(rng, &["How many {p} are in the image?", "How many {p} can you see?", "Count the {p} in this picture."]);
    let ans = if n == 1 { format!("There is one {s} in the image.") } else { format!("There are {} {p} in the image.", number_words(n)) };
    (q.replace("{p}", p), ans)
}

fn attribute_qa<R: rand::Rng>(c: &crate::vocab::Concept, o: &ObjectTruth, rng: &mut R) -> Option<(String, String, String)> {
    let s = &c.synonyms[0];
    let families: Vec<(&String, &Vec<String>)> = o.attributes.iter().filter(|(_, v)| !v.is_empty()).collect();
    let (family, values) = families.choose(rng)?;
    let value = match values.len() {
        1 => values[0].clone(),
        n => format!("{} and {}", values[..n - 1].join(", "), values[n - 1]),
    };
    let (q, a) = match family.as_str() {
        "color" => (pick(rng, &["What color is the {s}?", "What is the color of the {s} in the image?"]), "The {s} is {v}."),
        "size" => (pick(rng, &["Is the {s} small or large?", "How big is the {s}?"]), "The {s} is {v}."),
        "material" => (pick(rng, &["What material is the {s} made of?", "What is the {s} made of?"]), "The {s} is {v}."),
        _ => ("What is the {f} of the {s}?", "The {f} of the {s} is {v}."),
    };
    let fill = |t: &str| t.replace("{s}", s).replace("{v}", &value).replace("{f}", family);
    Some((family.to_string(), fill(q), fill(a)))
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
