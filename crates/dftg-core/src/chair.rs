//! CHAIR-compatible object extraction and the CHAIR metric (Rohrbach et al. 2018), matching the
//! widely copied reference implementation (as in the OPERA repository) without Python or NLTK.
//!
//! Per caption the reference does:
//! 1. `nltk.word_tokenize(caption.lower())` — Punkt sentence splitting, then the Treebank word
//!    tokenizer (`chair/tokenize.rs` replays both, including which periods are split off);
//! 2. `nltk.pos_tag` and `WordNetLemmatizer().lemmatize(word, pos)` with J→adjective,
//!    V→verb, N/R/other→noun/adverb/noun (`chair/tagger.rs` replays nltk's averaged-perceptron
//!    tagger on its trained weights; `chair/lemma.rs` replays WordNet's `morphy` on the
//!    WordNet facts the vocabulary reaches);
//! 3. one greedy left-to-right pass merging two-word phrases from the phrase map
//!    (`hot dog`, `teddy bear`, `baby elephant` → `elephant`, `toilet seat` → `toilet`);
//! 4. drops every `seat` when `toilet` is also in the caption;
//! 5. keeps the words of the synonym list, each mapped to its line's first word (the category).
//!
//! A mention is hallucinated when its category is not in the image's ground truth.
//! CHAIR_s = captions with ≥1 hallucinated mention / captions; CHAIR_i = hallucinated mentions /
//! mentions (repeats counted); recall = distinct ground-truth categories mentioned / ground-truth
//! categories, both summed over captions.
//!
//! Reference quirks reproduced on purpose (the project's own extractor may do better):
//! - negations are not understood: "there are no people" mentions `person`;
//! - colour words count as objects: "an orange shirt" mentions the fruit `orange`;
//! - synonym-list entries written with a leading space (`" motor bike"`, `" cheesecake"`) and
//!   the capitalised `iPhone` never match, since captions are lower-cased and entries are only
//!   split on `", "`; a phrase map entry whose replacement is not in the list (`home plate`,
//!   `train track`, `baby animal` → `animal`) swallows both of its words;
//! - lemmas are WordNet's, not a stemmer's: `men` stays `men` (WordNet lists it as a noun, and
//!   it is no synonym) while `women` → `woman`, `mice` → `mouse`, `knives` → `knife`;
//!   `sports ball` needs `sports` to stay unreduced, so mostly only `ball` counts;
//! - the tagger decides some lemmas: `seated` → `seat` → `chair`, `tied` → `tie`,
//!   `skateboarding` → `skateboard` when tagged as verbs, `geese` (tagged as an adjective,
//!   like `chinese`) is not a bird, and a plural tagged as an adverb stays plural.
//!
//! The tagger only tags the words whose lemma depends on their tag, each starting a few words
//! back where two tags are known from nltk's tag dictionary (see `PerceptronTagger::tag_needed`).
//!
//! Agreement with the reference on its 20,000 POPE captions: see `tests/chair_reference.rs`.

mod lemma;
mod tagger;
mod tokenize;
mod wordnet_facts;

use std::sync::Arc;

use ahash::AHashMap;
use serde::Serialize;

use crate::error::CoreError;
use lemma::{Morphy, ADJ, ADV, NOUN, POS_COUNT, VERB};
pub use tagger::{PerceptronTagger, TaggerScratch, Words, UNTAGGED};
use tokenize::Tokens;

const NONE: u16 = u16::MAX;

const FILTER_BITS: usize = 1 << 16;

/// Mixes length, first, second and last byte of a (non-empty) token into a filter bit index.
#[inline]
fn filter_key(t: &[u8]) -> usize {
    let n = t.len();
    let (first, second, last) = match t {
        [] => (0, 0, 0),
        [a] => (*a, 0, *a),
        [a, b, ..] => (*a, *b, t[n - 1]),
    };
    let h = u32::from(first) | u32::from(second) << 8 | u32::from(last) << 16 | (n as u32 & 0xff) << 24;
    (h.wrapping_mul(0x9E37_79B1) >> 16) as usize % FILTER_BITS
}

#[derive(Debug, Clone, Copy)]
struct Surface {
    /// Term id of the lemma under each part of speech (noun, verb, adjective, adverb), or NONE.
    lemma: [u16; POS_COUNT],
    /// The lemmas differ: the tagger decides.
    tagged: bool,
}

