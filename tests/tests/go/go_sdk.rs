//! The Go SDK (`sdk/go`) against a real keywardd: this test starts the daemon, agent keys
//! and a registry, runs `go test` in `sdk/go/e2e` with `KEYWARD_SOCK` set, and checks what
//! the Go code made with independent tools: `openssl verify` for the X.509 certificates that
//! `x509.CreateCertificate` signed through the SDK's `crypto.Signer` (ECDSA P-256/P-384,
//! RSA PKCS#1 v1.5 and PSS, Ed25519, and a chain), and the real `notation verify` for the
//! JWS and COSE signatures notation-go made through it. Then (as root) it gives the agent's
//! socket directory to another uid: the Go SDK must refuse it until that uid is trusted.
//!
//! Needs `go` on PATH (its module cache fills on the first run) and the notation CLI and
//! registry of the notary part; prints `skipped: ...` without them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keyward_tests::cli::assert_ok;
use keyward_tests::notation::{Notation, Registry, tools};
use keyward_tests::peers::{Peer, require};
use keyward_tests::{TestDaemon, openssl, run_cli, run_with_timeout, stderr_text, stdout_text};

/// Compiling the e2e tests (notation-go and its dependencies) takes a while on a cold cache.
const GO_TEST_TIMEOUT: Duration = Duration::from_secs(900);

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/go/e2e")
}

