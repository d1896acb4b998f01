//! NLTK's `WordNetLemmatizer.lemmatize` (WordNet `morphy`), replayed on the WordNet facts the
//! CHAIR vocabulary can reach (`wordnet_facts.rs`).
//!
//! `lemmatize(word, pos)`: if `word` is in the exception list of `pos`, the candidates are its
//! listed lemmas, otherwise the results of each suffix rule of `pos`; `word` itself and the
//! candidates that WordNet lists under `pos` are kept (in order, without repeats), and the
//! shortest (first on ties) is the lemma. When none is listed, the word is its own lemma.

use ahash::{AHashMap, AHashSet};

use super::wordnet_facts::{COVERED, EXCEPTIONS, LEXICON};

/// Index of a WordNet part of speech in the per-surface lemma arrays.
pub(crate) const NOUN: usize = 0;
pub(crate) const VERB: usize = 1;
pub(crate) const ADJ: usize = 2;
/// Adverb morphy has no suffix rules, and adv.exc (`better` → `well`, …) names no CHAIR word:
/// an adverb is its own lemma.
pub(crate) const ADV: usize = 3;
pub(crate) const POS_COUNT: usize = 4;

/// The parts of speech with suffix rules.
const MORPHY_POS: usize = 3;

const POS_CHAR: [u8; MORPHY_POS] = [b'n', b'v', b'a'];

/// WordNet's morphological substitutions (old suffix, new suffix), in NLTK's order.
const RULES: [&[(&str, &str)]; MORPHY_POS] = [
    &[("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y")],
    &[("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
];

pub(crate) struct Morphy {
    lexicon: AHashMap<&'static str, u8>,
    exceptions: AHashMap<(&'static str, u8), &'static str>,
    /// Vocabulary words the facts were not generated for: assumed to be WordNet nouns.
    assumed_nouns: AHashSet<String>,
}

impl Morphy {
    pub fn new<'a>(targets: impl IntoIterator<Item = &'a str>) -> Self {
        let covered: AHashSet<&'static str> = COVERED.iter().copied().collect();
        let assumed_nouns = targets.into_iter().filter(|t| !covered.contains(t)).map(str::to_string).collect();
        Morphy {
            lexicon: LEXICON.iter().copied().collect(),
            exceptions: EXCEPTIONS.iter().map(|&(w, p, l)| ((w, p), l)).collect(),
            assumed_nouns,
        }
    }

    fn listed(&self, form: &str, pos: usize) -> bool {
        match self.lexicon.get(form) {
            Some(flags) => flags & (1 << pos) != 0,
            None => pos == NOUN && self.assumed_nouns.contains(form),
        }
    }

    pub fn lemmatize(&self, word: &str, pos: usize) -> String {
        if pos >= MORPHY_POS {
            return word.to_string();
        }
        let mut forms: Vec<String> = vec![word.to_string()];
        if let Some(lemmas) = self.exceptions.get(&(word, POS_CHAR[pos])) {
            forms.extend(lemmas.split(' ').map(str::to_string));
        } else {
            for (old, new) in RULES[pos] {
                if let Some(stem) = word.strip_suffix(old) {
                    forms.push(format!("{stem}{new}"));
                }
            }
        }
        let mut best: Option<&str> = None;
        let mut seen: Vec<&str> = Vec::new();
        for f in &forms {
            if seen.contains(&f.as_str()) || !self.listed(f, pos) {
                continue;
            }
            seen.push(f);
            let shorter = match best {
                None => true,
                Some(b) => f.chars().count() < b.chars().count(),
            };
            if shorter {
                best = Some(f);
            }
        }
        best.unwrap_or(word).to_string()
    }

    /// Surface forms that might lemmatize to `target` under some part of speech: the word
    /// itself, each suffix rule run backwards, and exception-list entries naming it.
    pub fn surfaces_of(&self, target: &str, out: &mut Vec<String>) {
        out.push(target.to_string());
        for rules in RULES {
            for (old, new) in rules {
                if let Some(stem) = target.strip_suffix(new) {
                    out.push(format!("{stem}{old}"));
                }
            }
        }
        for (&(word, _), lemmas) in &self.exceptions {
            if lemmas.split(' ').any(|l| l == target) {
                out.push(word.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_wordnet_morphy() {
        let m = Morphy::new(["person", "skis", "ski", "man", "glass", "mouse", "knife", "scissors", "people"]);
        assert_eq!(m.lemmatize("skis", NOUN), "ski");
        assert_eq!(m.lemmatize("skiing", VERB), "ski");
        assert_eq!(m.lemmatize("skiing", NOUN), "skiing");
        assert_eq!(m.lemmatize("people", NOUN), "people");
        // "men" is itself a WordNet noun, and ties keep the first candidate.
        assert_eq!(m.lemmatize("men", NOUN), "men");
        assert_eq!(m.lemmatize("women", NOUN), "woman");
        assert_eq!(m.lemmatize("glasses", NOUN), "glass");
        assert_eq!(m.lemmatize("mice", NOUN), "mouse");
        assert_eq!(m.lemmatize("knives", NOUN), "knife");
        assert_eq!(m.lemmatize("children", NOUN), "child");
        assert_eq!(m.lemmatize("scissors", NOUN), "scissors");
        assert_eq!(m.lemmatize("seated", VERB), "seat");
        assert_eq!(m.lemmatize("seated", ADJ), "seated");
        assert_eq!(m.lemmatize("zebras", VERB), "zebras");
        assert_eq!(m.lemmatize("skis", ADV), "skis");
    }
}
