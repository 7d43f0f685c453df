//! One abusive local client against the agent socket's transport limits (#16.2), while a normal
//! client signs: sixteen 40 MB Sign requests (the scenario, sent through a real HTTP/2
//! client that honours flow control), 150 requests on one connection that never send their
//! body, a header block never finished, and more connections than a uid may hold. Every normal
//! signature must come within 5 s, the daemon's resident memory must stay bounded (read from
//! /proc, not timed), and each abuse must meet its limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use keyward_sdk::{KeySpec, SignOptions};
use keyward_tests::wait::for_log;
use keyward_tests::{DaemonBuilder, TestDaemon};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SIGN_PATH: &str = "/keyward.v1.Signer/Sign";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
/// How long one normal signature may take at most: generous for a loaded machine, far below
/// what a daemon stuck behind the abuse would take.
const NORMAL_DEADLINE: Duration = Duration::from_secs(5);
/// The test's `max_connections_per_uid`.
const PER_UID: usize = 40;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The header block of a Sign request (HPACK literals without indexing, no Huffman).
fn sign_headers() -> Vec<u8> {
    fn string(out: &mut Vec<u8>, value: &str) {
        out.push(u8::try_from(value.len()).expect("short"));
        out.extend_from_slice(value.as_bytes());
    }
    // :method POST and :scheme http from the static table.
    let mut block = vec![0x83, 0x86];
    // :path and :authority by their static-table names.
    block.push(0x04);
    string(&mut block, SIGN_PATH);
    block.push(0x01);
    string(&mut block, "localhost");
    for (name, value) in [("content-type", "application/grpc"), ("te", "trailers")] {
        block.push(0x00);
        string(&mut block, name);
        string(&mut block, value);
    }
    block
}

/// A raw connection that has sent its preface and an empty SETTINGS frame (unless the daemon
/// closed it first).
async fn raw_connection(daemon: &TestDaemon) -> UnixStream {
    let mut stream = UnixStream::connect(daemon.socket()).await.expect("connect");
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    let _ = stream.write_all(&hello).await;
    stream
}

/// The next frame from the server: (type, flags, stream, payload), or `None` at its end.
async fn read_frame(stream: &mut UnixStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await.ok()?;
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await.ok()?;
    let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    Some((header[3], header[4], id, payload))
}

/// Opens `n` Sign requests on one connection that never send a body; returns how many the
/// daemon refused with REFUSED_STREAM, and the connection (its requests still open).
async fn many_streams(mut stream: UnixStream, n: u32) -> (usize, UnixStream) {
    // Acknowledge the daemon's settings, so that its stream limit applies (RFC 9113 §6.5.3).
    loop {
        let (kind, flags, _, _) = read_frame(&mut stream)
            .await
            .expect("the daemon's SETTINGS");
        if kind == SETTINGS && flags & ACK == 0 {
            break;
        }
    }
    let mut requests = frame(SETTINGS, ACK, 0, &[]);
    let block = sign_headers();
    for i in 0..n {
        requests.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    stream.write_all(&requests).await.expect("requests");
    let mut refused = 0;
    let counted = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some((kind, _, _, payload)) = read_frame(&mut stream).await {
            if kind == RST_STREAM && payload == REFUSED_STREAM.to_be_bytes() {
                refused += 1;
                if refused == (n - 32) as usize {
                    break;
                }
            }
        }
    })
    .await;
    let _ = counted;
    (refused, stream)
}

/// `n` Sign requests of `size` bytes each on one HTTP/2 connection (the h2 client honours the
/// daemon's flow control, as any real client does); returns each (grpc-status, grpc-message).
async fn huge_requests(stream: UnixStream, n: usize, size: u32) -> Vec<(String, String)> {
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(connection);
    let chunk = bytes::Bytes::from(vec![0u8; 1 << 20]);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, chunk) = (client.clone(), chunk.clone());
        calls.spawn(async move {
            let mut client = client.ready().await.expect("ready");
            let request = http::Request::post(format!("http://localhost{SIGN_PATH}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("request");
            let (response, mut body) = client.send_request(request, false).expect("send");
            let send = async move {
                let mut prefix = vec![0u8];
                prefix.extend_from_slice(&size.to_be_bytes());
                body.send_data(prefix.into(), false).ok()?;
                let mut left = size as usize;
                while left > 0 {
                    body.reserve_capacity(chunk.len().min(left));
                    let capacity = std::future::poll_fn(|cx| body.poll_capacity(cx))
                        .await?
                        .ok()?;
                    let n = capacity.min(left);
                    body.send_data(chunk.slice(..n), false).ok()?;
                    left -= n;
                }
                Some(())
            };
            let answer = async move {
                let response = response.await.expect("an answer");
                let (parts, mut body) = response.into_parts();
                let mut headers = parts.headers;
                if !headers.contains_key("grpc-status") {
                    while body.data().await.is_some() {}
                    headers = body.trailers().await.ok().flatten().unwrap_or_default();
                }
                let get = |name: &str| {
                    headers
                        .get(name)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .unwrap_or_default()
                };
                (get("grpc-status"), percent_decoded(&get("grpc-message")))
            };
            // The answer may come before the body is sent (it is refused unread); the sender
            // then fails, or gives up after a minute.
            let (answer, _) =
                tokio::join!(answer, tokio::time::timeout(Duration::from_secs(60), send));
            answer
        });
    }
    calls.join_all().await
}

