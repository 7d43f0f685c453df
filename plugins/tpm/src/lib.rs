//! The `tpm` backend: keys created in and used by the machine's TPM 2.0, through `tss-esapi`.
//!
//! - A key is a file, `<path>/<name>.tpm`, in the TSS2 PRIVATE KEY format of ssh-tpm-agent and
//!   tpm2-openssl ([`keyfile`]): its public area and its private area wrapped by the TPM's
//!   storage root key. The private key never exists outside the TPM; the file is useless on
//!   another machine. Keys are loaded when used, not stored in the TPM's scarce NV memory: any
//!   number of keys, no owner authorization needed to add one, backed up by copying files.
//! - The storage root key is the owner hierarchy's standard ECC P-256 SRK, derived again from
//!   its template whenever the backend connects ([`templates`]).
//! - Keys: ECDSA P-256 and P-384, RSA-2048 and RSA-3072; every hash, RSA PKCS#1 v1.5 and PSS.
//! - A PIN (the keys' authorization value) from `pin_env`, `pin_file` or `keyward unlock`. A PIN
//!   the TPM refused is never sent again ([`pin`]), and the TPM's dictionary-attack lockout is
//!   reported as such, with how long it lasts.
//! - One thread talks to the TPM and reconnects after a failure ([`worker`]).

mod errors;
pub mod keyfile;
mod pin;
mod settings;
mod store;
mod templates;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keyward_plugin_api::{
    Backend, BackendError, KeyDescription, KeySpec, Secret, SignOp, Signature,
};

use crate::errors::{Kind, describe, kind};
use crate::keyfile::KeyFile;
use crate::pin::{Origin, Pins};
use crate::store::Store;
use crate::worker::{Failure, Lockout, Stage, Tpm};

pub use settings::{DEFAULT_TCTI, SecretSource, TpmSettings};

/// The machine's TPM as a keyward backend.
#[derive(Debug)]
pub struct TpmBackend {
    name: String,
    tcti: String,
    store: Store,
    tpm: Tpm,
    pins: Arc<Mutex<Pins>>,
    /// Parsed key files by name, valid while the file's stamp (inode, size, mtime) is the
    /// same: a signature costs a `stat`, not a read, a parse and a public-key check.
    parsed: Mutex<HashMap<String, (FileStamp, Arc<ParsedKey>)>>,
}

type FileStamp = (u64, u64, i64, i64);

/// A key file ready to sign with.
#[derive(Debug)]
struct ParsedKey {
    file: KeyFile,
    spec: KeySpec,
    private: tss_esapi::structures::Private,
}

impl TpmBackend {
    /// Opens (or creates) the key directory, reads the PIN and the owner auth value if
    /// configured, and starts the TPM thread. The TPM itself is opened on first use, so a TPM
    /// that is not there yet makes calls UNAVAILABLE, not the start fail.
    pub fn new(settings: TpmSettings) -> Result<Self, BackendError> {
        let name =
            std::env::var(keyward_plugin_api::plugin::ENV_NAME).unwrap_or_else(|_| "tpm".into());
        let store = Store::open(&settings.path)?;
        let pins = Pins::new(name.clone(), settings.pin.clone())?;
        let owner_auth = settings
            .owner_auth
            .as_ref()
            .map(|source| source.read("owner_auth"))
            .transpose()?;
        let tpm = Tpm::start(settings.tcti.clone(), owner_auth)?;
        tracing::info!(tcti = %settings.tcti, dir = %store.dir().display(), "tpm backend ready");
        Ok(TpmBackend {
            name,
            tcti: settings.tcti,
            store,
            tpm,
            pins: Arc::new(Mutex::new(pins)),
            parsed: Mutex::new(HashMap::new()),
        })
    }

