//! What a policy's `executables` rule looks at: the caller's `/proc/<pid>/exe` and the
//! SHA-256 of the file it runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

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
/// matters.
pub fn inspect_process(pid: Option<i32>, hash: bool, cache: &ExeHashCache) -> ProcessInfo {
    let Some(pid) = pid.filter(|p| *p > 0) else {
        return ProcessInfo {
            exe: Some(Err("the kernel reported no pid for the connection".into())),
            sha256: None,
        };
    };
    let link = PathBuf::from(format!("/proc/{pid}/exe"));
    if !hash {
        return ProcessInfo {
            exe: Some(
                std::fs::read_link(&link)
                    .map_err(|e| format!("cannot read {}: {e}", link.display())),
            ),
            sha256: None,
        };
    }
    let file = match std::fs::File::open(&link) {
        Ok(file) => file,
        Err(e) => {
            let why = format!("cannot open {}: {e}", link.display());
            return ProcessInfo {
                exe: Some(Err(why.clone())),
                sha256: Some(Err(why)),
            };
        }
    };
    use std::os::fd::AsRawFd;
    let exe = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| format!("cannot read the path of {}: {e}", link.display()));
    ProcessInfo {
        exe: Some(exe),
        sha256: Some(cache.hash(file)),
    }
}

/// SHA-256 of executables, remembered by (device, inode, size, mtime, ctime) so a binary is
/// hashed once; any change to the file changes its ctime, which no user can set.
#[derive(Debug, Default)]
pub struct ExeHashCache {
    pub(super) known: Mutex<HashMap<[i64; 7], [u8; 32]>>,
}

impl ExeHashCache {
    fn hash(&self, mut file: std::fs::File) -> Result<[u8; 32], String> {
        use sha2::Digest;
        use std::os::unix::fs::MetadataExt;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot stat it: {e}"))?;
        let id = [
            meta.dev() as i64,
            meta.ino() as i64,
            meta.size() as i64,
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ];
        if let Some(known) = self.known.lock().expect("hash cache lock").get(&id) {
            return Ok(*known);
        }
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| format!("cannot read it: {e}"))?;
        let digest: [u8; 32] = hasher.finalize().into();
        let mut known = self.known.lock().expect("hash cache lock");
        if known.len() > 1024 {
            known.clear();
        }
        known.insert(id, digest);
        Ok(digest)
    }
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
