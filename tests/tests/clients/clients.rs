//! Stock gRPC clients of other stacks against a real keywardd, each with its DEFAULT options:
//! Python grpcio, grpc-go, grpcurl (server reflection), @grpc/grpc-js and grpc-java (Netty
//! epoll domain socket). Sources: tests/clients/<lang>/. Each lists keys, fetches a public
//! key, signs a SHA-256 digest (the signature checked with `openssl`), and shows the status of
//! a call for a missing key (NOT_FOUND, its message naming the key).
//!
//! `scripts/test clients` installs the stacks (`peers::Peer::PythonGrpcTools`, `GrpcGoClient`,
//! `Grpcurl`, `GrpcJs`, `GrpcJava`); the Python stubs are generated here, at test time. A
//! missing one is a skip (a failure under CI=true).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward_sdk::KeySpec;
use keyward_tests::peers::{Peer, require};
use keyward_tests::{
    COMMAND_TIMEOUT, TestDaemon, openssl, run_with_timeout, stderr_text, stdout_text,
};

const KEY: &str = "release";
const MISSING: &str = "no-such-key";

/// A daemon with one P-256 key, and a message to sign.
struct Setup {
    daemon: TestDaemon,
    message: PathBuf,
}

async fn setup() -> Setup {
    let daemon = TestDaemon::start("").await;
    daemon
        .client()
        .await
        .generate_key("local", KEY, KeySpec::EcP256)
        .await
        .expect("generate the test key");
    let message = daemon.dir().join("message.txt");
    std::fs::write(&message, b"signed by a stock gRPC client\n").expect("write the message");
    Setup { daemon, message }
}

/// The repository's `proto/` directory.
fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto")
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

fn run(mut command: Command) -> Output {
    command.env_remove("KEYWARD_SOCK");
    run_with_timeout(command, None, COMMAND_TIMEOUT)
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        stdout_text(output),
        stderr_text(output)
    );
}

