//! A Parsec service that goes away: while it is stopped every call is UNAVAILABLE, naming the
//! socket; once it is started again the same backend serves the next calls, without a restart
//! of keywardd or of the plugin.

use std::time::Duration;

use keyward_sdk::{Client, KeySpec, SignOptions};

use crate::{ON_PKCS11, ON_TPM, daemon, parsec};

async fn sign(client: &Client, key: &str) -> Result<(), keyward_sdk::Error> {
    let message = keyward_tests::random_bytes(40);
    let signature = client
        .sign_message(key, &message, &SignOptions::default())
        .await?;
    let public = client.public_key(key).await?;
    keyward_sdk::verify_message(
        &public.der,
        signature.algorithm,
        &message,
        &signature.bytes,
        signature.format,
    )
    .unwrap_or_else(|e| panic!("{key}: {e}"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_parsec_is_unavailable_and_a_started_one_serves_again() {
    let Some(mut parsec) = parsec() else {
        return;
    };
    let daemon = daemon(&parsec).await;
    let client = daemon.client().await;
    for (backend, id) in [(ON_TPM, "fault-tpm"), (ON_PKCS11, "fault-p11")] {
        client
            .generate_key(backend, id, KeySpec::EcP256)
            .await
            .expect("generate");
        sign(&client, id).await.expect("sign while Parsec runs");
    }

    parsec.stop();
    for id in ["fault-tpm", "fault-p11"] {
        let err = sign(&client, id).await.expect_err("Parsec is stopped");
        assert_eq!(err.code(), Some(tonic::Code::Unavailable), "{id}: {err}");
        assert!(
            err.to_string().contains("does not answer")
                && err.to_string().contains(parsec.socket().to_str().unwrap()),
            "{err}"
        );
    }
    let err = client
        .generate_key(ON_PKCS11, "while-down", KeySpec::EcP256)
        .await
        .expect_err("Parsec is stopped");
    assert_eq!(err.code(), Some(tonic::Code::Unavailable), "{err}");

    parsec.start_again();
    for id in ["fault-tpm", "fault-p11"] {
        let what = format!("{id} to sign after Parsec came back");
        keyward_tests::wait::until_async(&what, Duration::from_secs(120), async || {
            sign(&client, id).await.map_err(|e| e.to_string())
        })
        .await;
    }
}
