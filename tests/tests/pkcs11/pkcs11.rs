//! The `pkcs11` backend against SoftHSM2 through a real daemon: keys made by OpenSC's
//! `pkcs11-tool` and by keyward itself pass the conformance suite (verified with openssl and
//! RustCrypto) as a plugin process and in-process; a `[[key]]` by PKCS#11 URI signs; generated
//! keys stay sensitive and unextractable; the session pool bounds the sessions; a module that is
//! not PKCS#11 and a missing token fail clearly. Recovery and PIN handling are in
//! `pkcs11_recovery.rs`. In-process (`isolation = "none"`) runs a keywardd built with the cargo
//! feature `pkcs11-in-process` ([`Peer::KeywarddPkcs11InProcess`]); the default keywardd
//! refuses that isolation for pkcs11.

use std::fs;
use std::time::Duration;

use keyward_sdk::{Client, KeySpec};
use keyward_tests::conformance::{ALL_SPECS, check_backend, check_key, expected_algorithms};
use keyward_tests::peers::{Peer, require};
use keyward_tests::softhsm::{self, BACKEND, PIN, SO_PIN, SoftHsm, children};
use keyward_tests::wait;
use keyward_tests::{run_cli, stderr_text, stdout_text, toml_string};

/// Every key type SoftHSM2 makes, as `pkcs11-tool --key-type` names it, with the spec keyward
/// must see.
const TOOL_KEYS: [(&str, KeySpec); 7] = [
    ("EC:prime256v1", KeySpec::EcP256),
    ("EC:secp384r1", KeySpec::EcP384),
    ("EC:secp521r1", KeySpec::EcP521),
    ("rsa:2048", KeySpec::Rsa2048),
    ("rsa:3072", KeySpec::Rsa3072),
    ("rsa:4096", KeySpec::Rsa4096),
    ("EC:edwards25519", KeySpec::Ed25519),
];

/// Generates `key_id` on the hsm backend through the SDK and checks the answer.
async fn generate(client: &Client, key_id: &str, spec: KeySpec) {
    let key = client
        .generate_key(BACKEND, key_id, spec)
        .await
        .unwrap_or_else(|e| panic!("generate {key_id} ({}): {e}", spec.name()));
    assert_eq!(key.info.key_id, key_id);
    assert_eq!(key.info.backend, BACKEND);
    assert_eq!(key.info.backend_type, "pkcs11");
    assert_eq!(key.info.key_spec(), spec, "{key_id}");
    assert_eq!(
        key.info.algorithms().collect::<Vec<_>>(),
        expected_algorithms(spec),
        "{key_id}"
    );
    let again = client.public_key(key_id).await.expect("public key");
    assert_eq!(
        again.der, key.der,
        "{key_id}: GenerateKey and GetPublicKey disagree"
    );
}

/// The spec the agent lists for `key_id`.
async fn listed_spec(client: &Client, key_id: &str) -> Option<KeySpec> {
    let keys = client.list_keys().await.expect("ListKeys");
    keys.iter()
        .find(|k| k.key_id == key_id)
        .map(|k| k.key_spec())
}

/// The `keyward-plugin-*` children of the daemon (`comm` is cut to 15 characters).
fn plugin_children(daemon_pid: u32) -> Vec<(u32, String)> {
    children(daemon_pid)
        .into_iter()
        .filter(|(_, comm)| comm.starts_with("keyward-plugin"))
        .collect()
}

/// The `pkcs11-tool --list-objects` block of the private key labelled `label`.
fn object_block(listing: &str, label: &str) -> String {
    let needle = format!("label:      {label}\n");
    listing
        .split("Private Key Object")
        .find(|block| block.contains(&needle))
        .unwrap_or_else(|| panic!("no private key labelled {label} in:\n{listing}"))
        .to_string()
}

