//! POPE questions for any corpus with ground truth, drawn as the POPE repository draws them
//! (Li et al., 2023, `utils.py`/`main.py`), made deterministic by a seed.
//!
//! - Images with fewer than `per_image` objects are skipped (POPE's filter); of the rest,
//!   `max_images` are kept (POPE samples 500), chosen by a seeded hash of the image key, so
//!   the choice streams and does not depend on the corpus order.
//! - Object frequencies and co-occurrences are counted over the kept images, as POPE does.
//! - Per image, `per_image` present objects (a seeded choice: POPE takes the first ones of
//!   its annotation list, whose order carries no meaning in COCO-derived truth), each followed
//!   by one absent object: **random** (uniform over the objects seen in the kept images),
//!   **popular** (the most frequent one not in the image and not asked yet) or
//!   **adversarial** (the one co-occurring most with that present object; random when none
//!   is left). Ties go to the name that sorts first (POPE's order is Python dict order).
//! - An absent object is never one the image holds. An image with fewer than `per_image`
//!   absent candidates is skipped (POPE would loop forever).

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::pope::{question_text, PopeQuestion};
use crate::seed::{rng_for, stable_hash};
use crate::truth::ImageTruth;

/// Most questions of each label per image.
pub const MAX_PER_IMAGE: usize = 50;

/// How the absent objects are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    Random,
    Popular,
    Adversarial,
}

impl Sampler {
    pub const ALL: [Sampler; 3] = [Sampler::Random, Sampler::Popular, Sampler::Adversarial];

    pub fn as_str(self) -> &'static str {
        match self {
            Sampler::Random => "random",
            Sampler::Popular => "popular",
            Sampler::Adversarial => "adversarial",
        }
    }
}

/// One image as POPE sees it: what to call it in the questions and its distinct objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopeImage {
    /// Stable key (seeds every choice about this image).
    pub key: String,
    /// The question file's `image`: the truth's file name, else the key.
    pub image: String,
    /// Distinct object names, in truth order.
    pub objects: Vec<String>,
}

impl PopeImage {
    pub fn from_truth(t: &ImageTruth) -> Self {
        let mut objects: Vec<String> = Vec::with_capacity(t.objects.len());
        for o in &t.objects {
            let name = o.name.trim();
            if !name.is_empty() && !objects.iter().any(|x| x == name) {
                objects.push(name.to_string());
            }
        }
        PopeImage { key: t.image.clone(), image: t.file.clone().unwrap_or_else(|| t.image.clone()), objects }
    }

    fn has(&self, name: &str) -> bool {
        self.objects.iter().any(|o| o == name)
    }
}

/// Where an image ranks in the seeded choice of `max_images` (smaller is kept first).
pub fn selection_rank(seed: u64, key: &str) -> u64 {
    stable_hash(seed, &["pope-image", key])
}

/// Object frequencies and co-occurrences over a set of images.
#[derive(Debug, Clone, Default)]
pub struct PopeStats {
    /// Every object seen, sorted by name.
    universe: Vec<String>,
    /// Objects by frequency, most frequent first, ties by name.
    popular: Vec<(String, u64)>,
    /// Per object, the objects seen with it, most often first, ties by name.
    cooc: BTreeMap<String, Vec<(String, u64)>>,
}

