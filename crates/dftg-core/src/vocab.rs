//! The vocabulary: concepts, the surface words that name them, and the attribute families.
//!
//! A vocabulary is data (`configs/vocab/*.toml`); this module turns it into lookup tables.
//! Surface forms are stored lowercase with single spaces between words, singular and plural.

use ahash::AHashMap;
use serde::Deserialize;

use crate::error::CoreError;

/// Index of a concept inside its vocabulary.
pub type ConceptId = u16;

/// The bundled 80-category COCO vocabulary.
pub const COCO80_TOML: &str = include_str!("../../../configs/vocab/coco80.toml");

#[derive(Debug, Deserialize)]
struct VocabFile {
    schema_version: u32,
    name: String,
    #[serde(default)]
    plurals: AHashMap<String, String>,
    #[serde(default)]
    phrases: AHashMap<String, String>,
    #[serde(rename = "concept")]
    concepts: Vec<ConceptFile>,
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, FamilyFile>,
}

#[derive(Debug, Deserialize)]
struct ConceptFile {
    name: String,
    #[serde(default)]
    supercategory: String,
    #[serde(default)]
    synonyms: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct FamilyFile {
    values: Vec<String>,
    #[serde(default)]
    aliases: AHashMap<String, String>,
}

/// One concept of the vocabulary.
#[derive(Debug, Clone)]
pub struct Concept {
    pub name: String,
    pub supercategory: String,
    /// Singular surface forms, the canonical name first.
    pub synonyms: Vec<String>,
    /// Plural of each synonym, same order.
    pub plurals: Vec<String>,
}

/// What a surface phrase refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhraseEntry {
    /// `None` for phrases that name no object ("bus stop").
    pub concept: Option<ConceptId>,
    pub plural: bool,
}

/// A family of mutually exclusive attribute values (colour, size, material).
#[derive(Debug, Clone)]
pub struct AttributeFamily {
    pub name: String,
    pub values: Vec<String>,
}

/// Index of an attribute: (family, value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttributeId {
    pub family: u8,
    pub value: u8,
}

#[derive(Debug, Clone)]
pub struct Vocabulary {
    pub name: String,
    concepts: Vec<Concept>,
    by_name: AHashMap<String, ConceptId>,
    phrases: AHashMap<String, PhraseEntry>,
    /// Longest phrase, in words.
    max_words: usize,
    families: Vec<AttributeFamily>,
    attribute_words: AHashMap<String, AttributeId>,
}

impl Vocabulary {
    /// The bundled COCO vocabulary.
    pub fn coco80() -> Self {
        // The bundled file is tested; failing here is a build defect, not an input error.
        Self::from_toml(COCO80_TOML).expect("bundled coco80 vocabulary is valid")
    }

