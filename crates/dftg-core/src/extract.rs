//! Text information extraction (stage 1, step 2): what a response *asserts* is in this image.
//!
//! A careful-reader extractor over the vocabulary:
//! - phrases match longest-first ("hot dog" is not a dog, "teddy bear" is not a bear), with
//!   plural and irregular forms from the vocabulary, possessives stripped ("man's" → man);
//! - explicit quantities directly before the noun ("two dogs", "3 cars", "a pair of skis");
//! - attribute words (colour, size, material) directly before the noun ("a large brown dog");
//! - a colour word that is also a concept, followed by a noun, is an attribute ("an orange
//!   sign" is not the fruit);
//! - negated mentions are not claims: a negator ("no", "not", "without", "n't", "nor",
//!   "cannot") negates the coordinated noun phrase after it ("no other objects or people"),
//!   and "X is not visible / X cannot be seen / X is absent" negates the subject;
//! - sentences of general knowledge ("Giraffes are known for their long necks.") without a
//!   reference to the image are not claims about this image.
//!
//! The hot path allocates nothing per token: scratch buffers are reused across calls. Work is
//! linear in the text (every look-around is bounded), and at most [`MAX_MENTIONS`] mentions
//! and as many negations are kept, so a pathological reply costs little memory or time.

use crate::vocab::{AttributeId, ConceptId, Vocabulary};

/// Word classes: each token is looked up once and carries its classes as bit flags.
mod class {
    pub const STARTER: u32 = 1 << 0;
    pub const NEGATOR: u32 = 1 << 1;
    pub const BE: u32 = 1 << 2;
    pub const FILLER: u32 = 1 << 3;
    pub const FUNCTION: u32 = 1 << 4;
    pub const ATTRIBUTE: u32 = 1 << 5;
    pub const NUMBER: u32 = 1 << 6;
    pub const ABSENT: u32 = 1 << 7;
    pub const COORD: u32 = 1 << 8;
    pub const CONTINUE: u32 = 1 << 9;
    pub const GENERIC: u32 = 1 << 10;
    pub const KNOWN_OFTEN: u32 = 1 << 11;
    pub const ARE_IS: u32 = 1 << 12;
    pub const DEICTIC: u32 = 1 << 13;
    pub const VISIBLE: u32 = 1 << 14;
    pub const THE_THIS: u32 = 1 << 15;
    pub const FRAME: u32 = 1 << 16;
    pub const LINK: u32 = 1 << 17;
    pub const IN: u32 = 1 << 18;
    /// Appears after the first word of some multi-word phrase.
    pub const INNER: u32 = 1 << 19;
    pub const MODAL: u32 = 1 << 20;
    /// Opens a relative clause about a place or a person ("where", "who").
    pub const RELATIVE: u32 = 1 << 21;
    /// Verbs and prepositions that take the carriages of a train ("pulling", "made up of").
    pub const CARRIAGE: u32 = 1 << 22;
    /// Quantity words that may sit before a noun ("several", "multiple").
    pub const QUANTITY: u32 = 1 << 23;
    /// Determiners that point back at something named before ("the", "this", "its").
    pub const DEFINITE: u32 = 1 << 24;
}

const WORD_CLASSES: &[(u32, &[&str])] = &[
    (class::NEGATOR, &["no", "not", "without", "nor", "none", "neither", "cannot", "never", "lacks", "lacking"]),
    (
        class::BE,
        &[
            "is", "are", "was", "were", "be", "been", "can", "could", "do", "does", "did", "will", "would", "seem", "seems", "appear",
            "appears", "also", "clearly",
        ],
    ),
    // words that may sit between a negator and the head it negates
    (
        class::FILLER,
        &[
            "a",
            "an",
            "the",
            "any",
            "other",
            "another",
            "additional",
            "more",
            "such",
            "signs",
            "sign",
            "trace",
            "traces",
            "of",
            "visible",
            "there",
            "here",
            "to",
            "be",
            "is",
            "are",
            "was",
            "were",
            "seem",
            "seems",
            "appear",
            "appears",
            "see",
            "seen",
            "contain",
            "contains",
            "include",
            "includes",
            "show",
            "shows",
            "have",
            "has",
            "feature",
            "features",
            "evidence",
            "presence",
            "indication",
            "kind",
            "kinds",
            "type",
            "types",
            "hold",
            "holding",
            "carry",
            "carrying",
            "wear",
            "wearing",
            "ride",
            "riding",
            "single",
            "one",
            "two",
            "live",
            "real",
            "actual",
            "present",
            "notice",
            "spot",
            "find",
            "detect",
            "observe",
            "identify",
            "depict",
            "depicts",
            "i",
            "we",
            "you",
            "it",
            "this",
            "image",
            "picture",
            "photo",
            "in",
            "at",
            "all",
            "obvious",
            "apparent",
        ],
    ),
    // words after which "orange" is still the fruit ("oranges and apples", "an orange on …")
    (
        class::FUNCTION,
        &[
            "and", "or", "is", "are", "was", "were", "on", "in", "with", "of", "to", "that", "which", "sitting", "lying", "next", "near",
            "from", "at", "by", "for", "as", "the", "a", "an", "slice", "slices", "half", "halves", "placed", "cut", "being", "has",
            "have", "can", "could", "also", "nearby", "beside", "behind", "under", "over", "into", "onto", "while", "but", "so", "than",
            "there",
        ],
    ),
    (class::ABSENT, &["absent", "missing", "nowhere"]),
    (class::COORD, &["and", "or", "nor"]),
    (class::CONTINUE, &["other", "any", "no", "more"]),
    (class::GENERIC, &["typically", "generally", "commonly", "usually"]),
    (class::KNOWN_OFTEN, &["known", "often"]),
    (class::ARE_IS, &["are", "is"]),
    (class::DEICTIC, &["image", "picture", "photo", "photograph", "scene", "here", "this", "shown", "seen", "visible", "depicted"]),
    (
        class::VISIBLE,
        &[
            "visible", "present", "seen", "shown", "found", "observed", "spotted", "depicted", "apparent", "included", "pictured", "there",
            "here",
        ],
    ),
    (class::THE_THIS, &["the", "this"]),
    (class::FRAME, &["image", "picture", "photo", "photograph", "scene", "frame"]),
    (class::LINK, &["be", "to", "clearly", "actually"]),
    (class::IN, &["in"]),
    (class::MODAL, &["might", "may", "could", "would", "will", "can", "should", "shall"]),
    (class::RELATIVE, &["where", "who", "whom", "whose"]),
    (class::DEFINITE, &["the", "this", "that", "these", "those", "its", "their", "his", "her"]),
    (class::CARRIAGE, &["of", "pulling", "pulls", "pulled", "pull", "hauling", "hauls", "hauled", "towing", "tows"]),
    (class::QUANTITY, &["several", "multiple", "many", "various", "numerous", "few", "more", "other", "its", "their", "long", "the", "a"]),
];

