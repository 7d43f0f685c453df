//! The `notation-keyward` binary against the Notation plugin contract 1.0, without notation:
//! JSON requests on stdin, and the exact responses (stdout, exit 0) or errors (stderr JSON,
//! exit 1, nothing on stdout) for every command and the failure cases.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyward_sdk::{SignatureAlgorithm, SignatureFormat};
use keyward_tests::cli::assert_ok;
use keyward_tests::notation::run_plugin;
use keyward_tests::{TestDaemon, random_bytes, run_cli, stderr_text, stdout_text};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// Runs the plugin and returns its stdout JSON, panicking unless it succeeded cleanly.
fn ok(command: &str, request: &Value, socket: Option<&std::path::Path>) -> Value {
    let env: Vec<(&str, &str)> = socket
        .map(|s| vec![("KEYWARD_SOCK", s.to_str().unwrap())])
        .unwrap_or_default();
    let output = run_plugin(command, request.to_string().as_bytes(), &env);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{command}: stderr: {}",
        stderr_text(&output)
    );
    assert!(
        output.stderr.is_empty(),
        "{command}: stderr: {}",
        stderr_text(&output)
    );
    let text = stdout_text(&output);
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "{command}: one JSON line: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{command}: not JSON ({e}): {text}"))
}

/// Runs the plugin expecting the contract's error: exit 1, nothing on stdout, one JSON object
/// on stderr with `code` and a message containing every needle.
fn error(command: &str, stdin: &[u8], env: &[(&str, &str)], code: &str, needles: &[&str]) {
    let output = run_plugin(command, stdin, env);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "{command}: stdout: {}",
        stdout_text(&output)
    );
    let json: Value = serde_json::from_str(&stderr)
        .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {stderr}"));
    assert_eq!(json["errorCode"], code, "{command}: {stderr}");
    let message = json["errorMessage"].as_str().unwrap_or_default();
    for needle in needles {
        assert!(
            message.contains(needle),
            "{command}: {needle:?} not in {message:?}"
        );
    }
}

fn generate(daemon: &TestDaemon, key_type: &str, id: &str) {
    let output = run_cli(
        daemon,
        [
            "keys",
            "generate",
            "--backend",
            "local",
            "--type",
            key_type,
            id,
        ],
    );
    assert_ok(&output, &format!("keys generate {id}"));
}

fn issue(daemon: &TestDaemon, id: &str) {
    let subject = format!("C=US,ST=WA,O=Example,CN={id}");
    let output = run_cli(
        daemon,
        [
            "cert",
            "issue",
            "--key",
            id,
            "--subject",
            &subject,
            "--days",
            "2",
        ],
    );
    assert_ok(&output, &format!("cert issue {id}"));
}

