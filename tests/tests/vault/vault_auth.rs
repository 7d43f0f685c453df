//! How the `vault` backend authenticates, against a real OpenBao server: a short-lived token
//! kept alive by renewal, AppRole logins (renewal and logging in again at the max TTL), a JWT
//! login as a CI job does it, a policy without `sign`, and secret files that others can read.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyward_sdk::{Client, KeySpec, SignOptions};
use keyward_tests::openbao::OpenBao;
use keyward_tests::wait;
use keyward_tests::{DaemonBuilder, TestDaemon, openssl, openssl_genpkey, set_mode, toml_string};
use serde_json::json;
use tonic::Code;

/// The signing policy of docs/vault.md: list, read and sign with every transit key.
const SIGNER_POLICY: &str = r#"
path "transit/keys" { capabilities = ["list"] }
path "transit/keys/+" { capabilities = ["read"] }
path "transit/sign/+" { capabilities = ["update"] }
"#;

/// The policy of docs/vault.md that lets `keyward keys generate` create keys.
const GENERATOR_POLICY: &str = r#"
path "transit/keys/+" { capabilities = ["read", "update"] }
"#;

/// A policy that can see keys but not sign.
const READER_POLICY: &str = r#"
path "transit/keys" { capabilities = ["list"] }
path "transit/keys/+" { capabilities = ["read"] }
"#;

const TOKEN_ENV: &str = "VAULT_TEST_TOKEN";

/// Starts a daemon with one vault backend authenticated by `auth` lines, and `env` set.
async fn start(bao: &OpenBao, auth: &str, env: &[(&str, &str)]) -> TestDaemon {
    let mut builder = DaemonBuilder::new().extra_toml(&bao.backend_toml("vault", auth));
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    builder.start().await
}

