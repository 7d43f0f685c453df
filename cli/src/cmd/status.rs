//! `keyward status`: is the agent there, and how are its backends.
//!
//! Exit status: 0 every backend up; [`EXIT_WARNINGS`] a backend is locked or starting, or
//! reports something that needs attention; [`EXIT_PROBLEMS`] a backend is down; the no-agent
//! code when nothing answers on the socket (status still prints, and says so).

use clap::Args;
use keyward_sdk::{BackendState, BackendStatus, StatusResponse};
use serde::Serialize;

use crate::cmd::{Agent, connect};
pub use crate::output::{EXIT_NO_AGENT, EXIT_PROBLEMS, EXIT_WARNINGS};
use crate::output::{EXIT_OK, Failure, write_stdout};

pub const AFTER_HELP: &str = "\
Shows whether the agent runs (version, pid, uptime, socket), and each backend: up, down,
locked (it needs `keyward yubikey unlock`) or starting, why, how many keys it lists and how
often its plugin process was restarted. The agent's admins (its own uid and admin_uids) also
see where it keeps its config, state, audit log and metrics.

Exit status: 0 all up; 6 something needs attention (a backend locked or starting, a warning);
7 a backend is down; 2 no agent (the output says so).

Examples:
  keyward status
  keyward status --json | jq -r '.backends[] | select(.state != \"up\") | .name'";

/// `keyward status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// The `--json` shape of one backend.
#[derive(Debug, Serialize)]
pub struct BackendJson {
    pub name: String,
    #[serde(rename = "type")]
    pub backend_type: String,
    /// `up`, `down`, `locked`, `starting`.
    pub state: &'static str,
    /// Why it is not up; empty when up.
    pub reason: String,
    pub in_process: bool,
    pub restarts: u32,
    /// `null` when it did not list its keys.
    pub key_count: Option<u32>,
    pub warnings: Vec<String>,
}

impl From<&BackendStatus> for BackendJson {
    fn from(b: &BackendStatus) -> Self {
        BackendJson {
            name: b.name.clone(),
            backend_type: b.backend_type.clone(),
            state: state_name(b.state()),
            reason: b.reason.clone(),
            in_process: b.in_process,
            restarts: b.restarts,
            key_count: b.keys_listed.then_some(b.key_count),
            warnings: b.warnings.clone(),
        }
    }
}

/// The `--json` shape of `keyward status`.
#[derive(Debug, Serialize)]
struct StatusJson {
    /// `running` or `down`.
    agent: &'static str,
    socket: String,
    /// Why the agent could not be reached (`agent` = `down`).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime_seconds: Option<u64>,
    backends: Vec<BackendJson>,
    /// Admins only; `null` otherwise.
    details: Option<DetailsJson>,
    /// `ok`, `warnings`, `problems` or `no_agent`: what the exit status says.
    result: &'static str,
}

/// Where the agent keeps its files (admins only).
#[derive(Debug, Serialize)]
pub struct DetailsJson {
    pub config_file: Option<String>,
    pub state_dir: String,
    pub plugin_dirs: Vec<String>,
    pub audit_log: Option<String>,
    pub audit_seq: u64,
    pub socket_shared: bool,
    pub metrics_listen: Option<String>,
    pub log_format: String,
}

impl From<&keyward_sdk::AgentDetails> for DetailsJson {
    fn from(d: &keyward_sdk::AgentDetails) -> Self {
        let some = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
        DetailsJson {
            config_file: some(&d.config_file),
            state_dir: d.state_dir.clone(),
            plugin_dirs: d.plugin_dirs.clone(),
            audit_log: some(&d.audit_log),
            audit_seq: d.audit_seq,
            socket_shared: d.socket_shared,
            metrics_listen: some(&d.metrics_listen),
            log_format: d.log_format.clone(),
        }
    }
}

/// The name of a backend state.
pub fn state_name(state: BackendState) -> &'static str {
    match state {
        BackendState::Up => "up",
        BackendState::Down => "down",
        BackendState::Locked => "locked",
        BackendState::Starting => "starting",
        BackendState::Unspecified => "unknown",
    }
}

/// The exit status a status answer calls for.
pub fn exit_code(status: &StatusResponse) -> i32 {
    let states: Vec<BackendState> = status.backends.iter().map(|b| b.state()).collect();
    if states
        .iter()
        .any(|s| matches!(s, BackendState::Down | BackendState::Unspecified))
    {
        EXIT_PROBLEMS
    } else if states
        .iter()
        .any(|s| matches!(s, BackendState::Locked | BackendState::Starting))
        || status.backends.iter().any(|b| !b.warnings.is_empty())
    {
        EXIT_WARNINGS
    } else {
        EXIT_OK
    }
}

fn result_name(code: i32) -> &'static str {
    match code {
        EXIT_OK => "ok",
        EXIT_WARNINGS => "warnings",
        EXIT_NO_AGENT => "no_agent",
        _ => "problems",
    }
}

