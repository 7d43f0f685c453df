//! The audit log end to end: every decision is a hash-chained JSON line that the SDK's
//! verifier and `keyward audit verify` accept; edits, removals, reordering and truncation are
//! found; rotation across restarts keeps the chain; `fail_closed` refuses before the backend.

use std::path::{Path, PathBuf};
use std::process::Output;

use keyward_sdk::{Code, KeySpec, SignOptions, SignatureAlgorithm};
use keyward_tests::users::{CliCopy, NOBODY};
use keyward_tests::{
    DaemonBuilder, TestDaemon, openssl_genpkey, run_cli, run_cli_at, set_mode, stderr_text,
    stdout_text, toml_string,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn audit_path(builder: &DaemonBuilder) -> PathBuf {
    builder.dir().join("audit").join("audit.log")
}

/// `[audit]` for `path` with `extra` settings.
fn audit_toml(path: &Path, extra: &str) -> String {
    format!(
        "[audit]\npath = {}\n{extra}\n",
        toml_string(path.to_str().expect("UTF-8"))
    )
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read the audit log")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `keyward audit verify FILES...` (needs no agent; the socket is never used).
fn verify(files: &[&Path]) -> Output {
    let args: Vec<&str> = ["audit", "verify"]
        .into_iter()
        .chain(files.iter().map(|f| f.to_str().expect("UTF-8")))
        .collect();
    run_cli_at(Path::new("/nonexistent.sock"), args, None)
}

fn assert_verifies(files: &[&Path], records: usize) {
    let output = verify(files);
    assert_eq!(
        output.status.code(),
        Some(0),
        "audit verify: {}",
        stderr_text(&output)
    );
    assert_eq!(
        stdout_text(&output),
        format!("audit log OK: {records} records\n")
    );
}

fn assert_bad_line(files: &[&Path], line: usize, reason: &str) {
    let output = verify(files);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(1), "audit verify: {stderr}");
    assert!(
        stderr.starts_with("audit log INVALID: ")
            && stderr.contains(&format!(" line {line}: "))
            && stderr.contains(reason),
        "expected line {line} ({reason}):\n{stderr}"
    );
}

#[tokio::test]
async fn every_decision_is_a_chained_record_the_sdk_verifies() {
    let builder = DaemonBuilder::new();
    let path = audit_path(&builder);
    let keys = builder.dir().join("keys");
    std::fs::create_dir(&keys).unwrap();
    set_mode(&keys, 0o700);
    openssl_genpkey(
        &keys.join("release.pem"),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let mut daemon = builder
        .top_level(&format!("allow_uids = [{NOBODY}]\n{}", audit_toml(&path, "")))
        .extra_toml("[[key]]\nid = \"release\"\nbackend = \"local\"\nref = \"release\"\n[key.policy]\nuids = [0]\n")
        .start()
        .await;
    let client = daemon.client().await;
    client
        .generate_key("local", "gen", KeySpec::EcP256)
        .await
        .expect("generate gen");
    client
        .generate_key("local", "ed", KeySpec::Ed25519)
        .await
        .expect("generate ed");
    let digest = Sha256::digest(b"audited");
    let options = SignOptions {
        algorithm: Some(SignatureAlgorithm::EcdsaSha256),
        purpose: "audit test".into(),
        ..SignOptions::default()
    };
    client
        .sign_digest("gen", &digest, &options)
        .await
        .expect("sign gen");
    client
        .sign_message("ed", b"an ed25519 message", &SignOptions::default())
        .await
        .expect("sign ed");
    let cli = CliCopy::new();
    let digest_hex = hex::encode(digest);
    let output = cli.run_as(
        NOBODY,
        NOBODY,
        daemon.socket(),
        &["sign", "--key", "release", "--digest", &digest_hex],
    );
    assert_eq!(
        output.status.code(),
        Some(keyward_tests::cli::exit::REFUSED),
        "{}",
        stderr_text(&output)
    );
    let missing = client.sign_digest("missing", &digest, &options).await;
    assert_eq!(missing.unwrap_err().code(), Some(Code::NotFound));
    let short = client.sign_digest("gen", &digest[..16], &options).await;
    assert_eq!(short.unwrap_err().code(), Some(Code::InvalidArgument));
    let output = run_cli(
        &daemon,
        [
            "cert",
            "issue",
            "--key",
            "gen",
            "--subject",
            "C=US,ST=WA,O=Example,CN=gen",
        ],
    );
    assert!(output.status.success(), "{}", stderr_text(&output));
    let output = cli.run_as(
        NOBODY,
        NOBODY,
        daemon.socket(),
        &[
            "keys",
            "generate",
            "--backend",
            "local",
            "--type",
            "ed25519",
            "x",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(keyward_tests::cli::exit::REFUSED),
        "{}",
        stderr_text(&output)
    );
    drop(client);
    assert!(daemon.terminate().await.success());

    let log = records(&path);
    let summary: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|r| {
            (
                r["event"].as_str().unwrap(),
                r["result"].as_str().unwrap(),
                r["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("generate_key", "attempt", "gen"),
            ("generate_key", "ok", "gen"),
            ("generate_key", "attempt", "ed"),
            ("generate_key", "ok", "ed"),
            ("sign", "attempt", "gen"),
            ("sign", "ok", "gen"),
            ("sign", "attempt", "ed"),
            ("sign", "ok", "ed"),
            ("sign", "denied", "release"),
            ("sign", "error", "missing"),
            ("sign", "error", "gen"),
            ("sign", "attempt", "gen"),
            ("sign", "ok", "gen"),
            ("attach_certificate_chain", "attempt", "gen"),
            ("attach_certificate_chain", "ok", "gen"),
            ("generate_key", "denied", "x"),
        ]
    );
    let me = std::env::current_exe().unwrap().canonicalize().unwrap();
    let signed = &log[5];
    assert_eq!(signed["seq"], 6);
    assert_eq!(signed["caller"]["uid"], 0);
    assert_eq!(signed["caller"]["gid"], 0);
    assert!(signed["caller"]["pid"].as_i64().unwrap() > 0);
    assert_eq!(signed["caller"]["exe"], me.to_str().unwrap());
    assert_eq!(signed["backend"], "local");
    assert_eq!(signed["algorithm"], "ecdsa-sha256");
    assert_eq!(signed["digest"], digest_hex);
    assert_eq!(signed["purpose"], "audit test");
    let time = signed["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
    assert_eq!(
        log[7]["digest"],
        hex::encode(Sha256::digest(b"an ed25519 message")),
        "Ed25519 records the SHA-256 of the message"
    );
    let denied = &log[8];
    assert_eq!(denied["caller"]["uid"], NOBODY);
    assert_eq!(denied["caller"]["exe"], cli.path().to_str().unwrap());
    assert_eq!(
        denied["error"],
        format!("policy of key \"release\": uid {NOBODY} is not in uids [0]")
    );
    assert_eq!(log[11]["purpose"], "keyward cert issue");
    assert_eq!(log[15]["caller"]["uid"], NOBODY);
    assert_eq!(log[0]["prev"], "0".repeat(64));

    // The daemon's real log, fed to the SDK's verifier and to the CLI.
    let text = std::fs::read_to_string(&path).unwrap();
    keyward_sdk::audit::verify_chain(text.lines()).expect("the SDK verifies the daemon's log");
    assert_verifies(&[&path], log.len());
    assert!(
        daemon.log().contains("audit log head at shutdown"),
        "no head anchor in the daemon's log"
    );
}

/// A daemon that wrote `signatures` sign records (plus two for the key), stopped.
async fn finished_log(extra: &str, signatures: usize) -> (TestDaemon, PathBuf) {
    let builder = DaemonBuilder::new();
    let path = audit_path(&builder);
    let mut daemon = builder.top_level(&audit_toml(&path, extra)).start().await;
    let client = daemon.client().await;
    client
        .generate_key("local", "k", KeySpec::Ed25519)
        .await
        .expect("generate");
    for i in 0..signatures {
        let options = SignOptions {
            purpose: format!("signature {i}"),
            ..SignOptions::default()
        };
        client
            .sign_message("k", format!("message {i}").as_bytes(), &options)
            .await
            .expect("sign");
    }
    drop(client);
    assert!(daemon.terminate().await.success());
    (daemon, path)
}

#[tokio::test]
async fn tampering_names_the_first_bad_line() {
    let (daemon, path) = finished_log("", 3).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8);
    assert_verifies(&[&path], 8);
    let tampered = daemon.dir().join("tampered.log");
    let write = |lines: &[&str]| {
        std::fs::write(&tampered, format!("{}\n", lines.join("\n"))).unwrap();
    };

    let edited = lines[3].replace("signature 0", "signature 9");
    assert_ne!(edited, lines[3]);
    let mut copy = lines.clone();
    copy[3] = &edited;
    write(&copy);
    assert_bad_line(&[&tampered], 5, "was edited, removed or reordered");

    let mut copy = lines.clone();
    copy.remove(4);
    write(&copy);
    assert_bad_line(&[&tampered], 5, "prev is");

    let mut copy = lines.clone();
    copy.swap(2, 3);
    write(&copy);
    assert_bad_line(&[&tampered], 3, "prev is");

    write(&lines[1..]);
    assert_bad_line(&[&tampered], 1, "continues an earlier log");

    std::fs::write(&tampered, &text[..text.len() - 10]).unwrap();
    assert_bad_line(&[&tampered], 8, "incomplete");
}

#[tokio::test]
async fn rotation_across_restarts_keeps_one_chain() {
    let builder = DaemonBuilder::new();
    let path = audit_path(&builder);
    let mut daemon = builder
        .top_level(&audit_toml(&path, "max_bytes = 4096"))
        .start()
        .await;
    daemon
        .client()
        .await
        .generate_key("local", "k", KeySpec::Ed25519)
        .await
        .expect("generate");
    for round in 0..2 {
        let client = daemon.client().await;
        for i in 0..12 {
            client
                .sign_message(
                    "k",
                    format!("{round}-{i}").as_bytes(),
                    &SignOptions::default(),
                )
                .await
                .expect("sign");
        }
        drop(client);
        daemon.restart().await;
    }
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let n = p.extension()?.to_str()?.parse().ok()?;
            Some((n, p))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3, "rotated files: {files:?}");
    let mut ordered: Vec<&Path> = files.iter().map(|(_, p)| p.as_path()).collect();
    ordered.push(&path);
    let total: usize = ordered.iter().map(|f| records(f).len()).sum();
    assert_eq!(total, 2 + 2 * 2 * 12);
    for file in &ordered {
        assert!(std::fs::metadata(file).unwrap().len() <= 4096);
    }
    assert_verifies(&ordered, total);
    assert_bad_line(&[&path], 1, "continues an earlier log");
    let mut swapped = ordered.clone();
    swapped.swap(0, 1);
    assert_bad_line(&swapped, 1, "continues an earlier log");
}

#[tokio::test]
async fn fail_closed_refuses_before_the_backend_sees_the_request() {
    // Every write to /dev/full fails with ENOSPC.
    let builder = DaemonBuilder::new();
    let keys = builder.dir().join("keys");
    std::fs::create_dir(&keys).unwrap();
    set_mode(&keys, 0o700);
    openssl_genpkey(&keys.join("release.pem"), &["-algorithm", "ED25519"]);
    let daemon = builder
        .top_level(&audit_toml(Path::new("/dev/full"), "fail_closed = true"))
        .extra_toml("[[key]]\nid = \"release\"\nbackend = \"local\"\nref = \"release\"\n")
        .start()
        .await;
    let client = daemon.client().await;
    let error = client
        .sign_message("release", b"m", &SignOptions::default())
        .await
        .expect_err("signed without an audit record");
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with("the audit log cannot be written: /dev/full: No space left on device")
            && message.contains("nothing was sent to the backend"),
        "{message}"
    );
    let error = client
        .generate_key("local", "new", KeySpec::EcP256)
        .await
        .expect_err("created a key without an audit record");
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(
        !keys.join("new.pem").exists(),
        "the backend created the key although its attempt was not recorded"
    );
    assert!(!daemon.log().contains("\"signed\"") && !daemon.log().contains(" signed"));

    // Without fail_closed the daemon goes on and says why the record is missing.
    let daemon = DaemonBuilder::new()
        .top_level(&audit_toml(Path::new("/dev/full"), ""))
        .start()
        .await;
    let client = daemon.client().await;
    client
        .generate_key("local", "k", KeySpec::Ed25519)
        .await
        .expect("generate without fail_closed");
    client
        .sign_message("k", b"m", &SignOptions::default())
        .await
        .expect("sign without fail_closed");
    assert!(
        daemon
            .log()
            .contains("going on without the record (fail_closed = false)"),
        "{}",
        daemon.log()
    );
}

#[test]
fn audit_config_errors_name_the_line() {
    let output = DaemonBuilder::new()
        .top_level("[audit]\npath = \"/tmp/x.log\"\nmax_bytes = 10\n")
        .run_to_exit(std::time::Duration::from_secs(10));
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 3") && stderr.contains("[audit]: max_bytes = 10 is too small"),
        "{stderr}"
    );
}
