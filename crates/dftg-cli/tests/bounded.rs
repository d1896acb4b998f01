//! Bounded resources, end to end, with the real `dftg` binary:
//! - a corpus with a 1 GB image (a sparse file with PNG magic) and 110 small images, against an
//!   OpenAI-compatible endpoint (a raw HTTP server in this test) that answers 50 requests with
//!   a reply just under 8 MiB, streamed without a length, and the others with a caption (a job
//!   where every image fails is a failed job): the job finishes, records `image_too_large` and
//!   `reply_too_long` per image, and the child's peak RSS stays under [`PEAK_RSS_BOUND_MB`]
//!   (it was 7.3 GB for the image alone, 10.3 GB for 50 such replies);
//! - a second SIGINT/SIGTERM while draining exits at once with status 130.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Peak RSS allowed for `dftg run` here. A run of 2,000 small images peaks at ~40 MB
/// (BENCHMARKS.md); on top, up to 64 replies are read at once, each stopped at the client's
/// body limit (320 KiB by default), and the 1 GB image is never read. 200 MB leaves room for
/// allocator slack and thread stacks while failing loudly at anything like the old gigabytes.
const PEAK_RSS_BOUND_MB: i64 = 200;

const SMALL_IMAGES: usize = 110;
/// Requests answered with a huge reply (the first ones to arrive); under half of the images,
/// so the job stays within its `max_failed_fraction`.
const HUGE_REPLIES: usize = 50;
/// The reply body: just under the 8 MiB the client used to accept.
const REPLY_BODY_BYTES: usize = (8 << 20) - 1024;

fn dftg() -> &'static str {
    env!("CARGO_BIN_EXE_dftg")
}

fn example_png() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/corpus/images/000001.png");
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// 1 GB that starts like a PNG (magic, IHDR) and ends like one (IEND), sparse in between.
fn write_huge_png(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create big.png");
    f.write_all(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x04\0\0\0\x04\0\x08\x02\0\0\0").expect("write header");
    f.set_len(1 << 30).expect("set_len");
    f.seek(SeekFrom::End(-8)).expect("seek");
    f.write_all(&[0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]).expect("write iend");
}

fn write_corpus(dir: &Path) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).expect("mkdir images");
    write_huge_png(&images.join("big.png"));
    let png = example_png();
    let mut manifest = String::from("{\"image\":\"big\",\"file\":\"big.png\",\"objects\":[\"dog\"]}\n");
    for i in 0..SMALL_IMAGES {
        std::fs::write(images.join(format!("img-{i}.png")), &png).expect("write png");
        manifest.push_str(&format!("{{\"image\":\"img-{i}\",\"file\":\"img-{i}.png\",\"objects\":[\"dog\"]}}\n"));
    }
    std::fs::write(dir.join("manifest.jsonl"), manifest).expect("write manifest");
}

#[derive(Clone, Copy)]
enum Mode {
    /// Answer the first [`HUGE_REPLIES`] completions with a streamed body of
    /// [`REPLY_BODY_BYTES`], the rest with a short caption.
    HugeReply,
    /// Read the request and never answer.
    Hang,
}

/// A raw HTTP/1.1 endpoint (no framework, so the body really goes out chunked, without a
/// length): one request per connection. Counts completion requests and notifies on each.
async fn serve(mode: Mode, hits: Arc<AtomicUsize>, arrived: Arc<Notify>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (hits, arrived) = (hits.clone(), arrived.clone());
            tokio::spawn(async move { connection(sock, mode, hits, arrived).await });
        }
    });
    format!("http://{addr}/v1")
}

async fn connection(mut sock: TcpStream, mode: Mode, hits: Arc<AtomicUsize>, arrived: Arc<Notify>) {
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 << 10];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0);
    let mut body_read = buf.len() - head_end;
    while body_read < length {
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body_read += n,
        }
    }
    if !head.starts_with("post /v1/chat/completions") {
        let _ = sock.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        return;
    }
    let n = hits.fetch_add(1, Ordering::SeqCst);
    arrived.notify_one();
    match mode {
        Mode::Hang => std::future::pending::<()>().await,
        Mode::HugeReply if n < HUGE_REPLIES => {
            let _ = huge_reply(&mut sock).await;
        }
        Mode::HugeReply => {
            let body =
                r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"A dog sleeps on a sofa."},"finish_reason":"stop"}]}"#;
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = sock.write_all(format!("{head}{body}").as_bytes()).await;
        }
    }
}

/// A completion whose content is `w` repeated, sent in 64 KiB chunks; write errors (the client
/// hung up, as it should) end it.
async fn huge_reply(sock: &mut TcpStream) -> std::io::Result<()> {
    let head =
        br#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":""#;
    let tail = br#""},"finish_reason":"length"}]}"#;
    sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n").await?;
    let chunk = |data: &[u8]| {
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data);
        c.extend_from_slice(b"\r\n");
        c
    };
    sock.write_all(&chunk(head)).await?;
    let mut left = REPLY_BODY_BYTES - head.len() - tail.len();
    let words = vec![b'w'; 64 << 10];
    while left > 0 {
        let n = left.min(words.len());
        sock.write_all(&chunk(&words[..n])).await?;
        left -= n;
    }
    sock.write_all(&chunk(tail)).await?;
    sock.write_all(b"0\r\n\r\n").await
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

