//! The `vault` backend against a real OpenBao server: every transit key type through the
//! conformance suite (keys made through the OpenBao API, the SDK and the CLI), key rotation and
//! pinned versions, TLS with and without the server's CA, a Vault that is stopped or sealed,
//! and the backend as a plugin process. Auth methods are in `vault_auth.rs`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward_sdk::{Client, KeySpec, SignOptions, SignatureFormat};
use keyward_tests::cli::assert_ok;
use keyward_tests::conformance::{check_backend, check_key};
use keyward_tests::openbao::OpenBao;
use keyward_tests::{DaemonBuilder, TestDaemon, openssl, random_bytes, run_cli};
use tonic::Code;

/// The variable the daemon reads the token from.
const TOKEN_ENV: &str = "VAULT_TEST_TOKEN";
/// How long a call may take when Vault is down before the test calls it a hang.
const NO_HANG: Duration = Duration::from_secs(15);

/// A daemon with a `vault` backend named `vault` on `bao`, authenticated with the root token,
/// and `extra` TOML after it.
async fn daemon(bao: &OpenBao, extra: &str) -> TestDaemon {
    let table = bao.backend_toml("vault", &format!("token_env = \"{TOKEN_ENV}\""));
    DaemonBuilder::new()
        .extra_toml(&format!("{table}{extra}"))
        .env(TOKEN_ENV, bao.root_token())
        .start()
        .await
}

/// A PEM or base64 text without its line breaks, to compare two encodings of one key.
fn squash(text: &str) -> String {
    text.split_whitespace().collect()
}

