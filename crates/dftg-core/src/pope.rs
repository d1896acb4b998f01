//! POPE (Li et al., 2023): yes/no object-existence probes and their metrics, defined exactly as
//! the benchmark's own evaluation script defines them, so numbers compare with published ones.

use serde::{Deserialize, Serialize};

/// A yes/no answer read the way POPE's evaluation reads it: only the first sentence counts
/// (text before the first '.'), commas are dropped, and the answer is "no" when one of the
/// space-separated words is exactly `No`, `no` or `not`; anything else, an empty reply
/// included, is "yes".
pub fn parse_answer(text: &str) -> bool {
    let first = text.split('.').next().unwrap_or("");
    let first = first.replace(',', "");
    !first.split(' ').any(|w| w == "No" || w == "no" || w == "not")
}

/// Confusion counts with "yes" as the positive class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

impl Confusion {
    pub fn add(&mut self, label_yes: bool, answer_yes: bool) {
        match (label_yes, answer_yes) {
            (true, true) => self.tp += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
            (true, false) => self.fn_ += 1,
        }
    }

    pub fn questions(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// POPE's metrics; a ratio whose denominator is zero is 0 (the script would divide by zero).
    pub fn metrics(&self) -> PopeMetrics {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(self.tp, self.tp + self.fp);
        let recall = ratio(self.tp, self.tp + self.fn_);
        let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        PopeMetrics {
            accuracy: ratio(self.tp + self.tn, self.questions()),
            precision,
            recall,
            f1,
            yes_ratio: ratio(self.tp + self.fp, self.questions()),
            questions: self.questions(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PopeMetrics {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub yes_ratio: f64,
    pub questions: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_popes_script_reads_them() {
        for (text, yes) in [
            ("Yes, there is a dog in the image.", true),
            ("No, there is no dog.", false),
            ("There is not a dog in the image.", false),
            ("no", false),
            ("No.", false),
            ("NO", true),          // only No / no / not count
            ("Nope", true),
            ("", true),            // an empty reply is a yes
            ("Yes. But no cat.", true), // only the first sentence counts
            ("No,there is", true), // the comma is dropped, leaving the word "Nothere"
            ("I cannot see one", true),
        ] {
            assert_eq!(parse_answer(text), yes, "{text:?}");
        }
    }

    #[test]
    fn metrics_match_a_hand_computed_case() {
        // labels: 6 yes, 4 no; answers: 5 of the yes right, 1 wrong; 3 of the no right, 1 wrong
        let mut c = Confusion::default();
        for (label, answer) in [(true, true); 5].into_iter().chain([(true, false)]).chain([(false, false); 3]).chain([(false, true)]) {
            c.add(label, answer);
        }
        let m = c.metrics();
        assert_eq!((c.tp, c.fp, c.tn, c.fn_), (5, 1, 3, 1));
        assert!((m.accuracy - 0.8).abs() < 1e-12);
        assert!((m.precision - 5.0 / 6.0).abs() < 1e-12);
        assert!((m.recall - 5.0 / 6.0).abs() < 1e-12);
        assert!((m.f1 - 5.0 / 6.0).abs() < 1e-12);
        assert!((m.yes_ratio - 0.6).abs() < 1e-12);
        assert_eq!(m.questions, 10);
    }
}
