//! cosign for the `sigstore-kms-keyward` tests: the real `cosign` CLI (v2.6.5, built from the
//! Go module proxy by `scripts/test cosign`) run with a private HOME, `KEYWARD_SOCK` pointing
//! at the test daemon and a PATH whose only plugin is a copy of `sigstore-kms-keyward`.
//!
//! cosign is found through `KEYWARD_TEST_COSIGN` (else `~/.cache/keyward/bin/cosign`) by
//! [`crate::peers::require`].

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::notation::Tools;
use crate::peers::{Peer, require};
use crate::users::CliCopy;
use crate::{COMMAND_TIMEOUT, run_with_timeout, stderr_text, stdout_text};

/// The environment variable naming the cosign binary (`scripts/test cosign` sets it).
pub const COSIGN_ENV: &str = "KEYWARD_TEST_COSIGN";

/// The cosign executable, or `None` after printing why the test is skipped (a failure under
/// `CI=true`).
pub fn binary() -> Option<PathBuf> {
    require(Peer::Cosign)
}

/// The distribution registry alone (no notation), or `None` after printing why the test is
/// skipped.
pub fn registry_tools() -> Option<Tools> {
    Some(Tools {
        notation: PathBuf::new(),
        registry: require(Peer::Registry)?,
    })
}

/// cosign with a home of its own, talking to the agent at `socket` through a copy of
/// `sigstore-kms-keyward` on its PATH.
#[derive(Debug)]
pub struct Cosign {
    bin: PathBuf,
    home: TempDir,
    plugin: CliCopy,
    socket: PathBuf,
}

impl Cosign {
    /// A cosign for the agent at `socket`.
    pub fn new(bin: &Path, socket: &Path) -> Cosign {
        let home = tempfile::Builder::new()
            .prefix("keyward-cosign-")
            .tempdir()
            .expect("temp dir");
        Cosign {
            bin: bin.to_path_buf(),
            home,
            plugin: CliCopy::of("sigstore-kms-keyward"),
            socket: socket.to_path_buf(),
        }
    }

    /// A directory for this test's files (blobs, signatures, public keys).
    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    /// Where the plugin cosign runs is (as `/proc/<pid>/exe` shows it).
    pub fn plugin_path(&self) -> &Path {
        self.plugin.path()
    }

    /// `cosign ARGS` with `extra_env`, run in [`Cosign::dir`].
    pub fn run_with<I, S>(&self, args: I, extra_env: &[(&str, &str)]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let plugin_dir = self.plugin.path().parent().expect("the copy's directory");
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .current_dir(self.home.path())
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", format!("{}:/usr/bin:/bin", plugin_dir.display()))
            .env("KEYWARD_SOCK", &self.socket)
            .env("TUF_ROOT", self.home.path().join("tuf"))
            .env("COSIGN_YES", "true");
        for (name, value) in extra_env {
            command.env(name, value);
        }
        run_with_timeout(command, None, COMMAND_TIMEOUT)
    }

    /// `cosign ARGS`.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_with(args, &[])
    }

    /// `cosign ARGS`, which must succeed; its stdout and stderr.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let output = self.run(&args);
        assert!(
            output.status.success(),
            "cosign {args:?} failed ({}):\n{}{}",
            output.status,
            stdout_text(&output),
            stderr_text(&output)
        );
        format!("{}{}", stdout_text(&output), stderr_text(&output))
    }

    /// `cosign ARGS`, which must fail; its stdout and stderr.
    pub fn fails<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let output = self.run(&args);
        let text = format!("{}{}", stdout_text(&output), stderr_text(&output));
        assert!(
            !output.status.success(),
            "cosign {args:?} succeeded but must fail:\n{text}"
        );
        text
    }
}
