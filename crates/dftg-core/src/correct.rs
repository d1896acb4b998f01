//! The model's own description, corrected like a careful editor would: wrong counts and
//! attributes fixed in place, an absent object removed with its list item, prepositional phrase
//! or clause, and only when it is what the sentence is about, with its sentence. Everything else
//! is kept verbatim. Re-diagnosed until clean; whole sentences go only as the last resort, and
//! then the present objects they named are kept as a plain statement ("A handbag is placed on
//! the floor near the toilet." → "There is a toilet.").

use std::collections::{BTreeMap, BTreeSet};

use crate::check::diagnose;
use crate::english::capitalize;
pub use crate::english::number_words;
use crate::extract::{ExtractScratch, Extractor};
use crate::record::{DiagnosisRecord, Hallucination, HallucinationKind};
use crate::vocab::Vocabulary;

/// Rounds of in-place edits (one per sentence per round), then rounds that drop sentences.
const FINE_ROUNDS: usize = 12;
const DROP_ROUNDS: usize = 4;

/// One replacement in the text; `capitalize` uppercases the first letter where it starts (a
/// sentence now starts there).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    range: (usize, usize),
    new: String,
    capitalize: bool,
}

impl Edit {
    fn delete(range: (usize, usize)) -> Self {
        Edit { range, new: String::new(), capitalize: false }
    }
}

/// The model's description with hallucinated claims removed and the rest kept verbatim:
/// wrong counts and attributes are replaced by the truth, an absent object goes with the
/// smallest part of its sentence that reads well without it. Returns `None` when nothing
/// clean remains.
pub fn correct_description(extractor: &Extractor, scratch: &mut ExtractScratch, d: &DiagnosisRecord) -> Option<String> {
    let vocab = extractor.vocab();
    let truth = crate::truth::ImageTruth { image: d.image.clone(), file: d.file.clone(), objects: d.truth.clone() };
    let mut text = d.response.clone();
    let mut current = d.clone();
    // count and attribute fixes already made: if the claim is still wrong, its sentence goes
    let mut tried: BTreeSet<(HallucinationKind, String)> = BTreeSet::new();
    // sentences written by `restate_present`: one that is wrong again goes
    let mut restated: BTreeSet<String> = BTreeSet::new();
    let present = |concept: &str| d.truth.iter().any(|t| t.name == concept);
    for round in 0..FINE_ROUNDS + DROP_ROUNDS {
        if current.hallucinations.is_empty() {
            let t = text.trim();
            return (!t.is_empty() && !current.mentions.is_empty()).then(|| t.to_string());
        }
        let fine = round < FINE_ROUNDS;
        let sentences = sentence_ranges(&text);
        let sentence_of = |pos: u32| sentences.iter().position(|(s, e)| pos as usize >= *s && (pos as usize) < *e);
        // one edit per sentence and round: the other spans in it would move
        let mut edits: BTreeMap<usize, Edit> = BTreeMap::new();
        let mut drop: BTreeSet<usize> = BTreeSet::new();
        for h in &current.hallucinations {
            match h.kind {
                HallucinationKind::Object => {
                    for m in current.mentions.iter().filter(|m| m.concept == h.concept) {
                        let Some(i) = sentence_of(m.span.0) else { continue };
                        if drop.contains(&i) || edits.contains_key(&i) {
                            continue;
                        }
                        let span = (m.span.0 as usize, m.span.1 as usize);
                        match fine.then(|| remove_mention(&text, sentences[i], span)).flatten() {
                            Some(e) => {
                                edits.insert(i, e);
                            }
                            None => {
                                drop.insert(i);
                            }
                        }
                    }
                }
                HallucinationKind::Count | HallucinationKind::Attribute => {
                    let Some(i) = sentence_of(h.span.0) else { continue };
                    let key = (h.kind, h.concept.clone());
                    if !fine || tried.contains(&key) {
                        drop.insert(i);
                        continue;
                    }
                    if drop.contains(&i) || edits.contains_key(&i) {
                        continue;
                    }
                    let fix = match h.kind {
                        HallucinationKind::Count => fix_count(vocab, &text, sentences[i], h),
                        _ => h.known.first().map(|v| Edit {
                            range: (h.span.0 as usize, h.span.1 as usize),
                            new: v.clone(),
                            capitalize: false,
                        }),
                    };
                    match fix {
                        Some(e) => {
                            tried.insert(key);
                            edits.insert(i, e);
                        }
                        None => {
                            drop.insert(i);
                        }
                    }
                }
            }
        }
        let mut all: Vec<Edit> = Vec::new();
        for (i, e) in edits {
            if !drop.contains(&i) {
                all.push(e);
            }
        }
        for &i in &drop {
            // what the sentence said rightly about present objects survives as a plain statement
            let rewrite = restate_present(vocab, &text, sentences[i], &current.mentions, &present)
                .filter(|r| !restated.contains(r))
                .filter(|r| diagnose(extractor, scratch, &truth, &d.prompt, r).hallucinations.is_empty());
            match rewrite {
                Some(r) => {
                    let (s, e) = sentences[i];
                    let end = s + text[s..e].trim_end().len();
                    restated.insert(r.clone());
                    all.push(Edit { range: (s, end), new: r, capitalize: false });
                }
                None => all.push(drop_sentence(&text, &sentences, i, &drop)),
            }
        }
        all.sort_by_key(|e| std::cmp::Reverse(e.range.0));
        // right to left; an edit reaching into one already made waits for the next round
        let mut limit = text.len();
        for e in all {
            if e.range.1 > limit || e.range.0 > e.range.1 {
                continue;
            }
            limit = e.range.0;
            text.replace_range(e.range.0..e.range.1, &e.new);
            if e.capitalize {
                capitalize_at(&mut text, e.range.0);
            }
        }
        text = tidy(&text);
        current = diagnose(extractor, scratch, &truth, &d.prompt, &text);
    }
    None
}

/// Determiners that point back into the text or to a part of a set ("the", "his", "other"): a
/// sentence that states the object anew cannot keep them.
const REFERRING: &[&str] = &[
    "the",
    "this",
    "that",
    "these",
    "those",
    "his",
    "her",
    "their",
    "its",
    "our",
    "my",
    "your",
    "other",
    "another",
    "both",
    "each",
    "every",
    "all",
    "either",
    "same",
    "remaining",
];