/// Up to this many attributes are kept per mention.
pub const MAX_ATTRIBUTES: usize = 3;

/// Mentions kept per text (and negations, separately); a caption names a few dozen at most,
/// so more is a runaway reply. The rest are dropped and [`Extraction::capped`] is set.
pub const MAX_MENTIONS: usize = 256;

/// Words looked at before a noun for its count and attributes: a real modifier run ("two
/// large brown fluffy dogs") is a handful, and a bound keeps long attribute chains linear.
const MAX_MODIFIER_WORDS: usize = 12;

/// Texts are read up to this many bytes (spans are `u32`).
const MAX_TEXT_BYTES: usize = u32::MAX as usize;

/// The attributes of one mention: (attribute, span of its word), at most [`MAX_ATTRIBUTES`].
pub type Attributes = [Option<(AttributeId, (u32, u32))>; MAX_ATTRIBUTES];

/// A mention before it is turned into a record (ids, not strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMention {
    pub concept: ConceptId,
    /// Byte span of the noun phrase head in the text.
    pub span: (u32, u32),
    pub count: Option<u32>,
    pub attributes: [Option<(AttributeId, (u32, u32))>; MAX_ATTRIBUTES],
    /// Sentence number inside the text.
    pub sentence: u32,
    /// Index of the surface form's first token (tells apart "men" and "woman" of one concept).
    pub surface: u32,
}

impl RawMention {
    pub fn attributes(&self) -> impl Iterator<Item = (AttributeId, (u32, u32))> + '_ {
        self.attributes.iter().flatten().copied()
    }
}

/// Result of one extraction, reused across calls.
#[derive(Debug, Default, Clone)]
pub struct Extraction {
    pub mentions: Vec<RawMention>,
    /// Concepts the text denies, with their spans.
    pub negated: Vec<(ConceptId, (u32, u32))>,
    /// Set when mentions or negations beyond [`MAX_MENTIONS`] were dropped.
    pub capped: bool,
}

impl Extraction {
    fn push_mention(&mut self, m: RawMention) {
        if self.mentions.len() < MAX_MENTIONS {
            self.mentions.push(m);
        } else {
            self.capped = true;
        }
    }

    fn push_negated(&mut self, concept: ConceptId, span: (u32, u32)) {
        if self.negated.len() < MAX_MENTIONS {
            self.negated.push((concept, span));
        } else {
            self.capped = true;
        }
    }

    /// "X and Y are not visible": the clause's mentions since `first` become negations.
    fn deny_since(&mut self, first: usize) {
        let first = first.min(self.mentions.len());
        for k in first..self.mentions.len() {
            let m = self.mentions[k];
            self.push_negated(m.concept, m.span);
        }
        self.mentions.truncate(first);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    /// A clause or sentence boundary (`.`, `!`, `?`, `;`, `:`, parentheses, blank line).
    Stop {
        sentence_end: bool,
    },
    Comma,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    start: u32,
    end: u32,
    /// Range of the normalized word in `ExtractScratch::norm`.
    ns: u32,
    ne: u32,
    kind: Kind,
    /// Word classes (`class::*`), 0 for punctuation.
    flags: u32,
}

/// Reusable buffers for [`Extractor::extract_into`].
#[derive(Debug, Default)]
pub struct ExtractScratch {
    chair: crate::chair::ChairScratch,
    norm: String,
    toks: Vec<Tok>,
    generic_sentence: Vec<bool>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Neg {
    Off,
    /// After a negator, before the noun phrase head.
    Seeking,
    /// After a head: only coordination keeps the scope open.
    AfterHead,
    /// After "," / "and" / "or": the next head is negated too.
    Coord,
}

/// The project's own extractor.
#[derive(Debug, Clone)]
pub struct Extractor {
    vocab: std::sync::Arc<Vocabulary>,
    /// Every word with a class (phrase starters, negators, attribute words, …): one lookup
    /// per token classifies it.
    lexicon: ahash::AHashMap<Box<str>, u32>,
    /// Longest lexicon word: longer tokens are not looked up.
    longest: usize,
    /// When set, mentions come from the CHAIR-compatible reader instead (no spans, counts,
    /// attributes or negation: the reference's behaviour).
    chair: Option<std::sync::Arc<crate::chair::ChairVocab>>,
    /// "car" and "train" when the vocabulary has both: the cars a train pulls are its carriages.
    car_train: Option<(ConceptId, ConceptId)>,
    /// "person": words for people that also qualify another noun ("a baby elephant").
    person: Option<ConceptId>,
    /// "bicycle" and "motorcycle": "the bike" after a motorcycle is that motorcycle.
    bike: Option<(ConceptId, ConceptId)>,
}

impl Extractor {
    pub fn new(vocab: std::sync::Arc<Vocabulary>) -> Self {
        let mut lexicon: ahash::AHashMap<Box<str>, u32> = ahash::AHashMap::new();
        let mut add = |w: &str, f: u32| *lexicon.entry(w.into()).or_insert(0) |= f;
        for c in vocab.concepts() {
            for s in c.synonyms.iter().chain(&c.plurals) {
                if let Some(first) = s.split(' ').next() {
                    add(first, class::STARTER);
                }
            }
        }
        for p in vocab.phrase_keys() {
            let mut words = p.split(' ');
            if let Some(first) = words.next() {
                add(first, class::STARTER);
            }
            for w in words {
                add(w, class::INNER);
            }
        }
        for f in vocab.families() {
            for v in &f.values {
                add(v, class::ATTRIBUTE);
            }
        }
        for (flag, words) in WORD_CLASSES {
            for w in *words {
                add(w, *flag);
            }
        }
        for w in crate::english::NUMBER_WORDS[1..].iter().chain(crate::english::COUNT_WORDS.iter().map(|(w, _)| w)) {
            add(w, class::NUMBER);
        }
        let attribute_aliases: Vec<String> = vocab.attribute_words().map(str::to_string).collect();
        for w in &attribute_aliases {
            add(w, class::ATTRIBUTE);
        }
        let longest = lexicon.keys().map(|k| k.len()).max().unwrap_or(0);
        let car_train = vocab.lookup("car").zip(vocab.lookup("train"));
        let person = vocab.lookup("person");
        let bike = vocab.lookup("bicycle").zip(vocab.lookup("motorcycle"));
        Extractor { vocab, lexicon, longest, chair: None, car_train, person, bike }
    }