/// The CHAIR vocabulary: synonym list, phrase map and the lemma table derived from them.
#[derive(Debug)]
pub struct ChairVocab {
    categories: Vec<Box<str>>,
    /// Per term (any word or phrase the pipeline can produce): its category, or NONE.
    term_category: Vec<u16>,
    /// (first term << 16 | second term) → replacement term.
    pairs: AHashMap<u32, u16>,
    surfaces: AHashMap<Box<[u8]>, Surface>,
    /// Bit set over `filter_key` of every surface: most tokens are rejected before hashing.
    filter: Box<[u64]>,
    toilet: u16,
    seat: u16,
    tagger: Arc<PerceptronTagger>,
    /// The lemma slot (`lemma::NOUN`, …) of each tagger class, as the reference maps tags.
    class_pos: Vec<u8>,
}

/// Reusable buffers for [`ChairVocab::mentioned_into`].
#[derive(Debug, Default)]
pub struct ChairScratch {
    tokens: Tokens,
    found: Vec<(usize, [u16; POS_COUNT])>,
    /// Positions of found words whose lemma depends on the tag.
    needed: Vec<usize>,
    hits: Vec<(usize, u16)>,
    words: Vec<u16>,
    tagger: TaggerScratch,
}

/// The reference's `get_wordnet_pos`: J → adjective, V → verb, R → adverb, else noun.
fn wordnet_pos(tag: &str) -> u8 {
    (match tag.as_bytes().first() {
        Some(b'J') => ADJ,
        Some(b'V') => VERB,
        Some(b'R') => ADV,
        _ => NOUN,
    }) as u8
}

struct Terms {
    ids: AHashMap<String, u16>,
    names: Vec<String>,
}

impl Terms {
    fn intern(&mut self, s: &str) -> Result<u16, CoreError> {
        if let Some(&id) = self.ids.get(s) {
            return Ok(id);
        }
        let id = u16::try_from(self.names.len())
            .ok()
            .filter(|&id| id != NONE)
            .ok_or_else(|| CoreError::invalid("synonyms", "more than 65,534 distinct words"))?;
        self.ids.insert(s.to_string(), id);
        self.names.push(s.to_string());
        Ok(id)
    }
}

