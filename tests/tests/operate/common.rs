//! Helpers shared by the `operate` modules: running the CLI and reading its JSON.

use std::path::Path;
use std::process::Output;

use keyward_tests::cli::assert_ok;
use keyward_tests::{TestDaemon, run_cli, stderr_text, stdout_text};
use serde_json::Value;

/// `keyward status` / `keyward doctor`: something needs attention.
pub const EXIT_WARNINGS: i32 = 6;
/// `keyward status` / `keyward doctor`: something is broken.
pub const EXIT_PROBLEMS: i32 = 7;

/// Generates a key `id` of `key_type` on the `local` backend through the CLI.
pub fn generate(daemon: &TestDaemon, backend: &str, key_type: &str, id: &str) {
    let output = run_cli(
        daemon,
        [
            "keys",
            "generate",
            "--backend",
            backend,
            "--type",
            key_type,
            id,
        ],
    );
    assert_ok(&output, &format!("keys generate {id}"));
}

/// The command's stdout as one JSON document; panics with the output otherwise.
pub fn json_out(output: &Output, what: &str) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not JSON ({e}); exit {:?}\nstdout: {}\nstderr: {}",
            output.status.code(),
            stdout_text(output),
            stderr_text(output)
        )
    })
}

/// Asserts the exit code, with the output in the message.
pub fn assert_exit(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: exit status\nstdout: {}\nstderr: {}",
        stdout_text(output),
        stderr_text(output)
    );
}

/// The one check of `doctor --json` named `name`.
pub fn doctor_check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("doctor --json has checks")
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("doctor has no check {name:?}: {report:#}"))
}

/// The checks of `doctor --json` whose status is not `ok` (nor `skipped`).
pub fn doctor_findings(report: &Value) -> Vec<&Value> {
    report["checks"]
        .as_array()
        .expect("doctor --json has checks")
        .iter()
        .filter(|c| c["status"] != "ok" && c["status"] != "skipped")
        .collect()
}

/// A path as `&str`.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
