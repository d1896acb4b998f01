//! Stage 1, step 3 with models: the image information from an open-vocabulary detector and a
//! yes/no judge instead of (or beside) annotations. Claims first: the caption is read, then
//! the detector is asked only about the concepts it claims (plus the always-checked list), in
//! one call per image; a concept the detector is unsure of goes to the judge when there is
//! one, and stays *unverified* otherwise (neither a hallucination nor a correct mention). A
//! claim the detector finds nothing for is confirmed by the judge too, when there is one:
//! detectors miss small objects and crowds, and a missed object must not read as a
//! hallucination. Confident detections are taken as they are (no judge call).
//! Attributes are checked only by the judge. Every verdict keeps its evidence in the record.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;

use dftg_core::check::diagnose_extraction;
use dftg_core::detection::{decide, Detection, Thresholds, Verdict};
use dftg_core::extract::{ExtractScratch, Extraction, Extractor};
use dftg_core::record::{ClaimEvidence, DiagnosisRecord, EvidenceSource, ImageError, Unverified};
use dftg_core::truth::{ImageTruth, ObjectTruth};
use dftg_model::cache::CallCache;
use dftg_model::client::ModelError;
use dftg_model::detect::{detect_cached, DetectRequest, Detector};
use dftg_model::judge::{Judge, JudgeAnswer};

use crate::job::TruthSource;

/// Detector answers and judge answers kept per job (a redelivered shard does not pay twice).
const CACHE_ENTRIES: usize = 200_000;

/// The models that give a job its truth.
pub struct TruthModels {
    pub source: TruthSource,
    pub detector: Arc<dyn Detector>,
    pub judge: Option<Judge>,
    pub thresholds: Thresholds,
    /// Concepts asked about on every image.
    pub always_check: Vec<String>,
    /// With `annotations+detector`: the concepts the annotations are authoritative for.
    pub covered: BTreeSet<String>,
    detections: CallCache<Vec<Detection>>,
    judged: CallCache<JudgeAnswer<bool>>,
    /// Attribute answers, keyed by the question (it names the concept and the family).
    described: CallCache<JudgeAnswer<Option<String>>>,
}

impl TruthModels {
    pub fn new(
        source: TruthSource,
        detector: Arc<dyn Detector>,
        judge: Option<Judge>,
        thresholds: Thresholds,
        always_check: Vec<String>,
        covered: BTreeSet<String>,
    ) -> Self {
        TruthModels {
            source,
            detector,
            judge,
            thresholds,
            always_check,
            covered,
            detections: CallCache::new(CACHE_ENTRIES),
            judged: CallCache::new(CACHE_ENTRIES),
            described: CallCache::new(CACHE_ENTRIES),
        }
    }
}

/// What a detector or judge failure is counted as: `detector_timeout`, `judge_http_5xx`, ….
fn reason(service: &str, e: &ModelError) -> ImageError {
    let code = e.reason();
    let code = code.strip_prefix("model_").unwrap_or(code);
    ImageError { reason: format!("{service}_{code}"), message: e.to_string() }
}

/// The label a concept is asked under: LVIS-style names use `_` for spaces.
fn label(concept: &str) -> String {
    concept.replace('_', " ")
}

