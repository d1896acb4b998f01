//! Planning (the coordinator's first step, both shapes): the corpus's ground truth → plan shards
//! of `shard_size` images, each written as soon as it fills.
//!
//! JSONL manifests — one file, or every part file listed under a prefix (`annotations =
//! "manifest/"`) — are streamed line by line: memory holds one shard, whatever the corpus size.
//! A COCO instances file is one JSON document whose annotations for an image may be anywhere in
//! it: up to 64 MiB it is read whole (images in file order); beyond, it is streamed once and
//! split by image into parts on local scratch disk (`coco_parts`), then planned part by part.
//! The object map (CHAIR's cache format, ids → names) is read whole.

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use dftg_runtime::{BlobStore, ByteStream, StoreError};

use crate::corpus::{document_entries, locate_truth, long_manifest_line, manifest_entry, CorpusFormat, PlanEntry, MAX_MANIFEST_LINE_BYTES};
use crate::diagnose::encode_jsonl;
use crate::error::PipelineError;
use crate::job::CorpusSpec;
use crate::layout;
use dftg_core::truth::ImageTruth;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSummary {
    pub shards: u32,
    pub images: u64,
}

/// When planning holds a document whole, and where it spills otherwise.
#[derive(Debug, Clone)]
pub struct PlanLimits {
    /// COCO files up to this size are read whole.
    pub coco_whole_bytes: u64,
    /// Beyond it, one part per this many bytes of the file (at most 256 parts: two scratch
    /// files each stay open while splitting).
    pub coco_part_bytes: u64,
    /// Scratch directory for the parts (`DFTG_SCRATCH_DIR`, else the system's temp dir).
    pub scratch: std::path::PathBuf,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            coco_whole_bytes: 64 << 20,
            coco_part_bytes: 16 << 20,
            scratch: std::env::var_os("DFTG_SCRATCH_DIR").map(Into::into).unwrap_or_else(std::env::temp_dir),
        }
    }
}

/// Streams the corpus's ground truth into plan shards under `out` (`plan/shard-NNNNN.jsonl`).
/// Shards are overwritten, not create-only: a plan becomes real only when `job.json` records
/// its shard count, and no task exists before that, so a restarted plan simply starts over.
pub async fn plan_corpus(
    corpus: &dyn BlobStore,
    spec: &CorpusSpec,
    out: &dyn BlobStore,
    shard_size: usize,
) -> Result<PlanSummary, PipelineError> {
    plan_corpus_with(corpus, spec, out, shard_size, &PlanLimits::default()).await
}

/// Plans a corpus without reading any annotation: every image file under the corpus (by
/// extension), in key order, each with an empty truth for the detector to fill. The listing
/// is sorted so that every store and every shape plans the same shards; it holds the keys
/// (not the images) in memory.
pub async fn plan_image_listing(
    corpus: &dyn BlobStore,
    spec: &CorpusSpec,
    out: &dyn BlobStore,
    shard_size: usize,
) -> Result<PlanSummary, PipelineError> {
    let prefix = spec.image_dir.as_deref().map(|d| format!("{}/", d.trim_end_matches('/'))).unwrap_or_default();
    let mut keys: Vec<String> = corpus.list(&prefix).await?.into_iter().filter(|k| is_image_file(k)).collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Err(PipelineError::invalid("corpus.path", "the corpus holds no image files (png, jpg, jpeg, gif, webp)"));
    }
    let mut shards = ShardWriter {
        out,
        shard_size: shard_size.max(1),
        buf: Vec::new(),
        done: PlanSummary { shards: 0, images: 0 },
        writes: FuturesUnordered::new(),
    };
    for file in keys {
        let entry = if file.len() > crate::corpus::MAX_KEY_BYTES {
            PlanEntry {
                truth: ImageTruth {
                    image: format!("listing-{}", shards.done.images + shards.buf.len() as u64),
                    file: None,
                    objects: Vec::new(),
                },
                error: Some(dftg_core::record::ImageError {
                    reason: "bad_annotation".into(),
                    message: "an image file name is over the key limit".into(),
                }),
            }
        } else {
            PlanEntry { truth: ImageTruth { image: listed_image_key(&file), file: Some(file), objects: Vec::new() }, error: None }
        };
        shards.push(entry).await?;
    }
    shards.finish().await
}

