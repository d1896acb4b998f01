//! What a job may touch, decided by the operator: the stores (and prefixes) a job may read its
//! corpus from and write its outputs to, the model endpoints it may call (the operator's API
//! key goes only there), and the vocabularies it may name. The coordinator checks every job at
//! submit and the workers check it again before they act on it, so a job outside the operator's
//! roots is refused, never half-run.
//!
//! Comparisons are on normalised forms: store URLs split into (kind, bucket, path segments)
//! with `.`/`..` segments refused, endpoints parsed into (scheme, host, port, path segments),
//! and a root matches only at a segment boundary (`s3://b/data` allows `s3://b/data/x`, not
//! `s3://b/database`).

use std::path::{Path, PathBuf};

use crate::error::PipelineError;
use crate::job::{DetectorKind, JobSpec, JudgeKind, ModelKind, VocabularyChoice};

/// Longest store URL, endpoint or name a job may give.
pub const MAX_LOCATION_LEN: usize = 1024;
/// Longest vocabulary name.
pub const MAX_NAME_LEN: usize = 64;
/// The vocabularies compiled into dftg (coco80, lvis).
pub use crate::choice::BuiltinVocabulary;

/// A store location in normalised form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRoot {
    Memory,
    Local(Vec<String>),
    S3 { bucket: String, segments: Vec<String> },
}

impl StoreRoot {
    /// Parses `s3://bucket/prefix`, `file:///abs/path`, an absolute path or `memory://`.
    /// Relative local paths are refused: they would mean different places to each process.
    pub fn parse(url: &str) -> Result<Self, &'static str> {
        if url.len() > MAX_LOCATION_LEN {
            return Err("the location is too long");
        }
        if url.chars().any(char::is_control) {
            return Err("the location holds control characters");
        }
        if url == "memory://" {
            return Ok(StoreRoot::Memory);
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("the url names no bucket");
            }
            return Ok(StoreRoot::S3 { bucket: bucket.to_string(), segments: segments(path)? });
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if url.contains("://") && !url.starts_with("file://") {
            return Err("supported schemes: s3://, file://, memory://");
        }
        if !path.starts_with('/') {
            return Err("local paths must be absolute");
        }
        Ok(StoreRoot::Local(segments(path)?))
    }

    /// `self` is `root` or lies under it.
    pub fn is_under(&self, root: &StoreRoot) -> bool {
        match (self, root) {
            (StoreRoot::Memory, StoreRoot::Memory) => true,
            (StoreRoot::Local(s), StoreRoot::Local(r)) => s.starts_with(r),
            (StoreRoot::S3 { bucket: b, segments: s }, StoreRoot::S3 { bucket: rb, segments: r }) => b == rb && s.starts_with(r),
            _ => false,
        }
    }
}

/// Path segments without empty ones; `.` and `..` are refused rather than resolved, so a
/// location means the same thing to every process and cannot climb out of a root.
fn segments(path: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" => {}
            "." | ".." => return Err("the location holds '.' or '..' segments"),
            s => out.push(s.to_string()),
        }
    }
    Ok(out)
}

/// An endpoint root in normalised form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRoot {
    scheme: String,
    host: String,
    port: u16,
    segments: Vec<String>,
}

impl EndpointRoot {
    /// Parses an `http(s)://host[:port]/path` URL; user info, query and fragment are refused
    /// (credentials are the operator's and never part of a job).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.len() > MAX_LOCATION_LEN {
            return Err("the endpoint is too long");
        }
        let url = url::Url::parse(text).map_err(|_| "not a valid url")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("the endpoint must be an http:// or https:// url");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the endpoint must not carry credentials (user:password@)");
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("the endpoint must not carry a query or fragment");
        }
        let host = url.host_str().ok_or("the endpoint names no host")?.to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or("the endpoint names no port")?;
        // the url crate has already resolved `.` and `..` in the path
        let segments = url.path().split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
        Ok(EndpointRoot { scheme: url.scheme().to_string(), host, port, segments })
    }

    pub fn is_under(&self, root: &EndpointRoot) -> bool {
        self.scheme == root.scheme && self.host == root.host && self.port == root.port && self.segments.starts_with(&root.segments)
    }
}

