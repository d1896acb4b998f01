//! What the simulator knows: each image's ground truth, recognised by the sha256 of its bytes,
//! and the corpus's co-occurrence statistics (which absent concepts are tempting).

use std::io::BufRead;
use std::path::Path;

use ahash::AHashMap;
use dftg_core::truth::{parse_coco_instances, parse_manifest_line, ImageTruth};
use dftg_core::vocab::{ConceptId, Vocabulary};
use sha2::{Digest, Sha256};

use super::SimError;

/// sha256 of image bytes: how the simulator recognises an image.
pub type ImageDigest = [u8; 32];

/// sha256 of `bytes`.
pub fn image_digest(bytes: &[u8]) -> ImageDigest {
    Sha256::digest(bytes).into()
}

/// One present object, resolved against the vocabulary.
#[derive(Debug, Clone)]
pub(crate) struct SimObject {
    pub concept: ConceptId,
    pub count: Option<u32>,
    /// Known attribute values: (family index, value indices) for families and values the
    /// vocabulary knows; others are ignored (the simulator cannot name them).
    pub attributes: Vec<(u8, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub(crate) struct SimImage {
    pub truth: ImageTruth,
    pub objects: Vec<SimObject>,
}

/// The corpus the simulator knows. Holds ground truth and digests, never image bytes.
pub struct SimCorpus {
    vocab: Vocabulary,
    images: Vec<SimImage>,
    by_digest: AHashMap<ImageDigest, u32>,
    by_key: AHashMap<String, u32>,
    /// Images containing each concept.
    freq: Vec<u32>,
    /// Images containing both concepts, row-major `n × n`.
    cooc: Vec<u32>,
    duplicate_contents: usize,
}

/// Adds images one at a time (bytes are hashed and dropped), then [`SimCorpusBuilder::finish`].
#[derive(Debug)]
pub struct SimCorpusBuilder {
    vocab: Vocabulary,
    images: Vec<SimImage>,
    by_digest: AHashMap<ImageDigest, u32>,
    by_key: AHashMap<String, u32>,
    duplicate_contents: usize,
}

impl SimCorpusBuilder {
    pub fn new(vocab: Vocabulary) -> Self {
        SimCorpusBuilder { vocab, images: Vec::new(), by_digest: AHashMap::new(), by_key: AHashMap::new(), duplicate_contents: 0 }
    }

    /// Adds one image with its bytes.
    pub fn add(&mut self, truth: ImageTruth, bytes: &[u8]) -> Result<(), SimError> {
        self.add_digest(truth, image_digest(bytes))
    }

    /// Adds one image by the sha256 of its bytes. An image whose content equals an earlier
    /// image's keeps its truth, but requests with that content are answered as the earlier key.
    pub fn add_digest(&mut self, truth: ImageTruth, digest: ImageDigest) -> Result<(), SimError> {
        if truth.image.is_empty() {
            return Err(SimError::Corpus { what: "image key".into(), reason: "an image has an empty key".into() });
        }
        if self.by_key.contains_key(&truth.image) {
            return Err(SimError::Corpus { what: format!("image {:?}", truth.image), reason: "duplicate image key".into() });
        }
        let objects = resolve_objects(&self.vocab, &truth)?;
        let idx = u32::try_from(self.images.len())
            .map_err(|_| SimError::Corpus { what: "corpus".into(), reason: "more than 4294967295 images".into() })?;
        if let Some(&first) = self.by_digest.get(&digest) {
            self.duplicate_contents += 1;
            tracing::warn!(
                image = %truth.image,
                same_as = %self.images[first as usize].truth.image,
                "simulator corpus: two images have identical bytes; requests resolve to the first"
            );
        } else {
            self.by_digest.insert(digest, idx);
        }
        self.by_key.insert(truth.image.clone(), idx);
        self.images.push(SimImage { truth, objects });
        Ok(())
    }

    pub fn finish(self) -> SimCorpus {
        let n = self.vocab.len();
        let mut freq = vec![0u32; n];
        let mut cooc = vec![0u32; n * n];
        for img in &self.images {
            for a in &img.objects {
                freq[a.concept as usize] += 1;
                for b in &img.objects {
                    if a.concept != b.concept {
                        cooc[a.concept as usize * n + b.concept as usize] += 1;
                    }
                }
            }
        }
        SimCorpus {
            vocab: self.vocab,
            images: self.images,
            by_digest: self.by_digest,
            by_key: self.by_key,
            freq,
            cooc,
            duplicate_contents: self.duplicate_contents,
        }
    }
}

fn resolve_objects(vocab: &Vocabulary, truth: &ImageTruth) -> Result<Vec<SimObject>, SimError> {
    let mut out: Vec<SimObject> = Vec::with_capacity(truth.objects.len());
    for o in &truth.objects {
        let concept = vocab.lookup(&o.name).ok_or_else(|| SimError::Corpus {
            what: format!("image {:?}", truth.image),
            reason: format!("object {:?} is not in vocabulary {}", o.name, vocab.name),
        })?;
        let mut attributes: Vec<(u8, Vec<u8>)> = Vec::new();
        for (family, values) in &o.attributes {
            let Some(fi) = vocab.families().iter().position(|f| f.name == *family) else { continue };
            let mut ids: Vec<u8> = values.iter().filter_map(|v| vocab.attribute(family, v)).map(|a| a.value).collect();
            ids.sort_unstable();
            ids.dedup();
            if !ids.is_empty() {
                attributes.push((fi as u8, ids));
            }
        }
        // The same concept under two names ("donut", "doughnut"): merge.
        if let Some(prev) = out.iter_mut().find(|p| p.concept == concept) {
            prev.count = match (prev.count, o.count) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                _ => None,
            };
            for (f, vs) in attributes {
                match prev.attributes.iter_mut().find(|(pf, _)| *pf == f) {
                    Some((_, pvs)) => {
                        pvs.extend(vs);
                        pvs.sort_unstable();
                        pvs.dedup();
                    }
                    None => prev.attributes.push((f, vs)),
                }
            }
            continue;
        }
        // A count of 0 says nothing usable.
        let count = o.count.filter(|c| *c > 0);
        out.push(SimObject { concept, count, attributes });
    }
    Ok(out)
}

impl std::fmt::Debug for SimCorpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCorpus")
            .field("vocabulary", &self.vocab.name)
            .field("images", &self.images.len())
            .field("duplicate_contents", &self.duplicate_contents)
            .finish_non_exhaustive()
    }
}

