//! A slow client plus a flood of idle connections must not stop others from signing (the
//! daemon's descriptor limit, per-connection limits).

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_sdk::KeySpec;
use keyward_tests::plugins::{Outcome, TestKey};
use keyward_tests::wait::poll;
use keyward_tests::{DaemonBuilder, TestDaemon};

/// The daemon's open connections, counted from /proc (sockets among its fds).
fn daemon_sockets(daemon: &TestDaemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_do_not_block_others() {
    const IDLE: usize = 1000;
    // This test process needs more than the usual 1024 descriptors too.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let hard = limit.maximum.unwrap_or(1 << 20).min(1 << 20);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        },
    )
    .expect("raise RLIMIT_NOFILE");
    assert!(
        hard as usize > IDLE + 200,
        "the hard open-file limit {hard} is too low for this test"
    );

    // The connection limits of [limits] would close most of these connections (that defence is
    // tested in the security part, tests/tests/security/abuse.rs); opened wide here so that this
    // test still proves the daemon's descriptor limit and that idle and slow connections cost
    // other clients nothing.
    let daemon = DaemonBuilder::new()
        .extra_toml(
            "[limits]\nmax_connections = 4096\nmax_connections_per_uid = 4096\nidle_timeout = 600\nheader_timeout = 600\n",
        )
        .start()
        .await;
    let client = daemon.client().await;
    client
        .generate_key("local", "busy", KeySpec::EcP256)
        .await
        .expect("generate");
    let key = TestKey::fetch(&client, "busy").await;

    // 1000 connections that never send anything.
    let idle: Vec<UnixStream> = (0..IDLE)
        .map(|i| {
            UnixStream::connect(daemon.socket())
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect();
    // A slow client: the HTTP/2 preface one byte every 20 ms.
    let socket = daemon.socket().to_path_buf();
    let trickling = Arc::new(AtomicBool::new(true));
    let slow = {
        let trickling = trickling.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut stream = UnixStream::connect(socket).expect("slow connection");
            for byte in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".iter().cycle() {
                if !trickling.load(Ordering::SeqCst) || stream.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Let the daemon accept them all.
    let accepted = poll(Duration::from_secs(20), || {
        (daemon_sockets(&daemon) > IDLE).then_some(())
    })
    .await;
    assert!(
        accepted.is_some(),
        "the daemon holds only {} sockets",
        daemon_sockets(&daemon)
    );

    // Meanwhile eight fresh clients sign, each call within the hang limit.
    let mut tasks = Vec::new();
    for n in 0..8 {
        let client = daemon.client().await;
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for i in 0..100 {
                let start = Instant::now();
                let outcome = key
                    .sign(
                        &client,
                        format!("{n}/{i}").as_bytes(),
                        Duration::from_secs(10),
                    )
                    .await;
                assert!(matches!(outcome, Outcome::Signed), "{n}/{i}: {outcome:?}");
                slowest = slowest.max(start.elapsed());
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        slowest = slowest.max(task.await.expect("a signing client panicked"));
    }
    println!(
        "soak: 800 signatures next to {IDLE} idle connections and a slow client; slowest call {:.1} ms",
        slowest.as_secs_f64() * 1000.0
    );
    let log = daemon.log();
    assert!(
        !log.contains("Too many open files"),
        "the daemon ran out of descriptors:\n{log}"
    );
    trickling.store(false, Ordering::SeqCst);
    drop(idle);
    slow.join().expect("slow client thread");
    // The daemon is still fine afterwards.
    let outcome = key.sign(&client, b"after", Duration::from_secs(10)).await;
    assert!(matches!(outcome, Outcome::Signed), "{outcome:?}");
}