/// The flags of the `Access:` line of a `pkcs11-tool` object block.
fn access_flags(block: &str) -> Vec<String> {
    block
        .lines()
        .find_map(|line| line.trim().strip_prefix("Access:"))
        .unwrap_or_else(|| panic!("no Access line in {block}"))
        .split(',')
        .map(|flag| flag.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_made_and_generated_keys_conform_in_a_plugin_process() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    let token = "conformance";
    hsm.init_token(token, SO_PIN, PIN);
    for (i, (key_type, _)) in TOOL_KEYS.iter().enumerate() {
        let label = format!("tool-{}", key_type.replace(':', "-").to_lowercase());
        hsm.keypairgen(token, PIN, key_type, &label, &format!("{:02x}", i + 1));
    }
    let tables = format!(
        "{}\n[[key]]\nid = \"release\"\nbackend = \"{BACKEND}\"\nref = {}\n",
        hsm.backend_toml(token, "sessions = 4"),
        toml_string(format!("pkcs11:token={token};object=tool-ec-prime256v1"))
    );
    let daemon = hsm.daemon(&tables, PIN).start().await;
    let client = daemon.client().await;

    for (key_type, spec) in TOOL_KEYS {
        let id = format!(
            "{BACKEND}/tool-{}",
            key_type.replace(':', "-").to_lowercase()
        );
        assert_eq!(listed_spec(&client, &id).await, Some(spec), "{id}");
    }
    // The default isolation of a pkcs11 backend is a plugin process (the one that just
    // listed the keys).
    let plugins = plugin_children(daemon.pid());
    assert_eq!(plugins.len(), 1, "plugin children of keywardd: {plugins:?}");
    for spec in ALL_SPECS {
        generate(&client, &format!("gen-{}", spec.name()), spec).await;
    }
    let cli = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            BACKEND,
            "--type",
            "ec-p256",
            "cli-p256",
        ],
    );
    assert!(
        cli.status.success(),
        "keyward keys generate: {}",
        stderr_text(&cli)
    );
    assert_eq!(
        listed_spec(&client, "cli-p256").await,
        Some(KeySpec::EcP256)
    );

    check_backend(&client, BACKEND).await;
    check_key(&client, "release").await;
    let release = client.public_key("release").await.expect("release");
    let tool_key = client
        .public_key(&format!("{BACKEND}/tool-ec-prime256v1"))
        .await
        .expect("tool key");
    assert_eq!(
        release.der, tool_key.der,
        "the URI names the tool-made P-256 key"
    );

    // Generated private keys are sensitive and never extractable (pkcs11-tool prints
    // CKA_SENSITIVE as "sensitive", CKA_EXTRACTABLE as "extractable" and
    // CKA_NEVER_EXTRACTABLE as "never extractable").
    let listing = hsm.private_objects(token, PIN);
    for spec in ALL_SPECS {
        let access = access_flags(&object_block(&listing, &format!("gen-{}", spec.name())));
        assert!(
            access.iter().any(|f| f == "sensitive")
                && access.iter().any(|f| f == "never extractable")
                && !access.iter().any(|f| f == "extractable"),
            "gen-{}: access {access:?}",
            spec.name()
        );
    }

    // The pool never opened more sessions than `sessions` (64 concurrent signatures per key).
    // The plugin's log lines reach the daemon's log asynchronously: wait for the first ones.
    wait::for_log(
        &daemon,
        &["pkcs11 session opened"],
        1,
        Duration::from_secs(20),
    )
    .await;
    wait::for_log(&daemon, &["pkcs11 login"], 1, Duration::from_secs(20)).await;
    let log = daemon.log();
    let opened = log.matches("pkcs11 session opened").count();
    assert!(
        (1..=4).contains(&opened),
        "{opened} sessions opened with sessions = 4:\n{log}"
    );
    assert_eq!(log.matches("pkcs11 login").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_conform_in_process_too() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    let token = "inproc";
    hsm.init_token(token, SO_PIN, PIN);
    hsm.keypairgen(token, PIN, "EC:prime256v1", "tool-p256", "01");
    hsm.keypairgen(token, PIN, "rsa:2048", "tool-rsa", "02");
    let Some(keywardd) = require(Peer::KeywarddPkcs11InProcess) else {
        return;
    };
    let tables = hsm.backend_toml(token, "isolation = \"none\"\nsessions = 2");
    let daemon = hsm.daemon(&tables, PIN).program(keywardd).start().await;
    let client = daemon.client().await;
    generate(&client, "gen-ed25519", KeySpec::Ed25519).await;
    generate(&client, "gen-p384", KeySpec::EcP384).await;
    check_backend(&client, BACKEND).await;
    let plugins = plugin_children(daemon.pid());
    assert!(
        plugins.is_empty(),
        "isolation = none runs a plugin: {plugins:?}"
    );
    let log = daemon.log();
    let opened = log.matches("pkcs11 session opened").count();
    assert!(
        (1..=2).contains(&opened),
        "{opened} sessions with sessions = 2:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_named_by_label_id_or_uri_and_unusable_ones_skipped() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let Some(keywardd) = require(Peer::KeywarddPkcs11InProcess) else {
        return;
    };
    let hsm = SoftHsm::new();
    let token = "names";
    hsm.init_token(token, SO_PIN, PIN);
    hsm.keypairgen(token, PIN, "EC:prime256v1", "with space", "0a0b");
    hsm.keypairgen(token, PIN, "EC:prime256v1", "twin", "10");
    hsm.keypairgen(token, PIN, "EC:prime256v1", "twin", "11");
    hsm.keypairgen(token, PIN, "EC:secp256k1", "k1", "20");
    hsm.keypairgen(token, PIN, "rsa:1024", "small", "21");
    hsm.keypairgen(token, PIN, "rsa:2048", "nopub", "22");
    // Without its public-key object, an RSA key's public key comes from the private key's
    // public components.
    let deleted = hsm.pkcs11_tool([
        "--token-label",
        token,
        "--login",
        "--pin",
        PIN,
        "--delete-object",
        "--type",
        "pubkey",
        "--label",
        "nopub",
    ]);
    assert!(deleted.status.success(), "{}", stderr_text(&deleted));
    let tables = format!(
        "{}\n[[key]]\nid = \"by-id\"\nbackend = \"{BACKEND}\"\nref = \"pkcs11:id=%0a%0b\"\n\n[[key]]\nid = \"elsewhere\"\nbackend = \"{BACKEND}\"\nref = \"pkcs11:token=other;object=nopub\"\n",
        hsm.backend_toml(token, "isolation = \"none\"")
    );
    let daemon = hsm.daemon(&tables, PIN).program(keywardd).start().await;
    let client = daemon.client().await;

    let listed: Vec<String> = client
        .list_keys()
        .await
        .expect("ListKeys")
        .into_iter()
        .filter(|k| k.backend == BACKEND)
        .map(|k| k.key_id)
        .collect();
    for id in [
        "hsm/id-0a0b",
        "hsm/id-10",
        "hsm/id-11",
        "hsm/nopub",
        "by-id",
    ] {
        assert!(listed.iter().any(|k| k == id), "{id} not in {listed:?}");
    }
    for id in ["hsm/twin", "hsm/k1", "hsm/small", "elsewhere"] {
        assert!(!listed.iter().any(|k| k == id), "{id} in {listed:?}");
    }
    // Said by the plugin, whose log reaches the daemon's asynchronously.
    wait::for_log(&daemon, &["skipping key"], 1, Duration::from_secs(20)).await;

    for id in ["hsm/id-0a0b", "hsm/id-11", "hsm/nopub", "by-id"] {
        check_key(&client, id).await;
    }
    let by_id = client.public_key("by-id").await.expect("by-id");
    let by_hex = client.public_key("hsm/id-0a0b").await.expect("id-0a0b");
    assert_eq!(by_id.der, by_hex.der);

    let options = keyward_sdk::SignOptions::default();
    let twin = client
        .sign_message("hsm/twin", b"which one?", &options)
        .await
        .expect_err("an ambiguous label must not sign");
    assert_eq!(twin.code(), Some(tonic::Code::InvalidArgument), "{twin}");
    assert!(twin.to_string().contains("id-<hex>"), "{twin}");
    let other = client
        .sign_message("elsewhere", b"wrong token", &options)
        .await
        .expect_err("a URI for another token must not sign");
    assert_eq!(other.code(), Some(tonic::Code::NotFound), "{other}");
    assert!(other.to_string().contains("\"other\""), "{other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_is_not_pkcs11_fails_clearly() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    let not_a_module = hsm.dir().join("not-a-module.so");
    fs::write(&not_a_module, "this is text, not a shared library\n").expect("write");
    let module = not_a_module.to_str().expect("UTF-8").to_string();
    let table = |module: &str, extra: &str| {
        hsm.backend_toml("x", extra)
            .replace(&toml_string(softhsm::MODULE), &toml_string(module))
    };

    // In a plugin process: the daemon starts, the plugin exits before its handshake and the
    // daemon's log carries its reason.
    let daemon = hsm.daemon(&table(&module, ""), PIN).start().await;
    wait::for_log(
        &daemon,
        &["is not a PKCS#11 module"],
        1,
        Duration::from_secs(20),
    )
    .await;
    let log = daemon.log();
    assert!(log.contains(&module), "{log}");
    daemon
        .client()
        .await
        .list_keys()
        .await
        .expect("the daemon serves");

    // In-process: the daemon refuses to start, with the same reason.
    let Some(keywardd) = require(Peer::KeywarddPkcs11InProcess) else {
        return;
    };
    for module in [module.as_str(), "/bin/true"] {
        let output = hsm
            .daemon(&table(module, "isolation = \"none\""), PIN)
            .program(keywardd.clone())
            .run_to_exit(Duration::from_secs(30));
        let text = format!("{}{}", stdout_text(&output), stderr_text(&output));
        assert!(
            !output.status.success(),
            "keywardd started with {module}:\n{text}"
        );
        assert!(
            text.contains(&format!("{module} is not a PKCS#11 module")),
            "{module}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_is_named_with_the_tokens_present() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    hsm.init_token("present-one", SO_PIN, PIN);
    let Some(keywardd) = require(Peer::KeywarddPkcs11InProcess) else {
        return;
    };
    let tables = hsm.backend_toml("absent", "isolation = \"none\"");
    let output = hsm
        .daemon(&tables, PIN)
        .program(keywardd)
        .run_to_exit(Duration::from_secs(30));
    let text = format!("{}{}", stdout_text(&output), stderr_text(&output));
    assert!(!output.status.success(), "keywardd started:\n{text}");
    assert!(
        text.contains("\"absent\"") && text.contains("\"present-one\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_keywardd_runs_pkcs11_only_as_a_plugin() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    hsm.init_token("default", SO_PIN, PIN);
    let tables = hsm.backend_toml("default", "isolation = \"none\"");
    for args in [vec!["--check-config"], vec![]] {
        let mut builder = hsm.daemon(&tables, PIN);
        for arg in &args {
            builder = builder.arg(arg);
        }
        let output = builder.run_to_exit(Duration::from_secs(30));
        let text = format!("{}{}", stdout_text(&output), stderr_text(&output));
        assert_eq!(output.status.code(), Some(2), "{args:?}:\n{text}");
        assert!(
            text.contains("`isolation`: keywardd runs only local inside itself, not pkcs11")
                && text.contains("cargo feature `pkcs11-in-process`"),
            "{args:?}:\n{text}"
        );
    }
}
