//! The mutual-TLS listener: only clients with a valid certificate from `client_ca` get past
//! the handshake (no certificate, another CA, an expired certificate and plaintext HTTP/2 are
//! refused); a caller's certificate identities are what key policies and the audit log see;
//! remote callers need a policy that names them and never get `KeyAdmin`.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use keyward_proto::v1::ListKeysRequest;
use keyward_proto::v1::signer_client::SignerClient;
use keyward_sdk::{Client, Code, KeySpec, SignOptions, Signature};
use keyward_tests::pki::{Ca, Leaf, Usage};
use keyward_tests::{
    COMMAND_TIMEOUT, DaemonBuilder, TestDaemon, cli_command, openssl_genpkey, run_with_timeout,
    set_mode, stderr_text, stdout_text, toml_string,
};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const SPIFFE: &str = "spiffe://example.org/ci";

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

fn path(p: &Path) -> String {
    toml_string(p.to_str().expect("UTF-8"))
}

struct Setup {
    daemon: TestDaemon,
    url: String,
    ca: Ca,
    /// CN=build-bot with the SPIFFE ID.
    bot: Leaf,
}

/// A daemon with a TLS listener, an audit log and keys: "ci" (policy: the SPIFFE ID), "bot"
/// (policy: CN=build-bot), "local-only" (no policy).
async fn setup() -> Setup {
    let builder = DaemonBuilder::new();
    let ca = Ca::new(builder.dir(), "clients-and-server-ca");
    let server = ca.issue("keywardd", Usage::Server, &[], None);
    let bot = ca.issue(
        "build-bot",
        Usage::Client,
        &[&format!("URI:{SPIFFE}")],
        None,
    );
    let keys = builder.dir().join("keys");
    std::fs::create_dir(&keys).unwrap();
    set_mode(&keys, 0o700);
    let mut extra = String::new();
    for (id, policy) in [
        ("ci", format!("mtls_identities = [\"{SPIFFE}\"]")),
        (
            "bot",
            "mtls_identities = [\"CN=build-bot\"]\nuids = [0]".to_string(),
        ),
        ("local-only", String::new()),
    ] {
        openssl_genpkey(
            &keys.join(format!("{id}.pem")),
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        extra.push_str(&format!(
            "[[key]]\nid = \"{id}\"\nbackend = \"local\"\nref = \"{id}\"\n"
        ));
        if !policy.is_empty() {
            extra.push_str(&format!("[key.policy]\n{policy}\n"));
        }
    }
    let port = free_port();
    let audit = builder.dir().join("audit.log");
    let top = format!(
        "[tls]\nlisten = \"127.0.0.1:{port}\"\ncert = {}\nkey = {}\nclient_ca = {}\n[audit]\npath = {}\n",
        path(&server.cert),
        path(&server.key),
        path(&ca.cert),
        path(&audit)
    );
    let daemon = builder.top_level(&top).extra_toml(&extra).start().await;
    Setup {
        daemon,
        url: format!("https://127.0.0.1:{port}"),
        ca,
        bot,
    }
}

/// Connects with `client` and signs with `key`: connecting or calling may fail.
async fn remote_sign(
    setup: &Setup,
    client: &Leaf,
    ca: &[u8],
    key: &str,
) -> Result<Signature, keyward_sdk::Error> {
    let work = async {
        let remote =
            Client::connect_tls(&setup.url, ca, &client.cert_pem(), &client.key_pem()).await?;
        remote
            .sign_digest(key, &Sha256::digest(b"remote"), &SignOptions::default())
            .await
    };
    tokio::time::timeout(CALL_TIMEOUT, work)
        .await
        .expect("the call hung instead of failing")
}

fn denied(result: Result<Signature, keyward_sdk::Error>) -> String {
    match result {
        Err(e) if e.code() == Some(Code::PermissionDenied) => e.to_string(),
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
}

/// A URI SAN is any string: one spelled like another kind of identity (`CN=build-bot`,
/// `DNS:...`) must not satisfy a rule for that kind. It is known as `URI:<uri>`.
#[tokio::test]
async fn a_uri_san_never_passes_for_a_cn_or_dns_identity() {
    let setup = setup().await;
    let ca = setup.ca.cert_pem();
    let mimic = setup.ca.issue(
        "outsider",
        Usage::Client,
        &["URI:CN=build-bot", "URI:DNS:build-bot.example"],
        None,
    );
    assert_eq!(
        denied(remote_sign(&setup, &mimic, &ca, "bot").await),
        "policy of key \"bot\": mTLS identity \"CN=outsider\" (also \"URI:CN=build-bot\", \"URI:DNS:build-bot.example\") is not in mtls_identities [\"CN=build-bot\"]"
    );
}

/// A raw gRPC call (ListKeys) over a channel from `endpoint`; `Err` when anything fails.
async fn raw_list(endpoint: Endpoint) -> Result<usize, String> {
    let work = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let keys = SignerClient::new(channel)
            .list_keys(ListKeysRequest {})
            .await
            .map_err(|e| format!("call: {e}"))?;
        Ok(keys.into_inner().keys.len())
    };
    tokio::time::timeout(CALL_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test]
async fn policies_decide_what_a_certificate_may_sign() {
    let setup = setup().await;
    let ca = setup.ca.cert_pem();
    let signature = remote_sign(&setup, &setup.bot, &ca, "ci")
        .await
        .expect("the SPIFFE ID signs with ci");
    let public = setup.daemon.client().await.public_key("ci").await.unwrap();
    keyward_sdk::verify_digest(
        &public.der,
        signature.algorithm,
        &Sha256::digest(b"remote"),
        &signature.bytes,
        signature.format,
    )
    .expect("the remote signature verifies");
    remote_sign(&setup, &setup.bot, &ca, "bot")
        .await
        .expect("CN=build-bot signs with bot");

    let intruder = setup
        .ca
        .issue("intruder", Usage::Client, &["DNS:intruder.example"], None);
    assert_eq!(
        denied(remote_sign(&setup, &intruder, &ca, "ci").await),
        format!(
            "policy of key \"ci\": mTLS identity \"CN=intruder\" (also \"DNS:intruder.example\") is not in mtls_identities [\"{SPIFFE}\"]"
        )
    );
    let message = denied(remote_sign(&setup, &setup.bot, &ca, "local-only").await);
    assert!(
        message.contains(
            "key \"local-only\" has no policy, so it is not available to remote (mTLS) callers"
        ),
        "{message}"
    );
    // Remote callers never manage keys.
    let remote = Client::connect_tls(&setup.url, &ca, &setup.bot.cert_pem(), &setup.bot.key_pem())
        .await
        .unwrap();
    let error = remote
        .generate_key("local", "remote-made", KeySpec::EcP256)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(
        error
            .to_string()
            .contains("KeyAdmin is not available to remote"),
        "{error}"
    );
    // Public keys are open to every authenticated caller.
    remote.public_key("local-only").await.expect("public key");

    // The audit log names the certificate's identities and address.
    let log = std::fs::read_to_string(setup.daemon.dir().join("audit.log")).unwrap();
    keyward_sdk::audit::verify_chain(log.lines()).expect("the audit log verifies");
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let signed = records
        .iter()
        .find(|r| r["key"] == "ci" && r["result"] == "ok")
        .expect("an ok record for ci");
    assert_eq!(
        signed["caller"]["mtls"],
        serde_json::json!([SPIFFE, "CN=build-bot"])
    );
    assert!(
        signed["caller"]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(signed["caller"].get("uid").is_none());
    let refused = records
        .iter()
        .find(|r| r["key"] == "ci" && r["result"] == "denied")
        .expect("a denied record for ci");
    assert_eq!(
        refused["caller"]["mtls"],
        serde_json::json!(["CN=intruder", "DNS:intruder.example"])
    );
}

#[tokio::test]
async fn only_valid_client_certificates_get_through_the_handshake() {
    let setup = setup().await;
    let ca = setup.ca.cert_pem();
    let endpoint = |tls: ClientTlsConfig| {
        Endpoint::from_shared(setup.url.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
    };
    let trusting = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca));
    // The control: the same raw client with the right certificate is served.
    let identity = Identity::from_pem(setup.bot.cert_pem(), setup.bot.key_pem());
    assert_eq!(
        raw_list(endpoint(trusting().identity(identity))).await,
        Ok(3)
    );

    let result = raw_list(endpoint(trusting())).await;
    assert!(
        result.is_err(),
        "served a client without a certificate: {result:?}"
    );

    let other_ca = Ca::new(setup.daemon.dir(), "another-ca");
    let foreign = other_ca.issue(
        "build-bot",
        Usage::Client,
        &[&format!("URI:{SPIFFE}")],
        None,
    );
    let result = remote_sign(&setup, &foreign, &ca, "ci").await;
    assert!(
        result.is_err(),
        "served a certificate from another CA: {result:?}"
    );

    let expired = setup.ca.issue(
        "build-bot",
        Usage::Client,
        &[&format!("URI:{SPIFFE}")],
        Some(("20200101000000Z", "20200102000000Z")),
    );
    let result = remote_sign(&setup, &expired, &ca, "ci").await;
    assert!(result.is_err(), "served an expired certificate: {result:?}");

    let plaintext = Endpoint::from_shared(setup.url.replace("https://", "http://")).unwrap();
    let result = raw_list(plaintext).await;
    assert!(result.is_err(), "served plaintext HTTP/2: {result:?}");

    // None of them reached a key: there is no sign record at all (ListKeys is not audited).
    let log = std::fs::read_to_string(setup.daemon.dir().join("audit.log")).unwrap_or_default();
    assert!(!log.contains("\"event\":\"sign\""), "{log}");
    // Each was refused by the TLS handshake for its own reason (rustls, logged by tonic at
    // debug level, which the test daemons run at). The daemon may log a refusal a moment after
    // the client has given up, so wait for each line.
    for reason in [
        "tls accept error error=peer sent no certificates",
        "tls accept error error=invalid peer certificate: UnknownIssuer",
        "tls accept error error=invalid peer certificate: certificate expired",
        "tls accept error error=received corrupt message",
    ] {
        keyward_tests::wait::for_log(&setup.daemon, &[reason], 1, Duration::from_secs(10)).await;
    }
    // And the daemon still serves after the refused handshakes.
    remote_sign(&setup, &setup.bot, &ca, "ci")
        .await
        .expect("served afterwards");
}

#[tokio::test]
async fn the_cli_reaches_a_remote_agent() {
    let setup = setup().await;
    let digest = hex::encode(Sha256::digest(b"cli"));
    let run = |args: &[&str]| {
        let mut command = cli_command(Path::new(&setup.url));
        command
            .args(args)
            .env_remove("KEYWARD_TLS_CA")
            .env_remove("KEYWARD_TLS_CERT")
            .env_remove("KEYWARD_TLS_KEY");
        command
    };
    let mut command = run(&[
        "--tls-ca",
        setup.ca.cert.to_str().unwrap(),
        "--tls-cert",
        setup.bot.cert.to_str().unwrap(),
        "sign",
        "--key",
        "ci",
        "--digest",
        &digest,
    ]);
    command.env("KEYWARD_TLS_KEY", &setup.bot.key);
    let output = run_with_timeout(command, None, COMMAND_TIMEOUT);
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert!(!stdout_text(&output).trim().is_empty());

    let output = run_with_timeout(run(&["pubkey", "ci"]), None, COMMAND_TIMEOUT);
    assert_eq!(output.status.code(), Some(keyward_tests::cli::exit::ERROR));
    assert!(
        stderr_text(&output).contains("give --tls-ca (or KEYWARD_TLS_CA) too"),
        "{}",
        stderr_text(&output)
    );
    let mut command = cli_command(Path::new(&setup.url.replace("https://", "http://")));
    command.args(["keys", "list"]);
    let output = run_with_timeout(command, None, COMMAND_TIMEOUT);
    assert_eq!(output.status.code(), Some(keyward_tests::cli::exit::ERROR));
    assert!(
        stderr_text(&output).contains("accepts TCP connections only with mutual TLS"),
        "{}",
        stderr_text(&output)
    );
}

#[test]
fn a_tls_key_readable_by_others_is_refused() {
    let builder = DaemonBuilder::new();
    let ca = Ca::new(builder.dir(), "ca");
    let server = ca.issue("keywardd", Usage::Server, &[], None);
    set_mode(&server.key, 0o644);
    let output = builder
        .top_level(&format!(
            "[tls]\nlisten = \"127.0.0.1:{}\"\ncert = {}\nkey = {}\nclient_ca = {}\n",
            free_port(),
            path(&server.cert),
            path(&server.key),
            path(&ca.cert)
        ))
        .run_to_exit(Duration::from_secs(10));
    let stderr = stderr_text(&output);
    assert!(!output.status.success(), "started with a 0644 TLS key");
    assert!(
        stderr.contains(&format!("chmod 600 {}", server.key.display())),
        "{stderr}"
    );

    let output = DaemonBuilder::new()
        .top_level("[tls]\nlisten = \"localhost\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n")
        .run_to_exit(Duration::from_secs(10));
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 3")
            && stderr.contains("[tls]: listen = \"localhost\" is not an IP address and port"),
        "{stderr}"
    );
}
