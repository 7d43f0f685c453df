//! Load and fault runs: many clients signing across a local, a SoftHSM and a cloud-emulator
//! (local-kms) backend while a plugin is killed, the emulator stops and comes back, the config
//! is reloaded and the daemon is stopped; and a slow client plus a flood of idle connections
//! that must not stop others from signing.
//!
//! CI runs a short version (`KEYWARD_SOAK_SIGNS`, default 20 000 signatures); `scripts/soak`
//! runs the full one (200 000 signatures from 32 clients, release build). Every signature is
//! verified by the client with the SDK's RustCrypto verifier. The run prints its counts.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_sdk::KeySpec;
use keyward_tests::localkms::{LocalKms, isolated_aws_env};
use keyward_tests::peers::{Peer, require};
use keyward_tests::plugins::{Outcome, TestKey, backend_table, path_line, plugin_processes, poll};
use keyward_tests::softhsm::{self, SoftHsm};
use keyward_tests::{DaemonBuilder, TestDaemon};
use rustix::process::{Pid, Signal, kill_process};

/// A call that takes longer than this counts as a hang.
const HANG: Duration = Duration::from_secs(30);
/// How long after a fault is repaired its backend may still fail (plugin restart backoff,
/// the cloud client's reconnect).
const GRACE: Duration = Duration::from_secs(6);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A window during which one backend may fail.
#[derive(Debug, Clone)]
struct Fault {
    what: &'static str,
    backend: &'static str,
    from: Instant,
    until: Option<Instant>,
}

/// One failed call.
#[derive(Debug)]
struct Failure {
    backend: String,
    key: String,
    started: Instant,
    finished: Instant,
    outcome: String,
}

#[derive(Debug, Default)]
struct Counts {
    signed: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
}

