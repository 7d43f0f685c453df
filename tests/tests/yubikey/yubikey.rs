//! The `yubikey` backend through a real daemon (as a plugin process, its default) on a
//! **shimmed virtual PIV card** (`keyward_tests::virtual_piv`: Nitrokey's PIV applet behind
//! pcscd + vsmartcard-vpcd, with SELECT-by-RID and GET VERSION rewritten for the yubikey
//! crate). Generate in a slot, list, public key, sign and verify with openssl (every
//! algorithm, through the conformance suite), a wrong PIN is PERMISSION_DENIED with the retries
//! left and never retried, the card pulled out is UNAVAILABLE and works again once it is back.
//!
//! Generate options (`--slot`, `--pin-policy`, `--touch-policy`) and `keyward keys show`, and
//! `keyward yubikey unlock` (PIN over the socket with a ttl) on the same card.
//!
//! The same suite runs against a physical YubiKey when KEYWARD_TEST_YUBIKEY_SERIAL is set
//! (`yubikey_hardware.rs`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use keyward_sdk::{Client, KeySpec, SignOptions};
use keyward_tests::cli::{assert_cli_error, assert_cli_exit, assert_ok, exit};
use keyward_tests::conformance::check_key;
use keyward_tests::virtual_piv::{BACKEND, PIN, VirtualPiv};
use keyward_tests::{
    DaemonBuilder, TestDaemon, contains_word, run_cli, run_cli_with_stdin, stderr_text,
    stdout_text, toml_string,
};

const SHIM_NOTE: &str =
    "runs on a shimmed virtual PIV card (piv-authenticator + vpcd), not a YubiKey";

