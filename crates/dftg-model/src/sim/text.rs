//! The simulator's language: surface forms it uses for each concept, sentence templates, and
//! rendering helpers. Filler text (everything that is not an object mention) must name no
//! vocabulary phrase: a unit test runs every template through the vocabulary.

use dftg_core::vocab::{ConceptId, Vocabulary};

/// Opening sentences: `{L}` is the list of mentions; `{be}` agrees with the first mention
/// ("there is a dog and two cats"), `{are}` with the whole list.
pub(crate) const OPENINGS: &[&str] = &[
    "The image shows {L}.",
    "This picture features {L}.",
    "In this photo, there {be} {L}.",
    "The scene contains {L}.",
    "Here we can see {L}.",
    "The photograph depicts {L}.",
    "At first glance, the image presents {L}.",
    "This image captures {L}.",
];

/// Sentences that add more mentions after the opening.
pub(crate) const CONTINUATIONS: &[&str] = &[
    "There {be} also {L}.",
    "Nearby, there {be} {L}.",
    "You can also spot {L}.",
    "In the background, there {be} {L}.",
    "{L} {are} also visible.",
    "The view also includes {L}.",
    "Closer to the front, there {be} {L}.",
    "{L} can be seen as well.",
    "Toward the edge of the frame, there {be} {L}.",
];

/// Sentences for images where nothing is mentioned.
pub(crate) const EMPTY_SCENE: &[&str] = &[
    "The image shows a quiet, uneventful scene.",
    "This picture captures an empty scene.",
    "The photograph depicts a simple, uncluttered view.",
];

/// Setting sentences by scene kind (no object named).
pub(crate) const SETTING_GENERIC: &[&str] = &[
    "The overall atmosphere feels calm.",
    "The lighting is soft and natural.",
    "The composition is balanced and pleasant.",
    "Everything appears to be in good condition.",
    "It looks like an ordinary moment captured on camera.",
];
pub(crate) const SETTING_INDOOR: &[&str] = &[
    "The setting appears to be indoors.",
    "The room looks tidy and well organized.",
    "The space feels cozy and lived in.",
    "The interior is neatly arranged.",
];
pub(crate) const SETTING_FOOD: &[&str] =
    &["The food looks fresh and appetizing.", "The meal seems ready to be enjoyed.", "Everything looks carefully prepared."];
pub(crate) const SETTING_STREET: &[&str] = &[
    "The scene takes place outdoors.",
    "It seems to be an ordinary day in the city.",
    "The weather appears clear.",
    "The road stretches into the distance.",
];
pub(crate) const SETTING_NATURE: &[&str] =
    &["The animals seem relaxed in their surroundings.", "The landscape looks open and peaceful.", "The grass looks lush in the daylight."];
pub(crate) const SETTING_SPORTS: &[&str] =
    &["It looks like an active day of outdoor recreation.", "The moment seems full of energy and motion."];

/// Negated statements about an absent concept; `{P}` is its plural.
pub(crate) const NEGATIONS: &[&str] = &["There are no {P} in the image.", "No {P} can be seen.", "I don't see any {P}."];

/// Yes/no answers; `{X}` is the mention ("a dog", "dogs").
pub(crate) const YES_SINGULAR: &str = "Yes, there is {X} in the image.";
pub(crate) const YES_PLURAL: &str = "Yes, there are {X} in the image.";
pub(crate) const NO_SINGULAR: &str = "No, there is no {X} in the image.";
pub(crate) const NO_PLURAL: &str = "No, there are no {X} in the image.";
pub(crate) const CANNOT_TELL: &str = "That is hard to tell from the image.";

/// Joiners between mentions of one list.
pub(crate) const LIST_SEPARATORS: &[&str] = &[", ", " and ", ", and "];

/// Quantifier of a plural mention without an explicit count.
pub(crate) const NO_COUNT_QUANTIFIER: &str = "some";
/// Explicit pair form, read as two.
pub(crate) const PAIR_OF: &str = "a pair of";

