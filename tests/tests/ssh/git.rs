//! git signs commits through the agent (`gpg.format = ssh`) and verifies them with an
//! allowed_signers file; a key whose policy does not allow the `git` namespace is refused, and
//! the refusal is in the audit log.

use keyward_tests::ssh::OpenSsh;
use keyward_tests::{DaemonBuilder, run_cli, stderr_text, stdout_text};

use crate::{
    audit_record, audit_table, local_key, make_local_key, policy_for, pubkey, ssh_socket, ssh_table,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_commits_are_signed_and_verified_and_a_key_not_for_git_is_refused() {
    let builder = DaemonBuilder::new();
    let (audit, audit_log) = audit_table(builder.dir());
    let keys = builder.dir().join("keys");
    make_local_key(&keys, "git-signing", &["-algorithm", "ed25519"]);
    make_local_key(
        &keys,
        "login-only",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let tables = format!(
        "{}{}{}",
        ssh_table(&["git-signing", "login-only"]),
        local_key("git-signing", Some(&policy_for("ssh:sig:git"))),
        local_key("login-only", Some(&policy_for("ssh:auth"))),
    );
    let daemon = builder.top_level(&audit).extra_toml(&tables).start().await;
    let Some(tools) = OpenSsh::new(&ssh_socket(&daemon)) else {
        return;
    };
    let git = |args: &[&str]| tools.run("git", args);
    let ok = |args: &[&str]| tools.ok("git", args);
    ok(&["init", "-q", "-b", "main", "repo"]);
    let repo = tools.dir().join("repo");
    let repo = repo.to_str().expect("UTF-8");
    let signers = tools.dir().join("allowed_signers");
    let allowed = run_cli(
        &daemon,
        [
            "ssh",
            "allowed-signers",
            "--key",
            "git-signing",
            "--principal",
            "dev@example.com",
        ],
    );
    keyward_tests::cli::assert_ok(&allowed, "keyward ssh allowed-signers");
    assert!(
        stdout_text(&allowed).starts_with("dev@example.com namespaces=\"git\" ssh-ed25519 "),
        "{}",
        stdout_text(&allowed)
    );
    std::fs::write(&signers, stdout_text(&allowed)).expect("write allowed_signers");
    let signing_key = format!("key::{}", pubkey(&daemon, "git-signing"));
    for (name, value) in [
        ("user.name", "Dev"),
        ("user.email", "dev@example.com"),
        ("gpg.format", "ssh"),
        ("user.signingkey", signing_key.as_str()),
        (
            "gpg.ssh.allowedSignersFile",
            signers.to_str().expect("UTF-8"),
        ),
    ] {
        ok(&["-C", repo, "config", name, value]);
    }
    std::fs::write(tools.dir().join("repo/README"), "signed through keyward\n").expect("write");
    ok(&["-C", repo, "add", "README"]);
    let committed = git(&["-C", repo, "commit", "-q", "-S", "-m", "signed"]);
    assert!(
        committed.status.success(),
        "git commit -S failed: {}\nkeywardd:\n{}",
        stderr_text(&committed),
        daemon.log()
    );
    let verified = git(&["-C", repo, "verify-commit", "HEAD"]);
    assert!(
        verified.status.success(),
        "git verify-commit refused: {}",
        stderr_text(&verified)
    );
    assert!(
        stderr_text(&verified).contains("Good \"git\" signature for dev@example.com"),
        "{}",
        stderr_text(&verified)
    );
    let record = audit_record(&audit_log, |r| {
        r["event"] == "ssh" && r["result"] == "ok" && r["key"] == "git-signing"
    })
    .await;
    assert_eq!(record["purpose"], "ssh:sig:git", "{record}");
    // A signed tag too (git signs tags in the same namespace).
    ok(&["-C", repo, "tag", "-s", "-m", "v1", "v1"]);
    ok(&["-C", repo, "verify-tag", "v1"]);

    // A commit whose signature did not come from the allowed key does not verify: the
    // login-only key is refused by its policy, so git cannot sign at all.
    let login_key = format!("key::{}", pubkey(&daemon, "login-only"));
    ok(&["-C", repo, "config", "user.signingkey", &login_key]);
    std::fs::write(tools.dir().join("repo/README"), "refused\n").expect("write");
    ok(&["-C", repo, "add", "README"]);
    let refused = git(&["-C", repo, "commit", "-q", "-S", "-m", "refused"]);
    assert!(!refused.status.success(), "a commit signed with login-only");
    assert!(
        stderr_text(&refused).contains("failed to write commit object"),
        "{}",
        stderr_text(&refused)
    );
    let denied = audit_record(&audit_log, |r| {
        r["event"] == "ssh" && r["result"] == "denied" && r["key"] == "login-only"
    })
    .await;
    assert_eq!(denied["purpose"], "ssh:sig:git", "{denied}");
    assert!(
        denied["error"].as_str().unwrap_or("").contains("purpose"),
        "{denied}"
    );
    // The log verifies, and a gRPC caller cannot pass for the ssh socket.
    let verified = run_cli(
        &daemon,
        ["audit", "verify", audit_log.to_str().expect("UTF-8")],
    );
    keyward_tests::cli::assert_ok(&verified, "keyward audit verify");
    let digest = "00".repeat(32);
    let forged = run_cli(
        &daemon,
        [
            "sign",
            "--key",
            "login-only",
            "--digest",
            &digest,
            "--purpose",
            "ssh:auth",
        ],
    );
    assert!(!forged.status.success(), "a gRPC request claimed ssh:auth");
    assert!(
        stderr_text(&forged).contains("set by keywardd's ssh-agent socket"),
        "{}",
        stderr_text(&forged)
    );
}
