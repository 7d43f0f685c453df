//! `ssh-keygen -Y sign` through the agent and `ssh-keygen -Y verify` for every key type
//! OpenSSH has, with keys in the local backend, SoftHSM (a pkcs11 plugin process) and OpenBao
//! transit (a vault plugin process).

use keyward_sdk::KeySpec;
use keyward_tests::openbao::OpenBao;
use keyward_tests::peers::{Peer, require};
use keyward_tests::softhsm::{self, PIN, SoftHsm};
use keyward_tests::ssh::OpenSsh;
use keyward_tests::{DaemonBuilder, TestDaemon, random_bytes, stderr_text, stdout_text};

use crate::{KEY_TYPES, audit_record, audit_table, pubkey, ssh_socket, ssh_table};

/// Signs a file with each of `ids` through the agent (`-n file`) and checks the signature with
/// `ssh-keygen -Y verify` against an allowed_signers file made by `keyward ssh
/// allowed-signers`; a changed file, another namespace and another principal fail.
fn sign_and_verify_each(daemon: &TestDaemon, tools: &OpenSsh, ids: &[&str]) {
    let listed = tools.list();
    let file = tools.dir().join("payload.bin");
    std::fs::write(&file, random_bytes(50_000)).expect("write the payload");
    let tampered = tools.dir().join("tampered.bin");
    for id in ids {
        let line = pubkey(daemon, id);
        assert!(listed.contains(&line), "{id} is not offered: {listed:?}");
        let signed = tools.sign(&line, "file", &file);
        assert!(
            signed.status.success(),
            "{id}: ssh-keygen -Y sign failed: {}\nkeywardd:\n{}",
            stderr_text(&signed),
            daemon.log()
        );
        let signature = keyward_tests::ssh::signature_of(&file);
        let principal = format!("{id}@example.com");
        let allowed = keyward_tests::run_cli(
            daemon,
            [
                "ssh",
                "allowed-signers",
                "--key",
                id,
                "--principal",
                &principal,
                "--namespaces",
                "file",
            ],
        );
        keyward_tests::cli::assert_ok(&allowed, "keyward ssh allowed-signers");
        let allowed = stdout_text(&allowed);
        let verified = tools.verify(&allowed, &principal, "file", &file, &signature);
        assert!(
            verified.status.success(),
            "{id}: ssh-keygen -Y verify refused the signature: {}{}",
            stdout_text(&verified),
            stderr_text(&verified)
        );
        assert!(
            stdout_text(&verified).contains(&format!("Good \"file\" signature for {principal}")),
            "{}",
            stdout_text(&verified)
        );
        let mut bytes = std::fs::read(&file).expect("read the payload");
        bytes[25_000] ^= 1;
        std::fs::write(&tampered, &bytes).expect("write the changed payload");
        for (what, principal, namespace, path) in [
            (
                "a changed file",
                principal.as_str(),
                "file",
                tampered.as_path(),
            ),
            (
                "another namespace",
                principal.as_str(),
                "git",
                file.as_path(),
            ),
            (
                "another principal",
                "other@example.com",
                "file",
                file.as_path(),
            ),
        ] {
            let checked = tools.verify(&allowed, principal, namespace, path, &signature);
            assert!(!checked.status.success(), "{id}: {what} verified");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_keys_of_every_type_sign_files() {
    let builder = DaemonBuilder::new();
    let (audit, audit_log) = audit_table(builder.dir());
    let keys = builder.dir().join("keys");
    let ids: Vec<&str> = KEY_TYPES.iter().map(|(id, _)| *id).collect();
    let mut tables = ssh_table(&ids);
    for (id, args) in KEY_TYPES {
        crate::make_local_key(&keys, id, args);
        tables.push_str(&crate::local_key(id, None));
    }
    let daemon = builder.top_level(&audit).extra_toml(&tables).start().await;
    let Some(tools) = OpenSsh::new(&ssh_socket(&daemon)) else {
        return;
    };
    sign_and_verify_each(&daemon, &tools, &ids);
    // Each signature is audited as an ssh event with the namespace as its purpose.
    for (id, algorithm) in [
        ("ed25519", "ed25519"),
        ("p256", "ecdsa-sha256"),
        ("p384", "ecdsa-sha384"),
        ("p521", "ecdsa-sha512"),
        ("rsa", "rsa-pkcs1-sha512"),
    ] {
        let record = audit_record(&audit_log, |r| {
            r["event"] == "ssh" && r["result"] == "ok" && r["key"] == id
        })
        .await;
        assert_eq!(record["purpose"], "ssh:sig:file", "{record}");
        assert_eq!(record["algorithm"], algorithm, "{record}");
        assert_eq!(record["caller"]["exe"], "/usr/bin/ssh-keygen", "{record}");
    }
}

/// The key ids made in a token or transit for each spec.
const SPECS: [(&str, KeySpec); 5] = [
    ("ed25519", KeySpec::Ed25519),
    ("p256", KeySpec::EcP256),
    ("p384", KeySpec::EcP384),
    ("p521", KeySpec::EcP521),
    ("rsa", KeySpec::Rsa2048),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_keys_of_every_type_sign_files() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    hsm.init_token("ssh", softhsm::SO_PIN, PIN);
    let ids: Vec<String> = SPECS
        .iter()
        .map(|(name, _)| format!("hsm-{name}"))
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let daemon = DaemonBuilder::new()
        .extra_toml(&format!(
            "{}{}",
            hsm.backend_toml("ssh", ""),
            ssh_table(&ids)
        ))
        .env("SOFTHSM2_CONF", hsm.conf().to_str().expect("UTF-8"))
        .env(softhsm::PIN_ENV, PIN)
        .start()
        .await;
    let Some(tools) = OpenSsh::new(&ssh_socket(&daemon)) else {
        return;
    };
    let client = daemon.client().await;
    for ((_, spec), id) in SPECS.iter().zip(&ids) {
        client
            .generate_key("hsm", id, *spec)
            .await
            .unwrap_or_else(|e| panic!("generate {id} in SoftHSM: {e}"));
    }
    let objects = hsm.private_objects("ssh", PIN);
    assert_eq!(
        objects.matches("Private Key Object").count(),
        5,
        "{objects}"
    );
    sign_and_verify_each(&daemon, &tools, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_keys_of_every_type_sign_files() {
    let Some(bao) = OpenBao::dev() else { return };
    for (name, kind) in [
        ("ed25519", "ed25519"),
        ("p256", "ecdsa-p256"),
        ("p384", "ecdsa-p384"),
        ("p521", "ecdsa-p521"),
        ("rsa", "rsa-2048"),
    ] {
        bao.create_key(name, kind);
    }
    // Transit keys the backend discovers, offered as <backend>/<name>.
    let ids: Vec<String> = SPECS
        .iter()
        .map(|(name, _)| format!("vault/{name}"))
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let table = bao.backend_toml("vault", "token_env = \"VAULT_TEST_TOKEN\"");
    let daemon = DaemonBuilder::new()
        .extra_toml(&format!("{table}{}", ssh_table(&ids)))
        .env("VAULT_TEST_TOKEN", bao.root_token())
        .start()
        .await;
    let Some(tools) = OpenSsh::new(&ssh_socket(&daemon)) else {
        return;
    };
    sign_and_verify_each(&daemon, &tools, &ids);
}
