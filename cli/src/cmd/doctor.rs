//! `keyward doctor`: checks that the agent and its files are as they should be, each check
//! `ok`, `warning`, `problem` or `skipped`, with what to do.
//!
//! Checks: the agent answers; the socket and its directory (owner, modes); the config file
//! parses and every backend's settings check out (the agent parses it again and has each
//! plugin check its settings); the state directory and its files (owner, modes); the plugin
//! executables (present, owned by root or the agent's uid, not writable by others); each
//! backend (up, locked, down, and what it reports, e.g. a key file others can read); the named
//! keys resolve; certificate chains expiring within `--days`; the audit log's hash chain
//! verifies and ends at the agent's chain head. File checks need the agent's admin
//! rights (its uid or `admin_uids`): others get them `skipped`.

use std::path::PathBuf;

use clap::Args;
use keyward_sdk::{BackendState, Client, StatusResponse};
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cmd::doctor_files::{check_files, check_plugin, check_socket};
use crate::cmd::status::{EXIT_NO_AGENT, EXIT_PROBLEMS, EXIT_WARNINGS, state_name};
use crate::cmd::{Agent, connect};
use crate::output::{EXIT_OK, Failure, write_stdout};

pub const AFTER_HELP: &str = "\
Each check is ok, warning, problem or skipped, with what to do. Checks of the agent's files
(config, state directory, plugins, audit log) need the agent's admin rights: run doctor as the
agent's user (or a uid in admin_uids) on the agent's machine.

Exit status: 0 all ok; 6 warnings only (e.g. a certificate expiring within --days); 7 a
problem; 2 no agent (the local checks still run).

Examples:
  keyward doctor
  keyward doctor --days 60 --json | jq '.checks[] | select(.status != \"ok\")'";

/// `keyward doctor`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Warn about certificates that expire within this many days
    #[arg(long, value_name = "N", default_value_t = 30)]
    days: u32,
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// Not checked (no agent, not an admin, not applicable).
    Skipped,
    /// Needs attention soon.
    Warning,
    /// Broken, or unsafe.
    Problem,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Skipped => "skipped",
            Level::Warning => "warning",
            Level::Problem => "problem",
        }
    }
}

/// One check's outcome (`--json`: `{"check", "status", "message"}`).
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked: `agent`, `socket`, `config`, `state`, `plugin <type>`,
    /// `backend <name>`, `key <id>`, `certificate <id>`, `audit`.
    pub check: String,
    /// Its outcome.
    pub status: Level,
    /// What was found, and what to do.
    pub message: String,
}

#[derive(Debug, Default)]
pub(crate) struct Report {
    checks: Vec<Check>,
}

impl Report {
    pub(crate) fn add(
        &mut self,
        check: impl Into<String>,
        status: Level,
        message: impl Into<String>,
    ) {
        self.checks.push(Check {
            check: check.into(),
            status,
            message: message.into(),
        });
    }

    fn worst(&self) -> Level {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Level::Ok)
    }
}

#[derive(Debug, Serialize)]
struct DoctorJson<'a> {
    checks: &'a [Check],
    /// `ok`, `warnings`, `problems` or `no_agent`: what the exit status says.
    result: &'static str,
}

/// Runs `keyward doctor`.
pub async fn run(agent: &Agent, args: DoctorArgs) -> Result<i32, Failure> {
    let mut report = Report::default();
    let remote = agent.address.to_string_lossy().starts_with("https://");
    let client = match connect(agent).await {
        Ok(client) => Some(client),
        Err(failure) => {
            report.add("agent", Level::Problem, failure.message());
            None
        }
    };
    let status = match &client {
        Some(client) => match client.status(true).await {
            Ok(status) => {
                report.add(
                    "agent",
                    Level::Ok,
                    format!(
                        "keywardd {} (pid {}) answers on {}",
                        status.version, status.pid, status.socket
                    ),
                );
                Some(status)
            }
            Err(e) => {
                report.add("agent", Level::Problem, Failure::from(e).message());
                None
            }
        },
        None => None,
    };
    let details = status.as_ref().and_then(|s| s.details.as_ref());
    if !remote {
        check_socket(&mut report, &agent.address, details);
    }
    match details {
        Some(details) => check_files(&mut report, details),
        None => {
            let why = if status.is_some() {
                "you are not an admin of this agent (its uid or admin_uids)"
            } else {
                "no agent to ask where its files are"
            };
            report.add(
                "files",
                Level::Skipped,
                format!("config, state, plugins and audit log not checked: {why}"),
            );
        }
    }
    if let Some(status) = &status {
        check_backends(&mut report, status);
    }
    if let Some(client) = &client
        && status.is_some()
    {
        check_certificates(&mut report, client, args.days).await;
    }
    let code = if client.is_none() || status.is_none() {
        EXIT_NO_AGENT
    } else {
        match report.worst() {
            Level::Ok | Level::Skipped => EXIT_OK,
            Level::Warning => EXIT_WARNINGS,
            Level::Problem => EXIT_PROBLEMS,
        }
    };
    if args.json {
        let result = match code {
            EXIT_OK => "ok",
            EXIT_WARNINGS => "warnings",
            EXIT_NO_AGENT => "no_agent",
            _ => "problems",
        };
        crate::json::print(&DoctorJson {
            checks: &report.checks,
            result,
        })?;
    } else {
        let mut text = String::new();
        for check in &report.checks {
            text.push_str(&format!(
                "{:<8} {}: {}\n",
                check.status.word(),
                check.check,
                check.message
            ));
        }
        write_stdout(text.as_bytes())?;
    }
    Ok(code)
}

