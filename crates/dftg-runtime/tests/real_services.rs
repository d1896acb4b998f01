//! The runtime's traits against real services: RabbitMQ at 127.0.0.1:5672 (guest/guest, or
//! `DFTG_TEST_AMQP_URL`; `rabbitmqctl` for forced disconnects), and a real S3 server (s3s +
//! s3s-fs) started inside each S3 test over a temporary directory.
//!
//! Without a reachable RabbitMQ the AMQP tests print a SKIPPED line, or fail under `CI=true`.
//! Queue names are unique per test run and deleted at the end, even when the test fails.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dftg_runtime::amqp::{dead_letter_queue, AmqpOptions, AmqpQueue};
use dftg_runtime::queue::{self, TaskQueue};
use dftg_runtime::store::{self, BlobStore, ObjectBlobStore, PutOutcome};
use futures::FutureExt;
use object_store::aws::AmazonS3Builder;

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
use dftg_runtime::s3_test_server::{S3TestServer, ACCESS_KEY as S3_ACCESS_KEY, REGION as S3_REGION, SECRET_KEY as S3_SECRET_KEY};
const S3_BUCKET: &str = "dftg-test";

/// Logs of the code under test, shown for failing tests (`RUST_LOG` to choose; warnings by default).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "dftg_runtime=warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Prints past the test harness's output capture, so a skip shows in a plain `cargo test`.
fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn amqp_url() -> String {
    std::env::var("DFTG_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_string())
}

/// A name no other test or run uses: test name, process id, time, counter.
fn unique(test: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("dftg-test.{test}.{}.{nanos:08x}.{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))
}

/// A queue handle with a connection name unique to the test, or `None` (with a visible
/// notice) when RabbitMQ is not reachable outside CI.
async fn rabbit(test: &str) -> Option<(AmqpQueue, String)> {
    init_logs();
    let name = unique(test);
    let opts = AmqpOptions { connection_name: name.clone(), retry_window: Duration::from_secs(60), ..Default::default() };
    match AmqpQueue::connect_with(&amqp_url(), opts).await {
        Ok(q) => Some((q, name)),
        Err(e) if ci() => panic!("rabbitmq is required under CI=true: {e}"),
        Err(e) => {
            skip(test, &format!("rabbitmq is not reachable ({e}); start it or set DFTG_TEST_AMQP_URL"));
            None
        }
    }
}

/// Runs `body`, then deletes `queues` whether or not it panicked.
async fn with_cleanup<F: Future<Output = ()>>(q: &AmqpQueue, queues: &[&str], body: F) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    for name in queues {
        if let Err(e) = q.delete_queue(name).await {
            eprintln!("cleanup of queue {name:?} failed: {e}");
        }
    }
    q.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn rabbitmqctl(args: Vec<String>) -> Result<String, String> {
    let shown = args.join(" ");
    let out = tokio::task::spawn_blocking(move || Command::new("rabbitmqctl").args(&args).output())
        .await
        .map_err(|e| format!("rabbitmqctl {shown}: {e}"))?
        .map_err(|e| format!("rabbitmqctl {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!("rabbitmqctl {shown}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Forces the broker to close our connections (named `connection_name`), as
/// `rabbitmqctl close_all_connections` would, without disturbing other users of the broker.
async fn force_close_connections(connection_name: &str) -> usize {
    let listing = rabbitmqctl(["list_connections", "pid", "client_properties", "--no-table-headers", "-q"].map(String::from).to_vec())
        .await
        .expect("list connections");
    let pids: Vec<String> = listing
        .lines()
        .filter(|line| line.contains(connection_name))
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    for pid in &pids {
        rabbitmqctl(vec!["close_connection".into(), pid.clone(), "dftg test: forced close".into()]).await.expect("close connection");
    }
    pids.len()
}

/// Messages in `queue` that the broker still holds: ready plus delivered-but-unacked.
async fn broker_held_messages(queue: &str) -> u64 {
    let listing =
        rabbitmqctl(["list_queues", "name", "messages", "--no-table-headers", "-q"].map(String::from).to_vec()).await.expect("list queues");
    listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(name, _)| name.trim() == queue)
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("queue {queue:?} missing from `rabbitmqctl list_queues`:\n{listing}"))
}

#[tokio::test]
async fn amqp_queue_conforms() {
    let Some((q, _)) = rabbit("conformance").await else { return };
    let name = unique("conformance");
    with_cleanup(&q, &[&name], async {
        queue::conformance_suite(&q, &name).await;
        let dead = q.take_dead_letters(&name, 10).await.expect("take dead letters");
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!((dead[0].payload.as_ref(), dead[0].reason.as_str(), dead[0].queue.as_str()), (&[0u8][..], "poison", name.as_str()));
        assert_eq!(q.dead_lettered_count(&name), 1);
    })
    .await;
}

#[tokio::test]
async fn dead_letters_keep_their_reason() {
    let Some((q, _)) = rabbit("dead-letter").await else { return };
    let name = unique("dead-letter");
    with_cleanup(&q, &[&name], async {
        q.publish(&name, Bytes::from_static(b"\xc1 not msgpack")).await.expect("publish");
        q.publish(&name, Bytes::from_static(b"fine")).await.expect("publish");
        let mut c = q.consume(&name, 2).await.expect("consume");
        let bad = c.next().await.expect("next").expect("message");
        let good = c.next().await.expect("next").expect("message");
        assert_eq!(bad.payload.as_ref(), b"\xc1 not msgpack");
        bad.dead_letter("undecodable message (13 bytes): invalid marker").await.expect("dead letter");
        good.ack().await.expect("ack");
        // the dead letter is confirmed before the original is acked: it is there already
        assert_eq!(q.dead_letter_depth(&name).await.expect("dlq depth"), 1);
        assert_eq!(q.depth(&name).await.expect("depth"), 0);
        let dead = q.take_dead_letters(&name, 10).await.expect("take dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].payload.as_ref(), b"\xc1 not msgpack");
        assert_eq!(dead[0].reason, "undecodable message (13 bytes): invalid marker");
        assert_eq!(dead[0].queue, name);
        assert_eq!(q.dead_letter_depth(&name).await.expect("dlq depth"), 0, "taking dead letters removes them");
        assert_eq!(q.dead_lettered_count(&name), 1);
        assert!(dead_letter_queue(&name).ends_with(".dead"));
    })
    .await;
}

#[tokio::test]
async fn redelivery_count_comes_from_the_quorum_queue() {
    let Some((q, _)) = rabbit("redeliveries").await else { return };
    let name = unique("redeliveries");
    with_cleanup(&q, &[&name], async {
        q.publish(&name, Bytes::from_static(b"again")).await.expect("publish");
        let mut c = q.consume(&name, 1).await.expect("consume");
        for expected in 0..3u32 {
            let d = c.next().await.expect("next").expect("message");
            assert_eq!(d.redeliveries, expected);
            d.requeue().await.expect("requeue");
        }
        let d = c.next().await.expect("next").expect("message");
        assert_eq!(d.redeliveries, 3);
        d.ack().await.expect("ack");
    })
    .await;
}

#[tokio::test]
async fn bad_configuration_is_refused_with_the_input_named() {
    let err = AmqpQueue::connect("http://guest:hunter2@127.0.0.1:5672").await.err().expect("refused").to_string();
    assert!(err.contains("http://guest@127.0.0.1:5672") && !err.contains("hunter2"), "{err}");
    let Some((q, _)) = rabbit("config").await else { return };
    let name = unique("config");
    with_cleanup(&q, &[&name], async {
        let err = q.consume(&name, 0).await.err().expect("refused").to_string();
        assert!(err.contains("prefetch"), "{err}");
        let mut url = url::Url::parse(&amqp_url()).expect("url");
        url.set_username("dftg-no-such-user").expect("user");
        url.set_password(Some("hunter2")).expect("password");
        let err = AmqpQueue::connect(url.as_str()).await.err().expect("wrong credentials are refused");
        let shown = err.to_string();
        assert!(shown.contains("dftg-no-such-user@") && !shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("ACCESS_REFUSED") && !err.retryable(), "a refused login is not retried: {shown}");
    })
    .await;
}

#[tokio::test]
async fn closing_ends_consumers_and_refuses_publishes() {
    let Some((q, _)) = rabbit("close").await else { return };
    let name = unique("close");
    let mut c = q.consume(&name, 1).await.expect("consume");
    q.delete_queue(&name).await.expect("delete");
    q.close().await;
    assert!(c.next().await.expect("next").is_none(), "consumers end after close");
    let err = q.publish(&name, Bytes::from_static(b"x")).await.expect_err("closed");
    assert!(matches!(err, dftg_runtime::QueueError::Closed { .. }) && !err.retryable(), "{err}");
}

/// The broker drops our connection while a consumer holds an unsettled delivery: publishing
/// and consuming go on, the dead delivery's ack is harmless, and every payload is acked.
#[tokio::test]
async fn consumers_and_publishers_survive_forced_disconnects() {
    let Some((q, conn_name)) = rabbit("reconnect").await else { return };
    if rabbitmqctl(vec!["status".into(), "-q".into()]).await.is_err() {
        assert!(!ci(), "rabbitmqctl is required under CI=true");
        skip("consumers_and_publishers_survive_forced_disconnects", "rabbitmqctl is not usable");
        return;
    }
    let name = unique("reconnect");
    let total = 40u32;
    with_cleanup(&q, &[&name], async {
        let mut acked = BTreeSet::new();
        for i in 0..total / 2 {
            q.publish(&name, Bytes::from(i.to_be_bytes().to_vec())).await.expect("publish before");
        }
        let mut c = q.consume(&name, 4).await.expect("consume");
        for _ in 0..5 {
            let d = c.next().await.expect("next").expect("message");
            acked.insert(u32::from_be_bytes(d.payload[..].try_into().expect("4 bytes")));
            d.ack().await.expect("ack");
        }
        let held = c.next().await.expect("next").expect("message");
        let held_payload = u32::from_be_bytes(held.payload[..].try_into().expect("4 bytes"));
        let mut held_redelivered = None;

        assert!(force_close_connections(&conn_name).await >= 1, "our connection was listed");

        // publishing retries on a fresh connection
        for i in total / 2..total {
            q.publish(&name, Bytes::from(i.to_be_bytes().to_vec())).await.expect("publish after the disconnect");
        }
        // its channel is gone: the ack is logged and swallowed, the broker redelivers
        held.ack().await.expect("acking a delivery of a dead connection is not an error");

        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(Instant::now() < deadline, "not all payloads acked in time: {} of {total}", acked.len());
            tokio::select! {
                d = c.next() => {
                    let d = d.expect("next keeps yielding across reconnection").expect("message");
                    let payload = u32::from_be_bytes(d.payload[..].try_into().expect("4 bytes"));
                    if payload == held_payload {
                        held_redelivered = Some(d.redeliveries);
                    }
                    acked.insert(payload);
                    d.ack().await.expect("ack");
                }
                // polling the broker's own count (ready + unacked) once all payloads were seen
                _ = tokio::time::sleep(Duration::from_millis(250)), if acked.len() as u32 == total => {
                    if broker_held_messages(&name).await == 0 {
                        break;
                    }
                }
            }
        }
        assert_eq!(acked, (0..total).collect::<BTreeSet<_>>(), "no message lost");
        let held_redelivered = held_redelivered.expect("the delivery unsettled at the disconnect came again");
        assert!(held_redelivered >= 1, "and was counted as a redelivery ({held_redelivered})");
    })
    .await;
}

/// A real broker restart (`rabbitmqctl stop_app` / `start_app`). It interrupts the broker for
/// everyone on the machine, so it only runs when asked:
/// `DFTG_TEST_RESTART_BROKER=1 cargo test -p dftg-runtime --test real_services -- --ignored broker_restart`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared broker; set DFTG_TEST_RESTART_BROKER=1 and run ignored tests"]
async fn broker_restart_is_survived() {
    if std::env::var("DFTG_TEST_RESTART_BROKER").is_err() {
        skip("broker_restart_is_survived", "set DFTG_TEST_RESTART_BROKER=1 to restart the shared broker");
        return;
    }
    let Some((q, _)) = rabbit("restart").await else { return };
    let name = unique("restart");
    let total = 20u32;
    with_cleanup(&q, &[&name], async {
        for i in 0..total / 2 {
            q.publish(&name, Bytes::from(i.to_be_bytes().to_vec())).await.expect("publish before");
        }
        let mut c = q.consume(&name, 4).await.expect("consume");
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            let d = c.next().await.expect("next").expect("message");
            seen.insert(u32::from_be_bytes(d.payload[..].try_into().expect("4 bytes")));
            d.ack().await.expect("ack");
        }
        let held = c.next().await.expect("next").expect("message");
        rabbitmqctl(vec!["stop_app".into()]).await.expect("stop the broker");
        let publisher = {
            let (q, name) = (q.clone(), name.clone());
            tokio::spawn(async move {
                for i in total / 2..total {
                    q.publish(&name, Bytes::from(i.to_be_bytes().to_vec())).await.expect("publish across the restart");
                }
            })
        };
        held.ack().await.expect("acking into a stopped broker is not an error");
        rabbitmqctl(vec!["start_app".into()]).await.expect("start the broker");
        rabbitmqctl(vec!["await_startup".into()]).await.expect("broker started");
        tokio::time::timeout(Duration::from_secs(90), publisher).await.expect("publisher finishes").expect("publisher");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(Instant::now() < deadline, "not all payloads acked in time: {} of {total}", seen.len());
            tokio::select! {
                d = c.next() => {
                    let d = d.expect("next keeps yielding across the restart").expect("message");
                    seen.insert(u32::from_be_bytes(d.payload[..].try_into().expect("4 bytes")));
                    d.ack().await.expect("ack");
                }
                _ = tokio::time::sleep(Duration::from_millis(250)), if seen.len() as u32 == total => {
                    if broker_held_messages(&name).await == 0 {
                        break;
                    }
                }
            }
        }
        assert_eq!(seen, (0..total).collect::<BTreeSet<_>>(), "no message lost");
    })
    .await;
}

/// A loopback TCP proxy in front of the broker, to cut connections at exact points and to
/// play a broker that is down (connections accepted and closed at once).
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    proxied: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (proxied, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let task = {
            let (up, cut, proxied, refused) = (up.clone(), cut.clone(), proxied.clone(), refused.clone());
            tokio::spawn(async move {
                // bounded: at most 16 proxied connections at once
                let slots = Arc::new(tokio::sync::Semaphore::new(16));
                loop {
                    let Ok(permit) = slots.clone().acquire_owned().await else { return };
                    let Ok((mut client, _)) = listener.accept().await else { continue };
                    if !up.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    proxied.fetch_add(1, Ordering::SeqCst);
                    let mut cut_rx = cut.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                            _ = cut_rx.changed() => {}
                        }
                        drop(permit);
                    });
                }
            })
        };
        Proxy { addr, up, cut, proxied, refused, task }
    }

    /// Drops every proxied connection, as a broker restart or a network cut would.
    fn cut_connections(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut_connections();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A publisher and a consumer run while the connection is cut under them, then while the
/// broker is unreachable for a while: both carry on and every payload is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publish_and_consume_survive_cuts_and_an_outage() {
    let Some((direct, _)) = rabbit("outage").await else { return };
    if rabbitmqctl(vec!["status".into(), "-q".into()]).await.is_err() {
        assert!(!ci(), "rabbitmqctl is required under CI=true");
        skip("concurrent_publish_and_consume_survive_cuts_and_an_outage", "rabbitmqctl is not usable");
        return;
    }
    let mut url = url::Url::parse(&amqp_url()).expect("amqp url");
    let target = tokio::net::lookup_host((url.host_str().expect("host").to_string(), url.port().unwrap_or(5672)))
        .await
        .expect("resolve broker")
        .next()
        .expect("broker address");
    let proxy = Arc::new(Proxy::start(target).await);
    url.set_host(Some("127.0.0.1")).expect("host");
    url.set_port(Some(proxy.addr.port())).expect("port");
    let opts = AmqpOptions {
        connection_name: unique("outage-proxied"),
        retry_window: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        ..Default::default()
    };
    let q = AmqpQueue::connect_with(url.as_str(), opts).await.expect("connect through the proxy");
    let name = unique("outage");
    let total = 200u32;
    with_cleanup(&direct, &[&name], async {
        let mut c = q.consume(&name, 8).await.expect("consume");
        let publisher = {
            let (q, name, proxy) = (q.clone(), name.clone(), proxy.clone());
            tokio::spawn(async move {
                for i in 0..total {
                    q.publish(&name, Bytes::from(i.to_be_bytes().to_vec())).await.expect("publish");
                    match i {
                        60 => proxy.cut_connections(),
                        140 => proxy.set_up(false),
                        _ => {}
                    }
                }
            })
        };
        let seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
        let consumer = {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let d = c.next().await.expect("next").expect("message");
                    seen.lock().expect("lock").insert(u32::from_be_bytes(d.payload[..].try_into().expect("4 bytes")));
                    d.ack().await.expect("ack");
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        // the outage ends once the client was seen knocking at least twice
        while proxy.up.load(Ordering::SeqCst) || proxy.refused.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the outage never started or was never noticed");
            assert!(!publisher.is_finished(), "the publisher finished before the outage");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        proxy.set_up(true);
        tokio::time::timeout(Duration::from_secs(60), publisher).await.expect("publisher finishes").expect("publisher");
        loop {
            assert!(Instant::now() < deadline, "not all payloads acked in time: {} of {total}", seen.lock().expect("lock").len());
            if seen.lock().expect("lock").len() == total as usize && broker_held_messages(&name).await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        consumer.abort();
        assert_eq!(*seen.lock().expect("lock"), (0..total).collect::<BTreeSet<_>>());
        assert!(proxy.proxied.load(Ordering::SeqCst) >= 3, "reconnected after the cut and after the outage");
        q.close().await;
    })
    .await;
}

/// The shared test S3 server with this suite's bucket (logs on).
async fn start_s3() -> S3TestServer {
    init_logs();
    S3TestServer::start(S3_BUCKET).await.expect("s3 test server")
}

fn s3_builder(server: &S3TestServer) -> AmazonS3Builder {
    server.builder()
}

#[tokio::test]
async fn s3_store_conforms() {
    let server = start_s3().await;
    let store = ObjectBlobStore::s3(s3_builder(&server), &format!("s3://{S3_BUCKET}/jobs")).expect("s3 store");
    store::conformance_suite(&store).await;
    store::conformance_suite(&store.scoped("job-2")).await;
    assert!(server.root().join(S3_BUCKET).join("jobs/job-2/b/y").is_file(), "objects land in the bucket under the prefix");
    let bare = ObjectBlobStore::s3(s3_builder(&server), &format!("s3://{S3_BUCKET}")).expect("s3 store");
    store::conformance_suite(&bare.scoped("job-3")).await;
}

/// Create-only puts reach the server as `If-None-Match: *` and it refuses to overwrite.
#[tokio::test]
async fn s3_create_only_put_is_enforced_by_the_server() {
    let server = start_s3().await;
    let store = ObjectBlobStore::s3(s3_builder(&server), &format!("s3://{S3_BUCKET}/p")).expect("s3 store");
    assert_eq!(store.put_create("k", Bytes::from_static(b"first")).await.expect("put"), PutOutcome::Created);
    // a second writer racing in with other bytes loses, and says so
    assert_eq!(store.put_create("k", Bytes::from_static(b"second")).await.expect("put"), PutOutcome::AlreadyExists);
    assert_eq!(store.get("k").await.expect("get").as_deref(), Some(&b"first"[..]));
    // the raw request: object_store with conditional puts disabled would overwrite; with
    // ETagMatch the server sees the precondition and answers 412
    let raw = s3_builder(&server).with_bucket_name(S3_BUCKET).build().expect("raw client");
    let err = object_store::ObjectStore::put_opts(
        &raw,
        &object_store::path::Path::from("p/k"),
        object_store::PutPayload::from_static(b"third"),
        object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() },
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, object_store::Error::AlreadyExists { .. }), "{err}");
    assert_eq!(store.get("k").await.expect("get").as_deref(), Some(&b"first"[..]));
}

