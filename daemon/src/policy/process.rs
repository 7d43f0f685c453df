//! What a policy's `executables` rule looks at: the caller's `/proc/<pid>/exe` and the
//! SHA-256 of the file it runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::rules::PolicyRules;

/// What the daemon learned about a local caller's process for the `executables` rule.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    /// The target of `/proc/<pid>/exe`, or why it cannot be read.
    pub exe: Option<Result<PathBuf, String>>,
    /// The SHA-256 of that file, when a rule pins one.
    pub sha256: Option<Result<[u8; 32], String>>,
}

/// The target of `/proc/<pid>/exe` and, when `hash` is set, the SHA-256 of the very file the
/// process runs (read through the same open file, so path and hash describe one inode).
///
/// The pid comes from SO_PEERCRED, taken when the caller connected: the process may have
/// exec'd another program since, or exited and had its pid reused. SECURITY.md says when that
/// matters. Opening and reading the link are quick `/proc` calls on a blocking thread; hashing
/// is [`ExeHashCache::hash`]'s (bounded, merged, on a bounded number of threads).
pub async fn inspect_process(pid: Option<i32>, hash: bool, cache: &ExeHashCache) -> ProcessInfo {
    let Some(pid) = pid.filter(|p| *p > 0) else {
        return ProcessInfo {
            exe: Some(Err("the kernel reported no pid for the connection".into())),
            sha256: None,
        };
    };
    let opened = tokio::task::spawn_blocking(move || open_exe(pid, hash))
        .await
        .unwrap_or_else(|e| Err(format!("inspecting the caller failed: {e}")));
    match opened {
        Err(why) => ProcessInfo {
            exe: Some(Err(why.clone())),
            sha256: hash.then_some(Err(why)),
        },
        Ok((exe, None)) => ProcessInfo {
            exe: Some(exe),
            sha256: None,
        },
        Ok((exe, Some(file))) => {
            let shown = match &exe {
                Ok(path) => path.display().to_string(),
                Err(_) => format!("/proc/{pid}/exe"),
            };
            ProcessInfo {
                exe: Some(exe),
                sha256: Some(cache.hash(file, &shown).await),
            }
        }
    }
}

/// The target of `/proc/<pid>/exe` and, when `hash` is set, the file opened through it.
#[allow(clippy::type_complexity)]
fn open_exe(
    pid: i32,
    hash: bool,
) -> Result<(Result<PathBuf, String>, Option<std::fs::File>), String> {
    let link = PathBuf::from(format!("/proc/{pid}/exe"));
    if !hash {
        let exe =
            std::fs::read_link(&link).map_err(|e| format!("cannot read {}: {e}", link.display()));
        return Ok((exe, None));
    }
    let file =
        std::fs::File::open(&link).map_err(|e| format!("cannot open {}: {e}", link.display()))?;
    use std::os::fd::AsRawFd;
    let exe = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| format!("cannot read the path of {}: {e}", link.display()));
    Ok((exe, Some(file)))
}

/// How many executables are hashed at once; further hashes wait their turn without holding a
/// thread, so hashing never takes more than this many of the blocking pool's threads.
const CONCURRENT_HASHES: usize = 2;

/// Identifies one version of a file: device, inode, size, mtime and ctime (seconds and ns).
type FileVersion = [i64; 7];
/// A hash being computed: everyone who asks for the same file version waits for it.
type InFlight = Arc<tokio::sync::OnceCell<Result<[u8; 32], String>>>;

/// SHA-256 of executables, remembered by (device, inode, size, mtime, ctime) so a binary is
/// hashed once; any change to the file changes its ctime, which no user can set.
///
/// Hashing is bounded three ways: a file larger than `max_bytes` (its size, so a sparse file
/// too) is not read at all; concurrent requests for one file share one computation
/// (single-flight); and at most [`CONCURRENT_HASHES`] files are read at once.
#[derive(Debug)]
pub struct ExeHashCache {
    max_bytes: u64,
    pub(super) known: Mutex<HashMap<FileVersion, [u8; 32]>>,
    in_flight: Mutex<HashMap<FileVersion, InFlight>>,
    hashing: tokio::sync::Semaphore,
    /// How many files were read and hashed (not served from the cache), for tests and the log.
    files_hashed: AtomicU64,
}

