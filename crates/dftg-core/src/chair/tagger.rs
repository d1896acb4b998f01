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
//! Exactness: scores are f64 sums in nltk's feature order (the 14 feature strings of a token
//! are always distinct, so each counts once), and ties go to the larger class name, as
//! `max(classes, key=lambda label: (scores[label], label))` does (nltk 3.x; `classes` is a set,
//! so the name is the only order). Weights are parsed correctly rounded, like Python's `json`.
//! Checked against nltk 3.10.4 on the 1,126,956 tokens of the 20,000 POPE captions: every
//! tag equal. f32 is not enough: f32 weights summed in f64 change 1 of those tags, f32 sums 7.
//!
//! Speed: instead of building 14 feature strings per token, the weights are indexed by
//! template at load time (a word's rows for the five word templates, a suffix's rows for the
//! suffix templates, tag rows in arrays), so a token costs one or two hash lookups; each row
//! is a short list of (class, weight). Parsing the 5.7 MB of weights is the cost of loading.

use std::borrow::Cow;

use ahash::AHashMap;

use crate::error::CoreError;

const NONE: u32 = u32::MAX;
/// No tag-dictionary entry (the same value as `UNTAGGED`: such a word is not tagged yet).
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
#[rustfmt::skip]
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
    /// The scores after the first feature, `bias` (0 for classes it has no weight for).
    bias_scores: Box<[f64]>,
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
    /// Context entries: `-START-`, `-START2-`, the tokens, `-END-`, `-END2-`.
    ctx: Vec<Ctx>,
    raw: Vec<Raw>,
    /// Whether a token's `ctx` and `raw` entries are read yet.
    done: Vec<bool>,
    tags: Vec<u8>,
    scores: Vec<f64>,
}

/// A token not tagged (not needed by [`PerceptronTagger::tag_needed`]).
pub const UNTAGGED: u8 = u8::MAX;

