//! Before and after a remedy: did the targeted concepts get better, did anything get worse,
//! did the model over-correct (deny what is there)?
//!
//! Every rate carries a Wilson score interval, and a change counts only when the two
//! intervals do not overlap: conservative on purpose (about p < 0.006 at 95 %), so a reader
//! can trust a flag. The per-concept intervals share the confidence level (Bonferroni over
//! all concept comparisons): a report compares dozens of concepts at once, and at 95 % each,
//! one unchanged model in three or so would show a concept "getting worse" by chance.
//! Over-correction is a model that learned to say "no": its recall falls (CHAIR recall: the
//! present objects its descriptions name; POPE recall: the present objects it says yes to).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::pope::{Confusion, PopeMetrics};
use crate::profile::{ConceptCounts, Summary};

pub const BEFORE_AFTER_SCHEMA_VERSION: u32 = 1;

/// A proportion k / n with its Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub k: u64,
    pub n: u64,
    pub rate: f64,
    pub low: f64,
    pub high: f64,
}

/// The Wilson score interval of k successes in n trials; n = 0 says nothing: [0, 1].
pub fn wilson(k: u64, n: u64, z: f64) -> Interval {
    if n == 0 {
        return Interval { k, n, rate: 0.0, low: 0.0, high: 1.0 };
    }
    let k = k.min(n);
    let (nf, p) = (n as f64, k as f64 / n as f64);
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    Interval { k, n, rate: p, low: (centre - half).max(0.0), high: (centre + half).min(1.0) }
}

