//! Plugin executables the daemon must refuse (unsafe permissions) and programs that are not
//! plugins at all (printing something else, exiting at once, silent): the daemon stays up,
//! logs `plugin down: <reason>`, answers UNAVAILABLE with the reason and keeps its other
//! backends working.

use std::time::{Duration, Instant};

use keyward_proto::v1::SignRequest;
use keyward_proto::v1::sign_request::Input;
use keyward_proto::v1::signer_client::SignerClient;
use keyward_sdk::{KeySpec, SignatureAlgorithm as Alg};
use keyward_tests::plugins::{
    ChildReaper, Outcome, TestKey, backend_table, command_toml, write_script,
};
use keyward_tests::wait;
use keyward_tests::{DaemonBuilder, random_bytes, stderr_text, uds_channel};
use tonic::Code;

/// A config with the default `local` backend and a `bad` external backend running `command`.
fn bad_backend(builder: DaemonBuilder, command: &std::path::Path, fields: &str) -> DaemonBuilder {
    let table = format!("{}\n{fields}", command_toml(&[command]));
    builder
        .extra_toml(&backend_table("bad", "external", &table))
        .extra_toml("[[key]]\nid = \"bad-key\"\nbackend = \"bad\"\nref = \"anything\"")
}

#[tokio::test]
async fn unsafe_plugin_executables_stop_the_daemon() {
    for (what, mode, needle) in [
        ("0644", Some(0o644), "is not executable"),
        ("0777", Some(0o777), "writable by group or others"),
        ("0775", Some(0o775), "writable by group or others"),
        ("a directory", None, "is not a regular file"),
    ] {
        let builder = DaemonBuilder::new();
        let program = builder.dir().join("plugin");
        match mode {
            Some(mode) => write_script(&program, "echo 'keyward-plugin v1 ready'", mode),
            None => std::fs::create_dir(&program).expect("mkdir"),
        }
        let output = bad_backend(builder, &program, "").run_to_exit(Duration::from_secs(20));
        let stderr = stderr_text(&output);
        assert!(
            !output.status.success(),
            "{what}: the daemon started:\n{stderr}"
        );
        assert!(
            stderr.contains(program.to_str().expect("UTF-8")) && stderr.contains(needle),
            "{what}: the error names neither the path nor {needle:?}:\n{stderr}"
        );
    }
}

/// A daemon whose `bad` backend runs `script` (which is no working plugin): it must start,
/// log `plugin down: <reason>` at every failed start, answer UNAVAILABLE with the reason for
/// `bad-key`, and keep its `local` backend working.
async fn check_broken_plugin(script: &str, fields: &str, reason: &[&str]) {
    let builder = DaemonBuilder::new();
    let program = builder.dir().join("not-a-plugin.sh");
    write_script(&program, script, 0o755);
    let mut daemon = bad_backend(builder, &program, fields).start().await;
    let _reaper = ChildReaper::new(&daemon);
    // Three failed starts in a row (about 1 s of backoff), each logged with its own reason,
    // naming this run only once (no stale lines of an earlier run).
    let down = wait::for_log(
        &daemon,
        &["plugin down:", "bad"],
        3,
        Duration::from_secs(15),
    )
    .await;
    for line in &down[..3] {
        for needle in reason {
            assert_eq!(
                line.matches(needle).count(),
                1,
                "{script:?}: want {needle:?} once in the reason:\n{line}"
            );
        }
    }

    let client = daemon.client().await;
    client
        .generate_key("local", "good", KeySpec::EcP256)
        .await
        .expect("the local backend works");
    let good = TestKey::fetch(&client, "good").await;
    let outcome = good
        .sign(&client, b"still works", Duration::from_secs(5))
        .await;
    assert!(
        matches!(outcome, Outcome::Signed),
        "{script:?}: {outcome:?}"
    );
    let listed = client
        .list_keys()
        .await
        .expect("ListKeys with a plugin down");
    assert!(listed.iter().any(|k| k.key_id == "good"), "{listed:?}");

    // `bad-key` answers UNAVAILABLE; while the plugin is down (not restarting) the message
    // holds the reason, and the status carries a retry hint.
    let mut raw = SignerClient::new(uds_channel(daemon.socket()).await.expect("channel"));
    let request = SignRequest {
        key_id: "bad-key".into(),
        algorithm: Alg::EcdsaSha256 as i32,
        input: Some(Input::Digest(random_bytes(32))),
        ..SignRequest::default()
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = match raw.sign(request.clone()).await {
            Ok(_) => panic!("{script:?}: bad-key signed"),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::Unavailable, "{script:?}: {status:?}");
        assert!(status.message().contains("plugin \"bad\""), "{status:?}");
        if status.message().contains("is down (") {
            break status;
        }
        seen.push(status.message().to_string());
        assert!(
            Instant::now() < deadline,
            "{script:?}: never `is down`: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for needle in reason {
        assert!(
            status.message().contains(needle),
            "{script:?}: {needle:?} not in {status:?}"
        );
    }
    let retry = status.metadata().get("retry-after-ms").map(|v| v.to_str());
    assert!(
        matches!(retry, Some(Ok(ms)) if ms.parse::<u64>().is_ok_and(|ms| ms > 0)),
        "{script:?}: retry-after-ms: {retry:?}"
    );
    drop((client, raw));
    assert!(daemon.terminate().await.success(), "{}", daemon.log());
}

#[tokio::test]
async fn a_program_printing_something_else_is_down() {
    check_broken_plugin(
        "echo hello\nexec sleep 60",
        "",
        &["\"hello\" instead of the handshake"],
    )
    .await;
}

#[tokio::test]
async fn a_program_exiting_at_once_is_down() {
    check_broken_plugin(
        "echo boom >&2\nexit 3",
        "",
        &["exited (", "before its handshake", "boom"],
    )
    .await;
}

#[tokio::test]
async fn a_silent_program_is_down() {
    check_broken_plugin(
        "exec sleep 60",
        "startup_timeout = 0.5",
        &["printed no handshake within"],
    )
    .await;
}