/// A sentence that has to go, restated as what it rightly said exists: "A handbag is placed on
/// the floor near the toilet." → "There is a toilet." Only objects the sentence names and the
/// truth holds, each as its noun phrase with adjectives and number (determiners that refer back
/// become an article). `None` when the sentence names no present object in a plain noun phrase.
fn restate_present(
    vocab: &Vocabulary,
    text: &str,
    sentence: (usize, usize),
    mentions: &[crate::record::Mention],
    present: &dyn Fn(&str) -> bool,
) -> Option<String> {
    let (lo, hi) = (sentence.0, content_end(text, sentence));
    let inside: Vec<&crate::record::Mention> = mentions.iter().filter(|m| m.span.0 as usize >= lo && m.span.1 as usize <= hi).collect();
    let mut phrases: Vec<(String, bool)> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    // an object the rest of the text already names needs no restating: a careful editor does
    // not repeat "There is a toilet." after the toilet was described
    let named_elsewhere: BTreeSet<&str> =
        mentions.iter().filter(|m| (m.span.1 as usize) <= lo || m.span.0 as usize >= hi).map(|m| m.concept.as_str()).collect();
    for m in &inside {
        if !present(&m.concept) || seen.contains(m.concept.as_str()) || named_elsewhere.contains(m.concept.as_str()) {
            continue;
        }
        let (s0, s1) = (m.span.0 as usize, m.span.1 as usize);
        let start = np_start(text, lo, s0);
        // the phrase must hold no other object ("the dog's bowl") and no punctuation
        if inside.iter().any(|o| !std::ptr::eq(*o, *m) && (o.span.0 as usize) < s1 && o.span.1 as usize > start) {
            continue;
        }
        let words: Vec<&str> = text[start..s1].split_whitespace().collect();
        // "an area for people" is about the area
        let inner_prep = words.iter().any(|w| {
            matches!(lower(w).as_str(), "for" | "as" | "than" | "like") || PLACE_PREPS.contains(&lower(w).as_str()) && lower(w) != "of"
        });
        if words.iter().any(|w| !w.chars().all(is_word_char)) || words.len() > 6 || inner_prep {
            continue;
        }
        let surface = lower(&text[s0..s1]);
        let Some(entry) = vocab.phrase(&surface) else { continue };
        // "the broccoli pieces", "several train cars": the object is part of a compound noun
        if next_word(text, s1, hi).filter(|w| w.0 == s1 + 1).is_some_and(|w| {
            let n = word_at(text, w);
            n.chars().all(|c| c.is_ascii_lowercase())
                && !is_boundary(&n)
                && !n.ends_with("ed")
                && !matches!(
                    n.as_str(),
                    "and"
                        | "or"
                        | "for"
                        | "as"
                        | "than"
                        | "to"
                        | "of"
                        | "next"
                        | "close"
                        | "nearby"
                        | "there"
                        | "here"
                        | "too"
                        | "together"
                        | "full"
                        | "itself"
                )
        }) {
            continue;
        }
        let mut k = 0;
        while k + 1 < words.len() && REFERRING.contains(&lower(words[k]).as_str()) {
            k += 1;
        }
        // "two other cats", "the left sink": what these set apart is not said here
        let mut np: Vec<String> = words[k..]
            .iter()
            .enumerate()
            .filter(|(j, w)| k + j + 1 == words.len() || !RELATIVE.contains(&lower(w).as_str()))
            .map(|(_, w)| w.to_string())
            .collect();
        let first = np.first().map(|w| lower(w)).unwrap_or_default();
        let number = crate::english::number_value(&first).or_else(|| first.parse().ok());
        let quantified = DETERMINERS.contains(&first.as_str()) || number.is_some();
        // "a group of people" is one group, "a couple of chairs" are chairs
        let quantity = np.iter().position(|w| lower(w) == "of").and_then(|p| p.checked_sub(1)).map(|p| lower(&np[p]));
        let same_form = entry.concept.is_some_and(|c| vocab.concept(c).synonyms.contains(&surface));
        let plural = match quantity.as_deref() {
            Some("couple" | "few" | "lot" | "lots" | "number" | "plenty") => true,
            Some(_) => false,
            None => {
                (entry.plural && !same_form)
                    // "skis", "scissors": named by their plural
                    || (same_form && surface.ends_with('s') && !["ss", "us", "is"].iter().any(|e| surface.ends_with(e)))
                    || PLURAL_ONLY.contains(&surface.as_str())
                    || m.count.is_some_and(|c| c > 1)
                    || number.is_some_and(|n| n > 1)
                    || matches!(first.as_str(), "several" | "many" | "multiple" | "some" | "few" | "numerous" | "various" | "both")
            }
        };
        // the capital of the sentence's first word goes ("TV" keeps its own)
        if let Some(w) = np.first_mut() {
            let opens = k == 0 && text[lo..start].trim().is_empty();
            if opens && w.chars().skip(1).any(char::is_lowercase) || np_lowercase_ok(w) {
                *w = lower(w);
            }
        }
        let mut phrase = np.join(" ");
        if !quantified && !plural && !MASS.contains(&surface.as_str()) {
            phrase = format!("{} {phrase}", indefinite(&phrase));
        }
        seen.insert(m.concept.as_str());
        phrases.push((phrase, plural));
    }
    let (_, first_plural) = phrases.first()?;
    let verb = if *first_plural { "are" } else { "is" };
    let names: Vec<&str> = phrases.iter().map(|(p, _)| p.as_str()).collect();
    let list = match names.len() {
        1 => names[0].to_string(),
        2 => format!("{} and {}", names[0], names[1]),
        n => format!("{}, and {}", names[..n - 1].join(", "), names[n - 1]),
    };
    Some(format!("There {verb} {list}."))
}

/// Adjectives that place an object among others already described ("the left sink", "the other
/// chair"): they go with the determiner.
const RELATIVE: &[&str] = &[
    "other",
    "left",
    "right",
    "front",
    "back",
    "first",
    "second",
    "third",
    "last",
    "next",
    "nearest",
    "closest",
    "same",
    "former",
    "latter",
    "middle",
    "only",
    "remaining",
    "additional",
    "farthest",
    "furthest",
];

/// Plurals the vocabulary may list as singular surfaces.
const PLURAL_ONLY: &[&str] = &["people", "men", "women", "children", "persons"];

/// Nouns that take no article ("There is broccoli.").
const MASS: &[&str] = &["broccoli", "luggage", "toast", "food"];

/// "a" or "an" before `phrase`, by its sound where the spelling misleads ("a unique", "an hour").
fn indefinite(phrase: &str) -> &'static str {
    let l = phrase.to_ascii_lowercase();
    let vowel = l.starts_with(['a', 'e', 'i', 'o', 'u']);
    let consonant_sound = ["uni", "use", "usu", "uti", "eu", "one", "once"].iter().any(|p| l.starts_with(p));
    let silent_h = ["hour", "honest", "honor", "heir"].iter().any(|p| l.starts_with(p));
    if (vowel && !consonant_sound) || silent_h {
        "an"
    } else {
        "a"
    }
}

/// A word written with a capital only because it opened the sentence.
fn np_lowercase_ok(word: &str) -> bool {
    let l = lower(word);
    DETERMINERS.contains(&l.as_str()) || crate::english::number_value(&l).is_some() || BARE_ADJECTIVES.contains(&l.as_str())
}

/// Removing sentence `i`: a paragraph break after it stays; a connective opening the next
/// sentence ("Also,", "Additionally,") goes too, since what it added to is gone.
fn drop_sentence(text: &str, sentences: &[(usize, usize)], i: usize, dropped: &BTreeSet<usize>) -> Edit {
    let (s, e) = sentences[i];
    let content_end = s + text[s..e].trim_end().len();
    let mut range = (s, e);
    if text[content_end..e].contains('\n') {
        // keep the break, take the spaces before the sentence instead
        let before = text[..s].trim_end_matches(' ').len();
        range = (before, content_end);
    }
    let mut new = String::new();
    let mut capitalize = false;
    if let Some(&(ns, ne)) = sentences.get(i + 1).filter(|_| !dropped.contains(&(i + 1))) {
        let n = connective_len(&text[ns..ne]);
        if n > 0 {
            // the break between stays, the connective goes
            new = text[range.1..ns].to_string();
            range.1 = ns + n;
            capitalize = true;
        }
    }
    Edit { range, new, capitalize }
}

/// Length of an opening connective that leans on the sentence before ("Also, ", "And ").
fn connective_len(sentence: &str) -> usize {
    const OPENERS: [&str; 9] =
        ["additionally, ", "in addition, ", "also, ", "furthermore, ", "moreover, ", "besides, ", "and ", "also ", "additionally "];
    let lower = sentence.to_ascii_lowercase();
    OPENERS.iter().find(|o| lower.starts_with(*o)).map(|o| o.len()).unwrap_or(0)
}

fn capitalize_at(text: &mut String, pos: usize) {
    let Some(rest) = text.get(pos..) else { return };
    let Some((off, c)) = rest.char_indices().find(|(_, c)| !c.is_whitespace()) else { return };
    if c.is_lowercase() {
        let at = pos + off;
        let upper: String = c.to_uppercase().collect();
        text.replace_range(at..at + c.len_utf8(), &upper);
    }
}