/// Image files by extension (case-insensitive).
pub fn is_image_file(key: &str) -> bool {
    let ext = key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg" | "gif" | "webp"))
}

/// The key of a listed image: its path without the extension and without a leading `images/`
/// (`images/000123.jpg` → `000123`, `cams/a/1.png` → `cams/a/1`).
pub fn listed_image_key(file: &str) -> String {
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    stem.strip_prefix("images/").unwrap_or(stem).to_string()
}

pub async fn plan_corpus_with(
    corpus: &dyn BlobStore,
    spec: &CorpusSpec,
    out: &dyn BlobStore,
    shard_size: usize,
    limits: &PlanLimits,
) -> Result<PlanSummary, PipelineError> {
    let (file, format) = locate_truth(corpus, spec).await?;
    let mut shards = ShardWriter {
        out,
        shard_size: shard_size.max(1),
        buf: Vec::new(),
        done: PlanSummary { shards: 0, images: 0 },
        writes: FuturesUnordered::new(),
    };
    let mut files = ImageFiles::new(spec);
    match format {
        CorpusFormat::Jsonl if file.ends_with('/') => {
            // part names are few (not images): sorted, so every store plans the same order
            let mut parts = Vec::new();
            let mut listing = corpus.list_stream(&file);
            while let Some(key) = listing.next().await {
                let key = key?;
                if !key.ends_with('/') {
                    parts.push(key);
                }
            }
            parts.sort();
            if parts.is_empty() {
                return Err(PipelineError::invalid(
                    "corpus.annotations",
                    format!("no manifest parts under {file} in {}", corpus.describe()),
                ));
            }
            for part in &parts {
                let stream = corpus.get_stream(part).await?.ok_or_else(|| missing(corpus, part))?;
                stream_manifest(stream, Some(part), corpus, &mut files, &mut shards).await?;
            }
        }
        CorpusFormat::Jsonl => {
            let stream = corpus.get_stream(&file).await?.ok_or_else(|| missing(corpus, &file))?;
            stream_manifest(stream, None, corpus, &mut files, &mut shards).await?;
        }
        CorpusFormat::Coco | CorpusFormat::ObjectMap => {
            let size = corpus.head(&file).await?.ok_or_else(|| missing(corpus, &file))?;
            if format == CorpusFormat::ObjectMap || size <= limits.coco_whole_bytes {
                let text = corpus.get(&file).await?.ok_or_else(|| missing(corpus, &file))?;
                for entry in document_entries(&file, format, &text)? {
                    shards.push(files.locate(corpus, entry).await?).await?;
                }
            } else {
                let parts = size.div_ceil(limits.coco_part_bytes.max(1)).clamp(2, 256) as usize;
                let stream = corpus.get_stream(&file).await?.ok_or_else(|| missing(corpus, &file))?;
                let split = crate::coco_parts::split(stream, &file, &limits.scratch, parts).await?;
                tracing::info!(file = %file, images = split.images, annotations = split.annotations, parts, "coco file split for planning");
                let mut parts = split.parts_in_turn();
                while let Some(part) = parts.recv().await {
                    for truth in part? {
                        shards.push(files.locate(corpus, PlanEntry { truth, error: None }).await?).await?;
                    }
                }
            }
        }
    }
    shards.finish().await
}

fn missing(corpus: &dyn BlobStore, file: &str) -> PipelineError {
    PipelineError::invalid("corpus.annotations", format!("{file} not found in {}", corpus.describe()))
}

async fn stream_manifest(
    stream: ByteStream,
    part: Option<&str>,
    corpus: &dyn BlobStore,
    files: &mut ImageFiles,
    shards: &mut ShardWriter<'_>,
) -> Result<(), PipelineError> {
    let mut lines = Lines::new(stream);
    let mut line_no = 0usize;
    while let Some(line) = lines.next_line().await? {
        line_no += 1;
        let entry = match line {
            Line::Text(text) if text.trim().is_empty() => continue,
            Line::Text(text) => manifest_entry(&text, line_no, part),
            Line::TooLong { bytes } => long_manifest_line(bytes, lines.max_line(), line_no, part),
        };
        shards.push(files.locate(corpus, entry).await?).await?;
    }
    Ok(())
}