#[test]
fn get_plugin_metadata_is_the_golden_answer() {
    let expected = json!({
        "name": "keyward",
        "description": "Sign with keys held by the keyward signing agent (keywardd); private keys never leave it",
        "version": env!("CARGO_PKG_VERSION"),
        "url": "https://github.com/keyward/keyward",
        "supportedContractVersions": ["1.0"],
        "capabilities": ["SIGNATURE_GENERATOR.RAW"]
    });
    assert_eq!(ok("get-plugin-metadata", &json!({}), None), expected);
    // pluginConfig is sent with every command, this one included.
    let with_config = json!({"pluginConfig": {"socket": "/nowhere"}});
    assert_eq!(ok("get-plugin-metadata", &with_config, None), expected);
    let output = run_plugin("get-plugin-metadata", b"", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_text(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_key_and_generate_signature_for_every_key_spec() {
    let daemon = TestDaemon::start("").await;
    let client = daemon.client().await;
    let cases = [
        (
            "ec-p256",
            "EC-256",
            "SHA-256",
            "ECDSA-SHA-256",
            SignatureAlgorithm::EcdsaSha256,
        ),
        (
            "ec-p384",
            "EC-384",
            "SHA-384",
            "ECDSA-SHA-384",
            SignatureAlgorithm::EcdsaSha384,
        ),
        (
            "ec-p521",
            "EC-521",
            "SHA-512",
            "ECDSA-SHA-512",
            SignatureAlgorithm::EcdsaSha512,
        ),
        (
            "rsa-2048",
            "RSA-2048",
            "SHA-256",
            "RSASSA-PSS-SHA-256",
            SignatureAlgorithm::RsaPssSha256,
        ),
        (
            "rsa-3072",
            "RSA-3072",
            "SHA-384",
            "RSASSA-PSS-SHA-384",
            SignatureAlgorithm::RsaPssSha384,
        ),
        (
            "rsa-4096",
            "RSA-4096",
            "SHA-512",
            "RSASSA-PSS-SHA-512",
            SignatureAlgorithm::RsaPssSha512,
        ),
    ];
    for (key_type, spec, hash, name, algorithm) in cases {
        let key = format!("plugin-{key_type}");
        generate(&daemon, key_type, &key);
        issue(&daemon, &key);
        let config = json!({"socket": daemon.socket()});
        let described = ok(
            "describe-key",
            &json!({"contractVersion": "1.0", "keyId": key, "pluginConfig": config, "extra": 1}),
            None,
        );
        assert_eq!(described, json!({"keyId": key, "keySpec": spec}));

        // A JWS signing input, base64 for JSON as notation sends it.
        let payload = format!(
            "eyJhbGciOiJFUzI1NiJ9.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(40))
        );
        let request = json!({
            "contractVersion": "1.0", "keyId": key, "pluginConfig": config,
            "keySpec": spec, "hashAlgorithm": hash, "payload": STANDARD.encode(&payload),
        });
        let answer = ok("generate-signature", &request, None);
        let fields: Vec<&String> = answer.as_object().unwrap().keys().collect();
        assert_eq!(
            fields,
            ["certificateChain", "keyId", "signature", "signingAlgorithm"]
        );
        assert_eq!(answer["keyId"], key.as_str());
        assert_eq!(answer["signingAlgorithm"], name);
        let public = client.public_key(&key).await.unwrap();
        let chain: Vec<Vec<u8>> = answer["certificateChain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| STANDARD.decode(c.as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(
            chain, public.certificate_chain,
            "{spec}: the chain, leaf first"
        );
        let signature = STANDARD
            .decode(answer["signature"].as_str().unwrap())
            .unwrap();
        let digest = match hash {
            "SHA-256" => Sha256::digest(&payload).to_vec(),
            "SHA-384" => Sha384::digest(&payload).to_vec(),
            _ => Sha512::digest(&payload).to_vec(),
        };
        if key_type.starts_with("ec") {
            let half = match spec {
                "EC-256" => 32,
                "EC-384" => 48,
                _ => 66,
            };
            assert_eq!(signature.len(), 2 * half, "{spec}: raw r||s, not DER");
        }
        // RustCrypto, independent of the agent; RSA-PSS must have salt = hash length.
        keyward_sdk::verify_digest(
            &public.der,
            algorithm,
            &digest,
            &signature,
            SignatureFormat::Raw,
        )
        .unwrap_or_else(|e| panic!("{spec}: the plugin's signature does not verify: {e}"));
    }

    // KEYWARD_SOCK is used when pluginConfig names no socket.
    let described = ok(
        "describe-key",
        &json!({"contractVersion": "1.0", "keyId": "plugin-ec-p256"}),
        Some(daemon.socket()),
    );
    assert_eq!(described["keySpec"], "EC-256");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_follow_the_contract() {
    let daemon = TestDaemon::start("").await;
    generate(&daemon, "ed25519", "plugin-ed");
    generate(&daemon, "ec-p256", "no-cert");
    generate(&daemon, "ec-p256", "with-cert");
    issue(&daemon, "with-cert");
    let socket = daemon.socket().to_str().unwrap().to_string();
    let env = [("KEYWARD_SOCK", socket.as_str())];
    let describe = |key: &str| json!({"contractVersion": "1.0", "keyId": key}).to_string();
    let sign = |key: &str, spec: &str, hash: &str| {
        json!({"contractVersion": "1.0", "keyId": key, "keySpec": spec,
               "hashAlgorithm": hash, "payload": STANDARD.encode(b"payload")})
        .to_string()
    };

    for command in ["describe-key", "generate-signature"] {
        error(
            command,
            json!({"contractVersion": "2.0", "keyId": "with-cert"})
                .to_string()
                .as_bytes(),
            &env,
            "UNSUPPORTED_CONTRACT_VERSION",
            &["2.0", "1.0"],
        );
        error(
            command,
            b"{not json",
            &env,
            "VALIDATION_ERROR",
            &["not valid JSON"],
        );
        error(command, b"", &env, "VALIDATION_ERROR", &["not valid JSON"]);
        error(
            command,
            br#"{"contractVersion":"1.0"}"#,
            &env,
            "VALIDATION_ERROR",
            &["keyId"],
        );
    }
    error(
        "get-plugin-metadata",
        b"[",
        &env,
        "VALIDATION_ERROR",
        &["not valid JSON"],
    );
    error(
        "sign-please",
        b"{}",
        &env,
        "VALIDATION_ERROR",
        &["unknown command"],
    );

    // Unknown key.
    error(
        "describe-key",
        describe("nope").as_bytes(),
        &env,
        "VALIDATION_ERROR",
        &["\"nope\""],
    );
    error(
        "generate-signature",
        sign("nope", "EC-256", "SHA-256").as_bytes(),
        &env,
        "VALIDATION_ERROR",
        &["\"nope\""],
    );
    // Ed25519 is not a Notary key spec.
    error(
        "describe-key",
        describe("plugin-ed").as_bytes(),
        &env,
        "VALIDATION_ERROR",
        &["plugin-ed", "ed25519", "RSA-2048", "EC-256"],
    );
    // No certificate: say how to get one.
    for output in [
        run_plugin("describe-key", describe("no-cert").as_bytes(), &env),
        run_plugin(
            "generate-signature",
            sign("no-cert", "EC-256", "SHA-256").as_bytes(),
            &env,
        ),
    ] {
        let json: Value = serde_json::from_slice(&output.stderr).unwrap();
        assert_eq!(json["errorCode"], "VALIDATION_ERROR");
        let message = json["errorMessage"].as_str().unwrap();
        assert!(
            message.contains("keyward cert issue --key no-cert"),
            "{message}"
        );
    }
    // Malformed fields.
    error(
        "generate-signature",
        sign("with-cert", "EC-256", "MD5").as_bytes(),
        &env,
        "VALIDATION_ERROR",
        &["MD5"],
    );
    error(
        "generate-signature",
        sign("with-cert", "DSA-1024", "SHA-256").as_bytes(),
        &env,
        "VALIDATION_ERROR",
        &["DSA-1024"],
    );
    let bad_payload = json!({"contractVersion": "1.0", "keyId": "with-cert", "keySpec": "EC-256",
                             "hashAlgorithm": "SHA-256", "payload": "***"});
    error(
        "generate-signature",
        bad_payload.to_string().as_bytes(),
        &env,
        "VALIDATION_ERROR",
        &["base64"],
    );
    // An RSA key spec for an EC key: the agent refuses the algorithm.
    error(
        "generate-signature",
        sign("with-cert", "RSA-2048", "SHA-256").as_bytes(),
        &env,
        "VALIDATION_ERROR",
        &["with-cert"],
    );
    // A bad timeout setting.
    let bad_timeout = json!({"contractVersion": "1.0", "keyId": "with-cert",
                             "pluginConfig": {"timeout": "soon"}});
    error(
        "describe-key",
        bad_timeout.to_string().as_bytes(),
        &env,
        "VALIDATION_ERROR",
        &["timeout"],
    );
}

#[test]
fn daemon_not_running_is_an_error_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let request = json!({"contractVersion": "1.0", "keyId": "k",
                         "pluginConfig": {"socket": socket}});
    error(
        "describe-key",
        request.to_string().as_bytes(),
        &[],
        "ERROR",
        &["not running", "keywardd"],
    );
}

#[test]
fn a_silent_agent_is_a_timeout() {
    // A socket that accepts connections but never answers.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // The connection is held until the test is done, however long the plugin takes.
    let (done, until_done) = std::sync::mpsc::channel::<()>();
    let held = std::thread::spawn(move || {
        let accepted: Vec<_> = listener.incoming().take(1).collect();
        let _ = until_done.recv();
        drop(accepted);
    });
    let request = json!({"contractVersion": "1.0", "keyId": "k",
                         "pluginConfig": {"socket": socket, "timeout": "0.5"}});
    let started = std::time::Instant::now();
    error(
        "describe-key",
        request.to_string().as_bytes(),
        &[],
        "TIMEOUT",
        &["did not answer"],
    );
    // The 0.5 s timeout ended it: without one, the plugin would wait for the held connection
    // until the harness kills it (COMMAND_TIMEOUT, 60 s).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    drop(done);
    held.join().unwrap();
}
