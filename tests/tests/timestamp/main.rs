//! RFC 3161 timestamps on Notary signatures, against a real TSA (sigstore timestamp-server
//! v2.1.3, [`keyward_tests::tsa`]), the real notation CLI v1.3.2 and a real registry.
//!
//! Signatures by a local key and a SoftHSM key, JWS and COSE, made three ways: `notation sign
//! --timestamp-url` through the unchanged notation-keyward plugin, `keyward notary sign
//! --timestamp-url`, and air-gapped (`--timestamp-request-out`, the TSA asked separately,
//! `keyward notary timestamp`). Their certificates expire a minute after issue: while they are
//! valid everything verifies; once they have expired `notation verify` still accepts every
//! timestamped signature (the trust policy requires the timestamp) and refuses the ones
//! without. `keyward notary timestamp` refuses a token from another TSA, over another
//! signature, with another nonce or hash, or stamped after the certificate expired.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keyward_tests::cli::{assert_cli_error, assert_ok, path};
use keyward_tests::notation::{Notation, Registry, tools};
use keyward_tests::peers::{self, Peer};
use keyward_tests::softhsm::{self, SoftHsm};
use keyward_tests::timestamping::{
    Method, SHORT_VALIDITY_SECONDS, Signer, air_gapped_envelope, chain_pem, jws_parts,
    key_with_certificate, openssl_request, policy, verify,
};
use keyward_tests::tsa::Tsa;
use keyward_tests::{TestDaemon, openssl, run_cli};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn timestamped_signatures_outlive_their_signing_certificate() {
    let Some(tools) = tools() else { return };
    let Some(tsa) = Tsa::start() else { return };
    if peers::require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    hsm.init_token("timestamp", softhsm::SO_PIN, softhsm::PIN);
    let started = TestDaemon::builder()
        .extra_toml(&hsm.backend_toml("timestamp", ""))
        .env("SOFTHSM2_CONF", path(hsm.conf()))
        .env(softhsm::PIN_ENV, softhsm::PIN)
        .try_start()
        .await;
    let daemon = match started {
        Ok(daemon) => daemon,
        Err(failure) => panic!("keywardd with SoftHSM did not start:\n{}", failure.log),
    };
    let registry = Registry::start(&tools);
    let notation = Notation::new(&tools);
    notation.install_plugin(&daemon);
    notation.trust("tsa", "tsa", &fs::read_to_string(tsa.root_pem()).unwrap());
    let work = tempfile::tempdir().unwrap();
    let signer = Signer {
        daemon: &daemon,
        registry: &registry,
        notation: &notation,
        tsa: &tsa,
        work: work.path(),
    };

    // (repo, key, timestamped)
    let mut signed: Vec<(String, String, String, bool)> = Vec::new();
    let validity = format!("{SHORT_VALIDITY_SECONDS}s");
    let mut expire_by = Instant::now();
    for (backend, key_type) in [("local", "ec-p384"), (softhsm::BACKEND, "rsa-2048")] {
        let key = format!("ts-{backend}-{key_type}");
        key_with_certificate(&daemon, backend, key_type, &key, &validity);
        expire_by = Instant::now() + Duration::from_secs(SHORT_VALIDITY_SECONDS);
        notation.trust_ca("signers", &chain_pem(&daemon, &key));
        notation.add_key(&key, &key, daemon.socket());
        for format in ["jws", "cose"] {
            for method in [
                Method::Notation,
                Method::KeywardOnline,
                Method::KeywardAirGapped,
            ] {
                let repo = format!("{key}-{method:?}-{format}").to_lowercase();
                let image = signer.sign(&key, &repo, format, method, true);
                signed.push((repo, image, key.clone(), true));
            }
        }
        for (format, method) in [("jws", Method::Notation), ("cose", Method::KeywardOnline)] {
            let repo = format!("{key}-plain-{format}").to_lowercase();
            let image = signer.sign(&key, &repo, format, method, false);
            signed.push((repo, image, key.clone(), false));
        }
    }
    assert!(
        Instant::now() < expire_by,
        "signing took longer than the certificates' {SHORT_VALIDITY_SECONDS} s validity"
    );

    // While the certificates are valid: a policy that requires the timestamp accepts every
    // timestamped signature and refuses the others for lack of one.
    let requiring: Vec<Value> = signed
        .iter()
        .map(|(repo, _, key, _)| policy(&registry, repo, key, true))
        .collect();
    notation.import_policies(requiring.clone());
    for (repo, image, _, timestamped) in &signed {
        match (verify(&notation, image), timestamped) {
            (Ok(_), true) => {}
            (Err(text), false) => assert!(
                text.contains("no timestamp countersignature"),
                "{repo}: {text}"
            ),
            (result, _) => panic!("{repo}: unexpected verification result {result:?}"),
        }
    }
    // ... and a policy without a TSA accepts the signatures without a timestamp.
    let plain: Vec<&(String, String, String, bool)> = signed.iter().filter(|s| !s.3).collect();
    let plain_policy: Vec<Value> = plain
        .iter()
        .map(|(repo, _, key, _)| policy(&registry, repo, key, false))
        .collect();
    let mut mixed = requiring.clone();
    mixed.retain(|p| {
        !plain
            .iter()
            .any(|(repo, ..)| p["name"] == format!("policy-{repo}"))
    });
    mixed.extend(plain_policy);
    notation.import_policies(mixed);
    for (repo, image, ..) in &plain {
        verify(&notation, image).unwrap_or_else(|text| panic!("{repo} before expiry: {text}"));
    }

    // Wait (polling, with a deadline) until notation refuses the untimestamped signatures
    // because their certificate expired.
    let deadline = expire_by + Duration::from_secs(60);
    for (repo, image, ..) in &plain {
        loop {
            match verify(&notation, image) {
                Err(text) if text.contains("expired") => break,
                Err(text) => panic!("{repo}: refused for another reason than expiry: {text}"),
                Ok(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "{repo}: still accepted a minute after its certificate should have expired"
                    );
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
    // The timestamped signatures still verify, the timestamp being required and checked.
    for (repo, image, _, timestamped) in &signed {
        if *timestamped {
            let text = verify(&notation, image)
                .unwrap_or_else(|text| panic!("{repo} after expiry: {text}"));
            assert!(text.contains("Successfully verified"), "{repo}: {text}");
        }
    }
    // And a new timestamp for the expired certificate is refused before anything is written.
    let key = &signed[0].2;
    let (manifest, _) = registry.push_image("after-expiry");
    let manifest_file = work.path().join("after-expiry.json");
    fs::write(&manifest_file, manifest).unwrap();
    let output_file = work.path().join("after-expiry.sig");
    let root = tsa.root_pem();
    let output = run_cli(
        &daemon,
        [
            "notary",
            "sign",
            "--key",
            key,
            "--manifest",
            path(&manifest_file),
            "--output",
            path(&output_file),
            "--timestamp-url",
            &tsa.url(),
            "--timestamp-root-cert",
            path(&root),
        ],
    );
    assert_cli_error(
        &output,
        "timestamp after expiry",
        &["time check failed", key],
    );
    assert!(
        !output_file.exists(),
        "an envelope was written although its timestamp was refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keyward_refuses_timestamps_that_fail_a_check() {
    let Some(tools) = tools() else { return };
    let Some(tsa) = Tsa::start() else { return };
    let Some(other_tsa) = Tsa::start() else {
        return;
    };
    let daemon = TestDaemon::start("").await;
    let registry = Registry::start(&tools);
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    key_with_certificate(&daemon, "local", "ec-p384", "checked", "1d");
    let root = tsa.root_pem();
    let (envelope, request) = air_gapped_envelope(&daemon, &registry, work, "checked", "a");
    let (_, other_request) = air_gapped_envelope(&daemon, &registry, work, "checked", "b");
    let original = fs::read(&envelope).unwrap();
    let (signature, _) = jws_parts(&original);

    let response = |name: &str, from: &Tsa, request: &[u8]| {
        let file = work.join(format!("{name}.tsr"));
        fs::write(&file, from.respond(request)).unwrap();
        file
    };
    let timestamp = |response: &Path, extra: &[&str]| {
        let mut args = vec![
            "notary",
            "timestamp",
            "--envelope",
            path(&envelope),
            "--response",
            path(response),
            "--timestamp-root-cert",
            path(&root),
        ];
        args.extend(extra);
        run_cli(&daemon, &args)
    };
    let request_bytes = fs::read(&request).unwrap();
    let cases: Vec<(&str, PathBuf, Vec<&str>, &[&str])> = vec![
        (
            "another TSA",
            response("other-tsa", &other_tsa, &request_bytes),
            vec![],
            &["chain check failed", "--timestamp-root-cert"],
        ),
        (
            "another signature",
            response("other-sig", &tsa, &fs::read(&other_request).unwrap()),
            vec![],
            &[
                "message imprint check failed",
                "not over this envelope's signature",
            ],
        ),
        (
            "another nonce",
            response(
                "other-nonce",
                &tsa,
                &openssl_request(work, "nonce", &signature, "sha384"),
            ),
            vec!["--request", path(&request)],
            &["nonce check failed"],
        ),
        (
            "another hash",
            response(
                "sha256",
                &tsa,
                &openssl_request(work, "sha256", &signature, "sha256"),
            ),
            vec![],
            &["message imprint check failed", "SHA-256", "SHA-384"],
        ),
        (
            "not a response",
            request.clone(),
            vec![],
            &["holds no timestamp", "TimeStampResp"],
        ),
    ];
    for (what, response, extra, needles) in &cases {
        assert_cli_error(&timestamp(response, extra), what, needles);
        assert_eq!(
            fs::read(&envelope).unwrap(),
            original,
            "{what}: the envelope changed"
        );
    }
    // A request made for another envelope is refused before the response is looked at.
    let output = timestamp(&cases[1].1, &["--request", path(&other_request)]);
    assert_cli_error(
        &output,
        "mismatched request",
        &["--request", "another signature"],
    );

    // Online, a TSA whose chain does not lead to the given root is refused; nothing is written.
    let (manifest, _) = registry.push_image("online");
    let manifest_file = work.join("online.json");
    fs::write(&manifest_file, manifest).unwrap();
    let output_file = work.join("online.jws");
    let output = run_cli(
        &daemon,
        [
            "notary",
            "sign",
            "--key",
            "checked",
            "--manifest",
            path(&manifest_file),
            "--output",
            path(&output_file),
            "--timestamp-url",
            &other_tsa.url(),
            "--timestamp-root-cert",
            path(&root),
        ],
    );
    assert_cli_error(&output, "online, another TSA", &["chain check failed"]);
    assert!(!output_file.exists());

    // The right response is accepted, once.
    let good = response("good", &tsa, &request_bytes);
    assert_ok(
        &timestamp(&good, &["--request", path(&request)]),
        "the right response",
    );
    assert_cli_error(
        &timestamp(&good, &[]),
        "a second timestamp",
        &["already carries a timestamp"],
    );

    // A timestamp made after the signing certificate expired is refused by the time check.
    key_with_certificate(&daemon, "local", "ec-p256", "short-lived", "1s");
    let (late, late_request) = air_gapped_envelope(&daemon, &registry, work, "short-lived", "late");
    let chain_file = work.join("short-lived.pem");
    fs::write(&chain_file, chain_pem(&daemon, "short-lived")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while openssl(["x509", "-checkend", "0", "-noout", "-in", path(&chain_file)])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the 1 s certificate did not expire"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let late_response = response("late", &tsa, &fs::read(&late_request).unwrap());
    let output = run_cli(
        &daemon,
        [
            "notary",
            "timestamp",
            "--envelope",
            path(&late),
            "--response",
            path(&late_response),
            "--timestamp-root-cert",
            path(&root),
        ],
    );
    assert_cli_error(
        &output,
        "stamped after expiry",
        &["time check failed", "CN=short-lived"],
    );
}