impl SimCorpus {
    /// A corpus over the bundled COCO vocabulary from (truth, image bytes) pairs.
    pub fn new(items: impl IntoIterator<Item = (ImageTruth, Vec<u8>)>) -> Result<Self, SimError> {
        Self::with_vocabulary(Vocabulary::coco80(), items)
    }

    pub fn with_vocabulary(vocab: Vocabulary, items: impl IntoIterator<Item = (ImageTruth, Vec<u8>)>) -> Result<Self, SimError> {
        let mut b = SimCorpusBuilder::new(vocab);
        for (truth, bytes) in items {
            b.add(truth, &bytes)?;
        }
        Ok(b.finish())
    }

    pub fn builder(vocab: Vocabulary) -> SimCorpusBuilder {
        SimCorpusBuilder::new(vocab)
    }

    /// Reads `DIR/annotations.json` (COCO instances) or `DIR/manifest.jsonl`, and each image
    /// file `DIR/<file>` (hashed, not kept).
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self, SimError> {
        load_corpus_dir(dir)
    }

    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Image keys in corpus order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.images.iter().map(|i| i.truth.image.as_str())
    }

    pub fn truth(&self, key: &str) -> Option<&ImageTruth> {
        self.by_key.get(key).map(|&i| &self.images[i as usize].truth)
    }

    /// The key of the image with these bytes.
    pub fn key_for_bytes(&self, bytes: &[u8]) -> Option<&str> {
        self.key_for_digest(&image_digest(bytes))
    }

    pub fn key_for_digest(&self, digest: &ImageDigest) -> Option<&str> {
        self.by_digest.get(digest).map(|&i| self.images[i as usize].truth.image.as_str())
    }

    /// Images that contain concept `a` (by canonical name or synonym).
    pub fn concept_frequency(&self, a: &str) -> u32 {
        self.vocab.lookup(a).map_or(0, |a| self.freq[a as usize])
    }

    /// Images that contain both concepts.
    pub fn cooccurrence(&self, a: &str, b: &str) -> u32 {
        match (self.vocab.lookup(a), self.vocab.lookup(b)) {
            (Some(a), Some(b)) if a != b => self.cooc_id(a, b),
            _ => 0,
        }
    }

    /// Images whose bytes equal an earlier image's.
    pub fn duplicate_contents(&self) -> usize {
        self.duplicate_contents
    }

    pub(crate) fn image(&self, key: &str) -> Option<&SimImage> {
        self.by_key.get(key).map(|&i| &self.images[i as usize])
    }

    pub(crate) fn freq_id(&self, a: ConceptId) -> u32 {
        self.freq[a as usize]
    }

    pub(crate) fn cooc_id(&self, a: ConceptId, b: ConceptId) -> u32 {
        self.cooc[a as usize * self.vocab.len() + b as usize]
    }
}

