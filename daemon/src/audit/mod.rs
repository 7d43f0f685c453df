//! The audit log: one JSON line per decision, hash-chained, written and fsynced before the
//! backend sees the request.
//!
//! ```toml
//! [audit]
//! path = "/var/log/keyward/audit.log"
//! fail_closed = true      # refuse to sign when a record cannot be written (default false)
//! sync_attempts = true    # fdatasync each `attempt` record too, before the backend is called
//!                         # (default false: one flush per request, see below)
//! max_bytes = 10485760    # rotate before the file would grow past this (default: never)
//! ```
//!
//! Each line is a JSON object: `seq` (1, 2, ... across rotations), `time` (RFC 3339, UTC),
//! `event` (`sign`, `ssh` for the ssh-agent socket, `generate_key`, `attach_certificate_chain`), `result` (`attempt`, `ok`,
//! `denied`, `error`), `caller` (`uid`, `gid`, `pid`, `exe`, `mtls`, `address`, when known),
//! `key`, `key_version`, `backend`, `algorithm`, `key_spec`, `digest` (hex; for Ed25519 the
//! SHA-256 of the message; for a certificate chain the SHA-256 of the PEM), `purpose`,
//! `ssh_host_key` (a login through the ssh-agent socket), `error`, and last `prev`: the hex SHA-256 of the previous line's bytes (without its
//! newline); 64 zeros on the first line of a log.
//!
//! A request the daemon refuses is one `denied` (policy, uid, rate) or `error` (bad input,
//! unknown key) record. A request that goes to a backend is an `attempt` record, written to the
//! file before the backend is called, then an `ok` or `error` record; the outcome's
//! `fdatasync` makes both durable before the reply leaves. So no result leaves without both
//! records on disk, and a crash of keywardd loses no record it wrote (the kernel has it); only
//! a crash of the whole machine while the backend works can lose an `attempt` whose request
//! never answered. `sync_attempts = true` closes that too, at the price of a second flush per
//! request. With `fail_closed`, a request whose `attempt` cannot be written never reaches the
//! backend (`UNAVAILABLE`), and a signature whose `ok` cannot be made durable is withheld.
//!
//! Writes are group-committed on the log's own thread (never tokio's blocking pool, so nothing
//! that occupies that pool can hold the log up): it takes every record queued, appends them,
//! and makes them durable with one `fdatasync`, so concurrent requests share flushes instead of
//! queueing for one each. A request still goes on only after its own record is on disk. An
//! `attempt` (without `sync_attempts`) is appended by the request itself, under the same lock
//! that orders the chain: a small write(2) to the page cache, no hand-off, no flush.
//!
//! Before a flush, the writer thread waits for outcomes that are on their way: while other
//! requests are in flight (begun, [`Auditor::begin`], and not yet at their outcome record),
//! it waits for their records, at most as long as the last `fdatasync` took (so a record waits
//! at most about twice its flush), then flushes all it has at once. A lone request never waits
//! (nothing else is in flight); under load, several requests share one flush instead of each
//! paying its own (`fdatasync` was a fifth of keywardd's CPU with 16 clients signing, one
//! flush per request; BENCHMARKS.md has the A/B).
//!
//! Rotation renames the file to `<path>.<n>` (n = 1, 2, ...: higher is newer) and starts a new
//! one whose first `prev` is the hash of the old file's last line, so the files verify in order
//! with `keyward audit verify <path>.1 <path>.2 ... <path>` (the verifier is
//! `keyward_sdk::audit`).

mod file;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::AgentError;
use file::Writer;
pub use file::rfc3339;
#[cfg(test)]
use file::rotated;

/// `[audit]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// The log file.
    pub path: PathBuf,
    /// Refuse requests whose record cannot be written.
    pub fail_closed: bool,
    /// `fdatasync` each `attempt` record before the backend is called (else the outcome's
    /// flush makes it durable).
    pub sync_attempts: bool,
    /// Rotate before the file would grow past this many bytes.
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: PathBuf,
    #[serde(default)]
    fail_closed: bool,
    #[serde(default)]
    sync_attempts: bool,
    max_bytes: Option<u64>,
}

