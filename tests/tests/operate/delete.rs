//! `keyward keys delete`: the local backend removes the key file, PKCS#11 (SoftHSM) destroys
//! the objects (checked with `pkcs11-tool`), a key a policy marks `protected = true` is refused
//! and stays, every attempt is in the audit log, and the agent forgets the id.

use std::fs;

use keyward_tests::cli::{assert_cli_exit, assert_ok, exit};
use keyward_tests::peers::{Peer, require};
use keyward_tests::softhsm::{BACKEND, PIN, SO_PIN, SoftHsm};
use keyward_tests::{DaemonBuilder, openssl_genpkey, run_cli, set_mode, stdout_text};
use serde_json::Value;

use crate::common::{generate, json_out, path};

/// The ids `keys list --json` shows.
fn listed(daemon: &keyward_tests::TestDaemon) -> Vec<String> {
    let output = run_cli(daemon, ["keys", "list", "--json"]);
    let keys = json_out(&output, "keys list --json");
    keys.as_array()
        .expect("keys list --json is an array")
        .iter()
        .map(|k| {
            k["key_id"]
                .as_str()
                .expect("a key has a key_id")
                .to_string()
        })
        .collect()
}

/// The audit log's records.
fn audit_records(file: &std::path::Path) -> Vec<Value> {
    fs::read_to_string(file)
        .expect("read the audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit record is JSON"))
        .collect()
}

#[tokio::test]
async fn delete_a_local_key_and_refuse_a_protected_one() {
    let builder = DaemonBuilder::new();
    let audit = builder.dir().join("audit").join("audit.log");
    let keys = builder.dir().join("keys");
    fs::create_dir(&keys).expect("mkdir keys");
    set_mode(&keys, 0o700);
    openssl_genpkey(
        &keys.join("keep.pem"),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let daemon = builder
        .top_level(&format!("[audit]\npath = \"{}\"\n", path(&audit)))
        .extra_toml(
            "[[key]]\nid = \"keep\"\nbackend = \"local\"\nref = \"keep\"\n[key.policy]\n\
             protected = true\n",
        )
        .start()
        .await;
    generate(&daemon, "local", "ec-p256", "old");
    generate(&daemon, "local", "ed25519", "older");
    let issued = run_cli(
        &daemon,
        [
            "cert",
            "issue",
            "--key",
            "old",
            "--subject",
            "CN=old",
            "--days",
            "30",
        ],
    );
    assert_ok(&issued, "cert issue");
    assert!(keys.join("old.pem").exists());

    // Not on a terminal: without --yes nothing is deleted.
    let unconfirmed = run_cli(&daemon, ["keys", "delete", "--key", "old"]);
    assert_cli_exit(
        &unconfirmed,
        exit::ERROR,
        "delete without --yes",
        &["--yes"],
    );
    assert!(keys.join("old.pem").exists());

    let deleted = run_cli(&daemon, ["keys", "delete", "--key", "old", "--yes"]);
    assert_ok(&deleted, "keys delete old");
    let text = stdout_text(&deleted);
    assert!(
        text.contains("\"old\"") && text.contains("deleted"),
        "{text}"
    );
    assert!(!keys.join("old.pem").exists(), "the key file is removed");
    assert!(!listed(&daemon).contains(&"old".to_string()));
    let sign = run_cli(
        &daemon,
        ["sign", "--key", "old", "--digest", &"ab".repeat(32)],
    );
    assert_cli_exit(&sign, exit::ERROR, "sign with a deleted key", &["old"]);
    // Its certificate chain is forgotten with it: a new key of that name has none.
    generate(&daemon, "local", "ec-p256", "old");
    let chain = run_cli(&daemon, ["cert", "show", "--key", "old"]);
    assert!(!chain.status.success(), "{}", stdout_text(&chain));

    // --json, and the positional form scripts used before --key.
    let json = run_cli(&daemon, ["keys", "delete", "older", "--yes", "--json"]);
    assert_ok(&json, "keys delete older --json");
    let answer = json_out(&json, "keys delete --json");
    assert_eq!(answer["key_id"], "older");
    assert_eq!(answer["backend"], "local");
    assert_eq!(answer["outcome"], "deleted");
    assert!(!keys.join("older.pem").exists());

    // A protected key is refused, and stays.
    let refused = run_cli(&daemon, ["keys", "delete", "--key", "keep", "--yes"]);
    assert_cli_exit(
        &refused,
        exit::REFUSED,
        "delete a protected key",
        &["keep", "protected"],
    );
    assert!(keys.join("keep.pem").exists());
    assert!(listed(&daemon).contains(&"keep".to_string()));

    // Each deletion is audited: an `attempt` record before the backend is asked, then the
    // outcome; the refusal is recorded as `denied`, with the reason.
    let records = audit_records(&audit);
    let deletes: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["event"] == "delete_key")
        .map(|r| {
            (
                r["key"].as_str().unwrap_or_default(),
                r["result"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        deletes,
        [
            ("old", "attempt"),
            ("old", "ok"),
            ("older", "attempt"),
            ("older", "ok"),
            ("keep", "denied"),
        ],
        "{records:#?}"
    );
    let verify =
        keyward_tests::run_cli_at(daemon.socket(), ["audit", "verify", path(&audit)], None);
    assert_ok(&verify, "audit verify");
}

#[tokio::test]
async fn delete_a_softhsm_key_destroys_its_objects() {
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    let token = "operate-delete";
    hsm.init_token(token, SO_PIN, PIN);
    hsm.keypairgen(token, PIN, "EC:prime256v1", "doomed", "01");
    hsm.keypairgen(token, PIN, "EC:prime256v1", "stays", "02");
    let daemon = hsm.daemon(&hsm.backend_toml(token, ""), PIN).start().await;
    let doomed = format!("{BACKEND}/doomed");
    assert!(listed(&daemon).contains(&doomed));

    let deleted = run_cli(
        &daemon,
        ["keys", "delete", "--key", &doomed, "--yes", "--json"],
    );
    assert_ok(&deleted, "keys delete on SoftHSM");
    let answer = json_out(&deleted, "keys delete --json");
    assert_eq!(answer["outcome"], "deleted", "{answer:#}");
    assert_eq!(answer["backend"], BACKEND);

    let objects = hsm.pkcs11_tool([
        "--token-label",
        token,
        "--login",
        "--pin",
        PIN,
        "--list-objects",
    ]);
    let objects = stdout_text(&objects);
    assert!(!objects.contains("doomed"), "objects left:\n{objects}");
    assert!(objects.contains("stays"), "the other key stays:\n{objects}");
    assert!(!listed(&daemon).contains(&doomed));
}
