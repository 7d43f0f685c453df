//! The daemon itself: socket permissions and peer checks, shutdown, stale and busy sockets,
//! health, configuration errors, and what its logs must never hold.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use keyward_sdk::{KeySpec, SignOptions};
use keyward_tests::users::CliCopy;
use keyward_tests::wait;
use keyward_tests::{
    COMMAND_TIMEOUT, DaemonBuilder, TestDaemon, binary, mode_of, random_bytes, run_with_timeout,
    set_mode, stderr_text, stdout_text, toml_string, uds_channel,
};
use rustix::process::Signal;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const NOBODY: u32 = 65534;
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a copy of the `keyward` CLI as `nobody` against `socket` (the build directory is
/// private to root, so the copy lives in a 0755 directory: [`CliCopy`]).
fn cli_as_nobody(socket: &Path, args: &[&str]) -> Output {
    CliCopy::new().run_as(NOBODY, NOBODY, socket, args)
}

/// The CLI ran (as opposed to `setpriv` failing to start it) and did not panic.
fn assert_no_panic(output: &Output) {
    let stderr = stderr_text(output);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "the CLI panicked:\n{stderr}"
    );
    assert!(
        output.status.success() || stderr.starts_with("keyward: error:"),
        "not an error from the CLI itself (did setpriv fail?):\n{stderr}"
    );
}

/// The 1-based number of the line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .expect("needle in text")
}

#[tokio::test]
async fn socket_and_directory_are_private() {
    let daemon = TestDaemon::start("").await;
    let socket = daemon.socket();
    let meta = fs::metadata(socket).expect("stat socket");
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        socket.display()
    );
    assert_eq!(mode_of(socket), 0o600, "socket mode");
    assert_eq!(
        mode_of(socket.parent().expect("dir")),
        0o700,
        "socket directory mode"
    );
}

#[tokio::test]
async fn other_users_cannot_connect_by_default() {
    let daemon = TestDaemon::start("").await;
    let output = cli_as_nobody(daemon.socket(), &["keys", "list"]);
    assert!(
        !output.status.success(),
        "nobody listed keys: {}",
        stdout_text(&output)
    );
    assert_no_panic(&output);
    let stderr = stderr_text(&output);
    assert!(
        stderr.contains(daemon.socket().to_str().expect("UTF-8"))
            || stderr.to_lowercase().contains("permission"),
        "the error names neither the socket nor a permission problem:\n{stderr}"
    );
}

#[tokio::test]
async fn uids_not_allowed_get_permission_denied() {
    let daemon = DaemonBuilder::new()
        .top_level("allow_uids = [4242]")
        .start()
        .await;
    let socket = daemon.socket();
    assert_eq!(
        mode_of(socket.parent().expect("dir")),
        0o711,
        "socket directory mode with allow_uids"
    );
    assert_eq!(mode_of(socket), 0o666, "socket mode with allow_uids");
    let output = cli_as_nobody(socket, &["keys", "list"]);
    assert!(
        !output.status.success(),
        "nobody listed keys: {}",
        stdout_text(&output)
    );
    assert_no_panic(&output);
    let stderr = stderr_text(&output);
    assert!(
        stderr.to_lowercase().contains("permission"),
        "not a permission error:\n{stderr}"
    );
    // The daemon's own uid is still served.
    daemon
        .client()
        .await
        .list_keys()
        .await
        .expect("root is served");
}

#[tokio::test]
async fn allowed_uids_are_served() {
    let daemon = DaemonBuilder::new()
        .top_level(&format!("allow_uids = [{NOBODY}]"))
        .start()
        .await;
    let client = daemon.client().await;
    client
        .generate_key("local", "shared", KeySpec::EcP256)
        .await
        .expect("generate");
    let output = cli_as_nobody(daemon.socket(), &["keys", "list", "--json"]);
    assert_no_panic(&output);
    assert!(
        output.status.success(),
        "nobody is refused: {}",
        stderr_text(&output)
    );
    let keys: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON list");
    let ids: Vec<&str> = keys
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|k| k["key_id"].as_str())
        .collect();
    assert_eq!(ids, ["shared"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish() {
    let mut daemon = TestDaemon::start("").await;
    let client = daemon.client().await;
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .generate_key("local", &format!("slow-{i}"), KeySpec::Rsa4096)
                    .await
            })
        })
        .collect();
    // All three reached the daemon (it logs each request before it generates), so that SIGTERM
    // finds them in flight.
    wait::for_log(&daemon, &["generating a key"], 3, Duration::from_secs(20)).await;
    let in_flight = tasks.iter().filter(|t| !t.is_finished()).count();
    assert!(
        in_flight > 0,
        "three RSA-4096 generations finished before SIGTERM; nothing was in flight"
    );
    let status = daemon.terminate().await;
    for task in tasks {
        let result = task.await.expect("task");
        assert!(
            result.is_ok(),
            "an in-flight generate failed on SIGTERM: {result:?}\nlog:\n{}",
            daemon.log()
        );
    }
    assert_eq!(
        status.code(),
        Some(0),
        "exit status on SIGTERM; log:\n{}",
        daemon.log()
    );
    assert!(!daemon.socket().exists(), "the socket file is left behind");

    daemon.restart().await;
    let listed: Vec<String> = daemon
        .client()
        .await
        .list_keys()
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    for i in 0..3 {
        assert!(
            listed.contains(&format!("slow-{i}")),
            "slow-{i} was lost: {listed:?}"
        );
    }
}

