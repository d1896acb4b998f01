//! The job driver: the coordinator's loop for one job, the same in both shapes. It plans,
//! publishes a stage's shard tasks, follows the shard events until every shard is accounted
//! for, builds the profile at the barrier, runs the generation stage, and writes the dataset
//! manifest and the report. Its state is in the store (`job.json` and the shard objects): a
//! restarted driver re-publishes the tasks of a stage and the workers skip finished shards.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use dftg_runtime::codec::encode;
use dftg_runtime::queue::TaskQueue;

use dftg_core::adaptive::{decide, plan_waves, StopDecision, StopRule};
use dftg_core::profile::Summary;

use crate::barrier::build_profile_and_plan;
use crate::dataset::{write_dataset, DatasetManifest, DiagnosisSummary};
use crate::error::PipelineError;
use crate::job_state::{read_state, write_state, JobInfo, JobState, Phase};
use crate::messages::{ShardEvent, ShardTask, Stage, DIAGNOSE_QUEUE, GENERATE_QUEUE, MESSAGE_SCHEMA_VERSION};
use crate::plan::{plan_corpus, plan_image_listing};
use crate::report::write_report;

/// Progress callbacks (progress bars in the CLI, metrics in the coordinator).
pub trait Progress: Send + Sync {
    fn stage_started(&self, _stage: &str, _total: u64) {}
    fn advanced(&self, _stage: &str, _items: u64) {}
    fn stage_finished(&self, _stage: &str) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

/// Live status of one stage of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStatus {
    pub shards_total: u32,
    pub shards_done: u32,
    pub shards_failed: u32,
    pub items: u64,
    pub failed_items: u64,
    /// Items per second since the stage started.
    pub rate: f64,
    pub eta_seconds: Option<f64>,
}