impl PopeStats {
    pub fn new<'a>(images: impl IntoIterator<Item = &'a PopeImage>) -> Self {
        let mut freq: BTreeMap<&str, u64> = BTreeMap::new();
        let mut pairs: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for img in images {
            for a in &img.objects {
                *freq.entry(a).or_default() += 1;
                let row = pairs.entry(a).or_default();
                for b in img.objects.iter().filter(|b| *b != a) {
                    *row.entry(b).or_default() += 1;
                }
            }
        }
        let by_count = |m: BTreeMap<&str, u64>| {
            // BTreeMap iterates by name and the sort is stable: ties stay in name order
            let mut v: Vec<(String, u64)> = m.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
            v.sort_by_key(|x| std::cmp::Reverse(x.1));
            v
        };
        PopeStats {
            universe: freq.keys().map(|k| k.to_string()).collect(),
            popular: by_count(freq),
            cooc: pairs.into_iter().map(|(k, row)| (k.to_string(), by_count(row))).collect(),
        }
    }

    pub fn universe(&self) -> &[String] {
        &self.universe
    }

    pub fn frequency(&self, object: &str) -> u64 {
        self.popular.iter().find(|(o, _)| o == object).map_or(0, |(_, n)| *n)
    }

    pub fn cooccurrence(&self, a: &str, b: &str) -> u64 {
        self.cooc.get(a).and_then(|row| row.iter().find(|(o, _)| o == b)).map_or(0, |(_, n)| *n)
    }

    /// The most frequent object that is not excluded.
    pub fn popular_pick(&self, excluded: impl Fn(&str) -> bool) -> Option<&str> {
        self.popular.iter().map(|(o, _)| o.as_str()).find(|o| !excluded(o))
    }

    /// The object seen most often with `positive` that is not excluded (`None`: none left).
    pub fn adversarial_pick(&self, positive: &str, excluded: impl Fn(&str) -> bool) -> Option<&str> {
        self.cooc.get(positive)?.iter().map(|(o, _)| o.as_str()).find(|o| !excluded(o))
    }

    /// A uniform choice among the objects that are not excluded.
    pub fn random_pick(&self, excluded: impl Fn(&str) -> bool, rng: &mut impl Rng) -> Option<&str> {
        let open: Vec<&str> = self.universe.iter().map(String::as_str).filter(|o| !excluded(o)).collect();
        if open.is_empty() {
            None
        } else {
            Some(open[rng.gen_range(0..open.len())])
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildConfig {
    /// Present objects per image, and as many absent ones (POPE: 3).
    pub per_image: usize,
    pub seed: u64,
}

/// The three question sets of one corpus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PopeSet {
    pub random: Vec<PopeQuestion>,
    pub popular: Vec<PopeQuestion>,
    pub adversarial: Vec<PopeQuestion>,
    /// Images asked about.
    pub images: usize,
    /// Images skipped because fewer than `per_image` objects are absent from them.
    pub skipped_few_absent: usize,
}

impl PopeSet {
    pub fn questions(&self, s: Sampler) -> &[PopeQuestion] {
        match s {
            Sampler::Random => &self.random,
            Sampler::Popular => &self.popular,
            Sampler::Adversarial => &self.adversarial,
        }
    }
}

pub fn check_per_image(per_image: usize) -> Result<(), CoreError> {
    if per_image == 0 || per_image > MAX_PER_IMAGE {
        return Err(CoreError::invalid("per_image", format!("must be between 1 and {MAX_PER_IMAGE}")));
    }
    Ok(())
}

/// Questions for `images` (already filtered to at least `per_image` objects and sampled; see
/// [`selection_rank`]), in their order. Statistics are counted over exactly these images.
pub fn build(images: &[PopeImage], cfg: &BuildConfig) -> Result<PopeSet, CoreError> {
    check_per_image(cfg.per_image)?;
    if let Some(i) = images.iter().position(|img| img.objects.len() < cfg.per_image) {
        return Err(CoreError::invalid(format!("image {}", i + 1), format!("has fewer than {} objects", cfg.per_image)));
    }
    let stats = PopeStats::new(images);
    let mut set = PopeSet::default();
    for img in images {
        let absent = stats.universe.iter().filter(|o| !img.has(o)).count();
        if absent < cfg.per_image {
            set.skipped_few_absent += 1;
            continue;
        }
        set.images += 1;
        let positives = choose_positives(img, cfg);
        for sampler in Sampler::ALL {
            let negatives = negatives(&stats, img, &positives, sampler, cfg.seed);
            let out = match sampler {
                Sampler::Random => &mut set.random,
                Sampler::Popular => &mut set.popular,
                Sampler::Adversarial => &mut set.adversarial,
            };
            for (p, n) in positives.iter().zip(&negatives) {
                for (object, label) in [(p.as_str(), "yes"), (n.as_str(), "no")] {
                    out.push(PopeQuestion {
                        question_id: out.len() as u64 + 1,
                        image: img.image.clone(),
                        text: question_text(object),
                        label: label.into(),
                    });
                }
            }
        }
    }
    Ok(set)
}

/// `per_image` of the image's objects, a seeded choice in a seeded order.
fn choose_positives(img: &PopeImage, cfg: &BuildConfig) -> Vec<String> {
    let mut rng = rng_for(cfg.seed, &["pope-positive", &img.key]);
    let mut pool: Vec<&String> = img.objects.iter().collect();
    let mut out = Vec::with_capacity(cfg.per_image);
    while out.len() < cfg.per_image && !pool.is_empty() {
        out.push(pool.swap_remove(rng.gen_range(0..pool.len())).clone());
    }
    out
}

/// One absent object per positive, in order; earlier picks are not picked again.
pub fn negatives(stats: &PopeStats, img: &PopeImage, positives: &[String], sampler: Sampler, seed: u64) -> Vec<String> {
    let mut rng = rng_for(seed, &["pope-negative", sampler.as_str(), &img.key]);
    let mut asked: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::with_capacity(positives.len());
    for p in positives {
        let excluded = |o: &str| img.has(o) || asked.contains(o);
        let pick = match sampler {
            Sampler::Random => stats.random_pick(excluded, &mut rng),
            Sampler::Popular => stats.popular_pick(excluded),
            Sampler::Adversarial => match stats.adversarial_pick(p, excluded) {
                Some(o) => Some(o),
                None => stats.random_pick(excluded, &mut rng),
            },
        };
        // the caller checked that enough absent objects exist
        let Some(pick) = pick.map(str::to_string) else { break };
        asked.insert(pick.clone());
        out.push(pick);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(key: &str, objects: &[&str]) -> PopeImage {
        PopeImage { key: key.into(), image: format!("{key}.jpg"), objects: objects.iter().map(|s| s.to_string()).collect() }
    }

    fn corpus() -> Vec<PopeImage> {
        vec![
            img("1", &["person", "car", "traffic light", "bus"]),
            img("2", &["person", "dog", "frisbee"]),
            img("3", &["dining table", "cup", "fork", "person"]),
            img("4", &["dining table", "cup", "pizza"]),
            img("5", &["car", "truck", "person"]),
            img("6", &["cup", "bowl", "spoon", "oven"]),
        ]
    }

    #[test]
    fn stats_count_frequency_and_cooccurrence() {
        let c = corpus();
        let s = PopeStats::new(&c);
        assert_eq!(s.frequency("person"), 4);
        assert_eq!(s.frequency("cup"), 3);
        assert_eq!(s.cooccurrence("cup", "dining table"), 2);
        assert_eq!(s.cooccurrence("dining table", "cup"), 2);
        assert_eq!(s.cooccurrence("dog", "cup"), 0);
        assert_eq!(s.popular_pick(|_| false), Some("person"));
        // cup (3) beats car (2), dining table (2) by count; car beats dining table by name
        assert_eq!(s.popular_pick(|o| o == "person"), Some("cup"));
        assert_eq!(s.popular_pick(|o| o == "person" || o == "cup"), Some("car"));
        assert_eq!(s.adversarial_pick("cup", |_| false), Some("dining table"));
        assert_eq!(s.adversarial_pick("dog", |o| o == "person" || o == "frisbee"), None);
    }

    #[test]
    fn questions_follow_popes_layout_and_never_ask_a_present_object_as_absent() {
        let c = corpus();
        let set = build(&c, &BuildConfig { per_image: 3, seed: 7 }).unwrap();
        assert_eq!(set.images, 6);
        for s in Sampler::ALL {
            let q = set.questions(s);
            assert_eq!(q.len(), 6 * 6, "{s:?}");
            for (i, x) in q.iter().enumerate() {
                assert_eq!(x.question_id, i as u64 + 1);
                assert_eq!(x.label, if i % 2 == 0 { "yes" } else { "no" }, "yes and no alternate, as in POPE");
                let object = x.text.trim_start_matches("Is there an ").trim_start_matches("Is there a ").trim_end_matches(" in the image?");
                let image = c.iter().find(|im| im.image == x.image).unwrap();
                assert_eq!(image.has(object), x.label == "yes", "{s:?} {x:?}");
            }
            for chunk in q.chunks(6) {
                let mut asked: Vec<&str> = chunk.iter().map(|x| x.text.as_str()).collect();
                asked.sort();
                asked.dedup();
                assert_eq!(asked.len(), 6, "no object asked twice about one image");
            }
            // the same present objects in every file
            let yes = |s: Sampler| set.questions(s).iter().filter(|x| x.label == "yes").map(|x| x.text.clone()).collect::<Vec<_>>();
            assert_eq!(yes(s), yes(Sampler::Random));
        }
        // popular on image 2 (person, dog, frisbee): cup, then car, then dining table
        let no: Vec<&str> = set.popular[6..12].iter().filter(|x| x.label == "no").map(|x| x.text.as_str()).collect();
        assert_eq!(no, ["Is there a cup in the image?", "Is there a car in the image?", "Is there a dining table in the image?"]);
    }

    #[test]
    fn adversarial_asks_what_co_occurs_with_the_present_object() {
        let c = corpus();
        let stats = PopeStats::new(&c);
        let image = img("4", &["dining table", "cup", "pizza"]);
        let n = negatives(&stats, &image, &["cup".into(), "dining table".into()], Sampler::Adversarial, 1);
        // cup's companions by count: dining table 2 (present), then bowl, fork, oven, person,
        // pizza, spoon at 1 each: bowl by name; dining table's: cup 2 (present), fork, person, pizza
        assert_eq!(n, ["bowl", "fork"]);
    }

    #[test]
    fn building_is_deterministic_and_the_seed_matters() {
        let c = corpus();
        let a = build(&c, &BuildConfig { per_image: 2, seed: 1 }).unwrap();
        assert_eq!(a, build(&c, &BuildConfig { per_image: 2, seed: 1 }).unwrap());
        let differs = (2..40).any(|seed| build(&c, &BuildConfig { per_image: 2, seed }).unwrap().random != a.random);
        assert!(differs, "random negatives depend on the seed");
    }

    #[test]
    fn images_without_enough_absent_objects_are_skipped_and_bad_sizes_refused() {
        let c = vec![img("1", &["a", "b", "c"]), img("2", &["a", "b", "d"])];
        let set = build(&c, &BuildConfig { per_image: 2, seed: 0 }).unwrap();
        assert_eq!((set.images, set.skipped_few_absent), (0, 2));
        assert!(build(&c, &BuildConfig { per_image: 0, seed: 0 }).unwrap_err().to_string().contains("per_image"));
        let err = build(&c, &BuildConfig { per_image: 4, seed: 0 }).unwrap_err().to_string();
        assert!(err.contains("image 1") && err.contains("fewer than 4"), "{err}");
    }

    #[test]
    fn truth_becomes_distinct_names_with_the_file_as_image() {
        use crate::truth::ObjectTruth;
        let o = |n: &str| ObjectTruth { name: n.into(), count: None, attributes: Default::default() };
        let t = ImageTruth {
            image: "7".into(),
            file: Some("COCO_val2014_000000000007.jpg".into()),
            objects: vec![o("dog"), o(" dog"), o("cat")],
        };
        let p = PopeImage::from_truth(&t);
        assert_eq!(p.image, "COCO_val2014_000000000007.jpg");
        assert_eq!(p.objects, ["dog", "cat"]);
        assert_eq!(PopeImage::from_truth(&ImageTruth { file: None, ..t }).image, "7");
    }
}