/// Repairs what removals leave behind: doubled spaces, orphan commas, stacked blank lines,
/// a lowercase start.
fn tidy(text: &str) -> String {
    const FIXES: [(&str, &str); 10] = [
        ("  ", " "),
        (" ,", ","),
        (" .", "."),
        (",,", ","),
        (", .", "."),
        (",.", "."),
        (" \n", "\n"),
        ("\n\n\n", "\n\n"),
        (" and and ", " and "),
        (", ,", ","),
    ];
    let mut t = text.trim().to_string();
    loop {
        let before = t.len();
        for (bad, good) in FIXES {
            if t.contains(bad) {
                t = t.replace(bad, good);
            }
        }
        if t.len() == before {
            break;
        }
    }
    capitalize_at(&mut t, 0);
    t
}

// ---- words ----

const DETERMINERS: &[&str] = &[
    "a", "an", "the", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "several", "some", "many", "multiple",
    "few", "his", "her", "their", "its", "this", "that", "these", "those", "another", "other", "each", "every", "various", "numerous",
    "both", "any", "our", "my", "your", "single", "more", "a few", "all",
];

/// "a pair of skis": the noun before "of" that still belongs to the quantity.
const QUANTITIES: &[&str] = &["pair", "couple", "group", "set", "bunch", "number", "lot", "lots", "variety", "few", "plenty", "total"];

/// Prepositions whose phrase can go without harming the sentence ("on a bed").
const PLACE_PREPS: &[&str] = &[
    "on",
    "in",
    "at",
    "near",
    "by",
    "under",
    "beneath",
    "beside",
    "behind",
    "inside",
    "into",
    "onto",
    "over",
    "above",
    "below",
    "across",
    "along",
    "around",
    "against",
    "among",
    "toward",
    "towards",
    "through",
    "from",
    "with",
    "atop",
    "alongside",
    "outside",
    "underneath",
    "nearby",
    "upon",
    "to",
    "of",
    "between",
    "within",
];

/// Finite verbs and auxiliaries: a word list stands in for a tagger.
const VERBS: &[&str] = &[
    "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "can", "could", "may", "might", "will", "would", "should",
    "appears", "appear", "seems", "seem", "shows", "show", "features", "feature", "displays", "display", "includes", "include", "contains",
    "contain", "sits", "sit", "stands", "stand", "lies", "lie", "holds", "hold", "looks", "look", "wears", "wear", "rests", "rest",
    "captures", "depicts", "creates", "adds", "hangs", "hang", "lays", "lay", "stays", "walks", "walk", "rides", "ride", "plays", "play",
    "waits", "wait", "does", "do", "did", "gets", "get", "makes", "make", "provides", "provide", "suggests", "suggest",
];

/// Words that open a clause or a modifier, not a noun phrase.
const CLAUSE_WORDS: &[&str] = &[
    "there",
    "it",
    "he",
    "she",
    "they",
    "we",
    "which",
    "who",
    "whom",
    "whose",
    "that",
    "while",
    "where",
    "when",
    "with",
    "as",
    "possibly",
    "likely",
    "probably",
    "perhaps",
    "including",
    "such",
    "and",
    "or",
    "but",
    "so",
    "also",
    "both",
    "either",
    "making",
    "giving",
    "creating",
    "adding",
    "suggesting",
    "indicating",
    "allowing",
    "providing",
    "showing",
];

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '\''
}

fn lower(w: &str) -> String {
    w.to_lowercase()
}

/// The word ending right before `pos` (spaces skipped), unless punctuation comes first.
fn prev_word(text: &str, lo: usize, pos: usize) -> Option<(usize, usize)> {
    let head = text.get(lo..pos)?.trim_end_matches(' ');
    let end = lo + head.len();
    let last = head.chars().next_back()?;
    if !is_word_char(last) {
        return None;
    }
    let start = head.char_indices().rev().find(|(_, c)| !is_word_char(*c)).map(|(i, c)| lo + i + c.len_utf8()).unwrap_or(lo);
    Some((start, end))
}

/// The word starting right after `pos` (spaces skipped), unless punctuation comes first.
fn next_word(text: &str, pos: usize, hi: usize) -> Option<(usize, usize)> {
    let tail = text.get(pos..hi)?;
    let skipped = tail.len() - tail.trim_start_matches(' ').len();
    let start = pos + skipped;
    let first = text[start..hi].chars().next()?;
    if !is_word_char(first) {
        return None;
    }
    let end = text[start..hi].char_indices().find(|(_, c)| !is_word_char(*c)).map(|(i, _)| start + i).unwrap_or(hi);
    Some((start, end))
}

fn word_at(text: &str, w: (usize, usize)) -> String {
    lower(&text[w.0..w.1])
}

fn is_verb(w: &str) -> bool {
    VERBS.contains(&w) || w.ends_with("'s")
}

/// A word that cannot sit inside a noun phrase before its noun.
fn is_boundary(w: &str) -> bool {
    is_verb(w) || PLACE_PREPS.contains(&w) || CLAUSE_WORDS.contains(&w) || (w.ends_with("ing") && w.len() > 4) || w.ends_with("ly")
}

/// Start of the noun phrase whose head ends at `head_start` ("a black leather couch").
fn np_start(text: &str, lo: usize, head_start: usize) -> usize {
    // a determiner within a few words, adjectives between
    let mut pos = head_start;
    for _ in 0..5 {
        let Some(w) = prev_word(text, lo, pos) else { break };
        let word = word_at(text, w);
        if DETERMINERS.contains(&word.as_str()) || crate::english::number_value(&word).is_some() {
            // "all the", "the two"
            return match prev_word(text, lo, w.0) {
                Some(p) if DETERMINERS.contains(&word_at(text, p).as_str()) => p.0,
                _ => w.0,
            };
        }
        if word == "of" {
            match prev_word(text, lo, w.0) {
                Some(q) if QUANTITIES.contains(&word_at(text, q).as_str()) => {
                    pos = q.0;
                    continue;
                }
                _ => break,
            }
        }
        if is_boundary(&word) {
            break;
        }
        pos = w.0;
    }
    // no determiner: a bare plural with plain adjectives ("blue jeans")
    let mut start = head_start;
    for _ in 0..3 {
        let Some(w) = prev_word(text, lo, start) else { break };
        let word = word_at(text, w);
        if is_boundary(&word) || !BARE_ADJECTIVES.contains(&word.as_str()) {
            break;
        }
        start = w.0;
    }
    start
}

const BARE_ADJECTIVES: &[&str] = &[
    "small",
    "large",
    "big",
    "little",
    "tall",
    "short",
    "old",
    "young",
    "white",
    "black",
    "red",
    "blue",
    "green",
    "yellow",
    "brown",
    "gray",
    "grey",
    "orange",
    "pink",
    "purple",
    "wooden",
    "metal",
    "plastic",
    "colorful",
    "different",
    "empty",
    "dirty",
    "clean",
    "open",
    "closed",
    "various",
    "other",
    "several",
    "many",
    "numerous",
    "additional",
    "potted",
    "stuffed",
    "parked",
    "fresh",
    "sliced",
];

#[derive(Debug, Clone, Copy)]
struct Sep {
    start: usize,
    end: usize,
    conj: bool,
}

/// A list separator ending exactly at `pos`: ", and ", ", or ", " and ", " or ", ", ".
fn sep_before(text: &str, lo: usize, pos: usize) -> Option<Sep> {
    let head = text.get(lo..pos)?;
    let lower_head = head.to_ascii_lowercase();
    for (s, conj) in [(", and ", true), (", or ", true), (" and ", true), (" or ", true), (", ", false)] {
        if lower_head.ends_with(s) {
            return Some(Sep { start: pos - s.len(), end: pos, conj });
        }
    }
    None
}

