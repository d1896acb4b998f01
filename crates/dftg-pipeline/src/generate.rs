//! The generate stage (generator worker): one instruction shard from one diagnosis shard, the
//! profile and this shard's quota. Each planned item goes to the writer (a language model, or
//! the template writer), through the gate, re-asked with the gate's reason up to the rewrite
//! limit, then written by the template writer instead. Create-only puts; the instruction shard
//! is written last, so redelivery is harmless.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

use dftg_core::extract::ExtractScratch;
use dftg_core::generate::{plan_shard_items, template_item, to_record, GenerationPlan, ItemRequest, ShardQuota};
use dftg_core::llava::{LlavaRecord, WriterMeta};
use dftg_core::profile::Profile;
use dftg_core::record::DiagnosisRecord;
use dftg_core::seed::stable_hash;
use dftg_core::tokens::TokenUsage;
use dftg_core::writer::gate::{verify, Accepted, Rejection};
use dftg_core::writer::{parse_reply, WrittenItem};
use dftg_runtime::PutOutcome;

use crate::diagnose::{read_jsonl, JobContext};
use crate::error::{to_json, PipelineError};
use crate::layout;
use crate::writer::WriteCall;

/// `generation-plan.json`: the global plan and each shard's part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredGenerationPlan {
    pub schema_version: u32,
    pub plan: GenerationPlan,
    pub shards: Vec<ShardQuota>,
}

pub async fn read_json<T: serde::de::DeserializeOwned>(store: &dyn dftg_runtime::BlobStore, key: &str) -> Result<T, PipelineError> {
    let bytes = store.get(key).await?.ok_or_else(|| PipelineError::CorruptObject { key: key.into(), reason: "missing".into() })?;
    serde_json::from_slice(&bytes).map_err(|e| PipelineError::CorruptObject { key: key.into(), reason: e.to_string() })
}

/// What every generate shard of a job reads: the profile and the generation plan.
pub struct GenerationInputs {
    pub profile: Profile,
    pub plan: StoredGenerationPlan,
}

pub struct GenerateOutcome {
    pub instructions: u64,
    pub already_done: bool,
}

/// A generate shard's writer numbers (`writer/stats/shard-N.json`), summed into `dataset.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriterStats {
    pub schema_version: u32,
    /// Items that entered the dataset.
    pub accepted: u64,
    /// Refused replies by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Re-asks after a refusal.
    pub rewrites: u64,
    /// Items the template writer wrote after the writer's attempts were all refused.
    pub fallbacks: u64,
    /// Items nobody could write so that they passed the gate.
    pub dropped: u64,
    /// Tokens of the writer's calls.
    pub tokens: TokenUsage,
}

impl WriterStats {
    pub fn merge(&mut self, o: &WriterStats) {
        self.accepted += o.accepted;
        for (k, v) in &o.rejected {
            *self.rejected.entry(k.clone()).or_default() += v;
        }
        self.rewrites += o.rewrites;
        self.fallbacks += o.fallbacks;
        self.dropped += o.dropped;
        self.tokens.add(o.tokens);
    }

    fn reject(&mut self, why: Rejection) {
        *self.rejected.entry(why.as_str().to_string()).or_default() += 1;
        crate::metrics::metrics().writer_rejections.with_label_values(&[why.as_str()]).inc();
    }
}

/// One line of `writer/rejections.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionLine {
    pub request_id: String,
    pub item: String,
    pub reason: String,
    /// The start of the refused reply, to read when tuning prompts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reply: String,
}

/// Characters of a refused reply kept in `writer/rejections.jsonl`.
const REPLY_EXCERPT_CHARS: usize = 600;

/// What writing one image's items gave.
#[derive(Default)]
struct GroupResult {
    records: Vec<(usize, LlavaRecord)>,
    rejections: Vec<RejectionLine>,
    stats: WriterStats,
}

