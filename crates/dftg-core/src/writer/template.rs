//! The template writer: the offline default and every other writer's fallback. It writes from
//! the same facts block a language model gets, with a handful of frames per type, so what it
//! says is true by construction (the gate still checks it).

use rand::seq::SliceRandom;
use rand::Rng;

use crate::english::{article, capitalize, number_words};
use crate::llava::InstructionType;
use crate::vocab::Vocabulary;

use super::{FactObject, Facts, QaPair, WrittenItem};

/// Singular and plural of a natural name, from the vocabulary when it knows the word.
fn forms(vocab: &Vocabulary, name: &str) -> (String, String) {
    let lower = name.to_lowercase();
    let plural = vocab
        .lookup(&lower)
        .and_then(|id| {
            let c = vocab.concept(id);
            if c.natural_name().eq_ignore_ascii_case(name) {
                return Some(c.natural_plural().to_string());
            }
            c.synonyms.iter().position(|s| *s == lower).map(|i| c.plurals[i].clone())
        })
        .unwrap_or_else(|| format!("{name}s"));
    (name.to_string(), plural)
}

/// "two dogs", "a car", "some sheep" (count unknown).
fn noun_phrase(vocab: &Vocabulary, o: &FactObject) -> String {
    let (s, p) = forms(vocab, &o.name);
    match o.count {
        Some(1) => format!("{} {s}", article(&s)),
        Some(n) => format!("{} {p}", number_words(n)),
        None if s == p => format!("some {p}"),
        None => format!("{} {s}", article(&s)),
    }
}

/// A short grounded summary of the scene: "a man, two dogs and a car".
fn scene(vocab: &Vocabulary, objects: &[FactObject]) -> String {
    let parts: Vec<String> = objects.iter().take(4).map(|o| noun_phrase(vocab, o)).collect();
    match parts.len() {
        0 => "other things".to_string(),
        1 => parts[0].clone(),
        n => format!("{} and {}", parts[..n - 1].join(", "), parts[n - 1]),
    }
}

fn pick<'a, R: Rng>(rng: &mut R, options: &[&'a str]) -> &'a str {
    options.choose(rng).copied().unwrap_or(options[0])
}

struct Fill<'a> {
    s: &'a str,
    p: &'a str,
    scene: &'a str,
}

impl Fill<'_> {
    fn apply(&self, t: &str) -> String {
        t.replace("{a}", article(self.s)).replace("{s}", self.s).replace("{p}", self.p).replace("{scene}", self.scene)
    }
}

fn negative<R: Rng>(f: &Fill, rng: &mut R) -> QaPair {
    let q = pick(
        rng,
        &[
            "Is there {a} {s} in the image?",
            "Can you see any {p} in this picture?",
            "Does this image contain {a} {s}?",
            "Are there any {p} in the photo?",
            "Is {a} {s} visible anywhere in the image?",
        ],
    );
    let a = pick(
        rng,
        &[
            "No, there is no {s} in the image. It shows {scene}.",
            "No. The image does not contain any {p}; it shows {scene}.",
            "No, I don't see any {p} here. The picture shows {scene}.",
        ],
    );
    QaPair { question: f.apply(q), answer: f.apply(a) }
}

fn false_premise<R: Rng>(f: &Fill, rng: &mut R) -> QaPair {
    let q = pick(
        rng,
        &[
            "What color is the {s} in the image?",
            "Where is the {s} in this picture?",
            "How big is the {s} in the photo?",
            "Can you describe the {s} in this image?",
        ],
    );
    let a = pick(
        rng,
        &[
            "There is no {s} in this image, so I can't say. It shows {scene}.",
            "The picture does not contain any {p}. What it shows is {scene}.",
        ],
    );
    QaPair { question: f.apply(q), answer: f.apply(a) }
}

fn positive<R: Rng>(f: &Fill, count: Option<u32>, rng: &mut R) -> QaPair {
    let q = pick(
        rng,
        &[
            "Is there {a} {s} in the image?",
            "Can you see any {p} in this picture?",
            "Does this image contain {a} {s}?",
            "Are there any {p} in the photo?",
        ],
    );
    let a = match count {
        Some(n) if n > 1 => format!("Yes, there are {} {} in the image.", number_words(n), f.p),
        _ => f.apply("Yes, there is {a} {s} in the image."),
    };
    QaPair { question: f.apply(q), answer: a }
}