    pub fn from_toml(text: &str) -> Result<Self, CoreError> {
        let file: VocabFile =
            toml::from_str(text).map_err(|e| CoreError::invalid("vocabulary", format!("not a valid vocabulary file: {e}")))?;
        if file.schema_version != 1 {
            return Err(CoreError::invalid("vocabulary.schema_version", format!("unsupported version {}", file.schema_version)));
        }
        if file.concepts.is_empty() || file.concepts.len() > u16::MAX as usize {
            return Err(CoreError::invalid("vocabulary.concept", "needs between 1 and 65535 concepts"));
        }
        let mut vocab = Vocabulary {
            name: file.name,
            concepts: Vec::with_capacity(file.concepts.len()),
            by_name: AHashMap::new(),
            phrases: AHashMap::new(),
            max_words: 1,
            families: Vec::new(),
            attribute_words: AHashMap::new(),
        };
        for (i, c) in file.concepts.into_iter().enumerate() {
            let name = normalize_phrase(&c.name);
            if vocab.by_name.insert(name.clone(), i as ConceptId).is_some() {
                return Err(CoreError::invalid("vocabulary.concept.name", format!("duplicate concept {name:?}")));
            }
            let mut synonyms = vec![name.clone()];
            for s in c.synonyms {
                let s = normalize_phrase(&s);
                if !s.is_empty() && !synonyms.contains(&s) {
                    synonyms.push(s);
                }
            }
            let plurals = synonyms.iter().map(|s| pluralize_phrase(s, &file.plurals)).collect();
            vocab.concepts.push(Concept { name, supercategory: c.supercategory, synonyms, plurals });
        }
        // Priority: explicit phrases, then plural forms, then singular forms; first insert wins.
        for (phrase, target) in &file.phrases {
            let target_id = if target.is_empty() {
                None
            } else {
                Some(*vocab.by_name.get(&normalize_phrase(target)).ok_or_else(|| {
                    CoreError::invalid("vocabulary.phrases", format!("phrase {phrase:?} names unknown concept {target:?}"))
                })?)
            };
            let plural = phrase.ends_with('s') && !phrase.ends_with("ss");
            vocab.insert_phrase(normalize_phrase(phrase), PhraseEntry { concept: target_id, plural });
        }
        let concepts = vocab.concepts.clone();
        for (i, c) in concepts.iter().enumerate() {
            for (s, p) in c.synonyms.iter().zip(&c.plurals) {
                if p != s {
                    vocab.insert_phrase(p.clone(), PhraseEntry { concept: Some(i as ConceptId), plural: true });
                }
            }
        }
        for (i, c) in concepts.iter().enumerate() {
            for (s, p) in c.synonyms.iter().zip(&c.plurals) {
                vocab.insert_phrase(s.clone(), PhraseEntry { concept: Some(i as ConceptId), plural: p == s });
            }
        }
        for (fi, (fname, fam)) in file.attributes.into_iter().enumerate() {
            if fi > u8::MAX as usize || fam.values.len() > u8::MAX as usize {
                return Err(CoreError::invalid("vocabulary.attributes", "too many attribute families or values"));
            }
            for (vi, v) in fam.values.iter().enumerate() {
                vocab.attribute_words.insert(v.to_lowercase(), AttributeId { family: fi as u8, value: vi as u8 });
            }
            for (alias, v) in &fam.aliases {
                let vi = fam.values.iter().position(|x| x == v).ok_or_else(|| {
                    CoreError::invalid("vocabulary.attributes", format!("alias {alias:?} of family {fname:?} names unknown value {v:?}"))
                })?;
                vocab.attribute_words.insert(alias.to_lowercase(), AttributeId { family: fi as u8, value: vi as u8 });
            }
            vocab.families.push(AttributeFamily { name: fname, values: fam.values });
        }
        Ok(vocab)
    }

    fn insert_phrase(&mut self, phrase: String, entry: PhraseEntry) {
        let words = phrase.split(' ').count();
        self.max_words = self.max_words.max(words);
        self.phrases.entry(phrase).or_insert(entry);
    }

    pub fn len(&self) -> usize {
        self.concepts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.concepts.is_empty()
    }

    pub fn concepts(&self) -> &[Concept] {
        &self.concepts
    }

    pub fn concept(&self, id: ConceptId) -> &Concept {
        &self.concepts[id as usize]
    }

    pub fn name(&self, id: ConceptId) -> &str {
        &self.concepts[id as usize].name
    }

    /// Concept by canonical name, or by any synonym ("doughnut" → donut).
    pub fn lookup(&self, name: &str) -> Option<ConceptId> {
        let n = normalize_phrase(name);
        self.by_name.get(&n).copied().or_else(|| self.phrases.get(&n).and_then(|e| e.concept))
    }

    /// Exact surface phrase (lowercase, single-spaced).
    pub fn phrase(&self, surface: &str) -> Option<PhraseEntry> {
        self.phrases.get(surface).copied()
    }

    /// Every surface phrase the vocabulary knows.
    pub fn phrase_keys(&self) -> impl Iterator<Item = &str> {
        self.phrases.keys().map(|k| k.as_str())
    }

