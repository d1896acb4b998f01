//! Planning a COCO instances file too large to hold: one streaming pass splits its images and
//! annotations by image (a stable hash of the id) into part files in a scratch directory,
//! keeping only the fields dftg reads; then each part is folded into ground truth on its own.
//! Memory holds one part, whatever the file's size. Images come out part by part, in file
//! order within a part (a small file is planned whole, in file order, by the caller).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use dftg_core::truth::{image_key, CocoAccumulator, CocoAnnotation, CocoCategory, CocoImage, ImageTruth};
use dftg_runtime::{ByteStream, StoreError};

use crate::error::PipelineError;

/// Scratch files of a split, removed when dropped.
pub struct CocoParts {
    dir: PathBuf,
    pub parts: usize,
    pub categories: Vec<CocoCategory>,
    pub images: u64,
    pub annotations: u64,
}

impl Drop for CocoParts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Serialize, Deserialize)]
struct Placed<T> {
    /// Index in the file's array, for error messages.
    at: usize,
    #[serde(flatten)]
    record: T,
}

fn invalid(reason: impl std::fmt::Display) -> PipelineError {
    PipelineError::invalid("corpus.annotations", reason.to_string())
}

/// Splits the COCO document arriving on `stream` into `parts` parts under a fresh directory in
/// `scratch` (blocking work runs off the async threads).
pub async fn split(stream: ByteStream, file: &str, scratch: &Path, parts: usize) -> Result<CocoParts, PipelineError> {
    let dir = scratch.join(format!(
        "dftg-coco-{}-{:x}",
        std::process::id(),
        dftg_core::seed::stable_hash(0, &[file, &format!("{:?}", std::time::SystemTime::now())])
    ));
    std::fs::create_dir_all(&dir).map_err(|e| invalid(format!("cannot create scratch directory {}: {e}", dir.display())))?;
    let mut out = CocoParts { dir, parts: parts.max(1), categories: Vec::new(), images: 0, annotations: 0 };
    // the body flows to the parser through a small bounded channel: back-pressure, flat memory
    let (tx, rx) = mpsc::channel::<Result<Bytes, StoreError>>(4);
    let feeder = tokio::spawn(async move {
        use futures::StreamExt;
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let (dir, parts, name) = (out.dir.clone(), out.parts, file.to_string());
    let split = tokio::task::spawn_blocking(move || split_blocking(ChannelReader { rx, chunk: Bytes::new() }, &dir, parts, &name))
        .await
        .map_err(|e| invalid(format!("splitting {file} stopped: {e}")))?;
    feeder.abort();
    let (categories, images, annotations) = split?;
    out.categories = categories;
    out.images = images;
    out.annotations = annotations;
    Ok(out)
}

impl CocoParts {
    /// Every part in turn (each with its images in file order), folded on one thread of its own and handed over one at a time: the
    /// allocator reuses one part's memory for the next instead of spreading parts over the
    /// arenas of several pool threads.
    pub fn parts_in_turn(self) -> mpsc::Receiver<Result<Vec<ImageTruth>, PipelineError>> {
        let (tx, rx) = mpsc::channel(1);
        std::thread::spawn(move || {
            for p in 0..self.parts {
                let part = read_part_blocking(&self.dir, p, &self.categories);
                let failed = part.is_err();
                if tx.blocking_send(part).is_err() || failed {
                    break;
                }
            }
            // scratch files removed before the receiver sees the end
            drop(self);
            drop(tx);
        });
        rx
    }
}

fn part_path(dir: &Path, kind: &str, p: usize) -> PathBuf {
    dir.join(format!("{kind}-{p:04}.jsonl"))
}

fn read_part_blocking(dir: &Path, p: usize, categories: &[CocoCategory]) -> Result<Vec<ImageTruth>, PipelineError> {
    let mut acc = CocoAccumulator::new(categories);
    for_each_line(&part_path(dir, "images", p), |line| {
        let img: Placed<CocoImage> = serde_json::from_str(line).map_err(invalid)?;
        acc.add_image(&img.record, img.at).map_err(invalid)
    })?;
    for_each_line(&part_path(dir, "annotations", p), |line| {
        let a: Placed<CocoAnnotation> = serde_json::from_str(line).map_err(invalid)?;
        acc.add_annotation(&a.record, a.at).map_err(invalid)
    })?;
    Ok(acc.finish())
}

fn for_each_line(path: &Path, mut f: impl FnMut(&str) -> Result<(), PipelineError>) -> Result<(), PipelineError> {
    let file = File::open(path).map_err(|e| invalid(format!("cannot read scratch file {}: {e}", path.display())))?;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| invalid(format!("cannot read scratch file {}: {e}", path.display())))?;
        f(&line)?;
    }
    Ok(())
}

