//! Turning a detector's category list (LVIS, COCO-style JSON such as Objects365, or plain
//! names) into a vocabulary TOML that [`crate::vocab::Vocabulary::from_toml`] reads.
//!
//! Rules, in order:
//! - a name or synonym is lowercased, `_` becomes a space (`fire_alarm` → "fire alarm");
//! - a trailing parenthesis disambiguates and is kept only in the concept's name
//!   (`bat_(animal)` → concept "bat (animal)"); the surface a caption uses is the part before it
//!   ("bat");
//! - a surface claimed by two or more categories goes to the one whose whole name is that
//!   surface with no parenthesis ("fish" → `fish`, not `fish_(food)`); when no single category
//!   owns it that way ("bow": `bow_(weapon)`, `bow_(decorative_ribbons)`) it names no object;
//! - a form in the exclusion list (singular or plural, exactly as listed) names no object: words
//!   that mostly mean something else in captions, see `configs/vocab/lvis-exclude.txt`;
//! - surfaces that name no object are written to `[phrases]` with an empty target, so they win
//!   over a category's own name and longer phrases containing them still match;
//! - plurals come from the vocabulary's pluralizer with the irregular table below;
//! - the natural name (what prose writes) is the first surface kept that names no other thing in
//!   either number, when it differs from the name ("bat" for `bat_(animal)`); a category with
//!   no such surface keeps its name;
//! - from a base vocabulary (coco80) the attribute families are copied, and its phrases whose
//!   target is empty or a concept of the new vocabulary, unless a category names that phrase
//!   (in either number).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::error::CoreError;
use crate::vocab::normalize_phrase;

/// How the category list is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CategoryFormat {
    /// One JSON object a line: `{"name", "synonyms": [...]}` (LVIS v1 `categories`).
    Lvis,
    /// A JSON document with `"categories": [{"name", "supercategory"?, "synonyms"?}]` (COCO-style
    /// annotation files such as Objects365's).
    Coco,
    /// One category a line: the name, then optional synonyms, `,`-separated; `#` starts a comment.
    Names,
}

/// One input category.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Category {
    pub name: String,
    #[serde(default)]
    pub synonyms: Vec<String>,
    #[serde(default)]
    pub supercategory: String,
}

/// English plurals the suffix rules get wrong; words mapped to themselves have no other form.
const IRREGULAR_PLURALS: &[(&str, &str)] = &[
    ("man", "men"),
    ("woman", "women"),
    ("child", "children"),
    ("person", "people"),
    ("mouse", "mice"),
    ("goose", "geese"),
    ("foot", "feet"),
    ("tooth", "teeth"),
    ("ox", "oxen"),
    ("knife", "knives"),
    ("wife", "wives"),
    ("loaf", "loaves"),
    ("leaf", "leaves"),
    ("shelf", "shelves"),
    ("scarf", "scarves"),
    ("calf", "calves"),
    ("wolf", "wolves"),
    ("half", "halves"),
    ("tomato", "tomatoes"),
    ("potato", "potatoes"),
    ("mango", "mangoes"),
    ("cactus", "cacti"),
    ("sheep", "sheep"),
    ("deer", "deer"),
    ("fish", "fish"),
    ("salmon", "salmon"),
    ("bison", "bison"),
    ("moose", "moose"),
    ("cattle", "cattle"),
    ("broccoli", "broccoli"),
    ("luggage", "luggage"),
    ("scissors", "scissors"),
    ("pants", "pants"),
    ("trousers", "trousers"),
    ("shorts", "shorts"),
    ("jeans", "jeans"),
    ("glasses", "glasses"),
    ("sunglasses", "sunglasses"),
    ("eyeglasses", "eyeglasses"),
    ("goggles", "goggles"),
    ("binoculars", "binoculars"),
    ("tongs", "tongs"),
    ("pliers", "pliers"),
    ("tweezers", "tweezers"),
    ("shears", "shears"),
    ("headphones", "headphones"),
    ("earphones", "earphones"),
    ("overalls", "overalls"),
    ("suspenders", "suspenders"),
    ("skis", "skis"),
];

/// What the conversion did, for the command to report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildReport {
    pub concepts: usize,
    /// Singular surfaces kept across all concepts.
    pub surfaces: usize,
    /// Surfaces several categories claim, with the claimants, that went to none of them.
    pub ambiguous: Vec<(String, Vec<String>)>,
    /// Excluded forms some category uses.
    pub excluded: Vec<String>,
    /// Exclusion entries no category claimed (probably a typo or another vocabulary's list).
    pub unused_exclusions: Vec<String>,
}