    /// Longest phrase length in words.
    pub fn max_words(&self) -> usize {
        self.max_words
    }

    pub fn families(&self) -> &[AttributeFamily] {
        &self.families
    }

    /// Every word that names an attribute value, aliases included.
    pub fn attribute_words(&self) -> impl Iterator<Item = &str> {
        self.attribute_words.keys().map(|k| k.as_str())
    }

    pub fn attribute_word(&self, word: &str) -> Option<AttributeId> {
        self.attribute_words.get(word).copied()
    }

    /// Attribute by "family:value" or bare value.
    pub fn attribute(&self, family: &str, value: &str) -> Option<AttributeId> {
        let fi = self.families.iter().position(|f| f.name == family)?;
        let id = self.attribute_words.get(&value.to_lowercase())?;
        (id.family as usize == fi).then_some(*id)
    }

    pub fn attribute_name(&self, id: AttributeId) -> (&str, &str) {
        let f = &self.families[id.family as usize];
        (&f.name, &f.values[id.value as usize])
    }
}

/// Lowercase, trim and collapse inner whitespace to single spaces.
pub fn normalize_phrase(s: &str) -> String {
    s.split_whitespace().map(|w| w.to_lowercase()).collect::<Vec<_>>().join(" ")
}

fn pluralize_phrase(phrase: &str, irregular: &AHashMap<String, String>) -> String {
    if phrase.contains(" of ") {
        return phrase.to_string();
    }
    match phrase.rsplit_once(' ') {
        Some((head, last)) => format!("{head} {}", pluralize_word(last, irregular)),
        None => pluralize_word(phrase, irregular),
    }
}

/// English plural of one word, irregular forms first.
pub fn pluralize_word(word: &str, irregular: &AHashMap<String, String>) -> String {
    if let Some(p) = irregular.get(word) {
        return p.clone();
    }
    let b = word.as_bytes();
    let n = b.len();
    if word.ends_with('s') || word.ends_with('x') || word.ends_with('z') || word.ends_with("ch") || word.ends_with("sh") {
        return format!("{word}es");
    }
    if n >= 2 && b[n - 1] == b'y' && !matches!(b[n - 2], b'a' | b'e' | b'i' | b'o' | b'u') {
        return format!("{}ies", &word[..n - 1]);
    }
    format!("{word}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_vocabulary_loads_with_plurals_and_phrases() {
        let v = Vocabulary::coco80();
        assert_eq!(v.len(), 80);
        let dog = v.lookup("dog").unwrap();
        assert_eq!(v.phrase("dogs"), Some(PhraseEntry { concept: Some(dog), plural: true }));
        assert_eq!(v.phrase("puppies").unwrap().concept, Some(dog));
        let person = v.lookup("person").unwrap();
        assert_eq!(v.phrase("people"), Some(PhraseEntry { concept: Some(person), plural: true }));
        assert_eq!(v.phrase("women").unwrap().concept, Some(person));
        assert_eq!(v.phrase("hot dogs").unwrap().concept, v.lookup("hot dog"));
        assert_eq!(v.phrase("bus stop").unwrap().concept, None);
        assert_eq!(v.phrase("knives").unwrap().concept, v.lookup("knife"));
        assert_eq!(v.lookup("doughnut"), v.lookup("donut"));
        assert!(v.max_words() >= 3);
        let grey = v.attribute_word("grey").unwrap();
        assert_eq!(v.attribute_name(grey), ("color", "gray"));
    }

    #[test]
    fn bad_vocabulary_names_the_field() {
        let err = Vocabulary::from_toml("schema_version = 2\nname='x'\n[[concept]]\nname='a'\n").unwrap_err();
        assert!(err.to_string().contains("schema_version"), "{err}");
        let err = Vocabulary::from_toml("schema_version = 1\nname='x'\n[phrases]\n'a b' = 'zzz'\n[[concept]]\nname='a'\n").unwrap_err();
        assert!(err.to_string().contains("zzz"), "{err}");
    }
}
