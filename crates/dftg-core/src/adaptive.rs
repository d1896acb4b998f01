//! Adaptive diagnosis: when is the profile known well enough to stop asking the model?
//!
//! The coordinator diagnoses the shards in a seeded random order, in waves, and looks at the
//! folded summary after each wave. [`decide`] says whether the set of the `top_k` concepts
//! (by hallucination rate = hallucinated / opportunities, among concepts with at least
//! `min_opportunities`) is settled at the stated confidence.
//!
//! The criterion: for every pair of a concept i inside the candidate top-k and a concept j
//! outside it, a one-sided lower bound on rate_i − rate_j (Newcombe's hybrid score bound, from
//! the two Wilson intervals) at the level `1 - (1 - confidence) / (k × (n − k) × looks)`. The
//! rule stops when every such bound is above zero. Soundness: if the stopped set S differs
//! from the true top-k T, some i ∈ S \ T and j ∈ T \ S have true rate_i < rate_j, yet the
//! bound for (i, j) came out above zero. Such (i, j) run over (non-top, top) pairs of the
//! fixed truth T: k × (n − k) pairs, at each of the planned looks; by the union bound the
//! chance of a wrong stop is at most 1 − `confidence`, however often the driver peeks. Where
//! the k-th and (k+1)-th rates tie, their difference's bound stays below zero however many
//! images are seen, so the rule never stops early and names the pair.

use serde::{Deserialize, Serialize};

use crate::before_after::{wilson, z_for, Interval};
use crate::profile::Summary;
use crate::seed::stable_hash;

/// What "the profile is known" means for one job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopRule {
    pub top_k: usize,
    /// Family confidence in (0.5, 1): the chance the stopped set is the true top-k.
    pub confidence: f64,
    /// Concepts with fewer opportunities are not ranked (a rate of 1/3 is not a rate).
    pub min_opportunities: u64,
    /// Looks planned (one per wave); the correction divides by it.
    pub looks: u32,
}

/// One look's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopDecision {
    pub stop: bool,
    /// Why it stopped, or why not yet (names the concepts that are not separated).
    pub reason: String,
    /// The highest family confidence at which the top-k set is separated now (0 when it is
    /// not separated even at 50 %).
    pub confidence: f64,
    /// The current top-k, highest rate first.
    pub top: Vec<String>,
    /// Concepts with at least `min_opportunities`.
    pub eligible: usize,
}

/// The eligible concepts as (name, hallucinated, opportunities), highest rate first (then by
/// name).
fn ranked<'a>(s: &'a Summary, rule: &StopRule) -> Vec<(&'a str, u64, u64)> {
    let mut v: Vec<(&str, u64, u64)> = s
        .concepts
        .iter()
        .filter(|(_, c)| c.opportunities >= rule.min_opportunities.max(1))
        .map(|(name, c)| (name.as_str(), c.hallucinated.min(c.opportunities), c.opportunities))
        .collect();
    // rate a/b > c/d  ⟺  a·d > c·b: exact, no float ties
    v.sort_by(|a, b| (u128::from(b.1) * u128::from(a.2)).cmp(&(u128::from(a.1) * u128::from(b.2))).then(a.0.cmp(b.0)));
    v
}

/// The z of one one-sided comparison for a family confidence over `comparisons` of them
/// (a one-sided level 1 − α is the two-sided level 1 − 2α).
fn z_family(confidence: f64, comparisons: u64) -> f64 {
    let alpha = (1.0 - confidence) / comparisons.max(1) as f64;
    // z_for refuses only levels outside (0.5, 1), which 1 − 2α never is for confidence > 0.5
    z_for(1.0 - 2.0 * alpha).unwrap_or(f64::INFINITY)
}

