//! Reading long manifest lines, for BENCHMARKS.md:
//! `cargo test -p dftg-pipeline --release --test long_line -- --ignored --nocapture`.
//! Ignored by default: it measures, it does not assert a time (the machine is shared).

use std::time::Instant;

use bytes::Bytes;
use dftg_pipeline::corpus::MAX_MANIFEST_LINE_BYTES;
use dftg_pipeline::plan::{Line, Lines};
use dftg_runtime::{ByteStream, StoreError};
use futures::StreamExt;

/// A line of `len` bytes in 8 KiB chunks (object_store's local-file chunk), then a short line.
fn stream(len: usize) -> ByteStream {
    const CHUNK: usize = 8 << 10;
    let piece = Bytes::from(vec![b'x'; CHUNK]);
    let mut parts: Vec<Result<Bytes, StoreError>> = (0..len / CHUNK).map(|_| Ok(piece.clone())).collect();
    parts.push(Ok(Bytes::from(vec![b'x'; len % CHUNK])));
    parts.push(Ok(Bytes::from_static(b"\n{\"image\":\"a\"}\n")));
    futures::stream::iter(parts).boxed()
}

#[tokio::test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
async fn bench_long_manifest_lines() {
    for mb in [10usize, 20, 40] {
        let len = mb * 1_000_000;
        for (what, max) in [("skipped (default 1 MiB limit)", MAX_MANIFEST_LINE_BYTES), ("read whole (64 MiB limit)", 64 << 20)] {
            let mut times = Vec::new();
            for _ in 0..5 {
                let mut lines = Lines::with_max_line(stream(len), max);
                let started = Instant::now();
                let first = lines.next_line().await.expect("read");
                let second = lines.next_line().await.expect("read");
                times.push(started.elapsed());
                assert!(matches!(first, Some(Line::TooLong { .. }) | Some(Line::Text(_))));
                assert_eq!(second, Some(Line::Text("{\"image\":\"a\"}".into())));
            }
            times.sort();
            println!("{mb} MB line, {what}: median {:.1} ms", times[times.len() / 2].as_secs_f64() * 1000.0);
        }
    }
}
