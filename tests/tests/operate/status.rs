//! `keyward status` and `keyward doctor` against a real keywardd: green, then red (a backend
//! down, a plugin killed, a key file others can read, a certificate expiring in 10 days, an
//! edited audit log, no agent at all), each read back from `--json` and from the exit code.

use std::fs;
use std::time::Duration;

use keyward_tests::cli::{assert_ok, exit};
use keyward_tests::plugins::plugin_processes;
use keyward_tests::users::{CliCopy, NOBODY};
use keyward_tests::wait::until;
use keyward_tests::{DaemonBuilder, run_cli, set_mode, stdout_text};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

use crate::common::{
    EXIT_PROBLEMS, EXIT_WARNINGS, assert_exit, doctor_check, doctor_findings, generate, json_out,
    path,
};

/// `keyward status --json`, with its exit code.
fn status(daemon: &keyward_tests::TestDaemon) -> (Value, Option<i32>) {
    let output = run_cli(daemon, ["status", "--json"]);
    (json_out(&output, "status --json"), output.status.code())
}

/// The backend named `name` in a `status --json` answer.
fn backend<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["backends"]
        .as_array()
        .expect("status --json has backends")
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("status has no backend {name:?}: {status:#}"))
}

#[tokio::test]
async fn status_green_then_a_backend_down_a_plugin_killed_and_no_agent() {
    let builder = DaemonBuilder::new();
    let iso_dir = builder.dir().join("iso-keys");
    let spare_dir = builder.dir().join("spare-keys");
    let mut daemon = builder
        .extra_toml(&format!(
            "[[backend]]\nname = \"iso\"\ntype = \"local\"\nisolation = \"process\"\npath = \"{}\"\n\
             [[backend]]\nname = \"spare\"\ntype = \"local\"\npath = \"{}\"\n",
            path(&iso_dir),
            path(&spare_dir)
        ))
        .start()
        .await;
    generate(&daemon, "local", "ec-p256", "op-a");
    generate(&daemon, "local", "ed25519", "op-b");
    generate(&daemon, "iso", "ec-p256", "op-iso");

    // Green: every backend up, the key counts, the agent's own facts.
    let text = run_cli(&daemon, ["status"]);
    assert_ok(&text, "status");
    let shown = stdout_text(&text);
    for needle in ["running", "local", "iso", "spare", "up"] {
        assert!(
            shown.contains(needle),
            "status text lacks {needle:?}:\n{shown}"
        );
    }
    let (green, code) = status(&daemon);
    assert_eq!(code, Some(0), "{green:#}");
    assert_eq!(green["agent"], "running");
    assert_eq!(green["result"], "ok");
    assert_eq!(green["pid"], daemon.pid());
    assert_eq!(green["version"], env!("CARGO_PKG_VERSION"));
    assert!(green["uptime_seconds"].is_u64(), "{green:#}");
    assert_eq!(green["socket"], path(daemon.socket()));
    for (name, keys, in_process) in [("local", 2, true), ("iso", 1, false), ("spare", 0, true)] {
        let b = backend(&green, name);
        assert_eq!(b["state"], "up", "{b:#}");
        assert_eq!(b["key_count"], keys, "{b:#}");
        assert_eq!(b["in_process"], in_process, "{b:#}");
        assert_eq!(b["restarts"], 0, "{b:#}");
    }
    // We are the agent's uid, so an admin: we see where it keeps its files.
    assert_eq!(
        green["details"]["config_file"],
        path(daemon.config_path()),
        "{green:#}"
    );

    // A plugin killed: the agent restarts it and status counts the restart.
    let plugins = plugin_processes(&daemon, "keyward-plugin-local");
    assert_eq!(
        plugins.len(),
        1,
        "one plugin process for `iso`: {plugins:?}"
    );
    kill_process(
        Pid::from_raw(plugins[0].pid as i32).expect("pid"),
        Signal::KILL,
    )
    .expect("kill -9 the iso plugin");
    let restarted = until(
        "status shows the iso plugin restarted",
        Duration::from_secs(30),
        || {
            let (now, _) = status(&daemon);
            let iso = backend(&now, "iso").clone();
            (iso["restarts"] == 1 && iso["state"] == "up")
                .then_some(iso)
                .ok_or_else(|| format!("{now:#}"))
        },
    );
    assert_eq!(restarted["key_count"], 1, "{restarted:#}");

    // A backend down: its key directory replaced by a file, so it cannot list its keys.
    fs::remove_dir_all(&spare_dir).expect("remove spare-keys");
    fs::write(&spare_dir, b"not a directory").expect("write a file in its place");
    let (red, code) = status(&daemon);
    assert_eq!(code, Some(EXIT_PROBLEMS), "{red:#}");
    assert_eq!(red["result"], "problems");
    let spare = backend(&red, "spare");
    assert_eq!(spare["state"], "down", "{spare:#}");
    assert!(
        spare["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("list its keys"),
        "{spare:#}"
    );
    assert_eq!(backend(&red, "local")["state"], "up");
    let text = run_cli(&daemon, ["status"]);
    assert_exit(&text, EXIT_PROBLEMS, "status with a backend down");
    assert!(
        stdout_text(&text).contains("down"),
        "{}",
        stdout_text(&text)
    );

    // No agent: status still answers, says so, and exits with the no-agent code.
    daemon.terminate().await;
    let down = run_cli(&daemon, ["status"]);
    assert_exit(&down, exit::NO_AGENT, "status with no agent");
    assert!(
        stdout_text(&down).contains("not running"),
        "{}",
        stdout_text(&down)
    );
    let (gone, code) = status(&daemon);
    assert_eq!(code, Some(exit::NO_AGENT), "{gone:#}");
    assert_eq!(gone["agent"], "down");
    assert_eq!(gone["result"], "no_agent");
    assert!(gone["error"].is_string(), "{gone:#}");
}

#[tokio::test]
async fn doctor_green_then_a_loose_key_file_an_expiring_certificate_and_an_edited_audit_log() {
    let builder = DaemonBuilder::new();
    let audit = builder.dir().join("audit").join("audit.log");
    let daemon = builder
        .top_level(&format!("[audit]\npath = \"{}\"\n", path(&audit)))
        .start()
        .await;
    generate(&daemon, "local", "ec-p256", "doc-ec");
    let issued = run_cli(
        &daemon,
        [
            "cert",
            "issue",
            "--key",
            "doc-ec",
            "--subject",
            "CN=doctor",
            "--days",
            "365",
        ],
    );
    assert_ok(&issued, "cert issue (365 days)");
    let sign = run_cli(
        &daemon,
        ["sign", "--key", "doc-ec", "--digest", &"ab".repeat(32)],
    );
    assert_ok(&sign, "sign");

    let doctor = |what: &str| {
        let output = run_cli(&daemon, ["doctor", "--json"]);
        let report = json_out(&output, what);
        (report, output.status.code())
    };
    let (green, code) = doctor("doctor (green)");
    assert_eq!(code, Some(0), "{green:#}");
    assert_eq!(green["result"], "ok");
    assert!(doctor_findings(&green).is_empty(), "{green:#}");
    for name in [
        "agent",
        "socket",
        "config",
        "state",
        "audit",
        "backend local",
    ] {
        assert_eq!(
            doctor_check(&green, name)["status"],
            "ok",
            "{name}: {green:#}"
        );
    }
    assert_eq!(doctor_check(&green, "certificate doc-ec")["status"], "ok");
    let text = run_cli(&daemon, ["doctor"]);
    assert_ok(&text, "doctor (text)");

    // A key file that others can read: a warning that says how to fix it.
    let key_file = daemon.keys_dir().join("doc-ec.pem");
    set_mode(&key_file, 0o644);
    let (loose, code) = doctor("doctor (key file 0644)");
    assert_eq!(code, Some(EXIT_WARNINGS), "{loose:#}");
    assert_eq!(loose["result"], "warnings");
    let findings = doctor_findings(&loose);
    assert!(
        findings.iter().any(|c| {
            let message = c["message"].as_str().unwrap_or_default();
            message.contains(path(&key_file)) && message.contains("chmod 600")
        }),
        "{loose:#}"
    );
    set_mode(&key_file, 0o600);

    // A certificate that expires in 10 days: a warning under the default 30, none with --days 5.
    generate(&daemon, "local", "ec-p256", "doc-short");
    let issued = run_cli(
        &daemon,
        [
            "cert",
            "issue",
            "--key",
            "doc-short",
            "--subject",
            "CN=short",
            "--days",
            "10",
        ],
    );
    assert_ok(&issued, "cert issue (10 days)");
    let (expiring, code) = doctor("doctor (a certificate expiring in 10 days)");
    assert_eq!(code, Some(EXIT_WARNINGS), "{expiring:#}");
    let check = doctor_check(&expiring, "certificate doc-short");
    assert_eq!(check["status"], "warning", "{check:#}");
    assert!(
        check["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expires"),
        "{check:#}"
    );
    let output = run_cli(&daemon, ["doctor", "--json", "--days", "5"]);
    assert_exit(&output, 0, "doctor --days 5");

    // An edited audit log: the chain no longer verifies, a problem.
    let text = fs::read_to_string(&audit).expect("read the audit log");
    let edited = text.replacen("\"doc-ec\"", "\"doc-xx\"", 1);
    assert_ne!(edited, text, "the audit log names doc-ec");
    fs::write(&audit, edited).expect("edit the audit log");
    let (broken, code) = doctor("doctor (an edited audit log)");
    assert_eq!(code, Some(EXIT_PROBLEMS), "{broken:#}");
    assert_eq!(broken["result"], "problems");
    assert_eq!(
        doctor_check(&broken, "audit")["status"],
        "problem",
        "{broken:#}"
    );
}

#[tokio::test]
async fn doctor_with_no_agent_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    let output = keyward_tests::run_cli_at(&socket, ["doctor", "--json"], None);
    assert_exit(&output, exit::NO_AGENT, "doctor with no agent");
    let report = json_out(&output, "doctor --json with no agent");
    assert_eq!(report["result"], "no_agent");
    assert_eq!(doctor_check(&report, "agent")["status"], "problem");
}

