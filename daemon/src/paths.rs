//! Default locations (XDG) and private directories.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn home() -> Result<PathBuf, String> {
    env_dir("HOME").ok_or_else(|| "HOME is not set; set HOME or XDG_DATA_HOME".to_string())
}

/// `$XDG_DATA_HOME/keyward` (default `~/.local/share/keyward`): keys of the embedded default
/// and the daemon's state.
pub fn data_dir() -> Result<PathBuf, String> {
    Ok(match env_dir("XDG_DATA_HOME") {
        Some(dir) => dir.join("keyward"),
        None => home()?.join(".local/share/keyward"),
    })
}

/// `$XDG_CONFIG_HOME/keyward/keywardd.toml` (default `~/.config/keyward/keywardd.toml`).
pub fn default_config_path() -> Result<PathBuf, String> {
    Ok(match env_dir("XDG_CONFIG_HOME") {
        Some(dir) => dir.join("keyward/keywardd.toml"),
        None => home()?.join(".config/keyward/keywardd.toml"),
    })
}

/// `$XDG_RUNTIME_DIR/keyward/agent.sock`, or `$TMPDIR/keyward-<uid>/agent.sock` (a private
/// directory the daemon creates) when `XDG_RUNTIME_DIR` is unset. The SDK computes the same
/// path (`keyward_sdk::default_socket_path`); a test keeps the two in step.
pub fn default_socket_path() -> Result<PathBuf, String> {
    Ok(match env_dir("XDG_RUNTIME_DIR") {
        Some(dir) => dir.join("keyward/agent.sock"),
        None => {
            let tmp = env_dir("TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp"));
            let uid = rustix::process::getuid().as_raw();
            tmp.join(format!("keyward-{uid}/agent.sock"))
        }
    })
}

/// Makes sure `dir` exists, is a real directory owned by the daemon's user, and has exactly
/// `mode` (0700, or 0711 when other uids must reach the socket inside). If it had to be
/// created it is created with that mode. A directory owned by someone else, or a symlink, is
/// refused: another user could otherwise swap the socket.
pub fn ensure_owned_dir(dir: &Path, mode: u32) -> Result<(), String> {
    let shown = dir.display();
    if let Some(parent) = dir.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create the directory {shown}: {e}")),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| format!("cannot stat {shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!(
            "{shown} is not a directory (a symlink or a file); remove it or choose another path"
        ));
    }
    let uid = rustix::process::getuid().as_raw();
    if meta.uid() != uid {
        return Err(format!(
            "{shown} belongs to uid {}, not to this daemon's uid {uid}; remove it or choose another path",
            meta.uid()
        ));
    }
    if meta.mode() & 0o777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set mode {mode:04o} on {shown}: {e}"))?;
    }
    Ok(())
}