    /// The key `name`, parsed, from the cache when its file has not changed.
    fn parsed_key(&self, name: &str) -> Result<Arc<ParsedKey>, BackendError> {
        let mut cache = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = match self.store.stamp(name) {
            Ok(stamp) => stamp,
            Err(e) => {
                // A deleted key leaves nothing behind in the cache.
                cache.remove(name);
                return Err(e);
            }
        };
        if let Some((cached, key)) = cache.get(name)
            && *cached == stamp
        {
            return Ok(key.clone());
        }
        let file = self.store.read(name)?;
        let (spec, _) = templates::describe_public(&file.public).map_err(|reason| {
            BackendError::Unsupported(format!("tpm key {name:?} cannot be used: {reason}"))
        })?;
        let private = file
            .private()
            .map_err(|reason| BackendError::InvalidInput(format!("tpm key {name:?}: {reason}")))?;
        let key = Arc::new(ParsedKey {
            file,
            spec,
            private,
        });
        cache.insert(name.to_string(), (stamp, key.clone()));
        Ok(key)
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, Pins> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn describe_file(&self, name: &str, file: &KeyFile) -> Result<KeyDescription, BackendError> {
        let (spec, public_key_der) =
            templates::describe_public(&file.public).map_err(|reason| {
                BackendError::Unsupported(format!("tpm key {name:?} cannot be used: {reason}"))
            })?;
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "pin".to_string(),
            if file.empty_auth { "no" } else { "yes" }.to_string(),
        );
        attributes.insert(
            "file".to_string(),
            self.store
                .dir()
                .join(format!("{name}.{}", store::EXTENSION))
                .display()
                .to_string(),
        );
        Ok(KeyDescription {
            reference: name.to_string(),
            spec,
            public_key_der,
            version: None,
            openpgp_certificate: None,
            attributes,
            algorithms: Vec::new(),
        })
    }

    /// Reads the TPM's lockout counters for a message; `None` if they cannot be read.
    async fn lockout(&self) -> Option<Lockout> {
        match self.tpm.run(|worker| worker.lockout()).await {
            Ok(Ok(lockout)) => Some(lockout),
            _ => None,
        }
    }

    /// Turns a failed TSS call into the error a client sees. `what` says what keyward was
    /// doing ("signing with key \"release\"").
    async fn error(&self, what: &str, failure: Failure) -> BackendError {
        let detail = describe(&failure.error);
        match kind(&failure.error) {
            Kind::Transport => BackendError::Unavailable {
                message: format!(
                    "{what}: the TPM at {:?} does not answer ({detail}); check that the TPM (or swtpm) is running and reachable. keyward reconnects on the next call",
                    self.tcti
                ),
                retry_after: Some(Duration::from_secs(1)),
            },
            Kind::Busy => BackendError::Unavailable {
                message: format!("{what}: the TPM is busy ({detail}); try again"),
                retry_after: Some(Duration::from_millis(200)),
            },
            Kind::Lockout => {
                BackendError::PermissionDenied(lockout_message(what, self.lockout().await))
            }
            Kind::AuthFail if failure.stage == Stage::StorageKey => {
                BackendError::PermissionDenied(format!(
                    "{what}: the TPM refused owner_auth for the owner hierarchy ({detail}); it will not be sent again: fix owner_auth_env / owner_auth_file and restart the backend"
                ))
            }
            Kind::AuthFail => BackendError::PermissionDenied(format!(
                "{what}: the TPM refused the PIN ({detail})"
            )),
            Kind::Unsupported => BackendError::Unsupported(format!(
                "{what}: this TPM does not support it ({detail})"
            )),
            Kind::ForeignKey => BackendError::InvalidInput(format!(
                "{what}: the key file does not belong to this TPM ({detail}): it was made on another TPM, or this TPM was cleared since"
            )),
            Kind::Other => {
                BackendError::Internal(format!("{what}: the TPM call failed ({detail})"))
            }
        }
    }