#[tokio::test]
async fn sigint_stops_cleanly() {
    let mut daemon = TestDaemon::start("").await;
    daemon.client().await.list_keys().await.expect("list");
    let status = daemon.terminate_with(Signal::INT).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status on SIGINT; log:\n{}",
        daemon.log()
    );
    assert!(!daemon.socket().exists(), "the socket file is left behind");
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let builder = DaemonBuilder::new();
    let run = builder.dir().join("run");
    fs::create_dir(&run).expect("mkdir run");
    set_mode(&run, 0o700);
    let socket = run.join("agent.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(
        std::os::unix::net::UnixStream::connect(&socket).is_err(),
        "the stale socket answers"
    );
    let daemon = builder.start().await;
    assert_eq!(daemon.socket(), socket);
    daemon
        .client()
        .await
        .list_keys()
        .await
        .expect("the new daemon serves");
}

#[tokio::test]
async fn a_second_daemon_on_a_live_socket_refuses_to_start() {
    let first = TestDaemon::start("").await;
    let output = DaemonBuilder::new()
        .arg("--socket")
        .arg(first.socket())
        .run_to_exit(EXIT_TIMEOUT);
    assert!(
        !output.status.success(),
        "a second daemon started on a live socket"
    );
    let stderr = stderr_text(&output);
    assert!(
        stderr.contains("already"),
        "no \"already\" in the second daemon's error:\n{stderr}"
    );
    assert!(
        first.socket().exists(),
        "the second daemon removed the first one's socket"
    );
    first
        .client()
        .await
        .list_keys()
        .await
        .expect("the first daemon still serves");
}

