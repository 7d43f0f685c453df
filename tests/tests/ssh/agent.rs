//! What the socket offers and refuses, seen by `ssh-add` and by a raw protocol client.

use std::os::unix::process::CommandExt;
use std::process::Command;

use keyward_sdk::KeySpec;
use keyward_tests::ssh::{OpenSsh, raw};
use keyward_tests::{DaemonBuilder, stderr_text, stdout_text, wait};

use crate::{audit_record, audit_table, pubkey, reload, ssh_socket, ssh_table};

/// The OpenSSH key blob (base64 decoded) of an OpenSSH public key line.
fn blob(line: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = line.split_whitespace().nth(1).expect("a key line");
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_add_lists_exactly_the_offered_keys_in_order() {
    // Offered: four ids, in an order that is neither alphabetical nor creation order; none
    // exists yet. `unlisted` will exist and never be offered.
    let offered = ["zeta-ed", "later", "alpha-p256", "mid-rsa"];
    let daemon = DaemonBuilder::new()
        .extra_toml(&ssh_table(&offered))
        .start()
        .await;
    let Some(tools) = OpenSsh::new(&ssh_socket(&daemon)) else {
        return;
    };
    assert_eq!(tools.list(), Vec::<String>::new(), "nothing exists yet");

    let client = daemon.client().await;
    for (id, spec) in [
        ("alpha-p256", KeySpec::EcP256),
        ("unlisted", KeySpec::Ed25519),
        ("mid-rsa", KeySpec::Rsa2048),
        ("zeta-ed", KeySpec::Ed25519),
    ] {
        client
            .generate_key("local", id, spec)
            .await
            .expect("generate a key");
    }
    let expected =
        |ids: &[&str]| -> Vec<String> { ids.iter().map(|id| pubkey(&daemon, id)).collect() };
    // Each line is what `keyward ssh pubkey` prints (the CLI builds it independently), with
    // the key id as the comment, in the configured order.
    let listed = tools.list();
    assert_eq!(listed, expected(&["zeta-ed", "alpha-p256", "mid-rsa"]));
    assert!(listed[0].starts_with("ssh-ed25519 ") && listed[0].ends_with(" zeta-ed"));
    assert!(listed[1].starts_with("ecdsa-sha2-nistp256 "));
    assert!(listed[2].starts_with("ssh-rsa "));

    // A listed key that appears later is offered in its place.
    client
        .generate_key("local", "later", KeySpec::EcP384)
        .await
        .expect("generate the later key");
    assert_eq!(
        tools.list(),
        expected(&["zeta-ed", "later", "alpha-p256", "mid-rsa"])
    );

    // A private key file cannot be added, nor can keys be removed or the agent locked.
    let key_file = tools.dir().join("own_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key_file)
        .output()
        .expect("run ssh-keygen");
    assert!(made.status.success(), "{}", stderr_text(&made));
    let added = tools.run("ssh-add", [&key_file]);
    assert!(!added.status.success(), "ssh-add FILE succeeded");
    assert!(
        stderr_text(&added).contains("agent refused operation"),
        "{}",
        stderr_text(&added)
    );
    wait::for_log(
        &daemon,
        &[
            "refused to add a private key",
            "keyward never holds keys it was handed",
        ],
        1,
        std::time::Duration::from_secs(10),
    )
    .await;
    let removed = tools.run("ssh-add", ["-D"]);
    assert!(!removed.status.success(), "ssh-add -D succeeded");
    let mut lock = raw::Connection::open(tools.socket());
    let mut body = vec![22u8];
    raw::string(&mut body, b"passphrase");
    assert_eq!(lock.exchange(&body), Some(vec![raw::FAILURE]), "lock");
    assert_eq!(tools.list().len(), 4, "still offered after the refusals");
    let log = daemon.log();
    assert!(
        !log.contains("passphrase"),
        "the lock passphrase reached the log"
    );

    // A reload changes what is offered (the socket stays).
    let config = std::fs::read_to_string(daemon.config_path()).expect("the config");
    let new = config.replace(&ssh_table(&offered), &ssh_table(&["mid-rsa", "unlisted"]));
    assert_ne!(new, config);
    reload(&daemon, &new, 1).await;
    assert_eq!(tools.list(), expected(&["mid-rsa", "unlisted"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_tools_never_make_are_refused() {
    let builder = DaemonBuilder::new();
    let (audit, audit_log) = audit_table(builder.dir());
    let daemon = builder
        .top_level(&audit)
        .extra_toml(&ssh_table(&["rsa"]))
        .start()
        .await;
    let Some(tools) = OpenSsh::new(&ssh_socket(&daemon)) else {
        return;
    };
    let client = daemon.client().await;
    client
        .generate_key("local", "rsa", KeySpec::Rsa2048)
        .await
        .expect("generate");
    client
        .generate_key("local", "hidden", KeySpec::Ed25519)
        .await
        .expect("generate");
    let rsa = blob(&pubkey(&daemon, "rsa"));
    let mut connection = raw::Connection::open(tools.socket());

    // SHA-1 (`ssh-rsa`, no flags) is refused, and the refusal is audited; the SHA-2 flags sign.
    let answer = connection.exchange(&raw::sign_request(&rsa, b"data", 0));
    assert_eq!(answer, Some(vec![raw::FAILURE]));
    let refused = audit_record(&audit_log, |r| {
        r["event"] == "ssh" && r["result"] == "error" && r["key"] == "rsa"
    })
    .await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("ssh-rsa signature (SHA-1)"),
        "{refused}"
    );
    for flags in [2, 4] {
        let answer = connection
            .exchange(&raw::sign_request(&rsa, b"data", flags))
            .expect("an answer");
        assert_eq!(answer[0], raw::SIGN_RESPONSE, "flags {flags}");
        let name: &[u8] = if flags == 2 {
            b"rsa-sha2-256"
        } else {
            b"rsa-sha2-512"
        };
        assert!(
            answer.windows(name.len()).any(|w| w == name),
            "flags {flags}"
        );
    }
    // A key that exists but is not offered, and an unknown message, are refused; the
    // connection stays usable.
    let hidden = blob(&pubkey(&daemon, "hidden"));
    assert_eq!(
        connection.exchange(&raw::sign_request(&hidden, b"data", 0)),
        Some(vec![raw::FAILURE])
    );
    assert_eq!(
        connection.exchange(&[99, 1, 2, 3]),
        Some(vec![raw::FAILURE])
    );
    assert_eq!(connection.exchange(&[]), Some(vec![raw::FAILURE]));
    let answer = connection.exchange(&[11]).expect("identities");
    assert_eq!(answer[0], 12, "IDENTITIES_ANSWER");

    // A message over the protocol's 256 KiB is refused before it is read: the connection is
    // closed, and the next one is served.
    let mut big = raw::Connection::open(tools.socket());
    assert_eq!(big.exchange_framed(256 * 1024 + 1, &[11]), None);
    let mut huge = raw::Connection::open(tools.socket());
    assert_eq!(huge.exchange_framed(u32::MAX, &[13]), None);
    assert_eq!(tools.list().len(), 1);
    wait::for_log(
        &daemon,
        &["ssh-agent: closing the connection", "262144"],
        2,
        std::time::Duration::from_secs(10),
    )
    .await;
    // A login for a session the connection was never bound to is fine without a binding (ssh
    // before 8.9 binds nothing); the purpose is read from the data.
    let mut login = Vec::new();
    raw::string(&mut login, &[7u8; 32]);
    login.push(50);
    for part in [b"root" as &[u8], b"ssh-connection", b"publickey"] {
        raw::string(&mut login, part);
    }
    login.push(1);
    raw::string(&mut login, b"rsa-sha2-256");
    raw::string(&mut login, &rsa);
    let answer = connection
        .exchange(&raw::sign_request(&rsa, &login, 2))
        .expect("an answer");
    assert_eq!(answer[0], raw::SIGN_RESPONSE);
    audit_record(&audit_log, |r| {
        r["event"] == "ssh" && r["result"] == "ok" && r["purpose"] == "ssh:auth"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_the_agent_does_not_serve_is_turned_away() {
    // allow_uids opens the sockets (0666, directory 0711) to uid 65534 only; 65533 may connect
    // but the peer credentials check turns it away, as on the gRPC socket.
    let builder = DaemonBuilder::new();
    let (audit, audit_log) = audit_table(builder.dir());
    let daemon = builder
        .top_level(&format!("allow_uids = [65534]\n{audit}"))
        .extra_toml(&ssh_table(&["shared"]))
        .start()
        .await;
    let socket = ssh_socket(&daemon);
    let Some(tools) = OpenSsh::new(&socket) else {
        return;
    };
    assert_eq!(keyward_tests::mode_of(&socket), 0o666);
    daemon
        .client()
        .await
        .generate_key("local", "shared", KeySpec::Ed25519)
        .await
        .expect("generate");
    let list_as = |uid: u32| {
        let mut command = tools.command("ssh-add");
        command
            .arg("-L")
            .env("HOME", "/")
            .current_dir("/")
            .uid(uid)
            .gid(uid);
        keyward_tests::run_with_timeout(command, None, keyward_tests::COMMAND_TIMEOUT)
    };
    let allowed = list_as(65534);
    assert!(allowed.status.success(), "{}", stderr_text(&allowed));
    assert_eq!(stdout_text(&allowed).trim(), pubkey(&daemon, "shared"));
    let refused = list_as(65533);
    assert!(!refused.status.success(), "uid 65533 listed keys");
    assert!(!stdout_text(&refused).contains("ssh-ed25519"));
    let denied = audit_record(&audit_log, |r| {
        r["event"] == "ssh" && r["result"] == "denied" && r["caller"]["uid"] == 65533
    })
    .await;
    assert!(
        denied["error"]
            .as_str()
            .unwrap_or("")
            .contains("uid 65533 may not use this agent"),
        "{denied}"
    );
}
