//! `keyward doctor`'s checks of the agent's files: the socket and its directory, the state
//! directory, the plugin executables, the config (as the agent checked it) and the audit log.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use keyward_sdk::AgentDetails;
use keyward_sdk::audit::ChainVerifier;

use crate::cmd::doctor::{Level, Report};

/// The uids that may own the agent's files: this user, root, and `KEYWARD_AGENT_UID` (a
/// system agent running as its own user).
fn trusted_uids() -> Vec<u32> {
    let mut uids = vec![rustix::process::getuid().as_raw(), 0];
    if let Some(uid) = std::env::var("KEYWARD_AGENT_UID")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        uids.push(uid);
    }
    uids
}

pub(crate) fn check_socket(report: &mut Report, socket: &Path, details: Option<&AgentDetails>) {
    let shown = socket.display();
    let trusted = trusted_uids();
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        Err(e) => {
            report.add(
                "socket",
                Level::Problem,
                format!("{shown}: {e}; start keywardd (or set KEYWARD_SOCK to its socket)"),
            );
            return;
        }
    };
    let mut found = Vec::new();
    let mut level = Level::Ok;
    if !meta.file_type().is_socket() {
        found.push(format!("{shown} is not a socket"));
        level = Level::Problem;
    }
    if !trusted.contains(&meta.uid()) {
        found.push(format!(
            "{shown} belongs to uid {}, not to you, root or KEYWARD_AGENT_UID",
            meta.uid()
        ));
        level = Level::Problem;
    }
    let shared = details.is_some_and(|d| d.socket_shared);
    if meta.mode() & 0o077 != 0 && !shared && details.is_some() {
        found.push(format!(
            "{shown} is mode {:04o} but the agent serves no other uid (allow_uids); restart keywardd to reset it to 0600",
            meta.mode() & 0o7777
        ));
        level = level.max(Level::Warning);
    }
    let dir = socket.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(dir) {
        Ok(dir_meta) => {
            let dir_shown = dir.display();
            if !trusted.contains(&dir_meta.uid()) {
                found.push(format!(
                    "its directory {dir_shown} belongs to uid {}; another user could replace the socket",
                    dir_meta.uid()
                ));
                level = Level::Problem;
            }
            if dir_meta.mode() & 0o022 != 0 && dir_meta.mode() & 0o1000 == 0 {
                found.push(format!(
                    "its directory {dir_shown} is writable by group or others (mode {:04o}); run `chmod go-w {dir_shown}`",
                    dir_meta.mode() & 0o7777
                ));
                level = Level::Problem;
            }
        }
        Err(e) => {
            found.push(format!("cannot read its directory: {e}"));
            level = Level::Problem;
        }
    }
    if found.is_empty() {
        report.add(
            "socket",
            Level::Ok,
            format!(
                "{shown} and its directory belong to you (or root) and only you can write them"
            ),
        );
    } else {
        report.add("socket", level, found.join("; "));
    }
}

pub(crate) fn check_files(report: &mut Report, details: &AgentDetails) {
    if details.config_file.is_empty() {
        report.add(
            "config",
            Level::Ok,
            "the agent runs on its embedded default (no config file)",
        );
    } else if !details.config_error.is_empty() {
        report.add(
            "config",
            Level::Problem,
            format!(
                "{} no longer passes the checks a reload or restart makes: {}",
                details.config_file, details.config_error
            ),
        );
    } else if details.config_checked {
        report.add(
            "config",
            Level::Ok,
            format!(
                "{} parses and every backend's plugin accepts its settings",
                details.config_file
            ),
        );
    }
    check_state_dir(report, Path::new(&details.state_dir));
    check_audit(report, details);
}

fn mode_problem(path: &Path, meta: &std::fs::Metadata, private: u32) -> Option<String> {
    let shown = path.display();
    if !trusted_uids().contains(&meta.uid()) {
        return Some(format!(
            "{shown} belongs to uid {}, not to the agent's user",
            meta.uid()
        ));
    }
    (meta.mode() & 0o077 != 0).then(|| {
        format!(
            "{shown} is mode {:04o}; run `chmod {private:o} {shown}`",
            meta.mode() & 0o7777
        )
    })
}

