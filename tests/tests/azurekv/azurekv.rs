//! The `azurekv` backend against a real lowkey-vault (an Azure Key Vault emulator) over HTTPS,
//! authenticated through the Azure SDK's managed-identity credential (App Service style)
//! pointed at lowkey-vault's token endpoint: every key type lowkey-vault has through the
//! conformance suite (keys made through the REST API, the SDK and the CLI), key versions and
//! pins, a vault that is stopped and started again, and the backend as a plugin process.
//! Credential and TLS failures are in `azurekv_auth.rs`.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use keyward_sdk::{Client, KeySpec, SignOptions};
use keyward_tests::cli::assert_ok;
use keyward_tests::conformance::{check_backend, check_key};
use keyward_tests::lowkey::LowkeyVault;
use keyward_tests::{DaemonBuilder, TestDaemon, run_cli};
use serde_json::{Value, json};
use tonic::Code;

/// How long a call may take when the vault is down before the test calls it a hang.
const NO_HANG: Duration = Duration::from_secs(20);

/// A daemon with an azurekv backend named `azure` on `vault` (`backend_extra` inside its table)
/// and `extra` TOML after it, its managed identity pointed at the vault's token endpoint.
async fn daemon(vault: &LowkeyVault, backend_extra: &str, extra: &str) -> TestDaemon {
    let mut builder = DaemonBuilder::new().extra_toml(&format!(
        "{}{extra}",
        vault.backend_toml("azure", backend_extra)
    ));
    for (name, value) in vault.identity_env() {
        builder = builder.env(name, &value);
    }
    builder.start().await
}

fn ec(crv: &str) -> Value {
    json!({"kty": "EC", "crv": crv, "key_ops": ["sign", "verify"]})
}

fn rsa(kty: &str, size: u32) -> Value {
    json!({"kty": kty, "key_size": size, "key_ops": ["sign", "verify"]})
}

/// The version at the end of a key's `kid`.
fn version_of(key: &Value) -> String {
    key["key"]["kid"]
        .as_str()
        .and_then(|kid| kid.rsplit('/').next())
        .unwrap_or_else(|| panic!("no kid in {key}"))
        .to_string()
}