/// `from_url("s3://…")` takes endpoint, region and keys from the AWS environment. The
/// environment is process-wide, so this runs the child test below in a fresh process.
#[tokio::test]
async fn s3_from_url_reads_the_aws_environment() {
    let server = start_s3().await;
    let exe = std::env::current_exe().expect("test binary");
    let endpoint = server.endpoint.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(exe)
            .args(["--exact", "s3_from_url_child", "--ignored", "--nocapture", "--test-threads", "1"])
            .env_clear()
            .env("DFTG_TEST_S3_CHILD_URL", format!("s3://{S3_BUCKET}/from-env"))
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", S3_REGION)
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .output()
    })
    .await
    .expect("join")
    .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 passed"), "the child test ran:\n{stdout}");
    assert!(server.root().join(S3_BUCKET).join("from-env/a/state.json").is_file());
}

#[tokio::test]
#[ignore = "run by s3_from_url_reads_the_aws_environment in a child process"]
async fn s3_from_url_child() {
    let Ok(url) = std::env::var("DFTG_TEST_S3_CHILD_URL") else {
        eprintln!("s3_from_url_child only runs inside s3_from_url_reads_the_aws_environment");
        return;
    };
    let store = ObjectBlobStore::from_url(&url).expect("s3 store from url");
    assert_eq!(store.describe(), url);
    store::conformance_suite(&store).await;
}