/// A header block that is never finished: the daemon must close the connection.
async fn unfinished_headers(mut stream: UnixStream) -> bool {
    // HEADERS without END_HEADERS: a CONTINUATION is owed, and never comes.
    stream
        .write_all(&frame(HEADERS, 0, 1, &sign_headers()))
        .await
        .expect("headers");
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .is_ok()
}

/// Opens `n` connections and keeps them; returns how many the daemon served (it sent its
/// SETTINGS) and how many it closed unread.
async fn many_connections(daemon: &TestDaemon, n: usize) -> (usize, usize, Vec<UnixStream>) {
    let mut kept = Vec::new();
    let (mut served, mut closed) = (0, 0);
    for _ in 0..n {
        let mut stream = raw_connection(daemon).await;
        let mut first = [0u8; 9];
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut first)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => served += 1,
            Err(_) => panic!("the daemon neither served nor closed a connection in 10 s"),
        }
        kept.push(stream);
    }
    (served, closed, kept)
}

/// A `grpc-message` decoded (gRPC percent-encodes it).
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The daemon's resident set (VmRSS) in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abusive_client_neither_slows_a_normal_one_nor_grows_the_daemon() {
    let daemon = DaemonBuilder::new()
        .top_level(&format!(
            "[limits]\nmax_connections_per_uid = {PER_UID}\nmax_concurrent_streams = 32\nheader_timeout = 2\n"
        ))
        .start()
        .await;
    let client = daemon.client().await;
    client
        .generate_key("local", "normal", KeySpec::EcP256)
        .await
        .expect("generate");
    let options = SignOptions::default();
    client
        .sign_digest("normal", &Sha256::digest(b"before"), &options)
        .await
        .expect("sign before");

    let pid = daemon.pid();
    let before = rss(pid);
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let abuse_over = AtomicBool::new(false);
    let timed = async |what: &str, started: std::time::Instant| {
        eprintln!("{what} done in {:?}", started.elapsed());
    };
    // The abusers' first connections, before the connection flood takes every place.
    let huge_connection = UnixStream::connect(daemon.socket()).await.expect("connect");
    let streams_connection = raw_connection(&daemon).await;
    let slow_connection = raw_connection(&daemon).await;
    let abuse = async {
        let started = std::time::Instant::now();
        let outcome = tokio::join!(
            async {
                let r = huge_requests(huge_connection, 16, 40_000_000).await;
                timed("huge requests", started).await;
                r
            },
            async {
                let r = many_streams(streams_connection, 150).await;
                timed("many streams", started).await;
                r
            },
            async {
                let r = unfinished_headers(slow_connection).await;
                timed("unfinished headers", started).await;
                r
            },
            async {
                let r = many_connections(&daemon, 2 * PER_UID).await;
                timed("many connections", started).await;
                r
            },
        );
        abuse_over.store(true, Ordering::Relaxed);
        outcome
    };
    let normal = async {
        // The normal client signs throughout the abuse, each signature within the deadline.
        let mut n = 0;
        while n < 40 || !abuse_over.load(Ordering::Relaxed) {
            n += 1;
            let digest = Sha256::digest(format!("normal {n}"));
            tokio::time::timeout(
                NORMAL_DEADLINE,
                client.sign_digest("normal", &digest, &options),
            )
            .await
            .unwrap_or_else(|_| panic!("normal signature {n} took over {NORMAL_DEADLINE:?}"))
            .expect("the normal client signs");
        }
        eprintln!("{n} normal signatures during the abuse");
    };
    let ((huge, (refused, _streams), closed_slow, (served, closed, _kept)), ()) =
        tokio::join!(abuse, normal);
    done.store(true, Ordering::Relaxed);
    sampler.await.expect("sampler");
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "daemon RSS: {} MiB before, {} MiB at the peak of the abuse",
        before >> 20,
        peak >> 20
    );

    for (status, message) in &huge {
        assert_eq!(status, "3", "a 40 MB Sign is INVALID_ARGUMENT: {message}");
        assert!(
            message.contains("larger than the") && message.contains("max_message_bytes"),
            "{message}"
        );
    }
    assert_eq!(
        refused,
        150 - 32,
        "requests past max_concurrent_streams are refused"
    );
    assert!(
        closed_slow,
        "an unfinished header block was not closed after header_timeout"
    );
    assert!(
        served <= PER_UID && closed >= PER_UID,
        "{served} connections served and {closed} closed: max_connections_per_uid = {PER_UID}"
    );
    for_log(
        &daemon,
        &[
            "refused a connection on the agent socket",
            "max_connections_per_uid in [limits]",
        ],
        1,
        Duration::from_secs(10),
    )
    .await;
    for_log(
        &daemon,
        &["header_timeout in [limits]"],
        1,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        peak < before + (100 << 20),
        "the daemon grew from {} MiB to {} MiB",
        before >> 20,
        peak >> 20
    );
}