fn count<R: Rng>(f: &Fill, n: u32, rng: &mut R) -> QaPair {
    let q = pick(rng, &["How many {p} are in the image?", "How many {p} can you see?", "Count the {p} in this picture."]);
    let a = if n == 1 { f.apply("There is one {s} in the image.") } else { format!("There are {} {} in the image.", number_words(n), f.p) };
    QaPair { question: f.apply(q), answer: a }
}

fn attribute<R: Rng>(f: &Fill, family: &str, values: &[String], rng: &mut R) -> Option<QaPair> {
    let value = match values.len() {
        0 => return None,
        1 => values[0].clone(),
        n => format!("{} and {}", values[..n - 1].join(", "), values[n - 1]),
    };
    let (q, a) = match family {
        "color" => (pick(rng, &["What color is the {s}?", "What is the color of the {s} in the image?"]), "The {s} is {v}."),
        "size" => (pick(rng, &["Is the {s} small or large?", "How big is the {s}?"]), "The {s} is {v}."),
        "material" => (pick(rng, &["What material is the {s} made of?", "What is the {s} made of?"]), "The {s} is {v}."),
        _ => ("What is the {f} of the {s}?", "The {f} of the {s} is {v}."),
    };
    let fill = |t: &str| f.apply(t).replace("{v}", &value).replace("{f}", family);
    Some(QaPair { question: fill(q), answer: fill(a) })
}

/// The item for `facts`; `None` when the facts do not allow one (no target, no draft).
pub fn write<R: Rng>(vocab: &Vocabulary, facts: &Facts, rng: &mut R) -> Option<WrittenItem> {
    let scene = scene(vocab, &facts.objects);
    if facts.instruction == InstructionType::CorrectedDescription {
        let draft = facts.draft.as_ref()?.trim();
        return (!draft.is_empty()).then(|| WrittenItem { turns: vec![QaPair { question: String::new(), answer: draft.to_string() }] });
    }
    let target = facts.target.as_deref()?;
    let (s, p) = forms(vocab, target);
    let f = Fill { s: &s, p: &p, scene: &scene };
    let present = facts.target_present.unwrap_or(false);
    let turn = match facts.instruction {
        InstructionType::NegativeExistence => negative(&f, rng),
        InstructionType::FalsePremise => false_premise(&f, rng),
        InstructionType::PositiveExistence => positive(&f, facts.target_count, rng),
        InstructionType::Count => count(&f, facts.target_count?, rng),
        InstructionType::Attribute => {
            let a = facts.target_attribute.as_ref()?;
            attribute(&f, &a.family, &a.values, rng)?
        }
        InstructionType::MultiTurn => return multi_turn(vocab, facts, &f, present, rng),
        InstructionType::CorrectedDescription => return None,
    };
    Some(WrittenItem { turns: vec![turn] })
}

/// The target's turn among questions about what is there.
fn multi_turn<R: Rng>(vocab: &Vocabulary, facts: &Facts, f: &Fill, present: bool, rng: &mut R) -> Option<WrittenItem> {
    let want = facts.turns.unwrap_or(3).clamp(2, 4) as usize;
    let target_turn = if present {
        match facts.target_count {
            Some(n) => count(f, n, rng),
            None => positive(f, None, rng),
        }
    } else {
        negative(f, rng)
    };
    let mut others: Vec<QaPair> = Vec::new();
    let mut objects: Vec<&FactObject> = facts.objects.iter().filter(|o| Some(o.name.as_str()) != facts.target.as_deref()).collect();
    objects.shuffle(rng);
    for o in objects {
        if others.len() + 1 >= want {
            break;
        }
        let (s, p) = forms(vocab, &o.name);
        let of = Fill { s: &s, p: &p, scene: f.scene };
        let color = o.attributes.get("color").filter(|v| !v.is_empty());
        let t = match (o.count, color) {
            (_, Some(values)) if rng.gen_bool(0.5) => attribute(&of, "color", values, rng),
            (Some(n), _) => Some(count(&of, n, rng)),
            _ => Some(positive(&of, o.count, rng)),
        };
        others.extend(t);
    }
    if others.is_empty() {
        others.push(QaPair { question: "What does the image show?".into(), answer: capitalize(&format!("the image shows {}.", f.scene)) });
    }
    let at = rng.gen_range(0..=others.len());
    others.insert(at, target_turn);
    Some(WrittenItem { turns: others })
}
