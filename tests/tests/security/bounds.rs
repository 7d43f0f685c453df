//! Inputs are bounded before they cost anything (#16.2): oversized fields are refused before
//! the registry, policies, audit log or daemon log hold them, messages to sign are capped per
//! key, and caller strings cannot forge a line of the daemon's log.

use keyward_proto::v1::key_admin_client::KeyAdminClient;
use keyward_proto::v1::signer_client::SignerClient;
use keyward_proto::v1::{self, SignRequest, sign_request};
use keyward_sdk::{KeySpec, SignOptions, SignatureAlgorithm};
use keyward_tests::{DaemonBuilder, TestDaemon, toml_string, uds_channel};
use sha2::{Digest, Sha256};
use tonic::Code;

/// `[audit]` writing to `<dir>/audit/audit.log`.
fn audited(builder: DaemonBuilder) -> DaemonBuilder {
    let path = builder.dir().join("audit").join("audit.log");
    builder.top_level(&format!(
        "[audit]\npath = {}\n",
        toml_string(path.to_str().expect("UTF-8"))
    ))
}

fn audit_log(daemon: &TestDaemon) -> String {
    std::fs::read_to_string(daemon.dir().join("audit").join("audit.log")).unwrap_or_default()
}

fn sign_request(key_id: &str, purpose: &str, input: sign_request::Input) -> SignRequest {
    SignRequest {
        key_id: key_id.to_string(),
        purpose: purpose.to_string(),
        input: Some(input),
        ..SignRequest::default()
    }
}

fn digest() -> sign_request::Input {
    sign_request::Input::Digest(Sha256::digest(b"bounded").to_vec())
}

async fn signer(daemon: &TestDaemon) -> SignerClient<tonic::transport::Channel> {
    SignerClient::new(uds_channel(daemon.socket()).await.expect("channel"))
        .max_encoding_message_size(usize::MAX)
}

/// A status that is a clear refusal: `code`, every needle in its message, short enough for any
/// client's header limit, on one line.
fn assert_refusal(status: &tonic::Status, code: Code, needles: &[&str]) {
    let message = status.message();
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
    assert!(
        message.len() < 5000,
        "{} bytes: {message:.300}",
        message.len()
    );
    assert!(!message.contains('\n'), "{message}");
}

#[tokio::test]
async fn oversized_fields_are_refused_before_they_are_stored_or_logged() {
    let daemon = audited(DaemonBuilder::new()).start().await;
    let client = daemon.client().await;
    client
        .generate_key("local", "small", KeySpec::EcP256)
        .await
        .expect("generate");
    let mut raw = signer(&daemon).await;

    // The requests: a 20 MB key id and a 3 MB purpose, 35 times. The decoder refuses
    // them unread; nothing of them is recorded or logged.
    let huge_id = "k".repeat(20_000_000);
    let huge_purpose = "p".repeat(3_000_000);
    for round in 0..35 {
        let request = if round % 2 == 0 {
            sign_request(&huge_id, "", digest())
        } else {
            sign_request("small", &huge_purpose, digest())
        };
        let status = raw.sign(request).await.expect_err("refused");
        assert_refusal(
            &status,
            Code::InvalidArgument,
            &[
                "larger than the",
                "max_message_bytes",
                "sign a digest instead",
            ],
        );
    }
    // Under the decoder's limit but over a field's bound: refused with the value cut and its
    // hash, recorded cut.
    let long_id = format!("{}\nforged", "i".repeat(60_000));
    let status = raw
        .sign(sign_request(&long_id, "", digest()))
        .await
        .expect_err("refused");
    let hash = hex::encode(Sha256::digest(long_id.as_bytes()));
    assert_refusal(
        &status,
        Code::InvalidArgument,
        &[
            "is 60007 bytes long; it may be at most 512 bytes",
            &format!("…(60007 bytes, sha256 {hash})"),
        ],
    );
    let long_purpose = "q".repeat(10_000);
    let status = raw
        .sign(sign_request("small", &long_purpose, digest()))
        .await
        .expect_err("refused");
    assert_refusal(
        &status,
        Code::InvalidArgument,
        &[
            "key \"small\"",
            "the purpose",
            "is 10000 bytes long; it may be at most 256 bytes",
        ],
    );
    let status = raw
        .sign(sign_request(
            "small",
            "",
            sign_request::Input::Digest(vec![1; 65]),
        ))
        .await
        .expect_err("refused");
    assert_refusal(
        &status,
        Code::InvalidArgument,
        &[
            "the digest is 65 bytes long",
            "send the digest, not the data",
        ],
    );
    let mut admin = KeyAdminClient::new(uds_channel(daemon.socket()).await.expect("channel"));
    let status = admin
        .attach_certificate_chain(v1::AttachCertificateChainRequest {
            key_id: "small".into(),
            certificate_chain_pem: "-".repeat(2 << 20),
        })
        .await
        .expect_err("refused");
    assert_refusal(&status, Code::InvalidArgument, &["max_certificate_bytes"]);
    let status = admin
        .unlock_backend(v1::UnlockBackendRequest {
            backend: "local".into(),
            pin: "9".repeat(1000).into(),
            ttl_seconds: 0,
        })
        .await
        .expect_err("refused");
    assert_refusal(
        &status,
        Code::InvalidArgument,
        &["the PIN is 1000 bytes long; it may be at most 256 bytes"],
    );
    assert!(!status.message().contains("999"), "the PIN is never shown");

    let audit = audit_log(&daemon);
    assert!(
        audit.len() < 64 << 10,
        "the audit log grew to {} bytes",
        audit.len()
    );
    assert!(
        audit.contains(&format!("…(60007 bytes, sha256 {hash})")),
        "the cut key id is recorded with its hash:\n{audit}"
    );
    let log = daemon.log();
    assert!(
        log.len() < 1 << 20,
        "the daemon log grew to {} bytes",
        log.len()
    );
    assert!(!log.contains(&"k".repeat(1000)) && !log.contains(&"p".repeat(1000)));
    // The daemon still serves.
    client
        .sign_digest("small", &Sha256::digest(b"after"), &SignOptions::default())
        .await
        .expect("sign after the abuse");
}

