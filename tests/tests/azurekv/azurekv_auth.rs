//! The `azurekv` backend's credentials and TLS against a real lowkey-vault: a managed-identity
//! token endpoint that is down or answers an error, service-principal and workload-identity
//! settings with nothing in the environment, a vault whose certificate is not trusted, and
//! the `default` chain finding the managed identity. Every failure must come back quickly with
//! a clear status that names the identity, and never a secret.

use std::time::Duration;

use keyward_sdk::{Client, SignOptions};
use keyward_tests::conformance::check_key;
use keyward_tests::lowkey::LowkeyVault;
use keyward_tests::wait;
use keyward_tests::{DaemonBuilder, TestDaemon, toml_string};
use serde_json::json;
use tonic::Code;

/// How long a failing call may take before the test calls it a hang.
const NO_HANG: Duration = Duration::from_secs(20);
/// The secret header of the managed identity (lowkey-vault ignores it).
const HEADER: &str = "keyward-test-identity-header";

/// A `[[backend]]` table named `name` on `vault`, with `credential` and `extra` lines; with
/// the vault's CA unless `trust` is false.
fn table(vault: &LowkeyVault, name: &str, credential: &str, trust: bool, extra: &str) -> String {
    let ca = if trust {
        format!(
            "ca_file = {}\n",
            toml_string(vault.ca_file().to_str().expect("UTF-8"))
        )
    } else {
        String::new()
    };
    format!(
        "[[backend]]\nname = {}\ntype = \"azurekv\"\nvault_url = {}\ncredential = {}\n{ca}{extra}\n",
        toml_string(name),
        toml_string(vault.vault_url()),
        toml_string(credential),
    )
}

/// A daemon with `tables` whose managed identity endpoint is `endpoint`, and with every
/// service-principal and workload-identity variable empty.
async fn start_daemon(endpoint: &str, tables: &str) -> TestDaemon {
    let mut builder = DaemonBuilder::new()
        .extra_toml(tables)
        .env("IDENTITY_ENDPOINT", endpoint)
        .env("IDENTITY_HEADER", HEADER);
    for name in [
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_FEDERATED_TOKEN_FILE",
    ] {
        builder = builder.env(name, "");
    }
    builder.start().await
}

/// The error of a sign that must fail, within [`NO_HANG`].
async fn sign_error(client: &Client, key_id: &str) -> keyward_sdk::Error {
    let options = SignOptions::default();
    let call = client.sign_message(key_id, b"must fail", &options);
    match tokio::time::timeout(NO_HANG, call).await {
        Err(_) => panic!("signing with {key_id} hung for {NO_HANG:?}"),
        Ok(Ok(_)) => panic!("signing with {key_id} worked although it must fail"),
        Ok(Err(e)) => e,
    }
}

fn assert_mentions(error: &keyward_sdk::Error, words: &[&str]) {
    let text = error.to_string();
    eprintln!("expected failure: {text}");
    for word in words {
        assert!(text.contains(word), "{word:?} is not in: {text}");
    }
    assert!(!text.contains(HEADER), "the identity header is in: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_and_tls_failures_are_explained() {
    let Some(vault) = LowkeyVault::shared() else {
        return;
    };
    vault.create_key(
        "authkey",
        json!({"kty": "EC", "crv": "P-256", "key_ops": ["sign"]}),
    );
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let closed_endpoint = format!("http://127.0.0.1:{closed}/metadata/identity/oauth2/token");
    let tables = [
        table(&vault, "mi", "managed_identity", true, ""),
        table(&vault, "sp", "environment", true, ""),
        table(
            &vault,
            "wi",
            "workload_identity",
            true,
            "client_id = \"0000-1111\"",
        ),
        table(&vault, "untrusted", "managed_identity", false, ""),
    ]
    .concat();
    let daemon = start_daemon(&closed_endpoint, &tables).await;
    let client = daemon.client().await;

    // The token endpoint is down: UNAVAILABLE (or PERMISSION_DENIED), naming the identity.
    let error = sign_error(&client, "mi/authkey").await;
    assert!(
        matches!(
            error.code(),
            Some(Code::Unavailable | Code::PermissionDenied)
        ),
        "{error}"
    );
    assert_mentions(&error, &["managed identity", &closed_endpoint]);

    // Nothing in the environment for a service principal or a workload identity.
    let error = sign_error(&client, "sp/authkey").await;
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert_mentions(&error, &["environment", "AZURE_TENANT_ID"]);
    let error = sign_error(&client, "wi/authkey").await;
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert_mentions(&error, &["workload_identity", "AZURE_FEDERATED_TOKEN_FILE"]);

    // The vault's certificate is not trusted without ca_file.
    let error = sign_error(&client, "untrusted/authkey").await;
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert_mentions(&error, &["certificate", "ca_file", &vault.vault_url()]);
    drop(client);
    drop(daemon);

    // The token endpoint answers an error (a wrong path): PERMISSION_DENIED naming the
    // identity; the default chain says what each of its credentials did.
    let wrong_path = vault
        .token_endpoint()
        .replace("/metadata/identity/", "/metadata/nothing/");
    let tables = [
        table(&vault, "mi", "managed_identity", true, ""),
        table(&vault, "chain", "default", true, ""),
    ]
    .concat();
    let daemon = start_daemon(&wrong_path, &tables).await;
    let client = daemon.client().await;
    let error = sign_error(&client, "mi/authkey").await;
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert_mentions(&error, &["managed identity", &wrong_path]);
    let error = sign_error(&client, "chain/authkey").await;
    assert!(
        matches!(
            error.code(),
            Some(Code::Unavailable | Code::PermissionDenied)
        ),
        "{error}"
    );
    assert_mentions(
        &error,
        &[
            "default",
            "AZURE_TENANT_ID",
            "managed identity",
            "Azure CLI",
        ],
    );
    drop(client);
    drop(daemon);

    // The default chain finds the managed identity; a backend that does not discover serves
    // the keys its [[key]] tables name, and lists nothing else.
    let tables = [
        table(&vault, "chain", "default", true, ""),
        table(
            &vault,
            "quiet",
            "managed_identity",
            true,
            "discover = false",
        ),
        "[[key]]\nid = \"named\"\nbackend = \"quiet\"\nref = \"authkey\"\n".to_string(),
    ]
    .concat();
    let daemon = start_daemon(&vault.token_endpoint(), &tables).await;
    let client = daemon.client().await;
    check_key(&client, "chain/authkey").await;
    check_key(&client, "named").await;
    let listed = client.list_keys().await.expect("list keys");
    let mut ids: Vec<(&str, &str)> = listed
        .iter()
        .map(|k| (k.backend.as_str(), k.key_id.as_str()))
        .filter(|(backend, _)| *backend != "local")
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [("chain", "chain/authkey"), ("quiet", "named")],
        "{listed:?}"
    );
    // Logged by the backend, which may be a plugin process whose log arrives asynchronously.
    wait::for_log(&daemon, &["managed identity"], 1, Duration::from_secs(20)).await;
    let log = daemon.log();
    assert!(
        !log.contains(HEADER) && !log.contains("eyJ"),
        "a secret is in the daemon's log"
    );
}
