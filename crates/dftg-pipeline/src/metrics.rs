//! Prometheus metrics of every dftg process; names and labels follow docs/metrics.md
//! (`dftg_` prefix, base units, `_total` counters). One registry per process.

use std::sync::LazyLock;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub images_processed: IntCounterVec,
    pub image_errors: IntCounterVec,
    pub shards_processed: IntCounterVec,
    pub model_request_duration: HistogramVec,
    pub model_request_errors: IntCounterVec,
    pub model_requests_in_flight: IntGauge,
    pub model_retries: IntCounter,
    pub model_tokens: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub hallucinations_found: IntCounterVec,
    pub concept_hallucinations: IntCounterVec,
    pub instructions_generated: IntCounterVec,
    pub store_request_duration: HistogramVec,
    pub store_errors: IntCounterVec,
    pub job_shards: IntGaugeVec,
    pub job_items: IntGaugeVec,
    pub job_eta: GaugeVec,
    pub job_phase: IntGaugeVec,
    pub job_last_progress: GaugeVec,
    pub queue_messages: IntGaugeVec,
    pub queue_consumers: IntGaugeVec,
    pub build_info: IntGaugeVec,
    pub task_panics: IntCounter,
    pub service_requests: IntCounterVec,
    pub api_unauthorized: IntCounter,
    pub writer_items: IntCounterVec,
    pub writer_rejections: IntCounterVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(g.clone())).expect("metric registered once");
    g
}

fn fgauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(g.clone())).expect("metric registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric definition");
    r.register(Box::new(h.clone())).expect("metric registered once");
    h
}

// The definitions are static and tested: a failure here is a build defect, not an input error.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    let latency = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
    let in_flight = IntGauge::new("dftg_model_requests_in_flight", "Model requests currently open.").expect("valid metric definition");
    r.register(Box::new(in_flight.clone())).expect("metric registered once");
    let retries = IntCounter::new("dftg_model_retries_total", "Extra attempts made by the model client.").expect("valid metric definition");
    r.register(Box::new(retries.clone())).expect("metric registered once");
    let panics = IntCounter::new("dftg_task_panics_total", "Shard tasks that panicked (dead-lettered; the worker went on).")
        .expect("valid metric definition");
    r.register(Box::new(panics.clone())).expect("metric registered once");
    let unauthorized = IntCounter::new("dftg_api_unauthorized_total", "API requests refused for a missing or wrong token.")
        .expect("valid metric definition");
    r.register(Box::new(unauthorized.clone())).expect("metric registered once");
    Metrics {
        images_processed: counter(
            &r,
            "dftg_images_processed_total",
            "Diagnosis records written (one per image and prompt).",
            &["stage", "outcome"],
        ),
        image_errors: counter(&r, "dftg_image_errors_total", "Per-image failures by reason.", &["reason"]),
        shards_processed: counter(&r, "dftg_shards_processed_total", "Shard tasks settled by workers.", &["stage", "outcome"]),
        model_request_duration: histogram(
            &r,
            "dftg_model_request_duration_seconds",
            "One model call including its retries.",
            &["outcome"],
            latency.clone(),
        ),
        model_request_errors: counter(&r, "dftg_model_request_errors_total", "Model calls that failed after their retries.", &["reason"]),
        model_requests_in_flight: in_flight,
        model_retries: retries,
        model_tokens: counter(
            &r,
            "dftg_model_tokens_total",
            "Tokens the models reported using, by role (subject: the model under diagnosis; writer: the data writer) and kind.",
            &["role", "kind"],
        ),
        dead_letters: counter(&r, "dftg_dead_letters_total", "Messages moved to a dead-letter queue.", &["queue"]),
        hallucinations_found: counter(&r, "dftg_hallucinations_found_total", "Hallucinations found by diagnosis.", &["kind"]),
        concept_hallucinations: counter(&r, "dftg_concept_hallucinations_total", "Object hallucinations per concept.", &["concept"]),
        instructions_generated: counter(&r, "dftg_instructions_generated_total", "Instruction records written.", &["type"]),
        store_request_duration: histogram(&r, "dftg_store_request_duration_seconds", "Object store requests.", &["op"], latency),
        store_errors: counter(&r, "dftg_store_errors_total", "Failed object store requests.", &["op"]),
        job_shards: gauge(&r, "dftg_job_shards", "Job progress in shards.", &["job", "stage", "state"]),
        job_items: gauge(&r, "dftg_job_items", "Job progress in images or instructions.", &["job", "stage", "state"]),
        job_eta: fgauge(&r, "dftg_job_eta_seconds", "Estimated seconds to the end of the stage.", &["job", "stage"]),
        job_phase: gauge(&r, "dftg_job_phase", "1 for the job's current phase.", &["job", "phase"]),
        job_last_progress: fgauge(&r, "dftg_job_last_progress_timestamp_seconds", "Unix time of the job's last shard event.", &["job"]),
        queue_messages: gauge(&r, "dftg_queue_messages", "Messages waiting in a queue.", &["queue"]),
        queue_consumers: gauge(&r, "dftg_queue_consumers", "Consumers attached to a queue.", &["queue"]),
        build_info: gauge(&r, "dftg_build_info", "Always 1.", &["version", "role"]),
        task_panics: panics,
        service_requests: counter(
            &r,
            "dftg_service_requests_total",
            "Requests to the truth services (detector, judge), by outcome.",
            &["service", "outcome"],
        ),
        api_unauthorized: unauthorized,
        writer_items: counter(
            &r,
            "dftg_writer_items_total",
            "Remedy items by outcome: accepted, fallback (template after refusals), dropped, rewrite (re-asks).",
            &["outcome"],
        ),
        writer_rejections: counter(&r, "dftg_writer_rejections_total", "Writer replies the gate refused, by reason.", &["reason"]),
        registry: r,
    }
});

pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Marks the process's role and makes every metric family appear from the start.
pub fn init(role: &str) {
    let m = metrics();
    m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), role]).set(1);
    m.model_requests_in_flight.set(0);
    for stage in ["diagnose", "generate"] {
        for outcome in ["done", "already_done", "requeued", "dead_lettered"] {
            m.shards_processed.with_label_values(&[stage, outcome]);
        }
    }
    for outcome in ["ok", "failed"] {
        m.images_processed.with_label_values(&["diagnose", outcome]);
    }
    for kind in ["object", "count", "attribute"] {
        m.hallucinations_found.with_label_values(&[kind]);
    }
    for outcome in ["ok", "error"] {
        m.model_request_duration.with_label_values(&[outcome]);
    }
    for kind in ["prompt", "completion"] {
        m.model_tokens.with_label_values(&[dftg_core::tokens::ROLE_SUBJECT, kind]);
    }
    // label sets that dashboards and alerts query exist from the start (at 0)
    for q in [crate::messages::DIAGNOSE_QUEUE, crate::messages::GENERATE_QUEUE] {
        m.dead_letters.with_label_values(&[q]);
    }
    for kind in dftg_model::client::ModelErrorKind::ALL {
        m.model_request_errors.with_label_values(&[kind.reason()]);
        m.image_errors.with_label_values(&[kind.reason()]);
    }
    for reason in ["corrupt_image", "missing_image", "image_too_large", "bad_annotation", "store_error", "shard_failed"] {
        m.image_errors.with_label_values(&[reason]);
    }
    for t in dftg_core::llava::InstructionType::ALL {
        m.instructions_generated.with_label_values(&[t.as_str()]);
    }
    for outcome in ["accepted", "fallback", "dropped", "rewrite"] {
        m.writer_items.with_label_values(&[outcome]);
    }
    for why in dftg_core::writer::gate::Rejection::ALL {
        m.writer_rejections.with_label_values(&[why.as_str()]);
    }
    for role in ["subject", "writer"] {
        for kind in ["prompt", "completion"] {
            m.model_tokens.with_label_values(&[role, kind]);
        }
    }
    for service in ["detector", "judge"] {
        for outcome in ["ok", "error", "cached"] {
            m.service_requests.with_label_values(&[service, outcome]);
        }
    }
    for op in ["get", "head", "put", "list", "delete"] {
        m.store_request_duration.with_label_values(&[op]);
        m.store_errors.with_label_values(&[op]);
    }
}

/// Removes every series of a forgotten job, so `/metrics` does not grow with jobs past.
pub fn forget_job(job_id: &str) {
    let m = metrics();
    for stage in ["diagnose", "generate"] {
        for state in ["total", "done", "failed"] {
            let _ = m.job_shards.remove_label_values(&[job_id, stage, state]);
            let _ = m.job_items.remove_label_values(&[job_id, stage, state]);
        }
        let _ = m.job_eta.remove_label_values(&[job_id, stage]);
    }
    for phase in ["planning", "diagnosing", "profiling", "generating", "finishing", "done", "failed", "cancelled"] {
        let _ = m.job_phase.remove_label_values(&[job_id, phase]);
    }
    let _ = m.job_last_progress.remove_label_values(&[job_id]);
}