#[tokio::test]
async fn messages_are_capped_per_key() {
    let builder = DaemonBuilder::new();
    let keys = builder.dir().join("keys");
    std::fs::create_dir(&keys).unwrap();
    keyward_tests::set_mode(&keys, 0o700);
    for id in ["ed-small", "ed-big"] {
        keyward_tests::openssl_genpkey(&keys.join(format!("{id}.pem")), &["-algorithm", "ED25519"]);
    }
    let daemon = builder
        .top_level("[limits]\nmax_message_bytes = 4096\n")
        .extra_toml(
            "[[key]]\nid = \"ed-small\"\nbackend = \"local\"\nref = \"ed-small\"\n\n\
             [[key]]\nid = \"ed-big\"\nbackend = \"local\"\nref = \"ed-big\"\nmax_message_bytes = 1048576\n",
        )
        .start()
        .await;
    let client = daemon.client().await;
    let message = vec![0x5a; 200_000];
    let options = SignOptions {
        algorithm: Some(SignatureAlgorithm::Ed25519),
        ..SignOptions::default()
    };
    let error = client
        .sign_message("ed-small", &message, &options)
        .await
        .expect_err("over the cap");
    assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("key \"ed-small\": the message is 200000 bytes long and this key signs messages of at most 4096 bytes; raise max_message_bytes"),
        "{text}"
    );
    let signature = client
        .sign_message("ed-big", &message, &options)
        .await
        .expect("the key's own cap allows it");
    let public = client.public_key("ed-big").await.expect("public key");
    keyward_sdk::verify_message(
        &public.der,
        SignatureAlgorithm::Ed25519,
        &message,
        &signature.bytes,
        signature.format,
    )
    .expect("the signature verifies");
    // Past the largest cap, the decoder refuses it unread.
    let error = client
        .sign_message("ed-big", &vec![0; 2 << 20], &options)
        .await
        .expect_err("over every cap");
    assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
    assert!(error.to_string().contains("larger than the"), "{error}");
}

/// The line the daemon logs at shutdown, which SECURITY.md tells operators to keep as the audit
/// chain's anchor.
const ANCHOR: &str = "audit log head at shutdown";

#[tokio::test]
async fn caller_strings_cannot_forge_a_log_line() {
    let mut daemon = audited(DaemonBuilder::new()).start().await;
    let forged = format!(
        "x\n2030-01-01T00:00:00.000000Z  INFO keyward_daemon::server: {ANCHOR} seq=1 head={}\r\u{1b}[2K",
        "0".repeat(64)
    );
    let mut raw = signer(&daemon).await;
    let status = raw
        .sign(sign_request(&forged, &forged, digest()))
        .await
        .expect_err("no such key");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(!status.message().contains('\n'), "{status:?}");
    assert!(status.message().contains("\"x\\n2030"), "{status:?}");
    let client = daemon.client().await;
    client
        .generate_key("local", "real", KeySpec::EcP256)
        .await
        .expect("generate");
    let status = raw.sign(sign_request("real", &forged, digest())).await;
    assert!(
        status.is_ok(),
        "a purpose with a newline may be signed: {status:?}"
    );
    let mut admin = KeyAdminClient::new(uds_channel(daemon.socket()).await.expect("channel"));
    let refused = admin
        .generate_key(v1::GenerateKeyRequest {
            backend: forged.clone(),
            key_id: forged.clone(),
            key_spec: KeySpec::EcP256 as i32,
            options: [(forged.clone(), forged.clone())].into(),
        })
        .await
        .expect_err("refused");
    assert!(!refused.message().contains('\n'), "{refused:?}");
    // Within every bound: refused by the registry, after the request was logged.
    let refused = admin
        .generate_key(v1::GenerateKeyRequest {
            backend: "local".into(),
            key_id: forged.clone(),
            key_spec: KeySpec::EcP256 as i32,
            options: Default::default(),
        })
        .await
        .expect_err("not a valid key id");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(!refused.message().contains('\n'), "{refused:?}");
    drop((raw, admin, client));
    assert!(daemon.terminate().await.success());

    let log = daemon.log();
    let anchors: Vec<&str> = log.lines().filter(|l| l.contains(ANCHOR)).collect();
    let real: Vec<&&str> = anchors
        .iter()
        .filter(|line| line.contains("keyward_daemon::server") && !line.contains("x\\n2030"))
        .collect();
    assert_eq!(real.len(), 1, "one real anchor line:\n{anchors:#?}");
    for line in &anchors {
        assert!(
            !line.starts_with("2030-01-01"),
            "a caller forged a line of the daemon's log:\n{line}"
        );
    }
    assert!(
        !log.contains('\u{1b}'),
        "a terminal control sequence reached the log"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with('\r') || l.contains("\r\u{1b}")),
        "{log}"
    );
    // The audit log is JSON: the values are escaped there, and cut to their bound.
    let audit = audit_log(&daemon);
    assert!(
        audit
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
    assert!(!audit.lines().any(|l| l.starts_with("2030")));
}