/// The next list separator after an item that starts at `item_start`: the item may carry a
/// short modifier ("a dog sitting nearby") but no finite verb.
fn sep_after(text: &str, item_start: usize, hi: usize, after_noun: bool, first_item: bool) -> Option<Sep> {
    let rest = &text[item_start..hi];
    let lower_rest = rest.to_ascii_lowercase();
    let comma = lower_rest.find(", ");
    let and = [" and ", " or "].iter().filter_map(|s| lower_rest.find(s)).min();
    let (at, len, conj) = match (comma, and) {
        (Some(c), Some(a)) if a < c => (a, if lower_rest[a..].starts_with(" and ") { 5 } else { 4 }, true),
        (Some(c), _) => {
            let tail = &lower_rest[c + 2..];
            if tail.starts_with("and ") {
                (c, 6, true)
            } else if tail.starts_with("or ") {
                (c, 5, true)
            } else {
                (c, 2, false)
            }
        }
        (None, Some(a)) => (a, if lower_rest[a..].starts_with(" and ") { 5 } else { 4 }, true),
        (None, None) => return None,
    };
    let item = &lower_rest[..at];
    let words: Vec<&str> = item.split_whitespace().collect();
    if words.len() > 8 || words.iter().any(|w| is_verb(w.trim_matches(|c: char| !is_word_char(c)))) || item.contains(['(', ';', ':']) {
        return None;
    }
    // "a table setting with a plate of broccoli and a cup": without a comma only nouns side by
    // side ("a toilet and a sink") are a list
    let comma_sep = lower_rest[at..].starts_with(',');
    if !comma_sep && ((after_noun && !words.is_empty()) || words.iter().any(|w| PLACE_PREPS.contains(w))) {
        return None;
    }
    // "a bowl filled with bananas, kiwis, and grapes": the list belongs to the phrase after the
    // noun, the noun is not its first item
    if first_item && words.iter().any(|w| PLACE_PREPS.contains(w)) {
        return None;
    }
    Some(Sep { start: item_start + at, end: item_start + at + len, conj })
}

const COMPARATIVES: &[&str] = &["closer", "further", "farther", "nearer", "larger", "smaller", "bigger", "higher", "lower", "more", "less"];

/// Whether a list item can start at `pos` (a noun phrase, not a clause).
fn item_starts(text: &str, pos: usize, hi: usize) -> bool {
    // "…, and possibly pies": a hedge before the item
    let first = next_word(text, pos, hi);
    let first = match first {
        Some(w) if matches!(word_at(text, w).as_str(), "possibly" | "probably" | "perhaps" | "maybe" | "even") => next_word(text, w.1, hi),
        other => other,
    };
    match first {
        Some(w) => {
            let word = word_at(text, w);
            let ok =
                !is_verb(&word) && !CLAUSE_WORDS.contains(&word.as_str()) && !PLACE_PREPS.contains(&word.as_str()) && !word.ends_with("ly");
            // "…, one closer to the center and another further back" elaborates, it lists nothing
            let pronoun =
                matches!(word.as_str(), "some" | "one" | "another" | "others" | "most" | "many" | "all" | "each" | "both" | "none" | "few")
                    && next_word(text, w.1, hi).is_none_or(|n| {
                        let n = word_at(text, n);
                        is_boundary(&n) || COMPARATIVES.contains(&n.as_str()) || n == "of"
                    });
            ok && !pronoun && (!word.ends_with("ing") || DETERMINERS.contains(&word.as_str()))
        }
        None => false,
    }
}

/// End of the comma-delimited chunk holding `pos` (before the comma or the sentence's end mark).
fn chunk_end(text: &str, pos: usize, content_end: usize) -> usize {
    text[pos..content_end].find([',', ';', ':']).map(|p| pos + p).unwrap_or(content_end)
}

/// Start of that chunk (after ", ").
fn chunk_start(text: &str, lo: usize, pos: usize) -> usize {
    text[lo..pos].rfind([',', ';', ':']).map(|p| lo + p + 1).unwrap_or(lo)
}

/// Where the sentence's words end: before the final mark and trailing space.
fn content_end(text: &str, sentence: (usize, usize)) -> usize {
    let t = text[sentence.0..sentence.1].trim_end();
    let t = t.trim_end_matches(['.', '!', '?', '"', ')']);
    sentence.0 + t.len()
}

/// The smallest part of the sentence that claims the mention and can go: its list item, its
/// prepositional phrase, its clause. `None` when the mention is what the sentence is about.
fn remove_mention(text: &str, sentence: (usize, usize), span: (usize, usize)) -> Option<Edit> {
    let lo = sentence.0;
    let hi = content_end(text, sentence);
    if span.1 > hi || span.0 < lo {
        return None;
    }
    // a possessive or a compound ("the dog's collar", "the bed frame") is not a whole phrase
    if text[span.1..].starts_with("'s") || text[span.1..].chars().next().is_some_and(is_word_char) {
        return None;
    }
    let start = np_start(text, lo, span.0);
    let edit = remove_list_item(text, lo, hi, start, span.1)
        .or_else(|| remove_prep_phrase(text, lo, hi, start, span.1))
        .or_else(|| remove_participle(text, lo, hi, start, span.1))
        .or_else(|| remove_first_clause(text, lo, hi, span.1))
        .or_else(|| remove_clause(text, lo, hi, start))?;
    // "There are several chairs here, possibly for guests" must not become "There are possibly
    // for guests": an existential keeps a noun phrase after it
    let head = format!("{} {}", text[lo..edit.range.0].to_ascii_lowercase().trim_end(), lower(edit.new.trim()));
    let head = head.trim_end();
    let existential =
        ["there is", "there are", "there was", "there were", "there is also", "there are also"].iter().any(|t| head.ends_with(t));
    if existential && !item_starts(text, edit.range.1, hi) {
        return None;
    }
    Some(edit)
}

