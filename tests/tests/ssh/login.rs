//! `ssh` logs in to a real `sshd` (Debian's openssh-server, started by the test on 127.0.0.1)
//! with keys that only keywardd holds; a key whose policy does not allow logins cannot.
//!
//! sshd runs as root (the tests do) and lets root in by key only (`PermitRootLogin
//! prohibit-password`, `AllowUsers root`), with `StrictModes yes`, `UsePAM no`, no
//! forwarding, no TTY and a `ForceCommand` that only prints a greeting: a login proves the
//! key, and can do nothing else. Its files are in a 0700 directory under `~/.cache/keyward`
//! (StrictModes refuses an authorized_keys below the world-writable /tmp).

use keyward_tests::ssh::{OpenSsh, Sshd};
use keyward_tests::{DaemonBuilder, stderr_text, stdout_text};

use crate::{
    audit_record, audit_table, local_key, make_local_key, policy_for, pubkey, reload, ssh_socket,
    ssh_table,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_logs_in_through_the_agent_and_not_with_a_key_denied_logins() {
    let builder = DaemonBuilder::new();
    let (audit, audit_log) = audit_table(builder.dir());
    let keys = builder.dir().join("keys");
    make_local_key(&keys, "git-only", &["-algorithm", "ed25519"]);
    make_local_key(&keys, "login-ed", &["-algorithm", "ed25519"]);
    make_local_key(
        &keys,
        "login-rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let offered = ["git-only", "login-ed"];
    let tables = format!(
        "{}{}{}{}",
        ssh_table(&offered),
        local_key("git-only", Some(&policy_for("ssh:sig:git"))),
        local_key("login-ed", Some(&policy_for("ssh:auth"))),
        local_key("login-rsa", Some(&policy_for("ssh:auth"))),
    );
    let daemon = builder.top_level(&audit).extra_toml(&tables).start().await;
    let Some(tools) = OpenSsh::new(&ssh_socket(&daemon)) else {
        return;
    };
    let authorized: Vec<String> = ["git-only", "login-ed", "login-rsa"]
        .iter()
        .map(|id| pubkey(&daemon, id))
        .collect();
    let authorized: Vec<&str> = authorized.iter().map(String::as_str).collect();
    let Some(sshd) = Sshd::start(&authorized) else {
        return;
    };

    // ssh offers git-only first (the server would take it), the agent refuses it by policy,
    // and ssh goes on to login-ed, which logs in.
    let login = sshd.login(&tools, &[]);
    assert!(
        login.status.success(),
        "ssh failed: {}\nsshd:\n{}\nkeywardd:\n{}",
        stderr_text(&login),
        sshd.log(),
        daemon.log()
    );
    assert_eq!(stdout_text(&login).trim(), Sshd::GREETING);
    let denied = audit_record(&audit_log, |r| {
        r["event"] == "ssh" && r["result"] == "denied" && r["key"] == "git-only"
    })
    .await;
    assert_eq!(denied["purpose"], "ssh:auth", "{denied}");
    // The login is audited with the host key ssh bound the connection to (session-bind).
    let ok = audit_record(&audit_log, |r| {
        r["event"] == "ssh" && r["result"] == "ok" && r["key"] == "login-ed"
    })
    .await;
    assert_eq!(ok["purpose"], "ssh:auth", "{ok}");
    assert_eq!(
        ok["ssh_host_key"],
        sshd.host_key_fingerprint().as_str(),
        "{ok}"
    );
    assert_eq!(ok["caller"]["exe"], "/usr/bin/ssh", "{ok}");
    assert!(
        sshd.log().contains("Accepted publickey for root"),
        "{}",
        sshd.log()
    );

    // RSA logs in with rsa-sha2-256 and rsa-sha2-512 (never SHA-1 ssh-rsa).
    let config = std::fs::read_to_string(daemon.config_path()).expect("the config");
    let rsa_only = config.replace(&ssh_table(&offered), &ssh_table(&["login-rsa"]));
    reload(&daemon, &rsa_only, 1).await;
    for (algorithm, recorded) in [
        ("rsa-sha2-256", "rsa-pkcs1-sha256"),
        ("rsa-sha2-512", "rsa-pkcs1-sha512"),
    ] {
        let option = format!("PubkeyAcceptedAlgorithms={algorithm}");
        let login = sshd.login(&tools, &[&option]);
        assert!(
            login.status.success(),
            "ssh with {algorithm} failed: {}\nkeywardd:\n{}",
            stderr_text(&login),
            daemon.log()
        );
        audit_record(&audit_log, |r| {
            r["event"] == "ssh"
                && r["result"] == "ok"
                && r["key"] == "login-rsa"
                && r["algorithm"] == recorded
        })
        .await;
    }

    // Offering only the key whose policy allows git, not logins: the login fails.
    let git_only = config.replace(&ssh_table(&offered), &ssh_table(&["git-only"]));
    reload(&daemon, &git_only, 2).await;
    let refused = sshd.login(&tools, &[]);
    assert!(
        !refused.status.success(),
        "ssh logged in with git-only: {}",
        stdout_text(&refused)
    );
    assert!(
        stderr_text(&refused).contains("Permission denied (publickey)"),
        "{}",
        stderr_text(&refused)
    );
    assert!(
        stderr_text(&refused).contains("agent refused operation"),
        "{}",
        stderr_text(&refused)
    );
}
