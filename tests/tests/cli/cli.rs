//! The `keyward` CLI end to end against a real daemon: generate, list, pubkey, errors.

use std::fs;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyward_sdk::KeySpec;
use keyward_tests::cli::{KEYS, assert_cli_error, assert_cli_exit, assert_ok, exit, path, setup};
use keyward_tests::conformance::expected_algorithms;
use keyward_tests::{
    COMMAND_TIMEOUT, binary, openssl, run_cli, run_cli_at, run_with_timeout, stderr_text,
    stdout_text,
};
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;

#[tokio::test]
async fn generate_and_list() {
    let daemon = setup().await;
    let table = run_cli(&daemon, ["keys", "list"]);
    assert_ok(&table, "keys list");
    let text = stdout_text(&table);
    for (id, spec) in KEYS {
        let row = text
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("{id} not in:\n{text}"));
        assert!(
            row.contains(spec.name()),
            "{id}'s row lacks {}: {row}",
            spec.name()
        );
    }

    let json = run_cli(&daemon, ["keys", "list", "--json"]);
    assert_ok(&json, "keys list --json");
    let keys: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let keys = keys.as_array().expect("a JSON array");
    assert_eq!(keys.len(), KEYS.len(), "{keys:?}");
    let sdk = daemon.client().await.list_keys().await.expect("list");
    for (id, spec) in KEYS {
        let key = keys
            .iter()
            .find(|k| k["key_id"] == id)
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(key["backend"], "local");
        assert_eq!(key["backend_type"], "local");
        assert_eq!(key["key_spec"], spec.name());
        assert_eq!(key["has_certificate"], false);
        let info = sdk.iter().find(|k| k.key_id == id).expect("in SDK list");
        assert_eq!(key["key_version"], info.key_version.as_str());
        let names: Vec<&str> = expected_algorithms(spec).iter().map(|a| a.name()).collect();
        assert_eq!(key["algorithms"], serde_json::json!(names), "{id}");
    }

    let duplicate = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            "local",
            "--type",
            "ec-p256",
            "cli-ec",
        ],
    );
    assert_cli_error(&duplicate, "generate an existing id", &["cli-ec"]);
    let bad_type = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            "local",
            "--type",
            "ec-p999",
            "x",
        ],
    );
    assert_eq!(
        bad_type.status.code(),
        Some(exit::ERROR),
        "unknown key type: {}",
        stderr_text(&bad_type)
    );
}

#[tokio::test]
async fn pubkey_formats() {
    let daemon = setup().await;
    let client = daemon.client().await;
    let work = tempfile::tempdir().expect("temp dir");
    for (id, spec) in KEYS {
        let sdk = client.public_key(id).await.expect("public key");
        let pem = run_cli(&daemon, ["pubkey", id]);
        assert_ok(&pem, "pubkey");
        assert_eq!(
            stdout_text(&pem).trim_end(),
            sdk.pem.trim_end(),
            "{id}: default PEM"
        );
        let pem_file = work.path().join(format!("{id}.pem"));
        let out = run_cli(
            &daemon,
            ["pubkey", id, "--format", "pem", "--output", path(&pem_file)],
        );
        assert_ok(&out, "pubkey --output");
        let checked = openssl(["pkey", "-pubin", "-in", path(&pem_file), "-outform", "DER"]);
        assert!(
            checked.status.success(),
            "openssl rejects {id}'s PEM: {}",
            stderr_text(&checked)
        );
        assert_eq!(
            checked.stdout, sdk.der,
            "{id}: openssl reads another key from the PEM"
        );

        let der_file = work.path().join(format!("{id}.der"));
        let out = run_cli(
            &daemon,
            ["pubkey", id, "--format", "der", "--output", path(&der_file)],
        );
        assert_ok(&out, "pubkey --format der");
        assert_eq!(fs::read(&der_file).expect("read"), sdk.der, "{id}: DER");

        let out = run_cli(&daemon, ["pubkey", id, "--format", "jwk"]);
        assert_ok(&out, "pubkey --format jwk");
        let jwk: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JWK is JSON");
        let b64 = |field: &str| {
            let text = jwk[field]
                .as_str()
                .unwrap_or_else(|| panic!("{id}: JWK lacks {field}: {jwk}"));
            URL_SAFE_NO_PAD
                .decode(text)
                .unwrap_or_else(|e| panic!("{id}: {field} is not base64url: {e}"))
        };
        let der = &sdk.der;
        match spec {
            KeySpec::EcP256 => {
                assert_eq!(
                    (&jwk["kty"], &jwk["crv"]),
                    (&"EC".into(), &"P-256".into()),
                    "{jwk}"
                );
                assert_eq!(b64("x"), der[der.len() - 64..der.len() - 32], "x");
                assert_eq!(b64("y"), der[der.len() - 32..], "y");
            }
            KeySpec::Ed25519 => {
                assert_eq!(
                    (&jwk["kty"], &jwk["crv"]),
                    (&"OKP".into(), &"Ed25519".into()),
                    "{jwk}"
                );
                assert_eq!(b64("x"), der[der.len() - 32..], "x");
            }
            _ => {
                let key = rsa::RsaPublicKey::from_public_key_der(der).expect("RSA SPKI");
                assert_eq!(jwk["kty"], "RSA", "{jwk}");
                assert_eq!(b64("n"), key.n().to_bytes_be(), "n");
                assert_eq!(b64("e"), key.e().to_bytes_be(), "e");
            }
        }
    }
}