impl ChairVocab {
    /// synonyms.txt text and double_words.json text, exactly as shipped with CHAIR, and nltk's
    /// tagger (shared: its weights are large).
    pub fn from_sources(synonyms_txt: &str, double_words_json: &str, tagger: Arc<PerceptronTagger>) -> Result<Self, CoreError> {
        let mut terms = Terms { ids: AHashMap::new(), names: Vec::new() };
        let mut categories: Vec<Box<str>> = Vec::new();
        let mut category_ids: AHashMap<String, u16> = AHashMap::new();
        // word → category; later lines win, like the reference's dict.
        let mut word_category: Vec<(u16, u16)> = Vec::new();
        for line in synonyms_txt.lines() {
            let line = line.trim_matches(tokenize::is_space);
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split(", ").collect();
            let name = words[0];
            let cat = match category_ids.get(name) {
                Some(&c) => c,
                None => {
                    let c = u16::try_from(categories.len())
                        .ok()
                        .filter(|&c| c != NONE)
                        .ok_or_else(|| CoreError::invalid("synonyms", "more than 65,534 category lines"))?;
                    categories.push(name.into());
                    category_ids.insert(name.to_string(), c);
                    c
                }
            };
            for w in words {
                word_category.push((terms.intern(w)?, cat));
            }
        }
        if categories.is_empty() {
            return Err(CoreError::invalid("synonyms", "no category lines"));
        }

        let phrases: serde_json::Map<String, serde_json::Value> = serde_json::from_str(double_words_json)
            .map_err(|e| CoreError::invalid("double words", format!("expected {{\"word word\": \"replacement\"}}: {e}")))?;
        let mut pair_terms: Vec<(u16, u16, u16)> = Vec::new();
        for (phrase, repl) in &phrases {
            let repl =
                repl.as_str().ok_or_else(|| CoreError::invalid("double words", format!("replacement of {phrase:?} is not a string")))?;
            let (a, b) = match phrase.split(' ').collect::<Vec<_>>()[..] {
                [a, b] if !a.is_empty() && !b.is_empty() => (a, b),
                // The reference joins two words at a time: longer phrases ("stove top oven")
                // never match. A one-word key would match only a caption's last word there.
                [_, _, _, ..] => continue,
                _ => return Err(CoreError::invalid("double words", format!("{phrase:?} is not two words"))),
            };
            pair_terms.push((terms.intern(a)?, terms.intern(b)?, terms.intern(repl)?));
        }
        // The toilet-seat rule looks for these words even when they are not synonyms.
        let toilet = terms.intern("toilet")?;
        let seat = terms.intern("seat")?;

        let mut term_category = vec![NONE; terms.names.len()];
        for (w, c) in word_category {
            term_category[w as usize] = c;
        }
        let pairs = pair_terms.into_iter().map(|(a, b, r)| (((a as u32) << 16) | b as u32, r)).collect();

        // Every single lower-case word a lemma can land on, and the surface forms reaching it.
        let targets: Vec<&str> =
            terms.names.iter().map(String::as_str).filter(|t| !t.is_empty() && !t.contains(' ') && t.to_lowercase() == *t).collect();
        let morphy = Morphy::new(targets.iter().copied());
        let mut candidates: Vec<String> = Vec::new();
        for t in &targets {
            morphy.surfaces_of(t, &mut candidates);
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut surfaces: AHashMap<Box<[u8]>, Surface> = AHashMap::new();
        for s in candidates {
            let mut lemma = [NONE; POS_COUNT];
            for (pos, slot) in lemma.iter_mut().enumerate() {
                *slot = terms.ids.get(&morphy.lemmatize(&s, pos)).copied().unwrap_or(NONE);
            }
            if lemma.iter().all(|&l| l == NONE) {
                continue;
            }
            let tagged = lemma.iter().any(|&l| l != lemma[0]);
            surfaces.insert(s.into_bytes().into_boxed_slice(), Surface { lemma, tagged });
        }
        let mut filter = vec![0u64; FILTER_BITS / 64].into_boxed_slice();
        for s in surfaces.keys() {
            let k = filter_key(s);
            filter[k / 64] |= 1 << (k % 64);
        }

        Ok(ChairVocab {
            categories,
            term_category,
            pairs,
            surfaces,
            filter,
            toilet,
            seat,
            class_pos: tagger.classes().iter().map(|c| wordnet_pos(c)).collect(),
            tagger,
        })
    }

    /// Category names mentioned in `caption`, caption order, repeats kept. Clears `out` first.
    pub fn mentioned_into<'v>(&'v self, caption: &str, scratch: &mut ChairScratch, out: &mut Vec<&'v str>) {
        out.clear();
        let ChairScratch { tokens, found, needed, hits, words, tagger } = scratch;
        tokenize::tokenize(caption, tokens);

        found.clear();
        needed.clear();
        for i in 0..tokens.len() {
            let t = tokens.get_bytes(i);
            let k = filter_key(t);
            if self.filter[k / 64] & (1 << (k % 64)) == 0 {
                continue;
            }
            let Some(s) = self.surfaces.get(t) else { continue };
            if s.tagged {
                needed.push(i);
            }
            found.push((i, s.lemma));
        }
        // the tags the reference gives these words in the whole caption's token list
        self.tagger.tag_needed(&*tokens, needed.iter().copied(), tagger);
        let tags = tagger.tags();
        hits.clear();
        for &(i, lemma) in found.iter() {
            // untagged words have the same lemma in every slot
            let pos = match tags.get(i) {
                Some(&t) if t != UNTAGGED => self.class_pos[t as usize] as usize,
                _ => NOUN,
            };
            if lemma[pos] != NONE {
                hits.push((i, lemma[pos]));
            }
        }

        // Greedy phrase merge: only adjacent tokens whose lemmas are both terms can form one.
        words.clear();
        let mut k = 0;
        while k < hits.len() {
            let (i, a) = hits[k];
            if let Some(&(j, b)) = hits.get(k + 1) {
                if j == i + 1 {
                    if let Some(&r) = self.pairs.get(&(((a as u32) << 16) | b as u32)) {
                        words.push(r);
                        k += 2;
                        continue;
                    }
                }
            }
            words.push(a);
            k += 1;
        }

        let drop_seat = words.contains(&self.toilet) && words.contains(&self.seat);
        for &w in words.iter() {
            if drop_seat && w == self.seat {
                continue;
            }
            let c = self.term_category[w as usize];
            if c != NONE {
                out.push(&self.categories[c as usize]);
            }
        }
    }

    /// Convenience form of [`ChairVocab::mentioned_into`].
    pub fn mentioned(&self, caption: &str) -> Vec<&str> {
        let mut out = Vec::new();
        self.mentioned_into(caption, &mut ChairScratch::default(), &mut out);
        out
    }

    /// The tagger this vocabulary lemmatizes with.
    pub fn tagger(&self) -> &Arc<PerceptronTagger> {
        &self.tagger
    }

