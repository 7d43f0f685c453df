//! Helpers of `tests/tests/timestamp.rs`: keys with short-lived certificates, signing an
//! image three ways (notation with a TSA, `keyward notary sign --timestamp-url`, and air-gapped
//! with `keyward notary timestamp`), trust policies that require the timestamp, and reading
//! JWS envelopes and making RFC 3161 requests with OpenSSL as an independent client.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha384};

use crate::cli::{assert_ok, path};
use crate::notation::{Notation, Registry, digest_of};
use crate::tsa::{Tsa, openssl_verifies};
use crate::{TestDaemon, openssl, run_cli, stderr_text, stdout_text};

/// How long the expiring signing certificates are valid: long enough for all their signatures
/// on a slow machine, short enough to wait for.
pub const SHORT_VALIDITY_SECONDS: u64 = 60;

/// The notation trusted identity of a test key.
pub fn identity(key: &str) -> String {
    format!("x509.subject: C=US, ST=WA, O=Example, CN={key}")
}

/// Runs `keyward ARGS`, which must succeed; returns its stdout.
pub fn cli_ok(daemon: &TestDaemon, args: &[&str]) -> String {
    let output = run_cli(daemon, args);
    assert_ok(&output, &format!("keyward {}", args.join(" ")));
    stdout_text(&output)
}

/// Generates `key` in `backend` with a self-signed signing certificate valid for `validity`.
pub fn key_with_certificate(
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

/// The PEM chain attached to `key`.
pub fn chain_pem(daemon: &TestDaemon, key: &str) -> String {
    cli_ok(daemon, &["cert", "show", "--key", key, "--pem"])
}

/// The primitive signature and the timestamp token (if any) of a JWS envelope.
pub fn jws_parts(envelope: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
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
pub enum Method {
    /// `notation sign --timestamp-url` through notation-keyward.
    Notation,
    /// `keyward notary sign --timestamp-url`, attached by hand.
    KeywardOnline,
    /// `keyward notary sign --timestamp-request-out` + `keyward notary timestamp`.
    KeywardAirGapped,
}

/// Signs images for the timestamp tests.
#[derive(Debug)]
pub struct Signer<'a> {
    pub daemon: &'a TestDaemon,
    pub registry: &'a Registry,
    pub notation: &'a Notation,
    pub tsa: &'a Tsa,
    pub work: &'a Path,
}

impl Signer<'_> {
    /// Pushes an image for `repo`, signs it by `method` in `format`, and returns its reference.
    /// Pushes an image for `repo`, signs it by `method` in `format` (with a timestamp or not)
    /// and returns its reference.
    pub fn sign(
        &self,
        key: &str,
        repo: &str,
        format: &str,
        method: Method,
        timestamp: bool,
    ) -> String {
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
pub fn policy(registry: &Registry, repo: &str, key: &str, tsa: bool) -> Value {
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

/// `notation verify --verbose IMAGE`: Ok(output) when accepted, Err(output) when refused.
pub fn verify(notation: &Notation, image: &str) -> Result<String, String> {
    let output = notation.run(["verify", "--verbose", image]);
    let text = format!("{}{}", stdout_text(&output), stderr_text(&output));
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Writes an envelope for `repo` with `--timestamp-request-out`; returns (envelope, request).
pub fn air_gapped_envelope(
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
pub fn openssl_request(work: &Path, name: &str, signature: &[u8], hash: &str) -> Vec<u8> {
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