/// Shard puts in flight while the next shard fills (each a store round trip; bounded, so
/// memory still holds a handful of shards at most).
const WRITES_IN_FLIGHT: usize = 8;

struct ShardWriter<'a> {
    out: &'a dyn BlobStore,
    shard_size: usize,
    buf: Vec<PlanEntry>,
    done: PlanSummary,
    writes: FuturesUnordered<BoxFuture<'a, Result<(), StoreError>>>,
}

impl ShardWriter<'_> {
    async fn push(&mut self, entry: PlanEntry) -> Result<(), PipelineError> {
        self.buf.push(entry);
        if self.buf.len() >= self.shard_size {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), PipelineError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        while self.writes.len() >= WRITES_IN_FLIGHT {
            if let Some(r) = self.writes.next().await {
                r?;
            }
        }
        let (out, key, body) = (self.out, layout::plan_shard(self.done.shards), encode_jsonl("plan shard", &self.buf)?);
        self.writes.push(Box::pin(async move { out.put(&key, body).await }));
        self.done.shards += 1;
        self.done.images += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    async fn finish(mut self) -> Result<PlanSummary, PipelineError> {
        self.flush().await?;
        while let Some(r) = self.writes.next().await {
            r?;
        }
        Ok(self.done)
    }
}

/// Where each image's file is: the ground truth's file name under the image directory, or the
/// image pattern. The directory is settled once, on the first entry with a file name.
struct ImageFiles {
    pattern: Option<String>,
    dir: Option<String>,
}

impl ImageFiles {
    fn new(spec: &CorpusSpec) -> Self {
        let dir = spec.image_dir.as_ref().map(|d| {
            let d = d.trim_matches('/');
            if d.is_empty() {
                String::new()
            } else {
                format!("{d}/")
            }
        });
        ImageFiles { pattern: spec.image_pattern.clone(), dir }
    }

    async fn locate(&mut self, corpus: &dyn BlobStore, mut entry: PlanEntry) -> Result<PlanEntry, StoreError> {
        if entry.error.is_some() {
            return Ok(entry);
        }
        match entry.truth.file.take() {
            None => entry.truth.file = self.pattern.as_ref().map(|p| p.replace("{image}", &entry.truth.image)),
            Some(file) => {
                if self.dir.is_none() {
                    self.dir = Some(Self::guess_dir(corpus, &file).await?);
                }
                entry.truth.file = Some(format!("{}{file}", self.dir.as_deref().unwrap_or("")));
            }
        }
        Ok(entry)
    }

    /// COCO's `file_name` is relative to an image folder the annotations do not name.
    async fn guess_dir(corpus: &dyn BlobStore, file: &str) -> Result<String, StoreError> {
        if corpus.get_stream(file).await?.is_some() {
            return Ok(String::new());
        }
        let under_images = format!("images/{file}");
        if !file.starts_with("images/") && corpus.get_stream(&under_images).await?.is_some() {
            return Ok("images/".into());
        }
        // neither: the worker reports the image as missing, with its path
        Ok(String::new())
    }
}

/// One line of a [`Lines`] reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The line without its `\n` (or `\r\n`).
    Text(String),
    /// A line longer than the reader's limit, skipped without being held; `bytes` is its
    /// length without the `\n`.
    TooLong { bytes: u64 },
}

/// Lines of a byte stream, read chunk by chunk (a line may span chunks), in time linear in
/// the stream and memory bounded by the line limit plus one chunk.
pub struct Lines {
    stream: ByteStream,
    buf: Vec<u8>,
    /// Where the current line starts in `buf`.
    start: usize,
    /// `buf[start..scanned]` holds no `\n`: each byte is searched once, however many chunks a
    /// long line spans (rescanning from `start` made long lines quadratic).
    scanned: usize,
    /// Bytes of an over-long line dropped so far, while skipping to its end.
    skipping: Option<u64>,
    max_line: usize,
    ended: bool,
}

impl Lines {
    /// A reader with the default limit, [`MAX_MANIFEST_LINE_BYTES`].
    pub fn new(stream: ByteStream) -> Self {
        Self::with_max_line(stream, MAX_MANIFEST_LINE_BYTES)
    }

