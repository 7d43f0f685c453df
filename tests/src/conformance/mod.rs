//! The signing contract every backend must meet, checked key by key through a running agent.
//!
//! For each key: the public key is a well-formed SubjectPublicKeyInfo of the kind the key
//! claims; every algorithm it lists signs, and each signature verifies with the `openssl` CLI
//! and with the SDK's RustCrypto verifier (two implementations other than the daemon's);
//! tampered messages fail both; malformed requests get the right status codes; and 64
//! concurrent signatures all verify. Failures are collected and reported together.

mod algorithms;
mod public_key;
mod rejections;

use std::fs;
use std::path::PathBuf;

use keyward_proto::v1::sign_request::Input;
use keyward_proto::v1::signer_client::SignerClient;
use keyward_proto::v1::{SignRequest, SignResponse};
use keyward_sdk::{
    Client, KeySpec, PublicKey, SignOptions, SignatureAlgorithm as Alg, SignatureFormat,
};
use tonic::transport::Channel;

use algorithms::path_str;
pub use algorithms::{
    ALL_ALGORITHMS, ALL_SPECS, digest_len, ecdsa_field_len, expected_algorithms, is_ecdsa,
    openssl_verify,
};

use crate::{random_bytes, uds_channel};

/// Checks every key that `backend` offers; panics listing all failures. Panics also when the
/// backend offers no key at all (nothing would have been checked).
pub async fn check_backend(client: &Client, backend: &str) {
    let keys = client.list_keys().await.expect("ListKeys");
    let ids: Vec<String> = keys
        .iter()
        .filter(|k| k.backend == backend)
        .map(|k| k.key_id.clone())
        .collect();
    assert!(
        !ids.is_empty(),
        "backend {backend:?} lists no keys; all keys: {keys:?}"
    );
    let mut failures = Vec::new();
    for id in &ids {
        failures.extend(key_failures(client, id, None).await);
    }
    report(failures);
}

/// Like [`check_backend`] for a backend whose keys may sign with fewer algorithms than their
/// spec allows (a Parsec key's policy): `expected` names, for every key of the backend, the
/// algorithms it must list (the default first), each of which must then sign and verify.
pub async fn check_backend_with(client: &Client, backend: &str, expected: &[(&str, &[Alg])]) {
    let keys = client.list_keys().await.expect("ListKeys");
    let ids: Vec<String> = keys
        .iter()
        .filter(|k| k.backend == backend)
        .map(|k| k.key_id.clone())
        .collect();
    assert!(
        !ids.is_empty(),
        "backend {backend:?} lists no keys; all keys: {keys:?}"
    );
    let mut failures = Vec::new();
    for id in &ids {
        match expected.iter().find(|(key, _)| key == id) {
            Some((_, algorithms)) => {
                failures.extend(key_failures(client, id, Some(algorithms.to_vec())).await);
            }
            None => failures.push(format!("{id}: the test names no algorithms for this key")),
        }
    }
    report(failures);
}

/// Checks one key; panics listing all failures.
pub async fn check_key(client: &Client, key_id: &str) {
    report(key_failures(client, key_id, None).await);
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} conformance failure(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// One key under test.
struct Subject<'a> {
    client: &'a Client,
    raw: SignerClient<Channel>,
    key_id: &'a str,
    spec: KeySpec,
    /// The algorithms the key must list, the default first.
    expected: Vec<Alg>,
    public_key: PublicKey,
    pem_path: PathBuf,
    work: tempfile::TempDir,
    failures: Vec<String>,
}

