//! The `pkcs11` backend when the token changes underneath it, and PIN handling: a token
//! re-initialised or deleted and re-created by another process gives clear errors (never a
//! hang) and then works again through a rebuilt session pool; a wrong PIN is answered with
//! PERMISSION_DENIED naming the token and is tried only once.

use std::fs;
use std::time::Duration;

use keyward_sdk::{Client, KeySpec, SignOptions};
use keyward_tests::conformance::check_key;
use keyward_tests::peers::{Peer, require};
use keyward_tests::softhsm::{BACKEND, PIN, SO_PIN, SoftHsm};
use keyward_tests::wait;
use keyward_tests::{contains_word, set_mode, stderr_text, stdout_text, toml_string};
use tonic::Code;

/// How long a plugin's log line may take to reach the daemon's log.
const LOG_WAIT: Duration = Duration::from_secs(20);

/// How long any one call may take before the test calls it a hang.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// Signs with `key_id` within [`CALL_DEADLINE`]; panics on a hang.
async fn sign(client: &Client, key_id: &str) -> Result<(), keyward_sdk::Error> {
    let options = SignOptions::default();
    let call = client.sign_message(key_id, b"recovery test", &options);
    match tokio::time::timeout(CALL_DEADLINE, call).await {
        Ok(result) => result.map(drop),
        Err(_) => panic!("signing with {key_id} hung for {CALL_DEADLINE:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_reinitialised_underneath_recovers() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    let token = "recover";
    let slot = hsm.init_token(token, SO_PIN, PIN);
    hsm.keypairgen(token, PIN, "EC:prime256v1", "old", "01");
    let daemon = hsm.daemon(&hsm.backend_toml(token, ""), PIN).start().await;
    let client = daemon.client().await;
    let old = format!("{BACKEND}/old");
    sign(&client, &old).await.expect("the old key signs");

    hsm.reinit_token(slot, token, SO_PIN, PIN);
    let error = sign(&client, &old)
        .await
        .expect_err("a key of the old token must not sign");
    assert!(
        matches!(error.code(), Some(Code::NotFound | Code::Unavailable)),
        "after the re-init: {:?} {error}",
        error.code()
    );
    assert!(error.to_string().contains("old"), "{error}");

    // The pool was rebuilt (new sessions, a new login) and the new token's keys work.
    let generated = tokio::time::timeout(
        CALL_DEADLINE,
        client.generate_key(BACKEND, "fresh", KeySpec::EcP256),
    )
    .await
    .expect("generating a key hung");
    generated.expect("a key generated on the re-initialised token");
    check_key(&client, "fresh").await;
    // The plugin's log reaches the daemon's asynchronously.
    wait::for_log(&daemon, &["re-opening the token's sessions"], 1, LOG_WAIT).await;
    let logins = wait::for_log(&daemon, &["pkcs11 login"], 2, LOG_WAIT).await;
    assert_eq!(logins.len(), 2, "{logins:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_deleted_and_recreated_recovers() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    let token = "phoenix";
    hsm.init_token(token, SO_PIN, PIN);
    hsm.keypairgen(token, PIN, "EC:prime256v1", "before", "01");
    let daemon = hsm.daemon(&hsm.backend_toml(token, ""), PIN).start().await;
    let client = daemon.client().await;
    sign(&client, &format!("{BACKEND}/before"))
        .await
        .expect("the key signs");

    hsm.delete_token(token);
    let error = sign(&client, &format!("{BACKEND}/before"))
        .await
        .expect_err("a deleted token must not sign");
    assert!(
        matches!(error.code(), Some(Code::NotFound | Code::Unavailable)),
        "after the delete: {:?} {error}",
        error.code()
    );

    assert!(error.to_string().contains("\"phoenix\""), "{error}");

    // A new token with the same label, in another slot, is found again.
    hsm.init_token(token, SO_PIN, PIN);
    hsm.keypairgen(token, PIN, "EC:prime256v1", "after", "02");
    sign(&client, &format!("{BACKEND}/after"))
        .await
        .expect("a key of the re-created token signs");
    check_key(&client, &format!("{BACKEND}/after")).await;
    wait::for_log(
        &daemon,
        &["re-initialising the PKCS#11 module"],
        1,
        LOG_WAIT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_denied_and_tried_only_once() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    let token = "pinned";
    hsm.init_token(token, SO_PIN, PIN);
    hsm.keypairgen(token, PIN, "EC:prime256v1", "k", "01");
    // A wrong PIN that no log line can hold by chance (a bare "9999" matched slot 369999444).
    let wrong_pin = "wrong-PIN-kq7x";
    let daemon = hsm
        .daemon(&hsm.backend_toml(token, ""), wrong_pin)
        .start()
        .await;
    let client = daemon.client().await;
    for attempt in 1..=3 {
        let error = sign(&client, &format!("{BACKEND}/k"))
            .await
            .expect_err("a wrong PIN must not sign");
        assert_eq!(
            error.code(),
            Some(Code::PermissionDenied),
            "{attempt}: {error}"
        );
        let text = error.to_string();
        assert!(
            text.contains("\"pinned\"") && text.contains("rejected the PIN"),
            "{attempt}: {text}"
        );
        assert!(!text.contains(wrong_pin), "the PIN leaks: {text}");
    }
    let listed = client.list_keys().await.expect("ListKeys");
    assert!(
        listed.iter().all(|k| k.backend != BACKEND),
        "keys listed without a login: {listed:?}"
    );
    let logins = wait::for_log(&daemon, &["pkcs11 login"], 1, LOG_WAIT).await;
    assert_eq!(logins.len(), 1, "{logins:?}");
    let log = daemon.log();
    assert!(!log.contains(wrong_pin), "the PIN is in the log:\n{log}");
    // The token still accepts the right PIN.
    let objects = hsm.private_objects(token, PIN);
    assert!(objects.contains("label:      k"), "{objects}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_pin_file_is_tried_once_more() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    let token = "pinfile";
    hsm.init_token(token, SO_PIN, PIN);
    hsm.keypairgen(token, PIN, "EC:prime256v1", "k", "01");
    let pin_file = hsm.dir().join("pin");
    fs::write(&pin_file, "4321\n").expect("write the PIN file");
    set_mode(&pin_file, 0o600);
    let pin_line = format!(
        "pin_file = {}",
        toml_string(pin_file.to_str().expect("UTF-8"))
    );
    let tables = hsm.backend_toml_with_pin(token, &pin_line, "");
    let daemon = hsm.daemon(&tables, "unused").start().await;
    let client = daemon.client().await;
    let key = format!("{BACKEND}/k");
    for _ in 0..2 {
        let error = sign(&client, &key).await.expect_err("wrong PIN");
        assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
        assert!(error.to_string().contains("pin_file"), "{error}");
        assert!(
            !contains_word(&error.to_string(), "4321"),
            "the PIN leaks: {error}"
        );
    }
    let logins = wait::for_log(&daemon, &["pkcs11 login"], 1, LOG_WAIT).await;
    assert_eq!(logins.len(), 1, "{logins:?}");

    // Fixing the file is noticed at the next call: one more login, which works.
    fs::write(&pin_file, format!("{PIN}\n")).expect("rewrite the PIN file");
    sign(&client, &key).await.expect("the corrected PIN signs");
    check_key(&client, &key).await;
    let logins = wait::for_log(&daemon, &["pkcs11 login"], 2, LOG_WAIT).await;
    assert_eq!(logins.len(), 2, "{logins:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_file_others_can_read_is_refused() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    let token = "loose";
    hsm.init_token(token, SO_PIN, PIN);
    let pin_file = hsm.dir().join("pin");
    fs::write(&pin_file, PIN).expect("write the PIN file");
    set_mode(&pin_file, 0o644);
    let pin_line = format!(
        "pin_file = {}",
        toml_string(pin_file.to_str().expect("UTF-8"))
    );
    let Some(keywardd) = require(Peer::KeywarddPkcs11InProcess) else {
        return;
    };
    let tables = hsm.backend_toml_with_pin(token, &pin_line, "isolation = \"none\"");
    let output = hsm
        .daemon(&tables, "unused")
        .program(keywardd)
        .run_to_exit(Duration::from_secs(30));
    let text = format!("{}{}", stdout_text(&output), stderr_text(&output));
    assert!(!output.status.success(), "keywardd started:\n{text}");
    assert!(text.contains("chmod 600"), "{text}");
    assert!(!contains_word(&text, PIN), "the PIN leaks:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_from_a_systemd_credential_signs() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    let token = "credential";
    hsm.init_token(token, SO_PIN, PIN);
    hsm.keypairgen(token, PIN, "EC:prime256v1", "k", "01");
    let credentials = hsm.dir().join("credentials");
    fs::create_dir(&credentials).expect("create the credentials directory");
    fs::write(credentials.join("hsm-pin"), PIN).expect("write the credential");
    set_mode(&credentials.join("hsm-pin"), 0o600);
    let Some(keywardd) = require(Peer::KeywarddPkcs11InProcess) else {
        return;
    };
    let tables = hsm.backend_toml_with_pin(
        token,
        "pin_credential = \"hsm-pin\"",
        "isolation = \"none\"",
    );
    let daemon = hsm
        .daemon(&tables, "unused")
        .program(keywardd)
        .env(
            "CREDENTIALS_DIRECTORY",
            credentials.to_str().expect("UTF-8"),
        )
        .start()
        .await;
    let client = daemon.client().await;
    sign(&client, &format!("{BACKEND}/k"))
        .await
        .expect("the credential's PIN signs");
}