/// One response diagnosed against the truth the models give. `Err` is the per-image failure.
#[allow(clippy::too_many_arguments)]
pub async fn diagnose_with_models(
    models: &TruthModels,
    extractor: &Extractor,
    annotated: &ImageTruth,
    image: &Bytes,
    mime: &str,
    prompt: &str,
    response: &str,
) -> Result<DiagnosisRecord, ImageError> {
    let vocab = extractor.vocab();
    let mut ex = Extraction::default();
    extractor.extract_into(response, &mut ExtractScratch::default(), &mut ex);

    // claims first: the concepts the caption asserts, then the always-checked ones
    let mut asked: Vec<String> = Vec::new();
    for m in &ex.mentions {
        let name = vocab.name(m.concept);
        if !asked.iter().any(|a| a == name) {
            asked.push(name.to_string());
        }
    }
    for c in &models.always_check {
        if vocab.lookup(c).is_some() && !asked.iter().any(|a| a == c) {
            asked.push(c.clone());
        }
    }
    let by_annotation = |c: &str| models.source == TruthSource::AnnotationsAndDetector && models.covered.contains(c);
    let to_detect: Vec<String> = asked.iter().filter(|c| !by_annotation(c)).cloned().collect();

    let mut truth = ImageTruth { image: annotated.image.clone(), file: annotated.file.clone(), objects: Vec::new() };
    // attribute answers asked beside the existence questions, by (concept, family)
    let mut early_attributes: Vec<AttributeAnswer> = Vec::new();
    let mut checked: Vec<String> = Vec::new();
    let mut evidence: Vec<ClaimEvidence> = Vec::new();
    let mut unverified: Vec<Unverified> = Vec::new();
    if models.source == TruthSource::AnnotationsAndDetector {
        truth.objects.extend(annotated.objects.iter().filter(|o| models.covered.contains(&o.name)).cloned());
        checked.extend(models.covered.iter().cloned());
        for c in asked.iter().filter(|c| by_annotation(c)) {
            let present = annotated.has(c);
            evidence.push(ClaimEvidence {
                concept: c.clone(),
                verdict: if present { "present" } else { "absent" }.into(),
                source: EvidenceSource::Annotation,
                score: None,
                bbox: None,
                count: annotated.object(c).and_then(|o| o.count),
                question: None,
                answer: None,
            });
        }
    }

    if !to_detect.is_empty() {
        let labels: Vec<String> = to_detect.iter().map(|c| label(c)).collect();
        let req = DetectRequest::new(image.clone(), labels.clone());
        let m = &crate::metrics::metrics().service_requests;
        let reply = match detect_cached(models.detector.as_ref(), &models.detections, &annotated.image, &req).await {
            Ok(reply) => {
                m.with_label_values(&["detector", if reply.requests == 0 { "cached" } else { "ok" }])
                    .inc_by(u64::from(reply.requests.max(1)));
                reply
            }
            Err(e) => {
                m.with_label_values(&["detector", "error"]).inc();
                return Err(reason("detector", &e));
            }
        };
        let verdicts: Vec<Verdict> = labels.iter().map(|label| decide(&reply.detections, label, &models.thresholds)).collect();
        // the judge's questions of one image are independent: they go at once, so an image
        // holds its slot for one judge round trip, not one per doubtful claim; the attributes
        // of objects the detector is sure of go in the same round
        let mut answers: Vec<Option<JudgeAnswer<bool>>> = match &models.judge {
            Some(judge) => {
                let sure: Vec<&String> = to_detect.iter().zip(&verdicts).filter(|(_, v)| v.is_present()).map(|(c, _)| c).collect();
                let first_round = attribute_questions(&ex, vocab, |c| sure.contains(&c));
                let existence = futures::future::try_join_all(verdicts.iter().zip(&labels).map(|(v, label)| async move {
                    match v {
                        Verdict::Absent { .. } | Verdict::Uncertain { .. } => {
                            ask_exists(models, judge, &annotated.image, image, mime, label).await.map(Some)
                        }
                        Verdict::Present { .. } => Ok(None),
                    }
                }));
                let attributes = futures::future::try_join_all(
                    first_round.iter().map(|(c, family)| ask_attribute(models, judge, &annotated.image, image, mime, c, family, vocab)),
                );
                let (answers, described) = futures::future::try_join(existence, attributes).await?;
                early_attributes.extend(first_round.into_iter().zip(described));
                answers
            }
            None => vec![None; verdicts.len()],
        };
        for ((concept, verdict), answer) in to_detect.iter().zip(verdicts).zip(answers.iter_mut()) {
            let mut ev = ClaimEvidence {
                concept: concept.clone(),
                verdict: String::new(),
                source: EvidenceSource::Detector,
                score: None,
                bbox: None,
                count: None,
                question: None,
                answer: None,
            };
            match verdict {
                Verdict::Present { count, score, boxes } => {
                    ev.verdict = "present".into();
                    ev.score = Some(score);
                    ev.bbox = boxes.first().copied();
                    ev.count = count;
                    truth.objects.push(ObjectTruth { name: concept.clone(), count, attributes: Default::default() });
                    checked.push(concept.clone());
                }
                Verdict::Absent { best_score } => {
                    ev.score = best_score;
                    ev.verdict = "absent".into();
                    // a claimed concept the detector cannot find is a hallucination unless the
                    // detector missed it (small objects, crowds): the judge confirms first
                    if let Some(a) = answer.take() {
                        ev.source = EvidenceSource::Judge;
                        ev.question = Some(a.question.clone());
                        ev.answer = Some(a.raw.clone());
                        if a.answer {
                            ev.verdict = "present".into();
                            truth.objects.push(ObjectTruth { name: concept.clone(), count: None, attributes: Default::default() });
                        }
                    }
                    checked.push(concept.clone());
                }
                Verdict::Uncertain { best_score } => {
                    ev.score = Some(best_score);
                    match answer.take() {
                        Some(a) => {
                            ev.source = EvidenceSource::Judge;
                            ev.verdict = if a.answer { "present" } else { "absent" }.into();
                            ev.question = Some(a.question.clone());
                            ev.answer = Some(a.raw.clone());
                            if a.answer {
                                // the detector's boxes were unsure: the count stays unknown
                                truth.objects.push(ObjectTruth { name: concept.clone(), count: None, attributes: Default::default() });
                            }
                            checked.push(concept.clone());
                        }
                        None => {
                            ev.verdict = "unverified".into();
                            unverified.push(Unverified { concept: concept.clone(), score: Some(best_score) });
                        }
                    }
                }
            }
            evidence.push(ev);
        }
    }

    // attributes: only a judge can see colours and materials, and only of present objects
    if let Some(judge) = &models.judge {
        let questions = attribute_questions(&ex, vocab, |c| !by_annotation(c) && truth.objects.iter().any(|o| o.name == *c));
        // answered in the first round, or asked now (objects the judge confirmed), all at once;
        // answers in the claims' order
        let early = &early_attributes;
        let replies = futures::future::try_join_all(questions.iter().map(|q| async move {
            match early.iter().find(|(e, _)| e == q) {
                Some((_, a)) => Ok(a.clone()),
                None => ask_attribute(models, judge, &annotated.image, image, mime, &q.0, &q.1, vocab).await,
            }
        }))
        .await?;
        for ((concept, family), a) in questions.into_iter().zip(replies) {
            let Some(obj) = truth.objects.iter_mut().find(|o| o.name == concept) else { continue };
            if let Some(value) = &a.answer {
                obj.attributes.insert(family.clone(), vec![value.clone()]);
            }
            evidence.push(ClaimEvidence {
                concept: concept.clone(),
                verdict: format!("{family}: {}", a.answer.as_deref().unwrap_or("unknown")),
                source: EvidenceSource::Judge,
                score: None,
                bbox: None,
                count: None,
                question: Some(a.question),
                answer: Some(a.raw),
            });
        }
    }

    // unverified claims are neither hallucinations nor correct mentions
    if !unverified.is_empty() {
        let ids: Vec<_> = unverified.iter().filter_map(|u| vocab.lookup(&u.concept)).collect();
        ex.mentions.retain(|m| !ids.contains(&m.concept));
    }
    let mut record = diagnose_extraction(vocab, &ex, &truth, prompt, response);
    checked.sort();
    checked.dedup();
    record.checked = Some(checked);
    record.unverified = unverified;
    record.evidence = evidence;
    Ok(record)
}