impl Subject<'_> {
    fn fail(&mut self, what: String) {
        self.failures.push(format!("{}: {what}", self.key_id));
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    async fn raw_sign(&self, request: SignRequest) -> Result<SignResponse, tonic::Status> {
        self.raw
            .clone()
            .sign(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

async fn key_failures(client: &Client, key_id: &str, expected: Option<Vec<Alg>>) -> Vec<String> {
    let public_key = match client.public_key(key_id).await {
        Ok(pk) => pk,
        Err(e) => return vec![format!("{key_id}: GetPublicKey failed: {e}")],
    };
    let raw = match uds_channel(client.socket()).await {
        Ok(channel) => SignerClient::new(channel),
        Err(e) => return vec![format!("{key_id}: cannot open a raw channel: {e}")],
    };
    let work = tempfile::tempdir().expect("temp dir");
    let pem_path = work.path().join("pub.pem");
    fs::write(&pem_path, &public_key.pem).expect("write pub.pem");
    let spec = public_key.info.key_spec();
    let mut subject = Subject {
        client,
        raw,
        key_id,
        spec,
        expected: expected.unwrap_or_else(|| expected_algorithms(spec).to_vec()),
        public_key,
        pem_path,
        work,
        failures: Vec::new(),
    };
    public_key::check_public_key(&mut subject).await;
    let algorithms: Vec<Alg> = subject.public_key.info.algorithms().collect();
    for alg in algorithms {
        let formats: &[SignatureFormat] = if is_ecdsa(alg) {
            &[
                SignatureFormat::Unspecified,
                SignatureFormat::Der,
                SignatureFormat::Raw,
            ]
        } else {
            &[SignatureFormat::Unspecified]
        };
        for &format in formats {
            sign_and_verify(&mut subject, alg, format).await;
        }
    }
    check_default_algorithm(&mut subject).await;
    rejections::check_rejections(&mut subject).await;
    check_concurrent(&mut subject).await;
    subject.failures
}

/// Signs a fresh message with `alg` in `format` and verifies it both ways, and that a tampered
/// message fails both verifiers.
async fn sign_and_verify(s: &mut Subject<'_>, alg: Alg, format: SignatureFormat) {
    let case = format!("{} ({})", alg.name(), format.as_str_name());
    let message = random_bytes(100 + usize::from(random_bytes(1)[0]));
    let options = SignOptions {
        algorithm: Some(alg),
        format,
        purpose: format!("conformance {case}"),
    };
    let signature = match s.client.sign_message(s.key_id, &message, &options).await {
        Ok(sig) => sig,
        Err(e) => return s.fail(format!("{case}: sign failed: {e} ({:?})", e.code())),
    };
    let bytes = signature.bytes;
    s.check(signature.algorithm == alg, || {
        format!("{case}: response names algorithm {:?}", signature.algorithm)
    });
    let raw = format == SignatureFormat::Raw && is_ecdsa(alg);
    if let Some(field) = ecdsa_field_len(s.spec) {
        let (want_format, shape_ok) = if raw {
            (SignatureFormat::Raw, bytes.len() == 2 * field)
        } else {
            (SignatureFormat::Der, bytes.first() == Some(&0x30))
        };
        s.check(signature.format == want_format && shape_ok, || {
            format!("{case}: got {:?}, {} bytes", signature.format, bytes.len())
        });
    } else {
        let want_len = match s.spec {
            KeySpec::Ed25519 => 64,
            KeySpec::Rsa2048 => 256,
            KeySpec::Rsa3072 => 384,
            _ => 512,
        };
        s.check(bytes.len() == want_len, || {
            format!(
                "{case}: {} signature bytes, expected {want_len}",
                bytes.len()
            )
        });
    }

    let verify_format = if raw {
        SignatureFormat::Raw
    } else {
        SignatureFormat::Der
    };
    let der = s.public_key.der.clone();
    let mut tampered = message.clone();
    tampered[0] ^= 0x01;
    if let Err(e) = keyward_sdk::verify_message(&der, alg, &message, &bytes, verify_format) {
        s.fail(format!("{case}: SDK (RustCrypto) verify failed: {e}"));
    }
    s.check(
        keyward_sdk::verify_message(&der, alg, &tampered, &bytes, verify_format).is_err(),
        || format!("{case}: SDK verifier accepts a tampered message"),
    );
    if !raw {
        let (work, pem) = (s.work.path().to_path_buf(), s.pem_path.clone());
        if let Err(e) = openssl_verify(&work, &pem, alg, &message, &bytes) {
            s.fail(format!("{case}: openssl verify failed: {e}"));
        }
        s.check(
            openssl_verify(&work, &pem, alg, &tampered, &bytes).is_err(),
            || format!("{case}: openssl accepts a tampered message"),
        );
    }
}

/// A request with no algorithm signs with the key's default, the first it lists.
async fn check_default_algorithm(s: &mut Subject<'_>) {
    let Some(default) = s.public_key.info.algorithms().next() else {
        return s.fail("lists no algorithm".into());
    };
    let message = random_bytes(64);
    let input = match keyward_sdk::digest(default, &message) {
        Ok(digest) => Input::Digest(digest),
        Err(_) => Input::Message(message.clone()),
    };
    let request = SignRequest {
        key_id: s.key_id.to_string(),
        input: Some(input),
        ..SignRequest::default()
    };
    match s.raw_sign(request).await {
        Ok(response) => {
            s.check(response.algorithm() == default, || {
                format!(
                    "unspecified algorithm signed with {:?}",
                    response.algorithm()
                )
            });
            let verified = keyward_sdk::verify_message(
                &s.public_key.der,
                default,
                &message,
                &response.signature,
                SignatureFormat::Der,
            );
            s.check(verified.is_ok(), || {
                format!("default-algorithm signature does not verify: {verified:?}")
            });
        }
        Err(status) => s.fail(format!("unspecified algorithm: {status:?}")),
    }
}

/// 64 signatures at once on clones of one client; all must verify.
async fn check_concurrent(s: &mut Subject<'_>) {
    let mut tasks = Vec::new();
    for i in 0..64 {
        let client = s.client.clone();
        let key_id = s.key_id.to_string();
        let mut message = format!("concurrent request {i}: ").into_bytes();
        message.extend(random_bytes(32));
        tasks.push(tokio::spawn(async move {
            let result = client
                .sign_message(&key_id, &message, &SignOptions::default())
                .await;
            (message, result)
        }));
    }
    let mut good = 0;
    for task in tasks {
        let (message, result) = task.await.expect("signing task panicked");
        match result {
            Ok(sig) => {
                let verified = keyward_sdk::verify_message(
                    &s.public_key.der,
                    sig.algorithm,
                    &message,
                    &sig.bytes,
                    sig.format,
                );
                match verified {
                    Ok(()) => good += 1,
                    Err(e) => s.fail(format!("concurrent signature does not verify: {e}")),
                }
            }
            Err(e) => s.fail(format!("concurrent sign failed: {e}")),
        }
    }
    s.check(good == 64, || {
        format!("only {good} of 64 concurrent signatures verified")
    });
}