fn config(dir: &std::path::Path, hsm: &SoftHsm, kms: &LocalKms, iso_timeout: u64) -> String {
    let path = |p: &str| dir.join(p).to_str().expect("UTF-8").to_string();
    format!(
        "socket = {:?}\nstate_dir = {:?}\n{}{}{}{}",
        path("run/agent.sock"),
        path("state"),
        backend_table(
            "local",
            "local",
            &format!(
                "isolation = \"none\"\n{}",
                path_line("path", &dir.join("keys"))
            )
        ),
        backend_table(
            "iso",
            "local",
            &format!(
                "isolation = \"process\"\ntimeout = {iso_timeout}\n{}",
                path_line("path", &dir.join("iso-keys"))
            )
        ),
        hsm.backend_toml("soak", "sessions = 4"),
        kms.backend_toml("kms", "timeout = 5"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_survives_load_and_faults() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let Some(mut kms) = LocalKms::start() else {
        return;
    };
    let total = env_number("KEYWARD_SOAK_SIGNS", 20_000);
    let clients = env_number("KEYWARD_SOAK_CLIENTS", 32) as usize;
    let hsm = SoftHsm::new();
    hsm.init_token("soak", softhsm::SO_PIN, softhsm::PIN);
    let builder = isolated_aws_env(hsm.daemon("", softhsm::PIN));
    let dir = builder.dir().to_path_buf();
    let mut daemon = builder.config(&config(&dir, &hsm, &kms, 5)).start().await;
    let admin = daemon.client().await;
    for (backend, id, spec) in [
        ("local", "local-p256", KeySpec::EcP256),
        ("local", "local-ed25519", KeySpec::Ed25519),
        ("iso", "iso-p256", KeySpec::EcP256),
        (softhsm::BACKEND, "hsm-p256", KeySpec::EcP256),
        ("kms", "kms-p256", KeySpec::EcP256),
    ] {
        admin
            .generate_key(backend, id, spec)
            .await
            .unwrap_or_else(|e| panic!("generate {id} in {backend}: {e}"));
    }
    let mut keys = Vec::new();
    for id in [
        "local-p256",
        "local-ed25519",
        "iso-p256",
        "hsm-p256",
        "kms-p256",
    ] {
        keys.push(TestKey::fetch(&admin, id).await);
    }
    let keys = Arc::new(keys);

    let started = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<Failure>::new()));
    let counts = Arc::new(Mutex::new(Counts::default()));
    let hung = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let mut workers = Vec::new();
    for n in 0..clients {
        let client = daemon.client().await;
        let (keys, started, stop, failures, counts, hung) = (
            keys.clone(),
            started.clone(),
            stop.clone(),
            failures.clone(),
            counts.clone(),
            hung.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = n;
            while !stop.load(Ordering::SeqCst) && started.fetch_add(1, Ordering::SeqCst) < total {
                let key = &keys[i % keys.len()];
                i += 1;
                let message = format!("soak {n} {i}");
                let call_start = Instant::now();
                let outcome = key.sign(&client, message.as_bytes(), HANG).await;
                let finished = Instant::now();
                match outcome {
                    Outcome::Signed => {
                        *counts
                            .lock()
                            .unwrap()
                            .signed
                            .entry(key.backend.clone())
                            .or_default() += 1;
                    }
                    other => {
                        if matches!(other, Outcome::Hung) {
                            hung.fetch_add(1, Ordering::SeqCst);
                        }
                        *counts
                            .lock()
                            .unwrap()
                            .failed
                            .entry(key.backend.clone())
                            .or_default() += 1;
                        failures.lock().unwrap().push(Failure {
                            backend: key.backend.clone(),
                            key: key.id.clone(),
                            started: call_start,
                            finished,
                            outcome: format!("{other:?}"),
                        });
                    }
                }
            }
        }));
    }

    // The faults, at fixed fractions of the run.
    let progress = |fraction: f64| {
        let started = started.clone();
        async move {
            let target = (total as f64 * fraction) as u64;
            while started.load(Ordering::SeqCst) < target {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let mut faults: Vec<Fault> = Vec::new();

    progress(0.15).await;
    let plugin = plugin_processes(&daemon, "keyward-plugin-local");
    assert_eq!(plugin.len(), 1, "one plugin for `iso`: {plugin:?}");
    let kill_at = Instant::now();
    kill_process(
        Pid::from_raw(plugin[0].pid as i32).expect("pid"),
        Signal::KILL,
    )
    .expect("kill -9 the iso plugin");
    faults.push(Fault {
        what: "kill -9 of the `iso` plugin",
        backend: "iso",
        from: kill_at,
        until: None,
    });
    let back = poll(Duration::from_secs(20), || {
        plugin_processes(&daemon, "keyward-plugin-local")
            .iter()
            .any(|p| p.pid != plugin[0].pid)
            .then_some(Instant::now())
    })
    .await
    .expect("the iso plugin came back within 20 s");
    faults.last_mut().unwrap().until = Some(back);

    progress(0.35).await;
    let kms_down = Instant::now();
    kms.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    kms.start_again();
    faults.push(Fault {
        what: "local-kms stopped for 2 s and started again",
        backend: "kms",
        from: kms_down,
        until: Some(Instant::now()),
    });

    progress(0.6).await;
    // A changed config: `iso` gets another timeout (so its plugin is replaced) and a new
    // backend appears. No call may fail because of it.
    let reloaded_config = format!(
        "{}{}",
        config(&dir, &hsm, &kms, 7),
        backend_table(
            "added",
            "local",
            &path_line("path", &dir.join("added-keys"))
        )
    );
    std::fs::write(daemon.config_path(), reloaded_config).expect("write the config");
    kill_process(
        Pid::from_raw(daemon.pid() as i32).expect("pid"),
        Signal::HUP,
    )
    .expect("SIGHUP");
    keyward_tests::plugins::wait_for_log(&daemon, &["config reloaded"], 1, Duration::from_secs(30))
        .await;

    progress(1.0).await;
    // Stop: no new calls, let those just issued reach the daemon, then SIGTERM. Every call in
    // flight must still finish with a good signature (a clean drain).
    stop.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = daemon.terminate().await;
    let drain = tokio::time::timeout(Duration::from_secs(40), async {
        for worker in workers {
            worker.await.expect("a client task panicked");
        }
    })
    .await;
    let elapsed = begin.elapsed();
    assert!(drain.is_ok(), "clients still waiting 40 s after SIGTERM");
    assert!(status.success(), "keywardd exited with {status:?}");

    let counts = counts.lock().unwrap();
    let failures = failures.lock().unwrap();
    let signed: u64 = counts.signed.values().sum();
    println!(
        "soak: {signed} signatures verified, {} failed, {} hung, {clients} clients, {:.1} s ({:.0}/s)",
        failures.len(),
        hung.load(Ordering::SeqCst),
        elapsed.as_secs_f64(),
        signed as f64 / elapsed.as_secs_f64()
    );
    for (backend, n) in &counts.signed {
        println!(
            "soak:   {backend:<6} signed {n:>7}  failed {:>5}",
            counts.failed.get(backend).copied().unwrap_or(0)
        );
    }
    for fault in &faults {
        let during = failures
            .iter()
            .filter(|f| f.backend == fault.backend)
            .count();
        println!(
            "soak:   fault: {} -> {during} failed call(s) on `{}`, repaired after {:.2} s",
            fault.what,
            fault.backend,
            fault.until.map_or(0.0, |u| (u - fault.from).as_secs_f64())
        );
    }
    assert_eq!(hung.load(Ordering::SeqCst), 0, "calls hung");
    // Every failure is on a faulted backend, while it was down (plus the grace period).
    let unexplained: Vec<&Failure> = failures
        .iter()
        .filter(|f| {
            !faults.iter().any(|fault| {
                f.backend == fault.backend
                    && f.finished >= fault.from
                    && f.started <= fault.until.unwrap_or(fault.from) + GRACE
            })
        })
        .collect();
    assert!(
        unexplained.is_empty(),
        "{} call(s) failed outside a fault window, first: {:?}",
        unexplained.len(),
        unexplained.first()
    );
    // Only UNAVAILABLE or DEADLINE_EXCEEDED, never a bad signature or an internal error.
    for failure in failures.iter() {
        assert!(
            failure.outcome.contains("Unavailable") || failure.outcome.contains("DeadlineExceeded"),
            "{} ({}): {}",
            failure.key,
            failure.backend,
            failure.outcome
        );
    }
    // Exactly `total` calls were made, and each got an answer.
    assert_eq!(signed + failures.len() as u64, total, "calls were lost");
    let log = daemon.log();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
    assert!(log.contains("config reloaded"));
    drop(kms);
}

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

    let daemon = DaemonBuilder::new().start().await;
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
