//! Reading a corpus: its ground truth (COCO instances JSON, JSONL manifest, or an id → objects
//! map) from a store, and its image bytes. A malformed manifest line or a missing file is a
//! per-image error, not a failed job.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use dftg_core::record::ImageError;
use dftg_core::truth::{parse_coco_instances, parse_manifest_line, parse_object_map, ImageTruth};
use dftg_runtime::BlobStore;

use crate::error::PipelineError;
use crate::job::CorpusSpec;

/// One image of the plan: its truth, or why it cannot be diagnosed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    #[serde(flatten)]
    pub truth: ImageTruth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ImageError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruthFormat {
    Coco,
    Jsonl,
    ObjectMap,
}

/// Which file holds the ground truth, and in which format.
pub async fn locate_truth(corpus: &dyn BlobStore, spec: &CorpusSpec) -> Result<(String, TruthFormat), PipelineError> {
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
    let format = match spec.format.as_deref() {
        Some("coco") => TruthFormat::Coco,
        Some("jsonl") => TruthFormat::Jsonl,
        Some("object-map") => TruthFormat::ObjectMap,
        _ if file.ends_with(".jsonl") || file.ends_with('/') => TruthFormat::Jsonl,
        _ if file.contains("imid_to_objects") => TruthFormat::ObjectMap,
        _ => TruthFormat::Coco,
    };
    Ok((file, format))
}

/// One JSONL manifest line → its plan entry; a bad line becomes an entry with an error, keyed
/// by where it was (`manifest-line-7`, or `<part>-line-7` for a manifest split into parts).
pub fn manifest_entry(line: &str, line_no: usize, part: Option<&str>) -> PlanEntry {
    match parse_manifest_line(line, line_no) {
        Ok(truth) => PlanEntry { truth, error: None },
        Err(e) => {
            let image = match part {
                Some(p) => format!("{}-line-{line_no}", p.rsplit('/').next().unwrap_or(p)),
                None => format!("manifest-line-{line_no}"),
            };
            let message = match part {
                Some(p) => format!("{p}: {e}"),
                None => e.to_string(),
            };
            PlanEntry {
                truth: ImageTruth { image, file: None, objects: Vec::new() },
                error: Some(ImageError { reason: "bad_annotation".into(), message }),
            }
        }
    }
}

/// A whole JSON document of ground truth (COCO instances or an object map) → entries.
pub fn document_entries(file: &str, format: TruthFormat, text: &[u8]) -> Result<Vec<PlanEntry>, PipelineError> {
    let text = std::str::from_utf8(text).map_err(|_| PipelineError::invalid("corpus.annotations", format!("{file} is not UTF-8 text")))?;
    let truths = match format {
        TruthFormat::Coco => parse_coco_instances(text),
        TruthFormat::ObjectMap => parse_object_map(text),
        TruthFormat::Jsonl => return Ok(text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| manifest_entry(l, i + 1, None)).collect()),
    }
    .map_err(|e| PipelineError::invalid("corpus.annotations", format!("{file}: {e}")))?;
    Ok(truths.into_iter().map(|truth| PlanEntry { truth, error: None }).collect())
}

/// Image bytes of an entry, or the per-image error.
pub async fn fetch_image(corpus: &dyn BlobStore, entry: &PlanEntry) -> Result<(Bytes, &'static str), ImageError> {
    let Some(file) = entry.truth.file.as_deref() else {
        return Err(ImageError {
            reason: "missing_image".into(),
            message: format!("image {} has no file name in the ground truth", entry.truth.image),
        });
    };
    let bytes = match corpus.get(file).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return Err(ImageError {
                reason: "missing_image".into(),
                message: format!("image file {file} of {} is not in the corpus", entry.truth.image),
            })
        }
        Err(e) => return Err(ImageError { reason: "store_error".into(), message: e.to_string() }),
    };
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
        let e = document_entries("m.jsonl", TruthFormat::Jsonl, b"{\"image\":\"a\",\"objects\":[\"dog\"]}\n{oops\n\n{\"image\":\"b\"}\n").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].truth.image, "manifest-line-2");
        assert_eq!(e[1].error.as_ref().unwrap().reason, "bad_annotation");
        assert!(e[1].error.as_ref().unwrap().message.contains("line 2"));
        let p = manifest_entry("{oops", 4, Some("manifest/part-00001.jsonl"));
        assert_eq!(p.truth.image, "part-00001.jsonl-line-4");
        assert!(p.error.unwrap().message.contains("manifest/part-00001.jsonl"));
    }

    #[test]
    fn sniff_rejects_truncated_and_garbage() {
        assert_eq!(sniff_image(b"hello"), Err("unknown image format"));
        assert!(sniff_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR0000000000000").is_err());
        assert_eq!(sniff_image(&[0xff, 0xd8, 0xff, 0xe0, 1, 2, 0xff, 0xd9]), Ok("image/jpeg"));
    }
}