fn verify_certificate(ca: &Path, cert: &Path) {
    let output = openssl([
        "verify",
        "-check_ss_sig",
        "-CAfile",
        ca.to_str().expect("UTF-8"),
        cert.to_str().expect("UTF-8"),
    ]);
    assert!(
        output.status.success() && stdout_text(&output).contains(": OK"),
        "openssl verify {}: {}{}",
        cert.display(),
        stdout_text(&output),
        stderr_text(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_sdk_signs_certificates_and_notation_signatures() {
    let Some(go) = require(Peer::Go) else { return };
    let Some(tools) = tools() else { return };
    let daemon = TestDaemon::start("").await;
    let keys = [
        ("go-p384", "ec-p384"),
        ("go-p256", "ec-p256"),
        ("go-rsa", "rsa-2048"),
        ("go-ed25519", "ed25519"),
        ("go-notary", "ec-p256"),
    ];
    for (id, kind) in keys {
        let output = run_cli(
            &daemon,
            ["keys", "generate", "--backend", "local", "--type", kind, id],
        );
        assert_ok(&output, "keyward keys generate");
    }
    let subject = "C=US,ST=WA,O=Example,CN=go-notary";
    assert_ok(
        &run_cli(
            &daemon,
            ["cert", "issue", "--key", "go-notary", "--subject", subject],
        ),
        "keyward cert issue",
    );
    let registry = Registry::start(&tools);
    let (_, jws_image) = registry.push_image("go-jws");
    let (_, cose_image) = registry.push_image("go-cose");
    let (_, unsigned) = registry.push_image("go-unsigned");
    let out = tempfile::tempdir().expect("temp dir");

    let mut command = Command::new(&go);
    command
        .args([
            "test",
            "-count=1",
            "-v",
            "-skip",
            "TestTrustChecksAgainstTheAgent",
            "./...",
        ])
        .current_dir(e2e_dir())
        .env("KEYWARD_SOCK", daemon.socket())
        .env("KEYWARD_E2E_KEYS", "go-p384,go-p256,go-rsa,go-ed25519")
        .env("KEYWARD_E2E_OUT", out.path())
        .env("KEYWARD_E2E_NOTATION_KEY", "go-notary")
        .env("KEYWARD_E2E_JWS_IMAGE", &jws_image)
        .env("KEYWARD_E2E_COSE_IMAGE", &cose_image)
        .env_remove("KEYWARD_AGENT_UID");
    let output = run_with_timeout(command, None, GO_TEST_TIMEOUT);
    let text = format!("{}{}", stdout_text(&output), stderr_text(&output));
    assert!(
        output.status.success(),
        "go test in sdk/go/e2e failed:\n{text}"
    );
    assert!(!text.contains("--- SKIP"), "go test skipped tests:\n{text}");
    for test in [
        "TestCertificatesSignedThroughTheAgent",
        "TestNotationGoSignsThroughTheAgent",
        "TestAgentErrorsCarryTheirStatus",
    ] {
        assert!(
            text.contains(&format!("--- PASS: {test}")),
            "{test} did not pass:\n{text}"
        );
    }

    // openssl checks every certificate the Go SDK's crypto.Signer signed.
    let file = |name: &str| out.path().join(name);
    for (id, _) in &keys[..4] {
        let cert = file(&format!("{id}.pem"));
        verify_certificate(&cert, &cert);
    }
    verify_certificate(&file("go-rsa-pss.pem"), &file("go-rsa-pss.pem"));
    let text = openssl([
        "x509",
        "-noout",
        "-text",
        "-in",
        file("go-rsa-pss.pem").to_str().expect("UTF-8"),
    ]);
    assert!(
        stdout_text(&text).contains("rsassaPss"),
        "{}",
        stdout_text(&text)
    );
    verify_certificate(&file("go-p384.pem"), &file("leaf.pem"));
    // ... and refuses a chain that does not hold.
    let wrong = openssl([
        "verify",
        "-CAfile",
        file("go-p256.pem").to_str().expect("UTF-8"),
        file("leaf.pem").to_str().expect("UTF-8"),
    ]);
    assert!(
        !wrong.status.success(),
        "a leaf verified against the wrong CA"
    );

    // notation verifies the signatures notation-go made through the agent.
    let notation = Notation::new(&tools);
    let chain = run_cli(&daemon, ["cert", "show", "--key", "go-notary", "--pem"]);
    assert_ok(&chain, "keyward cert show");
    notation.trust_ca("go-sdk", &stdout_text(&chain));
    let identity = "x509.subject: C=US, ST=WA, O=Example, CN=go-notary";
    notation.policy(
        &registry,
        &[
            ("go-jws", "go-sdk", identity),
            ("go-cose", "go-sdk", identity),
            ("go-unsigned", "go-sdk", identity),
        ],
    );
    for (image, envelope) in [
        (&jws_image, "application/jose+json"),
        (&cose_image, "application/cose"),
    ] {
        let verified = notation.ok(["verify", image.as_str()]);
        assert!(verified.contains("Successfully verified"), "{verified}");
        let inspected = notation.ok(["inspect", image.as_str(), "-o", "json"]);
        assert!(inspected.contains(envelope), "{image}: {inspected}");
    }
    let refused = notation.run(["verify", unsigned.as_str()]);
    assert!(!refused.status.success(), "an unsigned image verified");

    // The socket checks against the running agent: its directory given to another uid is
    // refused until that uid is trusted. Giving a directory away needs root.
    if rustix::process::geteuid().is_root() {
        let run_dir = daemon.socket().parent().expect("the socket's directory");
        let foreign = rustix::fs::Uid::from_raw(4242);
        rustix::fs::chown(run_dir, Some(foreign), None).expect("chown the socket directory");
        let mut command = Command::new(&go);
        command
            .args([
                "test",
                "-count=1",
                "-v",
                "-run",
                "TestTrustChecksAgainstTheAgent",
                "./...",
            ])
            .current_dir(e2e_dir())
            .env("KEYWARD_SOCK", daemon.socket())
            .env("KEYWARD_E2E_FOREIGN_UID", "4242")
            .env_remove("KEYWARD_AGENT_UID");
        let output = run_with_timeout(command, None, GO_TEST_TIMEOUT);
        let text = format!("{}{}", stdout_text(&output), stderr_text(&output));
        assert!(
            output.status.success() && text.contains("--- PASS: TestTrustChecksAgainstTheAgent"),
            "the trust checks against the agent failed:\n{text}"
        );
    } else {
        eprintln!(
            "not root: the socket-directory ownership check against the agent needs root to chown; sdk/go's unit tests cover it"
        );
    }
}
