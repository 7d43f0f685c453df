//! The `local` backend through a real daemon: generated keys of every spec, encryption at rest,
//! imported PEM files, file permissions, and the key registry across restarts.

use std::fs;
use std::path::{Path, PathBuf};

use keyward_sdk::{Client, KeySpec, SignOptions};
use keyward_tests::conformance::{ALL_SPECS, check_backend, check_key, expected_algorithms};
use keyward_tests::{
    DaemonBuilder, TestDaemon, mode_of, openssl, openssl_genpkey, random_bytes, set_mode,
    toml_string,
};
use tonic::Code;

const PASS_ENV: &str = "KEYWARD_TEST_PASSPHRASE";

/// Generates `key_id` and checks what the agent answers.
async fn generate(client: &Client, key_id: &str, spec: KeySpec) {
    let key = client
        .generate_key("local", key_id, spec)
        .await
        .unwrap_or_else(|e| panic!("generate {key_id} ({}): {e}", spec.name()));
    assert_eq!(key.info.key_id, key_id);
    assert_eq!(key.info.backend, "local");
    assert_eq!(key.info.backend_type, "local");
    assert_eq!(key.info.key_spec(), spec, "{key_id}");
    assert_eq!(
        key.info.algorithms().collect::<Vec<_>>(),
        expected_algorithms(spec),
        "{key_id}"
    );
    assert!(
        key.pem.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{key_id}"
    );
    let again = client
        .public_key(key_id)
        .await
        .expect("public key of a new key");
    assert_eq!(
        again.der, key.der,
        "{key_id}: GenerateKey and GetPublicKey disagree"
    );
}

/// The `.pem` files in a directory.
fn pem_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .collect();
    files.sort();
    files
}