    pub fn with_max_line(stream: ByteStream, max_line: usize) -> Self {
        Lines { stream, buf: Vec::new(), start: 0, scanned: 0, skipping: None, max_line, ended: false }
    }

    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The next line; invalid UTF-8 is replaced, so a bad line becomes a per-line error
    /// downstream instead of stopping the plan.
    pub async fn next_line(&mut self) -> Result<Option<Line>, StoreError> {
        loop {
            let found = self.buf[self.scanned..].iter().position(|&b| b == b'\n').map(|p| self.scanned + p);
            if let Some(pos) = found {
                let (start, skipped) = (self.start, self.skipping.take());
                self.start = pos + 1;
                self.scanned = self.start;
                return Ok(Some(self.finish(start, pos, skipped)));
            }
            self.scanned = self.buf.len();
            if self.ended {
                if self.start == self.buf.len() && self.skipping.is_none() {
                    return Ok(None);
                }
                let (start, end, skipped) = (self.start, self.buf.len(), self.skipping.take());
                self.start = end;
                return Ok(Some(self.finish(start, end, skipped)));
            }
            let pending = self.buf.len() - self.start;
            if self.skipping.is_some() || pending > self.max_line {
                // over the limit: count the bytes and drop them; the line's end is still sought
                self.skipping = Some(self.skipping.unwrap_or(0).saturating_add(pending as u64));
                self.buf.clear();
            } else {
                self.buf.drain(..self.start);
            }
            self.scanned -= self.start.min(self.scanned);
            self.scanned = self.scanned.min(self.buf.len());
            self.start = 0;
            match self.stream.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk?),
                None => self.ended = true,
            }
        }
    }

    /// The line in `buf[start..end]`, after `skipped` bytes already dropped.
    fn finish(&self, start: usize, end: usize, skipped: Option<u64>) -> Line {
        let bytes = &self.buf[start..end];
        let len = skipped.unwrap_or(0).saturating_add(bytes.len() as u64);
        if skipped.is_some() || bytes.len() > self.max_line {
            // a `\r` before the `\n` counts toward the limit
            return Line::TooLong { bytes: len };
        }
        Line::Text(decode_line(bytes))
    }
}

