//! The audit log: one JSON line per decision, hash-chained, written and fsynced before the
//! backend sees the request.
//!
//! ```toml
//! [audit]
//! path = "/var/log/keyward/audit.log"
//! fail_closed = true      # refuse to sign when a record cannot be written (default false)
//! max_bytes = 10485760    # rotate before the file would grow past this (default: never)
//! ```
//!
//! Each line is a JSON object: `seq` (1, 2, ... across rotations), `time` (RFC 3339, UTC),
//! `event` (`sign`, `generate_key`, `attach_certificate_chain`), `result` (`attempt`, `ok`,
//! `denied`, `error`), `caller` (`uid`, `gid`, `pid`, `exe`, `mtls`, `address`, when known),
//! `key`, `key_version`, `backend`, `algorithm`, `key_spec`, `digest` (hex; for Ed25519 the
//! SHA-256 of the message; for a certificate chain the SHA-256 of the PEM), `purpose`,
//! `error`, and last `prev`: the hex SHA-256 of the previous line's bytes (without its
//! newline); 64 zeros on the first line of a log.
//!
//! A request the daemon refuses is one `denied` (policy, uid, rate) or `error` (bad input,
//! unknown key) record. A request that goes to a backend is an `attempt` record, written and
//! fsynced before the backend is called, then an `ok` or `error` record. With `fail_closed`, a
//! request whose `attempt` cannot be written never reaches the backend (`UNAVAILABLE`), and a
//! signature whose `ok` cannot be written is withheld.
//!
//! Writes are group-committed: a record is appended under the log's lock, then made durable
//! by an `fdatasync` outside it; one `fdatasync` covers every record appended before it
//! started, so concurrent requests share flushes instead of queueing for one each. A request
//! still goes on only after its own record is on disk.
//!
//! Rotation renames the file to `<path>.<n>` (n = 1, 2, ...: higher is newer) and starts a new
//! one whose first `prev` is the hash of the old file's last line, so the files verify in order
//! with `keyward audit verify <path>.1 <path>.2 ... <path>` (the verifier is
//! `keyward_sdk::audit`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::AgentError;

/// `[audit]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// The log file.
    pub path: PathBuf,
    /// Refuse requests whose record cannot be written.
    pub fail_closed: bool,
    /// Rotate before the file would grow past this many bytes.
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: PathBuf,
    #[serde(default)]
    fail_closed: bool,
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
    /// `sign`, `generate_key`, `attach_certificate_chain`, `unlock_backend` (never the PIN).
    pub event: &'static str,
    /// `attempt`, `ok`, `denied`, `error`.
    pub result: &'static str,
    /// Who asked.
    pub caller: CallerRecord,
    /// The key id asked for.
    pub key: String,
    /// The key version (backends with versions).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_version: String,
    /// The backend instance, when known.
    #[serde(skip_serializing_if = "String::is_empty")]
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
    /// The caller's purpose.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub purpose: String,
    /// Why it was denied or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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

/// The open log: the file, the hash of its last line, the last `seq`, the size.
#[derive(Debug)]
struct Writer {
    config: AuditConfig,
    file: Arc<File>,
    prev: [u8; 32],
    seq: u64,
    size: u64,
}

/// When a write fails: before the backend (refuse) or after it (withhold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Nothing reached the backend yet.
    Before,
    /// The backend has answered.
    After,
}

/// The audit log of a running daemon (or none). Clones share the file.
#[derive(Clone, Debug, Default)]
pub struct Auditor {
    inner: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    fail_closed: bool,
    writer: Mutex<Writer>,
    /// The highest `seq` known to be on disk; held while an `fdatasync` runs.
    durable: Mutex<u64>,
}

impl Shared {
    /// Appends `record` and returns once it is on disk.
    fn write(&self, record: &Record) -> Result<(), String> {
        let seq = {
            let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            writer.append(record)?
        };
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
        file.sync_data()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        *durable = upto;
        Ok(())
    }
}

impl Auditor {
    /// Opens (or creates, 0600) the log and finds where its chain ends, following rotated
    /// files when the current one is empty. An error says what to fix.
    pub fn open(config: &AuditConfig) -> Result<Auditor, String> {
        let writer = Writer::open(config.clone())?;
        tracing::info!(path = %config.path.display(), seq = writer.seq, fail_closed = config.fail_closed, "audit log open");
        let durable = writer.seq;
        Ok(Auditor {
            inner: Some(Arc::new(Shared {
                fail_closed: config.fail_closed,
                writer: Mutex::new(writer),
                durable: Mutex::new(durable),
            })),
        })
    }

