//! `keyward keys delete` on an `azurekv` key against a real lowkey-vault: the vault soft-deletes
//! the key, the answer says so and how to recover it, and the agent forgets the id.

use keyward_tests::DaemonBuilder;
use keyward_tests::cli::assert_ok;
use keyward_tests::lowkey::LowkeyVault;
use keyward_tests::{run_cli, stdout_text};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_soft_deletes_the_key_and_says_how_to_recover_it() {
    let Some(vault) = LowkeyVault::shared() else {
        return;
    };
    let p256 = json!({"kty": "EC", "crv": "P-256", "key_ops": ["sign", "verify"]});
    vault.create_key("doomed", p256.clone());
    vault.create_key("bystander", p256);
    let mut builder = DaemonBuilder::new().extra_toml(&vault.backend_toml("azure", ""));
    for (name, value) in vault.identity_env() {
        builder = builder.env(name, &value);
    }
    let daemon = builder.start().await;
    let listed = |daemon: &keyward_tests::TestDaemon| -> Vec<String> {
        let output = run_cli(daemon, ["keys", "list", "--json"]);
        assert_ok(&output, "keys list --json");
        let keys: Value = serde_json::from_slice(&output.stdout).expect("keys list --json");
        keys.as_array()
            .expect("an array")
            .iter()
            .filter_map(|k| k["key_id"].as_str().map(str::to_string))
            .collect()
    };
    assert!(listed(&daemon).contains(&"azure/doomed".to_string()));

    let deleted = run_cli(
        &daemon,
        ["keys", "delete", "--key", "azure/doomed", "--yes", "--json"],
    );
    assert_ok(&deleted, "keys delete azure/doomed");
    let answer: Value = serde_json::from_slice(&deleted.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout_text(&deleted)));
    assert_eq!(answer["outcome"], "soft_deleted", "{answer:#}");
    assert_eq!(answer["backend"], "azure", "{answer:#}");
    assert!(
        answer["detail"]
            .as_str()
            .is_some_and(|d| d.contains("az keyvault key recover")),
        "{answer:#}"
    );

    // The vault agrees: gone from its keys, kept among its deleted keys.
    let (status, _) = vault.rest("GET", "/keys/doomed/", None);
    assert_eq!(status, 404, "the key is no longer served");
    let (status, recoverable) = vault.rest("GET", "/deletedkeys/doomed", None);
    assert_eq!(status, 200, "a soft-deleted key: {recoverable}");

    let ids = listed(&daemon);
    assert!(!ids.contains(&"azure/doomed".to_string()), "{ids:?}");
    assert!(ids.contains(&"azure/bystander".to_string()), "{ids:?}");
}
