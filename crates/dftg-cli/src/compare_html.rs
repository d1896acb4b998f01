//! `compare.html`: the before/after report, self-contained (inline CSS and SVG, no script, no
//! CDN). Read top-down it answers, in order: did the remedy work (the verdict banner), by how
//! much (headline rates with intervals), where (targeted concepts, drawn), and at what cost
//! (what got worse, POPE recall and yes-ratio).

use std::fmt::Write;

use dftg_core::before_after::{BeforeAfter, Change, ConceptChange, Interval, RateChange, Verdict, Worsening};

/// HTML-escapes text that came from a job (model names, concept names).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn interval(i: &Interval) -> String {
    format!("{} <span class=ci>[{}–{}] {}/{}</span>", pct(i.rate), pct(i.low), pct(i.high), i.k, i.n)
}

/// The change mark; `lower_is_better` says which direction is good news.
fn mark(c: Change, lower_is_better: bool) -> &'static str {
    match (c, lower_is_better) {
        (Change::Within, _) => "<span class=same>≈ within intervals</span>",
        (Change::Fell, true) => "<span class=good>▼ fell</span>",
        (Change::Rose, false) => "<span class=good>▲ rose</span>",
        (Change::Fell, false) => "<span class=bad>▼ fell</span>",
        (Change::Rose, true) => "<span class=bad>▲ rose</span>",
    }
}

fn rate_row(out: &mut String, name: &str, r: &RateChange, lower_is_better: bool) {
    let _ = writeln!(
        out,
        "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        interval(&r.before),
        interval(&r.after),
        mark(r.change, lower_is_better)
    );
}

