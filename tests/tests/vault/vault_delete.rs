//! `keyward keys delete` on a `vault` transit key against a real OpenBao: refused while the
//! key's `deletion_allowed` is off (the error says how to allow it, the key stays), deleted
//! once it is on, and the agent forgets the id.

use keyward_tests::cli::{assert_cli_error, assert_ok};
use keyward_tests::openbao::OpenBao;
use keyward_tests::{DaemonBuilder, run_cli, stdout_text};
use serde_json::{Value, json};

const TOKEN_ENV: &str = "VAULT_TEST_TOKEN";

/// The ids `keys list --json` shows.
fn listed(daemon: &keyward_tests::TestDaemon) -> Vec<String> {
    let output = run_cli(daemon, ["keys", "list", "--json"]);
    assert_ok(&output, "keys list --json");
    let keys: Value = serde_json::from_slice(&output.stdout).expect("keys list --json");
    keys.as_array()
        .expect("an array")
        .iter()
        .filter_map(|k| k["key_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn delete_needs_deletion_allowed_then_removes_the_transit_key() {
    let Some(bao) = OpenBao::dev() else { return };
    bao.create_key("guarded", "ecdsa-p256");
    bao.create_key("bystander", "ecdsa-p256");
    let table = bao.backend_toml("vault", &format!("token_env = \"{TOKEN_ENV}\""));
    let daemon = DaemonBuilder::new()
        .extra_toml(&table)
        .env(TOKEN_ENV, bao.root_token())
        .start()
        .await;
    assert!(listed(&daemon).contains(&"vault/guarded".to_string()));

    // deletion_allowed is off (Vault's default): refused, with the command that allows it.
    let refused = run_cli(
        &daemon,
        ["keys", "delete", "--key", "vault/guarded", "--yes"],
    );
    assert_cli_error(
        &refused,
        "delete without deletion_allowed",
        &["guarded", "deletion_allowed=true"],
    );
    let still = bao.cli(&["read", "-format=json", "transit/keys/guarded"]);
    assert!(still.status.success(), "the key must stay");
    assert!(listed(&daemon).contains(&"vault/guarded".to_string()));

    bao.write(
        "transit/keys/guarded/config",
        json!({"deletion_allowed": true}),
    );
    let deleted = run_cli(
        &daemon,
        [
            "keys",
            "delete",
            "--key",
            "vault/guarded",
            "--yes",
            "--json",
        ],
    );
    assert_ok(&deleted, "delete with deletion_allowed");
    let answer: Value = serde_json::from_slice(&deleted.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout_text(&deleted)));
    assert_eq!(answer["outcome"], "deleted", "{answer:#}");
    assert_eq!(answer["backend"], "vault", "{answer:#}");

    let gone = bao.cli(&["read", "-format=json", "transit/keys/guarded"]);
    assert!(
        !gone.status.success(),
        "OpenBao still has the key: {}",
        stdout_text(&gone)
    );
    let ids = listed(&daemon);
    assert!(!ids.contains(&"vault/guarded".to_string()), "{ids:?}");
    assert!(ids.contains(&"vault/bystander".to_string()), "{ids:?}");
}
