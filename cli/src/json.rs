//! `--json` output: one JSON document on stdout, pretty-printed, ending with a newline. Every
//! command that prints data takes `--json`; the shapes are documented in docs/operations.md
//! ("JSON output").

use serde::Serialize;

use crate::output::{Failure, write_stdout};

/// Writes `value` as pretty JSON and a newline.
pub fn print<T: Serialize + ?Sized>(value: &T) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(format!("cannot encode the output as JSON: {e}")))?;
    text.push('\n');
    write_stdout(text.as_bytes())
}

/// A time (seconds since the Unix epoch) as RFC 3339 UTC, `None` for 0.
pub fn time(seconds: i64) -> Option<String> {
    (seconds > 0).then(|| crate::cmd::envelope::rfc3339(seconds))
}
