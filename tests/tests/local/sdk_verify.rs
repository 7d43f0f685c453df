//! The SDK's RustCrypto verifier against signatures made by the `openssl` CLI, without the
//! daemon: when a conformance check fails only on the SDK side, this tells whether the SDK
//! verifier or the daemon is at fault.

use std::fs;
use std::path::Path;

use keyward_sdk::{KeySpec, SignatureAlgorithm as Alg, SignatureFormat};
use keyward_tests::conformance::{ALL_SPECS, expected_algorithms};
use keyward_tests::{openssl, openssl_genpkey, random_bytes, stderr_text};

/// `openssl genpkey` arguments for a key of `spec`.
fn genpkey_args(spec: KeySpec) -> Vec<&'static str> {
    match spec {
        KeySpec::EcP256 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        KeySpec::EcP384 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        KeySpec::EcP521 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
        KeySpec::Rsa2048 => vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        KeySpec::Rsa3072 => vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
        KeySpec::Rsa4096 => vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
        KeySpec::Ed25519 | KeySpec::Unspecified => vec!["-algorithm", "ED25519"],
    }
}

/// Signs the file `msg` with `key` the way the agent's contract describes `alg`.
fn openssl_sign(key: &Path, alg: Alg, msg: &Path, sig: &Path) {
    let (key, msg, sig) = (
        key.to_str().expect("UTF-8"),
        msg.to_str().expect("UTF-8"),
        sig.to_str().expect("UTF-8"),
    );
    let digest = match alg {
        Alg::EcdsaSha256 | Alg::RsaPssSha256 | Alg::RsaPkcs1Sha256 => "-sha256",
        Alg::EcdsaSha384 | Alg::RsaPssSha384 | Alg::RsaPkcs1Sha384 => "-sha384",
        Alg::EcdsaSha512 | Alg::RsaPssSha512 | Alg::RsaPkcs1Sha512 => "-sha512",
        Alg::Ed25519 | Alg::Unspecified => "",
    };
    let mut args = if digest.is_empty() {
        vec![
            "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", msg, "-out", sig,
        ]
    } else {
        vec!["dgst", digest, "-sign", key, "-out", sig]
    };
    if matches!(
        alg,
        Alg::RsaPssSha256 | Alg::RsaPssSha384 | Alg::RsaPssSha512
    ) {
        args.extend([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ]);
    }
    if !digest.is_empty() {
        args.push(msg);
    }
    let output = openssl(&args);
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        stderr_text(&output)
    );
}

#[test]
fn sdk_verifies_openssl_signatures_for_every_algorithm() {
    let work = tempfile::tempdir().expect("temp dir");
    let msg = work.path().join("msg");
    let message = random_bytes(200);
    fs::write(&msg, &message).expect("write");
    let mut tampered = message.clone();
    tampered[7] ^= 0x80;
    let mut failures = Vec::new();
    for spec in ALL_SPECS {
        let key = work.path().join(format!("{}.pem", spec.name()));
        openssl_genpkey(&key, &genpkey_args(spec));
        let spki = openssl([
            "pkey",
            "-in",
            key.to_str().expect("UTF-8"),
            "-pubout",
            "-outform",
            "DER",
        ]);
        assert!(spki.status.success(), "{}", stderr_text(&spki));
        for &alg in expected_algorithms(spec) {
            let sig = work
                .path()
                .join(format!("{}-{}.sig", spec.name(), alg.name()));
            openssl_sign(&key, alg, &msg, &sig);
            let signature = fs::read(&sig).expect("read signature");
            let der = SignatureFormat::Der;
            if let Err(e) =
                keyward_sdk::verify_message(&spki.stdout, alg, &message, &signature, der)
            {
                failures.push(format!("{} {}: {e}", spec.name(), alg.name()));
            }
            if keyward_sdk::verify_message(&spki.stdout, alg, &tampered, &signature, der).is_ok() {
                failures.push(format!(
                    "{} {}: a tampered message verifies",
                    spec.name(),
                    alg.name()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "keyward_sdk::verify_message rejects valid OpenSSL signatures:\n  {}",
        failures.join("\n  ")
    );
}