    /// An extractor that reads like the reference CHAIR implementation (for numbers that
    /// compare with papers). Its categories must be concepts of `vocab`.
    pub fn chair_compatible(vocab: std::sync::Arc<Vocabulary>, chair: crate::chair::ChairVocab) -> Result<Self, crate::CoreError> {
        if let Some(missing) = chair.categories().find(|c| vocab.lookup(c).is_none()) {
            return Err(crate::CoreError::invalid("chair_vocab", format!("category {missing:?} is not in vocabulary {}", vocab.name)));
        }
        let mut e = Extractor::new(vocab);
        e.chair = Some(std::sync::Arc::new(chair));
        Ok(e)
    }

    /// False for the CHAIR-compatible reader: its mentions carry no text spans.
    pub fn has_spans(&self) -> bool {
        self.chair.is_none()
    }

    fn classify(&self, word: &str) -> u32 {
        let mut f = if word.len() <= self.longest { self.lexicon.get(word).copied().unwrap_or(0) } else { 0 };
        let b = word.as_bytes();
        if b.len() > 3 && word.ends_with("n't") {
            f |= class::NEGATOR;
        }
        if !b.is_empty() && b.len() <= 4 && b.iter().all(|c| c.is_ascii_digit()) {
            f |= class::NUMBER;
        }
        f
    }

    pub fn vocab(&self) -> &Vocabulary {
        &self.vocab
    }

    pub fn vocab_arc(&self) -> &std::sync::Arc<Vocabulary> {
        &self.vocab
    }

    /// Convenience wrapper allocating fresh buffers.
    pub fn extract(&self, text: &str) -> Extraction {
        let mut scratch = ExtractScratch::default();
        let mut out = Extraction::default();
        self.extract_into(text, &mut scratch, &mut out);
        out
    }

