//! Unit tests of the audit writer; the chain is checked with the SDK's verifier, which is
//! what `keyward audit verify` runs.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::SystemTime;

use super::*;
use keyward_sdk::audit::{ChainVerifier, verify_chain};

fn config(dir: &Path, max_bytes: Option<u64>) -> AuditConfig {
    AuditConfig {
        path: dir.join("logs").join("audit.log"),
        fail_closed: true,
        sync_attempts: false,
        max_bytes,
    }
}

fn record(n: usize) -> Record {
    Record {
        event: "sign",
        result: "ok",
        key: format!("key-{n}"),
        purpose: "line\nbreak \"quoted\" \u{7}".into(),
        ..Record::default()
    }
}

fn write(config: &AuditConfig, records: std::ops::Range<usize>) {
    let mut writer = Writer::open(config.clone()).expect("open");
    for n in records {
        writer.append(&record(n)).expect("append");
    }
}

#[test]
fn times_are_rfc3339_utc() {
    let at = |secs: u64, millis: u64| {
        rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis))
    };
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    assert_eq!(at(1_735_689_599, 500), "2024-12-31T23:59:59.500Z");
    assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
}

#[test]
fn records_chain_across_restarts_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    write(&config, 0..3);
    write(&config, 3..5);
    let text = std::fs::read_to_string(&config.path).unwrap();
    verify_chain(text.lines()).expect("the daemon's log verifies");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["prev"], "0".repeat(64));
    assert_eq!(lines[4]["seq"], 5);
    assert_eq!(lines[4]["key"], "key-4");
    assert_eq!(lines[0]["purpose"], "line\nbreak \"quoted\" \u{7}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config.path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn rotation_keeps_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), Some(600));
    write(&config, 0..10);
    let files: Vec<PathBuf> = rotated(&config.path)
        .into_iter()
        .map(|(_, p)| p)
        .chain([config.path.clone()])
        .collect();
    assert!(files.len() >= 3, "no rotation: {files:?}");
    let mut verifier = ChainVerifier::new();
    for file in &files {
        let contents = std::fs::read(file).unwrap();
        assert!(
            contents.len() <= 600,
            "{} is {} bytes",
            file.display(),
            contents.len()
        );
        verifier
            .push_file(&contents)
            .expect("files verify in order");
    }
    assert_eq!(verifier.records(), 10);
    // Out of order, the second file's first line names the first file's last hash.
    let mut wrong = ChainVerifier::new();
    let error = wrong
        .push_file(&std::fs::read(&files[1]).unwrap())
        .unwrap_err();
    assert_eq!(error.line, 1);

    // A crash between the rename and the first record leaves no current file: the chain
    // continues from the newest rotated file.
    let rotated_files = &files[..files.len() - 1];
    let mut verifier = ChainVerifier::new();
    for file in rotated_files {
        verifier.push_file(&std::fs::read(file).unwrap()).unwrap();
    }
    let rotated_records = verifier.records();
    std::fs::remove_file(&config.path).unwrap();
    write(&config, 10..11);
    let mut verifier = ChainVerifier::new();
    for file in &files {
        verifier.push_file(&std::fs::read(file).unwrap()).unwrap();
    }
    assert_eq!(verifier.records(), rotated_records + 1);
}

#[test]
fn an_incomplete_last_record_is_an_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    write(&config, 0..2);
    let mut file = OpenOptions::new().append(true).open(&config.path).unwrap();
    file.write_all(b"{\"seq\":3,\"ti").unwrap();
    let error = Writer::open(config).unwrap_err();
    assert!(error.contains("ends with an incomplete record"), "{error}");
}

