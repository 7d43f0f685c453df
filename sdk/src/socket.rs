//! Where the agent's socket is.

use std::path::PathBuf;

/// The environment variable that names the agent's socket, like `SSH_AUTH_SOCK`.
pub const SOCKET_ENV: &str = "KEYWARD_SOCK";

/// The socket `keywardd` listens on when started without `--socket` or a configured path:
/// `$XDG_RUNTIME_DIR/keyward/agent.sock`, or `$TMPDIR/keyward-<uid>/agent.sock` (with `/tmp`
/// for an unset `TMPDIR`) when `XDG_RUNTIME_DIR` is unset.
///
/// This does not look at `KEYWARD_SOCK`; [`crate::Client::connect_default`] does.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("keyward").join("agent.sock"),
        None => {
            let tmp = std::env::var_os("TMPDIR")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
            let uid = rustix::process::getuid().as_raw();
            tmp.join(format!("keyward-{uid}")).join("agent.sock")
        }
    }
}
