//! Running the `keyward` CLI as another user or from a known path: a copy of the binary in a
//! 0755 directory (the build directory is private to its owner), run directly or through
//! `setpriv` with another uid and gid.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::{COMMAND_TIMEOUT, binary, run_with_timeout, set_mode};

/// The uid and gid of `nobody`.
pub const NOBODY: u32 = 65534;

/// A copy of the `keyward` CLI (or another workspace binary) at a path other users can run.
#[derive(Debug)]
pub struct CliCopy {
    _dir: TempDir,
    path: PathBuf,
}

impl Default for CliCopy {
    fn default() -> Self {
        CliCopy::new()
    }
}

impl CliCopy {
    /// Copies `keyward` into a fresh 0755 directory.
    pub fn new() -> Self {
        CliCopy::of("keyward")
    }

    /// Copies the workspace binary `name` (`keywardd`, `keyward`) into a fresh 0755 directory.
    pub fn of(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("keyward-cli-")
            .tempdir()
            .expect("temp dir");
        set_mode(dir.path(), 0o755);
        let path = dir.path().join(name);
        // A hard link, not a copy: a copy is a file open for writing, and a thread of this test
        // process that forks meanwhile (any Command::spawn) keeps that descriptor open in its
        // child until it execs, so running the copy fails with ETXTBSY ("Text file busy"). A
        // link never opens the file. Across file systems there is no link, only the copy.
        let source = binary(name);
        if std::fs::hard_link(&source, &path).is_err() {
            std::fs::copy(&source, &path).expect("copy the binary");
        }
        set_mode(&path, 0o755);
        let path = path.canonicalize().expect("canonical path of the copy");
        CliCopy { _dir: dir, path }
    }

    /// Where the copy is (canonical, as `/proc/<pid>/exe` shows it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the copy as the current user: `keyward --socket SOCKET ARGS`.
    pub fn run<S: AsRef<OsStr>>(&self, socket: &Path, args: &[S]) -> Output {
        let mut command = Command::new(&self.path);
        command.arg("--socket").arg(socket).args(args);
        finish(command)
    }

    /// Runs the copy as `uid`:`gid` (no supplementary groups) through `setpriv`.
    pub fn run_as<S: AsRef<OsStr>>(&self, uid: u32, gid: u32, socket: &Path, args: &[S]) -> Output {
        let mut command = Command::new("setpriv");
        command
            .args([
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".to_string(),
            ])
            .arg(&self.path)
            .arg("--socket")
            .arg(socket)
            .args(args);
        finish(command)
    }
}

fn finish(mut command: Command) -> Output {
    command
        .env_remove("KEYWARD_SOCK")
        .env("HOME", "/nonexistent")
        .env("RUST_BACKTRACE", "1");
    run_with_timeout(command, None, COMMAND_TIMEOUT)
}
