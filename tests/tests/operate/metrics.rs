//! The Prometheus endpoint (`[metrics] listen`): scraped over TCP and over a Unix socket with
//! `curl`, the text checked by `promtool check metrics`, counters that move after signatures,
//! refusals and unknown keys (which must not create a series), and a real Prometheus server
//! that scrapes it and answers a query.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keyward_tests::cli::{assert_cli_exit, assert_ok, exit};
use keyward_tests::peers::{Peer, require};
use keyward_tests::wait::until;
use keyward_tests::{
    COMMAND_TIMEOUT, DaemonBuilder, TestDaemon, openssl_genpkey, run_cli, run_with_timeout,
    set_mode, spawn_tied_to_this_process, stderr_text, stdout_text, terminate,
};

use crate::common::path;

/// A port nobody listens on now (the kernel's pick; bound again by the peer right after).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `curl ARGS` → the body (panics on a failed transfer).
fn curl(curl: &Path, args: &[&str]) -> String {
    let mut command = Command::new(curl);
    command.args(["--silent", "--show-error", "--fail", "--max-time", "10"]);
    command.args(args);
    let output = run_with_timeout(command, None, COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        stderr_text(&output)
    );
    stdout_text(&output)
}

/// `promtool check metrics` on `text`: it must find nothing to say.
fn promtool_check(promtool: &Path, text: &str) {
    let mut command = Command::new(promtool);
    command.args(["check", "metrics"]);
    let output = run_with_timeout(command, Some(text.as_bytes()), COMMAND_TIMEOUT);
    assert!(
        output.status.success() && stderr_text(&output).trim().is_empty(),
        "promtool check metrics: {}{}\n---\n{text}",
        stdout_text(&output),
        stderr_text(&output)
    );
}

/// The value of the sample whose line starts with `series` (name and labels, as rendered), or
/// `None` when there is no such series.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .reduce(|a, b| a + b)
}