/// One virtual card at a time: there is one vpcd reader, and the tests of this file run in
/// parallel threads.
static CARD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Retries `sign` until the card answers (pcscd can take a while to see a card), at most
/// `timeout`; returns the last error if it never does.
async fn sign_when_ready(
    client: &Client,
    key_id: &str,
    timeout: Duration,
) -> Result<(), keyward_sdk::Error> {
    let deadline = Instant::now() + timeout;
    loop {
        match client
            .sign_digest(key_id, &[7u8; 32], &SignOptions::default())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline && e.code() == Some(tonic::Code::Unavailable) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn pin_file(daemon_dir: &std::path::Path, pin: &str) -> std::path::PathBuf {
    let path = daemon_dir.join("yubikey.pin");
    fs::write(&path, format!("{pin}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

async fn daemon(piv: &VirtualPiv, pin: &str) -> (TestDaemon, std::path::PathBuf) {
    let builder = DaemonBuilder::new();
    let path = pin_file(builder.dir(), pin);
    let table = piv.backend_toml(&format!(
        "pin_file = {}\ntimeout = 60",
        toml_string(path.to_str().unwrap())
    ));
    (builder.extra_toml(&table).start().await, path)
}

/// Generates `key_id`, retrying while the card is not seen yet (pcscd notices a new card
/// after a moment).
async fn generate_when_ready(
    client: &Client,
    key_id: &str,
    spec: KeySpec,
) -> Result<keyward_sdk::PublicKey, keyward_sdk::Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.generate_key(BACKEND, key_id, spec).await {
            Err(e) if e.code() == Some(tonic::Code::Unavailable) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn virtual_card_generate_list_sign_pin_and_reinsertion() {
    let _card = CARD.lock().await;
    let Some(mut piv) = VirtualPiv::start() else {
        return;
    };
    eprintln!("yubikey.rs {SHIM_NOTE}");
    let (daemon, pin_path) = daemon(&piv, PIN).await;
    let client = daemon.client().await;

    // Generate: the first free retired slot (82) for P-256, then RSA-2048 in 83.
    for (key_id, spec, slot) in [
        ("yk-p256", KeySpec::EcP256, "82"),
        ("yk-rsa", KeySpec::Rsa2048, "83"),
    ] {
        let key = generate_when_ready(&client, key_id, spec)
            .await
            .unwrap_or_else(|e| panic!("generate {key_id} (slot {slot}): {e}\n{}", daemon.log()));
        assert_eq!(key.info.key_spec(), spec);
        assert_eq!(key.info.backend_type, "yubikey");
        let again = client.public_key(key_id).await.expect("public key");
        assert_eq!(
            again.der, key.der,
            "{key_id}: GenerateKey and GetPublicKey disagree"
        );
        // Every algorithm, verified with openssl and RustCrypto.
        check_key(&client, key_id).await;
    }
    // Generating into a named slot (the key id is the slot).
    let key = client
        .generate_key(BACKEND, "9c", KeySpec::EcP384)
        .await
        .expect("generate in 9c");
    assert_eq!(key.info.key_spec(), KeySpec::EcP384);
    check_key(&client, "9c").await;

    // The CLI lists them with their backend.
    let listing = stdout_text(&run_cli(&daemon, ["keys", "list"]));
    for key_id in ["yk-p256", "yk-rsa", "9c"] {
        assert!(
            listing.contains(key_id),
            "{key_id} missing from `keyward keys list`:\n{listing}"
        );
    }

    // Sign a file with the CLI and verify it with openssl.
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data.txt");
    fs::write(&data, b"signed on a virtual PIV card\n").unwrap();
    let sig = work.path().join("data.sig");
    let pem = work.path().join("pub.pem");
    fs::write(&pem, client.public_key("yk-p256").await.unwrap().pem).unwrap();
    let out = run_cli(
        &daemon,
        [
            "sign",
            "--key",
            "yk-p256",
            "--input",
            data.to_str().unwrap(),
            "--output",
            sig.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "keyward sign: {}", stderr_text(&out));
    let verify = keyward_tests::openssl([
        "dgst",
        "-sha256",
        "-verify",
        pem.to_str().unwrap(),
        "-signature",
        sig.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(
        stdout_text(&verify).contains("Verified OK"),
        "openssl: {}",
        stdout_text(&verify)
    );

    // A wrong PIN: PERMISSION_DENIED with the retries left, and not sent again.
    fs::write(&pin_path, "654321\n").unwrap();
    let first = client
        .sign_digest("yk-p256", &[1u8; 32], &SignOptions::default())
        .await
        .unwrap_err();
    assert_eq!(first.code(), Some(tonic::Code::PermissionDenied), "{first}");
    let text = first.to_string();
    assert!(
        text.contains("rejected the PIN") && text.contains("retries left"),
        "{text}"
    );
    assert!(!contains_word(&text, "654321"), "the PIN leaked: {text}");
    let retries_after_first = retries_in(&text);
    let second = client
        .sign_digest("yk-p256", &[1u8; 32], &SignOptions::default())
        .await
        .unwrap_err();
    assert_eq!(second.code(), Some(tonic::Code::PermissionDenied));
    assert!(second.to_string().contains("not sent again"), "{second}");
    assert_eq!(
        retries_in(&second.to_string()),
        retries_after_first,
        "a rejected PIN was retried"
    );
    // The right PIN again: signing works (and the card's counter resets).
    fs::write(&pin_path, format!("{PIN}\n")).unwrap();
    client
        .sign_digest("yk-p256", &[1u8; 32], &SignOptions::default())
        .await
        .expect("sign with the right PIN");

    // The card pulled out: UNAVAILABLE, naming the key.
    piv.remove();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let gone = client
        .sign_digest("yk-p256", &[2u8; 32], &SignOptions::default())
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some(tonic::Code::Unavailable), "{gone}");
    assert!(
        gone.to_string().contains("yk-p256") || gone.to_string().contains("82"),
        "{gone}"
    );
    // Plugged in again: the next calls work with the same key.
    piv.insert();
    sign_when_ready(&client, "yk-p256", Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("after re-insertion: {e}\n{}", daemon.log()));
    check_key(&client, "yk-rsa").await;
    eprintln!("yubikey.rs: virtual card suite passed ({SHIM_NOTE})");
}

fn retries_in(text: &str) -> String {
    let at = text
        .find(" retries left")
        .unwrap_or_else(|| panic!("no retries in {text}"));
    text[..at]
        .rsplit('(')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the card answers through `daemon` (pcscd sees a new card after a moment):
/// `GetPublicKey` of an empty slot answers NOT_FOUND then, UNAVAILABLE before.
async fn wait_for_card(daemon: &TestDaemon, client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.public_key(&format!("{BACKEND}/95")).await {
            Err(e) if e.code() == Some(tonic::Code::Unavailable) => {
                assert!(
                    Instant::now() < deadline,
                    "the card never answered: {e}\n{}",
                    daemon.log()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => return,
        }
    }
}

/// `keyward keys show KEY_ID --json`, parsed.
fn show_json(daemon: &TestDaemon, key_id: &str) -> serde_json::Value {
    let out = run_cli(daemon, ["keys", "show", key_id, "--json"]);
    assert_ok(&out, &format!("keys show {key_id} --json"));
    serde_json::from_str(&stdout_text(&out)).expect("keys show --json is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn virtual_card_generate_options_and_keys_show() {
    let _card = CARD.lock().await;
    let Some(piv) = VirtualPiv::start() else {
        return;
    };
    let (daemon, _pin_path) = daemon(&piv, PIN).await;
    let client = daemon.client().await;
    wait_for_card(&daemon, &client).await;

    // --slot, --pin-policy, --touch-policy through the CLI.
    let out = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            BACKEND,
            "--type",
            "ec-p256",
            "--slot",
            "9d",
            "--pin-policy",
            "once",
            "--touch-policy",
            "cached",
            "yk-9d",
        ],
    );
    assert_ok(&out, "keys generate --slot 9d");
    assert!(
        stdout_text(&out).contains("(slot 9d)"),
        "{}",
        stdout_text(&out)
    );
    check_key(&client, "yk-9d").await;

    // `keys show`: the slot and the policies. The virtual card reports no slot metadata (its
    // GET METADATA is a stub), so the policies are the ones the backend asked the card for
    // (policy_source = "requested"); a YubiKey 5.3+ reports them itself ("device").
    let out = run_cli(&daemon, ["keys", "show", "yk-9d"]);
    assert_ok(&out, "keys show yk-9d");
    let text = stdout_text(&out);
    for needle in [
        "id: yk-9d",
        "backend: yk",
        "backend_type: yubikey",
        "type: ec-p256",
        "algorithms: ecdsa-sha256",
        "has_certificate: no",
        "  slot: 9d",
        "  pin_policy: once",
        "  touch_policy: cached",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let json = show_json(&daemon, "yk-9d");
    assert_eq!(json["key_id"], "yk-9d");
    assert_eq!(json["key_spec"], "ec-p256");
    let attributes = &json["attributes"];
    assert_eq!(attributes["slot"], "9d", "{json}");
    assert_eq!(attributes["pin_policy"], "once", "{json}");
    assert_eq!(attributes["touch_policy"], "cached", "{json}");
    assert_eq!(
        attributes["policy_source"], "requested",
        "{SHIM_NOTE}: {json}"
    );
    // The virtual card has no attestation key (ATTEST answers "function not supported"); a
    // YubiKey's attestation certificate would be here as PEM.
    match attributes["attestation"].as_str() {
        Some(pem) => assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}"),
        None => eprintln!("yubikey.rs: no attestation ({SHIM_NOTE})"),
    }
    // The same through the SDK, and in the key list.
    let public = client.public_key("yk-9d").await.unwrap();
    assert_eq!(
        public.info.attributes.get("slot").map(String::as_str),
        Some("9d")
    );
    let listed = client.list_keys().await.unwrap();
    let listed = listed
        .iter()
        .find(|k| k.key_id == "yk-9d")
        .expect("yk-9d listed");
    assert_eq!(
        listed.attributes.get("slot").map(String::as_str),
        Some("9d")
    );

    // The key id as the slot still works, and a generic --option too.
    let out = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            BACKEND,
            "--type",
            "ec-p256",
            "--option",
            "pin_policy=never",
            "9a",
        ],
    );
    assert_ok(&out, "keys generate 9a --option pin_policy=never");
    assert_eq!(
        show_json(&daemon, "9a")["attributes"]["pin_policy"],
        "never"
    );

    // A slot that holds a key is never overwritten.
    let out = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            BACKEND,
            "--type",
            "ec-p256",
            "--slot",
            "9d",
            "other",
        ],
    );
    assert_cli_error(
        &out,
        "generate into a full slot",
        &["slot 9d", "already holds a key"],
    );
    check_key(&client, "yk-9d").await;
    // Unknown options and bad values are refused, naming them.
    let out = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            BACKEND,
            "--type",
            "ec-p256",
            "--option",
            "colour=red",
            "yk-bad",
        ],
    );
    assert_cli_error(
        &out,
        "unknown option",
        &["unknown generate option", "colour", "slot"],
    );
    let out = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            BACKEND,
            "--type",
            "ec-p256",
            "--slot",
            "9b",
            "yk-bad",
        ],
    );
    assert_cli_error(&out, "bad slot", &["\"9b\" is not a piv slot"]);
    let out = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            BACKEND,
            "--type",
            "ec-p256",
            "--slot",
            "9e",
            "--option",
            "slot=9e",
            "yk-bad",
        ],
    );
    assert_cli_error(&out, "slot twice", &["given twice"]);

    // A backend that takes no options refuses them clearly (and creates nothing).
    let out = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            "local",
            "--type",
            "ec-p256",
            "--slot",
            "9c",
            "local-key",
        ],
    );
    assert_cli_error(
        &out,
        "options on a local backend",
        &[
            "backend type local takes no generate options (slot)",
            "local-key",
        ],
    );
    assert!(client.public_key("local-key").await.is_err());
    // Without options the local backend generates as before; `keys show` has no attributes.
    let out = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            "local",
            "--type",
            "ec-p256",
            "local-key",
        ],
    );
    assert_ok(&out, "keys generate on local");
    let json = show_json(&daemon, "local-key");
    assert_eq!(json["attributes"], serde_json::json!({}), "{json}");
    eprintln!("yubikey.rs: generate options and keys show passed ({SHIM_NOTE})");
}