/// "A, B, and C" minus one item, the separators repaired.
fn remove_list_item(text: &str, lo: usize, hi: usize, start: usize, np_end: usize) -> Option<Edit> {
    // items as (start, end), seps between them; the mention's item is `k`
    let mut items: Vec<(usize, usize)> = vec![(start, np_end)];
    let mut seps: Vec<Sep> = Vec::new();
    let mut k = 0usize;
    // leftwards
    let mut cur = start;
    while let Some(sep) = sep_before(text, lo, cur) {
        let prev_end = sep.start;
        let prev_start = match sep_before_item(text, lo, prev_end) {
            Some(s) => s,
            None => {
                let s = np_start(text, lo, prev_word(text, lo, prev_end)?.0);
                let w = word_at(text, prev_word(text, lo, prev_end)?);
                if is_boundary(&w) || w.ends_with("ed") {
                    return None;
                }
                s
            }
        };
        if prev_start >= prev_end {
            return None;
        }
        items.insert(0, (prev_start, prev_end));
        seps.insert(0, sep);
        k += 1;
        cur = prev_start;
        if sep_before(text, lo, cur).is_none_or(|s| s.conj) {
            break;
        }
    }
    // rightwards, from the mention's item
    let mut item_start = start;
    let mut last_conj = seps.last().is_some_and(|s| s.conj);
    if seps.is_empty() || !last_conj || k == 0 {
        loop {
            let after_noun = item_start == start;
            let first_item = after_noun && seps.is_empty();
            let Some(sep) = sep_after(text, if after_noun { np_end } else { item_start }, hi, after_noun, first_item) else { break };
            // the mention's own item: the separator must follow its noun phrase closely
            if !item_starts(text, sep.end, hi) {
                break;
            }
            // "near the chair, and a few bottles are scattered": a clause follows, not an item;
            // but in "the presence of cars and a pedestrian in this setting suggests …" the
            // verb is the sentence's: two nouns joined without a comma after a preposition
            // are its object, one list
            let subject_list = text[lo..items[0].0].trim().is_empty();
            let tail = &text[sep.end..chunk_end(text, sep.end, hi)];
            if sep.conj && !subject_list {
                let words: Vec<String> = tail.split_whitespace().map(|w| lower(w.trim_matches(|c: char| !is_word_char(c)))).collect();
                // the second noun's own phrase ends in a prepositional phrase before the verb
                // ("a pedestrian in this setting suggests"); a verb right after it starts a
                // clause ("of a bird and the other is …")
                let object_pair = |v: usize| {
                    !text[sep.start..sep.end].contains(',')
                        && prev_word(text, lo, items[0].0).is_some_and(|w| word_at(text, w) == "of")
                        && words[..v].iter().skip(1).any(|w| PLACE_PREPS.contains(&w.as_str()))
                };
                if words.iter().position(|w| is_verb(w)).is_some_and(|v| !object_pair(v)) {
                    break;
                }
            }
            let idx = items.len() - 1;
            items[idx].1 = sep.start;
            seps.push(sep);
            let next_end = if sep.conj { hi } else { sep.end };
            items.push((sep.end, next_end));
            item_start = sep.end;
            if sep.conj {
                last_conj = true;
                break;
            }
        }
    }
    let n = items.len();
    if n < 2 || !last_conj {
        return None;
    }
    let at_sentence_start = text[lo..items[0].0].trim().is_empty();
    // a list opening a clause is its subject: "…, and the tank and bowl are clean"
    let before_list = text[lo..items[0].0].to_ascii_lowercase();
    let before_list = before_list.trim_end();
    let subject = at_sentence_start
        || [", and", ", but", ", while", ", whereas", ", so", ";"].iter().any(|c| before_list.ends_with(c))
        || before_list.ends_with(", and the")
        || before_list.ends_with(", while the");
    let conj_word = |s: &Sep| if text[s.start..s.end].to_ascii_lowercase().contains(" or ") { "or" } else { "and" };
    let last_sep = seps[n - 2];
    let conj = conj_word(&last_sep);
    if k == n - 1 {
        // the last item: its modifiers go with it; a verb after it belongs to the whole list
        let mut end = np_end;
        let next = next_word(text, np_end, hi).map(|w| word_at(text, w));
        match next.as_deref() {
            Some(w) if is_verb(w) && !subject => {
                // "… holding a cup and a dog is sitting nearby": a clause, not a list
                if !last_sep.conj || n != 2 {
                    return None;
                }
                return Some(Edit::delete((last_sep.start, chunk_end(text, np_end, hi))));
            }
            Some(w) if w.ends_with("ed") || w.ends_with("ing") || PLACE_PREPS.contains(&w) || CLAUSE_WORDS.contains(&w) => {
                end = chunk_end(text, np_end, hi);
            }
            _ => {}
        }
        if n == 2 {
            let mut e = Edit::delete((last_sep.start, end));
            // "both the cat and the books" minus the books: "the cat" ("both" may open the
            // first item's phrase or stand before it)
            let paired = |w: (usize, usize)| matches!(word_at(text, w).as_str(), "both" | "either");
            if let Some(b) = prev_word(text, lo, items[0].0).filter(|b| paired(*b)) {
                e = Edit { range: (b.0, end), new: text[items[0].0..last_sep.start].to_string(), capitalize: false };
            } else if let Some(b) = next_word(text, items[0].0, last_sep.start).filter(|b| b.0 == items[0].0 && paired(*b)) {
                let rest = text[b.1..last_sep.start].trim_start();
                e = Edit { range: (b.0, end), new: rest.to_string(), capitalize: false };
            }
            agree_after(text, lo, hi, items[0].0, &mut e, subject);
            return Some(e);
        }
        let new_last = seps[n - 3];
        let joiner = if n - 1 == 2 { format!(" {conj} ") } else { format!(", {conj} ") };
        let new = format!("{joiner}{}", &text[new_last.end..last_sep.start]);
        return Some(Edit { range: (new_last.start, end), new, capitalize: false });
    }
    if k == 0 {
        let first_sep = seps[0];
        let mut e = if n == 3 {
            // "A, B, and C" minus A: "B and C"
            let second = seps[1];
            Edit { range: (items[0].0, second.end), new: format!("{} {conj} ", &text[first_sep.end..second.start]), capitalize: false }
        } else {
            Edit::delete((items[0].0, first_sep.end))
        };
        // "the sink and mirror" minus the sink: "the mirror", the determiner shared by both
        if n == 2 {
            let shared = next_word(text, items[0].0, first_sep.start).filter(|w| w.0 == items[0].0).map(|w| word_at(text, w));
            // a second item with its own determiner, or no noun at all ("on the shelves and
            // throughout the room"), takes none
            let second_has_own = next_word(text, first_sep.end, hi).is_some_and(|w| {
                let w = word_at(text, w);
                DETERMINERS.contains(&w.as_str()) || PLACE_PREPS.contains(&w.as_str()) || w == "throughout"
            });
            if let Some(det) = shared.filter(|d| SHARED_DETERMINERS.contains(&d.as_str())).filter(|_| !second_has_own) {
                e.new = format!("{det} ");
            }
        }
        e.capitalize = at_sentence_start;
        if n == 2 {
            agree_after(text, lo, hi, first_sep.end, &mut e, subject);
        }
        return Some(e);
    }
    if n == 3 {
        // "A, B, and C" minus B: "A and C"
        return Some(Edit { range: (seps[0].start, seps[1].end), new: format!(" {conj} "), capitalize: false });
    }
    Some(Edit::delete((seps[k - 1].start, seps[k].start)))
}

/// Determiners one phrase can share between two coordinated nouns ("the sink and mirror"):
/// those that fit a singular and a plural noun alike ("a desk and chairs" must not leave "a chairs").
const SHARED_DETERMINERS: &[&str] = &["the", "his", "her", "their", "its", "our", "my", "your"];

/// Start of an item that follows a plain ", " separator ending before `end`, if there is one.
fn sep_before_item(text: &str, lo: usize, end: usize) -> Option<usize> {
    let c = text[lo..end].rfind(", ").map(|p| lo + p + 2)?;
    let item = &text[c..end];
    let starts_clean = item_starts(text, c, end);
    let words: Vec<String> = item.split_whitespace().map(lower).collect();
    (starts_clean && words.len() <= 6 && !words.iter().any(|w| is_boundary(w) && !DETERMINERS.contains(&w.as_str()))).then_some(c)
}

/// After a subject list shrinks to one singular item: "A man and a dog are" → "A man is".
fn agree_after(text: &str, lo: usize, hi: usize, remaining_start: usize, e: &mut Edit, subject: bool) {
    if !subject {
        return;
    }
    let Some(first) = next_word(text, remaining_start, hi) else { return };
    let singular = match word_at(text, first).as_str() {
        "a" | "an" | "one" | "another" => true,
        // "the tank", not "the tanks": the word before the verb decides
        "the" | "this" | "that" | "its" | "his" | "her" | "their" => {
            next_word(text, first.1, hi).is_some_and(|w| !word_at(text, w).ends_with('s') && !is_verb(&word_at(text, w)))
        }
        _ => false,
    };
    if !singular {
        return;
    }
    // the verb within a few words of the remaining item
    let mut pos = first.1;
    for _ in 0..5 {
        let Some(w) = next_word(text, pos, hi) else { return };
        let fixed = match word_at(text, w).as_str() {
            "are" => "is",
            "were" => "was",
            "have" => "has",
            _ => {
                pos = w.1;
                continue;
            }
        };
        if w.0 < e.range.1 || lo > w.0 {
            return;
        }
        // extend the edit to cover the verb
        let kept = &text[e.range.1..w.0];
        e.new = format!("{}{kept}{fixed}", e.new);
        e.range.1 = w.1;
        return;
    }
}