    pub fn extract_into(&self, text: &str, s: &mut ExtractScratch, out: &mut Extraction) {
        out.mentions.clear();
        out.negated.clear();
        out.capped = false;
        let text = prefix(text, MAX_TEXT_BYTES);
        if let Some(chair) = &self.chair {
            let mut names = Vec::new();
            chair.mentioned_into(text, &mut s.chair, &mut names);
            for name in names {
                if let Some(concept) = self.vocab.lookup(name) {
                    out.push_mention(RawMention {
                        concept,
                        span: (0, 0),
                        count: None,
                        attributes: [None; MAX_ATTRIBUTES],
                        sentence: 0,
                        surface: 0,
                    });
                }
            }
            return;
        }
        tokenize(text, s);
        for t in s.toks.iter_mut() {
            if t.kind == Kind::Word {
                t.flags = self.classify(&s.norm[t.ns as usize..t.ne as usize]);
            }
        }
        mark_generic_sentences(s);
        let toks = &s.toks;
        let norm = s.norm.as_str();
        let n = toks.len();
        let max_words = self.vocab.max_words();
        let mut neg = Neg::Off;
        let mut sentence: u32 = 0;
        // first mention index of the current clause, for "X and Y are not visible"
        let mut clause_first_mention = 0usize;
        let mut last_mention_tok_end: Option<usize> = None;
        let mut last_mention_start = 0usize;
        // inside "where cyclists might leave their bikes": a clause about what may happen
        let mut hypothetical = false;
        // a train was named in this sentence; one of its cars was read as a carriage
        let (mut train_named, mut carriage_named) = (false, false);
        // inside a short quotation (a sign's text, a name), up to this token
        let mut quote_end = 0usize;
        // inside a clause opened by "that" ("indicating that they might belong to people")
        let mut that_clause = false;
        // multi-word phrases named so far: (last word without a plural s, concept), for "the
        // bear" after "a teddy bear"
        let mut compounds: Vec<(&str, ConceptId)> = Vec::new();
        let mut i = 0;
        while i < n {
            match toks[i].kind {
                Kind::Stop { sentence_end } => {
                    if i >= quote_end && word(toks, norm, i) == "\"" {
                        quote_end = quotation_end(toks, norm, i).unwrap_or(0);
                    }
                    neg = Neg::Off;
                    hypothetical = false;
                    that_clause = false;
                    if sentence_end {
                        sentence += 1;
                        train_named = false;
                        carriage_named = false;
                    }
                    clause_first_mention = out.mentions.len();
                    last_mention_tok_end = None;
                    i += 1;
                    continue;
                }
                Kind::Comma => {
                    hypothetical = false;
                    that_clause = false;
                    neg = match neg {
                        Neg::AfterHead | Neg::Coord => Neg::Coord,
                        _ => Neg::Off,
                    };
                    i += 1;
                    continue;
                }
                Kind::Word => {}
            }
            let flags = toks[i].flags;
            if flags & class::RELATIVE != 0 && relative_clause_is_modal(toks, norm, i) {
                hypothetical = true;
            }
            // "suggesting that the train may be part of a fleet of trains": the clause's
            // subject is the train in view; what follows its modal verb may only be
            if flags & class::DEFINITE != 0 && clause_that(toks, norm, i) {
                that_clause = true;
            } else if that_clause && modal_of_what_may_be(toks, norm, i) {
                hypothetical = true;
            }
            if flags & class::NEGATOR != 0 {
                // "X is not visible": negates the mentions just before it in this clause
                if let Some(end) = last_mention_tok_end {
                    if post_nominal_denial(toks, end, i) {
                        out.deny_since(clause_first_mention);
                        last_mention_tok_end = None;
                        neg = Neg::Off;
                        i += 1;
                        continue;
                    }
                }
                neg = Neg::Seeking;
                i += 1;
                continue;
            }
            if flags & class::ABSENT != 0 {
                if let Some(end) = last_mention_tok_end {
                    // distance first: the scan is then at most two tokens
                    if i - end <= 2 && (end..i).all(|k| toks[k].flags & class::BE != 0) {
                        out.deny_since(clause_first_mention);
                        last_mention_tok_end = None;
                    }
                }
            }
            // longest phrase starting here
            let mut hit = None;
            if flags & class::STARTER != 0 {
                let mut words = 1;
                // a longer phrase is only possible through words that occur inside phrases
                while words < max_words && i + words < n && toks[i + words].flags & class::INNER != 0 {
                    words += 1;
                }
                for len in (1..=words).rev() {
                    let key = &norm[toks[i].ns as usize..toks[i + len - 1].ne as usize];
                    if let Some(e) = self.vocab.phrase(key) {
                        hit = Some((len, e));
                        break;
                    }
                }
            }
            let Some((len, entry)) = hit else {
                neg = match neg {
                    Neg::Seeking if flags & (class::FILLER | class::ATTRIBUTE) != 0 => Neg::Seeking,
                    Neg::Seeking => Neg::AfterHead,
                    Neg::AfterHead | Neg::Coord if flags & class::COORD != 0 => Neg::Coord,
                    Neg::Coord if flags & class::CONTINUE != 0 => Neg::Coord,
                    _ => Neg::Off,
                };
                i += 1;
                continue;
            };
            let Some(concept) = entry.concept else {
                // a phrase that names no object ("bus stop"): a head noun for negation purposes
                neg = if neg == Neg::Off { Neg::Off } else { Neg::AfterHead };
                i += len;
                continue;
            };
            // colour word that is also a concept, used as a modifier ("an orange sign", an
            // orange "Road Work" sign) or among other colours ("black, orange and white fur")
            if len == 1 && !entry.plural && flags & class::ATTRIBUTE != 0 && (colour_before_noun(toks, norm, i) || among_colours(toks, i)) {
                i += 1;
                continue;
            }
            let span = (toks[i].start, toks[i + len - 1].end);
            if neg == Neg::Seeking || neg == Neg::Coord {
                out.push_negated(concept, span);
                neg = Neg::AfterHead;
                i += len;
                continue;
            }
            neg = Neg::Off;
            if s.generic_sentence.get(sentence as usize).copied().unwrap_or(false)
                || hypothetical
                || i < quote_end
                || (len == 1 && Some(concept) == self.person && person_word_qualifies(toks, norm, i))
                || (len == 1 && !entry.plural && sport_word_qualifies(toks, norm, i))
                || purpose_subject(toks, norm, i, len)
                || (predicate_of_previous(toks, norm, last_mention_tok_end.map(|end| (last_mention_start, end)), i)
                    && out.mentions.last().is_some_and(|m| m.concept != concept))
            {
                i += len;
                continue;
            }
            if let Some((car, train)) = self.car_train {
                if concept == train {
                    train_named = true;
                } else if concept == car && train_named && (carriage_named || carriage_context(toks, norm, i, len)) {
                    carriage_named = true;
                    i += len;
                    continue;
                }
            }
            // "the bear" after "a teddy bear", "the bike" after a motorcycle: the thing named before
            let definite = i > 0 && toks[i - 1].kind == Kind::Word && toks[i - 1].flags & class::DEFINITE != 0;
            let mut concept = concept;
            if len == 1 && definite {
                let w = word(toks, norm, i);
                let w = w.strip_suffix('s').unwrap_or(w);
                if let Some((_, earlier)) = compounds.iter().rev().find(|(last, c)| *last == w && *c != concept) {
                    concept = *earlier;
                }
            }
            if let Some((bicycle, motorcycle)) = self.bike {
                let named = |c: ConceptId| out.mentions.iter().any(|m| m.concept == c);
                if concept == bicycle && matches!(word(toks, norm, i), "bike" | "bikes") && named(motorcycle) && !named(bicycle) {
                    concept = motorcycle;
                }
            }
            if len > 1 {
                let last = word(toks, norm, i + len - 1);
                compounds.push((last.strip_suffix('s').unwrap_or(last), concept));
            }
            let (count, attributes) = self.modifiers_before(toks, norm, i, concept);
            out.push_mention(RawMention { concept, span, count, attributes, sentence, surface: i as u32 });
            last_mention_tok_end = Some(i + len);
            last_mention_start = i;
            i += len;
        }
    }