/// The public numbers of a key as the vault gives them (x || y for EC, n for RSA), to
/// compare with the agent's SubjectPublicKeyInfo.
fn public_numbers(key: &Value) -> Vec<u8> {
    let field = |name: &str| {
        let text = key["key"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {key}"));
        URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .unwrap_or_else(|e| panic!("{name} is not base64url: {e}"))
    };
    if key["key"]["kty"]
        .as_str()
        .is_some_and(|kty| kty.starts_with("EC"))
    {
        // Coordinates are left-padded to the field size in a SubjectPublicKeyInfo, and
        // may come without their leading zero bytes in a JWK.
        let size = match key["key"]["crv"].as_str() {
            Some("P-384") => 48,
            Some("P-521") => 66,
            _ => 32,
        };
        let mut xy = Vec::new();
        for name in ["x", "y"] {
            let value = field(name);
            let first = value.iter().position(|&b| b != 0).unwrap_or(value.len());
            let value = &value[first..];
            assert!(
                value.len() <= size,
                "{name} of {key} is longer than {size} bytes"
            );
            xy.extend(std::iter::repeat_n(0u8, size - value.len()));
            xy.extend_from_slice(value);
        }
        xy
    } else {
        let n = field("n");
        let first = n.iter().position(|&b| b != 0).unwrap_or(0);
        n[first..].to_vec()
    }
}

/// Signs `message` with `key_id`'s default algorithm; panics on failure.
async fn sign(client: &Client, key_id: &str, message: &[u8]) -> keyward_sdk::Signature {
    client
        .sign_message(key_id, message, &SignOptions::default())
        .await
        .unwrap_or_else(|e| panic!("sign with {key_id}: {e}"))
}

/// The error of a sign that must fail, within [`NO_HANG`].
async fn sign_error(client: &Client, key_id: &str) -> keyward_sdk::Error {
    let options = SignOptions::default();
    let call = client.sign_message(key_id, b"must fail", &options);
    match tokio::time::timeout(NO_HANG, call).await {
        Err(_) => panic!("signing with {key_id} hung for {NO_HANG:?}"),
        Ok(Ok(_)) => panic!("signing with {key_id} worked although it must fail"),
        Ok(Err(e)) => e,
    }
}

/// Asserts that the agent's public key of `key_id` holds the vault's public numbers of `key`.
async fn assert_same_public_key(client: &Client, key_id: &str, key: &Value) {
    let agent = client
        .public_key(key_id)
        .await
        .unwrap_or_else(|e| panic!("public key of {key_id}: {e}"));
    let numbers = public_numbers(key);
    assert!(
        agent.der.windows(numbers.len()).any(|w| w == numbers),
        "{key_id}: the agent's public key is not the vault's"
    );
    assert_eq!(agent.key_version, version_of(key), "{key_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_conforms() {
    let Some(vault) = LowkeyVault::shared() else {
        return;
    };
    let mut made = Vec::new();
    for (name, body) in [
        ("api-ec-p256", ec("P-256")),
        (
            "api-ec-p384",
            json!({"kty": "EC-HSM", "crv": "P-384", "key_ops": ["sign", "verify"]}),
        ),
        ("api-ec-p521", ec("P-521")),
        ("api-rsa-2048", rsa("RSA", 2048)),
        ("api-rsa-3072", rsa("RSA-HSM", 3072)),
        // Never listed: no sign operation, a curve keyward does not sign with, no key pair.
        (
            "api-verify-only",
            json!({"kty": "EC", "crv": "P-256", "key_ops": ["verify"]}),
        ),
        ("api-p256k", ec("P-256K")),
        (
            "api-aes",
            json!({"kty": "oct-HSM", "key_size": 256, "key_ops": ["encrypt", "decrypt"]}),
        ),
    ] {
        made.push((name, vault.create_key(name, body)));
    }
    // The emulator makes an RSA-4096 key in Java: seconds alone, far more on a busy machine,
    // so the plugin gets a generous deadline here (the deadline itself is tested elsewhere).
    let daemon = daemon(&vault, "timeout = 180", "").await;
    let client = daemon.client().await;

    // Through the SDK, and through the CLI.
    for (id, spec) in [
        ("gen-ec-p256", KeySpec::EcP256),
        ("gen-rsa-2048", KeySpec::Rsa2048),
    ] {
        let key = client
            .generate_key("azure", id, spec)
            .await
            .unwrap_or_else(|e| panic!("generate {id}: {e}"));
        assert_eq!(key.info.key_spec(), spec, "{id}");
        assert_eq!(key.info.backend_type, "azurekv");
        let in_vault = vault.key(id, None);
        assert_eq!(key.key_version, version_of(&in_vault), "{id}");
        let mut ops: Vec<&str> = in_vault["key"]["key_ops"]
            .as_array()
            .expect("key_ops")
            .iter()
            .filter_map(|op| op.as_str())
            .collect();
        ops.sort_unstable();
        assert_eq!(ops, ["sign", "verify"], "{id}: {in_vault}");
        made.push((id, in_vault));
    }
    let output = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            "azure",
            "--type",
            "rsa-4096",
            "gen-rsa-4096",
        ],
    );
    assert_ok(&output, "keyward keys generate --backend azure");
    assert_eq!(vault.key("gen-rsa-4096", None)["key"]["kty"], "RSA");
    let again = client
        .generate_key("azure", "api-ec-p256", KeySpec::EcP256)
        .await
        .expect_err("generating an existing key");
    assert_eq!(again.code(), Some(Code::AlreadyExists), "{again}");
    let ed = client
        .generate_key("azure", "gen-ed25519", KeySpec::Ed25519)
        .await
        .expect_err("Key Vault has no Ed25519");
    assert_eq!(ed.code(), Some(Code::Unimplemented), "{ed}");
    assert!(ed.to_string().contains("Ed25519"), "{ed}");

    let listed = client.list_keys().await.expect("list keys");
    let mut ids: Vec<&str> = listed
        .iter()
        .filter(|k| k.backend == "azure")
        .map(|k| k.key_id.as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "azure/api-ec-p256",
            "azure/api-ec-p384",
            "azure/api-ec-p521",
            "azure/api-rsa-2048",
            "azure/api-rsa-3072",
            "gen-ec-p256",
            "gen-rsa-2048",
            "gen-rsa-4096",
        ],
        "{listed:?}"
    );
    for (name, key) in &made {
        if name.starts_with("gen-") {
            assert_same_public_key(&client, name, key).await;
        } else if !matches!(*name, "api-verify-only" | "api-p256k" | "api-aes") {
            assert_same_public_key(&client, &format!("azure/{name}"), key).await;
        }
    }
    // A key whose operations do not include sign is refused with the reason.
    let error = sign_error(&client, "azure/api-verify-only").await;
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(error.to_string().contains("key_ops"), "{error}");

    check_backend(&client, "azure").await;
    assert!(
        !daemon.log().contains("keyward-test-identity-header"),
        "the managed identity's header secret is in the daemon's log"
    );
    assert!(
        !daemon.log().contains("eyJ"),
        "a token is in the daemon's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_versions_are_followed_and_pins_stay() {
    let Some(vault) = LowkeyVault::shared() else {
        return;
    };
    let v1 = vault.create_key("rot", ec("P-256"));
    let v1_id = version_of(&v1);
    let rsa_v1 = vault.create_key("rot-rsa", rsa("RSA", 2048));
    let rsa_v1_id = version_of(&rsa_v1);
    let extra = format!(
        "[[key]]\nid = \"current\"\nbackend = \"azure\"\nref = \"rot\"\n\
         [[key]]\nid = \"pinned\"\nbackend = \"azure\"\nref = \"rot@{v1_id}\"\n\
         [[key]]\nid = \"pinned-url\"\nbackend = \"azure\"\nref = \"{}/keys/rot-rsa/{rsa_v1_id}\"\n\
         [[key]]\nid = \"future\"\nbackend = \"azure\"\nref = \"rot@{}\"\n",
        vault.vault_url(),
        "0".repeat(32)
    );
    // As a plugin process, which gets the identity's variables through `env`; the current
    // version of an unpinned key is checked at most every second.
    let table = "isolation = \"process\"\nenv = [\"IDENTITY_ENDPOINT\", \"IDENTITY_HEADER\"]\n\
                 version_check_interval = 1";
    let daemon = daemon(&vault, table, &extra).await;
    let client = daemon.client().await;

    assert_same_public_key(&client, "current", &v1).await;
    assert_eq!(sign(&client, "current", b"before").await.key_version, v1_id);

    let v2 = vault.create_key("rot", ec("P-256"));
    let v2_id = version_of(&v2);
    assert_ne!(v1_id, v2_id);
    vault.create_key("rot-rsa", rsa("RSA", 2048));

    // After version_check_interval the next signature is made with the new version, without
    // any reload, and the agent then serves its public key.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let message = b"right after the new version";
    let sig = sign(&client, "current", message).await;
    assert_eq!(
        sig.key_version, v2_id,
        "a signature after the new version is not made with it"
    );
    let current = client.public_key("current").await.expect("current key");
    keyward_sdk::verify_message(&current.der, sig.algorithm, message, &sig.bytes, sig.format)
        .expect("a signature made after the new version verifies with its public key");
    assert_same_public_key(&client, "current", &v2).await;
    check_key(&client, "current").await;

    // The pinned keys still sign with version 1 and serve version 1's public key.
    assert_same_public_key(&client, "pinned", &v1).await;
    let pinned = client.public_key("pinned").await.expect("pinned key");
    let sig = sign(&client, "pinned", message).await;
    assert_eq!(sig.key_version, v1_id);
    keyward_sdk::verify_message(&pinned.der, sig.algorithm, message, &sig.bytes, sig.format)
        .expect("a pinned signature verifies with version 1's key");
    assert!(
        keyward_sdk::verify_message(&current.der, sig.algorithm, message, &sig.bytes, sig.format)
            .is_err(),
        "a version 1 signature verifies with version 2's key"
    );
    check_key(&client, "pinned").await;
    assert_same_public_key(&client, "pinned-url", &rsa_v1).await;
    check_key(&client, "pinned-url").await;

    // A version that does not exist is not a key.
    let error = sign_error(&client, "future").await;
    assert_eq!(error.code(), Some(Code::NotFound), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_vault_is_unavailable_until_it_is_back() {
    let Some(mut vault) = LowkeyVault::start() else {
        return;
    };
    let key = vault.create_key("durable", ec("P-384"));
    vault.stop();

    // The daemon starts although the vault is down.
    let extra = "[[key]]\nid = \"durable\"\nbackend = \"azure\"\nref = \"durable\"\n";
    let daemon = daemon(&vault, "", extra).await;
    let client = daemon.client().await;
    let started = Instant::now();
    let error = sign_error(&client, "durable").await;
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(error.to_string().contains(&vault.vault_url()), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    vault.start_again();
    assert_same_public_key(&client, "durable", &key).await;
    check_key(&client, "durable").await;

    // Stopped while in use: the next call fails fast, then works again after a restart, in
    // the same daemon.
    vault.stop();
    let started = Instant::now();
    let error = sign_error(&client, "durable").await;
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(error.to_string().contains(&vault.vault_url()), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    vault.start_again();
    let message = b"after the restart";
    let sig = sign(&client, "durable", message).await;
    assert_eq!(
        sig.key_version,
        version_of(&key),
        "the key survived the restart"
    );
    let public = client.public_key("durable").await.expect("public key");
    keyward_sdk::verify_message(&public.der, sig.algorithm, message, &sig.bytes, sig.format)
        .expect("verifies");

    // Started again without its keys, and the key made again under the same name (a new
    // version): the very next signature comes from the new key, without restarting keywardd,
    // and the agent then serves its public key.
    vault.stop();
    vault.start_again_empty();
    let remade = vault.create_key("durable", ec("P-384"));
    let sig = sign(&client, "durable", message).await;
    assert_eq!(sig.key_version, version_of(&remade));
    assert_same_public_key(&client, "durable", &remade).await;
    let public = client.public_key("durable").await.expect("public key");
    keyward_sdk::verify_message(&public.der, sig.algorithm, message, &sig.bytes, sig.format)
        .expect("a signature of the new key verifies with its public key");
}