    /// Whether records are kept at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Writes `record` (on a blocking thread: write + fsync). With `fail_closed` a failure is
    /// `UNAVAILABLE`; without, it is logged and the request goes on.
    pub async fn record(&self, record: Record, stage: Stage) -> Result<(), AgentError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let shared = inner.clone();
        let written = tokio::task::spawn_blocking(move || shared.write(&record))
            .await
            .unwrap_or_else(|e| Err(format!("the audit writer failed: {e}")));
        match written {
            Ok(()) => Ok(()),
            Err(why) if inner.fail_closed => {
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

    /// The last `seq` and the hex hash of the last line, to log as an anchor.
    pub fn head(&self) -> Option<(u64, String)> {
        let inner = self.inner.as_ref()?;
        let writer = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        Some((writer.seq, hex::encode(writer.prev)))
    }
}

impl Writer {
    fn open(config: AuditConfig) -> Result<Writer, String> {
        let path = &config.path;
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    format!(
                        "cannot create the audit log's directory {}: {e}",
                        dir.display()
                    )
                })?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot open the audit log {shown}: {e}"))?;
        let size = file
            .metadata()
            .map_err(|e| format!("cannot stat the audit log {shown}: {e}"))?
            .len();
        let (prev, seq) = if size > 0 {
            chain_end(&mut file, size).map_err(|e| format!("the audit log {shown} {e}"))?
        } else {
            match rotated(path).last() {
                Some((_, last)) => {
                    let mut old = File::open(last)
                        .map_err(|e| format!("cannot open {}: {e}", last.display()))?;
                    let len = old.metadata().map(|m| m.len()).unwrap_or(0);
                    if len == 0 {
                        ([0; 32], 0)
                    } else {
                        chain_end(&mut old, len)
                            .map_err(|e| format!("the rotated audit log {} {e}", last.display()))?
                    }
                }
                None => ([0; 32], 0),
            }
        };
        Ok(Writer {
            config,
            file: Arc::new(file),
            prev,
            seq,
            size,
        })
    }

    /// Writes the record's line (not yet synced); returns its `seq`.
    fn append(&mut self, record: &Record) -> Result<u64, String> {
        let seq = self.seq + 1;
        let mut line = serde_json::to_vec(&Line {
            seq,
            time: rfc3339(SystemTime::now()),
            record,
            prev: hex::encode(self.prev),
        })
        .map_err(|e| format!("cannot encode the record: {e}"))?;
        if let Some(max) = self.config.max_bytes
            && self.size > 0
            && self.size + line.len() as u64 + 1 > max
        {
            self.rotate()?;
        }
        let hash: [u8; 32] = Sha256::digest(&line).into();
        line.push(b'\n');
        if let Err(e) = (&*self.file).write_all(&line) {
            // Take back a partial line so the next record does not follow garbage.
            let _ = self.file.set_len(self.size);
            return Err(format!("{}: {e}", self.config.path.display()));
        }
        self.size += line.len() as u64;
        self.prev = hash;
        self.seq = seq;
        Ok(seq)
    }

    /// Renames the file to `<path>.<n>` and starts a new one; the chain goes on.
    fn rotate(&mut self) -> Result<(), String> {
        let path = &self.config.path;
        let next = rotated(path).last().map_or(1, |(n, _)| n + 1);
        let target = numbered(path, next);
        // Records in the old file that no flush has covered yet must be on disk before
        // flushes start going to the new file.
        self.file
            .sync_data()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::rename(path, &target).map_err(|e| {
            format!(
                "cannot rotate {} to {}: {e}",
                path.display(),
                target.display()
            )
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        self.file = Arc::new(
            OpenOptions::new()
                .read(true)
                .append(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot start a new audit log {}: {e}", path.display()))?,
        );
        self.size = 0;
        tracing::info!(rotated = %target.display(), seq = self.seq, head = %hex::encode(self.prev), "audit log rotated");
        Ok(())
    }
}

fn numbered(path: &Path, n: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The rotated files `<path>.<n>`, by n.
fn rotated(path: &Path) -> Vec<(u64, PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let n = file.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// The hash and `seq` of the last line of a non-empty log of `size` bytes.
fn chain_end(file: &mut File, size: u64) -> Result<([u8; 32], u64), String> {
    // Read backwards until the start of the last line is in the buffer.
    let mut window = 64 * 1024u64;
    loop {
        let start = size.saturating_sub(window);
        file.seek(SeekFrom::Start(start))
            .map_err(|e| format!("cannot be read: {e}"))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)
            .map_err(|e| format!("cannot be read: {e}"))?;
        if tail.last() != Some(&b'\n') {
            return Err("ends with an incomplete record (was the daemon stopped while writing it?); move the file aside, check it with `keyward audit verify`, and start again".into());
        }
        let body = &tail[..tail.len() - 1];
        let line = match body.iter().rposition(|b| *b == b'\n') {
            Some(at) => &body[at + 1..],
            None if start == 0 => body,
            None => {
                window *= 4;
                continue;
            }
        };
        let seq = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
            .ok_or("does not end with an audit record (its last line has no seq); move it aside and start again")?;
        return Ok((Sha256::digest(line).into(), seq));
    }
}

/// `2025-01-31T12:34:56.789Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days -> civil date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
