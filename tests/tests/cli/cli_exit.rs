//! `keyward`'s exit codes, one test per class, so that a script can tell "no agent" (2) from
//! "refused" (3) from "unavailable, retry" (4) from any other error (5), and `verify`'s
//! "invalid signature" (1) from an error.

use std::path::Path;

use keyward_tests::cli::{assert_cli_exit, exit};
use keyward_tests::plugins::{backend_table, command_toml, write_script};
use keyward_tests::users::{CliCopy, NOBODY};
use keyward_tests::{DaemonBuilder, openssl_genpkey, run_cli, run_cli_at, set_mode, stdout_text};

const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A config key `id` (a P-256 key file made by openssl) with `policy` lines.
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
    builder.extra_toml(&format!(
        "[[key]]\nid = \"{id}\"\nbackend = \"local\"\nref = \"{id}\"\n[key.policy]\n{policy}\n"
    ))
}

#[tokio::test]
async fn no_agent_is_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run_cli_at(&dir.path().join("agent.sock"), ["keys", "list"], None);
    assert_cli_exit(
        &output,
        exit::NO_AGENT,
        "no socket",
        &["cannot connect", "not running"],
    );

    // A socket that is there but not trusted is no agent of ours either.
    let daemon = DaemonBuilder::new().start().await;
    let run_dir = daemon.socket().parent().expect("socket directory");
    set_mode(run_dir, 0o777);
    let output = run_cli(&daemon, ["keys", "list"]);
    assert_cli_exit(
        &output,
        exit::NO_AGENT,
        "a socket in a directory open to all",
        &[
            "refusing to use the agent socket",
            "can be written by others",
        ],
    );
}

#[tokio::test]
async fn refused_is_3() {
    let builder = DaemonBuilder::new().top_level(&format!("allow_uids = [{NOBODY}]"));
    let builder = with_key(
        builder,
        "limited",
        "uids = [0]\nrate_limit = { per_second = 0.01, burst = 1 }",
    );
    let daemon = builder.start().await;

    // PERMISSION_DENIED: nobody may use the agent but not manage keys.
    let cli = CliCopy::new();
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
            "ec-p256",
            "x",
        ],
    );
    assert_cli_exit(
        &output,
        exit::REFUSED,
        "KeyAdmin as nobody",
        &["may not manage keys"],
    );

    // RESOURCE_EXHAUSTED: the key's rate limit.
    let sign = ["sign", "--key", "limited", "--digest", DIGEST];
    let first = run_cli(&daemon, sign);
    assert!(
        first.status.success(),
        "the first signature is within the burst: {}",
        keyward_tests::stderr_text(&first)
    );
    let output = run_cli(&daemon, sign);
    assert_cli_exit(
        &output,
        exit::REFUSED,
        "over the rate limit",
        &["rate_limit", "retry in"],
    );
}

#[tokio::test]
async fn unavailable_is_4() {
    // A backend whose plugin never starts: its key is UNAVAILABLE (retry later).
    let builder = DaemonBuilder::new();
    let program = builder.dir().join("not-a-plugin.sh");
    write_script(&program, "echo 'no plugin here' >&2; exit 3", 0o755);
    let daemon = builder
        .extra_toml(&backend_table(
            "bad",
            "external",
            &command_toml(&[Path::new(&program)]),
        ))
        .extra_toml("[[key]]\nid = \"bad-key\"\nbackend = \"bad\"\nref = \"anything\"")
        .start()
        .await;
    let output = run_cli(&daemon, ["sign", "--key", "bad-key", "--digest", DIGEST]);
    assert_cli_exit(
        &output,
        exit::UNAVAILABLE,
        "a backend that is down",
        &["bad"],
    );
}

#[tokio::test]
async fn invalid_signature_is_1_and_other_errors_are_5() {
    let daemon = DaemonBuilder::new().start().await;
    let generated = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            "local",
            "--type",
            "ec-p256",
            "k",
        ],
    );
    assert!(generated.status.success());
    let work = tempfile::tempdir().expect("temp dir");
    let (message, signature) = (work.path().join("m"), work.path().join("m.sig"));
    std::fs::write(&message, b"message").unwrap();
    let m = message.to_str().unwrap();
    let s = signature.to_str().unwrap();
    let signed = run_cli(&daemon, ["sign", "--key", "k", "--input", m, "--output", s]);
    assert!(signed.status.success());
    let ok = run_cli(
        &daemon,
        ["verify", "--key", "k", "--input", m, "--signature", s],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stdout_text(&ok));
    std::fs::write(&message, b"another message").unwrap();
    let bad = run_cli(
        &daemon,
        ["verify", "--key", "k", "--input", m, "--signature", s],
    );
    assert_eq!(bad.status.code(), Some(exit::INVALID_SIGNATURE));

    let output = run_cli(&daemon, ["pubkey", "no-such-key"]);
    assert_cli_exit(&output, exit::ERROR, "NOT_FOUND", &["no-such-key"]);
    let output = run_cli(&daemon, ["sign", "--key", "k", "--digest", "zz"]);
    assert_cli_exit(&output, exit::ERROR, "bad input", &["digest"]);
    let output = run_cli(&daemon, ["frobnicate"]);
    assert_cli_exit(&output, exit::ERROR, "usage", &["frobnicate"]);
}

#[test]
fn help_documents_the_exit_codes() {
    let output = run_cli_at(Path::new("/nonexistent"), ["--help"], None);
    let help = stdout_text(&output);
    for line in [
        "1  `keyward verify`: the signature is invalid",
        "2  no agent",
        "3  refused by the agent",
        "4  unavailable",
        "5  any other error",
        "KEYWARD_AGENT_UID",
    ] {
        assert!(help.contains(line), "--help lacks {line:?}:\n{help}");
    }
}
