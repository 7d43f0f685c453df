//! A TPM that goes away: swtpm killed in the middle of a run of signatures makes the calls
//! UNAVAILABLE (never a wrong or unverified signature, never a hang), and when swtpm is back on
//! the same state the backend reconnects by itself; the reconnection costs no failed
//! authorization (the lockout counter does not move).

use std::time::Duration;

use keyward_sdk::{KeySpec, SignOptions};

use crate::common::{BACKEND, PIN_ENV, daemon, sign_and_verify, sign_until_ok, swtpm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_killed_mid_run_is_unavailable_and_recovers() {
    let Some(mut tpm) = swtpm() else {
        return;
    };
    let mut daemon = daemon(&tpm, &format!("pin_env = \"{PIN_ENV}\""))
        .env(PIN_ENV, "fault-pin-1")
        .start()
        .await;
    let client = daemon.client().await;
    for (id, spec) in [
        ("fault-ec", KeySpec::EcP256),
        ("fault-rsa", KeySpec::Rsa2048),
    ] {
        client
            .generate_key(BACKEND, id, spec)
            .await
            .expect("generate");
        sign_and_verify(&client, id)
            .await
            .expect("sign before the fault");
    }

    // 48 signatures in flight; swtpm dies among them.
    let mut tasks = Vec::new();
    for i in 0..48 {
        let client = client.clone();
        let key = if i % 2 == 0 { "fault-ec" } else { "fault-rsa" };
        tasks.push(tokio::spawn(async move {
            let message = keyward_tests::random_bytes(32);
            let result = client
                .sign_message(key, &message, &SignOptions::default())
                .await;
            (key, message, result)
        }));
        if i == 16 {
            tpm.kill();
        }
    }
    let mut failed = 0;
    for task in tasks {
        let (key, message, result) = task.await.expect("signing task");
        match result {
            Ok(signature) => {
                let public = client.public_key(key).await.expect("public key (cached)");
                keyward_sdk::verify_message(
                    &public.der,
                    signature.algorithm,
                    &message,
                    &signature.bytes,
                    signature.format,
                )
                .expect("a signature made before the fault verifies");
            }
            Err(e) => {
                assert_eq!(e.code(), Some(tonic::Code::Unavailable), "{e}");
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "no call noticed that the TPM was gone");

    // While it is down: UNAVAILABLE, saying what is wrong.
    let err = sign_and_verify(&client, "fault-ec")
        .await
        .expect_err("the TPM is down");
    assert_eq!(err.code(), Some(tonic::Code::Unavailable), "{err}");
    assert!(err.to_string().contains("does not answer"), "{err}");

    // Back on the same state. A TPM that lost power without TPM2_Shutdown after a PIN was
    // used counts one failed authorization by itself (it cannot know whether the last one
    // failed): read the counter now, while keyward is not connected, as the baseline.
    tpm.start();
    let after_restart = tpm.lockout_counter();
    assert!(
        after_restart <= 1,
        "lockout counter {after_restart} after the restart"
    );
    // Both keys sign again, without a restart of anything of ours.
    for id in ["fault-ec", "fault-rsa"] {
        sign_until_ok(&client, id, Duration::from_secs(120)).await;
    }
    daemon.terminate().await;
    assert_eq!(
        tpm.lockout_counter(),
        after_restart,
        "reconnecting must never cost a failed authorization"
    );
}