/// `X-Request-Id` of an item's attempt: unique in the job (item ids are), and the same on every
/// run and in both shapes, so records do not depend on where they were written.
fn request_id(seed: u64, item: &str, attempt: u32) -> String {
    format!("{:016x}-{attempt}", stable_hash(seed, &["writer-request", item]))
}

/// Writes one image's items in order (each sees the questions accepted before it).
async fn write_group(ctx: &JobContext, all: Arc<Vec<ItemRequest>>, indices: Vec<usize>) -> Result<GroupResult, PipelineError> {
    let items: Vec<(usize, &ItemRequest)> = indices.into_iter().map(|i| (i, &all[i])).collect();
    let seed = ctx.info.spec.seed;
    let extractor = &*ctx.extractor;
    let mut scratch = ExtractScratch::default();
    let mut accepted = Accepted::default();
    let mut out = GroupResult::default();
    let image = match (&ctx.writer, items.first()) {
        (Some(w), Some((_, first))) if w.wants_image() => Some(fetch_image_for(ctx, &first.image).await?),
        _ => None,
    };
    for (index, req) in items {
        let avoid = accepted.questions_for(&req.gate.image);
        let mut chosen: Option<(WrittenItem, WriterMeta)> = None;
        if let Some(writer) = &ctx.writer {
            let mut facts = req.facts.clone();
            facts.avoid = avoid.clone();
            let mut history: Vec<(String, Rejection)> = Vec::new();
            for attempt in 0..writer.max_attempts() {
                if attempt > 0 {
                    out.stats.rewrites += 1;
                }
                let rid = request_id(seed, &req.id, attempt);
                let call = WriteCall {
                    request_id: &rid,
                    kind: req.kind,
                    facts: &facts,
                    image: image.as_ref().map(|(b, m)| (&b[..], *m)),
                    history: &history,
                };
                let verdict = match writer.write(call).await {
                    Ok(reply) => {
                        out.stats.tokens.add(reply.tokens);
                        let parsed = parse_reply(req.kind, &reply.text, &req.prompt).map_err(Rejection::from);
                        let verdict = parsed.and_then(|item| verify(extractor, &mut scratch, &req.gate, &item, &accepted).map(|()| item));
                        verdict.map_err(|why| (why, Some(reply.text)))
                    }
                    Err(e) => {
                        tracing::warn!(item = %req.id, reason = e.reason(), "writer request failed");
                        Err((Rejection::WriterFailed, None))
                    }
                };
                match verdict {
                    Ok(item) => {
                        let meta = WriterMeta {
                            by: writer.label().to_string(),
                            attempts: attempt + 1,
                            request_id: Some(rid),
                            facts: Some(facts.clone()),
                        };
                        chosen = Some((item, meta));
                        break;
                    }
                    Err((why, text)) => {
                        out.stats.reject(why);
                        let reply = text.as_deref().map(|t| t.chars().take(REPLY_EXCERPT_CHARS).collect()).unwrap_or_default();
                        out.rejections.push(RejectionLine {
                            request_id: rid,
                            item: req.id.clone(),
                            reason: why.as_str().to_string(),
                            reply,
                        });
                        match text {
                            // bound what goes back into the conversation: a runaway reply is not re-sent whole
                            Some(t) => history.push((t.chars().take(4096).collect(), why)),
                            None => break,
                        }
                    }
                }
            }
        }
        let fallback = ctx.writer.is_some();
        if chosen.is_none() {
            match template_item(extractor, &mut scratch, req, avoid, &accepted, seed) {
                Some(Ok((item, facts))) => {
                    let by = if fallback { "template-fallback" } else { "template" };
                    chosen = Some((item, WriterMeta { by: by.into(), attempts: 1, request_id: None, facts: Some(facts) }));
                    if fallback {
                        out.stats.fallbacks += 1;
                    }
                }
                Some(Err(why)) => tracing::debug!(item = %req.id, reason = why.as_str(), "template item refused"),
                None => {}
            }
        }
        match chosen {
            Some((item, meta)) => {
                accepted.insert(&req.gate.image, &item);
                out.stats.accepted += 1;
                out.records.push((index, to_record(req, &item, Some(meta))));
            }
            None => out.stats.dropped += 1,
        }
    }
    Ok(out)
}