#[tokio::test]
async fn health_reports_serving() {
    let daemon = TestDaemon::start("").await;
    let channel = uds_channel(daemon.socket()).await.expect("channel");
    let mut health = HealthClient::new(channel);
    for service in ["", "keyward.v1.Signer"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check {service:?}: {e}"))
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await;
    assert_eq!(unknown.err().map(|s| s.code()), Some(tonic::Code::NotFound));
}

#[test]
fn config_errors_name_the_line() {
    // (where, builder, the unknown field, the header of the table holding it)
    let cases = [
        (
            "top level",
            DaemonBuilder::new().top_level("bogus_option = true"),
            "bogus_option",
            None,
        ),
        (
            "backend",
            DaemonBuilder::new().extra_toml("bogus_backend_option = 1"),
            "bogus_backend_option",
            Some("[[backend]]"),
        ),
    ];
    for (place, builder, field, table) in cases {
        let text = builder.config_text();
        // The field's own line, or the line of the table it is in.
        let lines: Vec<usize> = std::iter::once(line_of(&text, field))
            .chain(table.map(|t| line_of(&text, t)))
            .collect();
        let output = builder.run_to_exit(EXIT_TIMEOUT);
        let stderr = stderr_text(&output);
        assert!(
            !output.status.success(),
            "{place}: started with an unknown field"
        );
        assert!(
            stderr.contains(field),
            "{place}: the error does not name {field}:\n{stderr}"
        );
        assert!(
            lines
                .iter()
                .any(|n| stderr.to_lowercase().contains(&format!("line {n}"))),
            "{place}: the error names none of lines {lines:?}:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_key_naming_an_unknown_backend_is_an_error() {
    let builder = DaemonBuilder::new();
    let key = builder.dir().join("k.pem");
    keyward_tests::openssl_genpkey(&key, &["-algorithm", "ED25519"]);
    let toml = format!(
        "[[key]]\nid = \"orphan\"\nbackend = \"nosuchbackend\"\nref = {}\n",
        toml_string(key.to_str().expect("UTF-8"))
    );
    let output = builder.extra_toml(&toml).run_to_exit(EXIT_TIMEOUT);
    let stderr = stderr_text(&output);
    assert!(
        !output.status.success(),
        "started with a key in an unknown backend"
    );
    assert!(
        stderr.contains("nosuchbackend"),
        "the error does not name the backend:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn json_logs_are_json() {
    let mut daemon = DaemonBuilder::new()
        .arg("--log-format")
        .arg("json")
        .start()
        .await;
    let client = daemon.client().await;
    client
        .generate_key("local", "j", KeySpec::Ed25519)
        .await
        .expect("generate");
    client
        .sign_message("j", b"hello", &SignOptions::default())
        .await
        .expect("sign");
    assert_eq!(daemon.terminate().await.code(), Some(0));
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines with KEYWARD_LOG=debug");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.is_object(), "{line}");
    }
}

/// The base64 lines of every PEM file in `dir`.
fn pem_body_lines(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut lines = Vec::new();
    for entry in fs::read_dir(dir).expect("read key dir") {
        let path = entry.expect("entry").path();
        let text = fs::read_to_string(&path).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        {
            lines.push((path.clone(), line.to_string()));
        }
    }
    lines
}

#[tokio::test]
async fn logs_never_hold_key_material_or_passphrases() {
    let passphrase = format!("pw-{}", hex::encode(random_bytes(16)));
    let builder = DaemonBuilder::new();
    let plain_dir = builder.dir().join("plain-keys");
    let toml = format!(
        "passphrase_env = \"LOGTEST_PASS\"\n\n[[backend]]\nname = \"plain\"\ntype = \"local\"\npath = {}\n",
        toml_string(plain_dir.to_str().expect("UTF-8"))
    );
    let mut daemon = builder
        .extra_toml(&toml)
        .env("LOGTEST_PASS", &passphrase)
        .start()
        .await;
    let client = daemon.client().await;
    for backend in ["local", "plain"] {
        for spec in [KeySpec::EcP256, KeySpec::Rsa2048, KeySpec::Ed25519] {
            let id = format!("{backend}-{}", spec.name());
            client
                .generate_key(backend, &id, spec)
                .await
                .expect("generate");
            for format in [
                keyward_sdk::SignatureFormat::Der,
                keyward_sdk::SignatureFormat::Raw,
            ] {
                let options = SignOptions {
                    format,
                    purpose: "log test".into(),
                    ..SignOptions::default()
                };
                client
                    .sign_message(&id, b"log me not", &options)
                    .await
                    .expect("sign");
            }
        }
    }
    assert!(
        client
            .sign_digest("missing", &[0; 32], &SignOptions::default())
            .await
            .is_err()
    );
    drop(client);
    daemon.restart().await;
    daemon
        .client()
        .await
        .list_keys()
        .await
        .expect("list after restart");
    assert!(daemon.terminate().await.success());

    let log = daemon.log();
    assert!(
        !log.trim().is_empty(),
        "the daemon logged nothing at debug level"
    );
    assert!(!log.contains(&passphrase), "the log holds the passphrase");
    let bodies: Vec<_> = pem_body_lines(&daemon.keys_dir())
        .into_iter()
        .chain(pem_body_lines(&plain_dir))
        .collect();
    let files: std::collections::BTreeSet<_> = bodies.iter().map(|(f, _)| f.clone()).collect();
    assert!(files.len() >= 6, "expected 6 key files, found {files:?}");
    for (file, line) in bodies {
        assert!(
            !log.contains(&line),
            "the log holds a line of {}: {line}",
            file.display()
        );
    }
}

#[tokio::test]
async fn without_a_configured_socket_it_listens_under_xdg_runtime_dir() {
    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let config = format!(
        "[[backend]]\nname = \"local\"\ntype = \"local\"\npath = {}\n",
        toml_string(dir.join("keys").to_str().expect("UTF-8"))
    );
    let _daemon = builder.config(&config).start().await;
    let expected = dir.join("xdg-runtime").join("keyward").join("agent.sock");
    assert!(expected.exists(), "no socket at {}", expected.display());
    assert_eq!(mode_of(&expected), 0o600);
    // The CLI finds it the same way when neither --socket nor KEYWARD_SOCK is given.
    let mut command = Command::new(binary("keyward"));
    command
        .args(["keys", "list", "--json"])
        .env_remove("KEYWARD_SOCK")
        .env("XDG_RUNTIME_DIR", dir.join("xdg-runtime"));
    let output = run_with_timeout(command, None, COMMAND_TIMEOUT);
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&output.stdout).ok(),
        Some(serde_json::json!([]))
    );
}
