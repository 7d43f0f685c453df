//! Per-key policies end to end: uids, gids, executables (path and SHA-256), algorithms,
//! purpose patterns, rate limits with `retry-after-ms`, the default policy, a policy following
//! its key under another id, and `KeyAdmin` limited to the daemon's uid and `admin_uids`.

use std::process::Output;
use std::time::Duration;

use keyward_proto::v1::signer_client::SignerClient;
use keyward_proto::v1::{SignRequest, sign_request};
use keyward_sdk::{Code, KeySpec, SignOptions, SignatureAlgorithm};
use keyward_tests::users::{CliCopy, NOBODY};
use keyward_tests::wait;
use keyward_tests::{
    DaemonBuilder, TestDaemon, openssl_genpkey, set_mode, stderr_text, toml_string, uds_channel,
};
use sha2::{Digest, Sha256};

const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Adds a P-256 key file `<dir>/keys/<id>.pem` and a `[[key]]` for it with `policy` (TOML
/// lines of `[key.policy]`; none when empty).
fn with_key(builder: DaemonBuilder, id: &str, policy: &str) -> DaemonBuilder {
    let keys = builder.dir().join("keys");
    if !keys.exists() {
        std::fs::create_dir(&keys).expect("mkdir keys");
        set_mode(&keys, 0o700);
    }
    openssl_genpkey(
        &keys.join(format!("{id}.pem")),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let mut toml = format!("[[key]]\nid = \"{id}\"\nbackend = \"local\"\nref = \"{id}\"\n");
    if !policy.is_empty() {
        toml.push_str(&format!("[key.policy]\n{policy}\n"));
    }
    builder.extra_toml(&toml)
}

fn digest_hex() -> String {
    hex::encode(Sha256::digest(b"policy test"))
}

/// `keyward sign --key KEY --digest ...` through `cli` as `uid` (root runs it directly).
fn cli_sign(cli: &CliCopy, daemon: &TestDaemon, uid: u32, key: &str) -> Output {
    let digest = digest_hex();
    let args = ["sign", "--key", key, "--digest", digest.as_str()];
    if uid == 0 {
        cli.run(daemon.socket(), &args)
    } else {
        cli.run_as(uid, uid, daemon.socket(), &args)
    }
}

fn assert_signed(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: refused: {}",
        stderr_text(output)
    );
}

fn assert_refused(output: &Output, what: &str, message: &str) {
    let stderr = stderr_text(output);
    assert_eq!(
        output.status.code(),
        Some(keyward_tests::cli::exit::REFUSED),
        "{what}: {stderr}"
    );
    assert!(
        stderr.contains(message),
        "{what}: the error does not say {message:?}:\n{stderr}"
    );
}

/// The SDK's error for `result`, which must be a refusal with `code`.
fn refused<T: std::fmt::Debug>(result: Result<T, keyward_sdk::Error>, code: Code) -> String {
    match result {
        Err(error) if error.code() == Some(code) => error.to_string(),
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn uids_and_gids_name_the_rule_that_refused() {
    let builder = DaemonBuilder::new().top_level(&format!("allow_uids = [{NOBODY}]"));
    let builder = with_key(builder, "release", "uids = [0]");
    let builder = with_key(builder, "group", &format!("gids = [{NOBODY}]"));
    let daemon = builder.start().await;
    let cli = CliCopy::new();

    assert_signed(&cli_sign(&cli, &daemon, 0, "release"), "root, release");
    assert_refused(
        &cli_sign(&cli, &daemon, NOBODY, "release"),
        "nobody, release",
        &format!("policy of key \"release\": uid {NOBODY} is not in uids [0]"),
    );
    assert_signed(&cli_sign(&cli, &daemon, NOBODY, "group"), "nobody, group");
    assert_refused(
        &cli_sign(&cli, &daemon, 0, "group"),
        "root, group",
        &format!("policy of key \"group\": gid 0 is not in gids [{NOBODY}]"),
    );
    // Public keys stay open to every caller the socket serves.
    let output = cli.run_as(NOBODY, NOBODY, daemon.socket(), &["pubkey", "release"]);
    assert_signed(&output, "nobody, pubkey release");
    wait::for_log(&daemon, &["sign denied"], 1, Duration::from_secs(20)).await;
    wait::for_log(
        &daemon,
        &["uid 65534 is not in uids [0]"],
        1,
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test]
async fn executables_are_checked_by_path_and_by_hash() {
    let cli = CliCopy::new();
    let path = toml_string(cli.path().to_str().expect("UTF-8"));
    let hash = hex::encode(Sha256::digest(
        std::fs::read(cli.path()).expect("read the CLI"),
    ));
    let builder = with_key(
        DaemonBuilder::new(),
        "by-path",
        &format!("executables = [{path}]"),
    );
    let builder = with_key(
        builder,
        "pinned",
        &format!("executables = [{{ path = {path}, sha256 = \"{hash}\" }}]"),
    );
    let builder = with_key(
        builder,
        "other-hash",
        &format!(
            "executables = [{{ path = {path}, sha256 = \"{}\" }}]",
            "0".repeat(64)
        ),
    );
    let daemon = builder.start().await;

    assert_signed(&cli_sign(&cli, &daemon, 0, "by-path"), "CLI, by-path");
    assert_signed(&cli_sign(&cli, &daemon, 0, "pinned"), "CLI, pinned");
    assert_refused(
        &cli_sign(&cli, &daemon, 0, "other-hash"),
        "CLI, other-hash",
        &format!(
            "policy of key \"other-hash\": executable {} has sha256 {hash}",
            cli.path().display()
        ),
    );
    // This test binary is not the CLI.
    let client = daemon.client().await;
    let message = refused(
        client
            .sign_digest("by-path", &Sha256::digest(b"x"), &SignOptions::default())
            .await,
        Code::PermissionDenied,
    );
    let me = std::env::current_exe().unwrap().canonicalize().unwrap();
    assert!(
        message.contains(&format!(
            "executable {} is not in executables [{}]",
            me.display(),
            cli.path().display()
        )),
        "{message}"
    );
}

#[tokio::test]
async fn algorithms_and_purpose_patterns() {
    let builder = with_key(
        DaemonBuilder::new(),
        "release",
        "uids = [0]\nalgorithms = [\"ecdsa-sha256\"]\npurpose = \"release v[0-9]+\"",
    );
    let daemon = builder.start().await;
    let client = daemon.client().await;
    let options = |algorithm, purpose: &str| SignOptions {
        algorithm: Some(algorithm),
        purpose: purpose.to_string(),
        ..SignOptions::default()
    };
    client
        .sign_message(
            "release",
            b"m",
            &options(SignatureAlgorithm::EcdsaSha256, "release v12"),
        )
        .await
        .expect("an allowed algorithm and purpose");
    let message = refused(
        client
            .sign_message(
                "release",
                b"m",
                &options(SignatureAlgorithm::EcdsaSha384, "release v12"),
            )
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        message,
        "policy of key \"release\": algorithm ecdsa-sha384 is not in algorithms [ecdsa-sha256]"
    );
    for purpose in ["release v12; and more", "prerelease v1", ""] {
        let message = refused(
            client
                .sign_message(
                    "release",
                    b"m",
                    &options(SignatureAlgorithm::EcdsaSha256, purpose),
                )
                .await,
            Code::PermissionDenied,
        );
        assert_eq!(
            message,
            format!(
                "policy of key \"release\": purpose {purpose:?} does not match the pattern \"release v[0-9]+\""
            )
        );
    }
}

fn sign_request(key: &str) -> SignRequest {
    SignRequest {
        key_id: key.to_string(),
        input: Some(sign_request::Input::Digest(Sha256::digest(b"x").to_vec())),
        ..SignRequest::default()
    }
}

#[tokio::test]
async fn rate_limits_answer_resource_exhausted_with_retry_after() {
    let builder = DaemonBuilder::new().top_level(&format!("allow_uids = [{NOBODY}]"));
    let builder = with_key(
        builder,
        "limited",
        "uids = [0]\nrate_limit = { per_second = 0.5, burst = 2 }",
    );
    let builder = with_key(
        builder,
        "per-caller",
        &format!("uids = [0, {NOBODY}]\ncaller_rate_limit = {{ per_second = 0.1, burst = 1 }}"),
    );
    let daemon = builder.start().await;
    let mut signer = SignerClient::new(uds_channel(daemon.socket()).await.expect("channel"));
    for i in 0..2 {
        signer
            .sign(sign_request("limited"))
            .await
            .unwrap_or_else(|e| panic!("request {i} within the burst: {e}"));
    }
    let status = signer
        .sign(sign_request("limited"))
        .await
        .expect_err("the third request within the same second was served");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("policy of key \"limited\": the key's rate_limit (0.5 per second, burst 2) is exceeded; retry in"),
        "{}",
        status.message()
    );
    let retry: u64 = status
        .metadata()
        .get("retry-after-ms")
        .expect("retry-after-ms metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2000).contains(&retry), "retry-after-ms = {retry}");

    // caller_rate_limit: one bucket per uid.
    signer
        .sign(sign_request("per-caller"))
        .await
        .expect("root's first");
    let status = signer
        .sign(sign_request("per-caller"))
        .await
        .expect_err("root's second within its bucket");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("uid 0 exceeded its caller_rate_limit (0.1 per second, burst 1)"),
        "{}",
        status.message()
    );
    let cli = CliCopy::new();
    assert_signed(
        &cli_sign(&cli, &daemon, NOBODY, "per-caller"),
        "nobody has its own bucket",
    );
}

#[tokio::test]
async fn the_default_policy_covers_keys_without_one() {
    let builder = DaemonBuilder::new().top_level("[default_policy]\nuids = [4242]\n");
    let builder = with_key(builder, "own", "uids = [0]");
    let daemon = builder.start().await;
    let client = daemon.client().await;
    client
        .generate_key("local", "generated", KeySpec::Ed25519)
        .await
        .expect("root may still create keys");
    let message = refused(
        client
            .sign_message("generated", b"m", &SignOptions::default())
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        message,
        "policy of key \"generated\" (default_policy): uid 0 is not in uids [4242]"
    );
    client
        .sign_message("own", b"m", &SignOptions::default())
        .await
        .expect("a key's own policy replaces the default");
}

#[tokio::test]
async fn a_policy_follows_its_key_under_another_id() {
    let builder = with_key(DaemonBuilder::new(), "release", "uids = [4242]");
    let file = builder.dir().join("keys").join("release.pem");
    let builder = builder.extra_toml(&format!(
        "[[key]]\nid = \"alias\"\nbackend = \"local\"\nref = {}\n\n[[key]]\nid = \"ghost\"\nbackend = \"local\"\nref = \"ghost\"\n[key.policy]\nuids = [4242]\n",
        toml_string(file.to_str().expect("UTF-8"))
    ));
    let daemon = builder.start().await;
    let client = daemon.client().await;
    let message = refused(
        client
            .sign_message("alias", b"m", &SignOptions::default())
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        message,
        "policy of key \"release\" (the same key as \"alias\"): uid 0 is not in uids [4242]"
    );
    refused(
        client
            .sign_message("local/release", b"m", &SignOptions::default())
            .await,
        Code::NotFound,
    );
    // A key with a policy whose file is missing ("ghost") cannot be another key: it does
    // not block keys without a policy.
    client
        .generate_key("local", "free", KeySpec::Ed25519)
        .await
        .expect("generate");
    client
        .sign_message("free", b"m", &SignOptions::default())
        .await
        .expect("a key without a policy signs");
}

#[tokio::test]
async fn key_admin_is_limited_to_admin_uids() {
    let cli = CliCopy::new();
    let generate = [
        "keys",
        "generate",
        "--backend",
        "local",
        "--type",
        "ec-p256",
        "k1",
    ];
    let daemon = DaemonBuilder::new()
        .top_level(&format!("allow_uids = [{NOBODY}]"))
        .start()
        .await;
    assert_refused(
        &cli.run_as(NOBODY, NOBODY, daemon.socket(), &generate),
        "nobody generates",
        &format!("uid {NOBODY} may not manage keys"),
    );
    let chain = daemon.dir().join("none.pem");
    std::fs::write(&chain, "not a chain").unwrap();
    set_mode(&chain, 0o644);
    assert_refused(
        &cli.run_as(
            NOBODY,
            NOBODY,
            daemon.socket(),
            &["cert", "attach", "--key", "k1", chain.to_str().unwrap()],
        ),
        "nobody attaches",
        "may not manage keys",
    );
    drop(daemon);

    let daemon = DaemonBuilder::new()
        .top_level(&format!("allow_uids = [{NOBODY}]\nadmin_uids = [{NOBODY}]"))
        .start()
        .await;
    assert_signed(
        &cli.run_as(NOBODY, NOBODY, daemon.socket(), &generate),
        "nobody generates as an admin",
    );

    let output = DaemonBuilder::new()
        .top_level("admin_uids = [4242]")
        .run_to_exit(EXIT_TIMEOUT);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("admin_uids names uid 4242") && stderr.contains("add it to allow_uids"),
        "{stderr}"
    );
}

#[test]
fn policy_errors_name_the_line() {
    let builder = with_key(DaemonBuilder::new(), "release", "purpose = \"(unclosed\"");
    let text = builder.config_text();
    let line = text
        .lines()
        .position(|l| l == "[key.policy]")
        .expect("policy table")
        + 1;
    let output = builder.run_to_exit(EXIT_TIMEOUT);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("line {line}"))
            && stderr.contains("[[key]] \"release\" policy: purpose \"(unclosed\" is not a valid regular expression"),
        "{stderr}"
    );
}