/// `getrusage` without a `libc` dependency: the layout of `struct rusage` on 64-bit Linux
/// (two `timeval`s, then fourteen `long`s, `ru_maxrss` first, in KiB).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod sys {
    use std::os::raw::{c_int, c_long};

    #[repr(C)]
    #[derive(Default)]
    struct RUsage {
        utime: [i64; 2],
        stime: [i64; 2],
        maxrss: c_long,
        rest: [c_long; 13],
    }

    extern "C" {
        fn getrusage(who: c_int, usage: *mut RUsage) -> c_int;
        fn kill(pid: c_int, sig: c_int) -> c_int;
    }

    const RUSAGE_CHILDREN: c_int = -1;
    pub const SIGINT: c_int = 2;
    pub const SIGTERM: c_int = 15;
    pub const SIGKILL: c_int = 9;

    /// The largest peak RSS among waited-for children so far, in KiB.
    pub fn children_peak_rss_kib() -> i64 {
        let mut usage = RUsage::default();
        // SAFETY: `usage` is a valid, writable `struct rusage` for this target.
        let rc = unsafe { getrusage(RUSAGE_CHILDREN, &mut usage) };
        assert_eq!(rc, 0, "getrusage failed");
        usage.maxrss
    }

    pub fn signal(pid: u32, sig: c_int) {
        // SAFETY: plain syscall on a child we spawned and have not reaped yet.
        let rc = unsafe { kill(pid as c_int, sig) };
        assert_eq!(rc, 0, "kill failed");
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_image_and_huge_replies_fail_per_image_in_bounded_memory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let corpus = tmp.path().join("corpus");
    let out = tmp.path().join("out");
    write_corpus(&corpus);
    let hits = Arc::new(AtomicUsize::new(0));
    let base = serve(Mode::HugeReply, hits.clone(), Arc::new(Notify::new())).await;

    let args: Vec<String> = [
        "run",
        "--corpus",
        corpus.to_str().expect("utf-8 path"),
        "--endpoint",
        &base,
        "--model-name",
        "m",
        "--out",
        out.to_str().expect("utf-8 path"),
        "--quiet",
        "--shard-size",
        "20",
        "--budget",
        "10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // std's wait reaps the child, so RUSAGE_CHILDREN includes it once this returns
    let output = tokio::task::spawn_blocking(move || Command::new(dftg()).args(&args).env("DFTG_LOG", "error").output())
        .await
        .expect("join")
        .expect("run dftg");
    let peak_mb = sys::children_peak_rss_kib() / 1024;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dftg run failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);

    let dataset = find(&out, "dataset.json").expect("dataset.json written");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&dataset).expect("read dataset")).expect("json");
    assert_eq!(manifest["images"], 1 + SMALL_IMAGES as u64, "{manifest}");
    assert_eq!(manifest["errors_by_reason"]["image_too_large"], 1, "{manifest}");
    assert_eq!(manifest["errors_by_reason"]["reply_too_long"], HUGE_REPLIES as u64, "{manifest}");
    assert_eq!(manifest["diagnosed_images"], (SMALL_IMAGES - HUGE_REPLIES) as u64, "{manifest}");
    // not retried: a runaway reply would run away again
    assert_eq!(hits.load(Ordering::SeqCst), SMALL_IMAGES);
    let job_dir = dataset.parent().expect("job dir");
    for shard in std::fs::read_dir(job_dir.join("diagnoses")).expect("diagnoses") {
        let records = std::fs::read_to_string(shard.expect("entry").path()).expect("read diagnoses");
        assert!(!records.contains("wwww"), "reply text reached the records");
    }

    eprintln!("dftg run peak RSS: {peak_mb} MB (bound {PEAK_RSS_BOUND_MB} MB)");
    assert!(peak_mb < PEAK_RSS_BOUND_MB, "peak RSS {peak_mb} MB is over the bound of {PEAK_RSS_BOUND_MB} MB");
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_with_130() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(corpus.join("images")).expect("mkdir");
    std::fs::write(corpus.join("images/a.png"), example_png()).expect("write png");
    std::fs::write(corpus.join("manifest.jsonl"), "{\"image\":\"a\",\"file\":\"a.png\",\"objects\":[\"dog\"]}\n").expect("manifest");
    let arrived = Arc::new(Notify::new());
    let base = serve(Mode::Hang, Arc::new(AtomicUsize::new(0)), arrived.clone()).await;

    let mut child = Command::new(dftg())
        .args([
            "run",
            "--corpus",
            corpus.to_str().expect("utf-8"),
            "--endpoint",
            &base,
            "--model-name",
            "m",
            "--quiet",
            "--timeout",
            "3600",
        ])
        .arg("--out")
        .arg(tmp.path().join("out"))
        .env("DFTG_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dftg");
    let pid = child.id();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    // a completion request is sent only after the signal handlers are installed
    tokio::time::timeout(Duration::from_secs(60), arrived.notified()).await.expect("no model request arrived");

    sys::signal(pid, sys::SIGINT);
    let (first, mut stderr) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        while !line.starts_with("stopping:") {
            line.clear();
            if stderr.read_line(&mut line).expect("read stderr") == 0 {
                break;
            }
        }
        (line, stderr)
    })
    .await
    .expect("join");
    assert!(first.starts_with("stopping: finishing the shards in hand"), "{first:?}");

    // the drain is stuck on a model that never answers: the second signal must not wait for it
    sys::signal(pid, sys::SIGTERM);
    let exited = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        (child.wait().expect("wait"), rest)
    });
    let Ok(joined) = tokio::time::timeout(Duration::from_secs(60), exited).await else {
        sys::signal(pid, sys::SIGKILL);
        panic!("dftg did not exit after the second signal");
    };
    let (status, rest) = joined.expect("join");
    assert_eq!(status.code(), Some(130), "{status}; stderr: {rest}");
    assert!(rest.starts_with("stopping now: second signal"), "{rest:?}");
}
