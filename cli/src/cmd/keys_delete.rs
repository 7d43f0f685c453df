//! `keyward keys delete`: what the agent answered, as text or JSON.

use keyward_sdk::{Client, DeletionOutcome};
use serde::Serialize;

use crate::output::{EXIT_OK, Failure, write_stdout};

/// The `--json` shape of `keys delete`.
#[derive(Debug, Serialize)]
struct DeletedJson {
    key_id: String,
    backend: String,
    /// `deleted`, `scheduled` or `soft_deleted`.
    outcome: &'static str,
    detail: String,
    /// When a scheduled deletion happens, or until when a soft-deleted key can be recovered
    /// (RFC 3339), `null` when not applicable.
    effective_at: Option<String>,
    notes: Vec<String>,
}

fn outcome_name(outcome: DeletionOutcome) -> &'static str {
    match outcome {
        DeletionOutcome::Deleted => "deleted",
        DeletionOutcome::Scheduled => "scheduled",
        DeletionOutcome::SoftDeleted => "soft_deleted",
        DeletionOutcome::Unspecified => "unknown",
    }
}

/// Deletes `key` and reports what happened.
pub async fn delete(client: &Client, key: &str, json: bool) -> Result<i32, Failure> {
    let answer = client.delete_key(key).await?;
    let outcome = answer.outcome();
    let when = crate::json::time(answer.effective_at);
    if json {
        crate::json::print(&DeletedJson {
            key_id: answer.key_id.clone(),
            backend: answer.backend.clone(),
            outcome: outcome_name(outcome),
            detail: answer.detail.clone(),
            effective_at: when,
            notes: answer.notes.clone(),
        })?;
        return Ok(EXIT_OK);
    }
    let what = match (outcome, &when) {
        (DeletionOutcome::Scheduled, Some(when)) => format!("scheduled for deletion on {when}"),
        (DeletionOutcome::Scheduled, None) => "scheduled for deletion".to_string(),
        (DeletionOutcome::SoftDeleted, Some(when)) => {
            format!("soft-deleted (recoverable until {when})")
        }
        (DeletionOutcome::SoftDeleted, None) => "soft-deleted (recoverable)".to_string(),
        _ => "deleted".to_string(),
    };
    let mut text = format!(
        "key {:?} in backend {:?}: {what}\n  {}\n",
        answer.key_id, answer.backend, answer.detail
    );
    for note in &answer.notes {
        text.push_str(&format!("  note: {note}\n"));
    }
    write_stdout(text.as_bytes())?;
    Ok(EXIT_OK)
}
