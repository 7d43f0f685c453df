//! The `awskms` backend against a real local-kms: every signing key spec (keys made through the
//! KMS API, the SDK and the CLI), discovery and what it skips, and keys named by alias, alias
//! ARN, key ARN and key id. Outages, rate limits, credentials and the plugin process are in
//! `awskms_faults.rs`.
//!
//! local-kms signs RSA-PSS with the longest salt where AWS uses a salt as long as the hash, so
//! here every PSS signature must be refused by the daemon's verify-before-return, with the salt
//! named; ECDSA and PKCS#1 v1.5 signatures must verify with openssl and the SDK.

use keyward_sdk::{Client, KeySpec, SignOptions, SignatureAlgorithm as Alg, SignatureFormat};
use keyward_tests::cli::assert_ok;
use keyward_tests::conformance::{
    check_key, digest_len, expected_algorithms, is_ecdsa, openssl_verify,
};
use keyward_tests::localkms::{LocalKms, isolated_aws_env};
use keyward_tests::wait;
use keyward_tests::{DaemonBuilder, TestDaemon, random_bytes, run_cli};
use tonic::Code;

/// The daemon's message when a PSS signature uses another salt length than the hash's.
const SALT_ERROR: &str = "salt length other than the hash length";

/// A daemon with an `awskms` backend named `awskms` on `kms`, and `extra` TOML after it.
async fn daemon(kms: &LocalKms, extra: &str) -> TestDaemon {
    let table = kms.backend_toml("awskms", "");
    isolated_aws_env(DaemonBuilder::new())
        .extra_toml(&format!("{table}{extra}"))
        .start()
        .await
}

fn is_pss(alg: Alg) -> bool {
    matches!(
        alg,
        Alg::RsaPssSha256 | Alg::RsaPssSha384 | Alg::RsaPssSha512
    )
}

/// Signs `message` with `alg` in `format`; panics on failure.
async fn sign(
    client: &Client,
    key_id: &str,
    alg: Alg,
    format: SignatureFormat,
    message: &[u8],
) -> Vec<u8> {
    let options = SignOptions {
        algorithm: Some(alg),
        format,
        purpose: "awskms test".into(),
    };
    client
        .sign_message(key_id, message, &options)
        .await
        .unwrap_or_else(|e| panic!("{key_id}: sign with {}: {e}", alg.name()))
        .bytes
}

/// The signing contract of one awskms key, with local-kms's PSS refused as it must be: every
/// algorithm the key lists, both ECDSA encodings, openssl and SDK verification, tampering,
/// malformed requests, and 32 concurrent signatures.
async fn check_awskms_key(client: &Client, key_id: &str) {
    let key = client
        .public_key(key_id)
        .await
        .unwrap_or_else(|e| panic!("{key_id}: public key: {e}"));
    let spec = key.info.key_spec();
    let algorithms: Vec<Alg> = key.info.algorithms().collect();
    assert_eq!(algorithms, expected_algorithms(spec), "{key_id}");
    let work = tempfile::tempdir().expect("temp dir");
    let pem = work.path().join("pub.pem");
    std::fs::write(&pem, &key.pem).expect("write pub.pem");
    for &alg in &algorithms {
        let message = random_bytes(200);
        if is_pss(alg) {
            let options = SignOptions {
                algorithm: Some(alg),
                ..SignOptions::default()
            };
            let error = client
                .sign_message(key_id, &message, &options)
                .await
                .expect_err("local-kms's PSS signature (maximum salt) must be refused");
            assert_eq!(
                error.code(),
                Some(Code::Internal),
                "{key_id} {}: {error}",
                alg.name()
            );
            assert!(error.to_string().contains(SALT_ERROR), "{key_id}: {error}");
            continue;
        }
        let formats: &[SignatureFormat] = if is_ecdsa(alg) {
            &[SignatureFormat::Der, SignatureFormat::Raw]
        } else {
            &[SignatureFormat::Unspecified]
        };
        for &format in formats {
            let signature = sign(client, key_id, alg, format, &message).await;
            let verify_as = if format == SignatureFormat::Raw {
                format
            } else {
                SignatureFormat::Der
            };
            keyward_sdk::verify_message(&key.der, alg, &message, &signature, verify_as)
                .unwrap_or_else(|e| panic!("{key_id} {}: SDK verify: {e}", alg.name()));
            let mut tampered = message.clone();
            tampered[0] ^= 1;
            assert!(
                keyward_sdk::verify_message(&key.der, alg, &tampered, &signature, verify_as)
                    .is_err(),
                "{key_id} {}: a tampered message verifies",
                alg.name()
            );
            if format != SignatureFormat::Raw {
                openssl_verify(work.path(), &pem, alg, &message, &signature)
                    .unwrap_or_else(|e| panic!("{key_id}: {e}"));
                assert!(openssl_verify(work.path(), &pem, alg, &tampered, &signature).is_err());
            }
        }
    }
    check_rejections(client, key_id, spec, &algorithms).await;
    check_concurrent(client, key_id, &key.der, &algorithms).await;
}

