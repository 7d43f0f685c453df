//! `keyward sign` and `keyward verify` end to end against a real daemon.

use std::fs;

use keyward_sdk::{SignatureAlgorithm as Alg, SignatureFormat};
use keyward_tests::cli::{assert_ok, path, setup, stdout_signature};
use keyward_tests::conformance::openssl_verify;
use keyward_tests::{random_bytes, run_cli, run_cli_with_stdin, stderr_text};
use sha2::{Digest, Sha256, Sha384};

struct SignCase {
    what: &'static str,
    key: &'static str,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    to_file: bool,
    algorithm: Alg,
    raw: bool,
}

#[tokio::test]
async fn sign_every_way() {
    let daemon = setup().await;
    let client = daemon.client().await;
    let work = tempfile::tempdir().expect("temp dir");
    let message = random_bytes(300);
    let msg = work.path().join("msg.bin");
    fs::write(&msg, &message).expect("write");
    let m = path(&msg).to_string();
    let s = |items: &[&str]| items.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let case = |what, key, args: Vec<String>, algorithm| SignCase {
        what,
        key,
        args,
        stdin: None,
        to_file: false,
        algorithm,
        raw: false,
    };
    let sha256 = hex::encode(Sha256::digest(&message));
    let sha384 = hex::encode(Sha384::digest(&message));
    let cases = vec![
        case(
            "--input FILE",
            "cli-ec",
            s(&["--input", &m]),
            Alg::EcdsaSha256,
        ),
        SignCase {
            stdin: Some(message.clone()),
            ..case(
                "--input -",
                "cli-ec",
                s(&["--input", "-"]),
                Alg::EcdsaSha256,
            )
        },
        case(
            "--digest",
            "cli-ec",
            s(&["--digest", &sha256]),
            Alg::EcdsaSha256,
        ),
        case(
            "--digest uppercase",
            "cli-ec",
            s(&["--digest", &sha256.to_uppercase()]),
            Alg::EcdsaSha256,
        ),
        case(
            "--algorithm --digest",
            "cli-ec",
            s(&["--algorithm", "ecdsa-sha384", "--digest", &sha384]),
            Alg::EcdsaSha384,
        ),
        SignCase {
            to_file: true,
            ..case("--output", "cli-ec", s(&["--input", &m]), Alg::EcdsaSha256)
        },
        SignCase {
            raw: true,
            ..case(
                "--format raw",
                "cli-ec",
                s(&["--format", "raw", "--input", &m]),
                Alg::EcdsaSha256,
            )
        },
        SignCase {
            to_file: true,
            ..case("ed25519", "cli-ed", s(&["--input", &m]), Alg::Ed25519)
        },
        SignCase {
            stdin: Some(message.clone()),
            ..case(
                "ed25519 stdin",
                "cli-ed",
                s(&["--input", "-"]),
                Alg::Ed25519,
            )
        },
        case(
            "rsa default",
            "cli-rsa",
            s(&["--input", &m]),
            Alg::RsaPssSha256,
        ),
        case(
            "rsa pkcs1",
            "cli-rsa",
            s(&["--algorithm", "rsa-pkcs1-sha256", "--input", &m]),
            Alg::RsaPkcs1Sha256,
        ),
        case(
            "rsa pss-sha384",
            "cli-rsa",
            s(&["--algorithm", "rsa-pss-sha384", "--input", &m]),
            Alg::RsaPssSha384,
        ),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let out_file = work.path().join(format!("sig-{i}.bin"));
        let mut args = s(&["sign", "--key", c.key]);
        args.extend(c.args.iter().cloned());
        if c.to_file {
            args.extend(s(&["--output", path(&out_file)]));
        }
        let output = match &c.stdin {
            Some(input) => run_cli_with_stdin(&daemon, &args, input),
            None => run_cli(&daemon, &args),
        };
        assert_ok(&output, c.what);
        let signature = if c.to_file {
            fs::read(&out_file).expect("signature file")
        } else {
            stdout_signature(&output)
        };
        let pk = client.public_key(c.key).await.expect("public key");
        let format = if c.raw {
            SignatureFormat::Raw
        } else {
            SignatureFormat::Der
        };
        if c.raw {
            assert_eq!(
                signature.len(),
                64,
                "{}: raw P-256 signature length",
                c.what
            );
        }
        keyward_sdk::verify_message(&pk.der, c.algorithm, &message, &signature, format)
            .unwrap_or_else(|e| panic!("{}: {e}", c.what));
        if !c.raw {
            let pem = work.path().join(format!("{}.pem", c.key));
            fs::write(&pem, &pk.pem).expect("write pem");
            openssl_verify(work.path(), &pem, c.algorithm, &message, &signature).unwrap_or_else(
                |e| {
                    panic!(
                        "{}: openssl does not verify the CLI's signature: {e}",
                        c.what
                    )
                },
            );
        }
    }
}

