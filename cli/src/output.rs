//! Errors, exit codes and writing results.
//!
//! Every failure ends the same way: one line `keyward: error: <message>` on stderr and exit
//! code [`EXIT_ERROR`]. Nothing returns an error out of `main`, so `RUST_BACKTRACE` never turns a
//! user mistake into a backtrace.

use std::io::Write;
use std::path::Path;

/// The command did what was asked.
pub const EXIT_OK: i32 = 0;
/// `keyward verify`: the signature does not verify.
pub const EXIT_INVALID: i32 = 1;
/// Anything went wrong: usage, agent, files.
pub const EXIT_ERROR: i32 = 2;

/// An error to report to the user: one line of text.
#[derive(Debug)]
pub struct Failure {
    message: String,
}

impl Failure {
    /// A failure with this message (newlines are folded into one line when printed).
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
        }
    }

    /// Prints `keyward: error: <message>` on stderr and exits with [`EXIT_ERROR`].
    pub fn exit(self) -> ! {
        let line = one_line(&self.message);
        let _ = writeln!(std::io::stderr().lock(), "keyward: error: {line}");
        exit(EXIT_ERROR)
    }
}

impl From<keyward_sdk::Error> for Failure {
    fn from(error: keyward_sdk::Error) -> Failure {
        // The SDK's messages name the key or socket and say what to do.
        Failure::new(strip_os_error(&error.to_string()))
    }
}

/// Flushes stdout and ends the process with `code`.
pub fn exit(code: i32) -> ! {
    let _ = std::io::stdout().lock().flush();
    std::process::exit(code)
}

/// Handles a command-line parsing error: `--help` and `--version` print and exit 0 (as clap
/// does); real usage errors become one `keyward: error:` line and exit 2.
pub fn exit_on_usage_error(error: clap::Error) -> ! {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => error.exit(),
        _ => Failure::new(format!("{} (see --help)", usage_message(&error))).exit(),
    }
}

/// Clap's error text without the `error:` prefix, the usage block and the `--help` hint, on one
/// line.
fn usage_message(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut message = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("error:").map_or(line, str::trim_start);
        if !message.is_empty() {
            message.push_str(if message.ends_with(':') { " " } else { "; " });
        }
        message.push_str(line);
    }
    if message.is_empty() {
        message = error.kind().to_string();
    }
    message
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// An I/O error's reason without the `(os error N)` suffix.
pub fn io_reason(error: &std::io::Error) -> String {
    strip_os_error(&error.to_string())
}

/// `text` without the ` (os error N)` that Rust appends to I/O errors.
fn strip_os_error(text: &str) -> String {
    let mut out = text.to_string();
    while let Some(at) = out.find(" (os error ") {
        let Some(len) = out[at..].find(')') else {
            break;
        };
        out.replace_range(at..=at + len, "");
    }
    out
}

/// Writes `bytes` to stdout. A closed pipe (`keyward ... | head`) ends the process quietly.
pub fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => exit(EXIT_OK),
        Err(error) => Err(Failure::new(format!(
            "cannot write to standard output: {}",
            io_reason(&error)
        ))),
    }
}

/// Writes `bytes` to the file `path`, or to stdout when `path` is `None` or `-`.
pub fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<(), Failure> {
    match path {
        Some(path) if path != Path::new("-") => std::fs::write(path, bytes).map_err(|error| {
            Failure::new(format!(
                "cannot write output file {}: {}",
                quoted(path),
                io_reason(&error)
            ))
        }),
        _ => write_stdout(bytes),
    }
}

/// Reads the file `path`, or stdin when it is `-`. `what` names it in errors ("input file").
pub fn read_input(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes).map_err(|error| {
            Failure::new(format!("cannot read standard input: {}", io_reason(&error)))
        })?;
        return Ok(bytes);
    }
    std::fs::read(path).map_err(|error| {
        Failure::new(format!(
            "cannot read {what} {}: {}",
            quoted(path),
            io_reason(&error)
        ))
    })
}

/// A path in double quotes, for messages.
pub fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// PEM text with exactly one trailing newline.
pub fn pem_text(pem: &str) -> String {
    format!("{}\n", pem.trim_end())
}

impl Failure {
    /// The message, as one line (for a command that reports a failure as data: `status`).
    pub fn message(&self) -> String {
        one_line(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_folds_newlines() {
        assert_eq!(one_line("a\n  b\n\nc"), "a b c");
    }

    #[test]
    fn io_reason_drops_os_error() {
        let error = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_reason(&error), "No such file or directory");
        assert_eq!(
            strip_os_error("at /x: No such file (os error 2); start it"),
            "at /x: No such file; start it"
        );
    }
}
