//! The simulated model itself, without HTTP: decides what to hallucinate on an image and
//! writes the description or the yes/no answer. Every choice is a pure function of (seed,
//! profile name, image key, prompt): the same request always gets the same reply.

use std::sync::Arc;

use dftg_core::record::HallucinationKind;
use dftg_core::vocab::ConceptId;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::corpus::{SimCorpus, SimImage, SimObject};
use super::profile::SimProfile;
use super::text::{self, Surfaces};
use super::SimError;
use dftg_core::seed::StableHasher;

/// What kind of prompt a reply answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimTask {
    /// A description (any prompt that is not a yes/no existence question).
    Describe,
    /// A yes/no existence question ("Is there a dog in the image?").
    YesNo,
}

/// One hallucination the simulator put into a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InjectedHallucination {
    pub kind: HallucinationKind,
    /// Canonical concept name.
    pub concept: String,
    /// The mention as written ("three dogs", "a blue car").
    pub text: String,
    /// Byte span of `text` in the reply.
    pub span: (u32, u32),
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
    /// The true values of `family` (attribute hallucinations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known: Vec<String>,
    /// Object hallucinations: the present concept that made this one most tempting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
}

/// One line of the truth log: what the simulator injected into one (image, prompt) reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthLogEntry {
    pub image: String,
    pub prompt: String,
    pub task: SimTask,
    pub hallucinated: Vec<InjectedHallucination>,
    /// Present concepts the reply names (canonical names, first-mention order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentioned: Vec<String>,
    /// Absent concepts the reply explicitly denies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub negated: Vec<String>,
}

/// A reply and what it injected.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReply {
    pub text: String,
    pub entry: TruthLogEntry,
}

/// An absent concept the profile hallucinates on an image.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectHallucination {
    pub concept: String,
    /// Probability the profile gave it on this image.
    pub probability: f64,
    /// The present concept with the highest P(concept | present) on the corpus.
    pub trigger: Option<String>,
}

/// Role of a mention in a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Present,
    Hallucinated,
    Negated,
}

/// A piece of a rendered reply: filler text or one object mention.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Text(String),
    Mention { concept: ConceptId, role: Role, text: String, plural: bool, claimed_count: Option<u32> },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CountForm {
    /// "a dog"
    Article,
    /// "one dog"
    One,
    /// "two dogs", "2 dogs"
    Number(u32, bool),
    /// "a pair of dogs"
    Pair,
    /// "some dogs"
    Some,
    /// "some broccoli"
    Mass,
}

#[derive(Debug, Clone)]
struct Planned {
    concept: ConceptId,
    role: Role,
    text: String,
    plural: bool,
    claimed_count: Option<u32>,
    /// Injected count/attribute hallucinations on this mention (span filled at render).
    injected: Vec<InjectedHallucination>,
}

#[derive(Debug, Clone)]
struct Candidate {
    concept: ConceptId,
    probability: f64,
    trigger: Option<ConceptId>,
    score: f64,
}

/// The simulated model: a corpus, a profile and a seed.
#[derive(Debug, Clone)]
pub struct Simulator {
    corpus: Arc<SimCorpus>,
    profile: SimProfile,
    affinity: Vec<f64>,
    surfaces: Vec<Surfaces>,
    seed: u64,
}

/// Detail requested by a description prompt.
fn is_brief(prompt: &str) -> bool {
    let p = prompt.to_lowercase();
    ["brief", "short", "concise", "caption", "one sentence", "single sentence"].iter().any(|w| p.contains(w))
}

const AUXILIARIES: &[&str] = &["is", "are", "does", "do", "did", "can", "could", "would", "will", "was", "were", "has", "have"];
const NOT_YES_NO: &[&str] = &["describe", "description", "caption", "what", "which", "where", "why", "how", "tell me about", "explain"];

fn family_rank(name: &str) -> u8 {
    match name {
        "size" => 0,
        "color" => 1,
        "material" => 2,
        _ => 3,
    }
}