async fn check_rejections(client: &Client, key_id: &str, spec: KeySpec, algorithms: &[Alg]) {
    let first = algorithms[0];
    let len = digest_len(first).expect("a hashed algorithm");
    let options = |alg| SignOptions {
        algorithm: Some(alg),
        ..SignOptions::default()
    };
    for wrong in [len - 1, len + 1] {
        let error = client
            .sign_digest(key_id, &random_bytes(wrong), &options(first))
            .await
            .expect_err("a digest of the wrong length");
        assert_eq!(
            error.code(),
            Some(Code::InvalidArgument),
            "{key_id}: {error}"
        );
    }
    let mismatch = if matches!(spec, KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521) {
        Alg::RsaPkcs1Sha256
    } else {
        Alg::EcdsaSha256
    };
    for alg in [mismatch, Alg::Ed25519] {
        let error = client
            .sign_message(key_id, b"m", &options(alg))
            .await
            .expect_err("an algorithm that does not fit the key");
        assert_eq!(
            error.code(),
            Some(Code::InvalidArgument),
            "{key_id} {}: {error}",
            alg.name()
        );
    }
}

async fn check_concurrent(client: &Client, key_id: &str, der: &[u8], algorithms: &[Alg]) {
    let alg = *algorithms
        .iter()
        .find(|a| !is_pss(**a))
        .expect("a non-PSS algorithm");
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (client, key_id) = (client.clone(), key_id.to_string());
        tasks.push(tokio::spawn(async move {
            let message = format!("concurrent {i}").into_bytes();
            let signature = sign(&client, &key_id, alg, SignatureFormat::Der, &message).await;
            (message, signature)
        }));
    }
    for task in tasks {
        let (message, signature) = task.await.expect("signing task");
        keyward_sdk::verify_message(der, alg, &message, &signature, SignatureFormat::Der)
            .unwrap_or_else(|e| panic!("{key_id}: concurrent signature: {e}"));
    }
}