#[tokio::test]
async fn a_caller_who_is_not_an_admin_sees_states_but_not_where_the_files_are() {
    let daemon = DaemonBuilder::new()
        .top_level(&format!("allow_uids = [{NOBODY}]"))
        .start()
        .await;
    generate(&daemon, "local", "ec-p256", "shared");
    // The socket is the caller's to know; the config file and state directory are not.
    let private = [
        path(daemon.config_path()).to_string(),
        path(&daemon.dir().join("state")).to_string(),
    ];
    let cli = CliCopy::new();
    let output = cli.run_as(NOBODY, NOBODY, daemon.socket(), &["status", "--json"]);
    assert_exit(&output, 0, "status as nobody");
    let seen = json_out(&output, "status --json as nobody");
    assert_eq!(seen["agent"], "running");
    assert_eq!(backend(&seen, "local")["key_count"], 1, "{seen:#}");
    assert!(
        seen["details"].is_null(),
        "no file locations for non-admins: {seen:#}"
    );
    let text = stdout_text(&output);
    for place in &private {
        assert!(
            !text.contains(place.as_str()),
            "status told a non-admin {place}: {text}"
        );
    }

    let output = cli.run_as(NOBODY, NOBODY, daemon.socket(), &["doctor", "--json"]);
    let report = json_out(&output, "doctor --json as nobody");
    assert_eq!(
        doctor_check(&report, "files")["status"],
        "skipped",
        "{report:#}"
    );
    let text = stdout_text(&output);
    for place in &private {
        assert!(
            !text.contains(place.as_str()),
            "doctor told a non-admin {place}: {text}"
        );
    }
}
