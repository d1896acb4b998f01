//! Reading a corpus: its ground truth (COCO instances JSON, JSONL manifest, or an id → objects
//! map) from a store, and its image bytes. A malformed manifest line or a missing file is a
//! per-image error, not a failed job.

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use dftg_core::record::ImageError;
use dftg_core::truth::{parse_coco_instances, parse_manifest_line, parse_object_map, ImageTruth};
use dftg_runtime::BlobStore;

use crate::error::PipelineError;
use crate::job::CorpusSpec;

/// Largest image file diagnosed by default (`image_too_large` beyond): a photo for a VLM is a
/// few MB at most, and the request carries it base64-encoded (4/3 of it) once more.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 20 << 20;

/// Longest manifest line planned by default (`bad_annotation` beyond): an image's ground
/// truth is a few KB, and a longer line is skipped without being held.
pub const MAX_MANIFEST_LINE_BYTES: usize = 1 << 20;

/// One image of the plan: its truth, or why it cannot be diagnosed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    #[serde(flatten)]
    pub truth: ImageTruth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ImageError>,
}

pub use crate::choice::CorpusFormat;

/// Which file holds the ground truth, and in which format.
pub async fn locate_truth(corpus: &dyn BlobStore, spec: &CorpusSpec) -> Result<(String, CorpusFormat), PipelineError> {
    let file = match &spec.annotations {
        Some(f) => f.clone(),
        None => {
            let mut found = None;
            for candidate in ["annotations.json", "manifest.jsonl", "imid_to_objects.json"] {
                // opening the stream reads no body: a probe, whatever the file's size
                if corpus.get_stream(candidate).await?.is_some() {
                    found = Some(candidate.to_string());
                    break;
                }
            }
            found.ok_or_else(|| {
                PipelineError::invalid(
                    "corpus.annotations",
                    format!("no annotations.json, manifest.jsonl or imid_to_objects.json in {}", corpus.describe()),
                )
            })?
        }
    };
    let format = match spec.format {
        Some(format) => format,
        None if file.ends_with(".jsonl") || file.ends_with('/') => CorpusFormat::Jsonl,
        None if file.contains("imid_to_objects") => CorpusFormat::ObjectMap,
        None => CorpusFormat::Coco,
    };
    Ok((file, format))
}

/// One JSONL manifest line → its plan entry; a bad line becomes an entry with an error, keyed
/// by where it was (`manifest-line-7`, or `<part>-line-7` for a manifest split into parts).
pub fn manifest_entry(line: &str, line_no: usize, part: Option<&str>) -> PlanEntry {
    if line.len() > MAX_MANIFEST_LINE_BYTES {
        return long_manifest_line(line.len() as u64, MAX_MANIFEST_LINE_BYTES, line_no, part);
    }
    match parse_manifest_line(line, line_no) {
        Ok(truth) if truth.image.len() > MAX_KEY_BYTES || truth.file.as_ref().is_some_and(|f| f.len() > MAX_KEY_BYTES) => {
            bad_manifest_line(format!("manifest line {line_no}: an image key or file name is over {MAX_KEY_BYTES} bytes"), line_no, part)
        }
        Ok(truth) => PlanEntry { truth, error: None },
        // the parser's message can quote the line: keep its position only, bounded
        Err(e) => bad_manifest_line(crate::error::bounded(&e.to_string(), 200), line_no, part),
    }
}

/// Image keys and file names travel into records, logs and object keys: a few hundred bytes
/// is plenty, more is not an image key.
pub const MAX_KEY_BYTES: usize = 1024;

/// The entry of a manifest line longer than `max` bytes (`bytes` long, or at least that).
pub fn long_manifest_line(bytes: u64, max: usize, line_no: usize, part: Option<&str>) -> PlanEntry {
    bad_manifest_line(format!("manifest line {line_no} is {bytes} bytes or more, over the limit of {max} bytes"), line_no, part)
}

fn bad_manifest_line(message: String, line_no: usize, part: Option<&str>) -> PlanEntry {
    let image = match part {
        Some(p) => format!("{}-line-{line_no}", p.rsplit('/').next().unwrap_or(p)),
        None => format!("manifest-line-{line_no}"),
    };
    let message = match part {
        Some(p) => format!("{p}: {message}"),
        None => message,
    };
    PlanEntry {
        truth: ImageTruth { image, file: None, objects: Vec::new() },
        error: Some(ImageError { reason: "bad_annotation".into(), message }),
    }
}

/// A whole JSON document of ground truth (COCO instances or an object map) → entries.
pub fn document_entries(file: &str, format: CorpusFormat, text: &[u8]) -> Result<Vec<PlanEntry>, PipelineError> {
    let text = std::str::from_utf8(text).map_err(|_| PipelineError::invalid("corpus.annotations", format!("{file} is not UTF-8 text")))?;
    let truths = match format {
        CorpusFormat::Coco => parse_coco_instances(text),
        CorpusFormat::ObjectMap => parse_object_map(text),
        CorpusFormat::Jsonl => {
            return Ok(text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| manifest_entry(l, i + 1, None))
                .collect())
        }
    }
    .map_err(|e| PipelineError::invalid("corpus.annotations", format!("{file}: {e}")))?;
    Ok(truths.into_iter().map(|truth| PlanEntry { truth, error: None }).collect())
}