impl AuditConfig {
    /// Parses `[audit]`; a relative path is relative to `dir` (the config file's directory).
    pub fn parse(table: toml::Table, dir: Option<&Path>) -> Result<AuditConfig, String> {
        let raw = RawAudit::deserialize(toml::Value::Table(table))
            .map_err(|e| e.message().trim_end().to_string())?;
        let path = match dir {
            Some(dir) if raw.path.is_relative() => dir.join(&raw.path),
            _ => raw.path,
        };
        if path.file_name().is_none() {
            return Err(format!("path {} does not name a file", path.display()));
        }
        if let Some(max) = raw.max_bytes
            && max < 4096
        {
            return Err(format!("max_bytes = {max} is too small; use at least 4096"));
        }
        Ok(AuditConfig {
            path,
            fail_closed: raw.fail_closed,
            sync_attempts: raw.sync_attempts,
            max_bytes: raw.max_bytes,
        })
    }
}

/// Who made a request, as the audit log records it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CallerRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mtls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
}

impl CallerRecord {
    /// The record of `caller`, with the target of `/proc/<pid>/exe` for a local caller when
    /// it can be read.
    pub fn inspect(caller: &Caller) -> Self {
        let exe = caller
            .local()
            .and_then(|local| local.pid)
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok());
        CallerRecord::new(caller, exe.as_deref())
    }

    /// The record of `caller`, with its executable when known.
    pub fn new(caller: &Caller, exe: Option<&Path>) -> Self {
        match caller {
            Caller::Local(local) => CallerRecord {
                uid: Some(local.uid),
                gid: Some(local.gid),
                pid: local.pid,
                exe: exe.map(|e| e.display().to_string()),
                ..CallerRecord::default()
            },
            Caller::Remote(remote) => CallerRecord {
                mtls: remote.identities.clone(),
                address: remote.address.map(|a| a.to_string()),
                ..CallerRecord::default()
            },
        }
    }
}

/// One audit record, without the fields the writer adds (`seq`, `time`, `prev`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Record {
    /// `sign`, `ssh` (the ssh-agent socket), `generate_key`, `attach_certificate_chain`,
    /// `unlock_backend` (never the PIN).
    pub event: &'static str,
    /// `attempt`, `ok`, `denied`, `error`.
    pub result: &'static str,
    /// Who asked.
    pub caller: CallerRecord,
    /// The key id asked for.
    #[serde(serialize_with = "bounded")]
    pub key: String,
    /// The key version (backends with versions).
    #[serde(skip_serializing_if = "String::is_empty", serialize_with = "bounded")]
    pub key_version: String,
    /// The backend instance, when known.
    #[serde(skip_serializing_if = "String::is_empty", serialize_with = "bounded")]
    pub backend: String,
    /// The signature algorithm, when known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub algorithm: String,
    /// The key spec of a key being created.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_spec: String,
    /// Hex: the digest signed (SHA-256 of the message for Ed25519), or of the chain's PEM.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// The caller's purpose (set by the daemon on the ssh-agent socket: `ssh:auth`,
    /// `ssh:sig:<namespace>`, `ssh:other`).
    #[serde(skip_serializing_if = "String::is_empty", serialize_with = "bounded")]
    pub purpose: String,
    /// For a login through the ssh-agent socket: the SHA-256 fingerprint of the server's host
    /// key that ssh bound the connection to (`session-bind@openssh.com`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ssh_host_key: String,
    /// Why it was denied or failed.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "bounded_message"
    )]
    pub error: Option<String>,
}

/// Every caller string a record holds is cut to its bound with a hash of the whole value
/// ([`crate::shown::bounded`]), whatever the code that filled it in did: a record costs at most
/// a few KiB, however large the request. JSON escapes the control characters.
fn bounded<S: serde::Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::shown::bounded(value))
}

fn bounded_message<S: serde::Serializer>(
    value: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(message) => serializer.serialize_str(&crate::shown::bounded_to(
            message,
            crate::shown::MESSAGE_BYTES,
        )),
        None => serializer.serialize_none(),
    }
}