/// "… sitting in a suitcase on a bed" → "… sitting in a suitcase".
fn remove_prep_phrase(text: &str, lo: usize, hi: usize, start: usize, np_end: usize) -> Option<Edit> {
    let p = prev_word(text, lo, start)?;
    let prep = word_at(text, p);
    if !PLACE_PREPS.contains(&prep.as_str()) {
        return None;
    }
    let mut pp_start = p.0;
    match prep.as_str() {
        // "next to", "close to", "in front of", "on top of"; other "of"/"to" phrases belong to
        // a noun ("a slice of pizza")
        "to" | "of" => {
            let q = prev_word(text, lo, p.0)?;
            let w = word_at(text, q);
            match (prep.as_str(), w.as_str()) {
                ("to", "next" | "close") => pp_start = q.0,
                ("to", "addition") => pp_start = prev_word(text, lo, q.0).filter(|r| word_at(text, *r) == "in")?.0,
                ("of", "front" | "top" | "side" | "middle" | "edge" | "corner") => {
                    pp_start = np_start(text, lo, q.0);
                    let before = prev_word(text, lo, pp_start)?;
                    if !matches!(word_at(text, before).as_str(), "in" | "on" | "at" | "near" | "by" | "along") {
                        return None;
                    }
                    pp_start = before.0;
                }
                _ => return None,
            }
        }
        _ => {}
    }
    let after = next_word(text, np_end, hi);
    match after.map(|w| word_at(text, w)).as_deref() {
        // the phrase continues ("on a plate of food")
        Some("of") => return None,
        // "at tables and enjoying a meal" coordinates verbs and can lose the phrase; "on a
        // table and a chair" coordinates nouns and cannot
        Some("and" | "or") => {
            let then = after.and_then(|w| next_word(text, w.1, hi)).map(|w| word_at(text, w)).unwrap_or_default();
            if !(is_verb(&then) || then.ends_with("ing") || then.ends_with("ed")) {
                return None;
            }
        }
        _ => {}
    }
    // "with a banana in his hand", "with a cow standing in a field, tossing frisbees": what
    // follows the object of "with" describes it and goes too
    let mut end = np_end;
    if prep == "with" {
        end = chunk_end(text, np_end, hi);
        while text[end..].starts_with(", ") {
            match next_word(text, end + 2, hi) {
                Some(w) if word_at(text, w).ends_with("ing") => end = chunk_end(text, w.1, hi),
                _ => break,
            }
        }
    }
    match prev_word(text, lo, pp_start) {
        Some(b) => {
            let before = word_at(text, b);
            // "is on a bed", "filled with chairs": the phrase is the predicate
            if is_verb(&before) || before == "there" || (prep == "with" && before.ends_with("ed")) {
                return None;
            }
            // "holding onto a bag", "looking at the dog": the phrase is the verb's object
            let phrasal =
                ["hold", "look", "star", "gaz", "point", "reach", "wait", "search", "aim", "glanc"].iter().any(|v| before.starts_with(v));
            if phrasal && matches!(prep.as_str(), "at" | "onto" | "on" | "for" | "to") {
                return None;
            }
            // "is located on the desk", "can be seen on the table": the phrase is the predicate
            let participle = before.ends_with("ed") || matches!(before.as_str(), "seen" | "found" | "shown" | "set" | "kept" | "laid");
            let another_place = next_word(text, end, hi).is_some_and(|w| PLACE_PREPS.contains(&word_at(text, w).as_str()));
            if participle && !another_place && prev_word(text, lo, b.0).is_some_and(|v| is_verb(&word_at(text, v))) {
                return None;
            }
            Some(Edit::delete((pp_start, end)))
        }
        None => {
            let head = text[lo..pp_start].trim_end();
            if head.is_empty() {
                // the sentence opens with it: "Next to the bed, a lamp …"
                let rest = &text[end..hi];
                if rest.starts_with(", ") {
                    return Some(Edit { range: (pp_start, end + 2), new: String::new(), capitalize: true });
                }
                return None;
            }
            // after a comma: ", with a cup" → the comma goes too
            if head.ends_with(',') && matches!(text[end..].chars().next(), Some(',' | '.' | '!' | '?') | None) {
                return Some(Edit::delete((lo + head.len() - 1, end)));
            }
            None
        }
    }
}

/// "A bottle is on the left, while a cup is on the right" → "A cup is on the right": of two
/// joined clauses, the one about the absent object goes when the other stands on its own.
fn remove_first_clause(text: &str, lo: usize, hi: usize, np_end: usize) -> Option<Edit> {
    let rest = text[np_end..hi].to_ascii_lowercase();
    let (at, len) = [", while ", ", and ", ", but ", ", whereas ", "; "].iter().filter_map(|c| rest.find(c).map(|p| (p, c.len()))).min()?;
    let from = np_end + at + len;
    let first = next_word(text, from, hi).map(|w| word_at(text, w))?;
    let opens = matches!(first.as_str(), "a" | "an" | "the" | "two" | "three" | "several" | "multiple" | "various" | "many" | "another");
    let clause_end = chunk_end(text, from, hi);
    let has_verb = text[from..clause_end].split_whitespace().any(|w| is_verb(&lower(w.trim_matches(|c: char| !is_word_char(c)))));
    (opens && has_verb).then_some(Edit { range: (lo, from), new: String::new(), capitalize: true })
}

/// "a man eating a donut at a table" → "a man at a table": a participle and its object that
/// modify a noun (not "is eating", which is the predicate).
fn remove_participle(text: &str, lo: usize, hi: usize, start: usize, np_end: usize) -> Option<Edit> {
    let p = prev_word(text, lo, start)?;
    let verb = word_at(text, p);
    if !(verb.ends_with("ing") && verb.len() > 4) {
        return None;
    }
    let noun = prev_word(text, lo, p.0)?;
    let before = word_at(text, noun);
    if is_boundary(&before) || DETERMINERS.contains(&before.as_str()) || before.ends_with("ed") {
        return None;
    }
    if matches!(next_word(text, np_end, hi).map(|w| word_at(text, w)).as_deref(), Some("of" | "and" | "or")) {
        return None;
    }
    Some(Edit::delete((noun.1, np_end)))
}

/// "…, with a fork placed next to it", "… and there is a sink in the corner": the clause goes.
fn remove_clause(text: &str, lo: usize, hi: usize, start: usize) -> Option<Edit> {
    let cs = chunk_start(text, lo, start);
    let ce = chunk_end(text, start, hi);
    let lower_chunk = text[cs..start].to_ascii_lowercase();
    // a conjunction inside the chunk that opens a clause holding the mention
    for opener in [" and there ", " while ", " where ", " and a ", " and an ", " and the ", " and two ", " and several ", " with "] {
        if let Some(p) = lower_chunk.rfind(opener) {
            let from = cs + p;
            let clause = text[from..ce].to_ascii_lowercase();
            let has_verb = clause.split_whitespace().any(|w| is_verb(w.trim_matches(|c: char| !is_word_char(c))));
            if opener.starts_with(" and there") || opener == " while " || opener == " where " || has_verb {
                if text[lo..from].trim().is_empty() {
                    return None;
                }
                return Some(Edit::delete((from, ce)));
            }
        }
    }
    if cs == lo {
        return None;
    }
    let first = next_word(text, cs, hi).map(|w| word_at(text, w))?;
    let opens_clause = matches!(
        first.as_str(),
        "with"
            | "and"
            | "while"
            | "where"
            | "which"
            | "including"
            | "possibly"
            | "likely"
            | "probably"
            | "perhaps"
            | "as"
            | "or"
            | "but"
            | "plus"
            | "along"
            | "such"
            | "ready"
            | "especially"
            | "particularly"
            | "like"
    ) || (first.ends_with("ing") && first.len() > 4);
    if !opens_clause {
        return None;
    }
    // the chunk is cut short by a list that goes on after it: not a clause boundary
    if ce < hi && text[ce..].starts_with(", ") && item_starts(text, ce + 2, hi) {
        return None;
    }
    // from the comma before the chunk to its end
    let comma = cs - 1;
    Some(Edit::delete((comma, ce)))
}

// ---- counts ----