impl Default for ExeHashCache {
    fn default() -> Self {
        ExeHashCache::with_max_bytes(crate::limits::Limits::default().max_executable_bytes)
    }
}

impl ExeHashCache {
    /// A cache that refuses to hash files larger than `max_bytes`.
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        ExeHashCache {
            max_bytes,
            known: Mutex::default(),
            in_flight: Mutex::default(),
            hashing: tokio::sync::Semaphore::new(CONCURRENT_HASHES),
            files_hashed: AtomicU64::new(0),
        }
    }

    /// How many files were actually read and hashed.
    pub fn files_hashed(&self) -> u64 {
        self.files_hashed.load(Ordering::Relaxed)
    }

    /// The SHA-256 of `file` (the executable `shown`, for messages).
    pub async fn hash(&self, file: std::fs::File, shown: &str) -> Result<[u8; 32], String> {
        use std::os::unix::fs::MetadataExt;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot stat it: {e}"))?;
        if meta.size() > self.max_bytes {
            return Err(format!(
                "it is {} bytes, larger than the {} bytes keywardd hashes (max_executable_bytes in [limits]); raise that limit, or pin no sha256 for it",
                meta.size(),
                self.max_bytes
            ));
        }
        let version: FileVersion = [
            meta.dev() as i64,
            meta.ino() as i64,
            meta.size() as i64,
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ];
        if let Some(known) = self.known.lock().expect("hash cache lock").get(&version) {
            return Ok(*known);
        }
        let cell: InFlight = self
            .in_flight
            .lock()
            .expect("hash cache lock")
            .entry(version)
            .or_default()
            .clone();
        let mut file = Some(file);
        let result = cell
            .get_or_init(|| async {
                // Only the first asker's file is read; the others wait for its result.
                let file = file.take().expect("the first asker has its file");
                let _permit = self.hashing.acquire().await.expect("never closed");
                self.files_hashed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(executable = %shown, bytes = meta.size(), "hashing a caller's executable for a policy");
                let limit = self.max_bytes;
                tokio::task::spawn_blocking(move || hash_file(file, limit))
                    .await
                    .unwrap_or_else(|e| Err(format!("hashing it failed: {e}")))
            })
            .await
            .clone();
        {
            let mut in_flight = self.in_flight.lock().expect("hash cache lock");
            if in_flight
                .get(&version)
                .is_some_and(|current| Arc::ptr_eq(current, &cell))
            {
                in_flight.remove(&version);
            }
        }
        if let Ok(digest) = &result {
            let mut known = self.known.lock().expect("hash cache lock");
            if known.len() > 1024 {
                known.clear();
            }
            known.insert(version, *digest);
        }
        result
    }
}

/// Reads at most `limit` bytes of `file` (it may have grown since it was measured) and hashes
/// them.
fn hash_file(file: std::fs::File, limit: u64) -> Result<[u8; 32], String> {
    use sha2::Digest;
    use std::io::Read;
    let mut hasher = sha2::Sha256::new();
    let read = std::io::copy(&mut file.take(limit + 1), &mut hasher)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if read > limit {
        return Err(format!(
            "it grew past the {limit} bytes keywardd hashes (max_executable_bytes in [limits]) while it was read"
        ));
    }
    Ok(hasher.finalize().into())
}

/// The canonical form of each executable path (symlinks resolved), as `/proc/<pid>/exe` shows
/// it; a path that does not exist (yet) is kept as written, with a warning.
pub fn canonical_executables(rules: &mut PolicyRules, owner: &str) {
    for executable in rules.executables.iter_mut().flatten() {
        match std::fs::canonicalize(&executable.path) {
            Ok(path) => executable.path = path,
            Err(e) => tracing::warn!(
                key = %owner,
                path = %executable.path.display(),
                "policy executable cannot be resolved ({e}); it matches only a process running exactly this path"
            ),
        }
    }
}