/// The weakest comparison: (rank inside, rank outside, lower bound of the difference of
/// their rates), ranks 0-based. Newcombe's hybrid score bound from the two Wilson intervals.
fn weakest(v: &[(&str, u64, u64)], k: usize, z: f64) -> (usize, usize, f64) {
    let iv: Vec<Interval> = v.iter().map(|c| wilson(c.1, c.2, z)).collect();
    let mut worst = (0, k, f64::INFINITY);
    for (i, a) in iv.iter().enumerate().take(k) {
        for (j, b) in iv.iter().enumerate().skip(k) {
            let low = (a.rate - b.rate) - ((a.rate - a.low).powi(2) + (b.high - b.rate).powi(2)).sqrt();
            if low < worst.2 {
                worst = (i, j, low);
            }
        }
    }
    worst
}

fn separated(v: &[(&str, u64, u64)], k: usize, z: f64) -> bool {
    weakest(v, k, z).2 > 0.0
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Whether the top-k set is settled in `s` under `rule`.
pub fn decide(s: &Summary, rule: &StopRule) -> StopDecision {
    let v = ranked(s, rule);
    let k = rule.top_k;
    let top: Vec<String> = v.iter().take(k).map(|c| c.0.to_string()).collect();
    let eligible = v.len();
    if k == 0 || eligible <= k {
        return StopDecision {
            stop: false,
            reason: format!(
                "only {eligible} concepts have at least {} opportunities; {} are needed to tell the top {k} from the rest",
                rule.min_opportunities,
                k + 1
            ),
            confidence: 0.0,
            top,
            eligible,
        };
    }
    let intervals = k as u64 * (eligible - k) as u64 * u64::from(rule.looks.max(1));
    let z = z_family(rule.confidence, intervals);
    let stop = separated(&v, k, z);
    // the highest family confidence at which the set is separated now (bisection: the
    // intervals widen as the confidence grows)
    let reached = if !separated(&v, k, z_family(0.5 + 1e-9, intervals)) {
        0.0
    } else {
        let (mut lo, mut hi) = (0.5 + 1e-9, 1.0 - 1e-12);
        for _ in 0..50 {
            let mid = (lo + hi) / 2.0;
            if separated(&v, k, z_family(mid, intervals)) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let (wi, wo, gap) = weakest(&v, k, z);
    let rate = |c: &(&str, u64, u64)| crate::profile::ratio(c.1, c.2);
    let level = format!(
        "{:.0}% (Newcombe score bounds, Bonferroni over {k} × {} comparisons × {} looks)",
        rule.confidence * 100.0,
        eligible - k,
        rule.looks.max(1)
    );
    let reason = if stop {
        format!(
            "top {k} settled at {level}: the closest pair, {} ({}, rate {:.4}) over {} ({}, rate {:.4}), differs by at least {:.4}",
            v[wi].0,
            ordinal(wi + 1),
            rate(&v[wi]),
            v[wo].0,
            ordinal(wo + 1),
            rate(&v[wo]),
            gap
        )
    } else {
        let (kth, next) = (&v[k - 1], &v[k]);
        let tie = if u128::from(kth.1) * u128::from(next.2) == u128::from(next.1) * u128::from(kth.2) {
            "tie exactly"
        } else if weakest(&v[k - 1..=k], 1, z).2 <= 0.0 {
            "tie within their bounds"
        } else {
            "are apart, but not every pair is"
        };
        format!(
            "top {k} not settled at {level}: the {} concept {} (rate {:.4}) and the {} {} (rate {:.4}) {tie}; {} ({}) is not surely above {} ({}): the difference's lower bound is {:.4}",
            ordinal(k),
            kth.0,
            rate(kth),
            ordinal(k + 1),
            next.0,
            rate(next),
            v[wi].0,
            ordinal(wi + 1),
            v[wo].0,
            ordinal(wo + 1),
            gap
        )
    };
    StopDecision { stop, reason, confidence: reached, top, eligible }
}

/// The shards in a seeded random order, split into at most `waves` waves of near-equal size.
/// The order depends on the seed and the shard number only.
pub fn plan_waves(shards: u32, seed: u64, waves: u32) -> Vec<Vec<u32>> {
    let mut order: Vec<u32> = (0..shards).collect();
    order.sort_by_key(|&s| (stable_hash(seed, &["diagnosis-wave-order", &s.to_string()]), s));
    let waves = waves.clamp(1, shards.max(1)) as usize;
    let n = order.len();
    (0..waves).map(|w| order[w * n / waves..(w + 1) * n / waves].to_vec()).filter(|w| !w.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ConceptCounts;

    fn summary(rates: &[(&str, u64, u64)]) -> Summary {
        let mut s = Summary::default();
        for (name, h, n) in rates {
            s.concepts.insert(name.to_string(), ConceptCounts { hallucinated: *h, opportunities: *n, ..ConceptCounts::default() });
        }
        s
    }

    fn rule(k: usize) -> StopRule {
        StopRule { top_k: k, confidence: 0.95, min_opportunities: 100, looks: 20 }
    }

    #[test]
    fn separated_rates_stop_with_the_top_set() {
        // two clear leaders at 10 % and 8 %, the rest at 1 % or below, 5 000 chances each
        let s = summary(&[("cup", 500, 5000), ("bowl", 400, 5000), ("fork", 50, 5000), ("dog", 10, 5000), ("cat", 0, 5000)]);
        let d = decide(&s, &rule(2));
        assert!(d.stop, "{}", d.reason);
        assert_eq!(d.top, ["cup", "bowl"]);
        assert!(d.confidence >= 0.95, "{}", d.confidence);
        assert!(d.reason.contains("settled") && d.reason.contains("fork"), "{}", d.reason);
    }

    #[test]
    fn tied_rates_do_not_stop_and_say_why() {
        let s = summary(&[("cup", 500, 5000), ("bowl", 300, 5000), ("fork", 300, 5000), ("dog", 10, 5000)]);
        let d = decide(&s, &rule(2));
        assert!(!d.stop);
        assert!(d.reason.contains("2nd concept bowl") && d.reason.contains("3rd fork") && d.reason.contains("tie"), "{}", d.reason);
        assert!(d.confidence < 0.5 + 1e-6);
        // however many images: ties never separate
        let big = summary(&[("cup", 50_000, 500_000), ("bowl", 30_000, 500_000), ("fork", 30_000, 500_000), ("dog", 1000, 500_000)]);
        assert!(!decide(&big, &rule(2)).stop);
    }

    #[test]
    fn few_chances_are_not_ranked_and_small_samples_do_not_stop() {
        // "knife" at 3/20 is not ranked; with it gone only 2 concepts remain for k = 2
        let s = summary(&[("cup", 500, 5000), ("bowl", 400, 5000), ("knife", 3, 20)]);
        let d = decide(&s, &rule(2));
        assert!(!d.stop && d.eligible == 2 && d.reason.contains("only 2 concepts"), "{}", d.reason);
        // the same rates as the separated case on 1/50th of the data are not settled
        let small = summary(&[("cup", 10, 100), ("bowl", 8, 100), ("fork", 1, 100), ("dog", 0, 100)]);
        assert!(!decide(&small, &rule(2)).stop);
    }

    #[test]
    fn looking_more_often_needs_more_evidence() {
        let s = summary(&[("cup", 120, 1500), ("bowl", 90, 1500), ("fork", 50, 1500), ("dog", 5, 1500)]);
        let once = decide(&s, &StopRule { looks: 1, ..rule(2) });
        let often = decide(&s, &StopRule { looks: 1000, ..rule(2) });
        assert!(once.stop, "{}", once.reason);
        assert!(!often.stop, "{}", often.reason);
    }

    #[test]
    fn waves_cover_every_shard_once_in_a_seeded_order() {
        let w = plan_waves(103, 7, 10);
        assert_eq!(w.len(), 10);
        let mut all: Vec<u32> = w.concat();
        assert_ne!(all, (0..103).collect::<Vec<_>>(), "the order is shuffled");
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert!(w.iter().all(|x| x.len() == 10 || x.len() == 11));
        assert_eq!(plan_waves(103, 7, 10), w);
        assert_ne!(plan_waves(103, 8, 10), w);
        assert_eq!(plan_waves(3, 1, 20).len(), 3);
        assert!(plan_waves(0, 1, 20).is_empty());
    }
}