fn check_backends(report: &mut Report, status: &StatusResponse) {
    let plugin_dirs: Vec<PathBuf> = status
        .details
        .iter()
        .flat_map(|d| d.plugin_dirs.iter().map(PathBuf::from))
        .collect();
    let mut types_checked = Vec::new();
    for backend in &status.backends {
        let name = format!("backend {}", backend.name);
        let state = backend.state();
        let (level, message) = match state {
            BackendState::Up => (
                Level::Ok,
                if backend.keys_listed {
                    format!("up, {} key(s)", backend.key_count)
                } else {
                    "up".into()
                },
            ),
            BackendState::Locked | BackendState::Starting => (
                Level::Warning,
                format!("{}: {}", state_name(state), backend.reason),
            ),
            _ => (
                Level::Problem,
                format!("{}: {}", state_name(state), backend.reason),
            ),
        };
        let restarts = if backend.restarts > 0 {
            format!(
                " (its plugin was restarted {} time(s); the agent's log says why)",
                backend.restarts
            )
        } else {
            String::new()
        };
        report.add(name.clone(), level, format!("{message}{restarts}"));
        for warning in &backend.warnings {
            report.add(name.clone(), Level::Warning, warning.clone());
        }
        let kind = &backend.backend_type;
        if !backend.in_process
            && kind != "external"
            && status.details.is_some()
            && !types_checked.contains(kind)
        {
            types_checked.push(kind.clone());
            check_plugin(report, kind, &plugin_dirs);
        }
    }
    if let Some(details) = &status.details {
        for problem in &details.key_problems {
            report.add(
                format!("key {}", problem.key_id),
                Level::Problem,
                problem.problem.clone(),
            );
        }
    }
}

async fn check_certificates(report: &mut Report, client: &Client, days: u32) {
    let keys = match client.list_keys().await {
        Ok(keys) => keys,
        Err(e) => {
            report.add(
                "certificates",
                Level::Problem,
                format!("cannot list the keys: {}", Failure::from(e).message()),
            );
            return;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let horizon = now + i64::from(days) * 86_400;
    let mut checked = 0;
    for key in keys.iter().filter(|k| k.has_certificate) {
        let check = format!("certificate {}", key.key_id);
        let chain = match client.public_key(&key.key_id).await {
            Ok(public) => public.certificate_chain,
            Err(e) => {
                report.add(check, Level::Problem, Failure::from(e).message());
                continue;
            }
        };
        checked += 1;
        let mut worst: Option<(Level, String)> = None;
        for der in &chain {
            let Ok((_, cert)) = X509Certificate::from_der(der) else {
                worst = Some((
                    Level::Problem,
                    "a certificate of its chain does not parse".into(),
                ));
                break;
            };
            let not_after = cert.validity().not_after.timestamp();
            let subject = cert.subject().to_string();
            let when = crate::cmd::envelope::rfc3339(not_after);
            let found = if not_after < now {
                Some((
                    Level::Problem,
                    format!(
                        "{subject} expired on {when}; issue or attach a new chain (`keyward cert issue --key {}` or `keyward cert attach`)",
                        key.key_id
                    ),
                ))
            } else if not_after < horizon {
                Some((
                    Level::Warning,
                    format!(
                        "{subject} expires on {when} (in {} days); renew it (`keyward cert issue --key {}` or `keyward cert attach`)",
                        (not_after - now) / 86_400,
                        key.key_id
                    ),
                ))
            } else {
                None
            };
            if let Some(found) = found
                && worst.as_ref().is_none_or(|(level, _)| found.0 > *level)
            {
                worst = Some(found);
            }
        }
        match worst {
            Some((level, message)) => report.add(check, level, message),
            None => report.add(
                check,
                Level::Ok,
                format!("every certificate of its chain is valid for more than {days} days"),
            ),
        }
    }
    if checked == 0 {
        report.add(
            "certificates",
            Level::Ok,
            "no key has a certificate chain attached",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_check_decides() {
        let mut report = Report::default();
        report.add("a", Level::Ok, "");
        report.add("b", Level::Skipped, "");
        assert_eq!(report.worst(), Level::Skipped);
        report.add("c", Level::Warning, "");
        assert_eq!(report.worst(), Level::Warning);
        report.add("d", Level::Problem, "");
        assert_eq!(report.worst(), Level::Problem);
    }
}