/// A daemon with `[metrics] listen = listen` and a config key `rated` that allows one
/// signature (then refuses with a rate limit).
async fn daemon_with_metrics(listen: &str) -> Result<TestDaemon, keyward_tests::StartFailure> {
    let builder = DaemonBuilder::new();
    let keys = builder.dir().join("keys");
    std::fs::create_dir(&keys).expect("mkdir keys");
    set_mode(&keys, 0o700);
    openssl_genpkey(
        &keys.join("rated.pem"),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    builder
        .top_level(&format!("[metrics]\nlisten = \"{listen}\"\n"))
        .extra_toml(
            "[[key]]\nid = \"rated\"\nbackend = \"local\"\nref = \"rated\"\n[key.policy]\n\
             uids = [0]\nrate_limit = { per_second = 0.01, burst = 1 }\n",
        )
        .try_start()
        .await
}

#[tokio::test]
async fn metrics_move_with_signatures_and_refusals_and_promtool_accepts_them() {
    let (Some(curl_bin), Some(promtool)) = (require(Peer::Curl), require(Peer::Promtool)) else {
        return;
    };
    // The kernel's free port can be taken between our probe and the daemon's bind: try again.
    let mut started = None;
    for _ in 0..3 {
        let port = free_port();
        if let Ok(daemon) = daemon_with_metrics(&format!("127.0.0.1:{port}")).await {
            started = Some((daemon, port));
            break;
        }
    }
    let (daemon, port) = started.expect("keywardd with [metrics] on a free port");
    let url = format!("http://127.0.0.1:{port}/metrics");

    let before = curl(&curl_bin, &[&url]);
    promtool_check(&promtool, &before);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(&before, "keyward_build_info", &[("version", version)]),
        Some(1.0),
        "{before}"
    );

    let digest = "ab".repeat(32);
    let signed = run_cli(&daemon, ["sign", "--key", "rated", "--digest", &digest]);
    assert_ok(&signed, "first signature");
    let refused = run_cli(&daemon, ["sign", "--key", "rated", "--digest", &digest]);
    assert_cli_exit(&refused, exit::REFUSED, "second signature", &["rate"]);
    let unknown = run_cli(
        &daemon,
        ["sign", "--key", "no-such-key", "--digest", &digest],
    );
    assert_cli_exit(&unknown, exit::ERROR, "unknown key", &["no-such-key"]);

    let after = curl(&curl_bin, &[&url]);
    promtool_check(&promtool, &after);
    let rated = [("key", "rated"), ("backend", "local")];
    assert_eq!(
        sample(&after, "keyward_signatures_total", &rated),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "keyward_rate_limited_total", &[("key", "rated")]),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "keyward_sign_errors_total",
            &[("key", "rated"), ("code", "resource_exhausted")]
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        sample(
            &after,
            "keyward_sign_duration_seconds_count",
            &[("backend", "local")]
        )
        .is_some_and(|n| n >= 1.0),
        "{after}"
    );
    // A key id nobody configured never becomes a label value.
    assert!(!after.contains("no-such-key"), "{after}");
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_endpoint() {
    let (Some(curl_bin), Some(prometheus)) = (require(Peer::Curl), require(Peer::Prometheus))
    else {
        return;
    };
    let mut started = None;
    for _ in 0..3 {
        let port = free_port();
        if let Ok(daemon) = daemon_with_metrics(&format!("127.0.0.1:{port}")).await {
            started = Some((daemon, port));
            break;
        }
    }
    let (daemon, port) = started.expect("keywardd with [metrics] on a free port");
    let signed = run_cli(
        &daemon,
        ["sign", "--key", "rated", "--digest", &"cd".repeat(32)],
    );
    assert_ok(&signed, "signature");

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: keyward\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let web = free_port();
    let child = spawn_tied_to_this_process(&prometheus, |command| {
        command
            .arg(format!("--config.file={}", path(&config)))
            .arg(format!(
                "--storage.tsdb.path={}",
                path(&dir.path().join("data"))
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    });
    let query = format!(
        "http://127.0.0.1:{web}/api/v1/query?query=keyward_signatures_total%7Bkey%3D%22rated%22%7D"
    );
    let answer = until(
        "Prometheus has scraped a signature",
        Duration::from_secs(60),
        || {
            let mut command = Command::new(&curl_bin);
            command.args(["--silent", "--fail", "--max-time", "5", &query]);
            let output = run_with_timeout(command, None, COMMAND_TIMEOUT);
            let body: serde_json::Value =
                serde_json::from_slice(&output.stdout).map_err(|e| format!("not yet: {e}"))?;
            let result = &body["data"]["result"];
            (result.as_array().is_some_and(|r| !r.is_empty()))
                .then(|| body.clone())
                .ok_or_else(|| format!("no sample yet: {body}"))
        },
    );
    terminate(child, Duration::from_secs(10));
    let sample = &answer["data"]["result"][0];
    assert_eq!(sample["metric"]["backend"], "local", "{answer:#}");
    assert_eq!(sample["metric"]["job"], "keyward", "{answer:#}");
    assert_eq!(sample["value"][1], "1", "{answer:#}");
}

#[tokio::test]
async fn metrics_on_a_unix_socket() {
    let Some(curl_bin) = require(Peer::Curl) else {
        return;
    };
    let sock_dir = tempfile::tempdir().expect("temp dir");
    let socket = sock_dir.path().join("metrics.sock");
    let daemon = daemon_with_metrics(path(&socket))
        .await
        .unwrap_or_else(|f| panic!("keywardd with [metrics] on a Unix socket: {}", f.log));
    let text = curl(
        &curl_bin,
        &["--unix-socket", path(&socket), "http://localhost/metrics"],
    );
    assert!(text.contains("# TYPE keyward_build_info gauge"), "{text}");
    drop(daemon);
}
