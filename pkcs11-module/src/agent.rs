//! The module's connection to keywardd: a tokio runtime owned by the module, one SDK client
//! made on first use (the SDK's socket discovery and checks: `$KEYWARD_SOCK`, else the default
//! socket), the calls the token makes, and the one place agent errors become `CKR_` codes.
//!
//! The runtime is a current-thread runtime: it starts no thread of its own, and the thread
//! that calls into the module drives it for the length of the call. A caller that is itself
//! inside a tokio runtime cannot block on another one, so for it each agent call runs on a
//! short-lived scoped thread.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use cryptoki_sys::*;
use keyward_sdk::{Client, Code, PublicKey, SignOptions, SignatureFormat};
use tokio::runtime::Runtime;

use crate::objects::MAX_KEYS;
use crate::sign::{SignInput, SignRequest};

/// The longest a call to the agent may take before the module gives up on it. The agent has
/// its own per-backend deadlines (30 s by default); this only stops a consumer from hanging
/// forever on an agent that stopped answering.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment variable that silences the module's diagnostics (`off`).
pub const LOG_ENV: &str = "KEYWARD_PKCS11_LOG";
/// The environment variable that limits the token to some keys: key ids separated by commas.
pub const KEYS_ENV: &str = "KEYWARD_PKCS11_KEYS";

/// The key ids `KEYWARD_PKCS11_KEYS` names, `None` when it is unset or empty (every key).
pub fn key_filter() -> Option<BTreeSet<String>> {
    let value = std::env::var(KEYS_ENV).ok()?;
    let ids: BTreeSet<String> = value
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    Some(ids).filter(|ids| !ids.is_empty())
}

/// Writes one diagnostic line to stderr: a `CKR_` code alone does not say why the agent
/// refused, and PKCS#11 has no other channel. Control characters are escaped; nothing secret
/// ever reaches here (the module handles no PIN and no key material).
pub fn report(context: &str, message: &dyn Display) {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var_os(LOG_ENV).is_none_or(|v| v != "off"));
    if enabled {
        let text: String = message
            .to_string()
            .chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect();
        eprintln!("keyward-pkcs11: {context}: {text}");
    }
}

/// The `CKR_` code for an agent or SDK error. The one place this mapping is made.
///
/// - The agent refused by policy (`PERMISSION_DENIED`): `CKR_FUNCTION_REJECTED`, the code for
///   a signature request the token's owner declines. No PIN or login would change the answer
///   (`CKR_USER_NOT_LOGGED_IN` and `CKR_PIN_*` would send the consumer asking for one).
/// - The key is gone (`NOT_FOUND`): `CKR_KEY_HANDLE_INVALID`.
/// - The agent or the key's backend cannot be reached: `CKR_DEVICE_ERROR`.
/// - Anything else, rate limits included: `CKR_FUNCTION_FAILED`.
pub fn rv_of(error: &keyward_sdk::Error) -> CK_RV {
    match error.code() {
        Some(Code::PermissionDenied | Code::Unauthenticated) => CKR_FUNCTION_REJECTED,
        Some(Code::NotFound) => CKR_KEY_HANDLE_INVALID,
        Some(Code::Unavailable | Code::DeadlineExceeded) => CKR_DEVICE_ERROR,
        Some(_) => CKR_FUNCTION_FAILED,
        None => match error {
            keyward_sdk::Error::Connect { .. } | keyward_sdk::Error::ConnectRemote { .. } => {
                CKR_DEVICE_ERROR
            }
            _ => CKR_FUNCTION_FAILED,
        },
    }
}

/// The agent, as the module talks to it.
#[derive(Debug)]
pub struct Agent {
    /// `Some` until dropped.
    runtime: Option<Runtime>,
    client: Mutex<Option<Client>>,
    /// `false` when the application said so in `C_Initialize`
    /// (`CKF_LIBRARY_CANT_CREATE_OS_THREADS`).
    may_create_threads: bool,
}