/// An error from the agent for `key_id`, or a panic if signing works.
async fn sign_error(client: &Client, key_id: &str) -> keyward_sdk::Error {
    match client
        .sign_message(key_id, b"must not sign", &SignOptions::default())
        .await
    {
        Ok(_) => panic!("{key_id} signed although it must be unusable"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_spec_conforms() {
    let daemon = TestDaemon::start("").await;
    let client = daemon.client().await;
    for spec in ALL_SPECS {
        generate(&client, &format!("gen-{}", spec.name()), spec).await;
    }
    let listed = client.list_keys().await.expect("list");
    for spec in ALL_SPECS {
        let id = format!("gen-{}", spec.name());
        let key = listed.iter().find(|k| k.key_id == id);
        assert_eq!(key.map(|k| k.key_spec()), Some(spec), "{id} in {listed:?}");
    }
    check_backend(&client, "local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_encrypted_at_rest_and_survive_a_restart() {
    let passphrase = format!("pass-{}", hex::encode(random_bytes(12)));
    let mut daemon = DaemonBuilder::new()
        .extra_toml(&format!("passphrase_env = {}", toml_string(PASS_ENV)))
        .env(PASS_ENV, &passphrase)
        .start()
        .await;
    let client = daemon.client().await;
    let specs = [KeySpec::EcP256, KeySpec::Rsa2048, KeySpec::Ed25519];
    let mut before = Vec::new();
    for spec in specs {
        let id = format!("enc-{}", spec.name());
        generate(&client, &id, spec).await;
        before.push((id.clone(), client.public_key(&id).await.expect("pk").der));
    }
    let files = pem_files(&daemon.keys_dir());
    assert!(files.len() >= specs.len(), "key files: {files:?}");
    for file in &files {
        let text = fs::read_to_string(file).expect("read key file");
        assert!(
            text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
            "{} is not encrypted:\n{text}",
            file.display()
        );
        for plain in [
            "BEGIN PRIVATE KEY",
            "BEGIN EC PRIVATE KEY",
            "BEGIN RSA PRIVATE KEY",
        ] {
            assert!(!text.contains(plain), "{} holds {plain}", file.display());
        }
        assert!(
            !text.contains(&passphrase),
            "{} holds the passphrase",
            file.display()
        );
        // openssl cannot read it without the passphrase, and can with it.
        let path = file.to_str().expect("UTF-8 path");
        let wrong = openssl(["pkey", "-noout", "-in", path, "-passin", "pass:wrong"]);
        assert!(
            !wrong.status.success(),
            "{path} opens with a wrong passphrase"
        );
        let right = openssl([
            "pkey",
            "-noout",
            "-in",
            path,
            "-passin",
            &format!("pass:{passphrase}"),
        ]);
        assert!(
            right.status.success(),
            "{path} is not PKCS#8 encrypted with the passphrase"
        );
    }
    drop(client);

    daemon.restart().await;
    let client = daemon.client().await;
    for (id, der) in &before {
        let after = client.public_key(id).await.expect("key after restart");
        assert_eq!(&after.der, der, "{id} changed across the restart");
        check_key(&client, id).await;
    }
}

#[tokio::test]
async fn a_wrong_or_missing_passphrase_makes_keys_unusable() {
    let mut daemon = DaemonBuilder::new()
        .extra_toml(&format!("passphrase_env = {}", toml_string(PASS_ENV)))
        .env(PASS_ENV, "the right passphrase")
        .start()
        .await;
    generate(&daemon.client().await, "locked", KeySpec::EcP256).await;

    for (case, value) in [("wrong", Some("not the passphrase")), ("missing", None)] {
        match value {
            Some(value) => daemon.set_env(PASS_ENV, value),
            None => daemon.remove_env(PASS_ENV),
        }
        let outcome = daemon.try_restart().await;
        let text = match outcome {
            // Refusing to start is fine when the reason is given.
            Err(failure) => failure.log,
            Ok(()) => {
                let error = sign_error(&daemon.client().await, "locked").await;
                format!("{error}\n{}", daemon.log())
            }
        };
        let lower = text.to_lowercase();
        assert!(
            lower.contains("passphrase") || (case == "missing" && text.contains(PASS_ENV)),
            "{case} passphrase: no clear error; daemon said:\n{text}"
        );
        assert!(!text.contains("the right passphrase"));
        // Back to the right passphrase: the key works again.
        daemon.set_env(PASS_ENV, "the right passphrase");
        daemon.restart().await;
        check_key(&daemon.client().await, "locked").await;
    }
}

#[tokio::test]
async fn an_imported_openssl_key_signs() {
    let builder = DaemonBuilder::new();
    let plain = builder.dir().join("imported.pem");
    openssl_genpkey(
        &plain,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    let toml = format!(
        "[[key]]\nid = \"imported\"\nbackend = \"local\"\nref = {}\n",
        toml_string(plain.to_str().expect("UTF-8"))
    );
    let daemon = builder.extra_toml(&toml).start().await;
    let client = daemon.client().await;
    let key = client.public_key("imported").await.expect("imported key");
    assert_eq!(key.info.key_spec(), KeySpec::EcP384);
    let ours = openssl([
        "pkey",
        "-in",
        plain.to_str().expect("UTF-8"),
        "-pubout",
        "-outform",
        "DER",
    ]);
    assert!(ours.status.success());
    assert_eq!(
        key.der, ours.stdout,
        "the agent's public key is not the file's"
    );
    check_key(&client, "imported").await;
    drop(daemon);

    // An encrypted PKCS#8 file, with the backend's passphrase.
    let builder = DaemonBuilder::new();
    let path = builder.dir().join("enc.pem");
    openssl_genpkey(
        &path,
        &[
            "-algorithm",
            "ED25519",
            "-aes-256-cbc",
            "-pass",
            "pass:imp0rt",
        ],
    );
    let toml = format!(
        "passphrase_env = \"IMPORT_PASS\"\n[[key]]\nid = \"imported-enc\"\nbackend = \"local\"\nref = {}\n",
        toml_string(path.to_str().expect("UTF-8"))
    );
    let daemon = builder
        .extra_toml(&toml)
        .env("IMPORT_PASS", "imp0rt")
        .start()
        .await;
    let client = daemon.client().await;
    let key = client
        .public_key("imported-enc")
        .await
        .expect("encrypted import");
    assert_eq!(key.info.key_spec(), KeySpec::Ed25519);
    check_key(&client, "imported-enc").await;
}

#[tokio::test]
async fn key_files_readable_by_others_are_refused() {
    let builder = DaemonBuilder::new();
    let keys = builder.dir().join("keys");
    fs::create_dir(&keys).expect("mkdir keys");
    set_mode(&keys, 0o700);
    openssl_genpkey(
        &keys.join("tight.pem"),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    openssl_genpkey(&keys.join("loose.pem"), &["-algorithm", "ED25519"]);
    set_mode(&keys.join("loose.pem"), 0o644);
    let daemon = builder.start().await;
    let client = daemon.client().await;

    let listed: Vec<String> = client
        .list_keys()
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert!(listed.contains(&"local/tight".to_string()), "{listed:?}");
    assert!(
        !listed.iter().any(|id| id.contains("loose")),
        "a 0644 key is listed: {listed:?}"
    );
    check_key(&client, "local/tight").await;
    let error = sign_error(&client, "local/loose").await;
    let text = format!("{error}\n{}", daemon.log());
    assert!(
        text.contains("chmod 600"),
        "no `chmod 600` hint for a 0644 key file:\n{text}"
    );
    drop(daemon);

    // Named in [[key]]: refused too, at start or when used.
    let builder = DaemonBuilder::new();
    let loose = builder.dir().join("named.pem");
    openssl_genpkey(
        &loose,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    set_mode(&loose, 0o640);
    let toml = format!(
        "[[key]]\nid = \"named\"\nbackend = \"local\"\nref = {}\n",
        toml_string(loose.to_str().expect("UTF-8"))
    );
    let text = match builder.extra_toml(&toml).try_start().await {
        Err(failure) => failure.log,
        Ok(daemon) => {
            let error = sign_error(&daemon.client().await, "named").await;
            format!("{error}\n{}", daemon.log())
        }
    };
    assert!(
        text.contains("chmod 600"),
        "no `chmod 600` hint for a 0640 [[key]] file:\n{text}"
    );
}

#[tokio::test]
async fn new_key_files_are_private() {
    let daemon = TestDaemon::start("").await;
    let client = daemon.client().await;
    generate(&client, "private-ec", KeySpec::EcP256).await;
    generate(&client, "private-ed", KeySpec::Ed25519).await;
    let keys = daemon.keys_dir();
    assert_eq!(mode_of(&keys), 0o700, "key directory mode");
    let files = pem_files(&keys);
    assert!(files.len() >= 2, "{files:?}");
    for entry in fs::read_dir(&keys).expect("read keys") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            assert_eq!(mode_of(&path), 0o600, "{}", path.display());
        }
    }
    for file in &files {
        let text = fs::read_to_string(file).expect("read");
        assert!(
            text.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{}: not PKCS#8",
            file.display()
        );
    }
}

#[tokio::test]
async fn generated_ids_survive_a_restart() {
    let mut daemon = TestDaemon::start("").await;
    let client = daemon.client().await;
    let keys = [
        ("persist-a", KeySpec::EcP521),
        ("persist.b_2", KeySpec::Ed25519),
    ];
    let mut ders = Vec::new();
    for (id, spec) in keys {
        generate(&client, id, spec).await;
        ders.push(client.public_key(id).await.expect("pk").der);
    }
    drop(client);
    daemon.restart().await;
    let client = daemon.client().await;
    let listed = client.list_keys().await.expect("list");
    for ((id, spec), der) in keys.into_iter().zip(ders) {
        let info = listed.iter().find(|k| k.key_id == id);
        assert_eq!(
            info.map(|k| k.key_spec()),
            Some(spec),
            "{id} after restart: {listed:?}"
        );
        assert_eq!(client.public_key(id).await.expect("pk").der, der, "{id}");
        check_key(&client, id).await;
    }
    assert!(
        matches!(client.generate_key("local", "persist-a", KeySpec::EcP256).await,
            Err(ref e) if e.code() == Some(Code::AlreadyExists)),
        "a restored id can be generated again"
    );
}

#[tokio::test]
async fn generate_errors() {
    let daemon = TestDaemon::start("").await;
    let client = daemon.client().await;
    generate(&client, "dup", KeySpec::EcP256).await;
    let original = client.public_key("dup").await.expect("pk").der;

    let long = "x".repeat(129);
    let cases: &[(&str, &str, KeySpec, Code)] = &[
        ("local", "dup", KeySpec::EcP256, Code::AlreadyExists),
        ("local", "dup", KeySpec::Ed25519, Code::AlreadyExists),
        ("no-such-backend", "fresh", KeySpec::EcP256, Code::NotFound),
        ("local", "../x", KeySpec::EcP256, Code::InvalidArgument),
        ("local", "a/b", KeySpec::EcP256, Code::InvalidArgument),
        ("local", "", KeySpec::EcP256, Code::InvalidArgument),
        ("local", ".hidden", KeySpec::EcP256, Code::InvalidArgument),
        (
            "local",
            "with space",
            KeySpec::EcP256,
            Code::InvalidArgument,
        ),
        ("local", &long, KeySpec::EcP256, Code::InvalidArgument),
        (
            "local",
            "no-spec",
            KeySpec::Unspecified,
            Code::InvalidArgument,
        ),
    ];
    for (backend, id, spec, code) in cases {
        let result = client.generate_key(backend, id, *spec).await;
        let got = result.as_ref().err().and_then(keyward_sdk::Error::code);
        assert_eq!(
            got,
            Some(*code),
            "generate {backend}/{id:?} ({}): {result:?}",
            spec.name()
        );
    }
    assert_eq!(
        client.public_key("dup").await.expect("pk").der,
        original,
        "dup was replaced"
    );
    let listed: Vec<String> = client
        .list_keys()
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(listed, ["dup"], "a failed generate left a key behind");
    assert!(!daemon.dir().join("x.pem").exists() && !daemon.dir().join("x").exists());
    let entries: Vec<_> = fs::read_dir(daemon.keys_dir()).expect("keys").collect();
    assert_eq!(pem_files(&daemon.keys_dir()).len(), 1, "{entries:?}");
}
