//! Load and fault runs: many clients signing across a local, a SoftHSM and two cloud-emulator
//! backends (AWS KMS on local-kms, Azure Key Vault on lowkey-vault) while a plugin is killed,
//! each emulator stops and comes back, the config is reloaded and the daemon is stopped. A slow
//! client and a flood of idle connections are in `idle_clients.rs`.
//!
//! CI runs a short version (`KEYWARD_SOAK_SIGNS`, default 20 000 signatures); `scripts/soak`
//! runs the full one (200 000 signatures from 32 clients, release build). Every signature is
//! verified by the client with the SDK's RustCrypto verifier. The run prints its counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_sdk::{Client, KeySpec};
use keyward_tests::localkms::{LocalKms, isolated_aws_env};
use keyward_tests::lowkey::LowkeyVault;
use keyward_tests::peers::{Peer, require};
use keyward_tests::plugins::{Outcome, TestKey, backend_table, path_line, plugin_processes};
use keyward_tests::softhsm::{self, SoftHsm};
use keyward_tests::wait::{self, poll};
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

/// The key `id` of `keys`.
fn key<'a>(keys: &'a [TestKey], id: &str) -> &'a TestKey {
    keys.iter()
        .find(|k| k.id == id)
        .unwrap_or_else(|| panic!("no key {id}"))
}

/// Signs with `key` until it works, for at most [`GRACE`]: a repaired backend signs again.
async fn signs_again(client: &Client, key: &TestKey, fault: &str) {
    wait::until_async(
        &format!("`{}` to sign again after {fault}", key.backend),
        GRACE,
        async || match key.sign(client, b"after the repair", HANG).await {
            Outcome::Signed => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

fn config(
    dir: &std::path::Path,
    hsm: &SoftHsm,
    kms: &LocalKms,
    vault: &LowkeyVault,
    iso_timeout: u64,
) -> String {
    let path = |p: &str| dir.join(p).to_str().expect("UTF-8").to_string();
    format!(
        "socket = {:?}\nstate_dir = {:?}\n{}{}{}{}{}",
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
        vault.backend_toml("azure", ""),
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
    // A server of its own: it is stopped mid-run.
    let Some(vault) = LowkeyVault::start() else {
        return;
    };
    let total = env_number("KEYWARD_SOAK_SIGNS", 20_000);
    let clients = env_number("KEYWARD_SOAK_CLIENTS", 32) as usize;
    let hsm = SoftHsm::new();
    hsm.init_token("soak", softhsm::SO_PIN, softhsm::PIN);
    let mut builder = isolated_aws_env(hsm.daemon("", softhsm::PIN));
    for (name, value) in vault.identity_env() {
        builder = builder.env(name, &value);
    }
    let dir = builder.dir().to_path_buf();
    let mut daemon = builder
        .config(&config(&dir, &hsm, &kms, &vault, 5))
        .start()
        .await;
    let admin = daemon.client().await;
    for (backend, id, spec) in [
        ("local", "local-p256", KeySpec::EcP256),
        ("local", "local-ed25519", KeySpec::Ed25519),
        ("iso", "iso-p256", KeySpec::EcP256),
        (softhsm::BACKEND, "hsm-p256", KeySpec::EcP256),
        ("kms", "kms-p256", KeySpec::EcP256),
        ("azure", "azure-p256", KeySpec::EcP256),
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
        "azure-p256",
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
    signs_again(&admin, key(&keys, "iso-p256"), "the kill").await;

    progress(0.2).await;
    // lowkey-vault stopped and started again (seconds: a JVM) on the blocking pool, so that
    // the clients keep the runtime's workers; it keeps its keys (its export file).
    let azure_down = Instant::now();
    let azure_restart = tokio::task::spawn_blocking(move || {
        let mut vault = vault;
        vault.stop();
        vault.start_again();
        (vault, Instant::now())
    });

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
    signs_again(&admin, key(&keys, "kms-p256"), "the restart").await;

    // The Azure fault ends when lowkey-vault serves again, and the reload below keeps its
    // backend as it is.
    let (vault, azure_back) = azure_restart
        .await
        .expect("restarting lowkey-vault panicked");
    faults.push(Fault {
        what: "lowkey-vault stopped and started again",
        backend: "azure",
        from: azure_down,
        until: Some(azure_back),
    });
    signs_again(&admin, key(&keys, "azure-p256"), "the restart").await;

    progress(0.6).await;
    // A changed config: `iso` gets another timeout (so its plugin is replaced) and a new
    // backend appears. No call may fail because of it.
    let reloaded_config = format!(
        "{}{}",
        config(&dir, &hsm, &kms, &vault, 7),
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
    wait::for_log(&daemon, &["config reloaded"], 1, Duration::from_secs(30)).await;

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
    drop(vault);
}