fn decode_line(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use dftg_runtime::ObjectBlobStore;
    use futures::StreamExt;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>()).boxed()
    }

    async fn all_lines(mut l: Lines) -> Vec<Line> {
        let mut got = Vec::new();
        while let Some(x) = l.next_line().await.unwrap() {
            got.push(x);
        }
        got
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_string())
    }

    #[tokio::test]
    async fn lines_span_chunks_and_keep_a_last_line_without_newline() {
        let got = all_lines(Lines::new(chunks(&[b"ab", b"c\r\nd", b"", b"e\n\nf"]))).await;
        assert_eq!(got, vec![text("abc"), text("de"), text(""), text("f")]);
        assert_eq!(all_lines(Lines::new(chunks(&[b"a\n"]))).await, vec![text("a")]);
        assert_eq!(all_lines(Lines::new(chunks(&[]))).await, vec![]);
    }

    /// `len` bytes of `x` in chunks of `chunk` bytes, then `tail`.
    fn long_line(len: usize, chunk: usize, tail: &'static [u8]) -> ByteStream {
        let piece = Bytes::from(vec![b'x'; chunk]);
        let mut parts: Vec<Result<Bytes, StoreError>> = (0..len / chunk).map(|_| Ok(piece.clone())).collect();
        parts.push(Ok(Bytes::from(vec![b'x'; len % chunk])));
        parts.push(Ok(Bytes::from_static(tail)));
        futures::stream::iter(parts).boxed()
    }

    /// A 40 MB line in 4 KiB chunks took 57 s when each chunk rescanned the line; now each
    /// byte is searched once (speed in BENCHMARKS.md; asserted here: the behaviour).
    #[tokio::test]
    async fn a_40_mb_line_under_the_limit_is_read_whole() {
        const LEN: usize = 40_000_000;
        let got = all_lines(Lines::with_max_line(long_line(LEN, 4096, b"\nnext\n"), 64 << 20)).await;
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0], Line::Text(t) if t.len() == LEN && t.bytes().all(|b| b == b'x')));
        assert_eq!(got[1], text("next"));
    }

    #[tokio::test]
    async fn a_40_mb_line_over_the_limit_is_skipped_and_counted() {
        const LEN: usize = 40_000_000;
        let mut l = Lines::new(long_line(LEN, 4096, b"\r\n{\"image\":\"a\"}\n"));
        assert_eq!(l.next_line().await.unwrap(), Some(Line::TooLong { bytes: LEN as u64 + 1 }));
        assert!(l.buf.capacity() <= MAX_MANIFEST_LINE_BYTES * 2 + 8192, "held {} bytes", l.buf.capacity());
        assert_eq!(l.next_line().await.unwrap(), Some(text("{\"image\":\"a\"}")));
        assert_eq!(l.next_line().await.unwrap(), None);
        // at the end of the stream, without a newline
        let got = all_lines(Lines::with_max_line(long_line(10_000, 100, b""), 1000)).await;
        assert_eq!(got, vec![Line::TooLong { bytes: 10_000 }]);
        // a long line inside a single chunk, between short ones
        let got = all_lines(Lines::with_max_line(chunks(&[b"a\nbbbbbbbbbbbb\nc"]), 4)).await;
        assert_eq!(got, vec![text("a"), Line::TooLong { bytes: 12 }, text("c")]);
        // exactly at the limit is a line
        let got = all_lines(Lines::with_max_line(chunks(&[b"ab", b"cd", b"\ne"]), 4)).await;
        assert_eq!(got, vec![text("abcd"), text("e")]);
    }

    #[tokio::test]
    async fn an_overlong_manifest_line_is_a_bad_annotation_and_the_plan_goes_on() {
        let corpus = ObjectBlobStore::in_memory();
        let mut manifest = b"{\"image\":\"a\",\"file\":\"a.png\"}\n{\"image\":\"".to_vec();
        manifest.extend(std::iter::repeat_n(b'y', MAX_MANIFEST_LINE_BYTES + 10));
        manifest.extend_from_slice(b"\"}\n{\"image\":\"c\",\"file\":\"c.png\"}\n");
        corpus.put("manifest.jsonl", Bytes::from(manifest)).await.unwrap();
        let out = ObjectBlobStore::in_memory();
        assert_eq!(plan_corpus(&corpus, &spec(None), &out, 10).await.unwrap(), PlanSummary { shards: 1, images: 3 });
        let planned = shard_lines(&out, 0).await;
        assert_eq!(planned.iter().map(|e| e.truth.image.as_str()).collect::<Vec<_>>(), ["a", "manifest-line-2", "c"]);
        let err = planned[1].error.as_ref().unwrap();
        assert_eq!(err.reason, "bad_annotation");
        assert!(err.message.starts_with("manifest line 2 is ") && !err.message.contains("yyy"), "{}", err.message);
    }

    fn spec(annotations: Option<&str>) -> CorpusSpec {
        CorpusSpec {
            path: "memory://".into(),
            annotations: annotations.map(str::to_string),
            format: None,
            image_pattern: None,
            image_dir: None,
        }
    }

    async fn shard_lines(out: &ObjectBlobStore, shard: u32) -> Vec<PlanEntry> {
        let b = out.get(&layout::plan_shard(shard)).await.unwrap().expect("shard written");
        std::str::from_utf8(&b).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[tokio::test]
    async fn manifest_parts_are_planned_in_key_order_with_bad_lines_kept() {
        let corpus = ObjectBlobStore::in_memory();
        corpus.put("images/a.png", Bytes::from_static(b"x")).await.unwrap();
        corpus.put("manifest/part-1.jsonl", Bytes::from_static(b"{\"image\":\"c\",\"file\":\"c.png\"}\n{broken\n")).await.unwrap();
        corpus
            .put(
                "manifest/part-0.jsonl",
                Bytes::from_static(b"{\"image\":\"a\",\"file\":\"a.png\",\"objects\":[\"dog\"]}\n\n{\"image\":\"b\",\"file\":\"b.png\"}"),
            )
            .await
            .unwrap();
        let out = ObjectBlobStore::in_memory();
        let done = plan_corpus(&corpus, &spec(Some("manifest/")), &out, 2).await.unwrap();
        assert_eq!(done, PlanSummary { shards: 2, images: 4 });
        let first = shard_lines(&out, 0).await;
        assert_eq!(first.iter().map(|e| e.truth.image.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        // the first file was found under images/, so every file name is taken from there
        assert_eq!(first[0].truth.file.as_deref(), Some("images/a.png"));
        assert_eq!(first[1].truth.file.as_deref(), Some("images/b.png"));
        let second = shard_lines(&out, 1).await;
        assert_eq!(second[0].truth.image, "c");
        assert_eq!(second[1].truth.image, "part-1.jsonl-line-2");
        assert_eq!(second[1].error.as_ref().unwrap().reason, "bad_annotation");
    }

    #[tokio::test]
    async fn coco_file_names_resolve_against_the_root_first() {
        let corpus = ObjectBlobStore::in_memory();
        let coco = r#"{"images":[{"id":1,"file_name":"x/1.jpg"}],"annotations":[],"categories":[]}"#;
        corpus.put("annotations.json", Bytes::from(coco)).await.unwrap();
        corpus.put("x/1.jpg", Bytes::from_static(b"x")).await.unwrap();
        let out = ObjectBlobStore::in_memory();
        assert_eq!(plan_corpus(&corpus, &spec(None), &out, 10).await.unwrap(), PlanSummary { shards: 1, images: 1 });
        assert_eq!(shard_lines(&out, 0).await[0].truth.file.as_deref(), Some("x/1.jpg"));
        let mut with_dir = spec(None);
        with_dir.image_dir = Some("raw/".into());
        plan_corpus(&corpus, &with_dir, &out, 10).await.unwrap();
        assert_eq!(shard_lines(&out, 0).await[0].truth.file.as_deref(), Some("raw/x/1.jpg"), "a replan overwrites the shard");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_coco_file_is_planned_in_parts_with_the_same_images() {
        let corpus = ObjectBlobStore::in_memory();
        let images: Vec<String> = (1..=60).map(|i| format!(r#"{{"id":{i},"file_name":"{i}.jpg"}}"#)).collect();
        let anns: Vec<String> = (1..=60).map(|i| format!(r#"{{"image_id":{i},"category_id":{}}}"#, 1 + i % 2)).collect();
        let coco = format!(
            r#"{{"images":[{}],"annotations":[{}],"categories":[{{"id":1,"name":"dog"}},{{"id":2,"name":"cat"}}]}}"#,
            images.join(","),
            anns.join(",")
        );
        corpus.put("annotations.json", Bytes::from(coco.clone())).await.unwrap();
        for i in 1..=60 {
            corpus.put(&format!("images/{i}.jpg"), Bytes::from_static(b"x")).await.unwrap();
        }
        let scratch = tempfile::tempdir().unwrap();
        let limits = PlanLimits { coco_whole_bytes: 100, coco_part_bytes: coco.len() as u64 / 3, scratch: scratch.path().into() };
        let out = ObjectBlobStore::in_memory();
        let done = plan_corpus_with(&corpus, &spec(None), &out, 25, &limits).await.unwrap();
        assert_eq!(done.images, 60);
        let mut planned = Vec::new();
        for shard in 0..done.shards {
            planned.extend(shard_lines(&out, shard).await);
        }
        let whole = plan_corpus(&corpus, &spec(None), &ObjectBlobStore::in_memory(), 25).await.unwrap();
        assert_eq!(whole.images, 60);
        let mut ids: Vec<u32> = planned.iter().map(|e| e.truth.image.parse().unwrap()).collect();
        assert_ne!(ids, (1..=60).collect::<Vec<_>>(), "parts reorder images by hash");
        ids.sort();
        assert_eq!(ids, (1..=60).collect::<Vec<_>>(), "every image exactly once");
        let seven = planned.iter().find(|e| e.truth.image == "7").unwrap();
        assert_eq!(seven.truth.file.as_deref(), Some("images/7.jpg"));
        assert_eq!(seven.truth.objects[0].name, "cat", "category 1 + 7 % 2");
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0, "scratch parts removed");
    }

    #[tokio::test]
    async fn an_empty_part_prefix_is_refused_naming_the_field() {
        let err = plan_corpus(&ObjectBlobStore::in_memory(), &spec(Some("parts/")), &ObjectBlobStore::in_memory(), 5)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("corpus.annotations") && err.contains("parts/"), "{err}");
    }
}