impl Simulator {
    pub fn new(corpus: Arc<SimCorpus>, profile: SimProfile, seed: u64) -> Result<Self, SimError> {
        let vocab = corpus.vocabulary();
        profile.validate(vocab)?;
        let affinity = profile.affinity_table(vocab);
        let surfaces = text::surface_table(vocab);
        Ok(Simulator { corpus, profile, affinity, surfaces, seed })
    }

    pub fn corpus(&self) -> &SimCorpus {
        &self.corpus
    }

    pub fn profile(&self) -> &SimProfile {
        &self.profile
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The absent concepts this model hallucinates on an image (for every prompt), or `None`
    /// for an unknown key.
    pub fn object_hallucinations(&self, key: &str) -> Option<Vec<ObjectHallucination>> {
        let img = self.corpus.image(key)?;
        let vocab = self.corpus.vocabulary();
        Some(
            self.candidates(key, img)
                .into_iter()
                .map(|c| ObjectHallucination {
                    concept: vocab.name(c.concept).to_string(),
                    probability: c.probability,
                    trigger: c.trigger.map(|t| vocab.name(t).to_string()),
                })
                .collect(),
        )
    }

    /// The reply to `prompt` about image `key`, or `None` for an unknown key.
    pub fn respond(&self, key: &str, prompt: &str) -> Option<SimReply> {
        let img = self.corpus.image(key)?;
        let prompt = prompt.trim();
        Some(match self.yes_no_question(prompt) {
            Some(q) => self.answer(key, img, prompt, q),
            None => self.describe(key, img, prompt).0,
        })
    }

    /// `Some(concept)` when the prompt is a yes/no existence question (`None` inside when it
    /// names no known concept).
    pub(crate) fn yes_no_question(&self, prompt: &str) -> Option<Option<(ConceptId, bool)>> {
        let lower = prompt.trim().to_lowercase();
        let words = text::words(&lower);
        let first = &words.first()?.1;
        if !AUXILIARIES.contains(&first.as_str()) || !lower.contains('?') {
            return None;
        }
        if NOT_YES_NO.iter().any(|w| if w.contains(' ') { lower.contains(w) } else { words.iter().any(|(_, x)| x == w) }) {
            return None;
        }
        let question = lower.split('?').next().unwrap_or("");
        let hit = text::scan_phrases(self.corpus.vocabulary(), question).into_iter().find_map(|h| h.concept.map(|c| (c, h.plural)));
        Some(hit)
    }

    /// Absent concepts hallucinated on an image: independent draws per concept keyed by
    /// (seed, image, concept), capped at `max_hallucinations` keeping the most certain ones.
    fn candidates(&self, key: &str, img: &SimImage) -> Vec<Candidate> {
        let vocab = self.corpus.vocabulary();
        let n = vocab.len();
        let mut present = vec![false; n];
        for o in &img.objects {
            present[o.concept as usize] = true;
        }
        let mut out: Vec<Candidate> = Vec::new();
        for (c, (&is_present, &affinity)) in present.iter().zip(&self.affinity).enumerate() {
            let cid = c as ConceptId;
            if is_present || affinity <= 0.0 {
                continue;
            }
            let (tempt, trigger) = self.temptation(img, cid);
            if tempt <= 0.0 {
                continue;
            }
            let p = (self.profile.base_rate * affinity * tempt).min(self.profile.max_probability);
            if p <= 0.0 {
                continue;
            }
            let u = StableHasher::new("object").u64(self.seed).str(&self.profile.name).str(key).str(vocab.name(cid)).unit();
            if u < p {
                out.push(Candidate { concept: cid, probability: p, trigger, score: u / p });
            }
        }
        out.sort_by(|a, b| a.score.total_cmp(&b.score).then(a.concept.cmp(&b.concept)));
        out.truncate(self.profile.max_hallucinations as usize);
        out
    }

    /// Noisy-or over present concepts s of P(c | s), and the s with the largest P(c | s).
    fn temptation(&self, img: &SimImage, c: ConceptId) -> (f64, Option<ConceptId>) {
        let mut q = 1.0;
        let mut best: Option<(f64, ConceptId)> = None;
        for o in &img.objects {
            let f = self.corpus.freq_id(o.concept);
            if f == 0 {
                continue;
            }
            let p = f64::from(self.corpus.cooc_id(o.concept, c)) / f64::from(f);
            if p > 0.0 {
                q *= 1.0 - p;
                match best {
                    Some((bp, _)) if bp >= p => {}
                    _ => best = Some((p, o.concept)),
                }
            }
        }
        (1.0 - q, best.map(|(_, s)| s))
    }

    fn pick_form<'a>(&'a self, c: ConceptId, rng: &mut ChaCha8Rng) -> &'a (String, String) {
        let forms = &self.surfaces[c as usize].forms;
        if forms.len() > 1 && rng.gen_bool(0.4) {
            &forms[rng.gen_range(1..forms.len())]
        } else {
            &forms[0]
        }
    }

    fn render_mention(&self, form: CountForm, adjectives: &[String], noun: &(String, String)) -> (String, bool) {
        let adj = adjectives.join(" ");
        let with_adj = |noun: &str| if adj.is_empty() { noun.to_string() } else { format!("{adj} {noun}") };
        let (sing, plur) = (&noun.0, &noun.1);
        match form {
            CountForm::Article => {
                let body = with_adj(sing);
                (format!("{} {body}", text::article(&body)), false)
            }
            CountForm::One => (format!("one {}", with_adj(sing)), false),
            CountForm::Number(n, digits) => (format!("{} {}", text::number_text(n, digits), with_adj(plur)), true),
            CountForm::Pair => (format!("{} {}", text::PAIR_OF, with_adj(plur)), true),
            CountForm::Some => (format!("{} {}", text::NO_COUNT_QUANTIFIER, with_adj(plur)), true),
            CountForm::Mass => (format!("{} {}", text::NO_COUNT_QUANTIFIER, with_adj(sing)), sing.ends_with('s')),
        }
    }

    fn plan_present(&self, o: &SimObject, rng: &mut ChaCha8Rng) -> Planned {
        let vocab = self.corpus.vocabulary();
        let c = o.concept;
        let surf = &self.surfaces[c as usize];
        let noun = self.pick_form(c, rng).clone();
        let p = &self.profile;
        let mut injected = Vec::new();
        let concept = vocab.name(c).to_string();
        let mut claimed_count = None;
        let form = if surf.mass {
            CountForm::Mass
        } else {
            match o.count {
                Some(n) if rng.gen_bool(p.count_error_rate) => {
                    let mut options = vec![n + 1, n + 2];
                    if n >= 3 {
                        options.push(n - 1);
                    }
                    let claimed = options[rng.gen_range(0..options.len())];
                    claimed_count = Some(claimed);
                    injected.push(InjectedHallucination {
                        kind: HallucinationKind::Count,
                        concept: concept.clone(),
                        text: String::new(),
                        span: (0, 0),
                        claimed_count: Some(claimed),
                        true_count: Some(n),
                        family: None,
                        claimed: None,
                        known: Vec::new(),
                        trigger: None,
                    });
                    CountForm::Number(claimed, claimed > 12 || rng.gen_bool(0.25))
                }
                Some(n) if rng.gen_bool(p.count_mention_rate) => {
                    claimed_count = Some(n);
                    match n {
                        1 if rng.gen_bool(0.3) => CountForm::One,
                        1 => CountForm::Article,
                        2 if surf.pair_ok && rng.gen_bool(0.15) => CountForm::Pair,
                        _ => CountForm::Number(n, n > 12 || rng.gen_bool(0.25)),
                    }
                }
                Some(1) => CountForm::Article,
                Some(_) => CountForm::Some,
                None if rng.gen_bool(0.6) => CountForm::Article,
                None => CountForm::Some,
            }
        };
        // Attributes: at most one adjective after a number or quantifier, two after an article.
        let max_adj = if matches!(form, CountForm::Article | CountForm::One) { 2 } else { 1 };
        let noun_first = noun.0.split(' ').next().unwrap_or("").to_string();
        let families = vocab.families();
        let usable: Vec<&(u8, Vec<u8>)> = o.attributes.iter().filter(|(f, vs)| !vs.is_empty() && (*f as usize) < families.len()).collect();
        let mut adjs: Vec<(u8, String)> = Vec::new();
        if !usable.is_empty() && rng.gen_bool(p.attribute_error_rate) {
            let wrongable: Vec<&&(u8, Vec<u8>)> = usable
                .iter()
                .filter(|(f, vs)| {
                    families[*f as usize].values.iter().enumerate().any(|(i, v)| !vs.contains(&(i as u8)) && *v != noun_first)
                })
                .collect();
            if let Some((f, vs)) = wrongable.choose(rng).map(|x| (**x).clone()) {
                let fam = &families[f as usize];
                let wrong: Vec<&String> =
                    fam.values.iter().enumerate().filter(|(i, v)| !vs.contains(&(*i as u8)) && **v != noun_first).map(|(_, v)| v).collect();
                if let Some(w) = wrong.choose(rng) {
                    adjs.push((f, (*w).clone()));
                    injected.push(InjectedHallucination {
                        kind: HallucinationKind::Attribute,
                        concept: concept.clone(),
                        text: String::new(),
                        span: (0, 0),
                        claimed_count: None,
                        true_count: None,
                        family: Some(fam.name.clone()),
                        claimed: Some((*w).clone()),
                        known: vs.iter().map(|i| fam.values[*i as usize].clone()).collect(),
                        trigger: None,
                    });
                }
            }
        }
        if adjs.len() < max_adj && rng.gen_bool(p.attribute_mention_rate) {
            let mut rest: Vec<&&(u8, Vec<u8>)> = usable.iter().filter(|(f, _)| !adjs.iter().any(|(af, _)| af == f)).collect();
            rest.shuffle(rng);
            for (f, vs) in rest {
                if adjs.len() >= max_adj {
                    break;
                }
                let fam = &families[*f as usize];
                let v = vs[rng.gen_range(0..vs.len())];
                let word = fam.values[v as usize].clone();
                if word != noun_first {
                    adjs.push((*f, word));
                }
            }
        }
        adjs.sort_by_key(|(f, _)| family_rank(&families[*f as usize].name));
        let adj_words: Vec<String> = adjs.into_iter().map(|(_, w)| w).collect();
        let (text, plural) = self.render_mention(form, &adj_words, &noun);
        Planned { concept: c, role: Role::Present, text, plural, claimed_count, injected }
    }

    fn plan_hallucinated(&self, cand: &Candidate, rng: &mut ChaCha8Rng) -> Planned {
        let vocab = self.corpus.vocabulary();
        let c = cand.concept;
        let noun = self.pick_form(c, rng).clone();
        let form = if self.surfaces[c as usize].mass {
            CountForm::Mass
        } else {
            let r: f64 = rng.gen();
            if r < 0.6 {
                CountForm::Article
            } else if r < 0.85 {
                CountForm::Some
            } else {
                CountForm::Number(2, false)
            }
        };
        let (text, plural) = self.render_mention(form, &[], &noun);
        let claimed_count = match form {
            CountForm::Number(n, _) => Some(n),
            _ => None,
        };
        let injected = vec![InjectedHallucination {
            kind: HallucinationKind::Object,
            concept: vocab.name(c).to_string(),
            text: String::new(),
            span: (0, 0),
            claimed_count: None,
            true_count: None,
            family: None,
            claimed: None,
            known: Vec::new(),
            trigger: cand.trigger.map(|t| vocab.name(t).to_string()),
        }];
        Planned { concept: c, role: Role::Hallucinated, text, plural, claimed_count, injected }
    }

    fn setting_sentences(&self, img: &SimImage) -> &'static [&'static str] {
        let vocab = self.corpus.vocabulary();
        let mut counts = [0usize; 5];
        for o in &img.objects {
            let k = match vocab.concept(o.concept).supercategory.as_str() {
                "furniture" | "appliance" | "electronic" | "indoor" => 0,
                "food" | "kitchen" => 1,
                "vehicle" | "outdoor" => 2,
                "animal" => 3,
                "sports" => 4,
                _ => continue,
            };
            counts[k] += 1;
        }
        let best = (0..5).max_by_key(|&k| (counts[k], 5 - k)).unwrap_or(0);
        if counts[best] == 0 {
            return text::SETTING_GENERIC;
        }
        [text::SETTING_INDOOR, text::SETTING_FOOD, text::SETTING_STREET, text::SETTING_NATURE, text::SETTING_SPORTS][best]
    }

    /// A description of an image, with its pieces (for the vocabulary contract tests).
    pub(crate) fn describe(&self, key: &str, img: &SimImage, prompt: &str) -> (SimReply, Vec<Piece>) {
        let vocab = self.corpus.vocabulary();
        let p = &self.profile;
        let mut rng = StableHasher::new("describe").u64(self.seed).str(&p.name).str(key).str(prompt).rng();
        let brief = is_brief(prompt);
        let hallucinated = self.candidates(key, img);

        // Present objects: most, not necessarily all, are mentioned.
        let mut chosen: Vec<bool> = img.objects.iter().map(|_| rng.gen_bool(p.mention_rate)).collect();
        if !img.objects.is_empty() && !chosen.iter().any(|c| *c) {
            let i = rng.gen_range(0..chosen.len());
            chosen[i] = true;
        }
        let mut plan: Vec<Planned> = Vec::new();
        for (o, ch) in img.objects.iter().zip(&chosen) {
            if *ch {
                plan.push(self.plan_present(o, &mut rng));
            }
        }
        plan.shuffle(&mut rng);
        for cand in &hallucinated {
            let m = self.plan_hallucinated(cand, &mut rng);
            let at = if plan.is_empty() { 0 } else { rng.gen_range(1..=plan.len()) };
            plan.insert(at, m);
        }

        // Sentences of mentions.
        let mut sentences: Vec<Vec<Piece>> = Vec::new();
        let mut planned_by_sentence: Vec<Vec<Planned>> = Vec::new();
        if plan.is_empty() {
            sentences.push(vec![Piece::Text(text::EMPTY_SCENE[rng.gen_range(0..text::EMPTY_SCENE.len())].to_string())]);
            planned_by_sentence.push(Vec::new());
        } else {
            let mut rest = plan;
            let first = if brief { rest.len().min(4) } else { rng.gen_range(1..=3).min(rest.len()) };
            let tail = rest.split_off(first);
            let template = text::OPENINGS[rng.gen_range(0..text::OPENINGS.len())];
            sentences.push(list_sentence(template, &rest, &mut rng));
            planned_by_sentence.push(rest);
            let mut tail = tail;
            let mut used: Vec<usize> = Vec::new();
            while !tail.is_empty() {
                let size = if brief { tail.len() } else { rng.gen_range(1..=2).min(tail.len()) };
                let next = tail.split_off(size);
                let mut idx = rng.gen_range(0..text::CONTINUATIONS.len());
                if used.len() < text::CONTINUATIONS.len() {
                    while used.contains(&idx) {
                        idx = (idx + 1) % text::CONTINUATIONS.len();
                    }
                }
                used.push(idx);
                sentences.push(list_sentence(text::CONTINUATIONS[idx], &tail, &mut rng));
                planned_by_sentence.push(tail);
                tail = next;
            }
        }

        // Setting sentences (detailed descriptions only).
        if !brief {
            let kind = self.setting_sentences(img);
            let pool: &[&str] = if rng.gen_bool(0.7) { kind } else { text::SETTING_GENERIC };
            let s = pool[rng.gen_range(0..pool.len())];
            let at = if rng.gen_bool(0.5) { 1 } else { sentences.len() };
            sentences.insert(at.min(sentences.len()), vec![Piece::Text(s.to_string())]);
            planned_by_sentence.insert(at.min(planned_by_sentence.len()), Vec::new());
        }

        // Negations: absent, not hallucinated, tempting concepts.
        let mut negated: Vec<String> = Vec::new();
        if !brief && rng.gen_bool(p.negation_rate) {
            let n = vocab.len();
            let mut pool: Vec<(ConceptId, f64)> = (0..n as ConceptId)
                .filter(|c| !img.objects.iter().any(|o| o.concept == *c) && !hallucinated.iter().any(|h| h.concept == *c))
                .filter_map(|c| {
                    let (t, _) = self.temptation(img, c);
                    (t > 0.0).then_some((c, t))
                })
                .collect();
            let wanted = if rng.gen_bool(0.25) { 2 } else { 1 };
            for _ in 0..wanted {
                let total: f64 = pool.iter().map(|(_, t)| t).sum();
                if pool.is_empty() || total <= 0.0 {
                    break;
                }
                let mut r = rng.gen::<f64>() * total;
                let mut pick = pool.len() - 1;
                for (i, (_, t)) in pool.iter().enumerate() {
                    if r < *t {
                        pick = i;
                        break;
                    }
                    r -= t;
                }
                let (c, _) = pool.remove(pick);
                let template = text::NEGATIONS[rng.gen_range(0..text::NEGATIONS.len())];
                let plural = self.surfaces[c as usize].forms[0].1.clone();
                let (before, after) = template.split_once("{P}").unwrap_or((template, ""));
                let mut pieces = Vec::new();
                let mention_text = if before.is_empty() { text::capitalize(&plural) } else { plural };
                pieces.push(Piece::Text(before.to_string()));
                pieces.push(Piece::Mention { concept: c, role: Role::Negated, text: mention_text, plural: true, claimed_count: None });
                pieces.push(Piece::Text(after.to_string()));
                sentences.push(pieces);
                planned_by_sentence.push(Vec::new());
                negated.push(vocab.name(c).to_string());
            }
        }

        // Render, filling spans of injected hallucinations.
        let mut out = String::new();
        let mut all_pieces: Vec<Piece> = Vec::new();
        let mut injected_all: Vec<InjectedHallucination> = Vec::new();
        let mut mentioned: Vec<String> = Vec::new();
        for (si, (pieces, planned)) in sentences.into_iter().zip(planned_by_sentence).enumerate() {
            if si > 0 {
                out.push(' ');
                all_pieces.push(Piece::Text(" ".into()));
            }
            let mut planned = planned.into_iter();
            for piece in pieces {
                match &piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Mention { concept, role, text, .. } => {
                        let start = out.len() as u32;
                        out.push_str(text);
                        let end = out.len() as u32;
                        match role {
                            Role::Negated => {}
                            Role::Present | Role::Hallucinated => {
                                if let Some(pl) = planned.next() {
                                    for mut inj in pl.injected {
                                        inj.text = text.clone();
                                        inj.span = (start, end);
                                        injected_all.push(inj);
                                    }
                                }
                                if *role == Role::Present {
                                    let name = vocab.name(*concept).to_string();
                                    if !mentioned.contains(&name) {
                                        mentioned.push(name);
                                    }
                                }
                            }
                        }
                    }
                }
                all_pieces.push(piece);
            }
        }
        let entry = TruthLogEntry {
            image: key.to_string(),
            prompt: prompt.to_string(),
            task: SimTask::Describe,
            hallucinated: injected_all,
            mentioned,
            negated,
        };
        (SimReply { text: out, entry }, all_pieces)
    }

    fn answer(&self, key: &str, img: &SimImage, prompt: &str, q: Option<(ConceptId, bool)>) -> SimReply {
        let vocab = self.corpus.vocabulary();
        let mut entry = TruthLogEntry {
            image: key.to_string(),
            prompt: prompt.to_string(),
            task: SimTask::YesNo,
            hallucinated: Vec::new(),
            mentioned: Vec::new(),
            negated: Vec::new(),
        };
        let Some((c, plural_q)) = q else {
            return SimReply { text: text::CANNOT_TELL.to_string(), entry };
        };
        let name = vocab.name(c).to_string();
        let surf = &self.surfaces[c as usize];
        let (sing, plur) = &surf.forms[0];
        // an over-corrected profile denies some present objects (see yes_no.rs)
        let denied = self.denies(key, img, c);
        let present = img.objects.iter().any(|o| o.concept == c) && !denied;
        let hallucinated = if present { None } else { self.candidates(key, img).into_iter().find(|h| h.concept == c) };
        if present || hallucinated.is_some() {
            let (template, x) = if surf.mass {
                (if sing.ends_with('s') { text::YES_PLURAL } else { text::YES_SINGULAR }, format!("some {sing}"))
            } else if plural_q {
                (text::YES_PLURAL, plur.clone())
            } else {
                (text::YES_SINGULAR, format!("{} {sing}", text::article(sing)))
            };
            let (before, after) = template.split_once("{X}").unwrap_or((template, ""));
            let text = format!("{before}{x}{after}");
            if let Some(h) = hallucinated {
                entry.hallucinated.push(InjectedHallucination {
                    kind: HallucinationKind::Object,
                    concept: name,
                    text: x.clone(),
                    span: (before.len() as u32, (before.len() + x.len()) as u32),
                    claimed_count: None,
                    true_count: None,
                    family: None,
                    claimed: None,
                    known: Vec::new(),
                    trigger: h.trigger.map(|t| vocab.name(t).to_string()),
                });
            } else {
                entry.mentioned.push(name);
            }
            SimReply { text, entry }
        } else {
            let (template, x) = if plural_q || (surf.mass && sing.ends_with('s')) {
                (text::NO_PLURAL, plur.clone())
            } else {
                (text::NO_SINGULAR, sing.clone())
            };
            if !denied {
                entry.negated.push(name);
            }
            SimReply { text: template.replace("{X}", &x), entry }
        }
    }
}