fn check_state_dir(report: &mut Report, dir: &Path) {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) => {
            report.add("state", Level::Problem, format!("{}: {e}", dir.display()));
            return;
        }
    };
    if let Some(problem) = mode_problem(dir, &meta, 0o700) {
        report.add("state", Level::Problem, problem);
        return;
    }
    let mut files = vec![dir.join("keys.json")];
    if let Ok(entries) = std::fs::read_dir(dir.join("certs")) {
        files.extend(entries.flatten().map(|e| e.path()));
    }
    let loose: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let meta = std::fs::symlink_metadata(path).ok()?;
            mode_problem(path, &meta, 0o600)
        })
        .collect();
    if loose.is_empty() {
        report.add(
            "state",
            Level::Ok,
            format!("{} and its files are private to the agent", dir.display()),
        );
    } else {
        report.add("state", Level::Warning, loose.join("; "));
    }
}

/// The audit log's files, oldest first: `<path>.1`, `<path>.2`, ..., `<path>`.
fn audit_files(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for n in 1.. {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        let rotated = PathBuf::from(name);
        if !rotated.exists() {
            break;
        }
        files.push(rotated);
    }
    files.push(path.to_path_buf());
    files
}

fn check_audit(report: &mut Report, details: &AgentDetails) {
    if details.audit_log.is_empty() {
        report.add(
            "audit",
            Level::Skipped,
            "the agent keeps no audit log ([audit])",
        );
        return;
    }
    let mut verifier = ChainVerifier::new();
    let mut head_seen = details.audit_seq == 0;
    for file in audit_files(Path::new(&details.audit_log)) {
        let contents = match std::fs::read(&file) {
            Ok(contents) => contents,
            Err(e) => {
                report.add(
                    "audit",
                    Level::Skipped,
                    format!("cannot read {}: {e}", file.display()),
                );
                return;
            }
        };
        for (index, line) in contents.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            if let Err(e) = verifier.push_line(line, index + 1) {
                report.add(
                    "audit",
                    Level::Problem,
                    format!(
                        "the hash chain breaks at {} line {}: {}; the log was changed after it was written (keep the file as evidence)",
                        file.display(),
                        e.line,
                        e.reason
                    ),
                );
                return;
            }
            if verifier.records() as u64 == details.audit_seq {
                head_seen = verifier.head() == details.audit_head;
                if !head_seen {
                    report.add(
                        "audit",
                        Level::Problem,
                        format!(
                            "record {} in {} is not the one the agent wrote (its hash differs from the agent's chain head {}); the log was rewritten",
                            details.audit_seq,
                            file.display(),
                            details.audit_head
                        ),
                    );
                    return;
                }
            }
        }
    }
    if !head_seen {
        report.add(
            "audit",
            Level::Problem,
            format!(
                "the log holds {} records but the agent has written {}: records were removed",
                verifier.records(),
                details.audit_seq
            ),
        );
        return;
    }
    report.add(
        "audit",
        Level::Ok,
        format!(
            "{}: {} records, the hash chain verifies up to the agent's head",
            details.audit_log,
            verifier.records()
        ),
    );
}

pub(crate) fn check_plugin(report: &mut Report, kind: &str, dirs: &[PathBuf]) {
    let binary = format!("keyward-plugin-{kind}");
    let check = format!("plugin {kind}");
    let Some(path) = dirs.iter().map(|d| d.join(&binary)).find(|p| p.exists()) else {
        report.add(
            check,
            Level::Problem,
            format!(
                "{binary} is in none of {}; install it (scripts/install, or the keyward-plugins package)",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return;
    };
    let shown = path.display();
    let problem = match std::fs::metadata(&path) {
        Err(e) => Some(format!("{shown}: {e}")),
        Ok(meta) if !meta.is_file() => Some(format!("{shown} is not a regular file")),
        Ok(meta) if meta.mode() & 0o111 == 0 => Some(format!(
            "{shown} is not executable; run `chmod 755 {shown}`"
        )),
        Ok(meta) if !trusted_uids().contains(&meta.uid()) => Some(format!(
            "{shown} belongs to uid {}; keywardd runs only plugins owned by root or its own uid",
            meta.uid()
        )),
        Ok(meta) if meta.mode() & 0o022 != 0 => Some(format!(
            "{shown} is writable by group or others (mode {:04o}); run `chmod go-w {shown}`",
            meta.mode() & 0o7777
        )),
        Ok(_) => None,
    };
    match problem {
        Some(problem) => report.add(check, Level::Problem, problem),
        None => report.add(
            check,
            Level::Ok,
            format!("{shown} is present and only its owner can change it"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_audit_files_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        for n in [1, 2] {
            std::fs::write(dir.path().join(format!("audit.log.{n}")), "").unwrap();
        }
        let files = audit_files(&log);
        assert_eq!(
            files,
            vec![
                dir.path().join("audit.log.1"),
                dir.path().join("audit.log.2"),
                log
            ]
        );
    }
}
