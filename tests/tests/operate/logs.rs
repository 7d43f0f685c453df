//! keywardd's log: JSON lines with `log_format = "json"` (or `--log-format json`), and text
//! without timestamps when stderr is the journal (`JOURNAL_STREAM` names stderr).

use std::os::unix::fs::MetadataExt;

use keyward_tests::cli::assert_ok;
use keyward_tests::{DaemonBuilder, TestDaemon, run_cli};
use serde_json::Value;

/// Every line of the daemon's log as JSON; panics on a line that is not.
fn json_lines(daemon: &TestDaemon) -> Vec<Value> {
    let log = daemon.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line:?}\n{log}"))
        })
        .collect();
    assert!(!lines.is_empty(), "the daemon logged nothing");
    lines
}

/// The JSON log's shape: a timestamp, a level and a message on every line.
fn assert_json_shape(lines: &[Value]) {
    for line in lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&line["level"].as_str().unwrap_or("")),
            "{line}"
        );
        assert!(line["fields"]["message"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn log_format_json_in_the_config_gives_json_lines() {
    let daemon = DaemonBuilder::new()
        .top_level("log_format = \"json\"")
        .start()
        .await;
    // Something that logs after the start: a config reload.
    let generated = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            "local",
            "--type",
            "ed25519",
            "logged",
        ],
    );
    assert_ok(&generated, "keys generate");
    let lines = json_lines(&daemon);
    assert_json_shape(&lines);
    let status = run_cli(&daemon, ["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status --json");
    assert_eq!(status["details"]["log_format"], "json", "{status:#}");
}

#[tokio::test]
async fn log_format_flag_wins_over_the_config() {
    let daemon = DaemonBuilder::new()
        .top_level("log_format = \"text\"")
        .arg("--log-format")
        .arg("json")
        .start()
        .await;
    assert_json_shape(&json_lines(&daemon));
}

#[tokio::test]
async fn text_under_the_journal_has_no_timestamps() {
    let builder = DaemonBuilder::new();
    // The harness appends the daemon's stderr to this file: create it first, so that its
    // device and inode are known and can be named in JOURNAL_STREAM as systemd does.
    let log = builder.dir().join("keywardd.log");
    std::fs::write(&log, b"").expect("create the log file");
    let meta = std::fs::metadata(&log).expect("stat the log file");
    let journal = format!("{}:{}", meta.dev(), meta.ino());
    let daemon = builder.env("JOURNAL_STREAM", &journal).start().await;
    let text = daemon.log();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the daemon logged nothing");
    for line in &lines {
        let level = line.split_whitespace().next().unwrap_or_default();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "a journald line starts with its level, no timestamp: {line:?}"
        );
        assert!(!line.contains('\u{1b}'), "no ANSI colours: {line:?}");
    }

    // Without JOURNAL_STREAM (a terminal, a file), text lines carry their timestamp.
    let plain = DaemonBuilder::new().start().await;
    let text = plain.log();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .expect("a log line");
    assert!(
        first.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "a plain text line starts with its timestamp: {first:?}"
    );
}
