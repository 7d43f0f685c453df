//! Helpers for driving the `keyward` CLI: a daemon with keys made through the CLI, and the
//! CLI's output and error contracts.

use std::path::Path;
use std::process::Output;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward_sdk::KeySpec;

use crate::{TestDaemon, run_cli, stderr_text, stdout_text};

/// The keys [`setup`] creates.
pub const KEYS: [(&str, KeySpec); 3] = [
    ("cli-ec", KeySpec::EcP256),
    ("cli-ed", KeySpec::Ed25519),
    ("cli-rsa", KeySpec::Rsa2048),
];

/// A daemon with the three [`KEYS`], generated through the CLI.
pub async fn setup() -> TestDaemon {
    let daemon = TestDaemon::start("").await;
    for (id, spec) in KEYS {
        let output = run_cli(
            &daemon,
            [
                "keys",
                "generate",
                "--backend",
                "local",
                "--type",
                spec.name(),
                id,
            ],
        );
        assert_ok(&output, &format!("keys generate {id}"));
    }
    daemon
}

/// Panics with the output unless the command succeeded.
pub fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        output.status,
        stdout_text(output),
        stderr_text(output)
    );
}

/// `keyward`'s exit codes (see `keyward --help`).
pub mod exit {
    /// `keyward verify`: the signature is invalid.
    pub const INVALID_SIGNATURE: i32 = 1;
    /// No agent: nothing listens on the socket, or the socket is not trusted.
    pub const NO_AGENT: i32 = 2;
    /// The agent refused (PERMISSION_DENIED, UNAUTHENTICATED, RESOURCE_EXHAUSTED).
    pub const REFUSED: i32 = 3;
    /// UNAVAILABLE: retry later.
    pub const UNAVAILABLE: i32 = 4;
    /// Any other error.
    pub const ERROR: i32 = 5;
}

/// The CLI's error contract for "other" errors: exit 5, one line on stderr starting
/// `keyward: error:`, no panic.
pub fn assert_cli_error(output: &Output, what: &str, needles: &[&str]) {
    assert_cli_exit(output, exit::ERROR, what, needles);
}

/// The CLI's error contract: exit `code`, one line on stderr starting `keyward: error:`, no
/// panic, every needle in the message (case-insensitive).
pub fn assert_cli_exit(output: &Output, code: i32, what: &str, needles: &[&str]) {
    let stderr = stderr_text(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: exit status; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "{what}: the CLI panicked:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "{what}: not one line on stderr:\n{stderr}");
    assert!(lines[0].starts_with("keyward: error:"), "{what}: {stderr}");
    for needle in needles {
        assert!(
            stderr.to_lowercase().contains(&needle.to_lowercase()),
            "{what}: the error does not mention {needle:?}: {stderr}"
        );
    }
}

/// Decodes the base64 line `keyward sign` prints.
pub fn stdout_signature(output: &Output) -> Vec<u8> {
    let text = stdout_text(output);
    assert!(
        text.ends_with('\n') && text.trim_end().lines().count() == 1,
        "not one line: {text:?}"
    );
    STANDARD
        .decode(text.trim_end())
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text:?}"))
}

/// A path as `&str` (temporary paths are UTF-8).
pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