/// The text exposition format.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&metrics().registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// An axum route serving `/metrics`.
pub fn route<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route("/metrics", axum::routing::get(|| async { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], render()) }))
}

/// A store that records request latency and errors (`dftg_store_*`).
pub struct MeteredStore<S>(pub S);

impl<S: dftg_runtime::BlobStore> MeteredStore<S> {
    async fn timed<T>(
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, dftg_runtime::StoreError>>,
    ) -> Result<T, dftg_runtime::StoreError> {
        let started = std::time::Instant::now();
        let r = f.await;
        let m = metrics();
        m.store_request_duration.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        if r.is_err() {
            m.store_errors.with_label_values(&[op]).inc();
        }
        r
    }
}

impl<S: dftg_runtime::BlobStore> dftg_runtime::BlobStore for MeteredStore<S> {
    fn get<'a>(&'a self, key: &'a str) -> futures::future::BoxFuture<'a, Result<Option<bytes::Bytes>, dftg_runtime::StoreError>> {
        Box::pin(Self::timed("get", self.0.get(key)))
    }
    fn put_create<'a>(
        &'a self,
        key: &'a str,
        data: bytes::Bytes,
    ) -> futures::future::BoxFuture<'a, Result<dftg_runtime::PutOutcome, dftg_runtime::StoreError>> {
        Box::pin(Self::timed("put", self.0.put_create(key, data)))
    }
    fn put<'a>(&'a self, key: &'a str, data: bytes::Bytes) -> futures::future::BoxFuture<'a, Result<(), dftg_runtime::StoreError>> {
        Box::pin(Self::timed("put", self.0.put(key, data)))
    }
    fn list<'a>(&'a self, prefix: &'a str) -> futures::future::BoxFuture<'a, Result<Vec<String>, dftg_runtime::StoreError>> {
        Box::pin(Self::timed("list", self.0.list(prefix)))
    }
    fn list_stream<'a>(&'a self, prefix: &'a str) -> futures::stream::BoxStream<'a, Result<String, dftg_runtime::StoreError>> {
        // pages arrive lazily, inside the consumer's loop: not timed as one request
        self.0.list_stream(prefix)
    }
    fn head<'a>(&'a self, key: &'a str) -> futures::future::BoxFuture<'a, Result<Option<u64>, dftg_runtime::StoreError>> {
        Box::pin(Self::timed("head", self.0.head(key)))
    }
    fn get_stream<'a>(
        &'a self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<dftg_runtime::ByteStream>, dftg_runtime::StoreError>> {
        Box::pin(Self::timed("get", self.0.get_stream(key)))
    }
    fn delete<'a>(&'a self, key: &'a str) -> futures::future::BoxFuture<'a, Result<(), dftg_runtime::StoreError>> {
        Box::pin(Self::timed("delete", self.0.delete(key)))
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_metric_is_exported() {
        init("test");
        metrics().job_shards.with_label_values(&["j", "diagnose", "done"]).set(1);
        metrics().job_items.with_label_values(&["j", "diagnose", "done"]).set(1);
        metrics().job_eta.with_label_values(&["j", "diagnose"]).set(1.0);
        metrics().job_phase.with_label_values(&["j", "done"]).set(1);
        metrics().job_last_progress.with_label_values(&["j"]).set(1.0);
        metrics().queue_messages.with_label_values(&["q"]).set(1);
        metrics().queue_consumers.with_label_values(&["q"]).set(1);
        metrics().dead_letters.with_label_values(&["q"]).inc();
        metrics().image_errors.with_label_values(&["r"]).inc();
        metrics().model_request_errors.with_label_values(&["r"]).inc();
        metrics().concept_hallucinations.with_label_values(&["dog"]).inc();
        metrics().instructions_generated.with_label_values(&["count"]).inc();
        metrics().model_retries.inc();
        let text = render();
        let doc = include_str!("../../../docs/metrics.md");
        for line in doc.lines().filter(|l| l.starts_with("| `dftg_")) {
            let name = line.split('`').nth(1).unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} is documented but not exported");
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(doc.contains(&format!("`{name}`")), "{name} is exported but not documented");
        }
    }
}