/// Image bytes of an entry, or the per-image error; files over [`DEFAULT_MAX_IMAGE_BYTES`]
/// are `image_too_large`.
pub async fn fetch_image(corpus: &dyn BlobStore, entry: &PlanEntry) -> Result<(Bytes, &'static str), ImageError> {
    fetch_image_limited(corpus, entry, DEFAULT_MAX_IMAGE_BYTES).await
}

/// [`fetch_image`] with a size limit: the size is asked first (HEAD), so an oversized file is
/// never read, and the read stops past the limit too, in case the store's answer was wrong or
/// the file grew meanwhile. At most `max_bytes` (plus one chunk) are held.
pub async fn fetch_image_limited(corpus: &dyn BlobStore, entry: &PlanEntry, max_bytes: u64) -> Result<(Bytes, &'static str), ImageError> {
    let image = &entry.truth.image;
    let Some(file) = entry.truth.file.as_deref() else {
        return Err(ImageError { reason: "missing_image".into(), message: format!("image {image} has no file name in the ground truth") });
    };
    let missing = || ImageError { reason: "missing_image".into(), message: format!("image file {file} of {image} is not in the corpus") };
    let store_error = |e: dftg_runtime::StoreError| ImageError { reason: "store_error".into(), message: e.to_string() };
    let too_large = |what: String| ImageError {
        reason: "image_too_large".into(),
        message: format!("image file {file} of {image} {what} the limit of {max_bytes} bytes"),
    };
    let size = match corpus.head(file).await {
        Ok(Some(size)) if size > max_bytes => return Err(too_large(format!("is {size} bytes, over"))),
        Ok(Some(size)) => size,
        Ok(None) => return Err(missing()),
        Err(e) => return Err(store_error(e)),
    };
    let mut stream = match corpus.get_stream(file).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(missing()),
        Err(e) => return Err(store_error(e)),
    };
    // one chunk is kept as it came (no copy); more are gathered into one buffer
    let mut first: Option<Bytes> = None;
    let mut gathered: Vec<u8> = Vec::new();
    let mut read: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(store_error)?;
        read = read.saturating_add(chunk.len() as u64);
        if read > max_bytes {
            return Err(too_large("is larger than its store said, over".into()));
        }
        match first.take() {
            None if gathered.is_empty() => first = Some(chunk),
            None => gathered.extend_from_slice(&chunk),
            Some(f) => {
                // the announced size (itself under the limit) is the usual final size
                gathered.reserve_exact(usize::try_from(size.max(read)).unwrap_or(0));
                gathered.extend_from_slice(&f);
                gathered.extend_from_slice(&chunk);
            }
        }
    }
    let bytes = first.unwrap_or_else(|| Bytes::from(gathered));
    let mime = sniff_image(&bytes).map_err(|why| ImageError {
        reason: "corrupt_image".into(),
        message: format!("image file {file} is not a readable image: {why}"),
    })?;
    Ok((bytes, mime))
}