/// Reads a category list.
pub fn parse_categories(text: &str, format: CategoryFormat) -> Result<Vec<Category>, CoreError> {
    let cats = match format {
        CategoryFormat::Lvis => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let c: Category = serde_json::from_str(line)
                    .map_err(|e| CoreError::invalid(format!("categories line {}", i + 1), format!("not a category object: {e}")))?;
                out.push(c);
            }
            out
        }
        CategoryFormat::Coco => {
            #[derive(Deserialize)]
            struct Doc {
                categories: Vec<Category>,
            }
            let doc: Doc = serde_json::from_str(text)
                .map_err(|e| CoreError::invalid("categories", format!("not a json document with a categories list: {e}")))?;
            doc.categories
        }
        CategoryFormat::Names => text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut parts = l.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string);
                let name = parts.next().unwrap_or_default();
                Category { name, synonyms: parts.collect(), supercategory: String::new() }
            })
            .collect(),
    };
    if cats.is_empty() {
        return Err(CoreError::invalid("categories", "the list holds no category"));
    }
    Ok(cats)
}

/// Reads an exclusion list: one surface a line, `#` starts the reason (a comment).
pub fn parse_exclusions(text: &str) -> BTreeSet<String> {
    text.lines().map(|l| normalize_phrase(&clean(l.split('#').next().unwrap_or_default()))).filter(|s| !s.is_empty()).collect()
}

/// `_` as a space; the rest is left to [`normalize_phrase`].
fn clean(s: &str) -> String {
    s.replace('_', " ")
}

/// (full normalized name, surface without a trailing parenthesis).
fn split_disambiguation(raw: &str) -> (String, String) {
    let full = normalize_phrase(&clean(raw));
    let surface = match (full.ends_with(')'), full.rfind(" (")) {
        (true, Some(at)) => full[..at].trim().to_string(),
        _ => full.clone(),
    };
    (full, surface)
}

/// Options of [`build_vocabulary_toml`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions<'a> {
    /// The vocabulary's `name`.
    pub name: &'a str,
    /// Comment lines for the file's top (without `#`).
    pub header: Vec<String>,
    /// Surfaces that name no object.
    pub exclude: BTreeSet<String>,
    /// A vocabulary TOML whose attribute families and phrases are carried over.
    pub base: Option<&'a str>,
}

#[derive(Deserialize)]
struct BaseFile {
    #[serde(default)]
    phrases: BTreeMap<String, String>,
    #[serde(default)]
    attributes: BTreeMap<String, BaseFamily>,
}

#[derive(Deserialize)]
struct BaseFamily {
    values: Vec<String>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn quote_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", "))
}