/// The DER public key behind an id, through the agent.
async fn served_der(client: &Client, key_id: &str) -> Vec<u8> {
    client
        .public_key(key_id)
        .await
        .unwrap_or_else(|e| panic!("public key of {key_id}: {e}"))
        .der
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signing_key_spec_conforms() {
    let Some(kms) = LocalKms::start() else { return };
    let p256 = kms.create_signing_key("ECC_NIST_P256");
    kms.create_alias("alias/api-p256", &p256);
    let p384 = kms.create_signing_key("ECC_NIST_P384");
    let p521 = kms.create_signing_key("ECC_NIST_P521");
    // An alias keyward cannot use as an id: the key is listed under its key id.
    kms.create_alias("alias/team/p521", &p521);
    let rsa = kms.create_signing_key("RSA_2048");
    kms.create_alias("alias/api-rsa-2048", &rsa);
    // Never listed: not for signing, a curve keyward does not sign with, disabled.
    kms.create_key("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT");
    kms.create_key("RSA_2048", "ENCRYPT_DECRYPT");
    kms.create_signing_key("ECC_SECG_P256K1");
    let disabled = kms.create_signing_key("ECC_NIST_P256");
    kms.set_enabled(&disabled, false);

    let daemon = daemon(&kms, "").await;
    let client = daemon.client().await;
    for (id, spec) in [
        ("gen-p384", KeySpec::EcP384),
        ("gen-rsa-3072", KeySpec::Rsa3072),
    ] {
        let key = client
            .generate_key("awskms", id, spec)
            .await
            .unwrap_or_else(|e| panic!("generate {id}: {e}"));
        assert_eq!(key.info.key_spec(), spec);
        assert_eq!(key.info.backend_type, "awskms");
        let in_kms = kms.describe(&format!("alias/{id}"));
        assert_eq!(in_kms["KeyUsage"], "SIGN_VERIFY", "{in_kms}");
        assert_eq!(key.der, kms.public_key_der(&format!("alias/{id}")), "{id}");
    }
    let output = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            "awskms",
            "--type",
            "rsa-4096",
            "gen-rsa-4096",
        ],
    );
    assert_ok(&output, "keyward keys generate --backend awskms");
    assert_eq!(kms.describe("alias/gen-rsa-4096")["KeySpec"], "RSA_4096");
    let again = client
        .generate_key("awskms", "api-p256", KeySpec::EcP256)
        .await
        .expect_err("a name KMS already has as an alias");
    assert_eq!(again.code(), Some(Code::AlreadyExists), "{again}");
    let ed = client
        .generate_key("awskms", "gen-ed", KeySpec::Ed25519)
        .await
        .expect_err("Ed25519 is not supported");
    assert_eq!(ed.code(), Some(Code::Unimplemented), "{ed}");
    assert!(ed.to_string().contains("Ed25519"), "{ed}");

    let listed = client.list_keys().await.expect("list keys");
    let mut ids: Vec<String> = listed
        .iter()
        .filter(|k| k.backend == "awskms")
        .map(|k| k.key_id.clone())
        .collect();
    ids.sort_unstable();
    let mut want = vec![
        "awskms/api-p256".to_string(),
        "awskms/api-rsa-2048".to_string(),
        format!("awskms/{p384}"),
        format!("awskms/{p521}"),
        "gen-p384".to_string(),
        "gen-rsa-3072".to_string(),
        "gen-rsa-4096".to_string(),
    ];
    want.sort_unstable();
    assert_eq!(ids, want, "{listed:?}\n{}", daemon.log());
    // A signing key of a spec keyward does not sign with is skipped with a warning that says
    // so (the backend's log, a plugin's in time, reaches the daemon's log asynchronously).
    wait::for_log(
        &daemon,
        &["WARN", "ECC_SECG_P256K1"],
        1,
        std::time::Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        served_der(&client, "awskms/api-p256").await,
        kms.public_key_der(&p256)
    );
    assert_eq!(
        served_der(&client, &format!("awskms/{p521}")).await,
        kms.public_key_der(&p521)
    );

    // The ECDSA keys meet the whole contract; RSA keys meet it but for local-kms's PSS salt.
    for id in [
        "awskms/api-p256",
        &format!("awskms/{p384}"),
        &format!("awskms/{p521}"),
        "gen-p384",
    ] {
        check_key(&client, id).await;
    }
    for id in &ids {
        check_awskms_key(&client, id).await;
    }
    let missing = client
        .sign_message("awskms/no-such-alias", b"m", &SignOptions::default())
        .await
        .expect_err("an alias KMS does not have");
    assert_eq!(missing.code(), Some(Code::NotFound), "{missing}");
    let unknown_id = "awskms/0123abcd-0000-4000-8000-000000000000";
    let missing = client
        .public_key(unknown_id)
        .await
        .expect_err("a key id KMS does not have");
    assert_eq!(missing.code(), Some(Code::NotFound), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_arns_and_key_ids_name_keys() {
    let Some(kms) = LocalKms::start() else { return };
    let first = kms.create_signing_key("ECC_NIST_P256");
    let second = kms.create_signing_key("ECC_NIST_P256");
    kms.create_alias("alias/release", &first);
    let not_signing = kms.create_key("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT");
    let key = |id: &str, backend: &str, reference: &str| {
        format!("[[key]]\nid = \"{id}\"\nbackend = \"{backend}\"\nref = \"{reference}\"\n")
    };
    let extra = [
        key("by-alias", "awskms", "alias/release"),
        key(
            "by-alias-arn",
            "awskms",
            "arn:aws:kms:eu-west-1:111122223333:alias/release",
        ),
        key("by-arn", "awskms", &kms.key_arn(&first)),
        key("by-id", "awskms", &first),
        key("second", "hidden", &second),
        key("not-signing", "awskms", &not_signing),
        key("bad-name", "awskms", "release.v2"),
        kms.backend_toml("hidden", "discover = false"),
    ]
    .concat();
    let mut daemon = daemon(&kms, &extra).await;
    let client = daemon.client().await;

    let first_der = kms.public_key_der(&first);
    for id in [
        "by-alias",
        "by-alias-arn",
        "by-arn",
        "by-id",
        "awskms/release",
    ] {
        assert_eq!(served_der(&client, id).await, first_der, "{id}");
        let message = random_bytes(50);
        let signature = sign(
            &client,
            id,
            Alg::EcdsaSha256,
            SignatureFormat::Raw,
            &message,
        )
        .await;
        keyward_sdk::verify_message(
            &first_der,
            Alg::EcdsaSha256,
            &message,
            &signature,
            SignatureFormat::Raw,
        )
        .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    // A backend that does not discover lists nothing, but serves the keys the config names.
    let listed = client.list_keys().await.expect("list keys");
    assert!(
        !listed.iter().any(|k| k.key_id.starts_with("hidden/")),
        "{listed:?}"
    );
    assert!(listed.iter().any(|k| k.key_id == "second"), "{listed:?}");
    check_key(&client, "second").await;

    // The alias moves to another key. Signatures keep matching the public key the agent
    // serves: the configured id keeps its key until keywardd restarts, the discovered id
    // follows the alias once the keys are listed again.
    kms.update_alias("alias/release", &second);
    let second_der = kms.public_key_der(&second);
    let message = b"after the alias moved";
    for id in ["by-alias", "awskms/release"] {
        let signature = sign(&client, id, Alg::EcdsaSha256, SignatureFormat::Der, message).await;
        let served = served_der(&client, id).await;
        assert_eq!(served, first_der, "{id}");
        keyward_sdk::verify_message(
            &served,
            Alg::EcdsaSha256,
            message,
            &signature,
            SignatureFormat::Der,
        )
        .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    client.list_keys().await.expect("list keys");
    assert_eq!(served_der(&client, "awskms/release").await, second_der);
    let signature = sign(
        &client,
        "awskms/release",
        Alg::EcdsaSha256,
        SignatureFormat::Der,
        message,
    )
    .await;
    keyward_sdk::verify_message(
        &second_der,
        Alg::EcdsaSha256,
        message,
        &signature,
        SignatureFormat::Der,
    )
    .expect("the moved alias signs with its new key");
    daemon.restart().await;
    let client = daemon.client().await;
    assert_eq!(served_der(&client, "by-alias").await, second_der);
    assert_eq!(served_der(&client, "by-arn").await, first_der);

    let error = client
        .public_key("not-signing")
        .await
        .expect_err("an encryption key");
    assert_eq!(error.code(), Some(Code::Unimplemented), "{error}");
    assert!(error.to_string().contains("SIGN_VERIFY"), "{error}");
    let error = client
        .public_key("bad-name")
        .await
        .expect_err("a name KMS cannot hold");
    assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
}
