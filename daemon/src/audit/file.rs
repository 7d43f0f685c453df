//! The audit log's file: appending hash-chained lines, rotation, and finding where the chain
//! of an existing log ends.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::{AuditConfig, Line, Record};

/// The open log: the file, the hash of its last line, the last `seq`, the size.
#[derive(Debug)]
pub(super) struct Writer {
    pub(super) config: AuditConfig,
    pub(super) file: Arc<File>,
    pub(super) prev: [u8; 32],
    pub(super) seq: u64,
    size: u64,
}

impl Writer {
    pub(super) fn open(config: AuditConfig) -> Result<Writer, String> {
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
    pub(super) fn append(&mut self, record: &Record) -> Result<u64, String> {
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
pub(super) fn rotated(path: &Path) -> Vec<(u64, PathBuf)> {
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