/// The image bytes for a writer that sees; `image` is the record's path under the corpus.
async fn fetch_image_for(ctx: &JobContext, image: &str) -> Result<(bytes::Bytes, &'static str), PipelineError> {
    let bytes = ctx.info.corpus.get(image).await?.ok_or_else(|| PipelineError::CorruptObject {
        key: crate::error::bounded(image, 256),
        reason: "the image is missing for the writer".into(),
    })?;
    let mime = crate::corpus::sniff_image(&bytes).unwrap_or("application/octet-stream");
    Ok((bytes, mime))
}

pub async fn run_generate_shard(ctx: &JobContext, shard: u32) -> Result<GenerateOutcome, PipelineError> {
    let out_key = layout::instruction_shard(shard);
    if let Some(existing) = ctx.info.store.get(&out_key).await? {
        let records: Vec<LlavaRecord> =
            serde_json::from_slice(&existing).map_err(|e| PipelineError::CorruptObject { key: out_key.clone(), reason: e.to_string() })?;
        return Ok(GenerateOutcome { instructions: records.len() as u64, already_done: true });
    }
    let store = ctx.info.store.as_ref();
    let diagnoses_key = layout::diagnosis_shard(shard);
    let (inputs, diagnoses) = futures::try_join!(
        ctx.generation_inputs.get_or_try_init(|| async {
            let (profile, plan) = futures::try_join!(
                read_json::<Profile>(store, layout::PROFILE),
                read_json::<StoredGenerationPlan>(store, layout::GENERATION_PLAN)
            )?;
            Ok::<_, PipelineError>(Arc::new(GenerationInputs { profile, plan }))
        }),
        read_jsonl::<DiagnosisRecord>(store, &diagnoses_key),
    )?;
    let quota = inputs.plan.shards.get(shard as usize).cloned().ok_or_else(|| PipelineError::CorruptObject {
        key: layout::GENERATION_PLAN.into(),
        reason: format!("no quota for shard {shard}"),
    })?;
    let items = plan_shard_items(&ctx.extractor, &inputs.profile, &diagnoses, &quota, ctx.info.spec.seed);
    // images are independent (duplicates are per image): they go concurrently, each image's
    // items in order; the writer client bounds the requests in flight
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in items.iter().enumerate() {
        groups.entry(r.gate.image.as_str()).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = groups.into_values().collect();
    let total = items.len();
    let items = Arc::new(items);
    let width = ctx.info.spec.generation.writer.max_in_flight.max(1);
    let results: Vec<GroupResult> =
        futures::stream::iter(groups).map(|g| write_group(ctx, items.clone(), g)).buffer_unordered(width).try_collect().await?;
    let mut stats = WriterStats { schema_version: 1, ..WriterStats::default() };
    let mut records: Vec<(usize, LlavaRecord)> = Vec::with_capacity(total);
    let mut rejections: Vec<RejectionLine> = Vec::new();
    for r in results {
        stats.merge(&r.stats);
        records.extend(r.records);
        rejections.extend(r.rejections);
    }
    records.sort_by_key(|(i, _)| *i);
    rejections.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let records: Vec<LlavaRecord> = records.into_iter().map(|(_, r)| r).collect();
    // side outputs first, the instruction shard last: it is the shard's commit record
    if !rejections.is_empty() {
        let key = layout::writer_rejections_shard(shard);
        ctx.info.store.put_create(&key, crate::diagnose::encode_jsonl(&key, &rejections)?).await?;
    }
    let stats_key = layout::writer_stats_shard(shard);
    ctx.info.store.put_create(&stats_key, to_json(&stats_key, &stats, false)?).await?;
    let bytes = to_json(&out_key, &records, true)?;
    let outcome = ctx.info.store.put_create(&out_key, bytes).await?;
    if outcome == PutOutcome::Created {
        let m = crate::metrics::metrics();
        for r in &records {
            m.instructions_generated.with_label_values(&[r.meta.kind.as_str()]).inc();
        }
        m.writer_items.with_label_values(&["accepted"]).inc_by(stats.accepted);
        m.writer_items.with_label_values(&["fallback"]).inc_by(stats.fallbacks);
        m.writer_items.with_label_values(&["dropped"]).inc_by(stats.dropped);
        m.writer_items.with_label_values(&["rewrite"]).inc_by(stats.rewrites);
        m.model_tokens.with_label_values(&["writer", "prompt"]).inc_by(stats.tokens.prompt);
        m.model_tokens.with_label_values(&["writer", "completion"]).inc_by(stats.tokens.completion);
    }
    Ok(GenerateOutcome { instructions: records.len() as u64, already_done: outcome == PutOutcome::AlreadyExists })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobSpec, ModelSpec};
    use crate::job_state::JobInfo;
    use crate::writer::ScriptedWriter;
    use dftg_core::check::diagnose;
    use dftg_core::extract::Extractor;
    use dftg_core::generate::{allocate_to_shards, plan_generation, GenerationConfig};
    use dftg_core::llava::InstructionType;
    use dftg_core::profile::Summary;
    use dftg_core::truth::{ImageTruth, ObjectTruth};
    use dftg_core::vocab::Vocabulary;
    use dftg_model::client::{ModelError, ScriptedClient};
    use dftg_runtime::{BlobStore, ObjectBlobStore};

    /// A job whose profile and plan are written, with one diagnosis shard, and a writer.
    async fn job(writer: ScriptedWriter) -> (JobContext, Arc<dyn BlobStore>) {
        let extractor = Extractor::new(Arc::new(Vocabulary::coco80()));
        let mut scratch = ExtractScratch::default();
        let obj = |n: &str, c: u32| ObjectTruth { name: n.into(), count: Some(c), attributes: Default::default() };
        let diags: Vec<DiagnosisRecord> = (0..30)
            .map(|i| {
                let t = ImageTruth { image: format!("img{i}"), file: None, objects: vec![obj("dog", 2), obj("frisbee", 1)] };
                diagnose(&extractor, &mut scratch, &t, "Describe the image.", "Two dogs chase a frisbee. A cat watches them.")
            })
            .collect();
        let names: Vec<&str> = extractor.vocab().concepts().iter().map(|c| c.name.as_str()).collect();
        let mut summary = Summary::default();
        diags.iter().for_each(|d| summary.add(d, &names));
        let profile = Profile::build("m", &summary);
        let cfg = GenerationConfig { budget: Some(40), ..GenerationConfig::default() };
        let plan = plan_generation(&profile, &summary, &cfg);
        let stored = StoredGenerationPlan { schema_version: 1, shards: allocate_to_shards(&plan, &[summary]), plan };
        let store: Arc<dyn BlobStore> = Arc::new(ObjectBlobStore::in_memory());
        store.put(layout::PROFILE, to_json("p", &profile, false).unwrap()).await.unwrap();
        store.put(layout::GENERATION_PLAN, to_json("g", &stored, false).unwrap()).await.unwrap();
        store.put(&layout::diagnosis_shard(0), crate::diagnose::encode_jsonl("d", &diags).unwrap()).await.unwrap();
        let mut spec = JobSpec::new("memory://corpus", ModelSpec::default());
        spec.generation.writer.kind = dftg_core::writer::WriterKind::OpenAi;
        let info = Arc::new(JobInfo { job_id: "j".into(), spec, store: store.clone(), corpus: Arc::new(ObjectBlobStore::in_memory()) });
        let model = Arc::new(ScriptedClient::constant("m", "unused"));
        let ctx = JobContext::new(info, model, &crate::policy::Policy::open()).unwrap().with_writer(Some(Arc::new(writer)));
        (ctx, store)
    }

    async fn outputs(store: &Arc<dyn BlobStore>) -> (Vec<LlavaRecord>, WriterStats, Vec<RejectionLine>) {
        let records = read_json::<Vec<LlavaRecord>>(store.as_ref(), &layout::instruction_shard(0)).await.unwrap();
        let stats = read_json::<WriterStats>(store.as_ref(), &layout::writer_stats_shard(0)).await.unwrap();
        let refused = match store.get(&layout::writer_rejections_shard(0)).await.unwrap() {
            Some(_) => read_jsonl::<RejectionLine>(store.as_ref(), &layout::writer_rejections_shard(0)).await.unwrap(),
            None => Vec::new(),
        };
        (records, stats, refused)
    }

    #[tokio::test]
    async fn refused_replies_are_reasked_with_the_reason_then_written_by_the_templates() {
        // negatives: wrong on the first attempt (affirms the absent cat), right after the re-ask;
        // every other type: never valid JSON
        let writer = ScriptedWriter::new(2, |call| {
            let target = call.facts.target.clone().unwrap_or_default();
            match (call.kind, call.history.len()) {
                (InstructionType::NegativeExistence, 0) => {
                    Ok(format!(r#"{{"question": "Is there a {target}?", "answer": "Yes, a {target} sits there."}}"#))
                }
                (InstructionType::NegativeExistence, _) => {
                    assert_eq!(call.history[0].1, Rejection::AffirmsTarget, "the re-ask carries the reason");
                    Ok(format!(r#"{{"question": "Is there a {target} in this photo?", "answer": "No, there is no {target}."}}"#))
                }
                _ => Ok("I'd rather not".into()),
            }
        });
        let (ctx, store) = job(writer).await;
        let out = run_generate_shard(&ctx, 0).await.unwrap();
        let (records, stats, refused) = outputs(&store).await;
        assert_eq!(out.instructions as usize, records.len());
        let negatives: Vec<&LlavaRecord> = records.iter().filter(|r| r.meta.kind == InstructionType::NegativeExistence).collect();
        assert!(!negatives.is_empty());
        for r in &negatives {
            let w = r.meta.writer.as_ref().unwrap();
            assert_eq!((w.by.as_str(), w.attempts), ("scripted", 2), "{r:?}");
            assert!(r.conversations[1].value.starts_with("No, there is no"));
        }
        let others = records.len() - negatives.len();
        assert!(others > 0);
        assert!(records
            .iter()
            .filter(|r| r.meta.kind != InstructionType::NegativeExistence)
            .all(|r| { r.meta.writer.as_ref().is_some_and(|w| w.by == "template-fallback") }));
        assert_eq!(stats.accepted as usize, records.len());
        assert_eq!(stats.fallbacks as usize, others);
        assert_eq!(stats.rejected.get("affirms_target").copied().unwrap_or(0) as usize, negatives.len());
        assert_eq!(stats.rejected.get("malformed_json").copied().unwrap_or(0) as usize, 3 * others);
        assert_eq!(stats.rewrites as usize, negatives.len() + 2 * others);
        assert_eq!(refused.len() as u64, stats.rejected.values().sum::<u64>());
        assert!(refused.iter().all(|r| !r.request_id.is_empty() && !r.item.is_empty()));
        // a redelivered task finds its output and does nothing again
        assert!(run_generate_shard(&ctx, 0).await.unwrap().already_done);
    }

    #[tokio::test]
    async fn a_writer_that_fails_is_replaced_by_the_templates_without_retrying_forever() {
        let writer = ScriptedWriter::new(2, |_| Err(ModelError::unreachable("connection refused")));
        let (ctx, store) = job(writer).await;
        run_generate_shard(&ctx, 0).await.unwrap();
        let (records, stats, _) = outputs(&store).await;
        assert!(!records.is_empty());
        assert_eq!(stats.fallbacks as usize, records.len());
        assert_eq!(stats.rejected.get("writer_failed").copied().unwrap_or(0) as usize, records.len(), "one failed call per item");
        assert_eq!(stats.rewrites, 0);
    }
}
