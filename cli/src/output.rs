//! Errors, exit codes and writing results.
//!
//! Every failure ends the same way: one line `keyward: error: <message>` on stderr and an exit
//! code that tells a script what kind of failure it was ([`EXIT_NO_AGENT`], [`EXIT_REFUSED`],
//! [`EXIT_UNAVAILABLE`], else [`EXIT_ERROR`]). Nothing returns an error out of `main`, so
//! `RUST_BACKTRACE` never turns a user mistake into a backtrace.

use std::io::Write;
use std::path::Path;

/// The command did what was asked.
pub const EXIT_OK: i32 = 0;
/// `keyward verify`: the signature does not verify.
pub const EXIT_INVALID: i32 = 1;
/// No agent to talk to: nothing listens on the socket, or the socket is not trusted (it
/// belongs to another user), or the mutual-TLS listener cannot be reached. Like `ssh-add`.
pub const EXIT_NO_AGENT: i32 = 2;
/// The agent refused: `PERMISSION_DENIED` (uid, policy), `UNAUTHENTICATED`, or
/// `RESOURCE_EXHAUSTED` (a rate limit). Retrying the same request will not help.
pub const EXIT_REFUSED: i32 = 3;
/// The agent or its backend is unavailable for now (`UNAVAILABLE`): retry later.
pub const EXIT_UNAVAILABLE: i32 = 4;
/// Any other error: usage, a missing key, bad input, files.
pub const EXIT_ERROR: i32 = 5;

/// An error to report to the user: one line of text and an exit code.
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: i32,
}

impl Failure {
    /// A failure with this message (newlines are folded into one line when printed), exit
    /// code [`EXIT_ERROR`].
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: EXIT_ERROR,
        }
    }

    /// The exit code this failure ends the process with.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// Prints `keyward: error: <message>` on stderr and exits with the failure's code.
    pub fn exit(self) -> ! {
        let line = one_line(&self.message);
        let _ = writeln!(std::io::stderr().lock(), "keyward: error: {line}");
        exit(self.code())
    }
}

impl From<keyward_sdk::Error> for Failure {
    fn from(error: keyward_sdk::Error) -> Failure {
        let code = exit_code(&error);
        // The SDK's messages name the key or socket and say what to do.
        Failure {
            message: strip_os_error(&error.to_string()),
            code,
        }
    }
}

/// The exit code of an SDK error.
fn exit_code(error: &keyward_sdk::Error) -> i32 {
    use keyward_sdk::{Code, Error};
    match error {
        Error::Connect { .. } | Error::ConnectRemote { .. } | Error::UntrustedAgent { .. } => {
            EXIT_NO_AGENT
        }
        Error::Agent { code, .. } => match code {
            Code::PermissionDenied | Code::Unauthenticated | Code::ResourceExhausted => {
                EXIT_REFUSED
            }
            Code::Unavailable => EXIT_UNAVAILABLE,
            _ => EXIT_ERROR,
        },
        _ => EXIT_ERROR,
    }
}

/// Flushes stdout and ends the process with `code`.
pub fn exit(code: i32) -> ! {
    let _ = std::io::stdout().lock().flush();
    std::process::exit(code)
}

/// Handles a command-line parsing error: `--help` and `--version` print and exit 0 (as clap
/// does); real usage errors become one `keyward: error:` line and exit [`EXIT_ERROR`].
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_folds_newlines() {
        assert_eq!(one_line("a\n  b\n\nc"), "a b c");
    }

    #[test]
    fn exit_codes_tell_no_agent_refused_and_unavailable_apart() {
        use keyward_sdk::{Code, Error};
        let agent = |code| Error::Agent {
            code,
            message: String::new(),
        };
        let cases = [
            (
                Error::Connect {
                    socket: "/x".into(),
                    reason: String::new(),
                },
                EXIT_NO_AGENT,
            ),
            (
                Error::UntrustedAgent {
                    socket: "/x".into(),
                    reason: String::new(),
                },
                EXIT_NO_AGENT,
            ),
            (agent(Code::PermissionDenied), EXIT_REFUSED),
            (agent(Code::ResourceExhausted), EXIT_REFUSED),
            (agent(Code::Unauthenticated), EXIT_REFUSED),
            (agent(Code::Unavailable), EXIT_UNAVAILABLE),
            (agent(Code::NotFound), EXIT_ERROR),
            (agent(Code::InvalidArgument), EXIT_ERROR),
            (Error::InvalidInput(String::new()), EXIT_ERROR),
        ];
        for (error, code) in cases {
            assert_eq!(Failure::from(error).code(), code);
        }
        assert_eq!(Failure::new("x").code(), EXIT_ERROR);
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
