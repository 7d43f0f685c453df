//! Connection admission, header and idle deadlines (`guard.rs`), over in-memory connections.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
/// A PING frame (8 bytes of opaque data).
const PING: &[u8] = &[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
const PINGS: usize = 50;

fn limits(header: Duration, idle: Duration) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: 3,
        max_connections_per_uid: 2,
        idle_timeout: idle,
        header_timeout: header,
    }
}

fn guarded(limits: ConnectionLimits) -> (DuplexStream, Guarded<DuplexStream>) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let permit = Admission::new(limits).admit(Some(0)).expect("admitted");
    (client, Guarded::new(server, permit))
}

/// Reads until the connection fails; returns what was read and the error.
async fn read_until_error(server: &mut Guarded<DuplexStream>) -> (Vec<u8>, io::Error) {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match server.read(&mut buf).await {
            Ok(0) => panic!("EOF instead of a time-out"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, e),
        }
    }
}

#[test]
fn connections_are_admitted_within_the_total_and_per_uid_limits() {
    let admission = Admission::new(limits(Duration::from_secs(1), Duration::from_secs(1)));
    let first = admission.admit(Some(1)).expect("first of uid 1");
    let _second = admission.admit(Some(1)).expect("second of uid 1");
    assert!(admission.admit(Some(1)).is_none(), "a third of uid 1");
    let _other = admission.admit(Some(2)).expect("uid 2");
    assert_eq!(admission.open(), 3);
    assert!(admission.admit(Some(3)).is_none(), "over the total");
    assert!(admission.admit(None).is_none(), "over the total");
    drop(first);
    assert_eq!(admission.open(), 2);
    let _third = admission.admit(Some(3)).expect("a place was freed");
}

#[test]
fn refusals_are_logged_at_most_once_a_second() {
    let throttle = Throttle::default();
    assert_eq!(throttle.allow(5), Some(0));
    assert_eq!(throttle.allow(500), None);
    assert_eq!(throttle.allow(1004), None);
    assert_eq!(throttle.allow(1005), Some(2));
    assert_eq!(throttle.allow(1006), None);
}

#[tokio::test]
async fn a_silent_client_is_closed_after_header_timeout() {
    let (_client, mut server) =
        guarded(limits(Duration::from_millis(300), Duration::from_secs(600)));
    let started = Instant::now();
    let (got, error) = read_until_error(&mut server).await;
    assert!(got.is_empty());
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(error.to_string().contains("header_timeout"), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_header_block_left_unfinished_is_closed_after_header_timeout() {
    let (mut client, mut server) =
        guarded(limits(Duration::from_millis(300), Duration::from_secs(600)));
    let mut sent = PREFACE.to_vec();
    sent.extend_from_slice(SETTINGS);
    // HEADERS on stream 1 without END_HEADERS: a CONTINUATION is owed, and never comes.
    sent.extend_from_slice(&[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82]);
    client.write_all(&sent).await.unwrap();
    let (got, error) = read_until_error(&mut server).await;
    assert_eq!(
        got.len(),
        PREFACE.len() + SETTINGS.len(),
        "the held block is not passed on"
    );
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(error.to_string().contains("header_timeout"), "{error}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_an_active_one_is_not() {
    let idle = Duration::from_secs(2);
    let (mut client, mut server) = guarded(limits(Duration::from_secs(600), idle));
    let mut sent = PREFACE.to_vec();
    sent.extend_from_slice(SETTINGS);
    client.write_all(&sent).await.unwrap();
    // Two and a half idle timeouts' worth of activity, a PING every 100 ms.
    let pinger = tokio::spawn(async move {
        for _ in 0..PINGS {
            client.write_all(PING).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client
    });
    let started = Instant::now();
    let mut received = 0;
    let mut buf = [0u8; 256];
    while received < sent.len() + PINGS * PING.len() {
        received += server
            .read(&mut buf)
            .await
            .expect("an active connection stays open");
    }
    assert!(started.elapsed() > idle * 2);
    let _client = pinger.await.unwrap();
    let (got, error) = read_until_error(&mut server).await;
    assert!(got.is_empty());
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(error.to_string().contains("idle_timeout"), "{error}");
}