    /// Signs `digest` with `key`; handles the PIN, its refusal and the lockout.
    async fn sign_with(
        &self,
        name: &str,
        key: Arc<ParsedKey>,
        digest: Vec<u8>,
        scheme: tss_esapi::structures::SignatureScheme,
    ) -> Result<tss_esapi::structures::Signature, BackendError> {
        let what = format!("signing with tpm key {name:?}");
        let pin = if key.file.empty_auth {
            None
        } else {
            Some(self.pins().current(name)?)
        };
        let auth = pin.as_ref().map(|(pin, _)| pin.clone());
        let result = self
            .tpm
            .run(move |worker| {
                let auth = auth.as_ref().map(Secret::expose);
                let file = &key.file;
                worker.sign(
                    &file.public,
                    &file.private_blob,
                    &key.private,
                    auth,
                    &digest,
                    scheme,
                )
            })
            .await?;
        match result {
            Ok(signature) => Ok(signature),
            Err(failure) => {
                if failure.stage == Stage::StorageKey && kind(&failure.error) == Kind::AuthFail {
                    self.tpm.run(|worker| worker.forget_owner_auth()).await?;
                }
                match (pin, kind(&failure.error)) {
                    (Some((pin, origin)), Kind::AuthFail) if failure.stage == Stage::Sign => {
                        let source = self.pins().describe(origin);
                        self.pins().refused(pin);
                        Err(BackendError::PermissionDenied(refused_message(
                            &what,
                            &describe(&failure.error),
                            &source,
                            origin,
                            &self.name,
                            self.lockout().await,
                        )))
                    }
                    _ => Err(self.error(&what, failure).await),
                }
            }
        }
    }
}

fn refused_message(
    what: &str,
    detail: &str,
    source: &str,
    origin: Origin,
    backend: &str,
    lockout: Option<Lockout>,
) -> String {
    let count = lockout.map_or(String::new(), |l| {
        format!(
            "; the TPM now counts {} failed authorization(s) of the {} that lock it out, and forgets one every {} s",
            l.counter, l.max_tries, l.interval
        )
    });
    let fix = match origin {
        Origin::Unlocked => format!("run `keyward unlock --backend {backend}` with the right PIN"),
        Origin::Configured => format!(
            "fix pin_env / pin_file (read again on the next call) or run `keyward unlock --backend {backend}`"
        ),
    };
    format!(
        "{what}: the TPM refused {source} ({detail}){count}. keyward will not send this PIN again: {fix}"
    )
}

fn lockout_message(what: &str, lockout: Option<Lockout>) -> String {
    let detail = match lockout {
        Some(l) => format!(
            "after {} failed authorizations (the limit is {}), it refuses every PIN until it forgets one, which it does every {} s: try again in at most {} s",
            l.counter, l.max_tries, l.interval, l.interval
        ),
        None => "it refuses every PIN for a while".into(),
    };
    format!(
        "{what}: the TPM is in dictionary-attack lockout (TPM_RC_LOCKOUT): {detail}. keyward does not retry. The owner can end it at once with `tpm2_dictionarylockout --clear-lockout` (it needs the lockout authorization)"
    )
}