/// A vocabulary (or CHAIR vocabulary directory) the job names, resolved by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VocabSource {
    Builtin(BuiltinVocabulary),
    File(PathBuf),
}

/// The operator's roots. `open()` is the embedded shape's: the person running `dftg run` is the
/// operator, so local paths are theirs to name.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    stores: Vec<StoreRoot>,
    endpoints: Vec<EndpointRoot>,
    vocab_dir: Option<PathBuf>,
    open: bool,
    /// The operator lets jobs use the bundled simulator profiles (`--allow-sim`): workers run
    /// the simulator in process. Profile files stay refused (they are local paths).
    sim: bool,
}

impl Policy {
    /// Everything allowed (embedded `dftg run`, tests of the stages).
    pub fn open() -> Self {
        Policy { open: true, ..Policy::default() }
    }

    /// Confined to the given roots. Invalid roots are the operator's error, reported by name.
    pub fn confined(stores: &[String], endpoints: &[String], vocab_dir: Option<PathBuf>) -> Result<Self, PipelineError> {
        let stores = stores
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| StoreRoot::parse(s.trim()).map_err(|why| PipelineError::invalid("allow-store", format!("{}: {why}", s.trim()))))
            .collect::<Result<_, _>>()?;
        let endpoints = endpoints
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| EndpointRoot::parse(s.trim()).map_err(|why| PipelineError::invalid("allow-endpoint", format!("{}: {why}", s.trim()))))
            .collect::<Result<_, _>>()?;
        Ok(Policy { stores, endpoints, vocab_dir, open: false, sim: false })
    }

    /// Lets jobs name a bundled simulator profile (`sim:NAME`) and simulated detectors,
    /// judges and writers.
    pub fn allow_simulator(&mut self) {
        self.sim = true;
    }

    /// Whether a job may use `kind` as its model without an endpoint: anything under the open
    /// policy; a bundled simulator profile when the operator allows the simulator.
    pub fn allows_model_kind(&self, kind: &ModelKind) -> bool {
        self.open || (self.sim && kind.sim_profile().is_some_and(|n| dftg_model::sim::bundled_profile_names().contains(&n)))
    }

    /// Adds a store root (the coordinator's and workers' own `--store` is always allowed).
    pub fn allow_store(&mut self, url: &str) -> Result<(), PipelineError> {
        let root = StoreRoot::parse(url).map_err(|why| PipelineError::invalid("store", why))?;
        self.stores.push(root);
        Ok(())
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Checks everything a job may touch; the error names the field.
    pub fn check(&self, spec: &JobSpec) -> Result<(), PipelineError> {
        self.check_store("corpus.path", &spec.corpus.path)?;
        if let Some(out) = &spec.out {
            self.check_store("out", out)?;
        }
        if spec.model.kind.is_openai() {
            self.check_endpoint("model.endpoint", spec.model.endpoint.as_deref().unwrap_or(""))?;
        } else if !self.allows_model_kind(&spec.model.kind) {
            return Err(PipelineError::invalid(
                "model.kind",
                if self.sim {
                    "this deployment serves models behind an allowed endpoint (kind = \"openai\") and the bundled simulator profiles (sim:NAME)"
                } else {
                    "this deployment serves only models behind an allowed endpoint (kind = \"openai\"; the operator's --allow-sim adds the bundled simulator profiles)"
                },
            ));
        }
        if let Some(d) = &spec.truth.detector {
            self.check_service("truth.detector", d.kind == DetectorKind::Sim, d.endpoint.as_deref(), "http")?;
        }
        if let Some(j) = &spec.truth.judge {
            self.check_service("truth.judge", j.kind == JudgeKind::Sim, j.endpoint.as_deref(), "openai")?;
        }
        let w = &spec.generation.writer;
        match w.kind {
            dftg_core::writer::WriterKind::Template => {}
            dftg_core::writer::WriterKind::OpenAi => {
                self.check_endpoint("generation.writer.endpoint", w.endpoint.as_deref().unwrap_or(""))?;
            }
            dftg_core::writer::WriterKind::Sim => {
                self.check_service("generation.writer", w.endpoint.is_none(), w.endpoint.as_deref(), "openai")?;
            }
        }
        if spec.nltk_tagger.is_some() && !self.open {
            return Err(PipelineError::invalid(
                "nltk_tagger",
                "the tagger is the operator's: it sits beside the CHAIR vocabulary in --vocab-dir",
            ));
        }
        // names are checked against the directory now, so a job naming a missing one is
        // refused at submit instead of failing on every worker
        if let VocabSource::File(path) = self.vocabulary(&spec.vocabulary)? {
            if !path.is_file() {
                return Err(PipelineError::invalid("vocabulary", "no such vocabulary (see --vocab-dir)"));
            }
        }
        if let Some(dir) = &spec.chair_vocab {
            if !self.chair_vocab(dir)?.join("synonyms.txt").is_file() {
                return Err(PipelineError::invalid(
                    "chair_vocab",
                    "no such CHAIR vocabulary (a directory with synonyms.txt, see --vocab-dir)",
                ));
            }
        }
        Ok(())
    }

    pub fn check_store(&self, field: &str, url: &str) -> Result<(), PipelineError> {
        if self.open {
            return Ok(());
        }
        let loc = StoreRoot::parse(url).map_err(|why| PipelineError::invalid(field, why))?;
        if self.stores.iter().any(|root| loc.is_under(root)) {
            Ok(())
        } else {
            Err(PipelineError::invalid(field, "the location is outside the stores this deployment allows (see --allow-store)"))
        }
    }

    /// A truth service (`prefix` = `truth.detector` or `truth.judge`): its endpoint must be
    /// allowed; a simulated one (which reads local files) only under the open policy.
    fn check_service(&self, prefix: &str, simulated: bool, endpoint: Option<&str>, http_kind: &str) -> Result<(), PipelineError> {
        match endpoint {
            Some(e) if !simulated => self.check_endpoint(&format!("{prefix}.endpoint"), e),
            _ if !(self.open || (self.sim && simulated)) => Err(PipelineError::invalid(
                format!("{prefix}.kind"),
                format!("this deployment serves only services behind an allowed endpoint (kind = \"{http_kind}\")"),
            )),
            _ => Ok(()),
        }
    }

    pub fn check_endpoint(&self, field: &str, url: &str) -> Result<(), PipelineError> {
        let loc = EndpointRoot::parse(url).map_err(|why| PipelineError::invalid(field, why))?;
        if self.open || self.endpoints.iter().any(|root| loc.is_under(root)) {
            Ok(())
        } else {
            Err(PipelineError::invalid(field, "the endpoint is not one this deployment allows (see --allow-endpoint)"))
        }
    }

    /// `coco80` or `lvis` (built in), a name in the vocabulary directory (`<dir>/<name>.toml`), or (open policy
    /// only) a path to a vocabulary TOML.
    pub fn vocabulary(&self, choice: &VocabularyChoice) -> Result<VocabSource, PipelineError> {
        match choice {
            VocabularyChoice::Builtin(b) => Ok(VocabSource::Builtin(*b)),
            VocabularyChoice::File(value) => self.named_file("vocabulary", value, ".toml"),
        }
    }

    /// The directory holding CHAIR's `synonyms.txt` and `double_words.json`: a name in the
    /// vocabulary directory, or (open policy only) a path.
    pub fn chair_vocab(&self, value: &str) -> Result<PathBuf, PipelineError> {
        match self.named_file("chair_vocab", value, "")? {
            VocabSource::File(p) => Ok(p),
            VocabSource::Builtin(_) => Err(PipelineError::invalid("chair_vocab", "names no directory")),
        }
    }

    fn named_file(&self, field: &str, value: &str, ext: &str) -> Result<VocabSource, PipelineError> {
        if is_name(value) {
            if let Some(dir) = &self.vocab_dir {
                return Ok(VocabSource::File(dir.join(format!("{value}{ext}"))));
            }
        }
        if self.open && !value.trim().is_empty() && value.len() <= MAX_LOCATION_LEN {
            return Ok(VocabSource::File(Path::new(value).to_path_buf()));
        }
        if !is_name(value) {
            return Err(PipelineError::invalid(field, "give a vocabulary name (letters, digits, '-', '_'), not a path"));
        }
        Err(PipelineError::invalid(
            field,
            "this deployment has no vocabulary directory (see --vocab-dir); only the built-in coco80 and lvis are available",
        ))
    }
}