/// The vocabulary TOML for `categories`, and what was dropped.
pub fn build_vocabulary_toml(categories: &[Category], opts: &BuildOptions<'_>) -> Result<(String, BuildReport), CoreError> {
    let base: Option<BaseFile> = match opts.base {
        Some(text) => {
            Some(toml::from_str(text).map_err(|e| CoreError::invalid("base vocabulary", format!("not a valid vocabulary file: {e}")))?)
        }
        None => None,
    };
    // Every surface with the categories that claim it, and who owns it outright.
    let mut names = Vec::with_capacity(categories.len());
    let mut seen_names = BTreeSet::new();
    let mut wanted: Vec<Vec<String>> = Vec::with_capacity(categories.len());
    let mut claims: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut owner: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, c) in categories.iter().enumerate() {
        let (full, surface) = split_disambiguation(&c.name);
        if full.is_empty() {
            return Err(CoreError::invalid(format!("categories[{i}].name"), "is empty"));
        }
        if !seen_names.insert(full.clone()) {
            return Err(CoreError::invalid(format!("categories[{i}].name"), format!("duplicate category {full:?}")));
        }
        if full == surface {
            owner.entry(surface.clone()).or_default().push(i);
        }
        let mut own = vec![surface];
        for s in &c.synonyms {
            let (_, s) = split_disambiguation(s);
            if !s.is_empty() && !own.contains(&s) {
                own.push(s);
            }
        }
        for s in &own {
            claims.entry(s.clone()).or_default().insert(i);
        }
        names.push(full);
        wanted.push(own);
    }
    let mut report = BuildReport { concepts: categories.len(), ..Default::default() };
    let irregular: ahash::AHashMap<String, String> = IRREGULAR_PLURALS.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let plural_of = |s: &str| {
        let last = s.rsplit(' ').next().unwrap_or(s);
        format!("{}{}", &s[..s.len() - last.len()], crate::vocab::pluralize_word(last, &irregular))
    };
    // no-object surfaces: ambiguous ones with their plurals, excluded forms exactly as listed
    let mut no_object: BTreeSet<String> = BTreeSet::new();
    for (surface, who) in &claims {
        if who.len() > 1 && owner.get(surface).is_none_or(|o| o.len() != 1) {
            report.ambiguous.push((surface.clone(), who.iter().map(|&i| names[i].clone()).collect()));
            no_object.insert(surface.clone());
            let plural = plural_of(surface);
            // a plural that is itself a category's surface ("glasses") keeps its meaning
            if !claims.contains_key(&plural) {
                no_object.insert(plural);
            }
        }
    }
    let forms: BTreeSet<String> = claims.keys().flat_map(|s| [s.clone(), plural_of(s)]).collect();
    for e in &opts.exclude {
        if forms.contains(e) {
            report.excluded.push(e.clone());
            no_object.insert(e.clone());
        } else {
            report.unused_exclusions.push(e.clone());
        }
    }
    let keeps = |i: usize, s: &String| claims.get(s).is_some_and(|w| w.len() == 1 || owner.get(s).is_some_and(|o| o == &vec![i]));

    let mut out = String::new();
    for line in &opts.header {
        out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
    }
    out.push_str("schema_version = 1\n");
    out.push_str(&format!("name = {}\n\n[plurals]\n", quote(opts.name)));
    for (w, p) in IRREGULAR_PLURALS {
        out.push_str(&format!("{} = {}\n", quote(w), quote(p)));
    }
    out.push_str("\n# Phrases that name no object: ambiguous or excluded surfaces, and the base vocabulary's.\n[phrases]\n");
    let mut phrases: BTreeMap<String, String> = no_object.iter().map(|s| (s.clone(), String::new())).collect();
    if let Some(b) = &base {
        for (p, target) in &b.phrases {
            let p = normalize_phrase(p);
            let target = normalize_phrase(target);
            // a category's own form, singular or plural ("ski poles"), is not overridden
            if !forms.contains(&p) && (target.is_empty() || seen_names.contains(&target)) {
                phrases.entry(p).or_insert(target);
            }
        }
    }
    for (p, t) in &phrases {
        out.push_str(&format!("{} = {}\n", quote(p), quote(t)));
    }
    for (i, c) in categories.iter().enumerate() {
        let synonyms: Vec<String> = wanted[i].iter().filter(|s| keeps(i, s)).cloned().collect();
        report.surfaces += synonyms.len();
        out.push_str(&format!("\n[[concept]]\nname = {}\n", quote(&names[i])));
        // prose names "bat (animal)" by the surface a caption uses: the first one kept that
        // reads back as this category in both numbers
        let reads_back = |s: &&String| !no_object.contains(*s) && !no_object.contains(&plural_of(s));
        if let Some(natural) = synonyms.iter().find(reads_back).filter(|s| **s != names[i]) {
            out.push_str(&format!("natural = {}\n", quote(natural)));
        }
        if !c.supercategory.is_empty() {
            out.push_str(&format!("supercategory = {}\n", quote(&c.supercategory)));
        }
        out.push_str(&format!("synonyms = {}\n", quote_list(&synonyms)));
    }
    if let Some(b) = &base {
        for (fname, fam) in &b.attributes {
            out.push_str(&format!("\n[attributes.{}]\nvalues = {}\n", quote(fname), quote_list(&fam.values)));
            if !fam.aliases.is_empty() {
                let aliases: Vec<String> = fam.aliases.iter().map(|(a, v)| format!("{} = {}", quote(a), quote(v))).collect();
                out.push_str(&format!("aliases = {{ {} }}\n", aliases.join(", ")));
            }
        }
    }
    // The output must load: a defect here is the builder's, caught before anything is written.
    crate::vocab::Vocabulary::from_toml(&out)?;
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Extractor;
    use crate::vocab::Vocabulary;

    const LVIS_LIKE: &str = r#"{"id": 1, "name": "bat_(animal)", "synonyms": ["bat_(animal)"]}
{"id": 2, "name": "baseball_bat", "synonyms": ["baseball_bat"]}
{"id": 3, "name": "bow_(weapon)", "synonyms": ["bow_(weapon)"]}
{"id": 4, "name": "bow_(decorative_ribbons)", "synonyms": ["bow_(decorative_ribbons)", "ribbon"]}
{"id": 5, "name": "fish", "synonyms": ["fish"]}
{"id": 6, "name": "fish_(food)", "synonyms": ["fish_(food)"]}
{"id": 7, "name": "person", "synonyms": ["person", "man", "woman"]}
{"id": 8, "name": "mat_(gym_equipment)", "synonyms": ["mat_(gym_equipment)", "gym_mat"]}
{"id": 9, "name": "stand", "synonyms": ["stand", "kiosk"]}
{"id": 10, "name": "dining_table", "synonyms": ["dining_table"]}
"#;

    fn build(exclude: &[&str]) -> (Vocabulary, BuildReport, String) {
        let cats = parse_categories(LVIS_LIKE, CategoryFormat::Lvis).unwrap();
        let opts = BuildOptions {
            name: "mini",
            header: vec!["generated".into()],
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            base: Some(crate::vocab::COCO80_TOML),
        };
        let (text, report) = build_vocabulary_toml(&cats, &opts).unwrap();
        (Vocabulary::from_toml(&text).unwrap(), report, text)
    }

    #[test]
    fn disambiguations_multiword_names_plurals_and_collisions() {
        let (v, report, text) = build(&[]);
        assert!(text.starts_with("# generated\n"), "{text}");
        assert_eq!(v.len(), 10);
        let bat = v.lookup("bat (animal)").unwrap();
        assert_eq!(v.phrase("bat").unwrap().concept, Some(bat), "bat is unambiguous here");
        assert_eq!(v.concept(bat).natural_name(), "bat");
        assert_eq!(v.concept(bat).natural_plural(), "bats");
        let bow = v.lookup("bow (weapon)").unwrap();
        assert_eq!(v.concept(bow).natural_name(), "bow (weapon)", "no surface left: the name");
        assert!(!text.contains("natural = \"fish\""), "same as the name: not written");
        assert_eq!(v.phrase("bats").unwrap().concept, Some(bat));
        assert_eq!(v.phrase("baseball bats").unwrap().concept, v.lookup("baseball bat"));
        assert_eq!(v.phrase("gym mats").unwrap().concept, v.lookup("mat (gym equipment)"));
        assert_eq!(v.phrase("bow").unwrap().concept, None, "two categories, neither owns it");
        assert_eq!(v.phrase("bows").unwrap().concept, None);
        assert_eq!(v.phrase("ribbons").unwrap().concept, v.lookup("bow (decorative ribbons)"));
        assert_eq!(v.phrase("fish").unwrap().concept, v.lookup("fish"), "the unqualified name owns it");
        assert_eq!(v.phrase("women").unwrap().concept, v.lookup("person"));
        assert_eq!(report.ambiguous, vec![("bow".to_string(), vec!["bow (weapon)".to_string(), "bow (decorative ribbons)".to_string()])]);
        // base phrases: no-object ones come along, redirects only to concepts that exist
        assert_eq!(v.phrase("bus stop").unwrap().concept, None);
        assert_eq!(v.phrase("baseball player").unwrap().concept, v.lookup("person"));
        assert_eq!(v.phrase("coffee table").unwrap().concept, v.lookup("dining table"));
        assert!(v.phrase("fire truck").is_none(), "truck is not a concept here");
        assert!(v.attribute_word("grey").is_some());
    }

    #[test]
    fn excluded_words_name_no_object_even_as_a_category_name() {
        let (v, report, _) = build(&["stand", "nonsense"]);
        let x = Extractor::new(std::sync::Arc::new(v.clone()));
        let e = x.extract("A man and a woman stand next to a kiosk.");
        let names: Vec<&str> = e.mentions.iter().map(|m| v.name(m.concept)).collect();
        assert_eq!(names, ["person", "person", "stand"], "the kiosk still counts");
        assert_eq!(v.phrase("stand").unwrap().concept, None);
        assert_eq!(v.phrase("stands").unwrap().concept, v.lookup("stand"), "only the listed form is excluded");
        assert_eq!(report.excluded, ["stand"]);
        assert_eq!(report.unused_exclusions, ["nonsense"]);
    }

    #[test]
    fn other_formats_and_bad_input() {
        let names = parse_categories("# objects\nPerson, people\n\nTraffic_Light\n", CategoryFormat::Names).unwrap();
        assert_eq!(names[0].synonyms, ["people"]);
        assert_eq!(names[1].name, "Traffic_Light");
        let coco =
            parse_categories(r#"{"categories": [{"id": 1, "name": "Person", "supercategory": "human"}]}"#, CategoryFormat::Coco).unwrap();
        assert_eq!(coco[0].supercategory, "human");
        let (text, _) = build_vocabulary_toml(&coco, &BuildOptions { name: "o365", ..Default::default() }).unwrap();
        assert_eq!(Vocabulary::from_toml(&text).unwrap().lookup("people"), Vocabulary::from_toml(&text).unwrap().lookup("person"));
        let err = parse_categories("{\"name\": 3}\n", CategoryFormat::Lvis).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(parse_categories("# nothing\n", CategoryFormat::Names).is_err());
        let dup = parse_categories("a_(x)\na (x)\n", CategoryFormat::Names).unwrap();
        let err = build_vocabulary_toml(&dup, &BuildOptions { name: "d", ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
        assert_eq!(
            parse_exclusions("spread  # a verb\n\n# only a comment\nBow_Tie # x\n"),
            ["bow tie".to_string(), "spread".to_string()].into()
        );
    }
}