/// One sentence naming `items`, from a template with `{L}`, `{be}`, `{are}`.
fn list_sentence(template: &str, items: &[Planned], rng: &mut ChaCha8Rng) -> Vec<Piece> {
    let first_plural = items.first().is_some_and(|m| m.plural);
    let be = if first_plural { "are" } else { "is" };
    let are = if items.len() > 1 || first_plural { "are" } else { "is" };
    let t = template.replace("{be}", be).replace("{are}", are);
    let (before, after) = t.split_once("{L}").unwrap_or((t.as_str(), ""));
    let mut pieces = vec![Piece::Text(before.to_string())];
    for (i, m) in items.iter().enumerate() {
        if i > 0 {
            let sep = if i + 1 < items.len() {
                text::LIST_SEPARATORS[0]
            } else if items.len() > 2 && rng.gen_bool(0.5) {
                text::LIST_SEPARATORS[2]
            } else {
                text::LIST_SEPARATORS[1]
            };
            pieces.push(Piece::Text(sep.to_string()));
        }
        let text = if i == 0 && before.is_empty() { text::capitalize(&m.text) } else { m.text.clone() };
        pieces.push(Piece::Mention { concept: m.concept, role: m.role, text, plural: m.plural, claimed_count: m.claimed_count });
    }
    pieces.push(Piece::Text(after.to_string()));
    pieces
}