/// Cheap structural check of PNG / JPEG / GIF / WebP bytes: magic and end markers.
pub fn sniff_image(b: &[u8]) -> Result<&'static str, &'static str> {
    if b.is_empty() {
        return Err("empty file");
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        if b.len() < 8 + 25 || &b[12..16] != b"IHDR" {
            return Err("png without IHDR header");
        }
        if !b.ends_with(&[0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]) {
            return Err("truncated png (no IEND chunk)");
        }
        return Ok("image/png");
    }
    if b.starts_with(&[0xff, 0xd8, 0xff]) {
        // trailing padding after EOI happens in the wild
        let tail = &b[b.len().saturating_sub(64)..];
        if !tail.windows(2).any(|w| w == [0xff, 0xd9]) {
            return Err("truncated jpeg (no end-of-image marker)");
        }
        return Ok("image/jpeg");
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Ok("image/gif");
    }
    if b.len() > 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        return Ok("image/webp");
    }
    Err("unknown image format")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keeps_going_past_bad_lines() {
        let e = document_entries("m.jsonl", CorpusFormat::Jsonl, b"{\"image\":\"a\",\"objects\":[\"dog\"]}\n{oops\n\n{\"image\":\"b\"}\n")
            .unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].truth.image, "manifest-line-2");
        assert_eq!(e[1].error.as_ref().unwrap().reason, "bad_annotation");
        assert!(e[1].error.as_ref().unwrap().message.contains("line 2"));
        let p = manifest_entry("{oops", 4, Some("manifest/part-00001.jsonl"));
        assert_eq!(p.truth.image, "part-00001.jsonl-line-4");
        assert!(p.error.unwrap().message.contains("manifest/part-00001.jsonl"));
    }

    fn entry(file: &str) -> PlanEntry {
        PlanEntry { truth: ImageTruth { image: "img-1".into(), file: Some(file.into()), objects: Vec::new() }, error: None }
    }

    fn png(len: usize) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.resize(len - 8, 0);
        b.extend_from_slice(&[0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]);
        b
    }

    #[tokio::test]
    async fn images_over_the_limit_are_refused_naming_file_and_limit() {
        let corpus = dftg_runtime::ObjectBlobStore::in_memory();
        corpus.put("a.png", Bytes::from(png(1000))).await.unwrap();
        let (bytes, mime) = fetch_image_limited(&corpus, &entry("a.png"), 1000).await.unwrap();
        assert_eq!((bytes.len(), mime), (1000, "image/png"));
        let err = fetch_image_limited(&corpus, &entry("a.png"), 999).await.unwrap_err();
        assert_eq!(err.reason, "image_too_large");
        assert_eq!(err.message, "image file a.png of img-1 is 1000 bytes, over the limit of 999 bytes");
        assert_eq!(fetch_image_limited(&corpus, &entry("b.png"), 999).await.unwrap_err().reason, "missing_image");
    }

    /// A store whose HEAD says 10 bytes, whatever it serves.
    struct LyingStore(dftg_runtime::ObjectBlobStore);

    impl BlobStore for LyingStore {
        fn get<'a>(&'a self, key: &'a str) -> futures::future::BoxFuture<'a, Result<Option<Bytes>, dftg_runtime::StoreError>> {
            self.0.get(key)
        }
        fn head<'a>(&'a self, _key: &'a str) -> futures::future::BoxFuture<'a, Result<Option<u64>, dftg_runtime::StoreError>> {
            Box::pin(async { Ok(Some(10)) })
        }
        fn get_stream<'a>(
            &'a self,
            key: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Option<dftg_runtime::ByteStream>, dftg_runtime::StoreError>> {
            Box::pin(async move {
                // the object in 100-byte chunks, as a network store would send it
                Ok(self.0.get(key).await?.map(|b| {
                    let chunks: Vec<_> = (0..b.len()).step_by(100).map(|i| Ok(b.slice(i..(i + 100).min(b.len())))).collect();
                    futures::stream::iter(chunks).boxed()
                }))
            })
        }
        fn put_create<'a>(
            &'a self,
            key: &'a str,
            data: Bytes,
        ) -> futures::future::BoxFuture<'a, Result<dftg_runtime::PutOutcome, dftg_runtime::StoreError>> {
            self.0.put_create(key, data)
        }
        fn put<'a>(&'a self, key: &'a str, data: Bytes) -> futures::future::BoxFuture<'a, Result<(), dftg_runtime::StoreError>> {
            self.0.put(key, data)
        }
        fn list<'a>(&'a self, prefix: &'a str) -> futures::future::BoxFuture<'a, Result<Vec<String>, dftg_runtime::StoreError>> {
            self.0.list(prefix)
        }
        fn delete<'a>(&'a self, key: &'a str) -> futures::future::BoxFuture<'a, Result<(), dftg_runtime::StoreError>> {
            self.0.delete(key)
        }
        fn describe(&self) -> String {
            "lying store".into()
        }
    }

    #[tokio::test]
    async fn the_read_stops_at_the_limit_when_head_lies() {
        let inner = dftg_runtime::ObjectBlobStore::in_memory();
        inner.put("big.png", Bytes::from(png(5000))).await.unwrap();
        let corpus = LyingStore(inner);
        let err = fetch_image_limited(&corpus, &entry("big.png"), 1000).await.unwrap_err();
        assert_eq!(err.reason, "image_too_large");
        assert_eq!(err.message, "image file big.png of img-1 is larger than its store said, over the limit of 1000 bytes");
        // chunks gathered into one buffer under the limit
        let (bytes, _) = fetch_image_limited(&corpus, &entry("big.png"), 5000).await.unwrap();
        assert_eq!(&bytes[..], &png(5000)[..]);
    }

    #[test]
    fn overlong_manifest_lines_are_bad_annotations() {
        let e = long_manifest_line(40 << 20, MAX_MANIFEST_LINE_BYTES, 3, Some("m/part-1.jsonl"));
        assert_eq!(e.truth.image, "part-1.jsonl-line-3");
        let err = e.error.unwrap();
        assert_eq!(err.reason, "bad_annotation");
        assert_eq!(err.message, format!("m/part-1.jsonl: manifest line 3 is {} bytes or more, over the limit of 1048576 bytes", 40 << 20));
        let long = format!("{{\"image\":\"{}\"}}", "x".repeat(MAX_MANIFEST_LINE_BYTES));
        assert_eq!(manifest_entry(&long, 1, None).error.unwrap().reason, "bad_annotation");
    }

    #[test]
    fn sniff_rejects_truncated_and_garbage() {
        assert_eq!(sniff_image(b"hello"), Err("unknown image format"));
        assert!(sniff_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR0000000000000").is_err());
        assert_eq!(sniff_image(&[0xff, 0xd8, 0xff, 0xe0, 1, 2, 0xff, 0xd9]), Ok("image/jpeg"));
    }
}
