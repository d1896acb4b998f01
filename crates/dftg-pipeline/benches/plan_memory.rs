//! Coordinator planning memory on a synthetic corpus of millions of images:
//! `cargo bench -p dftg-pipeline --bench plan_memory` (env DFTG_PLAN_IMAGES, default 10,000,000).
//!
//! The corpus is generated as it is read, never stored: a listing of JSONL manifest parts under
//! `manifest/` (10,000 images a part) whose bytes are produced chunk by chunk, planned by the
//! same `plan_corpus` the coordinator runs, into a store that keeps only byte counts. The number
//! that matters is the process's peak RSS (VmHWM) after planning, compared across corpus sizes:
//! flat means it does not grow with the corpus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use dftg_pipeline::job::CorpusSpec;
use dftg_pipeline::plan::plan_corpus;
use dftg_runtime::{BlobStore, ByteStream, PutOutcome, StoreError};

const PER_PART: u64 = 10_000;
const NAMES: [&str; 8] = ["person", "dog", "car", "chair", "cup", "bicycle", "traffic light", "dining table"];

/// A manifest of `images` lines split into parts, generated on read.
struct SyntheticCorpus {
    images: u64,
}

impl SyntheticCorpus {
    fn parts(&self) -> u64 {
        self.images.div_ceil(PER_PART)
    }

    fn line(i: u64, out: &mut Vec<u8>) {
        let (a, b) = (NAMES[(i % 8) as usize], NAMES[((i / 8) % 8) as usize]);
        let line = format!(
            "{{\"image\":\"img-{i:09}\",\"file\":\"images/img-{i:09}.jpg\",\"objects\":[{{\"name\":\"{a}\",\"count\":{}}},\"{b}\"]}}\n",
            1 + i % 3
        );
        out.extend_from_slice(line.as_bytes());
    }
}

impl BlobStore for SyntheticCorpus {
    fn get<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        async { Ok(None) }.boxed()
    }
    fn put_create<'a>(&'a self, _key: &'a str, _data: Bytes) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        async { Ok(PutOutcome::Created) }.boxed()
    }
    fn put<'a>(&'a self, _key: &'a str, _data: Bytes) -> BoxFuture<'a, Result<(), StoreError>> {
        async { Ok(()) }.boxed()
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        async move { Ok(self.list_stream(prefix).filter_map(|k| async move { k.ok() }).collect().await) }.boxed()
    }
    fn list_stream<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<String, StoreError>> {
        let parts = if prefix == "manifest/" { self.parts() } else { 0 };
        futures::stream::iter((0..parts).map(|p| Ok(format!("manifest/part-{p:05}.jsonl")))).boxed()
    }
    fn get_stream<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ByteStream>, StoreError>> {
        let part = key.strip_prefix("manifest/part-").and_then(|k| k.strip_suffix(".jsonl")).and_then(|n| n.parse::<u64>().ok());
        let images = self.images;
        async move {
            let Some(part) = part else { return Ok(None) };
            let (start, end) = (part * PER_PART, ((part + 1) * PER_PART).min(images));
            // 64 KiB chunks, as an HTTP body arrives
            let chunks = futures::stream::unfold(start, move |next| async move {
                if next >= end {
                    return None;
                }
                let mut buf = Vec::with_capacity(64 * 1024 + 256);
                let mut i = next;
                while i < end && buf.len() < 64 * 1024 {
                    SyntheticCorpus::line(i, &mut buf);
                    i += 1;
                }
                Some((Ok(Bytes::from(buf)), i))
            });
            Ok(Some(chunks.boxed()))
        }
        .boxed()
    }
    fn delete<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async { Ok(()) }.boxed()
    }
    fn describe(&self) -> String {
        format!("synthetic://{}-images", self.images)
    }
}

/// The plan's destination: counts what it is given, keeps nothing.
#[derive(Default)]
struct CountingSink {
    objects: AtomicU64,
    bytes: AtomicU64,
}

impl BlobStore for CountingSink {
    fn get<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        async { Ok(None) }.boxed()
    }
    fn put_create<'a>(&'a self, key: &'a str, data: Bytes) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        async move {
            self.put(key, data).await?;
            Ok(PutOutcome::Created)
        }
        .boxed()
    }
    fn put<'a>(&'a self, _key: &'a str, data: Bytes) -> BoxFuture<'a, Result<(), StoreError>> {
        self.objects.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        async { Ok(()) }.boxed()
    }
    fn list<'a>(&'a self, _prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        async { Ok(Vec::new()) }.boxed()
    }
    fn delete<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async { Ok(()) }.boxed()
    }
    fn describe(&self) -> String {
        "sink://".into()
    }
}

/// Peak resident set size of this process so far, in MiB (Linux).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let images: u64 = std::env::var("DFTG_PLAN_IMAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let shard_size: usize = std::env::var("DFTG_PLAN_SHARD_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let corpus = SyntheticCorpus { images };
    let sink = CountingSink::default();
    let spec = CorpusSpec {
        path: "synthetic://".into(),
        annotations: Some("manifest/".into()),
        format: None,
        image_pattern: None,
        image_dir: None,
    };
    let before = peak_rss_mib();
    let t0 = Instant::now();
    let done = rt.block_on(plan_corpus(&corpus, &spec, &sink, shard_size)).expect("plan");
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(done.images, images, "every image planned");
    assert_eq!(sink.objects.load(Ordering::Relaxed), u64::from(done.shards));
    println!(
        "{{\"bench\": \"plan_memory\", \"images\": {images}, \"shard_size\": {shard_size}, \"shards\": {}, \"plan_bytes\": {}, \"seconds\": {secs:.2}, \"images_per_s\": {:.0}, \"peak_rss_mib_before\": {before:.1}, \"peak_rss_mib\": {:.1}}}",
        done.shards,
        sink.bytes.load(Ordering::Relaxed),
        images as f64 / secs,
        peak_rss_mib()
    );
}