    /// Count and attributes written directly before the noun at token `head`.
    fn modifiers_before(&self, toks: &[Tok], norm: &str, head: usize, concept: ConceptId) -> (Option<u32>, Attributes) {
        let word = |i: usize| -> &str { &norm[toks[i].ns as usize..toks[i].ne as usize] };
        let mut attrs = [None; MAX_ATTRIBUTES];
        let mut na = 0;
        let mut k = head;
        let lowest = head.saturating_sub(MAX_MODIFIER_WORDS);
        while k > lowest && toks[k - 1].kind == Kind::Word {
            let w = word(k - 1);
            let a = if toks[k - 1].flags & class::ATTRIBUTE != 0 { self.vocab.attribute_word(w) } else { None };
            if let Some(a) = a {
                if na < MAX_ATTRIBUTES {
                    attrs[na] = Some((a, (toks[k - 1].start, toks[k - 1].end)));
                    na += 1;
                }
                k -= 1;
                continue;
            }
            // "black and white cat"
            if w == "and" && na > 0 && k >= 2 && k - 1 > lowest && toks[k - 2].flags & class::ATTRIBUTE != 0 {
                k -= 1;
                continue;
            }
            break;
        }
        let mut count = None;
        if k > 0 && toks[k - 1].kind == Kind::Word {
            let w = word(k - 1);
            if toks[k - 1].flags & class::NUMBER != 0 {
                count = crate::english::number_value(w);
            }
            if count.is_none() && w == "of" && k >= 2 && toks[k - 2].kind == Kind::Word {
                // "a pair of skis" names one object when the concept is itself a pair
                match word(k - 2) {
                    // "a pair of skis" is one object of a pair-noun concept (same singular and plural)
                    "pair" => {
                        let c = self.vocab.concept(concept);
                        let pair_noun = c.synonyms[0] == c.plurals[0] && c.name.ends_with('s');
                        count = Some(if pair_noun { 1 } else { 2 });
                    }
                    "dozen" => count = Some(12),
                    _ => {}
                }
            }
        }
        (count, attrs)
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends at a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// After a negator at `neg`, does "… not visible / cannot be seen / not in the image" follow,
/// with only be/modal verbs between the mention (ending at `mention_end`) and the negator?
fn post_nominal_denial(toks: &[Tok], mention_end: usize, neg: usize) -> bool {
    if neg < mention_end || neg - mention_end > 3 {
        return false;
    }
    if !(mention_end..neg).all(|k| toks[k].flags & class::BE != 0) {
        return false;
    }
    let mut k = neg + 1;
    let mut steps = 0;
    while k < toks.len() && toks[k].kind == Kind::Word && steps < 3 {
        let f = toks[k].flags;
        if f & class::VISIBLE != 0 {
            return true;
        }
        if f & class::IN != 0 {
            // "in the image"
            return k + 2 < toks.len() && toks[k + 1].flags & class::THE_THIS != 0 && toks[k + 2].flags & class::FRAME != 0;
        }
        if f & (class::BE | class::LINK) == 0 {
            return false;
        }
        k += 1;
        steps += 1;
    }
    false
}

/// Lowercased tokens with original byte spans and a single-spaced normalized copy.
fn tokenize(text: &str, s: &mut ExtractScratch) {
    s.toks.clear();
    s.norm.clear();
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0;
    let push_norm = |norm: &mut String, piece: &str| -> (u32, u32) {
        if !norm.is_empty() {
            norm.push(' ');
        }
        let ns = norm.len();
        norm.push_str(piece);
        norm[ns..].make_ascii_lowercase();
        (ns as u32, norm.len() as u32)
    };
    while i < n {
        let c = b[i];
        if c.is_ascii_alphanumeric() {
            let start = i;
            let mut j = i + 1;
            let mut apostrophe_at = None;
            while j < n {
                let d = b[j];
                if d.is_ascii_alphanumeric() {
                    j += 1;
                } else if (d == b'-' || d == b'\'') && j + 1 < n && b[j + 1].is_ascii_alphanumeric() {
                    if d == b'\'' {
                        apostrophe_at = Some(j);
                    }
                    j += 1;
                } else if d == 0xE2 && j + 3 < n && b[j + 1] == 0x80 && b[j + 2] == 0x99 && b[j + 3].is_ascii_alphanumeric() {
                    // typographic apostrophe ’
                    apostrophe_at = Some(j);
                    j += 3;
                } else {
                    break;
                }
            }
            let end = j;
            // normalized text: ’ → ', possessive 's stripped
            let mut piece_end = end;
            if let Some(a) = apostrophe_at {
                let tail = &text[a..end];
                let tail_l = tail.to_ascii_lowercase();
                if tail_l.ends_with("s") && (tail_l == "'s" || tail_l == "\u{2019}s") {
                    piece_end = a;
                }
            }
            let (ns, ne) = if text[start..piece_end].contains('\u{2019}') {
                let replaced = text[start..piece_end].replace('\u{2019}', "'");
                push_norm(&mut s.norm, &replaced)
            } else {
                push_norm(&mut s.norm, &text[start..piece_end])
            };
            s.toks.push(Tok { start: start as u32, end: piece_end as u32, ns, ne, kind: Kind::Word, flags: 0 });
            i = end;
            continue;
        }
        let kind = match c {
            b'.' | b'!' | b'?' => Some(Kind::Stop { sentence_end: true }),
            b';' | b':' | b'(' | b')' | b'"' => Some(Kind::Stop { sentence_end: false }),
            b',' => Some(Kind::Comma),
            b'\n' if i + 1 < n && b[i + 1] == b'\n' => Some(Kind::Stop { sentence_end: true }),
            _ => None,
        };
        if let Some(kind) = kind {
            let (ns, ne) = push_norm(&mut s.norm, &text[i..i + 1]);
            s.toks.push(Tok { start: i as u32, end: i as u32 + 1, ns, ne, kind, flags: 0 });
        }
        i += 1;
        // skip the rest of a UTF-8 sequence
        while i < n && (b[i] & 0xC0) == 0x80 {
            i += 1;
        }
    }
}

/// Marks sentences that state general knowledge rather than describe the image.
/// A relative clause whose verb is a modal ("where cyclists might leave their bikes", "who
/// will arrive later"): what it names may be there some day, not in the image. Looks at most
/// six words ahead, inside the clause.
fn relative_clause_is_modal(toks: &[Tok], norm: &str, at: usize) -> bool {
    let clause = toks[at + 1..].iter().take(6).take_while(|t| t.kind == Kind::Word).count();
    (at + 1..at + 1 + clause).any(|j| modal_of_what_may_be(toks, norm, j))
}

/// Token `j` is a modal verb that says what may be, not what can be seen ("where people can be
/// seen walking" still says they are there).
fn modal_of_what_may_be(toks: &[Tok], norm: &str, j: usize) -> bool {
    if toks[j].flags & class::MODAL == 0 {
        return false;
    }
    let mut k = j + 1;
    while k < toks.len() && toks[k].kind == Kind::Word && matches!(word(toks, norm, k), "also" | "clearly" | "still") {
        k += 1;
    }
    let seen = k + 1 < toks.len()
        && toks[k].kind == Kind::Word
        && word(toks, norm, k) == "be"
        && toks[k + 1].kind == Kind::Word
        && toks[k + 1].flags & class::VISIBLE != 0;
    !seen
}

/// "that" opening a clause ("indicating that they might belong to people"), not pointing at a
/// noun ("that dog"): a subject follows it.
fn clause_that(toks: &[Tok], norm: &str, i: usize) -> bool {
    word(toks, norm, i) == "that"
        && toks.get(i + 1).is_some_and(|t| t.kind == Kind::Word)
        && matches!(
            word(toks, norm, i + 1),
            "they" | "it" | "he" | "she" | "someone" | "somebody" | "there" | "the" | "a" | "an" | "these" | "those" | "its" | "their"
        )
}

/// Where a short quotation opened at token `open` ends (its closing quote), if it closes
/// within a few words: a sign's text or a name, which claims nothing ("a \"Beware of the Dog\"
/// sign"). An unclosed quote is not a quotation.
fn quotation_end(toks: &[Tok], norm: &str, open: usize) -> Option<usize> {
    (open + 1..toks.len().min(open + 12)).find(|&k| toks[k].kind != Kind::Word && word(toks, norm, k) == "\"").filter(|&k| k > open + 1)
}

/// A word for people that qualifies the noun after it ("a baby elephant", "the mother
/// giraffe", "an adult animal"): it says what kind of animal, not that a person is there.
fn person_word_qualifies(toks: &[Tok], norm: &str, i: usize) -> bool {
    if !matches!(word(toks, norm, i), "baby" | "adult" | "mother" | "father" | "mom" | "dad" | "parent" | "child" | "kid") {
        return false;
    }
    let Some(next) = toks.get(i + 1).filter(|t| t.kind == Kind::Word) else { return false };
    next.flags & class::STARTER != 0
        || matches!(
            word(toks, norm, i + 1),
            "animal" | "animals" | "one" | "ones" | "calf" | "calves" | "cub" | "cubs" | "chick" | "chicks"
        )
}

/// A sport's name before a noun ("baseball equipment", "ski poles", "football players"): the
/// game qualifies the noun; no ball or skis are claimed.
fn sport_word_qualifies(toks: &[Tok], norm: &str, i: usize) -> bool {
    if !matches!(word(toks, norm, i), "baseball" | "football" | "basketball" | "soccer" | "softball" | "volleyball" | "ski") {
        return false;
    }
    toks.get(i + 1).filter(|t| t.kind == Kind::Word).is_some_and(|t| {
        let next = word(toks, norm, i + 1);
        t.flags & (class::FUNCTION | class::BE | class::MODAL | class::NEGATOR | class::COORD | class::NUMBER) == 0
            && !next.ends_with("ing")
            && !next.ends_with("ed")
    })
}

/// Word `i` of the normalized text.
fn word<'a>(toks: &[Tok], norm: &'a str, i: usize) -> &'a str {
    &norm[toks[i].ns as usize..toks[i].ne as usize]
}

/// A colour word directly before a noun or a quoted name: an attribute, not the object.
fn colour_before_noun(toks: &[Tok], norm: &str, i: usize) -> bool {
    match toks.get(i + 1) {
        Some(next) if next.kind == Kind::Word => next.flags & class::FUNCTION == 0,
        Some(_) => word(toks, norm, i + 1) == "\"" && toks.get(i + 2).is_some_and(|t| t.kind == Kind::Word),
        None => false,
    }
}

/// A colour word coordinated with other colour words: "white and orange", "black, orange, and
/// white".
fn among_colours(toks: &[Tok], i: usize) -> bool {
    let is_colour = |k: usize| toks.get(k).is_some_and(|t| t.kind == Kind::Word && t.flags & class::ATTRIBUTE != 0);
    let is_join = |k: usize| toks.get(k).is_some_and(|t| t.kind == Kind::Comma || t.flags & class::COORD != 0);
    let before = i >= 2 && is_join(i - 1) && is_colour(i - 2);
    let after = is_join(i + 1) && (is_colour(i + 2) || (is_join(i + 2) && is_colour(i + 3)));
    before || after
}

/// Where the noun phrase whose head is at `head` starts: its own determiners, quantities,
/// numbers and attributes before it ("the several large"), at most `max` words.
fn phrase_start(toks: &[Tok], head: usize, max: usize) -> usize {
    let mut k = head;
    while k > 0
        && head - k < max
        && toks[k - 1].kind == Kind::Word
        && toks[k - 1].flags & (class::QUANTITY | class::ATTRIBUTE | class::NUMBER) != 0
    {
        k -= 1;
    }
    k
}

/// The noun phrase at `i..i + len` is the subject of a purpose infinitive: "easy for people to
/// find", "waiting for passengers to board". It names who the place is for, not who is there.
fn purpose_subject(toks: &[Tok], norm: &str, i: usize, len: usize) -> bool {
    let to_follows = toks.get(i + len).is_some_and(|t| t.kind == Kind::Word) && word(toks, norm, i + len) == "to";
    if !to_follows {
        return false;
    }
    let k = phrase_start(toks, i, 3);
    k > 0 && toks[k - 1].kind == Kind::Word && word(toks, norm, k - 1) == "for"
}

/// "The toilet is a white porcelain bowl": a noun phrase that says what the object just named
/// (the clause's subject, not "beside the table is a chair") is, not another object.
fn predicate_of_previous(toks: &[Tok], norm: &str, last_mention: Option<(usize, usize)>, i: usize) -> bool {
    let Some((start, end)) = last_mention else { return false };
    if i < end + 2 || i - end > 5 || toks[end..i].iter().any(|t| t.kind != Kind::Word) {
        return false;
    }
    let k = phrase_start(toks, start, 4);
    if k > 0 && toks[k - 1].kind == Kind::Word {
        return false;
    }
    matches!(word(toks, norm, end), "is" | "was")
        && matches!(word(toks, norm, end + 1), "a" | "an")
        && toks[end + 2..i].iter().all(|t| t.flags & (class::FUNCTION | class::NUMBER | class::STARTER) == 0)
}

/// A "car" that is a train's carriage, in a sentence that named a train: taken by a verb or
/// preposition of pulling ("pulling multiple cars", "a long train of cars", "made up of
/// several cars"), or itself placed in the train ("cars in the train").
fn carriage_context(toks: &[Tok], norm: &str, i: usize, len: usize) -> bool {
    let k = phrase_start(toks, i, 4);
    if k > 0 && toks[k - 1].kind == Kind::Word && toks[k - 1].flags & class::CARRIAGE != 0 {
        // "of" only after the train itself or "made up of" / "consisting of"
        return word(toks, norm, k - 1) != "of"
            || (k >= 2 && matches!(word(toks, norm, k - 2), "train" | "up" | "consists" | "consisting" | "composed" | "comprised"));
    }
    let after = |d: usize| if toks.get(i + len + d).is_some_and(|t| t.kind == Kind::Word) { word(toks, norm, i + len + d) } else { "" };
    matches!(after(0), "in" | "of" | "on") && matches!(after(1), "the" | "this" | "that") && after(2) == "train"
}

fn mark_generic_sentences(s: &mut ExtractScratch) {
    s.generic_sentence.clear();
    let mut marker = false;
    let mut deictic = false;
    let mut prev_are_is = false;
    let mut stated = false;
    for t in &s.toks {
        match t.kind {
            Kind::Stop { sentence_end: true } => {
                // a question after a statement ("… Question: Are there any people in the
                // image?") is appended text and asserts nothing; a text that opens with a
                // question is one (the writer's questions are read for what they ask about)
                let question = &s.norm[t.ns as usize..t.ne as usize] == "?";
                s.generic_sentence.push((marker && !deictic) || (question && stated));
                stated |= !question;
                marker = false;
                deictic = false;
                prev_are_is = false;
            }
            Kind::Word => {
                // "typically", or "are known" / "is often"
                if t.flags & class::GENERIC != 0 || (t.flags & class::KNOWN_OFTEN != 0 && prev_are_is) {
                    marker = true;
                }
                if t.flags & class::DEICTIC != 0 {
                    deictic = true;
                }
                prev_are_is = t.flags & class::ARE_IS != 0;
            }
            _ => {}
        }
    }
    s.generic_sentence.push(marker && !deictic);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ex() -> Extractor {
        Extractor::new(Arc::new(Vocabulary::coco80()))
    }

    fn names(e: &Extractor, text: &str) -> Vec<String> {
        e.extract(text).mentions.iter().map(|m| e.vocab().name(m.concept).to_string()).collect()
    }

    fn negated(e: &Extractor, text: &str) -> Vec<String> {
        e.extract(text).negated.iter().map(|(c, _)| e.vocab().name(*c).to_string()).collect()
    }

    #[test]
    fn multiword_names_match_longest_first() {
        let e = ex();
        assert_eq!(names(&e, "A hot dog next to a teddy bear and a fire hydrant."), ["hot dog", "teddy bear", "fire hydrant"]);
        assert_eq!(names(&e, "A woman holds a cell phone."), ["person", "cell phone"]);
        assert_eq!(names(&e, "Two puppies and three women."), ["dog", "person"]);
        assert_eq!(names(&e, "A man waits at the bus stop."), ["person"]);
    }

    #[test]
    fn what_a_careful_reader_does_not_count() {
        let e = ex();
        // carriages of a train, but not cars near one
        assert_eq!(names(&e, "A train is pulling several cars behind it, and each car is red."), ["train"]);
        assert_eq!(names(&e, "The train is made up of multiple cars."), ["train"]);
        assert_eq!(names(&e, "A train passes a parking lot full of cars."), ["train", "car"]);
        assert_eq!(names(&e, "Two freight cars sit on the tracks."), ["train"]);
        // colours among colours, a colour before a quoted name
        assert_eq!(names(&e, "A cat with black, orange, and white fur."), ["cat"]);
        assert_eq!(names(&e, "A kite in red and orange flies."), ["kite"]);
        assert_eq!(names(&e, "An orange \"Detour\" sign stands by the road."), Vec::<String>::new());
        assert_eq!(names(&e, "An orange and a banana."), ["orange", "banana"]);
        // what may happen, who a place is for
        assert_eq!(names(&e, "A bench where tourists might rest."), ["bench"]);
        assert_eq!(names(&e, "A street where people can be seen walking."), ["person"]);
        assert_eq!(names(&e, "A big sign makes it easy for people to find the store."), Vec::<String>::new());
        // a predicate noun says what the subject is
        assert_eq!(names(&e, "The toilet is a white porcelain bowl."), ["toilet"]);
        assert_eq!(names(&e, "Beside the table is a chair."), ["dining table", "chair"]);
        // appended questions assert nothing; a question alone is read for what it asks
        assert_eq!(names(&e, "A cat sits on a desk.\n\nQuestion: Is there a dog in the image?"), ["cat", "dining table"]);
        assert_eq!(names(&e, "Is there a dog in the image?"), ["dog"]);
        // a concept word naming the kind of another thing, in the plural too
        assert_eq!(names(&e, "Two baseball players near a bike rack."), ["person"]);
        assert_eq!(names(&e, "A man holds a glass of wine and a glass of water."), ["person", "wine glass", "cup"]);
        assert_eq!(names(&e, "A stuffed toy bear and plants in pots."), ["teddy bear", "potted plant"]);
    }

    #[test]
    fn what_is_named_before_and_what_qualifies_a_noun() {
        let e = ex();
        // a word for people before another noun says what kind of animal
        assert_eq!(names(&e, "A mother elephant and a baby elephant near an adult animal."), ["elephant", "elephant"]);
        assert_eq!(names(&e, "A mother holds her baby."), ["person", "person"]);
        // a sport's name before a noun is the game, not its ball or skis
        assert_eq!(names(&e, "Skiers with ski poles and baseball equipment."), ["person"]);
        assert_eq!(names(&e, "A man throws the baseball to a boy."), ["person", "sports ball", "person"]);
        // a sign's text or a name in quotes claims nothing; an unclosed quote is ignored
        assert_eq!(names(&e, "A \"Beware of the Dog\" sign on a fence."), Vec::<String>::new());
        assert_eq!(names(&e, "A sign says \"welcome and a dog sits by the door."), ["dog"]);
        // what follows the modal of a "that" clause may only be; its subject is in view
        assert_eq!(names(&e, "Bicycles, indicating that they might belong to different people."), ["bicycle"]);
        assert_eq!(names(&e, "It suggests that the train may be part of a fleet."), ["train"]);
        // the bare head of a phrase named before is that thing
        assert_eq!(names(&e, "A teddy bear on a bench. The bear is brown."), ["teddy bear", "bench", "teddy bear"]);
        assert_eq!(names(&e, "A teddy bear and a bear."), ["teddy bear", "bear"]);
        assert_eq!(names(&e, "A motorcycle in a garage. The bike is red."), ["motorcycle", "motorcycle"]);
        assert_eq!(names(&e, "A bicycle and a motorcycle. The bike is red."), ["bicycle", "motorcycle", "bicycle"]);
    }

    #[test]
    fn counts_and_attributes_before_the_noun() {
        let e = ex();
        let x = e.extract("There are two large brown dogs, 3 cars and a pair of skis.");
        assert_eq!(x.mentions.len(), 3);
        assert_eq!(x.mentions[0].count, Some(2));
        let attrs: Vec<_> = x.mentions[0].attributes().map(|(a, _)| e.vocab().attribute_name(a)).collect();
        assert_eq!(attrs, [("color", "brown"), ("size", "large")]);
        assert_eq!(x.mentions[1].count, Some(3));
        assert_eq!(x.mentions[2].count, Some(1), "a pair of skis is one skis object");
        assert_eq!(e.extract("a pair of buses").mentions[0].count, Some(2));
        assert_eq!(e.extract("a dog").mentions[0].count, None);
    }

    #[test]
    fn negations_are_not_claims() {
        let e = ex();
        assert!(names(&e, "There are no people in the image.").is_empty());
        assert_eq!(negated(&e, "There are no people in the image."), ["person"]);
        assert!(names(&e, "There are no other objects or people in the image.").is_empty());
        assert_eq!(names(&e, "A road without a car, and a dog runs."), ["dog"]);
        assert!(names(&e, "I don't see any cars or buses.").is_empty());
        assert!(names(&e, "No cars, trucks, or buses are visible.").is_empty());
        assert!(names(&e, "A dog is not visible in the image.").is_empty());
        assert!(names(&e, "Cats cannot be seen here.").is_empty());
        assert_eq!(names(&e, "A man with no shirt holds a dog."), ["person", "dog"]);
        assert_eq!(names(&e, "There is no car. A bus is parked."), ["bus"]);
    }

    #[test]
    fn colour_word_before_noun_is_an_attribute() {
        let e = ex();
        assert!(names(&e, "An orange sign stands there.").is_empty());
        assert_eq!(names(&e, "An orange cat sleeps."), ["cat"]);
        assert_eq!(names(&e, "Oranges and apples on a plate."), ["orange", "apple"]);
        assert_eq!(names(&e, "There is an orange on the counter."), ["orange"]);
    }

    #[test]
    fn general_knowledge_is_not_about_the_image() {
        let e = ex();
        assert_eq!(names(&e, "A giraffe eats leaves. Zebras are known for their stripes."), ["giraffe"]);
        assert_eq!(names(&e, "In this image, zebras are known to graze."), ["zebra"]);
    }

    /// 64 KiB replies (the client's default limit) of repeated words, including the shapes
    /// that were quadratic (attribute chains joined by "and"; be-verbs before "missing"):
    /// bounded output. Their speed is measured in `tests/long_reply.rs`, not asserted here.
    #[test]
    fn pathological_replies_keep_at_most_max_mentions() {
        let e = ex();
        let cases = [
            "dog ".repeat(16 << 10),
            "red orange and ".repeat(4 << 10),
            format!("dog {}{}", "is ".repeat(8 << 10), "missing ".repeat(4 << 10)),
            format!("no {}", "dog, cat, ".repeat(6 << 10)),
            "A dog is not visible. ".repeat(3 << 10),
        ];
        for text in &cases {
            let x = e.extract(text);
            assert!(x.mentions.len() <= MAX_MENTIONS && x.negated.len() <= MAX_MENTIONS, "{} {}", x.mentions.len(), x.negated.len());
        }
        let x = e.extract(&cases[0]);
        assert_eq!((x.mentions.len(), x.capped), (MAX_MENTIONS, true));
        let x = e.extract(&cases[3]);
        assert_eq!((x.mentions.len(), x.negated.len(), x.capped), (0, MAX_MENTIONS, true));
        assert!(!e.extract("A dog and a cat.").capped);
    }

    #[test]
    fn long_attribute_runs_keep_the_first_attributes_and_the_count() {
        let e = ex();
        let x = e.extract("two large brown black and white dogs");
        assert_eq!(x.mentions[0].count, Some(2));
        assert_eq!(x.mentions[0].attributes().count(), MAX_ATTRIBUTES);
        // a mention after an absent-word chain is still found, and denial still works
        assert_eq!(names(&e, "A dog is missing. A cat sleeps."), ["cat"]);
    }

    #[test]
    fn spans_point_into_the_original_text() {
        let e = ex();
        let text = "The Man\u{2019}s DOG sleeps.";
        let x = e.extract(text);
        let spans: Vec<&str> = x.mentions.iter().map(|m| &text[m.span.0 as usize..m.span.1 as usize]).collect();
        assert_eq!(spans, ["Man", "DOG"]);
    }
}