impl Record {
    /// A copy with another result and error (the outcome after an `attempt`).
    pub fn outcome(&self, result: &'static str, error: Option<String>) -> Record {
        Record {
            result,
            error,
            ..self.clone()
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    #[serde(flatten)]
    record: &'a Record,
    prev: String,
}

/// When a write fails: before the backend (refuse) or after it (withhold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Nothing reached the backend yet.
    Before,
    /// The backend has answered.
    After,
}

/// The audit log of a running daemon (or none). Clones share the file and its writer thread.
#[derive(Clone, Debug, Default)]
pub struct Auditor {
    inner: Option<Arc<Shared>>,
    /// The writer thread's queue; the thread ends when the last clone is dropped.
    queue: Option<mpsc::Sender<Job>>,
}

/// A record for the writer thread, and where to say when it is on disk.
#[derive(Debug)]
struct Job {
    record: Record,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Most records the writer thread appends before one `fdatasync`.
const MAX_BATCH: usize = 1024;
/// The longest the writer thread waits for outcomes on their way, whatever a flush takes.
const MAX_COMMIT_DELAY: Duration = Duration::from_millis(1);

#[derive(Debug)]
struct Shared {
    fail_closed: bool,
    sync_attempts: bool,
    writer: Mutex<Writer>,
    /// The highest `seq` known to be on disk; held while an `fdatasync` runs.
    durable: Mutex<u64>,
    /// Requests begun ([`Auditor::begin`]) whose outcome is not queued yet.
    outstanding: AtomicUsize,
    /// How long the last `fdatasync` took, in nanoseconds: the writer's longest wait.
    last_sync_nanos: AtomicU64,
    /// `fdatasync` calls made (what the tests count).
    flushes: AtomicU64,
    /// The cap on the writer's wait ([`MAX_COMMIT_DELAY`]; tests raise it).
    max_commit_delay: Duration,
}

/// A request on its way to an outcome record: the writer thread waits a little for the
/// outcomes of requests in flight before a flush. Released (by the request just before it
/// records its outcome, or when it is dropped with a cancelled request), it is no longer
/// waited for.
#[derive(Debug)]
pub struct Outstanding {
    shared: Option<Arc<Shared>>,
    /// Still counted in `outstanding` (released at most once).
    live: AtomicBool,
}

impl Outstanding {
    /// The request's outcome is about to be queued (or will never be).
    pub fn release(&self) {
        if let Some(shared) = &self.shared
            && self.live.swap(false, Ordering::AcqRel)
        {
            shared.outstanding.fetch_sub(1, Ordering::Release);
        }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.release();
    }
}

impl Shared {
    /// Appends `record` and returns once it is on disk.
    #[cfg(test)]
    fn write(&self, record: &Record) -> Result<(), String> {
        let seq = {
            let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            writer.append(record)?
        };
        self.flush(seq)
    }

    /// Appends `records` in order, then makes them durable with one `fdatasync`; the result of
    /// each (a record whose append or flush failed is not on disk).
    fn write_batch<'r>(
        &self,
        records: impl Iterator<Item = &'r Record>,
    ) -> Vec<Result<(), String>> {
        let mut results = Vec::new();
        let mut last = None;
        {
            let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            for record in records {
                match writer.append(record) {
                    Ok(seq) => {
                        last = Some(seq);
                        results.push(Ok(()));
                    }
                    Err(e) => results.push(Err(e)),
                }
            }
        }
        if let Some(seq) = last
            && let Err(e) = self.flush(seq)
        {
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(e.clone());
            }
        }
        results
    }

    /// What a failed write means for the request: with `fail_closed` a refusal (nothing sent
    /// to the backend, or the result withheld); without, a logged error and the request goes on.
    fn settle(&self, written: Result<(), String>, stage: Stage) -> Result<(), AgentError> {
        match written {
            Ok(()) => Ok(()),
            Err(why) if self.fail_closed => {
                tracing::error!("the audit log cannot be written: {why}; refusing (fail_closed)");
                Err(AgentError::AuditUnavailable(match stage {
                    Stage::Before => format!(
                        "the audit log cannot be written: {why}; nothing was sent to the backend (the audit log is fail_closed); fix the audit log's disk or permissions and retry"
                    ),
                    Stage::After => format!(
                        "the audit log cannot be written: {why}; the result is withheld (the audit log is fail_closed); fix the audit log's disk or permissions and retry"
                    ),
                }))
            }
            Err(why) => {
                tracing::error!(
                    "the audit log cannot be written: {why}; going on without the record (fail_closed = false)"
                );
                Ok(())
            }
        }
    }

    /// Returns once every record up to `seq` is on disk.
    fn flush(&self, seq: u64) -> Result<(), String> {
        let mut durable = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        if *durable >= seq {
            // Someone else's flush, started after our append, covered us.
            return Ok(());
        }
        // Flush everything appended so far (ours and whatever came since).
        let (file, upto, path) = {
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            (writer.file.clone(), writer.seq, writer.config.path.clone())
        };
        let started = Instant::now();
        let synced = file.sync_data();
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_sync_nanos.store(took, Ordering::Relaxed);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        synced.map_err(|e| format!("{}: {e}", path.display()))?;
        *durable = upto;
        Ok(())
    }

    /// How long the writer waits for outcomes on their way: as long as the last flush took.
    fn commit_delay(&self) -> Duration {
        Duration::from_nanos(self.last_sync_nanos.load(Ordering::Relaxed))
            .min(self.max_commit_delay)
    }
}