impl TaggerScratch {
    /// The tag ids given by the last [`PerceptronTagger::tag_into`] or `tag_needed`.
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
    #[inline]
    fn eat(&mut self, c: u8) -> bool {
        let b = self.s.as_bytes();
        if b.get(self.i) == Some(&c) {
            self.i += 1;
            return true;
        }
        self.ws();
        if b.get(self.i) == Some(&c) {
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
        while let Some(k) = quote_or_backslash(b.get(self.i..).unwrap_or_default()) {
            self.i += k;
            if b[self.i] == b'\\' {
                escaped = true;
                self.i += 2;
                continue;
            }
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
        self.i = b.len();
        Err(self.err("the end of a string"))
    }

    /// A string of at most 7 bytes without escapes (every tag), packed as `ClassIds::pack`
    /// does; `None`, the cursor unmoved, for any other string.
    #[inline]
    fn short_label(&mut self) -> Option<u64> {
        self.ws();
        let b = self.s.as_bytes();
        let body = self.i + 1;
        if b.get(self.i) != Some(&b'"') {
            return None;
        }
        let mut k = 0u64;
        for n in 0..8 {
            match *b.get(body + n)? {
                b'"' => {
                    self.i = body + n + 1;
                    return Some(k | (n as u64) << 56);
                }
                b'\\' => return None,
                c if n < 7 => k |= u64::from(c) << (8 * n),
                _ => return None,
            }
        }
        None
    }

    /// A JSON number, correctly rounded like Python's `float()`.
    fn number(&mut self) -> Result<f64, CoreError> {
        self.ws();
        let b = self.s.as_bytes();
        let start = self.i;
        // fast path for the weights' `-d.ddd`: an integer below 2^53 divided by an exact power
        // of ten is one correctly rounded operation, so it equals the correctly rounded decimal
        let mut i = start + usize::from(b.get(start) == Some(&b'-'));
        let (mut mantissa, mut digits, mut fraction) = (0u64, 0u32, 0usize);
        let mut dot = false;
        while let Some(&c) = b.get(i) {
            match c {
                b'0'..=b'9' => {
                    mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                    digits += 1;
                    fraction += usize::from(dot);
                }
                b'.' if !dot => dot = true,
                _ => break,
            }
            i += 1;
        }
        let general = matches!(b.get(i), Some(b'e' | b'E' | b'+' | b'-' | b'.'));
        if digits > 0 && digits <= 15 && !general {
            self.i = i;
            let v = mantissa as f64 / POW10[fraction];
            return Ok(if b[start] == b'-' { -v } else { v });
        }
        while self.i < b.len() && matches!(b[self.i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            self.i += 1;
        }
        self.s[start..self.i].parse().map_err(|_| {
            self.i = start;
            self.err("a number")
        })
    }
}

/// The first `"` or `\\` in `b`: labels are a few bytes (a plain scan), keys longer (memchr).
#[inline]
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    for (i, &c) in b.iter().take(8).enumerate() {
        if c == b'"' || c == b'\\' {
            return Some(i);
        }
    }
    let rest = b.get(8..)?;
    memchr::memchr2(b'"', b'\\', rest).map(|k| k + 8)
}

/// Powers of ten exact in f64 (a fraction of at most 15 digits indexes it).
const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// Class ids by name, for the 271,000 labels of the weights: a name of at most 7 bytes packed
/// into an integer, in a small open-addressing table (cheaper than hashing each label).
struct ClassIds {
    slots: Box<[(u64, u8)]>,
    long: AHashMap<String, u8>,
}

impl ClassIds {
    const EMPTY: u8 = u8::MAX;

    fn new(classes: &[String]) -> Self {
        let mut ids = ClassIds { slots: vec![(0, Self::EMPTY); 256].into(), long: AHashMap::new() };
        for (i, c) in classes.iter().enumerate() {
            match Self::pack(c) {
                Some(k) => {
                    let mut j = Self::slot(k);
                    while ids.slots[j].1 != Self::EMPTY {
                        j = (j + 1) % 256;
                    }
                    ids.slots[j] = (k, i as u8);
                }
                None => {
                    ids.long.insert(c.clone(), i as u8);
                }
            }
        }
        ids
    }

    /// The name's bytes and its length in one integer.
    fn pack(name: &str) -> Option<u64> {
        let b = name.as_bytes();
        if b.len() > 7 {
            return None;
        }
        let mut k = (b.len() as u64) << 56;
        for (i, &c) in b.iter().enumerate() {
            k |= u64::from(c) << (8 * i);
        }
        Some(k)
    }

    fn slot(k: u64) -> usize {
        (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize
    }

    fn get(&self, name: &str) -> Option<u8> {
        match Self::pack(name) {
            Some(k) => self.get_packed(k),
            None => self.long.get(name).copied(),
        }
    }

    fn get_packed(&self, k: u64) -> Option<u8> {
        let mut j = Self::slot(k);
        // at most 250 classes in 256 slots: an empty slot ends every probe
        loop {
            match self.slots[j] {
                (_, Self::EMPTY) => return None,
                (key, id) if key == k => return Some(id),
                _ => j = (j + 1) % 256,
            }
        }
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
        const WORD: [(&str, usize); 5] =
            [("i word ", I_WORD), ("i-1 word ", I_M1_WORD), ("i-2 word ", I_M2_WORD), ("i+1 word ", I_P1_WORD), ("i+2 word ", I_P2_WORD)];
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
        let class_id = ClassIds::new(&classes);
        let tag_id = |t: &str| match t {
            "-START-" => Some(classes.len() as u8),
            "-START2-" => Some(classes.len() as u8 + 1),
            _ => class_id.get(t),
        };

        let mut t = PerceptronTagger {
            classes: classes.iter().map(|c| c.as_str().into()).collect(),
            row_start: vec![0],
            entries: Vec::with_capacity(weights_json.len() / 20),
            bias: NONE,
            bias_scores: vec![0.0; classes.len()].into(),
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
                let class = match p.short_label() {
                    Some(k) => class_id.get_packed(k),
                    None => class_id.get(&p.string()?),
                };
                if !p.eat(b':') {
                    return Err(p.err("':'"));
                }
                let weight = p.number()?;
                // nltk sums weights of labels outside `classes` but never picks them
                if let Some(class) = class {
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

        // grouped by word (a counting sort), in file order within a word
        let mut start = vec![0u32; t.word_rows.len() + 1];
        for &(w, _, _) in &prev_tag_word {
            start[w as usize + 1] += 1;
        }
        for w in 0..t.word_rows.len() {
            start[w + 1] += start[w];
            t.word_rows[w].prev_tags = (start[w], start[w + 1] - start[w]);
        }
        t.prev_tag_rows = vec![(0, NONE); prev_tag_word.len()];
        for &(w, tag, row) in &prev_tag_word {
            t.prev_tag_rows[start[w as usize] as usize] = (tag, row);
            start[w as usize] += 1;
        }

        let tagdict: AHashMap<String, String> =
            serde_json::from_str(tagdict_json).map_err(|e| CoreError::invalid("tagger tagdict", format!("expected {{word: tag}}: {e}")))?;
        for (word, tag) in &tagdict {
            let tag =
                class_id.get(tag).ok_or_else(|| CoreError::invalid("tagger tagdict", format!("tag {tag:?} of {word:?} is not a class")))?;
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
        if t.bias != NONE {
            let r = t.bias as usize;
            for e in &t.entries[t.row_start[r] as usize..t.row_start[r + 1] as usize] {
                t.bias_scores[e.class as usize] += e.weight;
            }
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

    /// Tags every word as `nltk.pos_tag(words)` does; the tag ids are in `scratch.tags()`.
    pub fn tag_into<W: Words + ?Sized>(&self, words: &W, scratch: &mut TaggerScratch) {
        self.tag_needed(words, 0..words.count(), scratch);
    }

    /// Tags at least the words at the `needed` positions (ascending): `scratch.tags()[p]` is
    /// the tag `nltk.pos_tag(words)` gives word `p`; other entries may be [`UNTAGGED`].
    ///
    /// A tag depends on the words around it and on the two tags before it, and a tag-dictionary
    /// word's tag on nothing: tagging a needed word starts right after the last two known tags
    /// before it (usually a few words back), not at the start of the caption.
    pub fn tag_needed<W: Words + ?Sized>(&self, words: &W, needed: impl IntoIterator<Item = usize>, scratch: &mut TaggerScratch) {
        let n = words.count();
        let TaggerScratch { ctx, raw, done, tags, scores } = scratch;
        ctx.clear();
        ctx.resize(n + 4, Ctx { word: NONE, suffix: NONE });
        ctx[..2].copy_from_slice(&self.symbols[..2]);
        ctx[n + 2..].copy_from_slice(&self.symbols[2..]);
        raw.clear();
        raw.resize(n, Raw { suffix_row: NONE, pref1_row: NONE, tagdict: NO_TAG });
        done.clear();
        done.resize(n, false);
        tags.clear();
        tags.resize(n, UNTAGGED);
        scores.resize(self.classes.len(), 0.0);
        let mut ensure = |i: usize, ctx: &mut [Ctx], raw: &mut [Raw]| {
            if !done[i] {
                done[i] = true;
                (ctx[i + 2], raw[i]) = self.read_word(words.word(i));
            }
        };
        for p in needed {
            if p >= n || tags[p] != UNTAGGED {
                continue;
            }
            // back to where the two previous tags are known (tagged, or in the tag dictionary)
            let mut known = |k: usize, ctx: &mut [Ctx], raw: &mut [Raw], tags: &mut [u8]| {
                if tags[k] == UNTAGGED {
                    ensure(k, ctx, raw);
                    tags[k] = raw[k].tagdict;
                }
                tags[k] != UNTAGGED
            };
            let mut s = p;
            while s > 0 && !(known(s - 1, ctx, raw, tags) && (s == 1 || known(s - 2, ctx, raw, tags))) {
                s -= 1;
            }
            for i in s..=p {
                ensure(i, ctx, raw);
                if tags[i] != UNTAGGED {
                    continue;
                }
                tags[i] = raw[i].tagdict;
                if tags[i] != UNTAGGED {
                    continue;
                }
                for j in i.saturating_sub(2)..(i + 3).min(n) {
                    ensure(j, ctx, raw);
                }
                let (start, start2) = (self.classes.len(), self.classes.len() + 1);
                let prev = if i >= 1 { tags[i - 1] as usize } else { start };
                let prev2 = match i {
                    0 => start2,
                    1 => start,
                    _ => tags[i - 2] as usize,
                };
                tags[i] = self.predict_at(ctx, raw[i], i, prev, prev2, scores);
            }
        }
    }

    /// A token's context entries (normalized) and what it contributes as written.
    fn read_word(&self, w: &str) -> (Ctx, Raw) {
        let norm = normalize(w);
        let c = self.context_of(&norm);
        // usually the token is its own normalized form: one lookup serves both
        let same = norm == w;
        let entry = if same { c.word } else { self.words.get(w).copied().unwrap_or(NONE) };
        let tagdict = if entry == NONE { NO_TAG } else { self.word_rows[entry as usize].tagdict };
        let suffix_row = match (same, c.suffix) {
            (true, NONE) => NONE,
            (true, e) => self.affix_rows[e as usize][I_SUFFIX],
            (false, _) => self.affix_row(suffix3(w), I_SUFFIX),
        };
        let pref1_row = match w.as_bytes().first() {
            Some(&b) if b < 128 => self.ascii_pref1[b as usize],
            _ => self.affix_row(first_char(w), I_PREF1),
        };
        (c, Raw { suffix_row, pref1_row, tagdict })
    }

    /// The perceptron's tag for token `i` (context entries `ctx[i..i + 5]`).
    fn predict_at(&self, ctx: &[Ctx], r: Raw, i: usize, prev: usize, prev2: usize, scores: &mut [f64]) -> u8 {
        let n_tags = self.classes.len() + 2;
        let k = i + 2;
        let word = |c: Ctx, slot: usize| {
            if c.word == NONE {
                NONE
            } else {
                self.word_rows[c.word as usize].rows[slot]
            }
        };
        let affix = |c: Ctx, slot: usize| {
            if c.suffix == NONE {
                NONE
            } else {
                self.affix_rows[c.suffix as usize][slot]
            }
        };
        // nltk's feature order, which is also the order of the float additions
        let features = [
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
    }

    fn prev_tag_word(&self, word: u32, prev: u8) -> u32 {
        if word == NONE {
            return NONE;
        }
        let (start, len) = self.word_rows[word as usize].prev_tags;
        let rows = &self.prev_tag_rows[start as usize..(start + len) as usize];
        // the last of a repeated key wins, as in Python's json
        rows.iter().rev().find(|r| r.0 == prev).map_or(NONE, |r| r.1)
    }

    /// `AveragedPerceptron.predict`: per class, the sum of the features' weights (in feature
    /// order, as Python adds them); the best score wins, ties to the larger class name.
    /// `features` follow `bias`, whose weights start the sums.
    fn predict(&self, features: &[u32], scores: &mut [f64]) -> u8 {
        scores.copy_from_slice(&self.bias_scores);
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
        self.tag_into(words, &mut scratch);
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
    fn tagging_some_words_reads_the_context_after_them() {
        let t = tagger(r#"{"i+2 word dog": {"IN": 1.0}}"#, "{}");
        let mut s = TaggerScratch::default();
        t.tag_needed(&["x", "y", "dog"][..], [0], &mut s);
        assert_eq!(&*t.classes()[s.tags()[0] as usize], "IN");
        assert_eq!(&s.tags()[1..], [UNTAGGED, UNTAGGED]);
    }

    #[test]
    fn tagging_some_words_equals_tagging_all() {
        // a word's tag depends on the tags before it: "b" is JJ only after a DT
        let w = r#"{"bias": {"NN": 0.1}, "i-1 tag DT": {"JJ": 1}, "i-2 tag DT": {"VBG": 2}, "i-1 tag JJ": {"DT": 5}}"#;
        let t = tagger(w, r#"{"the": "DT", "of": "IN"}"#);
        let words = ["b", "the", "b", "c", "d", "of", "the", "e", "f", "g"];
        let all = t.tag(&words);
        // from nltk 3.10.4; "e f g" is tagged from "of the" on, not from the start
        assert_eq!(all, ["NN", "DT", "JJ", "DT", "JJ", "IN", "DT", "JJ", "DT", "JJ"]);
        let mut s = TaggerScratch::default();
        for needed in [vec![4], vec![9], vec![2, 8], vec![0, 3, 7]] {
            t.tag_needed(&words[..], needed.iter().copied(), &mut s);
            for &p in &needed {
                assert_eq!(&*t.classes()[s.tags()[p] as usize], all[p], "{needed:?}");
            }
        }
    }
}
