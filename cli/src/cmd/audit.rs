//! `keyward audit verify`: check the hash chain of keywardd's audit log, offline.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use keyward_sdk::audit::ChainVerifier;

use crate::output::{EXIT_INVALID, EXIT_OK, Failure, quoted, read_input, write_stdout};

pub const AFTER_HELP: &str = "\
Each record names the SHA-256 of the one before it, so an edited, removed, reordered or
truncated record breaks the chain: the first bad line is named and the exit status is 1.
Rotated files verify together, oldest first.

--json prints {\"valid\", \"records\", \"head\", \"error\": {\"file\", \"line\", \"reason\"}} instead.

Examples:
  keyward audit verify /var/log/keyward/audit.log
  keyward audit verify audit.log.1 audit.log.2 audit.log";

/// `keyward audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain of audit log files (no agent needed)
    #[command(after_help = AFTER_HELP)]
    Verify(VerifyArgs),
}

/// `keyward audit verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The log files, oldest first (rotated files `<path>.1`, `<path>.2`, ..., then `<path>`)
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct AuditJson {
    valid: bool,
    records: usize,
    /// The hex SHA-256 of the last record verified.
    head: String,
    error: Option<AuditErrorJson>,
}

#[derive(serde::Serialize)]
struct AuditErrorJson {
    file: String,
    line: usize,
    reason: String,
}

/// Runs `keyward audit ...`; needs no agent.
pub fn run(command: AuditCommand) -> Result<i32, Failure> {
    match command {
        AuditCommand::Verify(args) => verify(&args),
    }
}

fn verify(args: &VerifyArgs) -> Result<i32, Failure> {
    let mut verifier = ChainVerifier::new();
    for file in &args.files {
        let contents = read_input(file, "audit log")?;
        if let Err(error) = verifier.push_file(&contents) {
            if args.json {
                crate::json::print(&AuditJson {
                    valid: false,
                    records: verifier.records(),
                    head: verifier.head(),
                    error: Some(AuditErrorJson {
                        file: file.display().to_string(),
                        line: error.line,
                        reason: error.reason,
                    }),
                })?;
            } else {
                eprintln!(
                    "audit log INVALID: {} line {}: {}",
                    quoted(file),
                    error.line,
                    error.reason
                );
            }
            return Ok(EXIT_INVALID);
        }
    }
    if args.json {
        crate::json::print(&AuditJson {
            valid: true,
            records: verifier.records(),
            head: verifier.head(),
            error: None,
        })?;
    } else {
        write_stdout(format!("audit log OK: {} records\n", verifier.records()).as_bytes())?;
    }
    Ok(EXIT_OK)
}
