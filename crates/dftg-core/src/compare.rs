//! How two models' hallucination profiles differ: the evidence that specificity is real.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::profile::Profile;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptDelta {
    pub concept: String,
    pub share_a: f64,
    pub share_b: f64,
    pub rate_a: f64,
    pub rate_b: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub model_a: String,
    pub model_b: String,
    /// Jensen–Shannon divergence (base 2, in [0, 1]) of the object-hallucination distributions.
    pub jensen_shannon: f64,
    pub top_k: usize,
    /// |top-k(a) ∩ top-k(b)| / k.
    pub top_k_overlap: f64,
    pub top_a: Vec<String>,
    pub top_b: Vec<String>,
    /// Concepts whose share differs most, largest difference first.
    pub most_different: Vec<ConceptDelta>,
}

pub fn compare(a: &Profile, b: &Profile, k: usize) -> Comparison {
    let names: BTreeSet<&str> = a.concepts.iter().chain(&b.concepts).map(|c| c.concept.as_str()).collect();
    let get = |p: &Profile, n: &str| p.concept(n).map(|c| (c.share, c.rate)).unwrap_or((0.0, 0.0));
    let mut js = 0.0;
    let mut deltas = Vec::new();
    for n in &names {
        let (pa, ra) = get(a, n);
        let (pb, rb) = get(b, n);
        let m = (pa + pb) / 2.0;
        if pa > 0.0 {
            js += 0.5 * pa * (pa / m).log2();
        }
        if pb > 0.0 {
            js += 0.5 * pb * (pb / m).log2();
        }
        deltas.push(ConceptDelta { concept: n.to_string(), share_a: pa, share_b: pb, rate_a: ra, rate_b: rb });
    }
    deltas.sort_by(|x, y| (y.share_a - y.share_b).abs().total_cmp(&(x.share_a - x.share_b).abs()).then(x.concept.cmp(&y.concept)));
    deltas.truncate(k.max(1) * 2);
    let top =
        |p: &Profile| -> Vec<String> { p.concepts.iter().filter(|c| c.hallucinations > 0).take(k).map(|c| c.concept.clone()).collect() };
    let (ta, tb) = (top(a), top(b));
    let overlap = ta.iter().filter(|c| tb.contains(c)).count();
    Comparison {
        model_a: a.model.clone(),
        model_b: b.model.clone(),
        jensen_shannon: js.clamp(0.0, 1.0),
        top_k: k,
        top_k_overlap: if k == 0 { 0.0 } else { overlap as f64 / k as f64 },
        top_a: ta,
        top_b: tb,
        most_different: deltas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ConceptProfile;

    fn profile(model: &str, shares: &[(&str, u64)]) -> Profile {
        let total: u64 = shares.iter().map(|s| s.1).sum();
        Profile {
            schema_version: 1,
            model: model.into(),
            images: 10,
            failed_images: 0,
            errors_by_reason: Default::default(),
            totals: Default::default(),
            chair_s: 0.0,
            chair_i: 0.0,
            recall: 0.0,
            concepts: shares
                .iter()
                .map(|(c, n)| ConceptProfile {
                    concept: c.to_string(),
                    mentions: *n,
                    hallucinations: *n,
                    opportunities: 10,
                    rate: *n as f64 / 10.0,
                    share: *n as f64 / total as f64,
                    count_hallucinations: 0,
                    attribute_hallucinations: 0,
                    present: 0,
                    missed: 0,
                    triggers: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn identical_profiles_have_zero_divergence_disjoint_have_one() {
        let a = profile("a", &[("dog", 3), ("cat", 1)]);
        let c = compare(&a, &a, 2);
        assert!(c.jensen_shannon.abs() < 1e-12);
        assert_eq!(c.top_k_overlap, 1.0);
        let b = profile("b", &[("cup", 2), ("fork", 2)]);
        let c = compare(&a, &b, 2);
        assert!((c.jensen_shannon - 1.0).abs() < 1e-12);
        assert_eq!(c.top_k_overlap, 0.0);
        assert_eq!(c.most_different[0].concept, "dog");
    }
}
