//! Simulator profiles: each simulated model's hallucination specificity, as data
//! (`configs/sim/<name>.toml`, bundled into the binary).

use std::collections::BTreeMap;
use std::path::Path;

use dftg_core::vocab::Vocabulary;
use serde::{Deserialize, Serialize};

use super::SimError;

/// The profiles bundled into the binary, by name (`sim:NAME`).
pub const BUNDLED_PROFILES: &[(&str, &str)] = &[
    ("people-everywhere", include_str!("../../../../configs/sim/people-everywhere.toml")),
    ("kitchenware", include_str!("../../../../configs/sim/kitchenware.toml")),
    ("mild", include_str!("../../../../configs/sim/mild.toml")),
    ("people-everywhere-treated", include_str!("../../../../configs/sim/people-everywhere-treated.toml")),
    ("people-everywhere-overcorrected", include_str!("../../../../configs/sim/people-everywhere-overcorrected.toml")),
];

/// The profile `dftg run` uses when none is named.
pub const DEFAULT_PROFILE: &str = "people-everywhere";

/// How one simulated model describes images and what it hallucinates.
///
/// An absent concept `c` is hallucinated on an image with probability
/// `min(max_probability, base_rate × affinity(c) × tempt(c))`, where `tempt(c)` is the
/// noisy-or over the image's present concepts `s` of P(c | s) measured on the corpus
/// (how often `c` co-occurs with `s`). At most `max_hallucinations` per image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimProfile {
    pub schema_version: u32,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Multiplier of the object-hallucination probability.
    pub base_rate: f64,
    /// Affinity of concepts not listed in `affinity`.
    #[serde(default)]
    pub default_affinity: f64,
    /// Cap of the per-concept hallucination probability.
    #[serde(default = "default_max_probability")]
    pub max_probability: f64,
    /// Cap of object hallucinations per image.
    #[serde(default = "default_max_hallucinations")]
    pub max_hallucinations: u32,
    /// Probability that a mentioned object whose count is known gets a wrong explicit count.
    #[serde(default)]
    pub count_error_rate: f64,
    /// Probability that a mentioned object with a known attribute gets a wrong value.
    #[serde(default)]
    pub attribute_error_rate: f64,
    /// Probability that each present object is mentioned (at least one always is).
    #[serde(default = "default_mention_rate")]
    pub mention_rate: f64,
    /// Probability that a known count is stated explicitly (when not wrong).
    #[serde(default = "default_count_mention_rate")]
    pub count_mention_rate: f64,
    /// Probability that a known attribute is stated (when not wrong).
    #[serde(default = "default_attribute_mention_rate")]
    pub attribute_mention_rate: f64,
    /// Probability that a detailed description denies an absent, tempting concept.
    #[serde(default = "default_negation_rate")]
    pub negation_rate: f64,
    /// Probability that a yes/no question about a present object is answered "no": an
    /// over-corrected model denies what is there (0 for a model that never does).
    #[serde(default)]
    pub denial_rate: f64,
    /// Per-concept affinity (canonical concept name → multiplier).
    #[serde(default)]
    pub affinity: BTreeMap<String, f64>,
}

fn default_max_probability() -> f64 {
    0.95
}
fn default_max_hallucinations() -> u32 {
    3
}
fn default_mention_rate() -> f64 {
    0.85
}
fn default_count_mention_rate() -> f64 {
    0.75
}
fn default_attribute_mention_rate() -> f64 {
    0.7
}
fn default_negation_rate() -> f64 {
    0.3
}