/// Signs with `key_id` every 400 ms for `duration`; panics at the first failure, naming when.
async fn keep_signing(client: &Client, key_id: &str, duration: Duration) -> usize {
    let started = Instant::now();
    let mut count = 0;
    while started.elapsed() < duration {
        let message = format!("signature {count}");
        if let Err(e) = client
            .sign_message(key_id, message.as_bytes(), &SignOptions::default())
            .await
        {
            panic!(
                "signature {count} failed after {:.1}s: {e}",
                started.elapsed().as_secs_f64()
            );
        }
        count += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_token_is_renewed() {
    let Some(bao) = OpenBao::dev() else { return };
    bao.create_key("k", "ecdsa-p256");
    bao.write_policy("signer", SIGNER_POLICY);
    let token = bao.create_token(&["signer"], "6s");
    let daemon = start(
        &bao,
        &format!("token_env = \"{TOKEN_ENV}\""),
        &[(TOKEN_ENV, &token)],
    )
    .await;
    let client = daemon.client().await;

    // Without renewal the token would be gone after 6 s.
    let count = keep_signing(&client, "vault/k", Duration::from_secs(13)).await;
    assert!(count >= 20, "only {count} signatures");
    let lookup = bao.write("auth/token/lookup", json!({"token": token}));
    assert!(
        lookup["data"]["last_renewal_time"].as_i64().unwrap_or(0) > 0,
        "the token was never renewed: {lookup}"
    );
    assert!(!daemon.log().contains(&token), "the token is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_logs_in_and_logs_in_again_at_the_max_ttl() {
    let Some(bao) = OpenBao::dev() else { return };
    bao.create_key("k", "ed25519");
    bao.write_policy("signer", SIGNER_POLICY);
    bao.enable_auth("approle", "approle");
    let (role_id, secret_id) = bao.approle(
        "keyward",
        json!({"token_policies": ["signer"], "token_ttl": "3s", "token_max_ttl": "5s"}),
    );
    let secret_file = bao.secret_file("secret-id", &secret_id);
    let auth = format!(
        "approle_role_id = {}\napprole_secret_id_file = {}",
        toml_string(&role_id),
        toml_string(secret_file.to_str().expect("UTF-8"))
    );
    let daemon = start(&bao, &auth, &[]).await;
    let client = daemon.client().await;

    // Tokens live 3 s, renewable up to 5 s: 10 s of signing needs renewals and new logins.
    keep_signing(&client, "vault/k", Duration::from_secs(10)).await;
    // The backend's log lines (a plugin's, in time) reach the daemon's log asynchronously.
    wait::for_log(&daemon, &["logged in to vault"], 2, Duration::from_secs(20)).await;
    let log = daemon.log();
    assert!(!log.contains(&secret_id), "the secret id is in the log");
    drop(client);
    drop(daemon);

    // A secret id file that others can read is refused, without showing the secret: the vault
    // plugin does not start (keywardd serves on, saying why in its log).
    set_mode(&secret_file, 0o644);
    let daemon = DaemonBuilder::new()
        .extra_toml(&bao.backend_toml("vault", &auth))
        .start()
        .await;
    let refused = wait::for_log(
        &daemon,
        &["plugin down", "cannot start the backend", "chmod 600"],
        1,
        Duration::from_secs(20),
    )
    .await;
    assert!(!refused.is_empty());
    let text = daemon.log();
    assert!(!text.contains(&secret_id), "{text}");
    drop(daemon);

    // A wrong secret id: the login is refused, and the error says so.
    let wrong = bao.secret_file("wrong-secret-id", "00000000-0000-0000-0000-000000000000");
    let auth = format!(
        "approle_role_id = {}\napprole_secret_id_file = {}",
        toml_string(&role_id),
        toml_string(wrong.to_str().expect("UTF-8"))
    );
    let daemon = start(&bao, &auth, &[]).await;
    let error = daemon
        .client()
        .await
        .sign_message("vault/k", b"m", &SignOptions::default())
        .await
        .expect_err("a wrong secret id");
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(error.to_string().contains("log in with approle"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_without_sign_is_permission_denied_naming_the_path() {
    let Some(bao) = OpenBao::dev() else { return };
    bao.create_key("release", "ecdsa-p384");
    bao.write_policy("reader", READER_POLICY);
    let token = bao.create_token(&["reader"], "1h");
    let daemon = start(
        &bao,
        &format!("token_env = \"{TOKEN_ENV}\""),
        &[(TOKEN_ENV, &token)],
    )
    .await;
    let client = daemon.client().await;

    let listed = client.list_keys().await.expect("list");
    assert!(
        listed.iter().any(|k| k.key_id == "vault/release"),
        "{listed:?}"
    );
    client
        .public_key("vault/release")
        .await
        .expect("the reader may read the public key");
    let error = client
        .sign_message("vault/release", b"m", &SignOptions::default())
        .await
        .expect_err("signing without the sign capability");
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("update on \"transit/sign/release\""),
        "the error does not name the policy path: {text}"
    );
    let error = client
        .generate_key("vault", "new-key", KeySpec::EcP256)
        .await
        .expect_err("creating a key without update on transit/keys/+");
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(
        error
            .to_string()
            .contains("update on \"transit/keys/new-key\""),
        "{error}"
    );
    drop(client);
    drop(daemon);

    // With the signing and generating policies of docs/vault.md: create, then sign.
    bao.write_policy("signer", SIGNER_POLICY);
    bao.write_policy("generator", GENERATOR_POLICY);
    let token = bao.create_token(&["signer", "generator"], "1h");
    let daemon = start(
        &bao,
        &format!("token_env = \"{TOKEN_ENV}\""),
        &[(TOKEN_ENV, &token)],
    )
    .await;
    let client = daemon.client().await;
    client
        .generate_key("vault", "new-key", KeySpec::EcP256)
        .await
        .expect("the documented policies allow creating a key");
    keyward_tests::conformance::check_key(&client, "new-key").await;
}

/// An RS256 JWT for `claims`, signed with the PEM key at `key`.
fn jwt(key: &std::path::Path, claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let dir = key.parent().expect("a directory");
    let input = dir.join("jwt-input");
    std::fs::write(&input, &signing_input).expect("write the JWT input");
    let output = openssl([
        "dgst",
        "-sha256",
        "-sign",
        key.to_str().expect("UTF-8"),
        input.to_str().expect("UTF-8"),
    ]);
    assert!(output.status.success(), "openssl dgst -sign failed");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(output.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_job_logs_in_with_its_jwt() {
    let Some(bao) = OpenBao::dev() else { return };
    bao.create_key("k", "rsa-2048");
    bao.write_policy("signer", SIGNER_POLICY);
    bao.enable_auth("jwt", "jwt");
    let key = bao.dir().join("issuer.pem");
    openssl_genpkey(
        &key,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let public = openssl(["pkey", "-in", key.to_str().expect("UTF-8"), "-pubout"]);
    assert!(public.status.success());
    bao.write(
        "auth/jwt/config",
        json!({
            "jwt_validation_pubkeys": [String::from_utf8_lossy(&public.stdout)],
            "bound_issuer": "https://ci.keyward.test"
        }),
    );
    bao.write(
        "auth/jwt/role/ci",
        json!({
            "role_type": "jwt", "user_claim": "sub", "bound_audiences": ["keyward"],
            "token_policies": ["signer"], "token_ttl": "1m"
        }),
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = jwt(
        &key,
        &json!({
            "iss": "https://ci.keyward.test", "sub": "job-42", "aud": "keyward",
            "iat": now, "nbf": now, "exp": now + 600
        }),
    );
    // CI systems write the job token readable; that is fine for a short-lived JWT.
    let token_file = bao.dir().join("ci-token");
    std::fs::write(&token_file, &token).expect("write the JWT");
    set_mode(&token_file, 0o644);
    let auth = |role: &str| {
        format!(
            "jwt_role = \"{role}\"\njwt_token_file = {}",
            toml_string(token_file.to_str().expect("UTF-8"))
        )
    };

    let daemon = start(&bao, &auth("ci"), &[]).await;
    let client = daemon.client().await;
    keyward_tests::conformance::check_key(&client, "vault/k").await;
    wait::for_log(&daemon, &["logged in to vault"], 1, Duration::from_secs(20)).await;
    assert!(!daemon.log().contains(&token), "the JWT is in the log");
    drop(client);
    drop(daemon);

    let daemon = start(&bao, &auth("no-such-role"), &[]).await;
    let error = daemon
        .client()
        .await
        .public_key("vault/k")
        .await
        .expect_err("a role that does not exist");
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(
        error.to_string().contains("log in with jwt role"),
        "{error}"
    );
}