/// Reads a corpus directory: `DIR/annotations.json` (COCO instances JSON) or
/// `DIR/manifest.jsonl` (one image a line), and each image file `DIR/<file>`.
pub fn load_corpus_dir(dir: impl AsRef<Path>) -> Result<SimCorpus, SimError> {
    let dir = dir.as_ref();
    let coco = dir.join("annotations.json");
    let manifest = dir.join("manifest.jsonl");
    let mut b = SimCorpusBuilder::new(Vocabulary::coco80());
    let add = |b: &mut SimCorpusBuilder, truth: ImageTruth| -> Result<(), SimError> {
        let file = truth
            .file
            .clone()
            .ok_or_else(|| SimError::Corpus { what: format!("image {:?}", truth.image), reason: "has no file name".into() })?;
        let path = dir.join(&file);
        // a missing or unreadable image is the pipeline's per-image error to report; the
        // simulator just cannot recognise it
        match std::fs::read(&path) {
            Ok(bytes) => b.add(truth, &bytes),
            Err(e) => {
                tracing::warn!(image = %truth.image, path = %path.display(), error = %e, "simulator skips an unreadable image");
                Ok(())
            }
        }
    };
    if coco.is_file() {
        let text = std::fs::read_to_string(&coco).map_err(|source| SimError::Io { path: coco.clone(), source })?;
        let truths =
            parse_coco_instances(&text).map_err(|e| SimError::Corpus { what: coco.display().to_string(), reason: e.to_string() })?;
        drop(text);
        for t in truths {
            add(&mut b, t)?;
        }
    } else if manifest.is_file() {
        let f = std::fs::File::open(&manifest).map_err(|source| SimError::Io { path: manifest.clone(), source })?;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|source| SimError::Io { path: manifest.clone(), source })?;
            if line.trim().is_empty() {
                continue;
            }
            match parse_manifest_line(&line, i + 1) {
                Ok(t) => add(&mut b, t)?,
                Err(e) => tracing::warn!(manifest = %manifest.display(), error = %e, "simulator skips a malformed manifest line"),
            }
        }
    } else {
        return Err(SimError::Corpus {
            what: format!("directory {}", dir.display()),
            reason: "has neither annotations.json nor manifest.jsonl".into(),
        });
    }
    Ok(b.finish())
}
