//! `report.html`: what a person reads first. Self-contained (inline CSS and SVG, no scripts,
//! nothing loaded from the network): rates, the top hallucinated concepts, their triggers,
//! example diagnoses with the hallucinated spans highlighted, and the instruction mix.

use std::fmt::Write;

use bytes::Bytes;

use dftg_core::profile::Profile;
use dftg_core::record::DiagnosisRecord;

use crate::dataset::DatasetManifest;
use crate::diagnose::read_jsonl;
use crate::error::PipelineError;
use crate::generate::read_json;
use crate::job_state::JobInfo;
use crate::layout;

/// Example diagnoses shown.
const EXAMPLES: usize = 8;
/// Concepts in the bar chart.
const TOP: usize = 15;

pub async fn write_report(ctx: &JobInfo, shards: u32) -> Result<(), PipelineError> {
    let profile: Profile = read_json(ctx.store.as_ref(), layout::PROFILE).await?;
    let dataset: DatasetManifest = read_json(ctx.store.as_ref(), layout::DATASET).await?;
    // examples: the first hallucinating diagnoses of the first shards
    let mut examples: Vec<DiagnosisRecord> = Vec::new();
    for shard in 0..shards {
        if examples.len() >= EXAMPLES {
            break;
        }
        let key = layout::diagnosis_shard(shard);
        // a shard adaptive diagnosis never dispatched (or one given up) has no diagnoses
        if ctx.store.head(&key).await?.is_none() {
            continue;
        }
        let recs: Vec<DiagnosisRecord> = read_jsonl(ctx.store.as_ref(), &key).await?;
        examples.extend(recs.into_iter().filter(|r| r.error.is_none() && !r.hallucinations.is_empty()).take(EXAMPLES - examples.len()));
    }
    let html = render(&profile, &dataset, &examples);
    ctx.store.put(layout::REPORT, Bytes::from(html)).await?;
    Ok(())
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Horizontal bar chart as inline SVG.
fn bars(rows: &[(String, f64, String)], color: &str) -> String {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    let h = 22 * rows.len() + 10;
    let mut s = format!("<svg class=\"chart\" width=\"720\" height=\"{h}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">");
    for (i, (label, v, text)) in rows.iter().enumerate() {
        let y = 5 + i * 22;
        let w = (v / max * 440.0).max(1.0);
        let _ = write!(
            s,
            "<text x=\"150\" y=\"{}\" text-anchor=\"end\">{}</text><rect x=\"160\" y=\"{y}\" width=\"{w:.1}\" height=\"16\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{}\">{}</text>",
            y + 13,
            escape(label),
            165.0 + w,
            y + 13,
            escape(text)
        );
    }
    s.push_str("</svg>");
    s
}

/// The response with hallucinated spans wrapped in <mark>.
fn highlighted(r: &DiagnosisRecord) -> String {
    let mut spans: Vec<(usize, usize, String)> = r
        .hallucinations
        .iter()
        .map(|h| (h.span.0 as usize, h.span.1 as usize, format!("{} hallucination: {}", h.kind.as_str(), h.concept)))
        .collect();
    // every mention of an object-hallucinated concept is marked, not only the first
    for m in &r.mentions {
        if r.hallucinations.iter().any(|h| h.kind == dftg_core::record::HallucinationKind::Object && h.concept == m.concept) {
            spans.push((m.span.0 as usize, m.span.1 as usize, format!("object hallucination: {}", m.concept)));
        }
    }
    spans.sort();
    spans.dedup_by(|b, a| b.0 < a.1);
    let mut out = String::new();
    let mut at = 0;
    for (s, e, title) in spans {
        if s < at || e > r.response.len() || !r.response.is_char_boundary(s) || !r.response.is_char_boundary(e) {
            continue;
        }
        out.push_str(&escape(&r.response[at..s]));
        let _ = write!(out, "<mark title=\"{}\">{}</mark>", escape(&title), escape(&r.response[s..e]));
        at = e;
    }
    out.push_str(&escape(&r.response[at..]));
    out
}

pub fn render(profile: &Profile, dataset: &DatasetManifest, examples: &[DiagnosisRecord]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>dftg report: {model}</title><style>\
body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222;padding:0 1em}}\
h1{{font-size:1.6em}}table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left}}\
.kpi{{display:inline-block;margin:0 1.5em 1em 0}}.kpi b{{display:block;font-size:1.6em}}mark{{background:#ffb3b3;padding:0 2px}}\
.ex{{border-left:4px solid #e66;padding:.3em .8em;margin:.8em 0;background:#fafafa}}.chart text{{font-size:12px}}.muted{{color:#777}}\
</style></head><body>",
        model = escape(&profile.model)
    );
    let _ = write!(
        h,
        "<h1>Hallucination diagnosis of <code>{}</code></h1><p class=\"muted\">job {} · {} images diagnosed · {} failed</p>",
        escape(&profile.model),
        escape(&dataset.job_id),
        profile.images,
        profile.failed_images
    );
    if let Some(d) = &dataset.diagnosis {
        let _ = write!(h, "<p class=\"muted\" id=\"diagnosis\">{}</p>", escape(&diagnosis_line(d)));
    }
    if !dataset.tokens.is_empty() {
        let used: Vec<String> = dataset
            .tokens
            .iter()
            .map(|(role, t)| {
                let who = match role.as_str() {
                    dftg_core::tokens::ROLE_SUBJECT => "model under diagnosis".to_string(),
                    dftg_core::tokens::ROLE_WRITER => "data writer".to_string(),
                    other => escape(other),
                };
                format!("{who}: {} prompt + {} completion = {} tokens", t.prompt, t.completion, t.total())
            })
            .collect();
        let _ = write!(h, "<p class=\"muted\" id=\"tokens\">tokens used · {}</p>", used.join(" · "));
    }
    let _ = write!(
        h,
        "<div><span class=\"kpi\"><b>{}</b>CHAIR<sub>s</sub> (responses with an object hallucination)</span>\
<span class=\"kpi\"><b>{}</b>CHAIR<sub>i</sub> (hallucinated mentions)</span><span class=\"kpi\"><b>{}</b>recall of true objects</span></div>",
        pct(profile.chair_s),
        pct(profile.chair_i),
        pct(profile.recall)
    );
    h.push_str("<table><tr><th>kind</th><th>hallucinations</th></tr>");
    for (k, v) in &profile.totals {
        let _ = write!(h, "<tr><td>{}</td><td>{v}</td></tr>", escape(k));
    }
    h.push_str("</table>");
    if !profile.errors_by_reason.is_empty() {
        h.push_str("<h2>Images that could not be diagnosed</h2><table><tr><th>reason</th><th>images</th></tr>");
        for (k, v) in &profile.errors_by_reason {
            let _ = write!(h, "<tr><td>{}</td><td>{v}</td></tr>", escape(k));
        }
        h.push_str("</table>");
    }
    let top: Vec<_> = profile.concepts.iter().filter(|c| c.hallucinations > 0).take(TOP).collect();
    h.push_str("<h2>What this model hallucinates</h2><p class=\"muted\">share of all object hallucinations; label: images hallucinated / images where absent (rate)</p>");
    let rows: Vec<(String, f64, String)> =
        top.iter().map(|c| (c.concept.clone(), c.share, format!("{} / {} ({})", c.hallucinations, c.opportunities, pct(c.rate)))).collect();
    h.push_str(&bars(&rows, "#d9534f"));
    h.push_str("<h2>Triggers</h2><p class=\"muted\">present objects that make the hallucination more likely than chance (lift)</p><table><tr><th>hallucinated</th><th>triggers</th></tr>");
    for c in &top {
        let t: Vec<String> = c.triggers.iter().map(|t| format!("{} ×{:.2} ({})", escape(&t.concept), t.lift, t.co_occurrences)).collect();
        let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", escape(&c.concept), if t.is_empty() { "—".into() } else { t.join(", ") });
    }
    h.push_str("</table><h2>Examples</h2>");
    for r in examples {
        let kinds: Vec<String> = r.hallucinations.iter().map(|x| format!("{} {}", x.kind.as_str(), escape(&x.concept))).collect();
        let truth: Vec<String> = r
            .truth
            .iter()
            .map(|o| match o.count {
                Some(n) => format!("{} ×{n}", escape(&o.name)),
                None => escape(&o.name),
            })
            .collect();
        let _ = write!(
            h,
            "<div class=\"ex\"><p><b>{}</b> <span class=\"muted\">truth: {}</span></p><p>{}</p><p class=\"muted\">found: {}</p></div>",
            escape(&r.image),
            truth.join(", "),
            highlighted(r),
            kinds.join("; ")
        );
    }
    let _ = write!(h, "<h2>Generated instructions ({})</h2>", dataset.instructions);
    let mix: Vec<(String, f64, String)> = dataset.by_type.iter().map(|(k, v)| (k.clone(), *v as f64, v.to_string())).collect();
    h.push_str(&bars(&mix, "#5b8def"));
    let mut per_concept: Vec<(&String, &u64)> =
        dataset.by_type_and_concept.get("negative_existence").map(|m| m.iter().collect()).unwrap_or_default();
    per_concept.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    h.push_str("<h3>Negative questions by concept</h3>");
    let rows: Vec<(String, f64, String)> = per_concept.iter().take(TOP).map(|(k, v)| ((*k).clone(), **v as f64, v.to_string())).collect();
    h.push_str(&bars(&rows, "#f0ad4e"));
    h.push_str("</body></html>\n");
    h
}

/// The diagnosis block in one line: how much was diagnosed, why it stopped.
pub fn diagnosis_line(d: &crate::dataset::DiagnosisSummary) -> String {
    let confidence = d.confidence.map(|c| format!(", confidence reached {:.1}%", c * 100.0)).unwrap_or_default();
    let how = if d.stopped_early { "stopped early" } else { "diagnosed everything" };
    format!(
        "{} of {} images diagnosed ({how}{confidence}, {} model calls saved): {}",
        d.images_diagnosed, d.images_total, d.model_calls_saved, d.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_highlighting_are_safe() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