#[tokio::test]
async fn verify_valid_and_tampered() {
    let daemon = setup().await;
    let work = tempfile::tempdir().expect("temp dir");
    let msg = work.path().join("msg");
    let tampered = work.path().join("tampered");
    fs::write(&msg, b"release v1.2.3").expect("write");
    fs::write(&tampered, b"release v1.2.4").expect("write");
    let (m, t) = (path(&msg).to_string(), path(&tampered).to_string());
    // (key, sign options, verify options)
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("cli-ec", &[], &[]),
        ("cli-ec", &["--format", "raw"], &["--format", "raw"]),
        (
            "cli-ec",
            &["--algorithm", "ecdsa-sha512"],
            &["--algorithm", "ecdsa-sha512"],
        ),
        ("cli-ed", &[], &[]),
        ("cli-rsa", &[], &[]),
        (
            "cli-rsa",
            &["--algorithm", "rsa-pkcs1-sha384"],
            &["--algorithm", "rsa-pkcs1-sha384"],
        ),
    ];
    for (i, (key, sign_opts, verify_opts)) in cases.iter().enumerate() {
        let bin = work.path().join(format!("sig-{i}.bin"));
        let b64 = work.path().join(format!("sig-{i}.b64"));
        let mut sign = vec!["sign", "--key", key, "--input", &m];
        sign.extend(*sign_opts);
        assert_ok(
            &run_cli(&daemon, sign.iter().chain(&["--output", path(&bin)])),
            "sign --output",
        );
        let printed = run_cli(&daemon, &sign);
        assert_ok(&printed, "sign");
        fs::write(&b64, &printed.stdout).expect("write base64");
        for (signature, input, want) in [(&bin, &m, 0), (&b64, &m, 0), (&bin, &t, 1), (&b64, &t, 1)]
        {
            let mut args = vec![
                "verify",
                "--key",
                key,
                "--input",
                input,
                "--signature",
                path(signature),
            ];
            args.extend(*verify_opts);
            let output = run_cli(&daemon, &args);
            assert_eq!(
                output.status.code(),
                Some(want),
                "{args:?}: {}",
                stderr_text(&output)
            );
            assert!(!stderr_text(&output).contains("panicked"));
        }
    }
    // A PKCS#1 signature is not a valid PSS signature (the key's default).
    let sig = work.path().join("pkcs1.bin");
    let out = run_cli(
        &daemon,
        [
            "sign",
            "--key",
            "cli-rsa",
            "--algorithm",
            "rsa-pkcs1-sha256",
            "--input",
            &m,
            "--output",
            path(&sig),
        ],
    );
    assert_ok(&out, "sign pkcs1");
    let out = run_cli(
        &daemon,
        [
            "verify",
            "--key",
            "cli-rsa",
            "--input",
            &m,
            "--signature",
            path(&sig),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "pkcs1 signature checked as PSS: {}",
        stderr_text(&out)
    );
}