/// A judge's answer on an attribute family of a concept: ((concept, family), answer).
type AttributeAnswer = ((String, String), JudgeAnswer<Option<String>>);

/// The attribute questions a caption's claims raise, (concept, family), once each, in the
/// claims' order, for the concepts `ask` accepts.
fn attribute_questions(ex: &Extraction, vocab: &dftg_core::vocab::Vocabulary, ask: impl Fn(&String) -> bool) -> Vec<(String, String)> {
    let mut questions: Vec<(String, String)> = Vec::new();
    for m in &ex.mentions {
        let concept = vocab.name(m.concept).to_string();
        if !ask(&concept) {
            continue;
        }
        for (attr, _) in m.attributes() {
            let q = (concept.clone(), vocab.attribute_name(attr).0.to_string());
            if !questions.contains(&q) {
                questions.push(q);
            }
        }
    }
    questions
}

/// One judge answer through the job's cache, counted in `dftg_service_requests_total{service="judge"}`
/// (`cached`, `ok` or `error`) whichever the question, so the judge's requests per image are all
/// of its requests.
async fn judge_cached<V: Clone>(
    cache: &CallCache<V>,
    key: dftg_model::cache::CacheKey,
    ask: impl std::future::Future<Output = Result<V, ModelError>>,
) -> Result<V, ImageError> {
    let m = &crate::metrics::metrics().service_requests;
    if let Some(a) = cache.get(&key) {
        m.with_label_values(&["judge", "cached"]).inc();
        return Ok(a);
    }
    let a = ask.await.map_err(|e| {
        m.with_label_values(&["judge", "error"]).inc();
        reason("judge", &e)
    })?;
    m.with_label_values(&["judge", "ok"]).inc();
    cache.insert(key, a.clone());
    Ok(a)
}