struct PartWriter {
    images: Vec<BufWriter<File>>,
    annotations: Vec<BufWriter<File>>,
    categories: Vec<CocoCategory>,
    counts: (u64, u64),
}

impl PartWriter {
    fn part_of(&self, id: &serde_json::Value, what: &str, at: usize) -> Result<usize, String> {
        let key = image_key(id).ok_or_else(|| format!("coco {what}[{at}]: the image id must be a string or a number"))?;
        Ok((dftg_core::seed::stable_hash(0, &[&key]) % self.images.len() as u64) as usize)
    }

    fn write<T: Serialize>(w: &mut BufWriter<File>, at: usize, record: &T) -> Result<(), String> {
        serde_json::to_writer(&mut *w, &Placed { at, record }).map_err(|e| e.to_string())?;
        w.write_all(b"\n").map_err(|e| format!("cannot write scratch file: {e}"))
    }
}

fn split_blocking(reader: ChannelReader, dir: &Path, parts: usize, file: &str) -> Result<(Vec<CocoCategory>, u64, u64), PipelineError> {
    let open = |kind: &str, p: usize| {
        let path = part_path(dir, kind, p);
        File::create(&path).map(BufWriter::new).map_err(|e| invalid(format!("cannot create scratch file {}: {e}", path.display())))
    };
    let mut w =
        PartWriter { images: Vec::with_capacity(parts), annotations: Vec::with_capacity(parts), categories: Vec::new(), counts: (0, 0) };
    for p in 0..parts {
        w.images.push(open("images", p)?);
        w.annotations.push(open("annotations", p)?);
    }
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(256 * 1024, reader));
    Document(&mut w).deserialize(&mut de).map_err(|e| invalid(format!("{file}: not COCO instances JSON: {e}")))?;
    for f in w.images.iter_mut().chain(w.annotations.iter_mut()) {
        f.flush().map_err(|e| invalid(format!("cannot write scratch file: {e}")))?;
    }
    Ok((std::mem::take(&mut w.categories), w.counts.0, w.counts.1))
}

/// The top-level object: arrays are visited element by element, other keys skipped.
struct Document<'a>(&'a mut PartWriter);

impl<'de> DeserializeSeed<'de> for Document<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Document<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a COCO instances object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = (false, false, false);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "images" => {
                    map.next_value_seed(Records { w: &mut *self.0, annotations: false })?;
                    seen.0 = true;
                }
                "annotations" => {
                    map.next_value_seed(Records { w: &mut *self.0, annotations: true })?;
                    seen.1 = true;
                }
                "categories" => {
                    self.0.categories = map.next_value()?;
                    seen.2 = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match seen {
            (false, _, _) => Err(A::Error::missing_field("images")),
            (_, false, _) => Err(A::Error::missing_field("annotations")),
            (_, _, false) => Err(A::Error::missing_field("categories")),
            _ => Ok(()),
        }
    }
}

struct Records<'a> {
    w: &'a mut PartWriter,
    annotations: bool,
}