/// A name, not a path: 1–64 of letters, digits, `-`, `_`, not starting with `-`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.starts_with('-') && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobSpec, ModelSpec};

    fn choice(vocabulary: &str) -> VocabularyChoice {
        vocabulary.parse().unwrap()
    }

    fn spec(corpus: &str, endpoint: &str) -> JobSpec {
        let model = ModelSpec { kind: ModelKind::OpenAi, endpoint: Some(endpoint.into()), name: Some("m".into()), ..ModelSpec::default() };
        JobSpec::new(corpus, model)
    }

    fn policy() -> Policy {
        Policy::confined(
            &["s3://data/corpora".into(), "file:///srv/dftg".into()],
            &["http://model.internal:8000/v1".into()],
            Some("/etc/dftg/vocab".into()),
        )
        .unwrap()
    }

    fn field(r: Result<(), PipelineError>) -> String {
        match r.unwrap_err() {
            PipelineError::Invalid { field, .. } => field,
            e => panic!("not an invalid-field error: {e}"),
        }
    }

    #[test]
    fn stores_match_at_segment_boundaries_only() {
        let p = policy();
        assert!(p.check_store("corpus.path", "s3://data/corpora/coco").is_ok());
        assert!(p.check_store("corpus.path", "s3://data/corpora").is_ok());
        assert!(p.check_store("corpus.path", "s3://data/corpora-private").is_err());
        assert!(p.check_store("corpus.path", "s3://other/corpora").is_err());
        assert!(p.check_store("corpus.path", "s3://data/corpora/../secrets").is_err());
        assert!(p.check_store("out", "file:///srv/dftg/out").is_ok());
        assert!(p.check_store("out", "/srv/dftg/out").is_ok());
        assert!(p.check_store("out", "file:///srv/dftg/../../etc").is_err());
        assert!(p.check_store("out", "file:///anywhere").is_err());
        assert!(p.check_store("out", "relative/dir").is_err());
        assert!(p.check_store("out", "memory://").is_err());
        assert!(p.check_store("out", "http://x/").is_err());
    }

    #[test]
    fn endpoints_match_scheme_host_port_and_path() {
        let p = policy();
        assert!(p.check_endpoint("model.endpoint", "http://model.internal:8000/v1").is_ok());
        assert!(p.check_endpoint("model.endpoint", "http://MODEL.internal:8000/v1/").is_ok());
        for bad in [
            "http://model.internal:8001/v1",
            "https://model.internal:8000/v1",
            "http://model.internal:8000/v2",
            "http://model.internal:8000/v1x",
            "http://model.internal:8000/v1/../admin",
            "http://model.internal.evil.com:8000/v1",
            "http://user:pw@model.internal:8000/v1",
            "http://model.internal:8000/v1?x=1",
            "http://model.internal:8000/v1#f",
            "http://169.254.169.254/latest/meta-data",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(p.check_endpoint("model.endpoint", bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn the_simulator_needs_the_operators_leave_and_a_bundled_profile() {
        let mut p = policy();
        let mut sim = spec("s3://data/corpora/coco", "http://model.internal:8000/v1");
        sim.model.kind = "sim:kitchenware".parse().unwrap();
        sim.model.endpoint = None;
        let err = p.check(&sim).unwrap_err().to_string();
        assert!(err.contains("model.kind") && err.contains("--allow-sim"), "{err}");
        p.allow_simulator();
        p.check(&sim).unwrap();
        for refused in ["sim:configs/sim/mild.toml", "sim:/etc/passwd", "replay:/etc/passwd"] {
            sim.model.kind = refused.parse().unwrap();
            assert_eq!(field(p.check(&sim)), "model.kind", "{refused}");
        }
        // a simulated judge is the simulator too
        let mut judged = spec("s3://data/corpora/coco", "http://model.internal:8000/v1");
        judged.truth.judge = Some(crate::job::JudgeSpec::sim());
        p.check(&judged).unwrap();
        assert_eq!(field(policy().check(&judged)), "truth.judge.kind");
    }

    #[test]
    fn jobs_are_checked_field_by_field() {
        let p = policy();
        let ok = spec("s3://data/corpora/coco", "http://model.internal:8000/v1");
        p.check(&ok).unwrap();
        assert_eq!(field(p.check(&spec("s3://data/elsewhere", "http://model.internal:8000/v1"))), "corpus.path");
        assert_eq!(field(p.check(&spec("s3://data/corpora/coco", "http://127.0.0.1:9/v1"))), "model.endpoint");
        let mut out = ok.clone();
        out.out = Some("file:///anywhere".into());
        assert_eq!(field(p.check(&out)), "out");
        let mut vocab = ok.clone();
        vocab.vocabulary = choice("/proc/self/environ");
        assert_eq!(field(p.check(&vocab)), "vocabulary");
        vocab.vocabulary = choice("../../etc/passwd");
        assert_eq!(field(p.check(&vocab)), "vocabulary");
        vocab.vocabulary = choice("objects365");
        assert_eq!(field(p.check(&vocab)), "vocabulary", "a name that is not in the directory");
        assert_eq!(p.vocabulary(&choice("objects365")).unwrap(), VocabSource::File("/etc/dftg/vocab/objects365.toml".into()));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("objects365.toml"), "").unwrap();
        let with_dir =
            Policy::confined(&["s3://data/corpora".into()], &["http://model.internal:8000/v1".into()], Some(dir.path().into())).unwrap();
        with_dir.check(&vocab).unwrap();
        let mut chair = ok.clone();
        chair.chair_vocab = Some("/etc".into());
        assert_eq!(field(p.check(&chair)), "chair_vocab");
        let mut sim = ok;
        sim.model.kind = "replay:/etc/passwd".parse().unwrap();
        assert_eq!(field(p.check(&sim)), "model.kind");
    }

    #[test]
    fn without_a_vocabulary_directory_only_the_builtin_is_available() {
        let p = Policy::confined(&[], &[], None).unwrap();
        assert_eq!(p.vocabulary(&choice("coco80")).unwrap(), VocabSource::Builtin(BuiltinVocabulary::Coco80));
        assert_eq!(p.vocabulary(&choice("lvis")).unwrap(), VocabSource::Builtin(BuiltinVocabulary::Lvis));
        assert!(p.vocabulary(&choice("objects365")).is_err());
    }

    #[test]
    fn the_open_policy_allows_local_paths() {
        let p = Policy::open();
        assert_eq!(p.vocabulary(&choice("configs/vocab/x.toml")).unwrap(), VocabSource::File("configs/vocab/x.toml".into()));
        let mut local = spec("examples/corpus", "http://127.0.0.1:9/v1");
        local.vocabulary = choice("../../configs/vocab/coco80.toml");
        p.check(&local).unwrap();
        // credentials in an endpoint are refused even here: they would be stored in job.json
        assert!(p.check(&spec("examples/corpus", "http://u:p@127.0.0.1:9/v1")).is_err());
    }
}
