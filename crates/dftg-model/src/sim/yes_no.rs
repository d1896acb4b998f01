//! Yes/no answers of an over-corrected model: a profile with `denial_rate` > 0 answers "no"
//! to some questions about objects that are there, as a model does that learned to say "no"
//! too eagerly. Which ones is a pure function of (seed, profile, image, concept), so a
//! question always gets the same answer, whatever its wording or the order of requests.

use dftg_core::vocab::ConceptId;

use super::corpus::SimImage;
use super::engine::Simulator;
use dftg_core::seed::StableHasher;

impl Simulator {
    /// Whether this model denies present concept `c` on image `key` (false when `c` is absent).
    pub(crate) fn denies(&self, key: &str, img: &SimImage, c: ConceptId) -> bool {
        let rate = self.profile().denial_rate;
        if rate <= 0.0 || !img.objects.iter().any(|o| o.concept == c) {
            return false;
        }
        let name = self.corpus().vocabulary().name(c);
        StableHasher::new("deny").u64(self.seed()).str(&self.profile().name).str(key).str(name).unit() < rate
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dftg_core::truth::{ImageTruth, ObjectTruth};

    use super::super::profile::profile_by_name;
    use super::super::SimCorpus;
    use super::*;

    fn corpus() -> Arc<SimCorpus> {
        let scenes: [&[&str]; 3] =
            [&["person", "car", "traffic light"], &["dining table", "cup", "chair", "person"], &["dog", "frisbee", "person"]];
        let items = (0..120).map(|i| {
            let objects =
                scenes[i % 3].iter().map(|n| ObjectTruth { name: n.to_string(), count: None, attributes: Default::default() }).collect();
            (ImageTruth { image: format!("img-{i}"), file: None, objects }, format!("bytes of image {i}").into_bytes())
        });
        Arc::new(SimCorpus::new(items).unwrap())
    }

    fn yes(sim: &Simulator, key: &str, object: &str) -> bool {
        let r = sim.respond(key, &format!("Is there a {object} in the image?")).unwrap();
        r.text.starts_with("Yes")
    }

    #[test]
    fn an_over_corrected_profile_denies_present_objects_at_its_rate_and_repeatably() {
        let corpus = corpus();
        let over = Simulator::new(corpus.clone(), profile_by_name("people-everywhere-overcorrected").unwrap(), 3).unwrap();
        let plain = Simulator::new(corpus.clone(), profile_by_name("people-everywhere").unwrap(), 3).unwrap();
        let (mut asked, mut denied) = (0, 0);
        for key in corpus.keys() {
            for o in &corpus.truth(key).unwrap().objects {
                asked += 1;
                assert!(yes(&plain, key, &o.name), "a profile without denial_rate never denies");
                let answer = yes(&over, key, &o.name);
                assert_eq!(answer, yes(&over, key, &o.name), "the same question gets the same answer");
                if !answer {
                    denied += 1;
                    let r = over.respond(key, &format!("Is there a {} in the image?", o.name)).unwrap();
                    assert!(r.entry.negated.is_empty() && r.entry.hallucinated.is_empty(), "a denial is not logged as an absent object");
                }
            }
        }
        // 440 questions at 0.35: 154 expected, sd ≈ 10
        let rate = denied as f64 / asked as f64;
        assert!((0.28..0.42).contains(&rate), "denied {denied} of {asked}");
    }
}