/// The judge's answer on one attribute family of a present object (cached per job).
#[allow(clippy::too_many_arguments)]
async fn ask_attribute(
    models: &TruthModels,
    judge: &Judge,
    image_key: &str,
    image: &Bytes,
    mime: &str,
    concept: &str,
    family: &str,
    vocab: &dftg_core::vocab::Vocabulary,
) -> Result<JudgeAnswer<Option<String>>, ImageError> {
    let key = dftg_model::cache::CacheKey::new(image_key, judge.service(), format!("{family} of {concept}"));
    judge_cached(&models.described, key, judge.attribute(image, mime, &label(concept), family, vocab)).await
}

/// Whether a claimed object is there, by the judge (cached per job).
async fn ask_exists(
    models: &TruthModels,
    judge: &Judge,
    image_key: &str,
    image: &Bytes,
    mime: &str,
    label: &str,
) -> Result<JudgeAnswer<bool>, ImageError> {
    let key = dftg_model::cache::CacheKey::new(image_key, judge.service(), label);
    judge_cached(&models.judged, key, judge.exists(image, mime, label)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use dftg_core::vocab::Vocabulary;
    use dftg_model::client::ScriptedClient;
    use dftg_model::detect::ScriptedDetector;

    #[tokio::test]
    async fn an_image_asked_about_again_costs_no_request_attributes_included() {
        let image = Bytes::from_static(b"image-bytes");
        let detector = ScriptedDetector::new().with_boxes(
            &image,
            vec![
                // the car is certain; the dog sits in the uncertain band, so the judge is asked
                Detection { label: "car".into(), score: 0.9, bbox: [0.0, 0.0, 10.0, 10.0] },
                Detection { label: "dog".into(), score: 0.2, bbox: [20.0, 0.0, 30.0, 10.0] },
            ],
        );
        let judge_client = Arc::new(ScriptedClient::new("judge", |req| {
            Ok(if req.prompt.starts_with("Is there") { "Yes.".to_string() } else { "Red.".to_string() })
        }));
        let models = TruthModels::new(
            TruthSource::Detector,
            Arc::new(detector),
            Some(Judge::new(judge_client.clone())),
            Thresholds::default(),
            Vec::new(),
            BTreeSet::new(),
        );
        let extractor = Extractor::new(Arc::new(Vocabulary::coco80()));
        let annotated = ImageTruth { image: "img-1".into(), file: None, objects: Vec::new() };
        let caption = "A red car is parked beside a dog.";
        let first = diagnose_with_models(&models, &extractor, &annotated, &image, "image/png", "describe", caption).await.unwrap();
        let asked = judge_client.calls();
        assert_eq!(asked, 2, "one existence question (dog) and one attribute question (the car's colour)");
        assert!(first.evidence.iter().any(|e| e.verdict == "color: red"), "{:?}", first.evidence);
        let again = diagnose_with_models(&models, &extractor, &annotated, &image, "image/png", "describe", caption).await.unwrap();
        assert_eq!(judge_client.calls(), asked, "the second time every answer comes from the job's cache");
        assert_eq!(again.evidence, first.evidence);
    }
}
