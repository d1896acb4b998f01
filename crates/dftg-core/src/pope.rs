//! POPE (Li et al., 2023): yes/no object-existence probes and their metrics, defined exactly as
//! the benchmark's own evaluation script defines them, so numbers compare with published ones.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// POPE's question template; `{}` is the object name.
pub const QUESTION_TEMPLATE: &str = "Is there a {} in the image?";

/// One line of a POPE question file: `{"question_id", "image", "text", "label"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopeQuestion {
    pub question_id: u64,
    /// The image's file name (COCO's `file_name` in the official files) or its key.
    pub image: String,
    pub text: String,
    /// `yes` when the object is in the image, `no` otherwise.
    pub label: String,
}

/// POPE's question text for an object: "an" before a vowel letter, "a" otherwise (so "a
/// skis", exactly as the official files have it).
pub fn question_text(object: &str) -> String {
    let article = if object.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("Is there {article} {object} in the image?")
}

/// `yes` → true, `no` → false (case and surrounding space ignored); anything else is refused
/// rather than read as POPE's script would (as "yes"): a typo must not become a label.
pub fn parse_label(label: &str) -> Option<bool> {
    match label.trim().to_ascii_lowercase().as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// One line of a question file; `line_no` (1-based) names it in errors, which never quote it.
pub fn parse_question_line(line: &str, line_no: usize) -> Result<PopeQuestion, CoreError> {
    let field = || format!("question line {line_no}");
    let q: PopeQuestion = serde_json::from_str(line).map_err(|e| {
        CoreError::invalid(field(), format!("expected {{\"question_id\", \"image\", \"text\", \"label\"}}: {}", json_problem(&e)))
    })?;
    if parse_label(&q.label).is_none() {
        return Err(CoreError::invalid(field(), "label must be \"yes\" or \"no\""));
    }
    if q.image.trim().is_empty() || q.text.trim().is_empty() {
        return Err(CoreError::invalid(field(), "image and text must not be empty"));
    }
    Ok(q)
}

/// What is wrong with a JSON line, without quoting it (serde's messages can quote values).
pub fn json_problem(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Eof => "truncated JSON",
        serde_json::error::Category::Data => "a field is missing or has the wrong type",
        serde_json::error::Category::Io => "unreadable",
    }
}

/// Scores answers: each item is (label is yes, the model's raw answer); `None` answers (the
/// question failed) are not scored. Returns the confusion counts and the unscored count.
pub fn score<'a>(items: impl IntoIterator<Item = (bool, Option<&'a str>)>) -> (Confusion, u64) {
    let mut c = Confusion::default();
    let mut unscored = 0;
    for (label, answer) in items {
        match answer {
            Some(a) => c.add(label, parse_answer(a)),
            None => unscored += 1,
        }
    }
    (c, unscored)
}

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
            ("NO", true), // only No / no / not count
            ("Nope", true),
            ("", true),                 // an empty reply is a yes
            ("Yes. But no cat.", true), // only the first sentence counts
            ("No,there is", true),      // the comma is dropped, leaving the word "Nothere"
            ("I cannot see one", true),
        ] {
            assert_eq!(parse_answer(text), yes, "{text:?}");
        }
    }

    #[test]
    fn question_lines_parse_as_popes_files_have_them_and_errors_do_not_quote() {
        let q = parse_question_line(
            r#"{"question_id": 2, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a backpack in the image?", "label": "no"}"#,
            2,
        )
        .unwrap();
        assert_eq!((q.question_id, q.label.as_str()), (2, "no"));
        assert_eq!(question_text("umbrella"), "Is there an umbrella in the image?");
        assert_eq!(question_text("skis"), "Is there a skis in the image?");
        for (line, want) in [
            (r#"{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "maybe-SECRET"}"#, "label"),
            (r#"{"question_id": "SECRET", "image": "a.jpg", "text": "t", "label": "yes"}"#, "wrong type"),
            ("SECRET", "not valid JSON"),
            (r#"{"question_id": 1, "image": "", "text": "t", "label": "yes"}"#, "must not be empty"),
        ] {
            let err = parse_question_line(line, 7).unwrap_err().to_string();
            assert!(err.contains("question line 7") && err.contains(want) && !err.contains("SECRET"), "{err}");
        }
    }

    #[test]
    fn scoring_skips_failed_questions() {
        let (c, unscored) = score([(true, Some("Yes")), (false, Some("No, none.")), (false, None), (true, Some("There is not"))]);
        assert_eq!((c.tp, c.fp, c.tn, c.fn_, unscored), (1, 0, 1, 1, 1));
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
