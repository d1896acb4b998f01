//! Returned labels → requested labels. Grounding DINO answers with the phrase it grounded
//! ("a red car", "dogs"), other detectors echo the candidate; either way dftg needs the label it
//! asked about, or nothing.

use dftg_core::vocab::pluralize_word;

/// The requested labels of one request, prepared for matching.
pub(crate) struct Snapper<'a> {
    requested: &'a [String],
    /// Per requested label: normalized singular and plural forms.
    forms: Vec<(String, String)>,
}

impl<'a> Snapper<'a> {
    pub(crate) fn new(requested: &'a [String]) -> Self {
        let forms = requested
            .iter()
            .map(|label| {
                let norm = normalize(label);
                let plural = plural_of(&norm);
                (norm, plural)
            })
            .collect();
        Snapper { requested, forms }
    }

    /// The index of the requested label `returned` names: the same string, the same up to
    /// case, whitespace and punctuation, its plural or singular (regular English forms), or a
    /// phrase containing it as whole words (the longest such label wins, then the first
    /// requested). `None` when it names none of them.
    pub(crate) fn snap(&self, returned: &str) -> Option<usize> {
        if let Some(i) = self.requested.iter().position(|r| r == returned) {
            return Some(i);
        }
        let norm = normalize(returned);
        if norm.is_empty() {
            return None;
        }
        let as_plural = plural_of(&norm);
        if let Some(i) = self.forms.iter().position(|(s, p)| *s == norm || *p == norm || *s == as_plural) {
            return Some(i);
        }
        let padded = format!(" {norm} ");
        let mut best: Option<(usize, usize)> = None;
        for (i, (s, p)) in self.forms.iter().enumerate() {
            if s.is_empty() {
                continue;
            }
            let hit = [s, p].into_iter().any(|form| padded.contains(&format!(" {form} ")));
            if hit && best.is_none_or(|(_, len)| s.len() > len) {
                best = Some((i, s.len()));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Lowercase words of letters, digits, `-` and `'`, single-spaced.
fn normalize(label: &str) -> String {
    let cleaned: String =
        label.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '\'' { c.to_ascii_lowercase() } else { ' ' }).collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The plural of a normalized label: its last word pluralized ("wine glass" → "wine glasses").
fn plural_of(norm: &str) -> String {
    let irregular = ahash::AHashMap::new();
    match norm.rsplit_once(' ') {
        Some((head, last)) => format!("{head} {}", pluralize_word(last, &irregular)),
        None if norm.is_empty() => String::new(),
        None => pluralize_word(norm, &irregular),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn snapping_cases() {
        let req = labels(&["dog", "wine glass", "glass", "bus", "Traffic Light", "person"]);
        let s = Snapper::new(&req);
        let snapped = |r: &str| s.snap(r).map(|i| req[i].as_str());
        assert_eq!(snapped("dog"), Some("dog"));
        assert_eq!(snapped("DOG"), Some("dog"));
        assert_eq!(snapped(" dog. "), Some("dog"));
        assert_eq!(snapped("dogs"), Some("dog"));
        assert_eq!(snapped("buses"), Some("bus"));
        assert_eq!(snapped("traffic lights"), Some("Traffic Light"));
        assert_eq!(snapped("wine glasses"), Some("wine glass"));
        // phrases: the requested label as whole words, the longest one winning
        assert_eq!(snapped("a brown dog"), Some("dog"));
        assert_eq!(snapped("two wine glasses on a table"), Some("wine glass"));
        assert_eq!(snapped("a glass"), Some("glass"));
        // not a whole-word match, nothing requested, or nothing at all
        assert_eq!(snapped("hotdog"), None);
        assert_eq!(snapped("cat"), None);
        assert_eq!(snapped(""), None);
        assert_eq!(snapped(" . "), None);
        // irregular plurals are not guessed
        assert_eq!(snapped("people"), None);
    }

    #[test]
    fn a_requested_plural_takes_a_singular_answer() {
        let req = labels(&["cups"]);
        assert_eq!(Snapper::new(&req).snap("cup"), Some(0));
    }

    #[test]
    fn exact_matches_win_over_normalized_ones() {
        let req = labels(&["Dog", "dog"]);
        assert_eq!(Snapper::new(&req).snap("dog"), Some(1));
        assert_eq!(Snapper::new(&req).snap("DOG"), Some(0));
    }
}
