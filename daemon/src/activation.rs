//! systemd integration at the edges of the daemon's life: sockets inherited through socket
//! activation (`LISTEN_FDS`/`LISTEN_PID`, read with `listenfd`) and the service manager's
//! notifications (`NOTIFY_SOCKET`, written with `sd-notify`): `READY=1` once the sockets
//! serve, `RELOADING=1` … `READY=1` around a SIGHUP reload, `STOPPING=1` on shutdown.
//!
//! An inherited socket is matched to the config by the path it is bound to (the agent socket,
//! the `[ssh_agent]` socket), so the unit's `ListenStream=` lines need no names and their
//! order does not matter. Whatever is not inherited is bound by keywardd itself, as without
//! systemd. Without `NOTIFY_SOCKET` the notifications are no-ops.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Sockets passed by the service manager and not yet claimed, with the path each is bound to.
static INHERITED: Mutex<Vec<(PathBuf, UnixListener)>> = Mutex::new(Vec::new());

/// Takes the listening sockets passed by the service manager (and removes `LISTEN_FDS`,
/// `LISTEN_PID` from the environment, so plugin processes do not see them). Call it first in
/// `main`, before any thread starts. Returns how many were passed; an inherited descriptor
/// that is not a listening Unix socket bound to a path is an error.
pub fn take_inherited() -> Result<usize, String> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut taken = Vec::new();
    for index in 0..fds.len() {
        let listener = fds
            .take_unix_listener(index)
            .map_err(|e| {
                format!("inherited socket {index} (LISTEN_FDS) is not a listening Unix socket: {e}")
            })?
            .ok_or_else(|| format!("inherited socket {index} (LISTEN_FDS) was already taken"))?;
        let path = listener
            .local_addr()
            .ok()
            .and_then(|addr| addr.as_pathname().map(Path::to_path_buf))
            .ok_or_else(|| {
                format!("inherited socket {index} (LISTEN_FDS) is not bound to a path; keywardd serves path sockets only (ListenStream=/path/agent.sock)")
            })?;
        taken.push((path, listener));
    }
    let count = taken.len();
    INHERITED
        .lock()
        .expect("inherited sockets lock")
        .extend(taken);
    Ok(count)
}

/// The inherited socket bound to `path`, if the service manager passed one.
pub fn claim(path: &Path) -> Option<UnixListener> {
    let mut inherited = INHERITED.lock().expect("inherited sockets lock");
    let wanted = comparable(path);
    let index = inherited
        .iter()
        .position(|(bound, _)| comparable(bound) == wanted)?;
    Some(inherited.remove(index).1)
}

/// The paths of inherited sockets no setting asked for (a unit that listens on a path the
/// config does not name).
pub fn unclaimed() -> Vec<PathBuf> {
    let inherited = INHERITED.lock().expect("inherited sockets lock");
    inherited.iter().map(|(path, _)| path.clone()).collect()
}

/// `path` with its directory resolved, so `/run/user/1000/keyward/agent.sock` matches however
/// the unit and the config spell it.
fn comparable(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => match std::fs::canonicalize(dir) {
            Ok(dir) => dir.join(name),
            Err(_) => path.to_path_buf(),
        },
        _ => path.to_path_buf(),
    }
}

/// The checks a socket keywardd binds itself gets, applied to one it inherited: its directory
/// is owned by keywardd's user or root and writable by neither group nor others, and the
/// socket itself is owned by keywardd's user or root.
pub fn check_inherited(path: &Path) -> Result<(), String> {
    let uid = rustix::process::getuid().as_raw();
    let shown = path.display();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let meta = dir
        .metadata()
        .map_err(|e| format!("cannot read the directory of the inherited socket {shown}: {e}"))?;
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(format!(
            "the inherited socket's directory {} belongs to uid {}, not to keywardd's user ({uid}) or root; another user could replace the socket (set DirectoryMode= and the unit's User=)",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "the inherited socket's directory {} is writable by group or others (mode {:o}); another user could replace the socket (DirectoryMode=0755 or stricter)",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    let socket = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot read the inherited socket {shown}: {e}"))?;
    if socket.uid() != uid && socket.uid() != 0 {
        return Err(format!(
            "the inherited socket {shown} belongs to uid {}, not to keywardd's user ({uid}) or root (set SocketUser= in the .socket unit)",
            socket.uid()
        ));
    }
    Ok(())
}

/// Tells the service manager something; logs (once per call) when it cannot.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}

/// The sockets serve: `READY=1`, with a status line.
pub fn ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// A reload begins (SIGHUP): `RELOADING=1` with the monotonic time systemd asks for.
pub fn reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[
            sd_notify::NotifyState::Reloading,
            now,
            sd_notify::NotifyState::Status("reloading the config"),
        ]),
        Err(_) => notify(&[sd_notify::NotifyState::Reloading]),
    }
}

/// Shutdown begins: `STOPPING=1`.
pub fn stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("finishing in-flight requests"),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inherited_socket_is_claimed_by_its_path_however_it_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        INHERITED.lock().unwrap().push((path.clone(), listener));
        // Another path takes nothing.
        assert!(claim(&dir.path().join("ssh.sock")).is_none());
        assert!(unclaimed().contains(&path));
        // The same socket through `.` in its directory.
        let spelled = dir.path().join(".").join("agent.sock");
        let claimed = claim(&spelled).expect("the same socket");
        assert_eq!(
            claimed.local_addr().unwrap().as_pathname(),
            Some(path.as_path())
        );
        assert!(!unclaimed().contains(&path));
        assert!(claim(&path).is_none(), "claimed once");
    }

    #[test]
    fn an_inherited_socket_in_a_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        check_inherited(&path).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = check_inherited(&path).unwrap_err();
        assert!(error.contains("writable by group or others"), "{error}");
    }
}
