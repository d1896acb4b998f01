//! The model's own description, corrected: wrong counts and attributes fixed in place, claims
//! of absent objects removed, the rest kept verbatim. Re-diagnosed until clean.

use std::collections::BTreeSet;

use crate::check::diagnose;
use crate::extract::{ExtractScratch, Extractor};
use crate::record::{DiagnosisRecord, HallucinationKind};

/// The model's description with hallucinated claims removed and the rest kept verbatim:
/// wrong counts and attributes are replaced by the truth, sentences asserting an absent object
/// are dropped. Returns `None` when nothing clean remains.
pub fn correct_description(extractor: &Extractor, scratch: &mut ExtractScratch, d: &DiagnosisRecord) -> Option<String> {
    let truth = crate::truth::ImageTruth { image: d.image.clone(), file: d.file.clone(), objects: d.truth.clone() };
    let mut text = d.response.clone();
    let mut current = d.clone();
    for round in 0..4 {
        if current.hallucinations.is_empty() {
            let t = text.trim();
            return (!t.is_empty() && !current.mentions.is_empty()).then(|| t.to_string());
        }
        let sentences = sentence_ranges(&text);
        let mut drop: BTreeSet<usize> = BTreeSet::new();
        let mut replace: Vec<((usize, usize), String)> = Vec::new();
        let sentence_of = |pos: usize| sentences.iter().position(|(s, e)| pos >= *s && pos < *e);
        for h in &current.hallucinations {
            match h.kind {
                HallucinationKind::Object => {
                    for m in current.mentions.iter().filter(|m| m.concept == h.concept) {
                        if let Some(i) = sentence_of(m.span.0 as usize) {
                            drop.insert(i);
                        }
                    }
                }
                HallucinationKind::Count if round == 0 && h.true_count.unwrap_or(0) > 1 => {
                    let start = h.span.1 as usize - h.evidence.len();
                    let word_end = text[start..].find(|c: char| !c.is_alphanumeric()).map(|p| start + p).unwrap_or(start);
                    let original = &text[start..word_end];
                    let mut new = number_words(h.true_count.unwrap_or(0));
                    if original.chars().next().is_some_and(|c| c.is_uppercase()) {
                        new = capitalize(&new);
                    }
                    replace.push(((start, word_end), new));
                }
                HallucinationKind::Attribute if round == 0 && !h.known.is_empty() => {
                    replace.push(((h.span.0 as usize, h.span.1 as usize), h.known[0].clone()));
                }
                _ => {
                    if let Some(i) = sentence_of(h.span.0 as usize) {
                        drop.insert(i);
                    }
                }
            }
        }
        let mut edits: Vec<((usize, usize), String)> =
            replace.into_iter().filter(|((s, _), _)| sentence_of(*s).is_none_or(|i| !drop.contains(&i))).collect();
        for i in &drop {
            edits.push((sentences[*i], String::new()));
        }
        edits.sort_by_key(|e| std::cmp::Reverse(e.0 .0));
        for ((s, e), new) in edits {
            text.replace_range(s..e, &new);
        }
        current = diagnose(extractor, scratch, &truth, &d.prompt, &text);
    }
    None
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

pub fn number_words(n: u32) -> String {
    const W: [&str; 21] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    W.get(n as usize).map(|s| s.to_string()).unwrap_or_else(|| n.to_string())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
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

    #[test]
    fn sentences_split_with_trailing_space() {
        let r = sentence_ranges("A dog. A cat!\n\nEnd");
        assert_eq!(r, vec![(0, 7), (7, 15), (15, 18)]);
    }
}