/// Concurrent writers share flushes (group commit) and the chain stays whole and in order,
/// across a rotation too.
#[test]
fn concurrent_writers_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), Some(16 * 1024));
    let auditor = Auditor::open(&config).expect("open");
    let shared = auditor.inner.clone().expect("enabled");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for n in 0..50 {
                    shared.write(&record(t * 1000 + n)).expect("write");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    assert_eq!(*shared.durable.lock().unwrap(), 400, "every record flushed");
    let mut files: Vec<(u64, PathBuf)> = rotated(&config.path);
    assert!(!files.is_empty(), "16 KiB of records rotated at least once");
    files.push((u64::MAX, config.path.clone()));
    let mut verifier = ChainVerifier::new();
    for (_, file) in files {
        verifier
            .push_file(&std::fs::read(file).unwrap())
            .expect("the chain verifies across files");
    }
    assert_eq!(verifier.records(), 400);
}

/// The log has its own thread: with tokio's blocking pool taken by something slow (a huge
/// executable being hashed, say), records are still written; and records queued together share
/// one flush and keep one chain.
#[test]
fn records_are_written_while_the_blocking_pool_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let auditor = Auditor::open(&config).expect("open");
        let (release, held) = mpsc::channel::<()>();
        // The one blocking thread is busy until the records are written.
        let busy = tokio::task::spawn_blocking(move || held.recv());
        let mut writes = tokio::task::JoinSet::new();
        for n in 0..100 {
            let auditor = auditor.clone();
            writes.spawn(async move { auditor.record(record(n), Stage::Before).await });
        }
        let written = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(done) = writes.join_next().await {
                done.expect("task").expect("written");
            }
        })
        .await;
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        written.expect("the records were written while the blocking pool was busy");
        assert_eq!(auditor.head().expect("enabled").0, 100);
    });
    let mut verifier = ChainVerifier::new();
    verifier
        .push_file(&std::fs::read(&config.path).unwrap())
        .expect("one chain");
    assert_eq!(verifier.records(), 100);
}

/// An `attempt` is appended by the request itself, in chain order, without a flush of its own;
/// the outcome's flush makes both durable. With `sync_attempts` the attempt is flushed too.
#[test]
fn an_attempt_is_appended_in_order_and_made_durable_by_its_outcome() {
    for sync_attempts in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            sync_attempts,
            ..config(dir.path(), None)
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let auditor = Auditor::open(&config).expect("open");
        let shared = auditor.inner.clone().expect("enabled");
        runtime.block_on(async {
            let attempt = Record {
                result: "attempt",
                ..record(1)
            };
            auditor.record_attempt(attempt).await.expect("attempt");
            // In the file (the kernel has it) before any backend would be called...
            let text = std::fs::read_to_string(&config.path).unwrap();
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(text.contains("\"result\":\"attempt\""), "{text}");
            // ...and durable only when asked for.
            let durable = *shared.durable.lock().unwrap();
            assert_eq!(
                durable,
                u64::from(sync_attempts),
                "sync_attempts = {sync_attempts}"
            );
            auditor
                .record(record(1), Stage::After)
                .await
                .expect("outcome");
            assert_eq!(
                *shared.durable.lock().unwrap(),
                2,
                "the outcome's flush covers both"
            );
            // Concurrent requests keep one chain.
            let mut requests = tokio::task::JoinSet::new();
            for n in 2..61 {
                let auditor = auditor.clone();
                requests.spawn(async move {
                    let attempt = Record {
                        result: "attempt",
                        ..record(n)
                    };
                    auditor.record_attempt(attempt).await?;
                    auditor.record(record(n), Stage::After).await
                });
            }
            while let Some(done) = requests.join_next().await {
                done.expect("task").expect("written");
            }
        });
        assert_eq!(*shared.durable.lock().unwrap(), 120, "every record flushed");
        let mut verifier = ChainVerifier::new();
        verifier
            .push_file(&std::fs::read(&config.path).unwrap())
            .expect("one chain");
        assert_eq!(verifier.records(), 120);
    }
}

