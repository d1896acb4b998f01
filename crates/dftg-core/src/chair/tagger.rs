//! nltk's English part-of-speech tagger (`nltk.pos_tag`, i.e. `PerceptronTagger` of
//! `nltk/tag/perceptron.py`, nltk 3.8–3.10), replayed on its trained weights
//! (`averaged_perceptron_tagger_eng.{weights,tagdict,classes}.json`).
//!
//! Per token, left to right: a word of the tag dictionary (looked up as written) gets its tag;
//! any other word is tagged by the averaged perceptron: the weights of 14 features are summed
//! per class and the best class wins. The features are those of `_get_features`:
//!
//! ```text
//! bias                     i suffix <word[-3:]>       i pref1 <word[0]>
//! i-1 tag <prev>           i-2 tag <prev2>            i tag+i-2 tag <prev> <prev2>
//! i word <w0>              i-1 tag+i word <prev> <w0> i-1 word <w-1>   i-1 suffix <w-1[-3:]>
//! i-2 word <w-2>           i+1 word <w+1>             i+1 suffix <w+1[-3:]>   i+2 word <w+2>
//! ```
//!
//! where `word` is the token as written and `w-2..w+2` are `normalize`d tokens of the context
//! `-START- -START2- <tokens> -END- -END2-`; `prev` and `prev2` are the tags just given
//! (`-START-`, `-START2-` at the start). Suffixes and prefixes count characters, as Python
//! slices do.
//!
//! Exactness: scores are f64 sums in nltk's feature order (each of the 14 feature strings is
//! distinct, so every feature counts once), and ties go to the larger class name, as
//! `max(classes, key=lambda label: (scores[label], label))` does. Weights are parsed with a
//! correctly rounded float parser, like Python's `json`.
//!
//! Instead of building the 14 feature strings per token, the weights are indexed by template
//! at load time: a word's rows for each word template, a suffix's rows for each suffix
//! template, tag rows in arrays. Tagging a token then costs one or two hash lookups.

use std::borrow::Cow;

use ahash::AHashMap;

use crate::error::CoreError;

const NONE: u32 = u32::MAX;
/// No tag-dictionary entry.
const NO_TAG: u8 = u8::MAX;

/// Word templates, in the order of a word's `rows`.
const I_WORD: usize = 0;
const I_M1_WORD: usize = 1;
const I_M2_WORD: usize = 2;
const I_P1_WORD: usize = 3;
const I_P2_WORD: usize = 4;
/// Affix templates, in the order of an affix's rows.
const I_SUFFIX: usize = 0;
const I_M1_SUFFIX: usize = 1;
const I_P1_SUFFIX: usize = 2;
const I_PREF1: usize = 3;

/// The context words around the tokens (`START` and `END` of nltk).
const SYMBOLS: [&str; 4] = ["-START-", "-START2-", "-END-", "-END2-"];