const CSS: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}\
h1{font-size:1.4em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}\
.verdict{border-radius:8px;padding:1em 1.4em;color:#fff;margin:1em 0}.verdict .big{font-size:1.7em;font-weight:700}\
.verdict ul{margin:.5em 0 0;padding-left:1.2em}.v-improved{background:#1a7f37}.v-over_corrected{background:#b35900}\
.v-regressed{background:#c62828}.v-inconclusive{background:#5f6368}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}\
th{background:#f6f6f6}.ci{color:#777;font-size:.85em}.good{color:#1a7f37;font-weight:600}.bad{color:#c62828;font-weight:600}\
.same{color:#777}.t{font-weight:600}.muted{color:#666}svg text{font:12px system-ui,sans-serif}";

pub fn render(r: &BeforeAfter) -> String {
    let mut h = String::new();
    let verdict_class = match r.verdict {
        Verdict::Improved => "improved",
        Verdict::OverCorrected => "over_corrected",
        Verdict::Regressed => "regressed",
        Verdict::Inconclusive => "inconclusive",
    };
    let icon = match r.verdict {
        Verdict::Improved => "✓",
        Verdict::OverCorrected => "⚠",
        Verdict::Regressed => "✗",
        Verdict::Inconclusive => "≈",
    };
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>dftg compare: {} → {}</title><style>{CSS}</style></head><body>",
        esc(&r.before_job),
        esc(&r.after_job)
    );
    let _ = write!(
        h,
        "<h1>Before and after</h1><p class=muted>before <b>{}</b> ({}) → after <b>{}</b> ({})</p>",
        esc(&r.before_job),
        esc(&r.before_model),
        esc(&r.after_job),
        esc(&r.after_model)
    );
    let _ = write!(h, "<div class='verdict v-{verdict_class}'><div class=big>{icon} {}</div><ul>", esc(r.verdict.headline()));
    for f in &r.findings {
        let _ = write!(h, "<li>{}</li>", esc(f));
    }
    let _ = write!(
        h,
        "</ul></div><p class=muted>Rates carry {:.0}% Wilson score intervals; a change counts only when the before and after intervals do not overlap. \
         Per-concept intervals are simultaneous: {:.0}% for all of them together ({:.3}% each), so a flag in the concept table is not one of many chances.</p>",
        r.confidence * 100.0,
        r.confidence * 100.0,
        r.concept_confidence * 100.0
    );

    h.push_str("<h2>Headline rates</h2><table><tr><th></th><th>before</th><th>after</th><th>change</th></tr>");
    let scope = if r.concepts.iter().any(|c| c.targeted) {
        "targeted concepts: hallucinated / absent"
    } else {
        "all concepts: hallucinated / absent"
    };
    rate_row(&mut h, scope, &r.targeted, true);
    rate_row(&mut h, "CHAIR_s: descriptions with a hallucination", &r.chair_s, true);
    rate_row(&mut h, "CHAIR_i: mentions that are hallucinated", &r.chair_i, true);
    rate_row(&mut h, "recall: present objects described", &r.recall, false);
    h.push_str("</table>");

    h.push_str("<h2>POPE</h2>");
    if r.pope.is_empty() {
        h.push_str("<p class=muted>No POPE results in both jobs (record them with <code>dftg eval pope --job-dir JOB</code>).</p>");
    } else {
        h.push_str("<table><tr><th>questions</th><th>accuracy</th><th>precision</th><th>F1</th><th>recall</th><th>yes-ratio</th><th>false yes (absent answered yes)</th></tr>");
        for p in &r.pope {
            let ba = |b: f64, a: f64| format!("{} → {}", pct(b), pct(a));
            let with =
                |rc: &RateChange, lower: bool| format!("{} → {}<br>{}", pct(rc.before.rate), pct(rc.after.rate), mark(rc.change, lower));
            let _ = write!(
                h,
                "<tr><td>{} ({} → {})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.set),
                p.before.questions,
                p.after.questions,
                ba(p.before.accuracy, p.after.accuracy),
                ba(p.before.precision, p.after.precision),
                ba(p.before.f1, p.after.f1),
                with(&p.recall, false),
                with(&p.yes_ratio, false),
                with(&p.false_yes, true)
            );
        }
        h.push_str("</table><p class=muted>A falling recall and yes-ratio with fewer false yeses is a model that learned to say \"no\": over-correction.</p>");
    }

    h.push_str("<h2>Concepts the remedy targeted, and any that got worse</h2>");
    let shown: Vec<&ConceptChange> = r
        .concepts
        .iter()
        .filter(|c| c.targeted || c.hallucination.change == Change::Rose || c.miss.change == Change::Rose)
        .take(30)
        .collect();
    if shown.is_empty() {
        h.push_str("<p class=muted>The before job's generation plan targeted no concept.</p>");
    } else {
        chart(&mut h, &shown);
    }

    h.push_str("<h2>Got worse</h2>");
    if r.worse.is_empty() {
        h.push_str("<p>Nothing got worse beyond its interval.</p>");
    } else {
        h.push_str("<table><tr><th>concept</th><th>what</th><th>before</th><th>after</th></tr>");
        for w in &r.worse {
            let what = match w.what {
                Worsening::Hallucinated => "hallucinated where absent",
                Worsening::Missed => "missed where present",
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=bad>{what}</td><td>{}</td><td>{}</td></tr>",
                esc(&w.concept),
                pct(w.before),
                pct(w.after)
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>All concepts</h2><table><tr><th>concept</th><th>negatives planned</th><th>hallucinated before</th><th>after</th><th></th><th>missed before</th><th>after</th><th></th></tr>");
    for c in &r.concepts {
        let name = if c.targeted { format!("<span class=t>★ {}</span>", esc(&c.concept)) } else { esc(&c.concept) };
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if c.targeted { c.negatives.to_string() } else { String::new() },
            interval(&c.hallucination.before),
            interval(&c.hallucination.after),
            mark(c.hallucination.change, true),
            interval(&c.miss.before),
            interval(&c.miss.after),
            mark(c.miss.change, true)
        );
    }
    h.push_str("</table><p class=muted>★ targeted by the before job's generation plan. Hallucinated: images where the description names the concept though it is absent, of the images where it is absent. Missed: images whose description leaves out a present concept.</p></body></html>\n");
    h
}

/// Dot-and-interval rows: before in grey, after coloured by its change.
fn chart(h: &mut String, rows: &[&ConceptChange]) {
    let (left, right, row, top) = (170.0, 680.0, 26.0, 30.0);
    let max = rows.iter().map(|c| c.hallucination.before.high.max(c.hallucination.after.high)).fold(0.05_f64, f64::max);
    let max = (max * 10.0).ceil() / 10.0;
    let x = |v: f64| left + (right - left) * (v / max).clamp(0.0, 1.0);
    let height = top + row * rows.len() as f64 + 10.0;
    let _ = write!(h, "<svg width=720 height={height:.0} role=img aria-label='hallucination rate before and after, per concept'>");
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let _ = write!(
            h,
            "<line x1={0:.1} x2={0:.1} y1=18 y2={1:.0} stroke=#eee /><text x={0:.1} y=12 text-anchor=middle fill=#777>{2}</text>",
            x(v),
            height - 6.0,
            pct(v)
        );
    }
    for (i, c) in rows.iter().enumerate() {
        let y = top + row * i as f64 + row / 2.0;
        let label = if c.targeted { format!("★ {}", esc(&c.concept)) } else { esc(&c.concept) };
        let colour = match c.hallucination.change {
            Change::Fell => "#1a7f37",
            Change::Rose => "#c62828",
            Change::Within => "#1f5fbf",
        };
        let (b, a) = (&c.hallucination.before, &c.hallucination.after);
        let _ = write!(
            h,
            "<text x={:.0} y={:.1} text-anchor=end>{label}</text>\
             <line x1={:.1} x2={:.1} y1={:.1} y2={:.1} stroke=#aaa stroke-width=2 /><circle cx={:.1} cy={:.1} r=4 fill=#888><title>before {}</title></circle>\
             <line x1={:.1} x2={:.1} y1={:.1} y2={:.1} stroke={colour} stroke-width=2 /><circle cx={:.1} cy={:.1} r=4 fill={colour}><title>after {}</title></circle>",
            left - 8.0,
            y + 4.0,
            x(b.low),
            x(b.high),
            y - 4.0,
            y - 4.0,
            x(b.rate),
            y - 4.0,
            pct(b.rate),
            x(a.low),
            x(a.high),
            y + 4.0,
            y + 4.0,
            x(a.rate),
            y + 4.0,
            pct(a.rate)
        );
    }
    h.push_str("</svg><p class=muted>Hallucination rate per concept: grey before, coloured after (green fell, red rose, blue within the intervals); lines are the intervals.</p>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use dftg_core::before_after::{compare_jobs, JobFacts};
    use dftg_core::profile::{ConceptCounts, Summary};

    #[test]
    fn the_report_is_self_contained_and_escapes_names() {
        let mut s = Summary { images: 10, mentions: 20, truth_objects: 20, covered_objects: 15, ..Summary::default() };
        s.concepts
            .insert("<script>".into(), ConceptCounts { hallucinated: 3, opportunities: 10, present: 1, mentions: 4, ..Default::default() });
        let f = JobFacts {
            job: "a".into(),
            model: "m<1>".into(),
            summary: s,
            targeted: [("<script>".to_string(), 3)].into(),
            pope: Default::default(),
        };
        let html = render(&compare_jobs(&f, &f, 0.95).unwrap());
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;") && html.contains("m&lt;1&gt;"));
        assert!(!html.contains("http://") && !html.contains("https://"), "no external resource");
        assert!(html.contains("no clear change") && html.contains("<svg"));
    }
}