/// "three white balls" → "a white ball" (or "two"), the noun and a following verb agreeing.
fn fix_count(vocab: &Vocabulary, text: &str, sentence: (usize, usize), h: &Hallucination) -> Option<Edit> {
    let end = h.span.1 as usize;
    let noun_start = h.span.0 as usize;
    let mut start = end.checked_sub(h.evidence.len())?;
    if start >= noun_start || !text.is_char_boundary(start) {
        return None;
    }
    let num_end = text[start..noun_start].find(|c: char| !c.is_alphanumeric()).map(|p| start + p)?;
    let number = &text[start..num_end];
    let between = &text[num_end..noun_start];
    let noun = &text[noun_start..end];
    let noun_lower = lower(noun);
    let entry = vocab.phrase(&noun_lower)?;
    let concept = vocab.concept(entry.concept?);
    let lo = sentence.0;
    let hi = content_end(text, sentence);
    // present, how many unknown: the number goes, the claim of several stays ("some balls")
    let Some(truth) = h.true_count else {
        if !entry.plural {
            return None;
        }
        let some = if number.chars().next().is_some_and(char::is_uppercase) { "Some" } else { "some" };
        return Some(Edit { range: (start, num_end), new: some.to_string(), capitalize: false });
    };
    // "a single dog": the article goes with the number
    if lower(number) == "single" {
        if let Some(a) = prev_word(text, lo, start).filter(|a| matches!(word_at(text, *a).as_str(), "a" | "an")) {
            start = a.0;
        }
    }
    let (new_number, new_noun) = if truth == 1 {
        let singular = match concept.plurals.iter().position(|p| *p == noun_lower) {
            Some(i) => concept.synonyms[i].clone(),
            None => noun_lower.clone(),
        };
        let next = format!("{}{}", between.trim_start(), singular);
        let article = if next.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']) { "an" } else { "a" };
        (article.to_string(), singular)
    } else {
        let plural = match concept.synonyms.iter().position(|s| *s == noun_lower) {
            Some(i) => concept.plurals[i].clone(),
            None => noun_lower.clone(),
        };
        (number_words(truth), plural)
    };
    let new_number = if number.chars().next().is_some_and(char::is_uppercase) { capitalize(&new_number) } else { new_number };
    let new_noun = if noun.chars().next().is_some_and(char::is_uppercase) { capitalize(&new_noun) } else { new_noun };
    let mut range = (start, end);
    let mut new = format!("{new_number}{between}{new_noun}");
    let agree = |w: &str| -> Option<&'static str> {
        match (truth == 1, w) {
            (true, "are") => Some("is"),
            (true, "were") => Some("was"),
            (false, "is") => Some("are"),
            (false, "was") => Some("were"),
            _ => None,
        }
    };
    // "There are three balls" / "three balls are": the verb next to the phrase
    if let Some(v) = next_word(text, end, hi) {
        if let Some(fixed) = agree(&word_at(text, v)) {
            new = format!("{new}{}{fixed}", &text[end..v.0]);
            range.1 = v.1;
        }
    }
    if let Some(v) = prev_word(text, lo, start) {
        if let Some(fixed) = agree(&word_at(text, v)) {
            let fixed = if text[v.0..].starts_with(char::is_uppercase) { capitalize(fixed) } else { fixed.to_string() };
            new = format!("{fixed}{}{new}", &text[v.1..start]);
            range.0 = v.0;
        }
    }
    Some(Edit { range, new, capitalize: false })
}