impl<'de> DeserializeSeed<'de> for Records<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Records<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(if self.annotations { "an array of annotations" } else { "an array of images" })
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        let mut at = 0usize;
        if self.annotations {
            while let Some(a) = seq.next_element::<CocoAnnotation>()? {
                let p = self.w.part_of(&a.image_id, "annotations", at).map_err(S::Error::custom)?;
                PartWriter::write(&mut self.w.annotations[p], at, &a).map_err(S::Error::custom)?;
                at += 1;
            }
            self.w.counts.1 += at as u64;
        } else {
            while let Some(img) = seq.next_element::<CocoImage>()? {
                let p = self.w.part_of(&img.id, "images", at).map_err(S::Error::custom)?;
                PartWriter::write(&mut self.w.images[p], at, &img).map_err(S::Error::custom)?;
                at += 1;
            }
            self.w.counts.0 += at as u64;
        }
        Ok(())
    }
}

/// A blocking reader over chunks sent from the async side.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, StoreError>>,
    chunk: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dftg_core::truth::parse_coco_instances;
    use futures::StreamExt;

    fn coco_text(images: u64) -> String {
        let imgs: Vec<String> = (1..=images).map(|i| format!(r#"{{"id":{i},"file_name":"{i}.jpg","width":9}}"#)).collect();
        let anns: Vec<String> = (1..=images * 2)
            .map(|k| {
                format!(
                    r#"{{"id":{k},"image_id":{},"category_id":{},"iscrowd":0,"segmentation":[[1,2,3]]}}"#,
                    (k * 7) % images + 1,
                    1 + k % 3
                )
            })
            .collect();
        // annotations before images, and an unknown key: order inside the object is free
        format!(
            r#"{{"info":{{"v":1}},"annotations":[{}],"images":[{}],"categories":[{{"id":1,"name":"dog"}},{{"id":2,"name":"cat"}},{{"id":3,"name":"car"}}]}}"#,
            anns.join(","),
            imgs.join(",")
        )
    }

    fn chunked(text: String, size: usize) -> ByteStream {
        let bytes = Bytes::from(text);
        let chunks: Vec<Result<Bytes, StoreError>> =
            (0..bytes.len()).step_by(size).map(|i| Ok(bytes.slice(i..(i + size).min(bytes.len())))).collect();
        futures::stream::iter(chunks).boxed()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_hold_the_same_truth_as_the_whole_file() {
        let text = coco_text(200);
        let whole = parse_coco_instances(&text).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let parts = split(chunked(text, 777), "annotations.json", scratch.path(), 5).await.unwrap();
        assert_eq!((parts.images, parts.annotations, parts.categories.len()), (200, 400, 3));
        let dir = parts.dir.clone();
        let mut got = Vec::new();
        let mut each = parts.parts_in_turn();
        while let Some(part) = each.recv().await {
            let part = part.unwrap();
            assert!(!part.is_empty(), "200 images spread over 5 parts");
            got.extend(part);
        }
        got.sort_by_key(|t| t.image.parse::<u32>().unwrap());
        assert_eq!(got, whole);
        assert!(!dir.exists(), "scratch files removed once the last part is handed over");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_documents_are_refused_naming_the_file() {
        let scratch = tempfile::tempdir().unwrap();
        for (text, why) in [
            (r#"{"images":[{"id":1}],"categories":[]}"#.to_string(), "annotations"),
            (
                r#"{"images":[{"id":1}],"annotations":[{"image_id":2,"category_id":1}],"categories":[{"id":1,"name":"dog"}]}"#.to_string(),
                "image 2",
            ),
            ("[1,2]".to_string(), "not COCO"),
        ] {
            let err = match split(chunked(text, 5), "a.json", scratch.path(), 2).await {
                Err(e) => e.to_string(),
                Ok(parts) => {
                    let mut err = String::new();
                    let mut each = parts.parts_in_turn();
                    while let Some(part) = each.recv().await {
                        if let Err(e) = part {
                            err = e.to_string();
                        }
                    }
                    err
                }
            };
            assert!(err.contains(why) && err.contains("corpus.annotations"), "{err}");
        }
    }
}