/// Non-ASCII characters for which Python's `str.isdigit` is true (Unicode 14.0; from
/// `[c for c in range(0x80, 0x110000) if chr(c).isdigit()]`, as ranges).
const DIGITS: &[(u32, u32)] = &[
    (0xb2, 0xb3), (0xb9, 0xb9), (0x660, 0x669), (0x6f0, 0x6f9), (0x7c0, 0x7c9), (0x966, 0x96f),
    (0x9e6, 0x9ef), (0xa66, 0xa6f), (0xae6, 0xaef), (0xb66, 0xb6f), (0xbe6, 0xbef), (0xc66, 0xc6f),
    (0xce6, 0xcef), (0xd66, 0xd6f), (0xde6, 0xdef), (0xe50, 0xe59), (0xed0, 0xed9), (0xf20, 0xf29),
    (0x1040, 0x1049), (0x1090, 0x1099), (0x1369, 0x1371), (0x17e0, 0x17e9), (0x1810, 0x1819),
    (0x1946, 0x194f), (0x19d0, 0x19da), (0x1a80, 0x1a89), (0x1a90, 0x1a99), (0x1b50, 0x1b59),
    (0x1bb0, 0x1bb9), (0x1c40, 0x1c49), (0x1c50, 0x1c59), (0x2070, 0x2070), (0x2074, 0x2079),
    (0x2080, 0x2089), (0x2460, 0x2468), (0x2474, 0x247c), (0x2488, 0x2490), (0x24ea, 0x24ea),
    (0x24f5, 0x24fd), (0x24ff, 0x24ff), (0x2776, 0x277e), (0x2780, 0x2788), (0x278a, 0x2792),
    (0xa620, 0xa629), (0xa8d0, 0xa8d9), (0xa900, 0xa909), (0xa9d0, 0xa9d9), (0xa9f0, 0xa9f9),
    (0xaa50, 0xaa59), (0xabf0, 0xabf9), (0xff10, 0xff19), (0x104a0, 0x104a9), (0x10a40, 0x10a43),
    (0x10d30, 0x10d39), (0x10e60, 0x10e68), (0x11052, 0x1105a), (0x11066, 0x1106f),
    (0x110f0, 0x110f9), (0x11136, 0x1113f), (0x111d0, 0x111d9), (0x112f0, 0x112f9),
    (0x11450, 0x11459), (0x114d0, 0x114d9), (0x11650, 0x11659), (0x116c0, 0x116c9),
    (0x11730, 0x11739), (0x118e0, 0x118e9), (0x11950, 0x11959), (0x11c50, 0x11c59),
    (0x11d50, 0x11d59), (0x11da0, 0x11da9), (0x16a60, 0x16a69), (0x16ac0, 0x16ac9),
    (0x16b50, 0x16b59), (0x1d7ce, 0x1d7ff), (0x1e140, 0x1e149), (0x1e2f0, 0x1e2f9),
    (0x1e950, 0x1e959), (0x1f100, 0x1f10a), (0x1fbf0, 0x1fbf9),
];

/// Python's `str.isdigit` for one character.
fn is_py_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    let c = c as u32;
    DIGITS
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// nltk's `PerceptronTagger.normalize`.
pub(crate) fn normalize(word: &str) -> Cow<'_, str> {
    let first = word.chars().next();
    if word.contains('-') && first != Some('-') {
        return Cow::Borrowed("!HYPHEN");
    }
    if word.chars().count() == 4 && word.chars().all(is_py_digit) {
        return Cow::Borrowed("!YEAR");
    }
    if first.is_some_and(is_py_digit) {
        return Cow::Borrowed("!DIGITS");
    }
    if word.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        Cow::Owned(word.to_lowercase())
    } else {
        Cow::Borrowed(word)
    }
}

/// `word[-3:]`, by characters.
fn suffix3(word: &str) -> &str {
    match word.char_indices().rev().nth(2) {
        Some((i, _)) => &word[i..],
        None => word,
    }
}

/// `word[0]` (empty for an empty word).
fn first_char(word: &str) -> &str {
    match word.chars().next() {
        Some(c) => &word[..c.len_utf8()],
        None => "",
    }
}

/// A token sequence the tagger can read.
pub trait Words {
    fn count(&self) -> usize;
    fn word(&self, i: usize) -> &str;
}