/// Byte ranges of sentences, each including the whitespace after it.
fn sentence_ranges(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let end_mark = matches!(b[i], b'.' | b'!' | b'?') && (i + 1 == b.len() || b[i + 1].is_ascii_whitespace());
        let para = b[i] == b'\n';
        if end_mark || para {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            out.push((start, j));
            start = j;
            i = j;
            continue;
        }
        i += 1;
    }
    if start < b.len() {
        out.push((start, b.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::truth::{ImageTruth, ObjectTruth};
    use crate::vocab::Vocabulary;
    use std::sync::Arc;

    fn corpus() -> (Extractor, Vec<DiagnosisRecord>) {
        let e = Extractor::new(Arc::new(Vocabulary::coco80()));
        let mut s = ExtractScratch::default();
        let obj = |n: &str, c: u32, color: Option<&str>| ObjectTruth {
            name: n.into(),
            count: Some(c),
            attributes: color.map(|c| [("color".to_string(), vec![c.to_string()])].into_iter().collect()).unwrap_or_default(),
        };
        let cases = [
            (
                vec![obj("dining table", 1, Some("brown")), obj("pizza", 1, None)],
                "A pizza sits on a blue table. A fork lies next to it. Three cups stand nearby.",
            ),
            (vec![obj("dog", 2, Some("black")), obj("frisbee", 1, Some("red"))], "Three dogs chase a red frisbee. A man throws it."),
        ];
        let out = cases
            .into_iter()
            .enumerate()
            .map(|(i, (truth, text))| {
                let t = ImageTruth { image: format!("img{i}"), file: None, objects: truth };
                diagnose(&e, &mut s, &t, "Describe the image in detail.", text)
            })
            .collect();
        (e, out)
    }

    #[test]
    fn correction_fixes_counts_and_attributes_and_drops_absent_objects() {
        let (e, diags) = corpus();
        let fixed = correct_description(&e, &mut ExtractScratch::default(), &diags[1]).unwrap();
        assert_eq!(fixed, "Two dogs chase a red frisbee.");
        let fixed = correct_description(&e, &mut ExtractScratch::default(), &diags[0]).unwrap();
        assert_eq!(fixed, "A pizza sits on a brown table.");
    }

    /// Corrects `text` against `truth` (name, count) with the coco80 vocabulary.
    fn fix(truth: &[(&str, u32)], text: &str) -> Option<String> {
        let e = Extractor::new(Arc::new(Vocabulary::coco80()));
        let mut s = ExtractScratch::default();
        let objects = truth.iter().map(|(n, c)| ObjectTruth { name: n.to_string(), count: Some(*c), attributes: Default::default() });
        let t = ImageTruth { image: "i".into(), file: None, objects: objects.collect() };
        let d = diagnose(&e, &mut s, &t, "Describe the image.", text);
        let out = correct_description(&e, &mut s, &d);
        if let Some(o) = &out {
            assert!(diagnose(&e, &mut s, &t, "p", o).hallucinations.is_empty(), "not clean: {o:?}");
        }
        out
    }

    #[test]
    fn a_noun_pair_after_a_preposition_is_one_list_whatever_verb_follows() {
        let text = "The presence of cars and a pedestrian in this setting suggests a busy street.";
        assert_eq!(fix(&[("person", 1)], text).unwrap(), "The presence of a pedestrian in this setting suggests a busy street.");
        // a verb right after the second noun: a clause of its own
        let text = "One kite has the shape of a bird and the other is plain. A person flies it.";
        let out = fix(&[("kite", 2), ("person", 1)], text).unwrap();
        assert!(!out.contains("shape of the other"), "{out}");
        // with a comma, what follows "and" is a clause of its own
        let text = "A cat sleeps near the chair, and a few bottles are scattered on the floor.";
        assert_eq!(fix(&[("cat", 1), ("chair", 1)], text).unwrap(), "A cat sleeps near the chair.");
    }

    #[test]
    fn a_pair_keeps_its_shared_determiner_and_loses_its_both() {
        assert_eq!(fix(&[("toilet", 1)], "A towel hangs above the sink and toilet.").unwrap(), "A towel hangs above the toilet.");
        assert_eq!(fix(&[("chair", 1)], "The room has a desk and chairs.").unwrap(), "The room has chairs.");
        assert_eq!(
            fix(&[("dog", 1)], "The scene is lively with both the dog and the person.").unwrap(),
            "The scene is lively with the dog."
        );
        assert_eq!(
            fix(&[("person", 1)], "The scene is lively with both the dog and the person.").unwrap(),
            "The scene is lively with the person."
        );
        // a second noun with its own determiner keeps it
        assert_eq!(fix(&[("toilet", 1)], "The bathroom has the sink and a toilet.").unwrap(), "The bathroom has a toilet.");
    }

    #[test]
    fn absent_objects_go_with_their_list_item() {
        let t = [("person", 1), ("cat", 1), ("couch", 1)];
        assert_eq!(fix(&t, "A man, a dog, and a cat sit on a couch.").unwrap(), "A man and a cat sit on a couch.");
        let t = [("person", 1), ("dog", 1), ("couch", 1)];
        assert_eq!(fix(&t, "A man, a dog, and a cat sit on a couch.").unwrap(), "A man and a dog sit on a couch.");
        let t = [("dog", 1), ("cat", 1), ("couch", 1)];
        assert_eq!(fix(&t, "A man, a dog, and a cat sit on a couch.").unwrap(), "A dog and a cat sit on a couch.");
        let t = [("couch", 1), ("tv", 1), ("person", 1)];
        assert_eq!(
            fix(&t, "The room has a couch, a table, a TV, and a lamp. A man sits there.").unwrap(),
            "The room has a couch, a TV, and a lamp. A man sits there."
        );
        assert_eq!(fix(&[("toilet", 1)], "The bathroom has a toilet and a sink.").unwrap(), "The bathroom has a toilet.");
        assert_eq!(fix(&[("sink", 1)], "The bathroom has a toilet and a sink.").unwrap(), "The bathroom has a sink.");
        assert_eq!(fix(&[("cat", 1)], "A dog and a cat are on the grass.").unwrap(), "A cat is on the grass.");
        let t = [("toilet", 1)];
        assert_eq!(
            fix(&t, "The toilet is white, and the tank and bowl are clean.").unwrap(),
            "The toilet is white, and the tank is clean."
        );
        // the list belongs to "filled with", not to the bowl
        let t = [("banana", 1), ("person", 1)];
        assert_eq!(
            fix(&t, "A man stands. He holds a bowl filled with bananas, kiwis, and grapes.").unwrap(),
            "A man stands. There are bananas."
        );
    }

    #[test]
    fn absent_objects_go_with_their_phrase_or_clause() {
        let t = [("person", 1), ("pizza", 1)];
        assert_eq!(fix(&t, "A man eats a pizza, with a cup on the table.").unwrap(), "A man eats a pizza.");
        let t = [("cat", 1), ("suitcase", 1)];
        assert_eq!(
            fix(&t, "A cat sleeps inside an open suitcase on a bed. It looks calm.").unwrap(),
            "A cat sleeps inside an open suitcase. It looks calm."
        );
        let t = [("person", 1), ("cup", 1)];
        assert_eq!(fix(&t, "The man is holding a cup and a dog is sitting nearby.").unwrap(), "The man is holding a cup.");
        let t = [("sink", 1)];
        assert_eq!(fix(&t, "The sink is white and there is a spoon next to it.").unwrap(), "The sink is white.");
    }

    #[test]
    fn whole_sentences_go_only_when_the_object_is_their_subject_and_connectives_follow() {
        let t = [("person", 1)];
        assert_eq!(fix(&t, "A man stands. A dog sits next to him. Also, the man smiles.").unwrap(), "A man stands. The man smiles.");
        assert_eq!(fix(&t, "A man stands.\n\nA dog sits.\n\nAdditionally, the sky is blue.").unwrap(), "A man stands.\n\nThe sky is blue.");
        assert_eq!(fix(&[("dog", 1)], "A cat sleeps."), None);
    }

    #[test]
    fn a_sentence_about_an_absent_object_keeps_the_present_ones_it_names() {
        // the absent object heads the subject: what else the sentence names is stated plainly
        assert_eq!(fix(&[("toilet", 1)], "A handbag is placed on the floor near the toilet.").unwrap(), "There is a toilet.");
        let t = [("sink", 1), ("toilet", 1)];
        assert_eq!(
            fix(&t, "The bathroom has a sink.\n\nA handbag is placed on the floor near the toilet. The sink is white.").unwrap(),
            "The bathroom has a sink.\n\nThere is a toilet. The sink is white."
        );
        // two present objects, the verb agreeing with the first; numbers stay
        let t = [("person", 2), ("bench", 1)];
        assert_eq!(fix(&t, "A dog sits on the bench next to the two men.").unwrap(), "There is a bench and two men.");
        assert_eq!(fix(&[("person", 3)], "A dog is watching the people.").unwrap(), "There are people.");
        // words that point back or pick one out of several go with "the"
        assert_eq!(fix(&[("chair", 2)], "A cat sleeps on the left chair.").unwrap(), "There is a chair.");
        assert_eq!(fix(&[("chair", 2)], "A cat sleeps on the other chair.").unwrap(), "There is a chair.");
        // no article for a mass noun, "an" by sound
        assert_eq!(fix(&[("broccoli", 1)], "A fork lies beside the broccoli.").unwrap(), "There is broccoli.");
        assert_eq!(fix(&[("umbrella", 1)], "A dog sits under the old umbrella.").unwrap(), "There is an old umbrella.");
        // "a group of people" is one group
        assert_eq!(fix(&[("person", 4)], "A dog runs toward a group of people.").unwrap(), "There is a group of people.");
        // a part of a compound noun is not the object
        assert_eq!(fix(&[("train", 1)], "A dog sleeps in the train station."), None);
        // nothing present named: the sentence goes
        assert_eq!(fix(&[("person", 1)], "A man stands. A dog sleeps on a rug."), Some("A man stands.".to_string()));
    }

    #[test]
    fn the_object_of_a_phrasal_verb_is_not_a_place() {
        // "holding onto a handbag" cannot lose its object: the sentence is restated instead
        let t = [("toilet", 1), ("person", 1)];
        assert_eq!(
            fix(&t, "The man is holding onto a handbag, which can be seen near the toilet.").unwrap(),
            "There is a man and a toilet."
        );
        assert_eq!(fix(&[("person", 1)], "The man is standing on a skateboard.").unwrap(), "The man is standing.");
    }

    #[test]
    fn an_existential_keeps_its_noun_phrase() {
        let t = [("person", 2)];
        let out = fix(&t, "Two men play. There are several chairs scattered around, possibly for spectators or other players.").unwrap();
        assert!(!out.contains("There are possibly"), "{out:?}");
    }

    #[test]
    fn counts_are_fixed_in_place_singular_and_plural() {
        let t = [("sports ball", 1), ("person", 2), ("baseball bat", 1)];
        assert_eq!(
            fix(&t, "There are three white balls, two men, and a baseball bat.").unwrap(),
            "There is a white ball, two men, and a baseball bat."
        );
        assert_eq!(fix(&[("dog", 1)], "Two dogs are playing.").unwrap(), "A dog is playing.");
        assert_eq!(fix(&[("dog", 3)], "One dog is playing.").unwrap(), "Three dogs are playing.");
        assert_eq!(fix(&[("apple", 1)], "I see two apples.").unwrap(), "I see an apple.");
    }

    #[test]
    fn a_count_the_truth_does_not_know_loses_its_number() {
        let v = Vocabulary::coco80();
        let text = "Three white balls lie on the grass.";
        let h = Hallucination {
            kind: HallucinationKind::Count,
            concept: "sports ball".into(),
            span: (12, 17),
            evidence: "Three white balls".into(),
            claimed_count: Some(3),
            true_count: None,
            family: None,
            claimed: None,
            known: Vec::new(),
        };
        let e = fix_count(&v, text, (0, text.len()), &h).unwrap();
        let mut out = text.to_string();
        out.replace_range(e.range.0..e.range.1, &e.new);
        assert_eq!(out, "Some white balls lie on the grass.");
    }

    #[test]
    fn sentences_split_with_trailing_space() {
        let r = sentence_ranges("A dog. A cat!\n\nEnd");
        assert_eq!(r, vec![(0, 7), (7, 15), (15, 18)]);
    }
}