    /// The category names, in synonym-list order.
    pub fn categories(&self) -> impl Iterator<Item = &str> {
        self.categories.iter().map(|c| &**c)
    }
}

/// Running CHAIR totals; works with category names from ANY extractor (the project's own
/// extractor uses it too).
#[derive(Debug, Default, Clone, Serialize)]
pub struct ChairTally {
    pub captions: u64,
    pub hallucinated_captions: u64,
    pub mentions: u64,
    pub hallucinated_mentions: u64,
    pub gt_objects: u64,
    pub gt_covered: u64,
}

impl ChairTally {
    /// Adds one caption; appends its hallucinated mentions (in order, repeats) to `hallucinated`
    /// (which is not cleared).
    pub fn add<'a>(&mut self, mentioned: &[&'a str], gt: &[impl AsRef<str>], hallucinated: &mut Vec<&'a str>) {
        let is_gt = |m: &str| gt.iter().any(|g| g.as_ref() == m);
        let before = hallucinated.len();
        for &m in mentioned {
            if !is_gt(m) {
                hallucinated.push(m);
            }
        }
        let n_hall = (hallucinated.len() - before) as u64;
        self.captions += 1;
        self.mentions += mentioned.len() as u64;
        self.hallucinated_mentions += n_hall;
        self.hallucinated_captions += u64::from(n_hall > 0);
        // Ground truth is a set in the reference: count distinct names.
        for (i, g) in gt.iter().enumerate() {
            let g = g.as_ref();
            if gt[..i].iter().any(|h| h.as_ref() == g) {
                continue;
            }
            self.gt_objects += 1;
            if mentioned.contains(&g) {
                self.gt_covered += 1;
            }
        }
    }

    /// Captions with at least one hallucinated mention / captions (0 when empty).
    pub fn chair_s(&self) -> f64 {
        ratio(self.hallucinated_captions, self.captions)
    }

    /// Hallucinated mentions / mentions (0 when nothing was mentioned).
    pub fn chair_i(&self) -> f64 {
        ratio(self.hallucinated_mentions, self.mentions)
    }

    /// Distinct ground-truth categories mentioned / ground-truth categories.
    pub fn recall(&self) -> f64 {
        ratio(self.gt_covered, self.gt_objects)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: &str = "person, girl, boy, man, woman, kid, child, people, children, baby, passenger, skier\n\
        bicycle, bike\n\
        motorcycle, scooter,  motor bike, motor cycle, motorbike\n\
        train, locomotive\n\
        dog, puppy\n\
        elephant\n\
        bear, panda\n\
        tie, bow, bow tie\n\
        skis, ski\n\
        orange\n\
        hot dog\n\
        chair, seat, stool\n\
        toilet, urinal\n\
        teddy bear, teddybear\n\
        wine glass\n\
        dining table, table, desk\n\
        cell phone, mobile phone, phone, iPhone\n";
    const DBL: &str = r#"{"baby elephant": "elephant", "bow tie": "tie", "hot dog": "hot dog", "teddy bear": "teddy bear",
        "toilet seat": "toilet", "motor bike": "motor bike", "passenger train": "train", "train track": "train track",
        "wine glas": "wine glass", "wine glass": "wine glass", "cell phone": "cell phone"}"#;

    /// A toy tagger: determiners from the tag dictionary, `-ing` and `-ted` words as verbs
    /// unless a determiner precedes them, everything else a noun.
    fn toy_tagger() -> Arc<PerceptronTagger> {
        let weights = r#"{"bias": {"NN": 1}, "i suffix ing": {"VBG": 2}, "i suffix ted": {"VBN": 2},
            "i-1 tag DT": {"NN": 5}}"#;
        let tagdict = r#"{"a": "DT", "an": "DT", "the": "DT"}"#;
        Arc::new(PerceptronTagger::from_json(weights, tagdict, r#"["NN", "VBG", "VBN", "DT", "RB", "JJ"]"#).unwrap())
    }

    fn vocab() -> ChairVocab {
        ChairVocab::from_sources(SYN, DBL, toy_tagger()).unwrap()
    }

    #[test]
    fn plurals_and_irregular_lemmas() {
        let v = vocab();
        assert_eq!(v.mentioned("Two people and three dogs."), ["person", "dog"]);
        assert_eq!(v.mentioned("the women and children"), ["person", "person"]);
        // WordNet lists "men" as a noun, so it is its own lemma and not a synonym.
        assert_eq!(v.mentioned("two men"), Vec::<&str>::new());
        assert_eq!(v.mentioned("a pair of skis"), ["skis"]);
        assert_eq!(v.mentioned("wine glasses on a table"), ["wine glass", "dining table"]);
    }

    #[test]
    fn phrases_merge_greedily() {
        let v = vocab();
        assert_eq!(v.mentioned("a hot dog and a dog"), ["hot dog", "dog"]);
        assert_eq!(v.mentioned("a teddy bear next to a bear"), ["teddy bear", "bear"]);
        assert_eq!(v.mentioned("a baby elephant"), ["elephant"]);
        assert_eq!(v.mentioned("a baby and an elephant"), ["person", "elephant"]);
        // Replacement not in the synonym list: both words disappear.
        assert_eq!(v.mentioned("the train tracks"), Vec::<&str>::new());
        // Leading-space synonym never matches.
        assert_eq!(v.mentioned("a motor bike"), Vec::<&str>::new());
        assert_eq!(v.mentioned("an iphone"), Vec::<&str>::new());
        // Punctuation between the words breaks the phrase.
        assert_eq!(v.mentioned("hot, dog"), ["dog"]);
    }

    #[test]
    fn toilet_seat_rule() {
        let v = vocab();
        assert_eq!(v.mentioned("the toilet seat is up"), ["toilet"]);
        assert_eq!(v.mentioned("a seat next to the toilet"), ["toilet"]);
        assert_eq!(v.mentioned("a seat and a stool"), ["chair", "chair"]);
    }

    #[test]
    fn tokenization_of_contractions_and_punctuation() {
        let v = vocab();
        assert_eq!(v.mentioned("The dog's bone. A man's bike!"), ["dog", "person", "bicycle"]);
        assert_eq!(v.mentioned("(dogs) \"puppy\" dog... dog; dog—dog"), ["dog", "dog", "dog", "dog", "dog", "dog"]);
        // A period inside a sentence that Punkt does not split stays on the word.
        assert_eq!(v.mentioned("dog.cat"), Vec::<&str>::new());
        assert_eq!(v.mentioned("no dogs here"), ["dog"]);
    }

    #[test]
    fn tagger_decides_some_lemmas() {
        let v = vocab();
        assert_eq!(v.mentioned("a man skiing down a hill"), ["person", "skis"]);
        assert_eq!(v.mentioned("a skiing trip"), Vec::<&str>::new());
        assert_eq!(v.mentioned("a woman seated on a bench"), ["person", "chair"]);
        assert_eq!(v.mentioned("an orange"), ["orange"]);
        // an adverb is its own lemma: plurals stay plural, singulars still count
        let adverbs = PerceptronTagger::from_json(r#"{"bias": {"RB": 1}}"#, "{}", r#"["NN", "RB"]"#).unwrap();
        let v = ChairVocab::from_sources(SYN, DBL, Arc::new(adverbs)).unwrap();
        assert_eq!(v.mentioned("two dogs and a dog"), ["dog"]);
    }

    #[test]
    fn tally_arithmetic() {
        let mut t = ChairTally::default();
        let mut h = Vec::new();
        t.add(&["person", "dog", "dog", "cat"], &["person", "cat", "car"], &mut h);
        assert_eq!(h, ["dog", "dog"]);
        t.add(&["person"], &["person", "person"], &mut h);
        assert_eq!(h, ["dog", "dog"]);
        t.add(&[], &Vec::<String>::new(), &mut h);
        assert_eq!((t.captions, t.hallucinated_captions, t.mentions, t.hallucinated_mentions), (3, 1, 5, 2));
        assert_eq!((t.gt_objects, t.gt_covered), (4, 3));
        assert!((t.chair_s() - 1.0 / 3.0).abs() < 1e-12);
        assert!((t.chair_i() - 0.4).abs() < 1e-12);
        assert!((t.recall() - 0.75).abs() < 1e-12);
        assert_eq!(ChairTally::default().chair_i(), 0.0);
    }

    #[test]
    fn rejects_bad_sources() {
        let t = toy_tagger;
        assert!(ChairVocab::from_sources("", "{}", t()).is_err());
        assert!(ChairVocab::from_sources("dog", "[]", t()).is_err());
        assert!(ChairVocab::from_sources("dog", r#"{"a": "d"}"#, t()).is_err());
        assert!(ChairVocab::from_sources("dog", r#"{"a b c": "d"}"#, t()).is_ok());
        let e = ChairVocab::from_sources("dog", r#"{"a b": 1}"#, t()).unwrap_err().to_string();
        assert!(e.contains("a b"), "{e}");
    }
}