/// Live status of a job, as the coordinator's API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job_id: String,
    pub phase: Phase,
    pub images: u64,
    pub diagnose: StageStatus,
    pub generate: StageStatus,
    pub failed_shards: BTreeMap<String, String>,
    /// Failed images so far, by reason (`missing_image`, `model_timeout`, …).
    #[serde(default)]
    pub errors_by_reason: BTreeMap<String, u64>,
    /// Messages in the task queues' dead-letter queues (undecodable or given-up tasks, of any job).
    #[serde(default)]
    pub dead_letters: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the job is done but some images failed (within `max_failed_fraction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// When the job reached a final phase (unix seconds); the retention clock starts here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetManifest>,
}

impl JobStatus {
    pub fn new(job_id: &str) -> Self {
        JobStatus {
            job_id: job_id.to_string(),
            phase: Phase::Planning,
            images: 0,
            diagnose: StageStatus::default(),
            generate: StageStatus::default(),
            failed_shards: BTreeMap::new(),
            errors_by_reason: BTreeMap::new(),
            dead_letters: 0,
            error: None,
            warning: None,
            finished_at: None,
            dataset: None,
        }
    }

    pub fn stage_mut(&mut self, stage: Stage) -> &mut StageStatus {
        match stage {
            Stage::Diagnose => &mut self.diagnose,
            Stage::Generate => &mut self.generate,
        }
    }
}

pub type SharedStatus = Arc<Mutex<JobStatus>>;

fn update(status: &SharedStatus, f: impl FnOnce(&mut JobStatus)) {
    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut s);
}

#[derive(Debug, Clone)]
pub struct DriveReport {
    pub manifest: DatasetManifest,
    pub diagnose_time: Duration,
    pub generate_time: Duration,
    /// Shards whose output already existed (resumed work).
    pub resumed_shards: u64,
}

/// What the driver plugs into.
pub struct DriverIo {
    pub queue: Arc<dyn TaskQueue>,
    /// This job's shard events (the caller routes events by job id).
    pub events: mpsc::Receiver<ShardEvent>,
    pub progress: Arc<dyn Progress>,
    pub status: SharedStatus,
    pub shutdown: CancellationToken,
}

/// Runs (or resumes) a whole job.
pub async fn drive_job(info: Arc<JobInfo>, mut io: DriverIo) -> Result<DriveReport, PipelineError> {
    let store = info.store.clone();
    let mut state = match read_state(store.as_ref()).await? {
        Some(s) if s.spec != info.spec => {
            return Err(PipelineError::invalid("job", format!("{} already holds job {} with a different spec", store.describe(), s.job_id)))
        }
        // a failed or cancelled job driven again resumes (`dftg run` again; a resubmit)
        Some(s) if s.shards > 0 => JobState { error: None, finished_at: None, ..s },
        _ => JobState::new(&info.job_id, &info.spec),
    };
    if state.shards == 0 {
        let planned = async {
            write_state(store.as_ref(), &state).await?;
            tokio::select! {
                biased;
                _ = io.shutdown.cancelled() => Err(PipelineError::Cancelled),
                planned = async {
                    if info.spec.truth.uses_annotations() {
                        plan_corpus(info.corpus.as_ref(), &info.spec.corpus, store.as_ref(), info.spec.shard_size).await
                    } else {
                        // the detector is the truth: the annotation file is not read, even if there
                        plan_image_listing(info.corpus.as_ref(), &info.spec.corpus, store.as_ref(), info.spec.shard_size).await
                    }
                } => planned,
            }
        }
        .await;
        match planned {
            Ok(p) if p.images == 0 => {
                return fail(&info, &mut state, &io.status, PipelineError::invalid("corpus", "the corpus has no images")).await
            }
            Ok(p) => {
                state.shards = p.shards;
                state.images = p.images;
            }
            Err(e) => return fail(&info, &mut state, &io.status, e).await,
        }
    }
    if state.phase == Phase::Done {
        if let Ok(manifest) = crate::generate::read_json::<DatasetManifest>(store.as_ref(), crate::layout::DATASET).await {
            update(&io.status, |s| {
                s.phase = Phase::Done;
                s.images = state.images;
                s.dataset = Some(manifest.clone());
            });
            return Ok(DriveReport {
                manifest,
                diagnose_time: Duration::ZERO,
                generate_time: Duration::ZERO,
                resumed_shards: 2 * state.shards as u64,
            });
        }
    }
    let images = state.images;
    update(&io.status, |s| s.images = images);
    let mut resumed = 0u64;
    let result = async {
        let t0 = Instant::now();
        set_phase(&info, &mut state, &io.status, Phase::Diagnosing).await?;
        let items = state.images * info.spec.prompts.len() as u64;
        let all: BTreeSet<u32> = (0..state.shards).collect();
        let stop_when = info.spec.diagnosis.stop_when.as_ref();
        // with stop_when, seeded waves and a look after each; otherwise one wave of everything
        let waves = match stop_when {
            Some(w) => plan_waves(state.shards, info.spec.seed, w.waves),
            None => vec![all.iter().copied().collect()],
        };
        let mut adaptive = stop_when.map(|w| Adaptive {
            rule: StopRule { top_k: w.top_k, confidence: w.confidence, min_opportunities: w.min_opportunities, looks: waves.len() as u32 },
            pilot: Summary::default(),
            rest: Summary::default(),
            decision: None,
        });
        let diagnosed = run_stage(&info, &mut io, Stage::Diagnose, &waves, items, &mut resumed, adaptive.as_mut()).await?;
        let failed_diagnose = diagnosed.given_up.clone();
        let diagnose_time = t0.elapsed();
        account_failed_shards(&info, &state, &failed_diagnose, &io.status);
        let images_diagnosed: u64 = diagnosed.dispatched.iter().map(|&s| shard_images(&state, info.spec.shard_size, s)).sum();
        let warning = check_failures(&info, images_diagnosed, &io.status)?;
        update(&io.status, |s| s.warning = warning.clone());
        set_phase(&info, &mut state, &io.status, Phase::Profiling).await?;
        // shards never dispatched count as empty at the barrier, like given-up ones
        let not_diagnosed: BTreeSet<u32> = all.difference(&diagnosed.dispatched).copied().collect();
        let skip: BTreeSet<u32> = failed_diagnose.union(&not_diagnosed).copied().collect();
        let (_profile, plan, total) = build_profile_and_plan(&info, state.shards, &skip).await?;
        set_phase(&info, &mut state, &io.status, Phase::Generating).await?;
        let t1 = Instant::now();
        // a shard whose diagnosis was given up (or never asked for) has nothing to generate from
        let to_generate: Vec<u32> = all.difference(&skip).copied().collect();
        run_stage(&info, &mut io, Stage::Generate, &[to_generate], plan.budget, &mut resumed, None).await?;
        let generate_time = t1.elapsed();
        set_phase(&info, &mut state, &io.status, Phase::Finishing).await?;
        let diagnosis = diagnosis_summary(&info, &state, images_diagnosed, waves.len(), diagnosed.waves, adaptive.as_ref());
        tracing::info!(
            job = %info.job_id,
            images_diagnosed = diagnosis.images_diagnosed,
            images_total = diagnosis.images_total,
            stopped_early = diagnosis.stopped_early,
            reason = %diagnosis.reason,
            "diagnosis ended"
        );
        // the live status already holds every given-up shard
        let failed_shards = io.status.lock().unwrap_or_else(|p| p.into_inner()).failed_shards.clone();
        let manifest = write_dataset(&info, state.shards, &plan, &total, failed_shards, diagnosis).await?;
        write_report(&info, state.shards).await?;
        Ok::<_, PipelineError>((manifest, diagnose_time, generate_time))
    }
    .await;
    match result {
        Ok((manifest, diagnose_time, generate_time)) => {
            state.error = None;
            set_phase(&info, &mut state, &io.status, Phase::Done).await?;
            update(&io.status, |s| s.dataset = Some(manifest.clone()));
            Ok(DriveReport { manifest, diagnose_time, generate_time, resumed_shards: resumed })
        }
        Err(e) => fail(&info, &mut state, &io.status, e).await,
    }
}

/// Ends the job `failed` (or `cancelled`) with its reason, bounded; returns the error.
async fn fail(info: &JobInfo, state: &mut JobState, status: &SharedStatus, e: PipelineError) -> Result<DriveReport, PipelineError> {
    let reason = e.report();
    tracing::warn!(job = %info.job_id, error = %reason, "job ended without finishing");
    state.error = Some(reason.clone());
    let phase = if matches!(e, PipelineError::Cancelled) { Phase::Cancelled } else { Phase::Failed };
    update(status, |s| s.error = Some(reason));
    set_phase(info, state, status, phase).await?;
    Err(e)
}

/// Images of a shard: every shard is full but the last.
fn shard_images(state: &JobState, shard_size: usize, shard: u32) -> u64 {
    let start = u64::from(shard) * shard_size as u64;
    state.images.saturating_sub(start).min(shard_size as u64)
}

/// The images of given-up diagnose shards count as failed, under `shard_failed`.
fn account_failed_shards(info: &JobInfo, state: &JobState, failed: &BTreeSet<u32>, status: &SharedStatus) {
    if failed.is_empty() {
        return;
    }
    let prompts = info.spec.prompts.len() as u64;
    let items: u64 = failed.iter().map(|&s| shard_images(state, info.spec.shard_size, s) * prompts).sum();
    update(status, |s| {
        s.diagnose.failed_items += items;
        *s.errors_by_reason.entry("shard_failed".into()).or_default() += items;
    });
}

/// After the diagnose stage: too many failed images fail the job; some give a warning.
/// `images`: the images the stage was asked about (all, unless adaptive diagnosis stopped).
fn check_failures(info: &JobInfo, images: u64, status: &SharedStatus) -> Result<Option<String>, PipelineError> {
    let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let total = images * info.spec.prompts.len() as u64;
    let failed = s.diagnose.failed_items;
    if failed == 0 {
        return Ok(None);
    }
    let mut reasons: Vec<(&String, &u64)> = s.errors_by_reason.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let reasons = reasons.iter().take(5).map(|(r, n)| format!("{r}: {n}")).collect::<Vec<_>>().join(", ");
    let what = format!("{failed} of {total} images failed ({reasons})");
    if failed >= total || failed as f64 > info.spec.max_failed_fraction * total as f64 {
        return Err(PipelineError::Failed(format!("{what}; above max_failed_fraction {}", info.spec.max_failed_fraction)));
    }
    Ok(Some(what))
}

async fn set_phase(info: &JobInfo, state: &mut JobState, status: &SharedStatus, phase: Phase) -> Result<(), PipelineError> {
    state.phase = phase;
    if matches!(phase, Phase::Done | Phase::Failed | Phase::Cancelled) {
        state.finished_at = Some(unix_now() as u64);
    }
    write_state(info.store.as_ref(), state).await?;
    update(status, |s| {
        s.phase = phase;
        s.finished_at = state.finished_at;
    });
    for p in [
        Phase::Planning,
        Phase::Diagnosing,
        Phase::Profiling,
        Phase::Generating,
        Phase::Finishing,
        Phase::Done,
        Phase::Failed,
        Phase::Cancelled,
    ] {
        let name = serde_json::to_value(p).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        crate::metrics::metrics().job_phase.with_label_values(&[&info.job_id, &name]).set(i64::from(p == phase));
    }
    tracing::info!(job = %info.job_id, phase = ?phase, "job phase");
    Ok(())
}

/// Adaptive diagnosis's state: the summary folded so far and the last look's verdict.
struct Adaptive {
    rule: StopRule,
    /// The first wave's summary (it places the boundary) and the later waves' (they are tested).
    pilot: Summary,
    rest: Summary,
    decision: Option<StopDecision>,
}

/// What a stage did.
struct StageOutcome {
    /// Shards whose task was given up.
    given_up: BTreeSet<u32>,
    /// Shards whose task was published (all, unless adaptive diagnosis stopped early).
    dispatched: BTreeSet<u32>,
    /// Waves published.
    waves: usize,
}

/// Publishes the tasks of each wave and follows their events until the wave is accounted
/// for. With `adaptive`, folds each finished shard's summary and looks after every wave: once
/// the top-k set is settled, the later waves are never published (nothing is left in the
/// queues, and no finished work is lost). Looks happen at wave boundaries only, so where it
/// stops depends on the seed and the data, never on the order events arrive in.
async fn run_stage(
    info: &JobInfo,
    io: &mut DriverIo,
    stage: Stage,
    waves: &[Vec<u32>],
    total_items: u64,
    resumed: &mut u64,
    mut adaptive: Option<&mut Adaptive>,
) -> Result<StageOutcome, PipelineError> {
    let count: u32 = waves.iter().map(|w| w.len() as u32).sum();
    io.progress.stage_started(stage.as_str(), total_items);
    update(&io.status, |s| *s.stage_mut(stage) = StageStatus { shards_total: count, ..StageStatus::default() });
    let m = crate::metrics::metrics();
    let job = info.job_id.as_str();
    let st = stage.as_str();
    m.job_shards.with_label_values(&[job, st, "total"]).set(i64::from(count));
    m.job_shards.with_label_values(&[job, st, "done"]).set(0);
    m.job_shards.with_label_values(&[job, st, "failed"]).set(0);
    m.job_items.with_label_values(&[job, st, "total"]).set(total_items as i64);
    m.job_items.with_label_values(&[job, st, "done"]).set(0);
    m.job_last_progress.with_label_values(&[job]).set(unix_now());
    let qname = if stage == Stage::Diagnose { DIAGNOSE_QUEUE } else { GENERATE_QUEUE };
    // the clock starts with the first task: workers start on it while the rest are published
    let started = Instant::now();
    let mut outcome = StageOutcome { given_up: BTreeSet::new(), dispatched: BTreeSet::new(), waves: 0 };
    for (w, wave) in waves.iter().enumerate() {
        let shards: BTreeSet<u32> = wave.iter().copied().collect();
        for &shard in wave {
            let task = ShardTask { schema_version: MESSAGE_SCHEMA_VERSION, job_id: info.job_id.clone(), stage, shard };
            let payload = encode(&task).map_err(|e| PipelineError::Encode { what: "shard task".into(), reason: e.to_string() })?;
            tokio::select! {
                biased;
                _ = io.shutdown.cancelled() => return Err(PipelineError::Cancelled),
                published = io.queue.publish(qname, payload) => published?,
            }
            outcome.dispatched.insert(shard);
        }
        outcome.waves += 1;
        let mut done: BTreeSet<u32> = BTreeSet::new();
        while done.len() < shards.len() {
            let ev = tokio::select! {
                biased;
                _ = io.shutdown.cancelled() => return Err(PipelineError::Cancelled),
                ev = io.events.recv() => ev,
            };
            let Some(ev) = ev else { return Err(PipelineError::Cancelled) };
            if ev.stage != stage || ev.job_id != info.job_id || !shards.contains(&ev.shard) || !done.insert(ev.shard) {
                continue;
            }
            if ev.error.is_some() {
                outcome.given_up.insert(ev.shard);
            } else if let Some(a) = adaptive.as_deref_mut() {
                // folded as it arrives: the look at the wave's end needs no second pass
                let summary: Summary = crate::generate::read_json(info.store.as_ref(), &crate::layout::summary_shard(ev.shard)).await?;
                if outcome.waves == 1 {
                    a.pilot.merge(&summary)
                } else {
                    a.rest.merge(&summary)
                };
            }
            *resumed += u64::from(ev.already_done);
            io.progress.advanced(stage.as_str(), ev.items);
            let elapsed = started.elapsed().as_secs_f64().max(1e-6);
            update(&io.status, |s| {
                if let Some(err) = &ev.error {
                    s.failed_shards
                        .insert(format!("{}/{}", stage.as_str(), ev.shard), crate::error::bounded(err, crate::error::MAX_ERROR_TEXT));
                }
                // reasons are short codes; anything else in a queue message is not trusted as a key
                for (reason, n) in &ev.errors_by_reason {
                    let code = if is_reason_code(reason) { reason.as_str() } else { "other" };
                    if s.errors_by_reason.len() < MAX_REASONS || s.errors_by_reason.contains_key(code) {
                        *s.errors_by_reason.entry(code.to_string()).or_default() += n;
                    }
                }
                let st = s.stage_mut(stage);
                st.shards_done += 1;
                st.shards_failed += u32::from(ev.error.is_some());
                st.items += ev.items;
                st.failed_items += ev.failed;
                st.rate = st.items as f64 / elapsed;
                let left = st.shards_total.saturating_sub(st.shards_done) as f64;
                st.eta_seconds = Some(elapsed / st.shards_done.max(1) as f64 * left);
                m.job_shards.with_label_values(&[job, stage.as_str(), "done"]).set(i64::from(st.shards_done));
                m.job_shards.with_label_values(&[job, stage.as_str(), "failed"]).set(i64::from(st.shards_failed));
                m.job_items.with_label_values(&[job, stage.as_str(), "done"]).set(st.items as i64);
                m.job_eta.with_label_values(&[job, stage.as_str()]).set(st.eta_seconds.unwrap_or(0.0));
            });
            m.job_last_progress.with_label_values(&[job]).set(unix_now());
        }
        if let Some(a) = adaptive.as_deref_mut() {
            let d = decide(&a.pilot, &a.rest, &a.rule);
            tracing::info!(
                job = %info.job_id,
                wave = w + 1,
                waves = waves.len(),
                images = a.pilot.images + a.rest.images,
                stop = d.stop,
                confidence = d.confidence,
                reason = %d.reason,
                "adaptive diagnosis looked"
            );
            let stop = d.stop;
            a.decision = Some(d);
            if stop && w + 1 < waves.len() {
                let dispatched = outcome.dispatched.len() as u32;
                update(&io.status, |s| s.stage_mut(stage).shards_total = dispatched);
                m.job_shards.with_label_values(&[job, st, "total"]).set(i64::from(dispatched));
                break;
            }
        }
    }
    io.progress.stage_finished(stage.as_str());
    Ok(outcome)
}

/// `dataset.json`'s `diagnosis` block.
fn diagnosis_summary(
    info: &JobInfo,
    state: &JobState,
    images_diagnosed: u64,
    waves_planned: usize,
    waves_dispatched: usize,
    adaptive: Option<&Adaptive>,
) -> DiagnosisSummary {
    let prompts = info.spec.prompts.len() as u64;
    let images_total = state.images;
    let undiagnosed = images_total.saturating_sub(images_diagnosed);
    let base = DiagnosisSummary {
        images_diagnosed,
        images_total,
        stopped_early: undiagnosed > 0,
        model_calls_saved: undiagnosed * prompts,
        ..DiagnosisSummary::default()
    };
    let Some(a) = adaptive else {
        return DiagnosisSummary { reason: "stop_when not set: every image diagnosed".into(), ..base };
    };
    let (reason, confidence, top) = match &a.decision {
        Some(d) if undiagnosed > 0 => (d.reason.clone(), round4(d.confidence), d.top.clone()),
        Some(d) => (format!("every image diagnosed: {}", d.reason), round4(d.confidence), d.top.clone()),
        None => ("every image diagnosed: no wave finished".to_string(), 0.0, Vec::new()),
    };
    DiagnosisSummary {
        reason,
        confidence: Some(confidence),
        top,
        waves_dispatched: waves_dispatched as u32,
        waves_planned: waves_planned as u32,
        ..base
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).floor() / 10_000.0
}

/// Distinct failure reasons a job's status keeps.
const MAX_REASONS: usize = 64;

fn is_reason_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= 48 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Unix time in seconds (0 if the clock is before 1970).
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
