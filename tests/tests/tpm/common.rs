//! What the tpm tests share: a daemon with one tpm backend on a fresh swtpm.

use std::time::Duration;

use keyward_sdk::{Client, SignOptions};
use keyward_tests::peers::{Peer, require};
use keyward_tests::swtpm::Swtpm;
use keyward_tests::{DaemonBuilder, TestDaemon};

/// The backend name in every tpm test.
pub const BACKEND: &str = "tpm";
/// The environment variable the tpm backend reads its PIN from when a test gives one.
pub const PIN_ENV: &str = "TPM_PIN";

/// A fresh swtpm, or `None` (after `skipped: ...`) when it is not installed.
pub fn swtpm() -> Option<Swtpm> {
    require(Peer::Swtpm)?;
    Some(Swtpm::new())
}

/// A daemon builder with a tpm backend named [`BACKEND`] on `tpm`, keys in `<dir>/tpm-keys`,
/// plus `extra` lines in its table (e.g. `pin_env = "TPM_PIN"`).
pub fn daemon(tpm: &Swtpm, extra: &str) -> DaemonBuilder {
    let builder = TestDaemon::builder();
    let keys = builder.dir().join("tpm-keys");
    let table = tpm.backend_toml(BACKEND, &keys, extra);
    builder.extra_toml(&table)
}

/// Signs a random message with `key` (the key's default algorithm) and verifies the
/// signature with the SDK's RustCrypto verifier; the error of the sign call otherwise.
pub async fn sign_and_verify(client: &Client, key: &str) -> Result<(), keyward_sdk::Error> {
    let message = keyward_tests::random_bytes(64);
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
    .unwrap_or_else(|e| panic!("{key}: the signature does not verify: {e}"));
    Ok(())
}

/// Signs with `key` until it works, for at most `limit`; panics with the last error.
pub async fn sign_until_ok(client: &Client, key: &str, limit: Duration) {
    keyward_tests::wait::until_async(&format!("{key} to sign again"), limit, async || {
        sign_and_verify(client, key)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
}
