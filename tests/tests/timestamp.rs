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

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use keyward_tests::cli::{assert_cli_error, assert_ok, path};
use keyward_tests::notation::{Notation, Registry, digest_of, tools};
use keyward_tests::softhsm::{self, SoftHsm};
use keyward_tests::tsa::{Tsa, openssl_verifies};
use keyward_tests::{TestDaemon, openssl, run_cli, stderr_text, stdout_text};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha384};

/// How long the expiring signing certificates are valid: long enough for all their signatures
/// on a slow machine, short enough to wait for.
const SHORT_VALIDITY_SECONDS: u64 = 60;

fn identity(key: &str) -> String {
    format!("x509.subject: C=US, ST=WA, O=Example, CN={key}")
}

fn cli_ok(daemon: &TestDaemon, args: &[&str]) -> String {
    let output = run_cli(daemon, args);
    assert_ok(&output, &format!("keyward {}", args.join(" ")));
    stdout_text(&output)
}

/// Generates `key` in `backend` with a self-signed signing certificate valid for `validity`.
fn key_with_certificate(
    daemon: &TestDaemon,
    backend: &str,
    key_type: &str,
    key: &str,
    validity: &str,
) {
    cli_ok(
        daemon,
        &[
            "keys",
            "generate",
            "--backend",
            backend,
            "--type",
            key_type,
            key,
        ],
    );
    let subject = format!("C=US,ST=WA,O=Example,CN={key}");
    cli_ok(
        daemon,
        &[
            "cert",
            "issue",
            "--key",
            key,
            "--subject",
            &subject,
            "--validity",
            validity,
        ],
    );
}

fn chain_pem(daemon: &TestDaemon, key: &str) -> String {
    cli_ok(daemon, &["cert", "show", "--key", key, "--pem"])
}

/// The primitive signature and the timestamp token (if any) of a JWS envelope.
fn jws_parts(envelope: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let jws: Value = serde_json::from_slice(envelope).expect("a JWS envelope");
    let signature = URL_SAFE_NO_PAD
        .decode(jws["signature"].as_str().expect("a signature"))
        .expect("base64url");
    let token = jws["header"]["io.cncf.notary.timestampSignature"]
        .as_str()
        .map(|t| STANDARD.decode(t).expect("base64"));
    (signature, token)
}

/// How a signature is made.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    /// `notation sign --timestamp-url` through notation-keyward.
    Notation,
    /// `keyward notary sign --timestamp-url`, attached by hand.
    KeywardOnline,
    /// `keyward notary sign --timestamp-request-out` + `keyward notary timestamp`.
    KeywardAirGapped,
}

struct Signer<'a> {
    daemon: &'a TestDaemon,
    registry: &'a Registry,
    notation: &'a Notation,
    tsa: &'a Tsa,
    work: &'a Path,
}