/// `2h 3m` for a number of seconds (minutes precision past an hour).
pub fn uptime(seconds: u64) -> String {
    let rounded = if seconds >= 3600 {
        seconds - seconds % 60
    } else {
        seconds
    };
    humantime::format_duration(std::time::Duration::from_secs(rounded)).to_string()
}

/// Runs `keyward status`.
pub async fn run(agent: &Agent, args: StatusArgs) -> Result<i32, Failure> {
    let socket = agent.address.display().to_string();
    let client = match connect(agent).await {
        Ok(client) => client,
        Err(failure) => {
            let reason = failure.message().to_string();
            if args.json {
                crate::json::print(&StatusJson {
                    agent: "down",
                    socket,
                    error: Some(reason),
                    version: None,
                    pid: None,
                    started_at: None,
                    uptime_seconds: None,
                    backends: Vec::new(),
                    details: None,
                    result: "no_agent",
                })?;
            } else {
                write_stdout(format!("agent: not running\n  {reason}\n").as_bytes())?;
            }
            return Ok(EXIT_NO_AGENT);
        }
    };
    let status = client.status(false).await?;
    let code = exit_code(&status);
    if args.json {
        crate::json::print(&StatusJson {
            agent: "running",
            socket: status.socket.clone(),
            error: None,
            version: Some(status.version.clone()),
            pid: Some(status.pid),
            started_at: crate::json::time(status.started_at),
            uptime_seconds: Some(status.uptime_seconds),
            backends: status.backends.iter().map(BackendJson::from).collect(),
            details: status.details.as_ref().map(DetailsJson::from),
            result: result_name(code),
        })?;
    } else {
        write_stdout(text(&status).as_bytes())?;
    }
    Ok(code)
}

/// `keyward status` as text.
fn text(status: &StatusResponse) -> String {
    let mut out = format!(
        "agent: running (keywardd {}, pid {}, up {})\nsocket: {}\n",
        status.version,
        status.pid,
        uptime(status.uptime_seconds),
        status.socket
    );
    if let Some(d) = &status.details {
        let or = |s: &str, none: &str| {
            if s.is_empty() {
                none.to_string()
            } else {
                s.to_string()
            }
        };
        out.push_str(&format!(
            "config: {}\nstate: {}\naudit log: {}\nmetrics: {}\nlog format: {}\n",
            or(&d.config_file, "(embedded default)"),
            d.state_dir,
            if d.audit_log.is_empty() {
                "off".to_string()
            } else {
                format!("{} ({} records)", d.audit_log, d.audit_seq)
            },
            or(&d.metrics_listen, "off"),
            d.log_format
        ));
    }
    out.push_str("backends:\n");
    let header = ["NAME", "TYPE", "STATE", "KEYS", "RESTARTS", "RUNS"].map(String::from);
    let rows: Vec<[String; 6]> = status
        .backends
        .iter()
        .map(|b| {
            [
                b.name.clone(),
                b.backend_type.clone(),
                state_name(b.state()).to_string(),
                if b.keys_listed {
                    b.key_count.to_string()
                } else {
                    "-".into()
                },
                if b.in_process {
                    "-".into()
                } else {
                    b.restarts.to_string()
                },
                if b.in_process {
                    "in keywardd".into()
                } else {
                    "plugin process".into()
                },
            ]
        })
        .collect();
    out.push_str(&crate::cmd::table(&header, &rows, "  "));
    for b in &status.backends {
        if !b.reason.is_empty() {
            out.push_str(&format!(
                "  {} is {}: {}\n",
                b.name,
                state_name(b.state()),
                b.reason
            ));
        }
        for warning in &b.warnings {
            out.push_str(&format!("  {}: warning: {warning}\n", b.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(state: BackendState) -> BackendStatus {
        BackendStatus {
            name: "b".into(),
            backend_type: "local".into(),
            state: state as i32,
            ..BackendStatus::default()
        }
    }

    #[test]
    fn the_exit_status_follows_the_worst_backend() {
        let mut status = StatusResponse::default();
        assert_eq!(exit_code(&status), EXIT_OK);
        status.backends = vec![backend(BackendState::Up), backend(BackendState::Locked)];
        assert_eq!(exit_code(&status), EXIT_WARNINGS);
        status.backends.push(backend(BackendState::Down));
        assert_eq!(exit_code(&status), EXIT_PROBLEMS);
        let mut warned = backend(BackendState::Up);
        warned.warnings.push("chmod 600 k.pem".into());
        status.backends = vec![warned];
        assert_eq!(exit_code(&status), EXIT_WARNINGS);
    }

    #[test]
    fn uptimes_read_well() {
        assert_eq!(uptime(59), "59s");
        assert_eq!(uptime(3 * 3600 + 125), "3h 2m");
    }
}