/// Checks what a client printed: the key list, the public key, the signature (with
/// `openssl`), and the NOT_FOUND status for the missing key.
fn check_report(setup: &Setup, client: &str, output: &Output) {
    assert_ok(output, client);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{client} printed no JSON ({e}): {}", stdout_text(output)));
    let keys: Vec<&str> = report["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert_eq!(keys, [KEY], "{client}: ListKeys");
    let pem = report["public_key_pem"].as_str().expect("public_key_pem");
    assert!(
        pem.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{client}: {pem}"
    );
    let signature = STANDARD
        .decode(report["signature"].as_str().expect("signature"))
        .expect("base64 signature");
    verify(setup, client, pem, &signature);
    assert_eq!(report["error_code"], "NOT_FOUND", "{client}: {report}");
    let message = report["error_message"].as_str().expect("error_message");
    assert!(
        message.contains(MISSING) && message.contains("keyward keys list"),
        "{client}: the message should name the key and say what to do: {message}"
    );
}

/// `openssl dgst -sha256 -verify` over the message.
fn verify(setup: &Setup, client: &str, pem: &str, signature: &[u8]) {
    let dir = setup.daemon.dir();
    let (pem_path, sig_path) = (
        dir.join(format!("{client}.pub.pem")),
        dir.join(format!("{client}.sig")),
    );
    std::fs::write(&pem_path, pem).expect("write the public key");
    std::fs::write(&sig_path, signature).expect("write the signature");
    let verified = openssl([
        OsStr::new("dgst"),
        OsStr::new("-sha256"),
        OsStr::new("-verify"),
        pem_path.as_os_str(),
        OsStr::new("-signature"),
        sig_path.as_os_str(),
        setup.message.as_os_str(),
    ]);
    assert!(
        verified.status.success() && stdout_text(&verified).contains("Verified OK"),
        "{client}: openssl does not verify the signature: {} {}",
        stdout_text(&verified),
        stderr_text(&verified)
    );
}

/// The client arguments every program takes after its own.
fn common_args(setup: &Setup, command: &mut Command) {
    command
        .arg(setup.daemon.socket())
        .arg(KEY)
        .arg(MISSING)
        .arg(&setup.message);
}

#[tokio::test]
async fn python_grpcio_with_default_options() {
    let Some(python) = require(Peer::PythonGrpcTools) else {
        return;
    };
    let setup = setup().await;
    // Code generation at test time, as a Python user does it.
    let generated = setup.daemon.dir().join("python-stubs");
    std::fs::create_dir_all(&generated).expect("stub directory");
    let mut protoc = Command::new(&python);
    protoc
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(proto_dir())
        .arg(format!("--python_out={}", generated.display()))
        .arg(format!("--grpc_python_out={}", generated.display()))
        .arg("keyward/v1/keyward.proto");
    assert_ok(&run(protoc), "grpc_tools.protoc");
    let mut client = Command::new(&python);
    client
        .arg(clients_dir().join("python/client.py"))
        .env("PYTHONPATH", &generated);
    common_args(&setup, &mut client);
    check_report(&setup, "python-grpcio", &run(client));
}

#[tokio::test]
async fn grpc_go_with_default_options() {
    let Some(binary) = require(Peer::GrpcGoClient) else {
        return;
    };
    let setup = setup().await;
    let mut client = Command::new(binary);
    common_args(&setup, &mut client);
    check_report(&setup, "grpc-go", &run(client));
}

#[tokio::test]
async fn grpc_js_with_default_options() {
    let Some(modules) = require(Peer::GrpcJs) else {
        return;
    };
    let setup = setup().await;
    let mut client = Command::new("node");
    client
        .arg(clients_dir().join("node/client.js"))
        .arg(proto_dir())
        .env("NODE_PATH", modules);
    common_args(&setup, &mut client);
    check_report(&setup, "grpc-js", &run(client));
}

#[tokio::test]
async fn grpc_java_netty_epoll_with_default_options() {
    let Some(classpath_file) = require(Peer::GrpcJava) else {
        return;
    };
    let classpath = std::fs::read_to_string(&classpath_file).expect("read the classpath file");
    let setup = setup().await;
    let mut client = Command::new("java");
    client
        .arg("-cp")
        .arg(classpath.trim())
        .arg("dev.keyward.clients.Client");
    common_args(&setup, &mut client);
    check_report(&setup, "grpc-java", &run(client));
}

/// `grpcurl -plaintext -unix FLAGS SOCKET [METHOD]` (its `-unix` flag form), with reflection:
/// no .proto given.
fn grpcurl(grpcurl: &Path, socket: &Path, flags: &[&str], method: &[&str]) -> Output {
    let mut command = Command::new(grpcurl);
    command
        .args(["-plaintext", "-unix"])
        .args(flags)
        .arg(socket)
        .args(method);
    run(command)
}

#[tokio::test]
async fn grpcurl_with_reflection() {
    let Some(grpcurl_bin) = require(Peer::Grpcurl) else {
        return;
    };
    let setup = setup().await;
    let socket = setup.daemon.socket();

    // Reflection lists what the socket serves, and nothing else.
    let list = grpcurl(&grpcurl_bin, socket, &[], &["list"]);
    assert_ok(&list, "grpcurl list");
    let mut services: Vec<String> = stdout_text(&list).lines().map(str::to_string).collect();
    services.sort();
    assert_eq!(
        services,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "keyward.v1.KeyAdmin",
            "keyward.v1.Signer",
        ],
        "reflection must list only the services of the socket"
    );
    let health = grpcurl(&grpcurl_bin, socket, &[], &["grpc.health.v1.Health/Check"]);
    assert_ok(&health, "grpcurl Health/Check");
    assert!(stdout_text(&health).contains("SERVING"));

    let keys = grpcurl(&grpcurl_bin, socket, &[], &["keyward.v1.Signer/ListKeys"]);
    assert_ok(&keys, "grpcurl ListKeys");
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout).expect("JSON");
    assert_eq!(keys["keys"][0]["keyId"], KEY, "{keys}");

    let request = serde_json::json!({ "keyId": KEY }).to_string();
    let public = grpcurl(
        &grpcurl_bin,
        socket,
        &["-d", &request],
        &["keyward.v1.Signer/GetPublicKey"],
    );
    assert_ok(&public, "grpcurl GetPublicKey");
    let public: serde_json::Value = serde_json::from_slice(&public.stdout).expect("JSON");
    let pem = public["publicKeyPem"]
        .as_str()
        .expect("publicKeyPem")
        .to_string();

    use sha2::Digest;
    let digest = sha2::Sha256::digest(std::fs::read(&setup.message).expect("message"));
    let request = serde_json::json!({
        "keyId": KEY,
        "algorithm": "SIGNATURE_ALGORITHM_ECDSA_SHA256",
        "digest": STANDARD.encode(digest),
        "format": "SIGNATURE_FORMAT_DER",
        "purpose": "grpcurl client test",
    })
    .to_string();
    let signed = grpcurl(
        &grpcurl_bin,
        socket,
        &["-d", &request],
        &["keyward.v1.Signer/Sign"],
    );
    assert_ok(&signed, "grpcurl Sign");
    let signed: serde_json::Value = serde_json::from_slice(&signed.stdout).expect("JSON");
    let signature = STANDARD
        .decode(signed["signature"].as_str().expect("signature"))
        .expect("base64");
    verify(&setup, "grpcurl", &pem, &signature);

    let request = serde_json::json!({ "keyId": MISSING }).to_string();
    let missing = grpcurl(
        &grpcurl_bin,
        socket,
        &["-format-error", "-d", &request],
        &["keyward.v1.Signer/GetPublicKey"],
    );
    assert!(!missing.status.success(), "a missing key must fail");
    // -format-error prints the status as JSON (code 5 = NOT_FOUND).
    let status: serde_json::Value = serde_json::from_slice(&missing.stdout)
        .or_else(|_| serde_json::from_slice(&missing.stderr))
        .unwrap_or_else(|e| {
            panic!(
                "no JSON status ({e}): {} {}",
                stdout_text(&missing),
                stderr_text(&missing)
            )
        });
    assert_eq!(status["code"], 5, "{status}");
    let message = status["message"].as_str().expect("message");
    assert!(message.contains(MISSING), "{message}");
}