/// One way to call `keyward sign`, and what must come out.
#[tokio::test]
async fn error_exits() {
    let daemon = setup().await;
    let work = tempfile::tempdir().expect("temp dir");
    let msg = work.path().join("msg");
    fs::write(&msg, b"data").expect("write");
    let m = path(&msg);
    let nowhere = work.path().join("nobody-listens.sock");
    let out = run_cli_at(&nowhere, ["keys", "list"], None);
    assert_cli_exit(&out, exit::NO_AGENT, "daemon not running", &["keywardd"]);
    let out = run_cli_at(&nowhere, ["sign", "--key", "cli-ec", "--input", m], None);
    assert_cli_exit(
        &out,
        exit::NO_AGENT,
        "daemon not running (sign)",
        &["keywardd"],
    );

    let missing = work.path().join("no-such-file");
    let bad_hex = "zz".repeat(32);
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "unknown key (sign)",
            vec!["sign", "--key", "ghost-key", "--input", m],
            vec!["ghost-key"],
        ),
        (
            "unknown key (pubkey)",
            vec!["pubkey", "ghost-key"],
            vec!["ghost-key"],
        ),
        (
            "unknown key (verify)",
            vec![
                "verify",
                "--key",
                "ghost-key",
                "--input",
                m,
                "--signature",
                m,
            ],
            vec!["ghost-key"],
        ),
        (
            "bad hex",
            vec!["sign", "--key", "cli-ec", "--digest", &bad_hex],
            vec![],
        ),
        (
            "odd hex",
            vec!["sign", "--key", "cli-ec", "--digest", "abc"],
            vec![],
        ),
        (
            "short digest",
            vec!["sign", "--key", "cli-ec", "--digest", "00ff"],
            vec![],
        ),
        (
            "unknown algorithm",
            vec![
                "sign",
                "--key",
                "cli-ec",
                "--algorithm",
                "ecdsa-sha999",
                "--input",
                m,
            ],
            vec!["ecdsa-sha999"],
        ),
        (
            "algorithm not for key",
            vec![
                "sign",
                "--key",
                "cli-ec",
                "--algorithm",
                "rsa-pss-sha256",
                "--input",
                m,
            ],
            vec![],
        ),
        (
            "missing input file",
            vec!["sign", "--key", "cli-ec", "--input", path(&missing)],
            vec!["no-such-file"],
        ),
    ];
    for (what, args, needles) in cases {
        assert_cli_error(&run_cli(&daemon, &args), what, &needles);
    }
    // Nothing was written to stdout for a failed sign.
    let out = run_cli(&daemon, ["sign", "--key", "ghost-key", "--input", m]);
    assert!(out.stdout.is_empty(), "stdout: {}", stdout_text(&out));
}

#[tokio::test]
async fn keyward_sock_names_the_socket() {
    let daemon = setup().await;
    let mut command = Command::new(binary("keyward"));
    command
        .args(["keys", "list", "--json"])
        .env("KEYWARD_SOCK", daemon.socket())
        .env("RUST_BACKTRACE", "1");
    let output = run_with_timeout(command, None, COMMAND_TIMEOUT);
    assert_ok(&output, "keys list with KEYWARD_SOCK");
    let keys: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(keys.as_array().map(Vec::len), Some(KEYS.len()), "{keys}");
}