/// All filler fragments (templates with placeholders), for the vocabulary test.
#[cfg(test)]
pub(crate) fn all_positive_templates() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for set in [
        OPENINGS,
        CONTINUATIONS,
        EMPTY_SCENE,
        SETTING_GENERIC,
        SETTING_INDOOR,
        SETTING_FOOD,
        SETTING_STREET,
        SETTING_NATURE,
        SETTING_SPORTS,
        LIST_SEPARATORS,
    ] {
        v.extend_from_slice(set);
    }
    v.extend_from_slice(&[YES_SINGULAR, YES_PLURAL, CANNOT_TELL, NO_COUNT_QUANTIFIER, PAIR_OF, "a", "an", "one", "is", "are"]);
    v
}

#[cfg(test)]
pub(crate) fn all_negative_templates() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = NEGATIONS.to_vec();
    v.extend_from_slice(&[NO_SINGULAR, NO_PLURAL]);
    v
}

/// Preferred singular surface forms per concept (plurals come from the vocabulary). Concepts
/// not listed use their canonical name. Every form is checked against the vocabulary at
/// start-up; forms that do not map back to their concept are dropped.
const SURFACES: &[(&str, &[&str])] = &[
    ("person", &["person", "man", "woman", "boy", "girl", "child"]),
    ("bicycle", &["bicycle", "bike"]),
    ("car", &["car", "sedan", "taxi"]),
    ("motorcycle", &["motorcycle", "motorbike", "scooter"]),
    ("airplane", &["airplane", "plane", "jet"]),
    ("truck", &["truck", "pickup truck"]),
    ("boat", &["boat", "sailboat"]),
    ("fire hydrant", &["fire hydrant", "hydrant"]),
    ("bench", &["bench", "park bench"]),
    ("bird", &["bird", "pigeon", "seagull", "duck"]),
    ("cat", &["cat", "kitten"]),
    ("dog", &["dog", "puppy"]),
    ("horse", &["horse", "pony"]),
    ("sheep", &["sheep", "lamb"]),
    ("cow", &["cow", "calf"]),
    ("handbag", &["handbag", "purse"]),
    ("tie", &["tie", "necktie"]),
    ("skis", &["ski"]),
    ("sports ball", &["ball", "soccer ball"]),
    ("tennis racket", &["tennis racket", "racket"]),
    ("cup", &["cup", "mug"]),
    ("sandwich", &["sandwich", "burger"]),
    ("donut", &["donut", "doughnut"]),
    ("cake", &["cake", "cupcake"]),
    ("chair", &["chair", "stool"]),
    ("couch", &["couch", "sofa"]),
    ("potted plant", &["potted plant", "houseplant"]),
    ("dining table", &["dining table", "table", "kitchen table"]),
    ("tv", &["tv", "television"]),
    ("mouse", &["computer mouse", "mouse"]),
    ("remote", &["remote", "remote control"]),
    ("cell phone", &["cell phone", "smartphone"]),
    ("oven", &["oven", "stove"]),
    ("refrigerator", &["refrigerator", "fridge"]),
    ("hair drier", &["hair drier", "hairdryer"]),
];

/// Concepts named without article or number ("some broccoli", "some scissors").
const MASS_NOUNS: &[&str] = &["broccoli", "scissors"];

/// Concepts never written with "a pair of" (odd for people). Concepts whose name ends in "s"
/// are excluded too: "a pair of skis" / "a pair of scissors" is one object, and extractors
/// tell that case apart by the trailing "s" (which "bus" and "wine glass" also have).
const NO_PAIR: &[&str] = &["person"];

/// The surface forms of one concept.
#[derive(Debug, Clone)]
pub(crate) struct Surfaces {
    /// (singular, plural), canonical first.
    pub forms: Vec<(String, String)>,
    pub mass: bool,
    pub pair_ok: bool,
}