impl<S: AsRef<str>> Words for [S] {
    fn count(&self) -> usize {
        self.len()
    }
    fn word(&self, i: usize) -> &str {
        self[i].as_ref()
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    weight: f64,
    class: u8,
}

#[derive(Debug, Clone)]
struct WordRows {
    /// Rows of `i word`, `i-1 word`, `i-2 word`, `i+1 word`, `i+2 word` for this word.
    rows: [u32; 5],
    /// Tag-dictionary tag of this word as written, or `NO_TAG`.
    tagdict: u8,
    /// `i-1 tag+i word <tag> <this word>` rows: a range of `prev_tag_rows`, sorted by tag.
    prev_tags: (u32, u32),
}

/// A context position: the normalized word's entry and its suffix's entry (or `NONE`).
#[derive(Debug, Clone, Copy)]
struct Ctx {
    word: u32,
    suffix: u32,
}

/// What a token contributes as written.
#[derive(Debug, Clone, Copy)]
struct Raw {
    suffix_row: u32,
    pref1_row: u32,
    tagdict: u8,
}

/// nltk's averaged-perceptron tagger with its trained weights. Build once per process and
/// share (`Arc`): parsing the 5.7 MB of weights is the expensive part.
#[derive(Debug)]
pub struct PerceptronTagger {
    /// Class names sorted ascending: a class id is its index, so ties go to the larger id.
    classes: Box<[Box<str>]>,
    /// Feature rows: `row_start[r]..row_start[r + 1]` in `entries`.
    row_start: Vec<u32>,
    entries: Vec<Entry>,
    bias: u32,
    /// Indexed by tag id (classes, then `-START-`, `-START2-`).
    prev_tag: Box<[u32]>,
    prev2_tag: Box<[u32]>,
    /// `prev * tags + prev2`.
    tag_pair: Box<[u32]>,
    words: AHashMap<Box<str>, u32>,
    word_rows: Vec<WordRows>,
    prev_tag_rows: Vec<(u8, u32)>,
    affixes: AHashMap<Box<str>, u32>,
    affix_rows: Vec<[u32; 4]>,
    /// `i pref1` row of each ASCII character (no hashing for the common case).
    ascii_pref1: [u32; 128],
    /// The context entries of `SYMBOLS`.
    symbols: [Ctx; 4],
}

/// Reusable per-caption buffers for tagging.
#[derive(Debug, Default)]
pub struct TaggerScratch {
    ctx: Vec<Ctx>,
    raw: Vec<Raw>,
    tags: Vec<u8>,
    scores: Vec<f64>,
}

impl TaggerScratch {
    /// The tag ids given by the last [`PerceptronTagger::tag_into`].
    pub fn tags(&self) -> &[u8] {
        &self.tags
    }
}

/// A cursor over the weights JSON: `{"<feature>": {"<class>": <weight>, ...}, ...}`.
struct Json<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Json<'a> {
    fn err(&self, what: &str) -> CoreError {
        CoreError::invalid("tagger weights", format!("byte {}: expected {what}", self.i))
    }

    fn ws(&mut self) {
        let b = self.s.as_bytes();
        while self.i < b.len() && matches!(b[self.i], b' ' | b'\n' | b'\r' | b'\t') {
            self.i += 1;
        }
    }

    /// Skips whitespace, then consumes `c`.
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.as_bytes().get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn string(&mut self) -> Result<Cow<'a, str>, CoreError> {
        if !self.eat(b'"') {
            return Err(self.err("a string"));
        }
        let b = self.s.as_bytes();
        let start = self.i;
        let mut escaped = false;
        while self.i < b.len() {
            match b[self.i] {
                b'"' => {
                    let body = &self.s[start..self.i];
                    self.i += 1;
                    if !escaped {
                        return Ok(Cow::Borrowed(body));
                    }
                    // rare (a few WSJ tokens like `ps\/2`): let serde_json decode the escapes
                    return serde_json::from_str::<String>(&self.s[start - 1..self.i])
                        .map(Cow::Owned)
                        .map_err(|e| CoreError::invalid("tagger weights", format!("byte {start}: {e}")));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 2;
                }
                _ => self.i += 1,
            }
        }
        Err(self.err("the end of a string"))
    }

    /// A JSON number, parsed by std's correctly rounded parser (as Python's `float()`).
    fn number(&mut self) -> Result<f64, CoreError> {
        self.ws();
        let b = self.s.as_bytes();
        let start = self.i;
        while self.i < b.len() && matches!(b[self.i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            self.i += 1;
        }
        self.s[start..self.i].parse().map_err(|_| {
            self.i = start;
            self.err("a number")
        })
    }
}

