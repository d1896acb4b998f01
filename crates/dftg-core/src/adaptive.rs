//! Adaptive diagnosis: when is the profile known well enough to stop asking the model?
//!
//! The coordinator diagnoses the shards in a seeded random order, in waves, and looks at the
//! folded summaries after each wave. [`decide`] says whether the set of the `top_k` concepts
//! (by hallucination rate = hallucinated / opportunities, among concepts with at least
//! `min_opportunities`) is settled at the stated confidence.
//!
//! The first wave is a pilot: it only says where the boundary between the k-th and the
//! (k+1)-th concept probably lies. The bounds use the later waves alone, so the pilot's data
//! and the weights it chose are independent of what is tested.
//!
//! The criterion: for every pair of a concept i inside the candidate top-k (by the later
//! waves) and a concept j outside it, a one-sided lower bound on rate_i − rate_j (Newcombe's
//! hybrid score bound, from the two Wilson intervals) at the level 1 − α·w(i, j) / looks, where
//! looks are the planned looks after the pilot. The rule stops when every such bound is above
//! zero. The weights w sum to 1 over all unordered pairs of concepts: half of the mass goes,
//! in equal parts, to the pairs among the `2 × BOUNDARY` concepts ranked around the k-th by
//! the pilot, the other half to every pair of the vocabulary's concepts.
//!
//! Soundness: if the stopped set S differs from the true top-k T, some i ∈ S \ T and
//! j ∈ T \ S have true rate_i < rate_j, yet the bound for (i, j) came out above zero at some
//! look. Given the pilot, each unordered pair is such a (non-top, top) pair of the fixed truth
//! T at most once, so by the union bound over pairs and looks the chance of a wrong stop is at
//! most α × Σ w = 1 − `confidence`, however often the driver peeks. Where the k-th and
//! (k+1)-th rates tie, their difference's bound stays below zero however many images are seen,
//! so the rule never stops early and names the pair.
//!
//! Why the pilot: a plain Bonferroni split over the k × (n − k) pairs spends nearly all of α
//! on pairs that are far apart (the most tempting concept against one never hallucinated),
//! and asks the one pair that decides for about 4.4 σ. Weighting by the pilot spends α where
//! the decision is made (BENCHMARKS.md, "Adaptive diagnosis").

use serde::{Deserialize, Serialize};

use crate::before_after::{wilson, z_for};
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

/// Concepts ranked around the k-th by the pilot, on each side, whose pairs share half of α.
pub const BOUNDARY: usize = 2;

/// The z of one one-sided comparison at level 1 − `alpha` (a one-sided level 1 − α is the
/// two-sided level 1 − 2α).
fn z_one_sided(alpha: f64) -> f64 {
    // z_for refuses only levels outside (0.5, 1), which 1 − 2α never is for 0 < α < 0.25
    z_for(1.0 - 2.0 * alpha.clamp(1e-300, 0.2499)).unwrap_or(f64::INFINITY)
}

/// The pilot's weights: which concepts sit at the boundary, and the weight of a pair inside
/// it and of any pair.
struct Weights<'a> {
    boundary: Vec<&'a str>,
    inside: f64,
    any: f64,
}

impl<'a> Weights<'a> {
    fn new(pilot: &'a Summary, rest: &Summary, rule: &StopRule) -> Self {
        let ranked = ranked(pilot, &StopRule { min_opportunities: 1, ..*rule });
        let k = rule.top_k;
        let boundary: Vec<&str> = ranked.iter().skip(k.saturating_sub(BOUNDARY)).take(k.min(BOUNDARY) + BOUNDARY).map(|c| c.0).collect();
        // every concept of the vocabulary has an entry once an image was diagnosed
        let n = pilot.concepts.keys().chain(rest.concepts.keys()).collect::<std::collections::BTreeSet<_>>().len().max(2);
        let b = boundary.len();
        let inside = if b >= 2 { 0.5 / (b * (b - 1) / 2) as f64 } else { 0.0 };
        Weights { boundary, inside, any: 0.5 / (n * (n - 1) / 2) as f64 }
    }

    /// Whether the pair {a, b} shares the boundary's half of α (weight `any + inside`, else `any`).
    fn at_boundary(&self, a: &str, b: &str) -> bool {
        self.boundary.contains(&a) && self.boundary.contains(&b)
    }
}