/// The DER SubjectPublicKeyInfo of a PEM public key, through the openssl CLI.
fn pem_to_der(dir: &std::path::Path, pem: &str) -> Vec<u8> {
    let path = dir.join(format!("pub-{}.pem", hex::encode(random_bytes(6))));
    std::fs::write(&path, pem).expect("write a PEM file");
    let output = openssl([
        "pkey",
        "-pubin",
        "-in",
        path.to_str().expect("UTF-8"),
        "-outform",
        "DER",
    ]);
    assert!(output.status.success(), "openssl cannot read {pem}");
    output.stdout
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transit_key_type_conforms() {
    let Some(bao) = OpenBao::dev() else { return };
    for (name, key_type) in [
        ("api-ec-p256", "ecdsa-p256"),
        ("api-ec-p384", "ecdsa-p384"),
        ("api-rsa-2048", "rsa-2048"),
        ("api-ed25519", "ed25519"),
        // Not signing keys: never listed.
        ("api-aes", "aes256-gcm96"),
        ("api-hmac", "hmac"),
    ] {
        if key_type == "hmac" {
            bao.write(
                "transit/keys/api-hmac",
                serde_json::json!({"type": "hmac", "key_size": 32}),
            );
        } else {
            bao.create_key(name, key_type);
        }
    }
    let daemon = daemon(&bao, "").await;
    let client = daemon.client().await;

    // Through the SDK, and through the CLI.
    for (id, spec) in [
        ("gen-ec-p521", KeySpec::EcP521),
        ("gen-rsa-3072", KeySpec::Rsa3072),
    ] {
        let key = client
            .generate_key("vault", id, spec)
            .await
            .unwrap_or_else(|e| panic!("generate {id}: {e}"));
        assert_eq!(key.info.key_spec(), spec, "{id}");
        assert_eq!(key.info.backend_type, "vault");
        assert_eq!(key.key_version, "1", "{id}");
        let in_vault = bao.read(&format!("transit/keys/{id}"));
        assert_eq!(in_vault["data"]["exportable"], false, "{id}: {in_vault}");
        assert_eq!(
            squash(&bao.public_key(id, 1)),
            squash(&key.pem),
            "{id}: the agent's public key is not Vault's"
        );
    }
    let output = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            "vault",
            "--type",
            "rsa-4096",
            "gen-rsa-4096",
        ],
    );
    assert_ok(&output, "keyward keys generate --backend vault");
    assert_eq!(
        bao.read("transit/keys/gen-rsa-4096")["data"]["type"],
        "rsa-4096"
    );
    // A name Vault already has is not created again.
    let again = client
        .generate_key("vault", "api-ec-p256", KeySpec::EcP256)
        .await
        .expect_err("generating an existing key");
    assert_eq!(again.code(), Some(Code::AlreadyExists), "{again}");

    let listed = client.list_keys().await.expect("list keys");
    let mut ids: Vec<&str> = listed
        .iter()
        .filter(|k| k.backend == "vault")
        .map(|k| k.key_id.as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "gen-ec-p521",
            "gen-rsa-3072",
            "gen-rsa-4096",
            "vault/api-ec-p256",
            "vault/api-ec-p384",
            "vault/api-ed25519",
            "vault/api-rsa-2048",
        ],
        "{listed:?}"
    );
    let ed = client
        .public_key("vault/api-ed25519")
        .await
        .expect("ed25519 public key");
    let raw = STANDARD
        .decode(bao.public_key("api-ed25519", 1))
        .expect("base64");
    assert!(
        ed.der.ends_with(&raw),
        "the Ed25519 SPKI does not hold Vault's key"
    );
    let p384 = client.public_key("vault/api-ec-p384").await.expect("p384");
    assert_eq!(squash(&p384.pem), squash(&bao.public_key("api-ec-p384", 1)));

    check_backend(&client, "vault").await;
    assert!(
        !daemon.log().contains(bao.root_token()),
        "the token is in the daemon's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_moves_the_key_on_and_pinned_versions_stay() {
    let Some(bao) = OpenBao::dev() else { return };
    bao.create_key("rot", "ecdsa-p256");
    bao.create_key("rot-rsa", "rsa-2048");
    let work = tempfile::tempdir().expect("temp dir");
    let v1_der = pem_to_der(work.path(), &bao.public_key("rot", 1));
    let extra = "[[key]]\nid = \"current\"\nbackend = \"vault\"\nref = \"rot\"\n\
                 [[key]]\nid = \"pinned\"\nbackend = \"vault\"\nref = \"rot@1\"\n\
                 [[key]]\nid = \"pinned-rsa\"\nbackend = \"vault\"\nref = \"rot-rsa@1\"\n\
                 [[key]]\nid = \"future\"\nbackend = \"vault\"\nref = \"rot@9\"\n";
    let daemon = daemon(&bao, extra).await;
    let client = daemon.client().await;

    let before = client.public_key("current").await.expect("current key");
    assert_eq!(before.key_version, "1");
    assert_eq!(before.der, v1_der);
    assert_eq!(sign(&client, "current", b"before").await.key_version, "1");

    bao.rotate_key("rot");
    bao.rotate_key("rot-rsa");
    let v2_der = pem_to_der(work.path(), &bao.public_key("rot", 2));
    assert_ne!(v1_der, v2_der);

    // The first signature after the rotation is made with version 2, without any reload,
    // and the agent now serves version 2's public key.
    let sig = sign(&client, "current", b"right after the rotation").await;
    assert_eq!(
        sig.key_version, "2",
        "a signature after the rotation is not version 2"
    );
    keyward_sdk::verify_message(
        &v2_der,
        sig.algorithm,
        b"right after the rotation",
        &sig.bytes,
        sig.format,
    )
    .expect("a signature made after the rotation verifies with version 2's key");
    let after = client.public_key("current").await.expect("current key");
    assert_eq!(after.key_version, "2");
    assert_eq!(after.der, v2_der, "GetPublicKey does not give version 2");
    let message = random_bytes(80);
    let sig = sign(&client, "current", &message).await;
    assert_eq!(sig.key_version, "2");
    keyward_sdk::verify_message(&v2_der, sig.algorithm, &message, &sig.bytes, sig.format)
        .expect("a version 2 signature verifies with version 2's key");
    check_key(&client, "current").await;

    // The pinned key still signs with version 1, and serves version 1's public key.
    let pinned = client.public_key("pinned").await.expect("pinned key");
    assert_eq!(pinned.key_version, "1");
    assert_eq!(pinned.der, v1_der);
    let sig = sign(&client, "pinned", &message).await;
    assert_eq!(sig.key_version, "1");
    keyward_sdk::verify_message(&v1_der, sig.algorithm, &message, &sig.bytes, sig.format)
        .expect("a pinned signature verifies with version 1's key");
    assert!(
        keyward_sdk::verify_message(&v2_der, sig.algorithm, &message, &sig.bytes, sig.format)
            .is_err(),
        "a version 1 signature verifies with version 2's key"
    );
    check_key(&client, "pinned").await;
    check_key(&client, "pinned-rsa").await;
    let pinned_rsa = client.public_key("pinned-rsa").await.expect("pinned rsa");
    assert_eq!(
        pinned_rsa.der,
        pem_to_der(work.path(), &bao.public_key("rot-rsa", 1))
    );

    // A version that does not exist is not a key.
    let error = sign_error(&client, "future").await;
    assert_eq!(error.code(), Some(Code::NotFound), "{error}");
    assert!(error.to_string().contains("no version 9"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_needs_the_servers_ca() {
    let Some(bao) = OpenBao::dev_tls() else {
        return;
    };
    bao.create_key("tls-key", "ecdsa-p384");
    // The same server without ca_file: the system's roots do not know the dev CA.
    let no_ca = format!(
        "[[backend]]\nname = \"vault-no-ca\"\ntype = \"vault\"\naddress = \"{}\"\ntoken_env = \"{TOKEN_ENV}\"\n",
        bao.address()
    );
    assert!(bao.address().starts_with("https://"));
    let daemon = daemon(&bao, &no_ca).await;
    let client = daemon.client().await;

    check_key(&client, "vault/tls-key").await;

    let error = client
        .public_key("vault-no-ca/tls-key")
        .await
        .expect_err("a server whose CA is not trusted");
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("certificate") && text.contains("ca_file"),
        "no clear TLS error: {text}"
    );
    assert!(!text.contains(bao.root_token()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_or_sealed_vault_is_unavailable_until_it_is_back() {
    let Some(mut bao) = OpenBao::persistent() else {
        return;
    };
    bao.create_key("durable", "ecdsa-p256");
    bao.create_key("durable-ed", "ed25519");
    bao.stop();

    // The daemon starts although Vault is down.
    let extra = "[[key]]\nid = \"durable\"\nbackend = \"vault\"\nref = \"durable\"\n";
    let daemon = daemon(&bao, extra).await;
    let client = daemon.client().await;
    let error = sign_error(&client, "durable").await;
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(error.to_string().contains(&bao.address()), "{error}");

    // Back, but sealed.
    bao.start_again();
    let error = sign_error(&client, "durable").await;
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(error.to_string().contains("vault is sealed"), "{error}");

    // Unsealed: signing resumes in the same daemon.
    bao.unseal();
    check_key(&client, "durable").await;

    // Stopped while in use: the next call fails fast, then works again after a restart.
    bao.stop();
    let started = std::time::Instant::now();
    let error = sign_error(&client, "durable").await;
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10), "{error}");
    bao.start_again();
    bao.unseal();
    let message = b"after the restart";
    let sig = sign(&client, "durable", message).await;
    let key = client.public_key("durable").await.expect("public key");
    keyward_sdk::verify_message(&key.der, sig.algorithm, message, &sig.bytes, sig.format)
        .expect("verifies");
    check_key(&client, "vault/durable-ed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_runs_as_a_plugin_process() {
    let Some(bao) = OpenBao::dev() else { return };
    bao.create_key("isolated", "rsa-2048");
    let table = bao.backend_toml(
        "vault",
        &format!("token_env = \"{TOKEN_ENV}\"\nisolation = \"process\""),
    );
    let daemon = DaemonBuilder::new()
        .extra_toml(&table)
        .env(TOKEN_ENV, bao.root_token())
        .start()
        .await;
    let client = daemon.client().await;
    let key = client
        .generate_key("vault", "made-by-plugin", KeySpec::Ed25519)
        .await
        .expect("generate through the plugin");
    assert_eq!(key.key_version, "1");
    check_backend(&client, "vault").await;
    let sig = client
        .sign_message(
            "vault/isolated",
            b"m",
            &SignOptions {
                format: SignatureFormat::Der,
                ..SignOptions::default()
            },
        )
        .await
        .expect("sign");
    assert_eq!(sig.key_version, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_mount_or_key_type_is_explained() {
    let Some(bao) = OpenBao::dev() else { return };
    bao.create_key("secret-box", "aes256-gcm96");
    let wrong_mount = format!(
        "[[backend]]\nname = \"elsewhere\"\ntype = \"vault\"\naddress = \"{}\"\nmount = \"nowhere\"\ntoken_env = \"{TOKEN_ENV}\"\n\
         [[key]]\nid = \"lost\"\nbackend = \"elsewhere\"\nref = \"k\"\n\
         [[key]]\nid = \"box\"\nbackend = \"vault\"\nref = \"secret-box\"\n",
        bao.address()
    );
    let daemon = daemon(&bao, &wrong_mount).await;
    let client = daemon.client().await;

    let error = sign_error(&client, "lost").await;
    assert_eq!(error.code(), Some(Code::NotFound), "{error}");
    assert!(error.to_string().contains("check `mount`"), "{error}");

    let error = sign_error(&client, "box").await;
    assert_eq!(error.code(), Some(Code::Unimplemented), "{error}");
    assert!(error.to_string().contains("aes256-gcm96"), "{error}");
}