#[async_trait]
impl Backend for TpmBackend {
    fn backend_type(&self) -> &str {
        "tpm"
    }

    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
        let mut keys = Vec::new();
        for name in self.store.names()? {
            match self
                .store
                .read(&name)
                .and_then(|file| self.describe_file(&name, &file))
            {
                Ok(key) => keys.push(key),
                // One bad file must not hide the other keys.
                Err(e) => tracing::warn!("skipping tpm key {name:?}: {e}"),
            }
        }
        Ok(keys)
    }

    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
        let file = self.store.read(reference)?;
        self.describe_file(reference, &file)
    }

    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
        let key = self.parsed_key(reference)?;
        let spec = key.spec;
        let SignOp::Prehashed(prehashed) = op else {
            return Err(BackendError::Unsupported(format!(
                "tpm key {reference:?} is {spec}: TPMs have no Ed25519"
            )));
        };
        let (digest, scheme) = templates::sign_input(spec, &prehashed)?;
        let signature = self
            .sign_with(reference, key, digest.to_vec(), scheme)
            .await?;
        let (bytes, ecdsa_format) = templates::signature_bytes(spec, signature)?;
        Ok(Signature {
            bytes,
            ecdsa_format,
            key_version: None,
        })
    }

    async fn generate_key(
        &self,
        name: &str,
        spec: KeySpec,
    ) -> Result<KeyDescription, BackendError> {
        if self.store.read(name).is_ok() {
            return Err(BackendError::InvalidInput(format!(
                "a tpm key named {name:?} exists; choose another name"
            )));
        }
        let pin = self.pins().for_new_key()?;
        let template = templates::key_template(spec, pin.is_some())?;
        let auth = pin.clone();
        let created = self
            .tpm
            .run(move |worker| worker.create(template, auth.as_ref().map(Secret::expose)))
            .await?;
        let what = format!("creating tpm key {name:?} ({spec})");
        let (public, private) = match created {
            Ok(created) => created,
            Err(failure) => return Err(self.error(&what, failure).await),
        };
        let file = KeyFile::new(public, &private, pin.is_none(), name)
            .map_err(|e| BackendError::Internal(format!("{what}: {e}")))?;
        let path = self.store.create(name, &file)?;
        tracing::info!(key = name, spec = %spec, file = %path.display(), pin = pin.is_some(), "tpm key created");
        self.describe_file(name, &file)
    }

    async fn unlock(&self, secret: Secret, ttl: Option<Duration>) -> Result<(), BackendError> {
        pin::check_len(&secret)?;
        if self.pins().was_refused(&secret) {
            return Err(self.pins().refused_error("(unlock)", Origin::Unlocked));
        }
        // Check the PIN on one PIN-protected key, so a wrong one is refused here, once; with no
        // such key yet, it is the PIN of the keys created next.
        let protected = self.store.names()?.into_iter().find_map(|name| {
            let file = self.store.read(&name).ok()?;
            (!file.empty_auth).then_some((name, file))
        });
        if let Some((name, file)) = protected {
            let (spec, _) = templates::describe_public(&file.public).map_err(|reason| {
                BackendError::Unsupported(format!("tpm key {name:?}: {reason}"))
            })?;
            let algorithm = spec.default_algorithm();
            let digest = vec![0u8; algorithm.hash().map_or(32, |h| h.digest_len())];
            let op = SignOp::prehashed(algorithm, &digest)
                .map_err(|e| BackendError::Internal(e.to_string()))?;
            let SignOp::Prehashed(prehashed) = op else {
                return Err(BackendError::Internal("not a digest operation".into()));
            };
            let (digest, scheme) = templates::sign_input(spec, &prehashed)?;
            let what = format!("checking the PIN on tpm key {name:?}");
            let private = file.private().map_err(|reason| {
                BackendError::InvalidInput(format!("tpm key {name:?}: {reason}"))
            })?;
            let (public, blob, digest) = (
                file.public.clone(),
                file.private_blob.clone(),
                digest.to_vec(),
            );
            let auth = secret.clone();
            let result = self
                .tpm
                .run(move |worker| {
                    worker.sign(
                        &public,
                        &blob,
                        &private,
                        Some(auth.expose()),
                        &digest,
                        scheme,
                    )
                })
                .await?;
            if let Err(failure) = result {
                if kind(&failure.error) == Kind::AuthFail && failure.stage == Stage::Sign {
                    self.pins().refused(secret);
                    return Err(BackendError::PermissionDenied(refused_message(
                        &what,
                        &describe(&failure.error),
                        "the PIN given with `keyward unlock`",
                        Origin::Unlocked,
                        &self.name,
                        self.lockout().await,
                    )));
                }
                return Err(self.error(&what, failure).await);
            }
        }
        self.pins().unlock(secret, ttl);
        tracing::info!(
            ttl_seconds = ttl.map(|t| t.as_secs()),
            "tpm backend unlocked"
        );
        Ok(())
    }
}
