//! `keyward keys delete` on an `awskms` key against a real local-kms: KMS schedules the deletion
//! (`ScheduleKeyDeletion` with `deletion_pending_days`), the answer says so and how to cancel
//! it, and the agent forgets the id.

use keyward_tests::cli::assert_ok;
use keyward_tests::localkms::{LocalKms, isolated_aws_env};
use keyward_tests::{DaemonBuilder, run_cli, stdout_text};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_schedules_the_kms_deletion_and_says_how_to_cancel() {
    let Some(kms) = LocalKms::start() else { return };
    let doomed = kms.create_signing_key("ECC_NIST_P256");
    let stays = kms.create_signing_key("ECC_NIST_P256");
    let table = kms.backend_toml("awskms", "deletion_pending_days = 7");
    let daemon = isolated_aws_env(DaemonBuilder::new())
        .extra_toml(&format!(
            "{table}[[key]]\nid = \"doomed\"\nbackend = \"awskms\"\nref = \"{doomed}\"\n\
             [[key]]\nid = \"stays\"\nbackend = \"awskms\"\nref = \"{stays}\"\n"
        ))
        .start()
        .await;
    let signed = run_cli(
        &daemon,
        ["sign", "--key", "doomed", "--digest", &"ab".repeat(32)],
    );
    assert_ok(&signed, "sign before the deletion");

    let deleted = run_cli(
        &daemon,
        ["keys", "delete", "--key", "doomed", "--yes", "--json"],
    );
    assert_ok(&deleted, "keys delete doomed");
    let answer: Value = serde_json::from_slice(&deleted.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout_text(&deleted)));
    assert_eq!(answer["outcome"], "scheduled", "{answer:#}");
    assert_eq!(answer["backend"], "awskms", "{answer:#}");
    let detail = answer["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("7 days") && detail.contains("cancel-key-deletion"),
        "{answer:#}"
    );
    assert!(answer["effective_at"].is_string(), "{answer:#}");

    // KMS itself says so; the other key is untouched.
    assert_eq!(kms.describe(&doomed)["KeyState"], "PendingDeletion");
    assert_eq!(kms.describe(&stays)["KeyState"], "Enabled");

    // The agent forgot the id.
    let list = run_cli(&daemon, ["keys", "list", "--json"]);
    let keys: Value = serde_json::from_slice(&list.stdout).expect("keys list --json");
    let ids: Vec<&str> = keys
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|k| k["key_id"].as_str())
        .collect();
    assert!(!ids.contains(&"doomed"), "{ids:?}");
    assert!(ids.contains(&"stays"), "{ids:?}");
}