/// Builds the validated surface table for a vocabulary.
pub(crate) fn surface_table(vocab: &Vocabulary) -> Vec<Surfaces> {
    let mut out = Vec::with_capacity(vocab.len());
    for (i, c) in vocab.concepts().iter().enumerate() {
        let id = i as ConceptId;
        let wanted: Vec<&str> =
            SURFACES.iter().find(|(n, _)| *n == c.name).map(|(_, forms)| forms.to_vec()).unwrap_or_else(|| vec![c.name.as_str()]);
        let mut forms: Vec<(String, String)> = Vec::new();
        for w in wanted {
            let Some(pos) = c.synonyms.iter().position(|s| s == w) else { continue };
            let (s, p) = (&c.synonyms[pos], &c.plurals[pos]);
            let ok = |x: &str| vocab.phrase(x).is_some_and(|e| e.concept == Some(id));
            if ok(s) && ok(p) {
                forms.push((s.clone(), p.clone()));
            }
        }
        if forms.is_empty() {
            // The canonical name always names its concept unless a phrase shadows it.
            forms.push((c.synonyms[0].clone(), c.plurals[0].clone()));
        }
        out.push(Surfaces {
            forms,
            mass: MASS_NOUNS.contains(&c.name.as_str()),
            pair_ok: !NO_PAIR.contains(&c.name.as_str()) && !c.name.ends_with('s'),
        });
    }
    out
}

const NUMBER_WORDS: [&str; 13] =
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];

/// "two" for 2 (or "2" when `digits` or the number has no word).
pub(crate) fn number_text(n: u32, digits: bool) -> String {
    match NUMBER_WORDS.get(n as usize) {
        Some(w) if !digits => (*w).to_string(),
        _ => n.to_string(),
    }
}

pub(crate) use dftg_core::english::{article, capitalize};

/// Lowercase words of a text (letters, digits, inner hyphens and apostrophes), with the byte
/// offset where each starts.
pub(crate) fn words(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, ch) in text.char_indices() {
        let inner = ch.is_alphanumeric() || ((ch == '-' || ch == '\'') && start.is_some());
        match (inner, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, text[s..i].trim_end_matches(['-', '\'']).to_lowercase()));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text[s..].trim_end_matches(['-', '\'']).to_lowercase()));
    }
    out
}

/// A phrase of the vocabulary found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PhraseHit {
    pub concept: Option<ConceptId>,
    pub plural: bool,
    /// Word index of the first word.
    pub word: usize,
    pub len: usize,
    pub text: String,
}

/// Greedy longest-match scan of `text` for vocabulary phrases, left to right, without
/// crossing sentence punctuation. What a straightforward extractor would see. A one-word hit
/// that is also an attribute word ("orange") directly before another hit is read as the
/// attribute, not as an object.
pub(crate) fn scan_phrases(vocab: &Vocabulary, text: &str) -> Vec<PhraseHit> {
    let mut hits = Vec::new();
    for clause in text.split(['.', ',', ';', ':', '!', '?', '\n']) {
        let ws = words(clause);
        let longest_at = |i: usize| -> Option<PhraseHit> {
            for len in (1..=vocab.max_words().min(ws.len().saturating_sub(i))).rev() {
                let phrase = ws[i..i + len].iter().map(|(_, w)| w.as_str()).collect::<Vec<_>>().join(" ");
                if let Some(e) = vocab.phrase(&phrase) {
                    return Some(PhraseHit { concept: e.concept, plural: e.plural, word: i, len, text: phrase });
                }
            }
            None
        };
        let mut i = 0;
        while i < ws.len() {
            match longest_at(i) {
                Some(h) => {
                    let attribute_before_noun = h.len == 1 && vocab.attribute_word(&h.text).is_some() && longest_at(i + 1).is_some();
                    i += h.len;
                    if !attribute_before_noun {
                        hits.push(h);
                    }
                }
                None => i += 1,
            }
        }
    }
    hits
}