impl Auditor {
    /// Opens (or creates, 0600) the log and finds where its chain ends, following rotated
    /// files when the current one is empty. An error says what to fix.
    pub fn open(config: &AuditConfig) -> Result<Auditor, String> {
        Auditor::start(config, MAX_COMMIT_DELAY)
    }

    /// [`Auditor::open`] with the writer's wait for records in flight capped at
    /// `max_commit_delay` (tests raise it).
    fn start(config: &AuditConfig, max_commit_delay: Duration) -> Result<Auditor, String> {
        let writer = Writer::open(config.clone())?;
        tracing::info!(path = %config.path.display(), seq = writer.seq, fail_closed = config.fail_closed, "audit log open");
        let durable = writer.seq;
        let shared = Arc::new(Shared {
            fail_closed: config.fail_closed,
            sync_attempts: config.sync_attempts,
            writer: Mutex::new(writer),
            durable: Mutex::new(durable),
            outstanding: AtomicUsize::new(0),
            last_sync_nanos: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            max_commit_delay,
        });
        // The log has a thread of its own, not tokio's blocking pool: whatever else occupies
        // that pool (a slow backend, a big executable being hashed), records keep being written.
        let (queue, jobs) = mpsc::channel();
        let writing = shared.clone();
        std::thread::Builder::new()
            .name("keyward-audit".into())
            .spawn(move || write_jobs(&writing, &jobs))
            .map_err(|e| format!("cannot start the audit log's writer thread: {e}"))?;
        Ok(Auditor {
            inner: Some(shared),
            queue: Some(queue),
        })
    }

    /// Whether records are kept at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Writes `record` (on the log's own thread: write + fsync, shared with the records queued
    /// meanwhile). With `fail_closed` a failure is
    /// `UNAVAILABLE`; without, it is logged and the request goes on.
    pub async fn record(&self, record: Record, stage: Stage) -> Result<(), AgentError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let (done, written) = tokio::sync::oneshot::channel();
        let queued = self
            .queue
            .as_ref()
            .is_some_and(|queue| queue.send(Job { record, done }).is_ok());
        let written = if queued {
            written
                .await
                .unwrap_or_else(|_| Err("the audit log's writer thread stopped".into()))
        } else {
            Err("the audit log's writer thread stopped".into())
        };
        inner.settle(written, stage)
    }

    /// A request begins: until the [`Outstanding`] is released or dropped, the writer thread
    /// may wait a little for its outcome before a flush.
    pub fn begin(&self) -> Outstanding {
        let shared = self.inner.clone();
        if let Some(shared) = &shared {
            shared.outstanding.fetch_add(1, Ordering::Release);
        }
        Outstanding {
            live: AtomicBool::new(shared.is_some()),
            shared,
        }
    }

    /// Writes a request's `attempt` record before its backend is called. Without
    /// `sync_attempts` it is appended here, not flushed: the outcome's record, written with
    /// [`Auditor::record`], makes both durable before the reply leaves. A failed append is
    /// handled as [`Auditor::record`] handles a failed write.
    pub async fn record_attempt(&self, record: Record) -> Result<(), AgentError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        if inner.sync_attempts {
            return self.record(record, Stage::Before).await;
        }
        let appended = {
            let mut writer = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            writer.append(&record).map(|_| ())
        };
        inner.settle(appended, Stage::Before)
    }

    /// The last `seq` and the hex hash of the last line, to log as an anchor.
    pub fn head(&self) -> Option<(u64, String)> {
        let inner = self.inner.as_ref()?;
        let writer = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        Some((writer.seq, hex::encode(writer.prev)))
    }
}

/// Moves what is queued into `batch` (up to [`MAX_BATCH`]) without waiting.
fn drain(jobs: &mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// The writer thread: takes every record queued, appends them, flushes once, answers each.
fn write_jobs(shared: &Shared, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        drain(jobs, &mut batch);
        // Outcomes on their way join this flush if they come within the delay.
        let deadline = Instant::now() + shared.commit_delay();
        while batch.len() < MAX_BATCH && shared.outstanding.load(Ordering::Acquire) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(left) {
                Ok(job) => {
                    batch.push(job);
                    drain(jobs, &mut batch);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let results = shared.write_batch(batch.iter().map(|job| &job.record));
        // Each record of the batch waited for the whole batch's append and flush.
        let took = started.elapsed();
        for (job, result) in batch.into_iter().zip(results) {
            if result.is_ok() {
                crate::metrics::audit_write(took);
            }
            let _ = job.done.send(result);
        }
    }
}

#[cfg(test)]
mod tests;