impl Signer<'_> {
    /// Pushes an image for `repo`, signs it by `method` in `format`, and returns its reference.
    fn sign(&self, key: &str, repo: &str, format: &str, method: Method, timestamp: bool) -> String {
        let (manifest, image) = self.registry.push_image(repo);
        let root = self.tsa.root_pem();
        let url = self.tsa.url();
        if method == Method::Notation {
            let mut args = vec!["sign", "--key", key, "--signature-format", format];
            if timestamp {
                args.extend([
                    "--timestamp-url",
                    &url,
                    "--timestamp-root-cert",
                    path(&root),
                ]);
            }
            args.push(&image);
            self.notation.ok(&args);
            return image;
        }
        let file = |suffix: &str| self.work.join(format!("{repo}.{suffix}"));
        fs::write(file("manifest.json"), &manifest).unwrap();
        let mut args: Vec<String> = [
            "notary",
            "sign",
            "--key",
            key,
            "--envelope",
            format,
            "--manifest",
            path(&file("manifest.json")),
            "--output",
            path(&file("sig")),
            "--signature-manifest",
            path(&file("sigman.json")),
        ]
        .map(String::from)
        .to_vec();
        match (method, timestamp) {
            (_, false) => {}
            (Method::KeywardOnline, true) => args.extend(
                [
                    "--timestamp-url",
                    &url,
                    "--timestamp-root-cert",
                    path(&root),
                ]
                .map(String::from),
            ),
            (_, true) => args.extend(["--timestamp-request-out".into(), path(&file("tsq")).into()]),
        }
        let printed = cli_ok(
            self.daemon,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        if timestamp && method == Method::KeywardOnline {
            assert!(printed.contains("timestamped at"), "{printed}");
        }
        if timestamp && method == Method::KeywardAirGapped {
            // Elsewhere: the request goes to the TSA, the answer comes back on a medium.
            fs::write(
                file("tsr"),
                self.tsa.respond(&fs::read(file("tsq")).unwrap()),
            )
            .unwrap();
            let printed = cli_ok(
                self.daemon,
                &[
                    "notary",
                    "timestamp",
                    "--envelope",
                    path(&file("sig")),
                    "--response",
                    path(&file("tsr")),
                    "--request",
                    path(&file("tsq")),
                    "--timestamp-root-cert",
                    path(&root),
                    "--signature-manifest",
                    path(&file("sigman.json")),
                ],
            );
            assert!(printed.contains("its chain leads to"), "{printed}");
        }
        let envelope = fs::read(file("sig")).unwrap();
        if timestamp && format == "jws" {
            // An independent verifier: OpenSSL's TS code checks the token over the signature.
            let (signature, token) = jws_parts(&envelope);
            let token_file = file("token.der");
            fs::write(&token_file, token.expect("a timestamp in the JWS header")).unwrap();
            let digest = match key.contains("ec-p384") {
                true => hex::encode(Sha384::digest(&signature)),
                false => hex::encode(Sha256::digest(&signature)),
            };
            assert!(
                openssl_verifies(&token_file, &digest, &root, &self.tsa.chain_pem()),
                "{repo}: openssl ts -verify refused the token keyward wrote"
            );
        }
        self.registry.attach_signature(
            repo,
            &digest_of(&manifest),
            &envelope,
            &fs::read(file("sigman.json")).unwrap(),
        );
        image
    }
}

/// A trust policy entry for `repo`: the signer's self-signed certificate in `ca:signers`, and
/// with `tsa`, the TSA's root in `tsa:tsa` and the timestamp required.
fn policy(registry: &Registry, repo: &str, key: &str, tsa: bool) -> Value {
    let mut entry = json!({
        "name": format!("policy-{repo}"),
        "registryScopes": [format!("{}/{repo}", registry.host())],
        "signatureVerification": { "level": "strict" },
        "trustStores": ["ca:signers"],
        "trustedIdentities": [identity(key)],
    });
    if tsa {
        entry["signatureVerification"]["verifyTimestamp"] = json!("always");
        entry["trustStores"] = json!(["ca:signers", "tsa:tsa"]);
    }
    entry
}

fn verify(notation: &Notation, image: &str) -> Result<String, String> {
    let output = notation.run(["verify", "--verbose", image]);
    let text = format!("{}{}", stdout_text(&output), stderr_text(&output));
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamped_signatures_outlive_their_signing_certificate() {
    let Some(tools) = tools() else { return };
    let Some(tsa) = Tsa::start() else { return };
    if !softhsm::available() {
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

/// Writes an envelope for `repo` with `--timestamp-request-out`; returns (envelope, request).
fn air_gapped_envelope(
    daemon: &TestDaemon,
    registry: &Registry,
    work: &Path,
    key: &str,
    repo: &str,
) -> (PathBuf, PathBuf) {
    let (manifest, _) = registry.push_image(repo);
    let manifest_file = work.join(format!("{repo}.json"));
    fs::write(&manifest_file, manifest).unwrap();
    let envelope = work.join(format!("{repo}.jws"));
    let request = work.join(format!("{repo}.tsq"));
    cli_ok(
        daemon,
        &[
            "notary",
            "sign",
            "--key",
            key,
            "--manifest",
            path(&manifest_file),
            "--output",
            path(&envelope),
            "--timestamp-request-out",
            path(&request),
        ],
    );
    (envelope, request)
}

/// `openssl ts -query` over `signature` (an independent TSA client; its own nonce).
fn openssl_request(work: &Path, name: &str, signature: &[u8], hash: &str) -> Vec<u8> {
    let digest = match hash {
        "sha256" => hex::encode(Sha256::digest(signature)),
        _ => hex::encode(Sha384::digest(signature)),
    };
    let out = work.join(format!("{name}.tsq"));
    let output = openssl([
        "ts",
        "-query",
        "-digest",
        &digest,
        &format!("-{hash}"),
        "-cert",
        "-out",
        path(&out),
    ]);
    assert!(
        output.status.success(),
        "openssl ts -query: {}",
        stderr_text(&output)
    );
    fs::read(out).unwrap()
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