#[tokio::test(flavor = "multi_thread")]
async fn virtual_card_unlock_with_ttl() {
    let _card = CARD.lock().await;
    let Some(piv) = VirtualPiv::start() else {
        return;
    };
    // A key made with a PIN file, then a daemon whose backend has no PIN source at all.
    let first_plugins = {
        let (daemon, _pin_path) = daemon(&piv, PIN).await;
        let client = daemon.client().await;
        generate_when_ready(&client, "9c", KeySpec::EcP256)
            .await
            .unwrap_or_else(|e| panic!("generate 9c: {e}\n{}", daemon.log()));
        keyward_tests::plugins::plugin_processes(&daemon, "keyward-plugin-yubikey")
    };
    // The first daemon's plugin must have let go of the card before the next one uses it.
    for plugin in first_plugins {
        let gone = keyward_tests::wait::poll(Duration::from_secs(20), || {
            (!keyward_tests::plugins::is_alive(plugin.pid)).then_some(())
        })
        .await;
        assert!(
            gone.is_some(),
            "the first daemon's plugin {} lives on",
            plugin.pid
        );
    }
    let builder = DaemonBuilder::new();
    let audit = builder.dir().join("audit").join("audit.log");
    let table = piv.backend_toml("timeout = 60");
    let daemon = builder
        .extra_toml(&format!(
            "{table}\n[[key]]\nid = \"held\"\nbackend = {}\nref = \"9c\"\n\n[audit]\npath = {}\n",
            toml_string(BACKEND),
            toml_string(audit.to_str().unwrap())
        ))
        .start()
        .await;
    let client = daemon.client().await;

    // No PIN: signing fails and says what to do.
    let deadline = Instant::now() + Duration::from_secs(60);
    let no_pin = loop {
        match client
            .sign_digest("held", &[3u8; 32], &SignOptions::default())
            .await
        {
            Err(e) if e.code() == Some(tonic::Code::Unavailable) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => break other.expect_err("signing without a PIN must fail"),
        }
    };
    assert_eq!(
        no_pin.code(),
        Some(tonic::Code::PermissionDenied),
        "{no_pin}"
    );
    let text = no_pin.to_string();
    assert!(
        text.contains("no PIN") && text.contains("keyward yubikey unlock"),
        "{text}"
    );

    // A wrong PIN is refused by the card at unlock time, with the retries left.
    let out = run_cli_with_stdin(
        &daemon,
        ["yubikey", "unlock", "--backend", BACKEND],
        b"654321\n",
    );
    // The card refused: PERMISSION_DENIED, the CLI's "refused" exit status.
    assert_cli_exit(
        &out,
        exit::REFUSED,
        "unlock with a wrong PIN",
        &["rejected the PIN", "retries left"],
    );
    assert!(!stderr_text(&out).contains("654321"), "the PIN leaked");

    // The PIN on stdin: signing works. pcscd may still be settling the reader after the
    // previous process let go of the card ("stopped answering": UNAVAILABLE, which is retried).
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = run_cli_with_stdin(
            &daemon,
            ["yubikey", "unlock", "--backend", BACKEND, "--ttl", "10m"],
            format!("{PIN}\n").as_bytes(),
        );
        if out.status.success()
            || !stderr_text(&out).contains("stopped answering")
            || Instant::now() > deadline
        {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_ok(&out, "yubikey unlock");
    assert!(
        stdout_text(&out).contains("unlocked for 600s"),
        "{}",
        stdout_text(&out)
    );
    check_key(&client, "held").await;

    // A 1 s ttl: works now, fails again once it has expired.
    let out = run_cli_with_stdin(
        &daemon,
        ["yubikey", "unlock", "--backend", BACKEND, "--ttl", "1s"],
        format!("{PIN}\n").as_bytes(),
    );
    assert_ok(&out, "yubikey unlock --ttl 1s");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = client
        .sign_digest("held", &[4u8; 32], &SignOptions::default())
        .await
        .expect_err("signing after the unlock expired must fail");
    assert_eq!(
        expired.code(),
        Some(tonic::Code::PermissionDenied),
        "{expired}"
    );
    assert!(expired.to_string().contains("no PIN"), "{expired}");

    // Unlock is for yubikey-like backends only, and for known backends.
    let out = run_cli_with_stdin(
        &daemon,
        ["yubikey", "unlock", "--backend", "local"],
        b"123456\n",
    );
    assert_cli_error(&out, "unlock a local backend", &["local", "takes no pin"]);
    let out = run_cli_with_stdin(
        &daemon,
        ["yubikey", "unlock", "--backend", "nope"],
        b"123456\n",
    );
    assert_cli_error(
        &out,
        "unlock an unknown backend",
        &["no backend named \"nope\""],
    );

    // The PIN is in no log and no audit record; the unlocks are audited.
    assert!(
        !contains_word(&daemon.log(), PIN),
        "the PIN is in the daemon log"
    );
    let records = fs::read_to_string(&audit).expect("audit log");
    assert!(!contains_word(&records, PIN), "the PIN is in the audit log");
    let unlocks: Vec<&str> = records
        .lines()
        .filter(|l| l.contains("\"event\":\"unlock_backend\""))
        .collect();
    assert!(
        unlocks.iter().any(|l| l.contains("\"result\":\"ok\"")),
        "{records}"
    );
    assert!(
        unlocks.iter().any(|l| l.contains("\"result\":\"error\"")),
        "{records}"
    );
    eprintln!("yubikey.rs: unlock passed ({SHIM_NOTE})");
}
