//! The TPM's dictionary-attack protection: a wrong PIN costs exactly one failed authorization,
//! however often clients retry (the TPM's lockout counter, read with `tpm2_getcap`, goes up by
//! one); `keyward unlock` checks a PIN once; and a TPM in lockout is reported as such, with how
//! long it lasts.

use keyward_sdk::{Client, KeySpec};
use keyward_tests::{run_cli_with_stdin, stderr_text, stdout_text};

use crate::common::{BACKEND, PIN_ENV, daemon, sign_and_verify, swtpm};

const RIGHT: &str = "right-pin-1357";
const WRONG: &str = "wrong-pin-8642";

/// Signs with `key` expecting PERMISSION_DENIED; returns the message.
async fn refused(client: &Client, key: &str) -> String {
    let err = sign_and_verify(client, key)
        .await
        .expect_err("a sign with a wrong PIN must fail");
    assert_eq!(
        err.code(),
        Some(tonic::Code::PermissionDenied),
        "{key}: {err}"
    );
    let message = err.to_string();
    assert!(
        !message.contains(WRONG) && !message.contains(RIGHT),
        "{message}"
    );
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_refused_once_and_never_retried_into_a_lockout() {
    let Some(tpm) = swtpm() else {
        return;
    };
    let before = tpm.lockout_counter();
    let mut daemon = daemon(&tpm, &format!("pin_env = \"{PIN_ENV}\""))
        .env(PIN_ENV, RIGHT)
        .start()
        .await;
    let client = daemon.client().await;
    client
        .generate_key(BACKEND, "signer", KeySpec::EcP256)
        .await
        .expect("generate");
    sign_and_verify(&client, "signer")
        .await
        .expect("sign with the right PIN");

    // The PIN changes under the key: the TPM refuses it once...
    daemon.terminate().await;
    daemon.set_env(PIN_ENV, WRONG);
    daemon.restart().await;
    let client = daemon.client().await;
    let first = refused(&client, "signer").await;
    assert!(
        first.contains("refused") && first.contains("will not send this PIN again"),
        "{first}"
    );
    assert!(first.contains("TPM_RC_AUTH_FAIL"), "{first}");
    // ... and every retry is refused by keyward without reaching the TPM.
    for _ in 0..5 {
        let again = refused(&client, "signer").await;
        assert!(again.contains("refused this PIN before"), "{again}");
    }
    daemon.terminate().await;
    assert_eq!(
        tpm.lockout_counter(),
        before + 1,
        "six signing attempts with a wrong PIN must cost exactly one failed authorization"
    );

    // `keyward unlock` with the right PIN makes the key sign again; a wrong one is checked
    // once against the TPM and refused.
    daemon.restart().await;
    let client = daemon.client().await;
    // The user's command: `keyward unlock`, the PIN on stdin.
    let unlocked = run_cli_with_stdin(
        &daemon,
        ["unlock", "--backend", BACKEND, "--ttl", "10m"],
        format!("{RIGHT}\n").as_bytes(),
    );
    assert!(
        unlocked.status.success(),
        "keyward unlock: {}",
        stderr_text(&unlocked)
    );
    assert!(
        stdout_text(&unlocked).contains("unlocked for 600s"),
        "{}",
        stdout_text(&unlocked)
    );
    sign_and_verify(&client, "signer")
        .await
        .expect("sign after unlock");
    let err = client
        .unlock_backend(BACKEND, WRONG.as_bytes(), None)
        .await
        .expect_err("unlock with a wrong PIN");
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    let err = client
        .unlock_backend(BACKEND, WRONG.as_bytes(), None)
        .await
        .expect_err("the same wrong PIN again");
    assert!(err.to_string().contains("refused this PIN before"), "{err}");
    assert!(!daemon.log().contains(WRONG) && !daemon.log().contains(RIGHT));
    daemon.terminate().await;
    assert_eq!(tpm.lockout_counter(), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_in_lockout_is_reported_with_how_long_it_lasts() {
    let Some(tpm) = swtpm() else {
        return;
    };
    // One failure locks the TPM out; one is forgotten every 120 s.
    let setup = tpm.tool(
        "tpm2_dictionarylockout",
        [
            "--setup-parameters",
            "--max-tries=1",
            "--recovery-time=120",
            "--lockout-recovery-time=120",
        ],
    );
    assert!(
        setup.status.success(),
        "tpm2_dictionarylockout: {}",
        stderr_text(&setup)
    );
    let mut daemon = daemon(&tpm, &format!("pin_env = \"{PIN_ENV}\""))
        .env(PIN_ENV, RIGHT)
        .start()
        .await;
    let client = daemon.client().await;
    client
        .generate_key(BACKEND, "locked", KeySpec::Rsa2048)
        .await
        .expect("generate");
    let err = client
        .unlock_backend(BACKEND, WRONG.as_bytes(), None)
        .await
        .expect_err("a wrong PIN");
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");

    // The right PIN now meets the lockout, which keyward names, with its duration.
    let message = refused(&client, "locked").await;
    assert!(
        message.contains("dictionary-attack lockout") && message.contains("120 s"),
        "{message}"
    );
    daemon.terminate().await;
    assert_eq!(tpm.lockout_counter(), 1);

    // The owner clears it; the key signs again.
    let clear = tpm.tool("tpm2_dictionarylockout", ["--clear-lockout"]);
    assert!(clear.status.success(), "{}", stderr_text(&clear));
    daemon.restart().await;
    let client = daemon.client().await;
    sign_and_verify(&client, "locked")
        .await
        .expect("sign after the lockout is cleared");
}
