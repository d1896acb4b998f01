//! English for generated text, one copy for every writer (the templates, the correction, the
//! simulator): number words, articles, capitals, plurals of names the vocabulary does not list.
//! (The vocabulary's own plurals come from its file; see `vocab::pluralize_word`.)

/// "zero" … "twenty"; larger numbers are written in digits.
pub const NUMBER_WORDS: [&str; 21] = [
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

/// Words that state a count without being a number word ("a single dog", "both cats").
pub const COUNT_WORDS: [(&str, u32); 3] = [("single", 1), ("both", 2), ("dozen", 12)];

/// The count a word states: "one" … "twenty", [`COUNT_WORDS`], or up to four digits.
pub fn number_value(word: &str) -> Option<u32> {
    if let Some(n) = NUMBER_WORDS.iter().skip(1).position(|w| *w == word) {
        return Some(n as u32 + 1);
    }
    if let Some((_, n)) = COUNT_WORDS.iter().find(|(w, _)| *w == word) {
        return Some(*n);
    }
    if !word.is_empty() && word.len() <= 4 && word.bytes().all(|b| b.is_ascii_digit()) {
        return word.parse().ok();
    }
    None
}

/// `n` as a word up to twenty, in digits above.
pub fn number_words(n: u32) -> String {
    NUMBER_WORDS.get(n as usize).map(|s| s.to_string()).unwrap_or_else(|| n.to_string())
}

/// "a" or "an" before `phrase`, by its sound ("an hour", "a unicycle").
pub fn article(phrase: &str) -> &'static str {
    let l = phrase.to_ascii_lowercase();
    let consonant_sound = ["one", "uni", "use", "usu", "eu", "ewe", "ur"];
    let vowel_sound = ["hour", "honest", "honor"];
    if vowel_sound.iter().any(|p| l.starts_with(p)) {
        return "an";
    }
    if consonant_sound.iter().any(|p| l.starts_with(p)) {
        return "a";
    }
    if l.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Upper-cases the first letter.
pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// English plural of one word.
fn plural_word(w: &str) -> String {
    let lower = w.to_ascii_lowercase();
    let irregular = [
        ("person", "people"),
        ("child", "children"),
        ("mouse", "mice"),
        ("knife", "knives"),
        ("foot", "feet"),
        ("tooth", "teeth"),
        ("goose", "geese"),
        ("leaf", "leaves"),
        ("wolf", "wolves"),
        ("shelf", "shelves"),
    ];
    if let Some((_, p)) = irregular.iter().find(|(s, _)| *s == lower) {
        return p.to_string();
    }
    if ["sheep", "deer", "fish", "broccoli", "skis", "scissors", "glasses", "pants", "jeans", "shorts", "series", "species"]
        .contains(&lower.as_str())
    {
        return w.to_string();
    }
    if let Some(stem) = w.strip_suffix("man") {
        return format!("{stem}men");
    }
    let b = lower.as_bytes();
    let n = b.len();
    if ["ss", "us", "x", "z", "ch", "sh"].iter().any(|e| lower.ends_with(e)) {
        return format!("{w}es");
    }
    if lower.ends_with('s') {
        // already plural in form ("tongs")
        return w.to_string();
    }
    if n >= 2 && b[n - 1] == b'y' && !matches!(b[n - 2], b'a' | b'e' | b'i' | b'o' | b'u') {
        return format!("{}ies", &w[..n - 1]);
    }
    format!("{w}s")
}

/// Plural of a name: its last word, or the head of an "X of Y" phrase.
pub fn plural(name: &str) -> String {
    if let Some((head, rest)) = name.split_once(" of ") {
        return format!("{} of {rest}", plural(head));
    }
    match name.rsplit_once(' ') {
        Some((head, last)) => format!("{head} {}", plural_word(last)),
        None => plural_word(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_values_read_back_what_number_words_write() {
        for n in 1..=20 {
            assert_eq!(number_value(&number_words(n)), Some(n));
        }
        assert_eq!([number_value("single"), number_value("both"), number_value("dozen")], [Some(1), Some(2), Some(12)]);
        assert_eq!(
            [number_value("3"), number_value("2024"), number_value("12345"), number_value("zero"), number_value("")],
            [Some(3), Some(2024), None, None, None]
        );
    }

    #[test]
    fn english_helpers() {
        assert_eq!(number_words(3), "three");
        assert_eq!(number_words(21), "21");
        assert_eq!(article("apple"), "an");
        assert_eq!(article("unicycle"), "a");
        assert_eq!(article("hour glass"), "an");
        assert_eq!(capitalize("two dogs"), "Two dogs");
        assert_eq!(plural("wine glass"), "wine glasses");
        assert_eq!(plural("bunch of bananas"), "bunches of bananas");
        assert_eq!(plural("person"), "people");
        assert_eq!(plural("fireman"), "firemen");
        assert_eq!(plural("butterfly"), "butterflies");
    }
}