/// The weakest comparison at family confidence `confidence`: (rank inside, rank outside,
/// lower bound of the difference of their rates), ranks 0-based. Newcombe's hybrid score
/// bound from the two Wilson intervals, each pair at its own level.
fn weakest(v: &[(&str, u64, u64)], k: usize, w: &Weights, confidence: f64, looks: u32) -> (usize, usize, f64) {
    let alpha = (1.0 - confidence) / f64::from(looks.max(1));
    // a pair has one of two weights: two z values serve every pair
    let (z_any, z_boundary) = (z_one_sided(alpha * w.any), z_one_sided(alpha * (w.any + w.inside)));
    let mut worst = (0, k, f64::INFINITY);
    for (i, a) in v.iter().enumerate().take(k) {
        for (j, b) in v.iter().enumerate().skip(k) {
            let z = if w.at_boundary(a.0, b.0) { z_boundary } else { z_any };
            let (ia, ib) = (wilson(a.1, a.2, z), wilson(b.1, b.2, z));
            let low = (ia.rate - ib.rate) - ((ia.rate - ia.low).powi(2) + (ib.high - ib.rate).powi(2)).sqrt();
            if low < worst.2 {
                worst = (i, j, low);
            }
        }
    }
    worst
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

/// Whether the top-k set is settled under `rule`: `pilot` is the first wave's summary, `rest`
/// the later waves' (see the module docs).
pub fn decide(pilot: &Summary, rest: &Summary, rule: &StopRule) -> StopDecision {
    let v = ranked(rest, rule);
    let k = rule.top_k;
    let top: Vec<String> = v.iter().take(k).map(|c| c.0.to_string()).collect();
    let eligible = v.len();
    let not_yet = |reason: String| StopDecision { stop: false, reason, confidence: 0.0, top: top.clone(), eligible };
    let looks = rule.looks.saturating_sub(1);
    if looks == 0 {
        return not_yet("one wave is planned: the first wave only ranks the concepts (a pilot), so the rule cannot stop early".into());
    }
    if rest.images == 0 {
        return not_yet("the first wave is the pilot: it ranks the concepts, the waves after it are tested".into());
    }
    if k == 0 || eligible <= k {
        return not_yet(format!(
            "only {eligible} concepts have at least {} opportunities after the pilot; {} are needed to tell the top {k} from the rest",
            rule.min_opportunities,
            k + 1
        ));
    }
    let w = Weights::new(pilot, rest, rule);
    let separated = |confidence: f64| weakest(&v, k, &w, confidence, looks).2 > 0.0;
    let stop = separated(rule.confidence);
    // the highest family confidence at which the set is separated now (bisection: the
    // bounds widen as the confidence grows)
    let reached = if !separated(0.5 + 1e-9) {
        0.0
    } else {
        let (mut lo, mut hi) = (0.5 + 1e-9, 1.0 - 1e-12);
        for _ in 0..50 {
            let mid = (lo + hi) / 2.0;
            if separated(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let (wi, wo, gap) = weakest(&v, k, &w, rule.confidence, looks);
    let rate = |c: &(&str, u64, u64)| crate::profile::ratio(c.1, c.2);
    let level = format!(
        "{:.0}% (Newcombe score bounds on the waves after the pilot, weighted to the pilot's boundary {} over {} looks)",
        rule.confidence * 100.0,
        w.boundary.join(", "),
        looks
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
        } else if weakest(&v[k - 1..=k], 1, &w, rule.confidence, looks).2 <= 0.0 {
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

    /// A pilot with the same rates on a tenth of the chances.
    fn pilot_of(rates: &[(&str, u64, u64)]) -> Summary {
        let small: Vec<(&str, u64, u64)> = rates.iter().map(|(n, h, o)| (*n, h / 10, o / 10)).collect();
        summary(&small)
    }

    fn decide_on(rates: &[(&str, u64, u64)], rule: &StopRule) -> StopDecision {
        let mut rest = summary(rates);
        rest.images = 1000;
        decide(&pilot_of(rates), &rest, rule)
    }

    #[test]
    fn separated_rates_stop_with_the_top_set() {
        // two clear leaders at 10 % and 8 %, the rest at 1 % or below, 5 000 chances each
        let rates = [("cup", 500, 5000), ("bowl", 400, 5000), ("fork", 50, 5000), ("dog", 10, 5000), ("cat", 0, 5000)];
        let d = decide_on(&rates, &rule(2));
        assert!(d.stop, "{}", d.reason);
        assert_eq!(d.top, ["cup", "bowl"]);
        assert!(d.confidence >= 0.95, "{}", d.confidence);
        assert!(d.reason.contains("settled") && d.reason.contains("fork"), "{}", d.reason);
    }

    #[test]
    fn the_pilot_wave_alone_never_stops() {
        let rates = [("cup", 500, 5000), ("bowl", 400, 5000), ("fork", 50, 5000), ("dog", 10, 5000)];
        let d = decide(&summary(&rates), &Summary::default(), &rule(2));
        assert!(!d.stop && d.reason.contains("pilot"), "{}", d.reason);
        let one_wave = StopRule { looks: 1, ..rule(2) };
        assert!(!decide_on(&rates, &one_wave).stop);
    }

    #[test]
    fn tied_rates_do_not_stop_and_say_why() {
        let rates = [("cup", 500, 5000), ("bowl", 300, 5000), ("fork", 300, 5000), ("dog", 10, 5000)];
        let d = decide_on(&rates, &rule(2));
        assert!(!d.stop);
        assert!(d.reason.contains("2nd concept bowl") && d.reason.contains("3rd fork") && d.reason.contains("tie"), "{}", d.reason);
        assert!(d.confidence < 0.5 + 1e-6);
        // however many images: ties never separate
        let big = [("cup", 50_000, 500_000), ("bowl", 30_000, 500_000), ("fork", 30_000, 500_000), ("dog", 1000, 500_000)];
        assert!(!decide_on(&big, &rule(2)).stop);
    }

    #[test]
    fn few_chances_are_not_ranked_and_small_samples_do_not_stop() {
        // "knife" at 3/20 is not ranked; with it gone only 2 concepts remain for k = 2
        let d = decide_on(&[("cup", 500, 5000), ("bowl", 400, 5000), ("knife", 3, 20)], &rule(2));
        assert!(!d.stop && d.eligible == 2 && d.reason.contains("only 2 concepts"), "{}", d.reason);
        // the same rates as the separated case on 1/50th of the data are not settled
        assert!(!decide_on(&[("cup", 10, 100), ("bowl", 8, 100), ("fork", 1, 100), ("dog", 0, 100)], &rule(2)).stop);
    }

    #[test]
    fn looking_more_often_needs_more_evidence() {
        let rates = [("cup", 120, 1500), ("bowl", 90, 1500), ("fork", 50, 1500), ("dog", 5, 1500)];
        let once = decide_on(&rates, &StopRule { looks: 2, ..rule(2) });
        let often = decide_on(&rates, &StopRule { looks: 100_000, ..rule(2) });
        assert!(once.stop, "{}", once.reason);
        assert!(!often.stop, "{}", often.reason);
    }

    #[test]
    fn a_pilot_that_misplaces_the_boundary_costs_evidence_not_truth() {
        // 20 concepts; the decisive pair is bowl (2nd) over fork (3rd)
        let mut rates: Vec<(String, u64, u64)> = vec![("cup".into(), 300, 3000), ("bowl".into(), 200, 3000), ("fork".into(), 110, 3000)];
        rates.extend((0..17).map(|i| (format!("c{i:02}"), 10, 3000)));
        let rates: Vec<(&str, u64, u64)> = rates.iter().map(|(n, h, o)| (n.as_str(), *h, *o)).collect();
        let mut rest = summary(&rates);
        rest.images = 1000;
        let right = decide(&pilot_of(&rates), &rest, &rule(2));
        // a pilot that ranks two never-hallucinated concepts at the boundary
        let mut wrong: Vec<(&str, u64, u64)> = rates.iter().map(|(n, _, o)| (*n, 0, o / 10)).collect();
        wrong[3].1 = 40;
        wrong[4].1 = 30;
        let misled = decide(&summary(&wrong), &rest, &rule(2));
        assert_eq!(right.top, misled.top);
        assert!(right.confidence > misled.confidence, "{} vs {}", right.confidence, misled.confidence);
    }

    /// The guarantee, checked by simulation: with the k-th and (k+1)-th true rates close, runs
    /// that look after every wave stop on a wrong set far less often than 1 − confidence.
    #[test]
    fn wrong_stops_are_rarer_than_the_confidence_allows() {
        use rand::{Rng, SeedableRng};
        let truth = [("a", 0.10), ("b", 0.06), ("c", 0.05), ("d", 0.02), ("e", 0.01), ("f", 0.0)];
        let per_wave = 400u64;
        let rule = StopRule { top_k: 2, confidence: 0.9, min_opportunities: 100, looks: 10 };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut wrong, mut stopped) = (0, 0);
        for _ in 0..100 {
            let mut pilot = Summary::default();
            let mut rest = Summary::default();
            for wave in 0..rule.looks {
                let into = if wave == 0 { &mut pilot } else { &mut rest };
                into.images += per_wave;
                for (name, p) in truth {
                    let h = (0..per_wave).filter(|_| rng.gen_bool(p)).count() as u64;
                    let c = into.concepts.entry(name.to_string()).or_default();
                    c.hallucinated += h;
                    c.opportunities += per_wave;
                }
                let d = decide(&pilot, &rest, &rule);
                if d.stop {
                    stopped += 1;
                    wrong += usize::from(d.top != ["a", "b"]);
                    break;
                }
            }
        }
        assert!(wrong <= 3, "{wrong} wrong stops of {stopped}");
        assert!(stopped > 0, "never stopped: the test says nothing");
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