impl Agent {
    /// A new runtime; no connection yet.
    pub fn new(may_create_threads: bool) -> Result<Agent, CK_RV> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| {
                report(
                    "C_Initialize",
                    &format!("cannot start a tokio runtime: {e}"),
                );
                CKR_GENERAL_ERROR
            })?;
        Ok(Agent {
            runtime: Some(runtime),
            client: Mutex::new(None),
            may_create_threads,
        })
    }

    /// Runs `future` to completion on the module's runtime.
    fn run<F>(&self, future: F) -> Result<F::Output, CK_RV>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let runtime = self.runtime.as_ref().ok_or(CKR_GENERAL_ERROR)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(runtime.block_on(future));
        }
        if !self.may_create_threads {
            report(
                "agent call",
                &"called from inside a tokio runtime, where this module needs a thread of its own, but C_Initialize said CKF_LIBRARY_CANT_CREATE_OS_THREADS",
            );
            return Err(CKR_FUNCTION_FAILED);
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .map_err(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The client, connecting on first use (and again after a failed attempt).
    async fn client(&self) -> Result<Client, keyward_sdk::Error> {
        if let Some(client) = self.client.lock().expect("client lock").clone() {
            return Ok(client);
        }
        let client = Client::connect_default().await?;
        *self.client.lock().expect("client lock") = Some(client.clone());
        Ok(client)
    }

    /// Runs one agent call under [`CALL_TIMEOUT`]; an error is reported and mapped.
    fn call<T, F, Fut>(&self, context: &str, f: F) -> Result<T, CK_RV>
    where
        T: Send,
        F: FnOnce(Client) -> Fut + Send,
        Fut: Future<Output = Result<T, keyward_sdk::Error>> + Send,
    {
        enum Failure {
            Agent(keyward_sdk::Error),
            Timeout,
        }
        let outcome = self.run(async {
            let client = self.client().await.map_err(Failure::Agent)?;
            tokio::time::timeout(CALL_TIMEOUT, f(client))
                .await
                .map_err(|_| Failure::Timeout)?
                .map_err(Failure::Agent)
        })?;
        outcome.map_err(|failure| match failure {
            Failure::Agent(error) => {
                report(context, &error);
                rv_of(&error)
            }
            Failure::Timeout => {
                report(
                    context,
                    &format!("the agent did not answer within {CALL_TIMEOUT:?}"),
                );
                CKR_DEVICE_ERROR
            }
        })
    }

    /// The keys the agent offers this process (only those named in `only`, when given), with
    /// public keys and certificate chains.
    pub fn keys(&self, only: Option<&BTreeSet<String>>) -> Result<Vec<PublicKey>, CK_RV> {
        self.call("listing the agent's keys", |client| async move {
            let mut keys = Vec::new();
            let listed = client.list_keys().await?;
            let wanted = listed
                .into_iter()
                .filter(|info| only.is_none_or(|only| only.contains(&info.key_id)))
                .take(MAX_KEYS);
            for info in wanted {
                match client.public_key(&info.key_id).await {
                    Ok(key) => keys.push(key),
                    // Removed between the two calls: not shown.
                    Err(e) if e.code() == Some(Code::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(keys)
        })
    }

    /// Has the agent sign; returns exactly `len` bytes (RSA signatures are left-padded to the
    /// modulus length, as PKCS#1 defines them).
    pub fn sign(&self, request: SignRequest, len: usize) -> Result<Vec<u8>, CK_RV> {
        let context = format!("signing with key {:?}", request.key_id);
        let options = SignOptions {
            algorithm: Some(request.algorithm),
            // PKCS#11 ECDSA signatures are raw r || s.
            format: SignatureFormat::Raw,
            purpose: request.purpose,
        };
        let key_id = request.key_id;
        let signature = self.call(&context, |client| async move {
            match request.input {
                SignInput::Digest(digest) => client.sign_digest(&key_id, &digest, &options).await,
                SignInput::Message(message) => {
                    client.sign_message(&key_id, &message, &options).await
                }
            }
        })?;
        let bytes = signature.bytes;
        if bytes.len() > len {
            report(
                &context,
                &format!(
                    "the agent returned a {}-byte signature where {len} bytes were expected",
                    bytes.len()
                ),
            );
            return Err(CKR_FUNCTION_FAILED);
        }
        let mut padded = vec![0u8; len - bytes.len()];
        padded.extend_from_slice(&bytes);
        Ok(padded)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The client's connection tasks belong to the runtime: drop it first. Then shut the
        // runtime down without blocking, which is allowed even when C_Finalize is called from
        // inside another runtime.
        if let Ok(client) = self.client.get_mut() {
            client.take();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_errors_map_to_the_codes_consumers_understand() {
        let agent = |code| keyward_sdk::Error::Agent {
            code,
            message: "m".into(),
        };
        assert_eq!(rv_of(&agent(Code::PermissionDenied)), CKR_FUNCTION_REJECTED);
        assert_eq!(rv_of(&agent(Code::NotFound)), CKR_KEY_HANDLE_INVALID);
        assert_eq!(rv_of(&agent(Code::Unavailable)), CKR_DEVICE_ERROR);
        assert_eq!(rv_of(&agent(Code::ResourceExhausted)), CKR_FUNCTION_FAILED);
        let connect = keyward_sdk::Error::Connect {
            socket: "/nowhere".into(),
            reason: "no socket there".into(),
        };
        assert_eq!(rv_of(&connect), CKR_DEVICE_ERROR);
    }
}