/// An auditor whose writer waits up to `delay` for outcomes on their way (as if its last
/// flush had taken that long).
fn auditor_with_commit_delay(config: &AuditConfig, delay: Duration) -> (Auditor, Arc<Shared>) {
    let auditor = Auditor::start(config, delay).expect("open");
    let shared = auditor.inner.clone().expect("enabled");
    shared
        .last_sync_nanos
        .store(u64::try_from(delay.as_nanos()).unwrap(), Ordering::Relaxed);
    (auditor, shared)
}

/// The writer waits for outcomes on their way and flushes them together; a lone request does
/// not wait; a cancelled request is not waited for.
#[test]
fn outcomes_on_their_way_share_one_flush_and_a_lone_request_does_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    let (auditor, shared) = auditor_with_commit_delay(&config, Duration::from_secs(30));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let attempt = |n| Record {
            result: "attempt",
            ..record(n)
        };
        // A lone request: nothing else outstanding, so its flush starts at once (a wait would
        // take the 30 s delay).
        let lone = auditor.begin();
        auditor.record_attempt(attempt(1)).await.unwrap();
        lone.release();
        tokio::time::timeout(
            Duration::from_secs(20),
            auditor.record(record(1), Stage::After),
        )
        .await
        .expect("a lone outcome is flushed without waiting")
        .unwrap();
        assert_eq!(shared.flushes.load(Ordering::Relaxed), 1);
        // As if that flush had been slow: the writer's next wait may be as long.
        shared
            .last_sync_nanos
            .store(30_000_000_000, Ordering::Relaxed);

        // Two requests in flight: the first outcome waits for the second, one flush for both.
        let (a, b) = (auditor.begin(), auditor.begin());
        auditor.record_attempt(attempt(2)).await.unwrap();
        auditor.record_attempt(attempt(3)).await.unwrap();
        assert_eq!(shared.outstanding.load(Ordering::Relaxed), 2);
        let first = {
            let auditor = auditor.clone();
            tokio::spawn(async move {
                a.release();
                auditor.record(record(2), Stage::After).await
            })
        };
        // Wait (with a deadline) until the writer holds the first outcome.
        let deadline = Instant::now() + Duration::from_secs(20);
        while shared.outstanding.load(Ordering::Relaxed) != 1 {
            assert!(Instant::now() < deadline, "the first outcome never came");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !first.is_finished(),
            "the first outcome did not wait for the second"
        );
        b.release();
        auditor.record(record(3), Stage::After).await.unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(
            shared.flushes.load(Ordering::Relaxed),
            2,
            "one flush for both"
        );
        assert_eq!(*shared.durable.lock().unwrap(), 6);

        // A request cancelled between its attempt and its outcome is not waited for.
        shared
            .last_sync_nanos
            .store(30_000_000_000, Ordering::Relaxed);
        let cancelled = auditor.begin();
        auditor.record_attempt(attempt(4)).await.unwrap();
        assert_eq!(shared.outstanding.load(Ordering::Relaxed), 1);
        drop(cancelled);
        assert_eq!(shared.outstanding.load(Ordering::Relaxed), 0);
        let lone = auditor.begin();
        auditor.record_attempt(attempt(5)).await.unwrap();
        lone.release();
        lone.release(); // twice counts once
        assert_eq!(shared.outstanding.load(Ordering::Relaxed), 0);
        tokio::time::timeout(
            Duration::from_secs(20),
            auditor.record(record(5), Stage::After),
        )
        .await
        .expect("nothing is waited for after a cancelled request")
        .unwrap();
    });
    let mut verifier = ChainVerifier::new();
    verifier
        .push_file(&std::fs::read(&config.path).unwrap())
        .expect("one chain");
    assert_eq!(verifier.records(), 9);
}

#[test]
fn sync_attempts_is_a_setting() {
    let parse = |text: &str| AuditConfig::parse(text.parse().unwrap(), None);
    assert!(!parse("path = \"/a/log\"").unwrap().sync_attempts);
    assert!(
        parse("path = \"/a/log\"\nsync_attempts = true")
            .unwrap()
            .sync_attempts
    );
    assert!(parse("path = \"/a/log\"\nsync_attempts = 1").is_err());
}