/// The template a weights key belongs to, and its arguments.
enum Feature<'k> {
    Bias,
    Affix(usize, &'k str),
    Word(usize, &'k str),
    PrevTag(&'k str),
    Prev2Tag(&'k str),
    TagPair(&'k str, &'k str),
    PrevTagWord(&'k str, &'k str),
}

impl<'k> Feature<'k> {
    /// `None` for a key `_get_features` never builds from space-free tokens.
    fn parse(key: &'k str) -> Option<Self> {
        if key == "bias" {
            return Some(Feature::Bias);
        }
        // longer templates first: "i-1 tag+i word" before "i-1 tag"
        const AFFIX: [(&str, usize); 4] =
            [("i suffix ", I_SUFFIX), ("i pref1 ", I_PREF1), ("i-1 suffix ", I_M1_SUFFIX), ("i+1 suffix ", I_P1_SUFFIX)];
        const WORD: [(&str, usize); 5] = [
            ("i word ", I_WORD),
            ("i-1 word ", I_M1_WORD),
            ("i-2 word ", I_M2_WORD),
            ("i+1 word ", I_P1_WORD),
            ("i+2 word ", I_P2_WORD),
        ];
        if let Some(rest) = key.strip_prefix("i-1 tag+i word ") {
            let (tag, word) = rest.split_once(' ')?;
            return Some(Feature::PrevTagWord(tag, word));
        }
        if let Some(rest) = key.strip_prefix("i tag+i-2 tag ") {
            let (prev, prev2) = rest.split_once(' ')?;
            return Some(Feature::TagPair(prev, prev2));
        }
        if let Some(tag) = key.strip_prefix("i-1 tag ") {
            return Some(Feature::PrevTag(tag));
        }
        if let Some(tag) = key.strip_prefix("i-2 tag ") {
            return Some(Feature::Prev2Tag(tag));
        }
        for (prefix, slot) in AFFIX {
            if let Some(a) = key.strip_prefix(prefix) {
                return Some(Feature::Affix(slot, a));
            }
        }
        for (prefix, slot) in WORD {
            if let Some(w) = key.strip_prefix(prefix) {
                return Some(Feature::Word(slot, w));
            }
        }
        None
    }
}

impl PerceptronTagger {
    /// From the three JSON files nltk ships (`averaged_perceptron_tagger_eng.weights.json`,
    /// `.tagdict.json`, `.classes.json`).
    pub fn from_json(weights_json: &str, tagdict_json: &str, classes_json: &str) -> Result<Self, CoreError> {
        let mut classes: Vec<String> = serde_json::from_str(classes_json)
            .map_err(|e| CoreError::invalid("tagger classes", format!("expected a list of tags: {e}")))?;
        classes.sort_unstable();
        classes.dedup();
        if classes.is_empty() || classes.len() > 250 {
            return Err(CoreError::invalid("tagger classes", format!("{} tags (need 1 to 250)", classes.len())));
        }
        let n_tags = classes.len() + 2;
        let class_id: AHashMap<&str, u8> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i as u8)).collect();
        let tag_id = |t: &str| match t {
            "-START-" => Some(classes.len() as u8),
            "-START2-" => Some(classes.len() as u8 + 1),
            _ => class_id.get(t).copied(),
        };

        let mut t = PerceptronTagger {
            classes: classes.iter().map(|c| c.as_str().into()).collect(),
            row_start: vec![0],
            entries: Vec::with_capacity(weights_json.len() / 20),
            bias: NONE,
            prev_tag: vec![NONE; n_tags].into(),
            prev2_tag: vec![NONE; n_tags].into(),
            tag_pair: vec![NONE; n_tags * n_tags].into(),
            words: AHashMap::new(),
            word_rows: Vec::new(),
            prev_tag_rows: Vec::new(),
            affixes: AHashMap::new(),
            affix_rows: Vec::new(),
            ascii_pref1: [NONE; 128],
            symbols: [Ctx { word: NONE, suffix: NONE }; 4],
        };
        // (word entry, tag, row) of `i-1 tag+i word`, grouped per word at the end
        let mut prev_tag_word: Vec<(u32, u8, u32)> = Vec::new();

        let mut p = Json { s: weights_json, i: 0 };
        if !p.eat(b'{') {
            return Err(p.err("'{' (weights: {feature: {tag: weight}})"));
        }
        let mut first = true;
        while !p.eat(b'}') {
            if !first && !p.eat(b',') {
                return Err(p.err("',' or '}'"));
            }
            first = false;
            let key = p.string()?;
            if !p.eat(b':') || !p.eat(b'{') {
                return Err(p.err("':' and a {tag: weight} object"));
            }
            let start = t.entries.len();
            let mut first_label = true;
            while !p.eat(b'}') {
                if !first_label && !p.eat(b',') {
                    return Err(p.err("',' or '}'"));
                }
                first_label = false;
                let label = p.string()?;
                if !p.eat(b':') {
                    return Err(p.err("':'"));
                }
                let weight = p.number()?;
                // nltk sums weights of labels outside `classes` but never picks them
                if let Some(&class) = class_id.get(label.as_ref()) {
                    t.entries.push(Entry { weight, class });
                }
            }
            // an empty object still replaces an earlier one of the same key
            let row = if t.entries.len() > start { (t.row_start.len() - 1) as u32 } else { NONE };
            let slot = match Feature::parse(&key) {
                None => None,
                Some(Feature::Bias) => Some(&mut t.bias),
                Some(Feature::PrevTag(a)) => tag_id(a).map(|a| &mut t.prev_tag[a as usize]),
                Some(Feature::Prev2Tag(a)) => tag_id(a).map(|a| &mut t.prev2_tag[a as usize]),
                Some(Feature::TagPair(a, b)) => match (tag_id(a), tag_id(b)) {
                    (Some(a), Some(b)) => Some(&mut t.tag_pair[a as usize * n_tags + b as usize]),
                    _ => None,
                },
                Some(Feature::Affix(slot, a)) => {
                    let e = intern(&mut t.affixes, &mut t.affix_rows, a, [NONE; 4]);
                    Some(&mut t.affix_rows[e as usize][slot])
                }
                Some(Feature::Word(slot, w)) => {
                    let e = intern(&mut t.words, &mut t.word_rows, w, WordRows::EMPTY);
                    Some(&mut t.word_rows[e as usize].rows[slot])
                }
                Some(Feature::PrevTagWord(a, w)) => {
                    if let Some(a) = tag_id(a) {
                        let e = intern(&mut t.words, &mut t.word_rows, w, WordRows::EMPTY);
                        prev_tag_word.push((e, a, row));
                    }
                    None
                }
            };
            // a key given twice: the later one wins, as in Python's json
            if let Some(slot) = slot {
                *slot = row;
            }
            if t.entries.len() > start {
                t.row_start.push(t.entries.len() as u32);
            }
        }
        p.ws();
        if p.i != weights_json.len() {
            return Err(p.err("the end of the weights"));
        }

        // stable sort keeps file order, so the last of duplicate keys is last in its run
        prev_tag_word.sort_by_key(|&(w, tag, _)| (w, tag));
        let mut k = 0;
        while k < prev_tag_word.len() {
            let w = prev_tag_word[k].0;
            let begin = t.prev_tag_rows.len() as u32;
            while k < prev_tag_word.len() && prev_tag_word[k].0 == w {
                let (_, tag, row) = prev_tag_word[k];
                let repeat = t.prev_tag_rows.len() as u32 > begin && t.prev_tag_rows.last().is_some_and(|l| l.0 == tag);
                match t.prev_tag_rows.last_mut() {
                    Some(last) if repeat => last.1 = row,
                    _ => t.prev_tag_rows.push((tag, row)),
                }
                k += 1;
            }
            t.word_rows[w as usize].prev_tags = (begin, t.prev_tag_rows.len() as u32 - begin);
        }

        let tagdict: AHashMap<String, String> = serde_json::from_str(tagdict_json)
            .map_err(|e| CoreError::invalid("tagger tagdict", format!("expected {{word: tag}}: {e}")))?;
        for (word, tag) in &tagdict {
            let tag = class_id
                .get(tag.as_str())
                .copied()
                .ok_or_else(|| CoreError::invalid("tagger tagdict", format!("tag {tag:?} of {word:?} is not a class")))?;
            let e = intern(&mut t.words, &mut t.word_rows, word, WordRows::EMPTY);
            t.word_rows[e as usize].tagdict = tag;
        }

        for c in 0..128u8 {
            let s = [c];
            if let Some(&e) = std::str::from_utf8(&s).ok().and_then(|s| t.affixes.get(s)) {
                t.ascii_pref1[c as usize] = t.affix_rows[e as usize][I_PREF1];
            }
        }
        for (k, s) in SYMBOLS.iter().enumerate() {
            t.symbols[k] = t.context_of(s);
        }
        Ok(t)
    }

    /// The tag names, sorted; a tag id indexes this list.
    pub fn classes(&self) -> &[Box<str>] {
        &self.classes
    }

    fn context_of(&self, normalized: &str) -> Ctx {
        Ctx {
            word: self.words.get(normalized).copied().unwrap_or(NONE),
            suffix: self.affixes.get(suffix3(normalized)).copied().unwrap_or(NONE),
        }
    }

    fn affix_row(&self, affix: &str, slot: usize) -> u32 {
        self.affixes.get(affix).map_or(NONE, |&e| self.affix_rows[e as usize][slot])
    }

    /// Tags `words[..upto]` (all when `upto` is larger), as `nltk.pos_tag(words)` would; the
    /// tag ids are in `scratch.tags()`. Words after `upto` are still read as context.
    pub fn tag_into<W: Words + ?Sized>(&self, words: &W, upto: usize, scratch: &mut TaggerScratch) {
        let n = words.count();
        let upto = upto.min(n);
        let TaggerScratch { ctx, raw, tags, scores } = scratch;
        ctx.clear();
        raw.clear();
        tags.clear();
        if upto == 0 {
            return;
        }
        // the context that tagging `..upto` reads: two words past it
        let seen = (upto + 2).min(n);
        ctx.extend_from_slice(&self.symbols[..2]);
        for i in 0..seen {
            let w = words.word(i);
            let norm = normalize(w);
            let c = self.context_of(&norm);
            let same = norm == w;
            let tagdict = if same {
                c.word
            } else {
                self.words.get(w).copied().unwrap_or(NONE)
            };
            let tagdict = if tagdict == NONE { NO_TAG } else { self.word_rows[tagdict as usize].tagdict };
            let suffix_row = if same {
                if c.suffix == NONE {
                    NONE
                } else {
                    self.affix_rows[c.suffix as usize][I_SUFFIX]
                }
            } else {
                self.affix_row(suffix3(w), I_SUFFIX)
            };
            let pref1_row = match w.as_bytes().first() {
                Some(&b) if b < 128 => self.ascii_pref1[b as usize],
                _ => self.affix_row(first_char(w), I_PREF1),
            };
            ctx.push(c);
            raw.push(Raw { suffix_row, pref1_row, tagdict });
        }
        // read only when `seen` reached the end
        ctx.extend_from_slice(&self.symbols[2..]);

        let n_classes = self.classes.len();
        let n_tags = n_classes + 2;
        scores.resize(n_classes, 0.0);
        let (mut prev, mut prev2) = (n_classes, n_classes + 1);
        for (i, r) in raw.iter().take(upto).enumerate() {
            let tag = if r.tagdict != NO_TAG {
                r.tagdict
            } else {
                let k = i + 2;
                let word = |c: Ctx, slot: usize| if c.word == NONE { NONE } else { self.word_rows[c.word as usize].rows[slot] };
                let affix = |c: Ctx, slot: usize| if c.suffix == NONE { NONE } else { self.affix_rows[c.suffix as usize][slot] };
                let features = [
                    self.bias,
                    r.suffix_row,
                    r.pref1_row,
                    self.prev_tag[prev],
                    self.prev2_tag[prev2],
                    self.tag_pair[prev * n_tags + prev2],
                    word(ctx[k], I_WORD),
                    self.prev_tag_word(ctx[k].word, prev as u8),
                    word(ctx[k - 1], I_M1_WORD),
                    affix(ctx[k - 1], I_M1_SUFFIX),
                    word(ctx[k - 2], I_M2_WORD),
                    word(ctx[k + 1], I_P1_WORD),
                    affix(ctx[k + 1], I_P1_SUFFIX),
                    word(ctx[k + 2], I_P2_WORD),
                ];
                self.predict(&features, scores)
            };
            tags.push(tag);
            prev2 = prev;
            prev = tag as usize;
        }
    }

    fn prev_tag_word(&self, word: u32, prev: u8) -> u32 {
        if word == NONE {
            return NONE;
        }
        let (start, len) = self.word_rows[word as usize].prev_tags;
        let rows = &self.prev_tag_rows[start as usize..(start + len) as usize];
        rows.iter().find(|r| r.0 == prev).map_or(NONE, |r| r.1)
    }

    /// `AveragedPerceptron.predict`: per class, the sum of the features' weights (in feature
    /// order, as Python adds them); the best score wins, ties to the larger class name.
    fn predict(&self, features: &[u32], scores: &mut [f64]) -> u8 {
        scores.fill(0.0);
        for &r in features {
            if r == NONE {
                continue;
            }
            let span = self.row_start[r as usize] as usize..self.row_start[r as usize + 1] as usize;
            for e in &self.entries[span] {
                scores[e.class as usize] += e.weight;
            }
        }
        let mut best = 0;
        for (c, &s) in scores.iter().enumerate().skip(1) {
            // `>=`: on equal scores the later (larger) class name wins
            if s >= scores[best] {
                best = c;
            }
        }
        best as u8
    }

    /// `nltk.pos_tag(words)`: the tag names (allocates; the hot path uses [`Self::tag_into`]).
    pub fn tag<S: AsRef<str>>(&self, words: &[S]) -> Vec<&str> {
        let mut scratch = TaggerScratch::default();
        self.tag_into(words, usize::MAX, &mut scratch);
        scratch.tags.iter().map(|&t| &*self.classes[t as usize]).collect()
    }
}

impl WordRows {
    const EMPTY: WordRows = WordRows { rows: [NONE; 5], tagdict: NO_TAG, prev_tags: (0, 0) };
}

/// The entry index of `key`, adding `empty` when new.
fn intern<T: Clone>(map: &mut AHashMap<Box<str>, u32>, items: &mut Vec<T>, key: &str, empty: T) -> u32 {
    if let Some(&e) = map.get(key) {
        return e;
    }
    let e = items.len() as u32;
    items.push(empty);
    map.insert(key.into(), e);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSES: &str = r#"["NN", "VBG", "DT", "JJ", "IN"]"#;

    fn tagger(weights: &str, tagdict: &str) -> PerceptronTagger {
        PerceptronTagger::from_json(weights, tagdict, CLASSES).unwrap()
    }

    #[test]
    fn normalize_follows_nltk() {
        assert_eq!(normalize("ice-cream"), "!HYPHEN");
        assert_eq!(normalize("-lrb-"), "-lrb-");
        assert_eq!(normalize("1999"), "!YEAR");
        assert_eq!(normalize("²０１9"), "!YEAR");
        assert_eq!(normalize("19999"), "!DIGITS");
        assert_eq!(normalize("3d"), "!DIGITS");
        assert_eq!(normalize("½"), "½");
        assert_eq!(normalize("Dog"), "dog");
        assert_eq!(normalize("ÉTÉ"), "été");
        assert_eq!(suffix3("skiing"), "ing");
        assert_eq!(suffix3("né"), "né");
        assert_eq!(suffix3("crêpe"), "êpe");
        assert_eq!(first_char("été"), "é");
    }

    #[test]
    fn tag_dictionary_words_skip_the_model() {
        let t = tagger(r#"{"bias": {"NN": 1.0}}"#, r#"{"the": "DT", "The": "JJ"}"#);
        assert_eq!(t.tag(&["the", "dog"]), ["DT", "NN"]);
        // looked up as written, not normalized
        assert_eq!(t.tag(&["The", "dog"]), ["JJ", "NN"]);
    }

    #[test]
    fn features_use_context_and_previous_tags() {
        let w = r#"{
            "bias": {"NN": 0.5},
            "i suffix ing": {"VBG": 0.4},
            "i-1 tag DT": {"NN": 1.0, "VBG": -1.0},
            "i-1 tag+i word -START- skiing": {"JJ": 3.0},
            "i+1 word -END-": {"IN": 0.2},
            "i-2 word -START-": {"DT": 0.01},
            "i-1 suffix T2-": {"DT": 0.01}
        }"#;
        let t = tagger(w, r#"{"a": "DT"}"#);
        // expectations from nltk 3.10.4 with these weights
        assert_eq!(t.tag(&["skiing"]), ["JJ"]);
        assert_eq!(t.tag(&["a", "skiing"]), ["DT", "NN"]);
        assert_eq!(t.tag(&["a", "man", "skiing", "x"]), ["DT", "NN", "NN", "NN"]);
        assert_eq!(t.tag(&["skiing", "skiing"]), ["JJ", "NN"]);
    }

    #[test]
    fn ties_go_to_the_larger_tag_name() {
        // no weights at all: every class scores 0, "VBG" is the largest name
        let t = tagger(r#"{}"#, "{}");
        assert_eq!(t.tag(&["x"]), ["VBG"]);
        let t = tagger(r#"{"bias": {"DT": 0.5, "JJ": 0.5, "IN": 0.25}}"#, "{}");
        assert_eq!(t.tag(&["x"]), ["JJ"]);
        // negative weights lose to the implicit zero of the other classes
        let t = tagger(r#"{"bias": {"NN": -0.5, "VBG": -0.1, "DT": -1, "JJ": -1, "IN": -1}}"#, "{}");
        assert_eq!(t.tag(&["x"]), ["VBG"]);
    }

    #[test]
    fn weights_json_edge_cases() {
        // escapes in keys, exponents, whitespace, unknown labels and templates, repeats
        let w = "{ \"i word a\\/b\" : {\"JJ\":1e0 , \"XX\": 9},\n\"mystery\": {\"NN\": 5},
                 \"i word c\": {\"NN\": 1}, \"i word c\": {\"IN\": 1}}";
        let t = tagger(w, "{}");
        assert_eq!(t.tag(&["a/b", "c"]), ["JJ", "IN"]);
        for bad in ["", "[]", "{\"bias\": 1}", "{\"bias\": {\"NN\": x}}", "{\"bias\": {}} x", "{\"bias\": {\"NN\": 1}"] {
            assert!(PerceptronTagger::from_json(bad, "{}", CLASSES).is_err(), "{bad}");
        }
        assert!(PerceptronTagger::from_json("{}", r#"{"a": "ZZ"}"#, CLASSES).is_err());
        assert!(PerceptronTagger::from_json("{}", "{}", "[]").is_err());
    }

    #[test]
    fn tagging_a_prefix_reads_the_context_after_it() {
        let t = tagger(r#"{"i+2 word dog": {"IN": 1.0}}"#, "{}");
        let mut s = TaggerScratch::default();
        t.tag_into(&["x", "y", "dog"][..], 1, &mut s);
        assert_eq!(s.tags().len(), 1);
        assert_eq!(&*t.classes()[s.tags()[0] as usize], "IN");
    }
}
