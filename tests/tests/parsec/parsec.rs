//! Keys in a Parsec service through keyward: generated in its TPM provider (ECDSA, RSA PKCS#1
//! v1.5: what that provider signs, one hash per key) and its PKCS#11 provider (ECDSA and RSA
//! PKCS#1 v1.5 with any hash, or the algorithm an option names; Parsec 1.5 signs RSA-PSS with
//! neither provider); each passes the conformance suite
//! with exactly the algorithms its policy permits (openssl and RustCrypto verify, 64 concurrent
//! signs), other algorithms are refused before Parsec is asked, and the keys come back after
//! keywardd and Parsec restart.

use std::collections::BTreeMap;

use keyward_sdk::{Client, KeySpec, SignOptions, SignatureAlgorithm as Alg};
use keyward_tests::conformance::check_backend_with;

use crate::{ON_PKCS11, ON_TPM, daemon, parsec};

/// A key to make: its id, spec, generate options and the algorithms it must list.
type KeyCase = (
    &'static str,
    KeySpec,
    &'static [(&'static str, &'static str)],
    &'static [Alg],
);

async fn generate(
    client: &Client,
    backend: &str,
    key_id: &str,
    spec: KeySpec,
    options: &[(&str, &str)],
) -> Vec<Alg> {
    let options: BTreeMap<String, String> = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let key = client
        .generate_key_with(backend, key_id, spec, &options)
        .await
        .unwrap_or_else(|e| panic!("generate {key_id} ({}) on {backend}: {e}", spec.name()));
    assert_eq!(key.info.backend, backend);
    assert_eq!(key.info.key_spec(), spec, "{key_id}");
    key.info.algorithms().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_the_tpm_and_pkcs11_providers_conform() {
    let Some(mut parsec) = parsec() else {
        return;
    };
    let mut daemon = daemon(&parsec).await;
    let client = daemon.client().await;

    // The TPM provider: one hash per key, no RSA-PSS.
    use Alg::*;
    let tpm_keys: [(&str, KeySpec, &[Alg]); 3] = [
        ("tpm-ec-p256", KeySpec::EcP256, &[EcdsaSha256]),
        ("tpm-ec-p384", KeySpec::EcP384, &[EcdsaSha384]),
        ("tpm-rsa-2048", KeySpec::Rsa2048, &[RsaPkcs1Sha256]),
    ];
    for (id, spec, want) in tpm_keys {
        assert_eq!(generate(&client, ON_TPM, id, spec, &[]).await, want, "{id}");
    }
    // The PKCS#11 provider: ECDSA and RSA PKCS#1 v1.5 with any hash, or one algorithm when
    // asked. (Parsec 1.5 signs RSA-PSS with neither provider.)
    let p11_keys: [KeyCase; 4] = [
        (
            "p11-ec-p256",
            KeySpec::EcP256,
            &[],
            &[EcdsaSha256, EcdsaSha384, EcdsaSha512],
        ),
        (
            "p11-ec-p384",
            KeySpec::EcP384,
            &[],
            &[EcdsaSha384, EcdsaSha256, EcdsaSha512],
        ),
        (
            "p11-rsa-2048",
            KeySpec::Rsa2048,
            &[],
            &[RsaPkcs1Sha256, RsaPkcs1Sha384, RsaPkcs1Sha512],
        ),
        (
            "p11-rsa-3072-pkcs1",
            KeySpec::Rsa3072,
            &[("algorithm", "rsa-pkcs1-sha384")],
            &[RsaPkcs1Sha384],
        ),
    ];
    for (id, spec, options, want) in p11_keys {
        assert_eq!(
            generate(&client, ON_PKCS11, id, spec, options).await,
            want,
            "{id}"
        );
    }
    let expected: Vec<(&str, &[Alg])> = tpm_keys.iter().map(|(id, _, a)| (*id, *a)).collect();
    check_backend_with(&client, ON_TPM, &expected).await;
    let expected: Vec<(&str, &[Alg])> = p11_keys.iter().map(|(id, _, _, a)| (*id, *a)).collect();
    check_backend_with(&client, ON_PKCS11, &expected).await;

    // An algorithm the key's policy does not permit is refused by keyward, naming those it does.
    let err = client
        .sign_message(
            "tpm-rsa-2048",
            b"payload",
            &SignOptions {
                algorithm: Some(RsaPssSha256),
                ..SignOptions::default()
            },
        )
        .await
        .expect_err("the TPM provider's RSA key signs PKCS#1 v1.5 only");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("rsa-pkcs1-sha256"), "{err}");
    // An algorithm the provider cannot sign with is refused when the key is made.
    let err = client
        .generate_key_with(
            ON_PKCS11,
            "no-pss",
            KeySpec::Rsa2048,
            &BTreeMap::from([("algorithm".to_string(), "rsa-pss-sha256".to_string())]),
        )
        .await
        .expect_err("Parsec's PKCS#11 provider does not sign PSS");
    assert_eq!(err.code(), Some(tonic::Code::Unimplemented), "{err}");
    // Options the backend does not know are refused, not ignored.
    let err = client
        .generate_key_with(
            ON_PKCS11,
            "bad-option",
            KeySpec::EcP256,
            &BTreeMap::from([("slot".to_string(), "9c".to_string())]),
        )
        .await
        .expect_err("an unknown option");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    let err = client
        .generate_key(ON_TPM, "no-ed25519", KeySpec::Ed25519)
        .await
        .expect_err("no Ed25519 in Parsec");
    assert_eq!(err.code(), Some(tonic::Code::Unimplemented), "{err}");
    // A name Parsec has already.
    let err = client
        .generate_key(ON_PKCS11, "p11-ec-p256", KeySpec::EcP256)
        .await
        .expect_err("a second key of one name");
    assert!(err.to_string().contains("exists"), "{err}");

    // Both restart: Parsec keeps the keys (its key mappings, the TPM blobs, the token), and
    // keyward finds them again, with the same public keys.
    let before = client.public_key("p11-rsa-2048").await.expect("public key");
    let before_tpm = client.public_key("tpm-ec-p256").await.expect("public key");
    daemon.terminate().await;
    parsec.stop();
    parsec.start_again();
    daemon.restart().await;
    let client = daemon.client().await;
    assert_eq!(
        client.public_key("p11-rsa-2048").await.expect("after").der,
        before.der
    );
    assert_eq!(
        client.public_key("tpm-ec-p256").await.expect("after").der,
        before_tpm.der
    );
    for id in ["p11-rsa-2048", "tpm-ec-p256", "tpm-rsa-2048"] {
        let message = keyward_tests::random_bytes(48);
        let signature = client
            .sign_message(id, &message, &SignOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{id} after restarts: {e}"));
        let public = client.public_key(id).await.expect("public key");
        keyward_sdk::verify_message(
            &public.der,
            signature.algorithm,
            &message,
            &signature.bytes,
            signature.format,
        )
        .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
}