impl SimProfile {
    /// Parses and validates a profile (not yet against a vocabulary: see [`SimProfile::validate`]).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, SimError> {
        let p: SimProfile = toml::from_str(text)
            .map_err(|e| SimError::InvalidProfile { origin: origin.to_string(), reason: e.to_string().trim().to_string() })?;
        p.check_numbers(origin)?;
        Ok(p)
    }

    /// Reads a profile file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SimError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io { path: path.to_path_buf(), source })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// `sim:NAME` or a bare bundled name → the bundled profile; `sim:PATH` or anything else is a
    /// profile file (`sim:configs/sim/mild.toml`, as `dftg sim --profile` takes it).
    pub fn resolve(spec: &str) -> Result<Self, SimError> {
        let name = spec.strip_prefix("sim:").unwrap_or(spec);
        if BUNDLED_PROFILES.iter().any(|(n, _)| *n == name) {
            return profile_by_name(name);
        }
        // `sim:typo` names no file: say which profiles exist rather than "no such file"
        let path_like = name.contains(['/', '\\']) || name.ends_with(".toml") || Path::new(name).is_file();
        if spec.starts_with("sim:") && !path_like {
            return profile_by_name(name);
        }
        Self::from_file(name)
    }

    fn check_numbers(&self, origin: &str) -> Result<(), SimError> {
        let bad =
            |field: &str, reason: String| SimError::InvalidProfile { origin: origin.to_string(), reason: format!("{field}: {reason}") };
        if self.schema_version != 1 {
            return Err(bad("schema_version", format!("unsupported version {}", self.schema_version)));
        }
        if self.name.trim().is_empty() {
            return Err(bad("name", "must not be empty".into()));
        }
        let probabilities = [
            ("max_probability", self.max_probability),
            ("count_error_rate", self.count_error_rate),
            ("attribute_error_rate", self.attribute_error_rate),
            ("mention_rate", self.mention_rate),
            ("count_mention_rate", self.count_mention_rate),
            ("attribute_mention_rate", self.attribute_mention_rate),
            ("negation_rate", self.negation_rate),
            ("denial_rate", self.denial_rate),
        ];
        for (field, v) in probabilities {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(field, format!("{v} is not a probability in [0, 1]")));
            }
        }
        for (field, v) in [("base_rate", self.base_rate), ("default_affinity", self.default_affinity)] {
            if !v.is_finite() || v < 0.0 {
                return Err(bad(field, format!("{v} must be a finite number >= 0")));
            }
        }
        for (concept, v) in &self.affinity {
            if !v.is_finite() || *v < 0.0 {
                return Err(bad(&format!("affinity.{concept:?}"), format!("{v} must be a finite number >= 0")));
            }
        }
        Ok(())
    }

    /// Checks that every concept named in `affinity` is in the vocabulary.
    pub fn validate(&self, vocab: &Vocabulary) -> Result<(), SimError> {
        for concept in self.affinity.keys() {
            if vocab.lookup(concept).is_none() {
                return Err(SimError::InvalidProfile {
                    origin: self.name.clone(),
                    reason: format!("affinity names unknown concept {concept:?} (not in vocabulary {})", vocab.name),
                });
            }
        }
        Ok(())
    }

    /// Affinity per concept id of `vocab` (listed concepts, the default elsewhere).
    pub(crate) fn affinity_table(&self, vocab: &Vocabulary) -> Vec<f64> {
        let mut table = vec![self.default_affinity; vocab.len()];
        for (concept, v) in &self.affinity {
            if let Some(id) = vocab.lookup(concept) {
                table[id as usize] = *v;
            }
        }
        table
    }
}

/// A bundled profile by name (`people-everywhere`, `kitchenware`, `mild`, and the
/// `people-everywhere-treated` / `-overcorrected` stand-ins for a remedied model).
pub fn profile_by_name(name: &str) -> Result<SimProfile, SimError> {
    let name = name.strip_prefix("sim:").unwrap_or(name);
    let (_, text) = BUNDLED_PROFILES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| SimError::UnknownProfile { name: name.to_string(), available: bundled_profile_names().join(", ") })?;
    SimProfile::from_toml_str(text, &format!("sim:{name}"))
}

/// Names of the bundled profiles.
pub fn bundled_profile_names() -> Vec<&'static str> {
    BUNDLED_PROFILES.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_profiles_parse_and_validate() {
        let vocab = Vocabulary::coco80();
        for name in bundled_profile_names() {
            let p = profile_by_name(name).unwrap();
            assert_eq!(p.name, name);
            p.validate(&vocab).unwrap();
            assert_eq!(SimProfile::resolve(&format!("sim:{name}")).unwrap(), p);
        }
        assert_eq!(profile_by_name(DEFAULT_PROFILE).unwrap().name, DEFAULT_PROFILE);
    }

    #[test]
    fn bad_profiles_name_the_problem() {
        let err = profile_by_name("nope").unwrap_err().to_string();
        assert!(err.contains("\"nope\"") && err.contains("kitchenware"), "{err}");
        let err = SimProfile::from_toml_str("schema_version = 1\nname = 'x'\nbase_rate = 1.0\ncount_error_rate = 2.0\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("count_error_rate") && err.contains("t.toml"), "{err}");
        let p = SimProfile::from_toml_str("schema_version = 1\nname = 'x'\nbase_rate = 1.0\n[affinity]\nunicorn = 1.0\n", "t").unwrap();
        let err = p.validate(&Vocabulary::coco80()).unwrap_err().to_string();
        assert!(err.contains("unicorn"), "{err}");
        let err = SimProfile::from_toml_str("schema_version = 1\nname = 'x'\nbase_rate = 1.0\nbogus = 3\n", "t").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = SimProfile::resolve("/nonexistent/profile.toml").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/profile.toml"), "{err}");
        let err = SimProfile::resolve("sim:/nonexistent/profile.toml").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/profile.toml"), "{err}");
    }

    #[test]
    fn a_profile_file_resolves_with_and_without_sim() {
        let file = format!("{}/../../configs/sim/mild.toml", env!("CARGO_MANIFEST_DIR"));
        let p = SimProfile::from_file(&file).unwrap();
        assert_eq!(SimProfile::resolve(&format!("sim:{file}")).unwrap(), p);
        assert_eq!(SimProfile::resolve(&file).unwrap(), p);
    }
}