/// The two-sided normal quantile for a confidence level in (0, 1) (Abramowitz & Stegun
/// 26.2.23, error below 5e-4: plenty for an interval's width).
pub fn z_for(confidence: f64) -> Result<f64, CoreError> {
    if !(confidence > 0.5 && confidence < 1.0) {
        return Err(CoreError::invalid("confidence", "must be a level between 0.5 and 1, e.g. 0.95"));
    }
    let p = (1.0 - confidence) / 2.0;
    let t = (-2.0 * p.ln()).sqrt();
    Ok(t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The after interval lies wholly below the before interval.
    Fell,
    /// Wholly above.
    Rose,
    /// The intervals overlap: no change the data can vouch for.
    Within,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateChange {
    pub before: Interval,
    pub after: Interval,
    pub change: Change,
}

impl RateChange {
    pub fn new(before: Interval, after: Interval) -> Self {
        let change = if before.n == 0 || after.n == 0 {
            Change::Within
        } else if after.high < before.low {
            Change::Fell
        } else if after.low > before.high {
            Change::Rose
        } else {
            Change::Within
        };
        RateChange { before, after, change }
    }
}

/// What one job contributes to the comparison.
#[derive(Debug, Clone, Default)]
pub struct JobFacts {
    pub job: String,
    pub model: String,
    /// The merged summary of its diagnosis shards.
    pub summary: Summary,
    /// Concepts its generation plan aimed at, with their negative-instruction quota.
    pub targeted: BTreeMap<String, u64>,
    /// POPE results by question set (`random`, `popular`, `adversarial`, …).
    pub pope: BTreeMap<String, Confusion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptChange {
    pub concept: String,
    /// Aimed at by the before job's generation plan.
    pub targeted: bool,
    /// Its negative instructions in that plan.
    pub negatives: u64,
    /// Images where it was hallucinated / images where it was absent.
    pub hallucination: RateChange,
    /// Images whose description missed it / images where it was present.
    pub miss: RateChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Worsening {
    /// Hallucinated more often.
    Hallucinated,
    /// Missed more often where present.
    Missed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worse {
    pub concept: String,
    pub what: Worsening,
    pub before: f64,
    pub after: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopeChange {
    /// The question set (`adversarial`, …).
    pub set: String,
    pub before: PopeMetrics,
    pub after: PopeMetrics,
    /// Present objects answered yes.
    pub recall: RateChange,
    /// All questions answered yes.
    pub yes_ratio: RateChange,
    /// Absent objects answered yes: POPE's hallucination rate.
    pub false_yes: RateChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The targeted concepts are hallucinated less, and nothing got worse.
    Improved,
    /// Recall fell: the model now denies or leaves out objects that are there.
    OverCorrected,
    /// Something got worse beyond its interval (and recall held).
    Regressed,
    /// No change the intervals vouch for on the targeted concepts.
    Inconclusive,
}

impl Verdict {
    pub fn headline(self) -> &'static str {
        match self {
            Verdict::Improved => "the remedy worked",
            Verdict::OverCorrected => "over-corrected: fewer hallucinations, but present objects are denied too",
            Verdict::Regressed => "something got worse",
            Verdict::Inconclusive => "no clear change",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeforeAfter {
    pub schema_version: u32,
    pub before_job: String,
    pub after_job: String,
    pub before_model: String,
    pub after_model: String,
    pub confidence: f64,
    /// The level of each per-concept interval: `confidence` shared over all of them.
    pub concept_confidence: f64,
    pub verdict: Verdict,
    /// One sentence per finding, most important first.
    pub findings: Vec<String>,
    /// Pooled over the targeted concepts (all concepts when the plan targeted none).
    pub targeted: RateChange,
    pub chair_s: RateChange,
    pub chair_i: RateChange,
    pub recall: RateChange,
    /// Targeted first (largest quota first), then by the larger of the two rates.
    pub concepts: Vec<ConceptChange>,
    pub worse: Vec<Worse>,
    /// Question sets both jobs were evaluated on.
    pub pope: Vec<PopeChange>,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Compares two jobs; `confidence` sets the headline intervals (0.95 usual) and the
/// simultaneous level of the per-concept ones.
pub fn compare_jobs(before: &JobFacts, after: &JobFacts, confidence: f64) -> Result<BeforeAfter, CoreError> {
    let z = z_for(confidence)?;
    let (b, a) = (&before.summary, &after.summary);
    let names: BTreeSet<&String> = b.concepts.keys().chain(a.concepts.keys()).chain(before.targeted.keys()).collect();
    let counts = |s: &Summary, n: &str| s.concepts.get(n).cloned().unwrap_or_default();
    let shown: Vec<(&String, ConceptCounts, ConceptCounts)> = names
        .into_iter()
        .map(|name| (name, counts(b, name), counts(a, name)))
        .filter(|(name, cb, ca)| {
            cb.hallucinated + ca.hallucinated + cb.present + ca.present + cb.mentions + ca.mentions > 0
                || before.targeted.contains_key(*name)
        })
        .collect();
    // two comparisons per concept: Bonferroni keeps the chance of any false flag in the table
    // at 1 - confidence, where per-interval 95 % would flag a third of unchanged models
    let comparisons = (2 * shown.len()).max(1) as f64;
    let concept_confidence = 1.0 - (1.0 - confidence) / comparisons;
    let zc = z_for(concept_confidence)?;
    let mut concepts: Vec<ConceptChange> = Vec::new();
    for (name, cb, ca) in shown {
        concepts.push(ConceptChange {
            concept: name.clone(),
            targeted: before.targeted.contains_key(name),
            negatives: before.targeted.get(name).copied().unwrap_or(0),
            hallucination: RateChange::new(wilson(cb.hallucinated, cb.opportunities, zc), wilson(ca.hallucinated, ca.opportunities, zc)),
            miss: RateChange::new(wilson(cb.missed, cb.present, zc), wilson(ca.missed, ca.present, zc)),
        });
    }
    let top = |c: &ConceptChange| c.hallucination.before.rate.max(c.hallucination.after.rate);
    concepts.sort_by(|x, y| {
        y.targeted.cmp(&x.targeted).then(y.negatives.cmp(&x.negatives)).then(top(y).total_cmp(&top(x))).then(x.concept.cmp(&y.concept))
    });

    let pooled = |s: &Summary, only_targeted: bool| {
        let (mut k, mut n) = (0, 0);
        for (name, c) in &s.concepts {
            if !only_targeted || before.targeted.contains_key(name) {
                k += c.hallucinated;
                n += c.opportunities;
            }
        }
        wilson(k, n, z)
    };
    let any_target = !before.targeted.is_empty();
    let targeted = RateChange::new(pooled(b, any_target), pooled(a, any_target));
    let chair_s = RateChange::new(wilson(b.hallucinated_images, b.images, z), wilson(a.hallucinated_images, a.images, z));
    let chair_i = RateChange::new(wilson(b.hallucinated_mentions, b.mentions, z), wilson(a.hallucinated_mentions, a.mentions, z));
    let recall = RateChange::new(wilson(b.covered_objects, b.truth_objects, z), wilson(a.covered_objects, a.truth_objects, z));

    let mut pope = Vec::new();
    for (set, cb) in &before.pope {
        let Some(ca) = after.pope.get(set) else { continue };
        let rc = |f: &dyn Fn(&Confusion) -> (u64, u64)| {
            let ((kb, nb), (ka, na)) = (f(cb), f(ca));
            RateChange::new(wilson(kb, nb, z), wilson(ka, na, z))
        };
        pope.push(PopeChange {
            set: set.clone(),
            before: cb.metrics(),
            after: ca.metrics(),
            recall: rc(&|c| (c.tp, c.tp + c.fn_)),
            yes_ratio: rc(&|c| (c.tp + c.fp, c.questions())),
            false_yes: rc(&|c| (c.fp, c.fp + c.tn)),
        });
    }

    let mut worse = Vec::new();
    for c in &concepts {
        for (what, r) in [(Worsening::Hallucinated, &c.hallucination), (Worsening::Missed, &c.miss)] {
            if r.change == Change::Rose {
                worse.push(Worse { concept: c.concept.clone(), what, before: r.before.rate, after: r.after.rate });
            }
        }
    }

    // the verdict, and the sentences a reader needs to trust it
    let mut findings = Vec::new();
    let scope = if any_target { "targeted concepts" } else { "all concepts" };
    let t = &targeted;
    findings.push(match t.change {
        Change::Fell => format!("{scope} hallucinated less: {} → {}", pct(t.before.rate), pct(t.after.rate)),
        Change::Rose => format!("{scope} hallucinated more: {} → {}", pct(t.before.rate), pct(t.after.rate)),
        Change::Within => format!("{scope}: {} → {}, within the intervals", pct(t.before.rate), pct(t.after.rate)),
    });
    // the concepts the plan weighted most, one by one: the pooled rate dilutes them
    let main: Vec<String> = concepts
        .iter()
        .filter(|c| c.targeted)
        .take(3)
        .map(|c| {
            let h = &c.hallucination;
            let how = match h.change {
                Change::Fell => "fell",
                Change::Rose => "rose",
                Change::Within => "within intervals",
            };
            format!("{} {} → {} ({how})", c.concept, pct(h.before.rate), pct(h.after.rate))
        })
        .collect();
    if !main.is_empty() {
        findings.push(format!("most targeted: {}", main.join(", ")));
    }
    let mut recall_fell = Vec::new();
    if recall.change == Change::Fell {
        recall_fell.push(format!("CHAIR recall {} → {}", pct(recall.before.rate), pct(recall.after.rate)));
    }
    for p in &pope {
        if p.recall.change == Change::Fell {
            recall_fell.push(format!(
                "POPE {} recall {} → {} (yes-ratio {} → {})",
                p.set,
                pct(p.recall.before.rate),
                pct(p.recall.after.rate),
                pct(p.yes_ratio.before.rate),
                pct(p.yes_ratio.after.rate)
            ));
        }
    }
    let over_corrected = !recall_fell.is_empty();
    if over_corrected {
        findings.insert(0, format!("the model now misses objects that are there: {}", recall_fell.join("; ")));
    }
    let mut rose: Vec<String> = Vec::new();
    for (what, r) in [("CHAIR_s", &chair_s), ("CHAIR_i", &chair_i)] {
        if r.change == Change::Rose {
            rose.push(format!("{what} {} → {}", pct(r.before.rate), pct(r.after.rate)));
        }
    }
    for p in &pope {
        if p.false_yes.change == Change::Rose {
            rose.push(format!("POPE {} false yes {} → {}", p.set, pct(p.false_yes.before.rate), pct(p.false_yes.after.rate)));
        }
    }
    if !worse.is_empty() {
        let list: Vec<String> = worse
            .iter()
            .map(|w| {
                let what = match w.what {
                    Worsening::Hallucinated => "hallucinated",
                    Worsening::Missed => "missed",
                };
                format!("{} {what} {} → {}", w.concept, pct(w.before), pct(w.after))
            })
            .collect();
        rose.push(format!("{} concept(s) got worse: {}", worse.len(), list.join(", ")));
    }
    let regressed = !rose.is_empty() || t.change == Change::Rose;
    findings.extend(rose);
    let verdict = if over_corrected {
        Verdict::OverCorrected
    } else if regressed {
        Verdict::Regressed
    } else if t.change == Change::Fell {
        findings.push("nothing got worse beyond its interval".into());
        Verdict::Improved
    } else {
        Verdict::Inconclusive
    };
    Ok(BeforeAfter {
        schema_version: BEFORE_AFTER_SCHEMA_VERSION,
        before_job: before.job.clone(),
        after_job: after.job.clone(),
        before_model: before.model.clone(),
        after_model: after.model.clone(),
        confidence,
        concept_confidence,
        verdict,
        findings,
        targeted,
        chair_s,
        chair_i,
        recall,
        concepts,
        worse,
        pope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_hand_computed_values() {
        let z = z_for(0.95).unwrap();
        assert!((z - 1.959964).abs() < 5e-4, "{z}");
        // 8 of 10 at z = 1.96: centre (0.8 + 0.19208) / 1.38416, half 1.96·sqrt(0.016 + 0.0096040) / 1.38416
        let i = wilson(8, 10, 1.96);
        assert!((i.low - 0.4902).abs() < 1e-4 && (i.high - 0.9433).abs() < 1e-4, "{i:?}");
        let zero = wilson(0, 50, 1.96);
        assert_eq!(zero.low, 0.0);
        assert!((zero.high - 0.0714).abs() < 1e-4, "{zero:?}");
        assert_eq!(wilson(0, 0, 1.96).high, 1.0);
        assert!(z_for(1.0).is_err() && z_for(f64::NAN).is_err() && z_for(0.3).is_err());
    }

    #[test]
    fn a_change_needs_disjoint_intervals() {
        let z = 1.96;
        assert_eq!(RateChange::new(wilson(40, 100, z), wilson(10, 100, z)).change, Change::Fell);
        assert_eq!(RateChange::new(wilson(10, 100, z), wilson(40, 100, z)).change, Change::Rose);
        // 0.30 vs 0.20 on 100 each: a difference, but the intervals overlap
        assert_eq!(RateChange::new(wilson(30, 100, z), wilson(20, 100, z)).change, Change::Within);
        assert_eq!(RateChange::new(wilson(0, 0, z), wilson(9, 10, z)).change, Change::Within);
    }

    fn summary(concepts: &[(&str, u64, u64, u64, u64)], covered: u64, truth: u64) -> Summary {
        let mut s = Summary {
            images: 200,
            hallucinated_images: 50,
            mentions: 600,
            hallucinated_mentions: 60,
            truth_objects: truth,
            covered_objects: covered,
            ..Summary::default()
        };
        for &(name, hallucinated, opportunities, missed, present) in concepts {
            s.concepts.insert(
                name.into(),
                ConceptCounts {
                    hallucinated,
                    opportunities,
                    missed,
                    present,
                    mentions: present - missed + hallucinated,
                    ..Default::default()
                },
            );
        }
        s
    }

    fn facts(job: &str, s: Summary, pope_fn: u64) -> JobFacts {
        let mut pope = BTreeMap::new();
        pope.insert("adversarial".to_string(), Confusion { tp: 300 - pope_fn, fn_: pope_fn, fp: 40, tn: 260 });
        JobFacts {
            job: job.into(),
            model: job.into(),
            summary: s,
            targeted: [("person".to_string(), 40), ("chair".to_string(), 20)].into(),
            pope,
        }
    }

    #[test]
    fn the_verdict_tells_improvement_from_over_correction_and_regression() {
        let before =
            facts("before", summary(&[("person", 60, 100, 10, 100), ("chair", 50, 150, 5, 50), ("cup", 5, 190, 2, 10)], 400, 500), 10);
        // targeted fell, the rest held
        let treated =
            facts("treated", summary(&[("person", 10, 100, 11, 100), ("chair", 8, 150, 6, 50), ("cup", 6, 190, 2, 10)], 395, 500), 12);
        let r = compare_jobs(&before, &treated, 0.95).unwrap();
        assert_eq!(r.verdict, Verdict::Improved, "{:?}", r.findings);
        assert_eq!(r.targeted.change, Change::Fell);
        assert_eq!((r.targeted.before.k, r.targeted.before.n), (110, 250));
        assert_eq!(r.concepts[0].concept, "person", "largest quota first");
        assert!(r.concepts[0].targeted && !r.concepts[2].targeted);
        assert!(r.worse.is_empty());
        assert!(
            r.findings.iter().any(|f| f == "most targeted: person 60.0% → 10.0% (fell), chair 33.3% → 5.3% (fell)"),
            "{:?}",
            r.findings
        );

        // same falls, but recall collapses: over-corrected
        let over = facts("over", summary(&[("person", 5, 100, 50, 100), ("chair", 4, 150, 25, 50), ("cup", 3, 190, 6, 10)], 250, 500), 120);
        let r = compare_jobs(&before, &over, 0.95).unwrap();
        assert_eq!(r.verdict, Verdict::OverCorrected);
        assert!(r.findings[0].contains("CHAIR recall") && r.findings[0].contains("POPE adversarial recall"), "{:?}", r.findings);
        assert!(r.worse.iter().any(|w| w.concept == "person" && w.what == Worsening::Missed));
        assert_eq!(r.pope[0].recall.change, Change::Fell);

        // targeted fell but cup is now hallucinated far more: regressed, naming cup
        let worse =
            facts("worse", summary(&[("person", 10, 100, 10, 100), ("chair", 8, 150, 5, 50), ("cup", 60, 190, 2, 10)], 400, 500), 10);
        let r = compare_jobs(&before, &worse, 0.95).unwrap();
        assert_eq!(r.verdict, Verdict::Regressed);
        assert_eq!(r.worse, vec![Worse { concept: "cup".into(), what: Worsening::Hallucinated, before: 5.0 / 190.0, after: 60.0 / 190.0 }]);

        // the same model twice: nothing to vouch for
        let r = compare_jobs(&before, &before, 0.95).unwrap();
        assert_eq!(r.verdict, Verdict::Inconclusive);
    }
}
