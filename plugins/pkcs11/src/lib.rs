//! The `pkcs11` backend: keys on HSMs, smart cards and tokens, through their PKCS#11 module.
//!
//! - The module (a shared library named by `module`) is loaded once; the token is found by
//!   `token_label` or `token_serial` among its slots.
//! - Keys are discovered: every private key with `CKA_SIGN = true`. Its reference is its label
//!   when that is a valid key name (and unique), else `id-<hex of CKA_ID>`. `[[key]]` tables may
//!   also name keys by RFC 7512 URI (`pkcs11:token=T;object=L;id=%01`).
//! - Signing: `CKM_ECDSA` (raw `r || s` out), `CKM_RSA_PKCS` over a DigestInfo,
//!   `CKM_RSA_PKCS_PSS` (salt = hash length), `CKM_EDDSA` ([`mechanisms`]).
//! - New keys are generated on the token, sensitive and never extractable.
//! - Sessions are pooled with one login per token; stale sessions are re-opened once; a wrong
//!   PIN is never retried by itself ([`pool`]).
//!
//! Private key material never leaves the token: only public attributes are read.

mod errors;
mod keys;
mod mechanisms;
mod pool;
mod settings;
mod uri;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::Attribute;
use keyward_plugin_api::{
    Backend, BackendError, Deletion, DeletionOutcome, KeyDescription, KeySpec, SignOp, Signature,
    is_valid_key_name,
};
use tokio::sync::Semaphore;

use crate::errors::{Context, OpError, is_stale, rv_of};
use crate::pool::{Lease, Pool};
use crate::uri::{KeyQuery, id_reference, parse_reference};

pub use settings::{DEFAULT_SESSIONS, PinSource, Pkcs11Settings, TokenSelector};

/// A PKCS#11 token as a keyward backend.
#[derive(Debug)]
pub struct Pkcs11Backend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    module: PathBuf,
    pool: Pool,
    /// One permit per pooled session: a call holds one while it uses a session, so no more
    /// sessions than `sessions` are ever open and waiting calls do not hold threads.
    permits: Arc<Semaphore>,
    session_wait: Duration,
}

impl Pkcs11Backend {
    /// Loads and initialises the module, reads the PIN, finds the token and opens the first
    /// session (logging in). A module that cannot be loaded, an unreadable PIN or a missing
    /// token is an error; a rejected PIN is not (it is logged, and every call reports it).
    pub fn new(settings: Pkcs11Settings) -> Result<Self, BackendError> {
        let ctx = load_module(&settings.module)?;
        let pin = settings.pin.as_ref().map(PinSource::read).transpose()?;
        let pool = Pool::new(
            ctx,
            settings.module.clone(),
            settings.token.clone(),
            settings.pin.clone(),
            pin,
            settings.sessions,
        );
        let token = pool.find_token().map_err(|e| match e {
            OpError::Backend(BackendError::Unavailable { message, .. }) => {
                BackendError::NotFound(format!("module {}: {message}", settings.module.display()))
            }
            OpError::Backend(other) => other,
            OpError::Pkcs11 { what, error } => BackendError::unavailable(format!(
                "module {}: {what} failed: {}",
                settings.module.display(),
                errors::describe(&error)
            )),
        })?;
        if token.login_required && settings.pin.is_none() {
            return Err(BackendError::InvalidInput(format!(
                "token {:?} requires a login: set pin_env, pin_file or pin_credential",
                token.label
            )));
        }
        tracing::info!(
            module = %settings.module.display(),
            token = %token.label,
            serial = %token.serial,
            slot = token.slot.id(),
            sessions = settings.sessions,
            "pkcs11 token found"
        );
        use_module(&settings.module, 1);
        pool.warm_up();
        Ok(Pkcs11Backend {
            inner: Arc::new(Inner {
                module: settings.module,
                permits: Arc::new(Semaphore::new(pool.size())),
                pool,
                session_wait: settings.session_wait,
            }),
        })
    }

    /// The module this backend loaded.
    pub fn module(&self) -> &Path {
        &self.inner.module
    }

    /// Runs `op` with the pool on a blocking thread, once a session is free.
    async fn blocking<T, F>(&self, what: String, op: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Pool, &str) -> Result<T, BackendError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let wait = inner.session_wait;
        let permit = tokio::time::timeout(wait, inner.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                BackendError::Timeout(format!(
                    "{what}: all {} sessions of token {:?} stayed busy for {}s; raise `sessions` or check the token",
                    inner.pool.size(),
                    inner.pool.name(),
                    wait.as_secs()
                ))
            })?
            .map_err(|_| BackendError::Internal("the session pool is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            op(&inner.pool, &what)
        })
        .await
        .map_err(|e| BackendError::Internal(format!("a PKCS#11 task failed: {e}")))?
    }
}

/// How many backends of this process use each module (usually one: each backend is a plugin
/// process by default).
static MODULE_USERS: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

fn use_module(module: &Path, delta: isize) {
    let mut users = MODULE_USERS.lock().unwrap_or_else(|e| e.into_inner());
    let count = users.entry(module.to_path_buf()).or_default();
    *count = count.saturating_add_signed(delta);
}

/// How many backends of this process use `module`.
pub(crate) fn module_users(module: &Path) -> usize {
    let users = MODULE_USERS.lock().unwrap_or_else(|e| e.into_inner());
    users.get(module).copied().unwrap_or(0)
}

impl Drop for Inner {
    fn drop(&mut self) {
        use_module(&self.module, -1);
    }
}

/// Loads the module and calls `C_Initialize` (OS locking; already initialised is fine).
fn load_module(path: &Path) -> Result<Pkcs11, BackendError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        BackendError::InvalidInput(format!("cannot use the PKCS#11 module {shown}: {e}"))
    })?;
    if !meta.is_file() {
        return Err(BackendError::InvalidInput(format!(
            "{shown} is not a PKCS#11 module: not a regular file"
        )));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(BackendError::PermissionDenied(format!(
            "the PKCS#11 module {shown} is writable by group or others; keywardd loads only modules that only their owner can change"
        )));
    }
    let ctx = Pkcs11::new(path)
        .map_err(|e| BackendError::InvalidInput(format!("{shown} is not a PKCS#11 module: {e}")))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => Ok(ctx),
        Err(e) if rv_of(&e) == Some(RvError::CryptokiAlreadyInitialized) => Ok(ctx),
        Err(e) => Err(BackendError::unavailable(format!(
            "the PKCS#11 module {shown} failed to initialise ({}); check its configuration (for SoftHSM: SOFTHSM2_CONF, passed to a plugin process with env = [\"SOFTHSM2_CONF\"])",
            errors::describe(&e)
        ))),
    }
}

/// The private key `reference` names, from the session's cache or found on the token.
fn key_handle(
    lease: &mut Lease,
    reference: &str,
    query: &KeyQuery,
) -> Result<cryptoki::object::ObjectHandle, OpError> {
    if let Some(handle) = lease.handles.get(reference) {
        return Ok(*handle);
    }
    check_token(lease, query)?;
    let handle = keys::find_private(&lease.session, query, &lease.token.label)?;
    lease.handles.insert(reference.to_string(), handle);
    Ok(handle)
}

/// A URI's `token=` / `serial=` must name this backend's token.
fn check_token(lease: &Lease, query: &KeyQuery) -> Result<(), OpError> {
    let token = &lease.token;
    let mismatch = |what: &str, named: &str, ours: &str| {
        OpError::Backend(BackendError::NotFound(format!(
            "the key URI names {what} {named:?}, but this backend serves token {:?} ({what} {ours:?})",
            token.label
        )))
    };
    if let Some(named) = &query.token
        && named.trim_end() != token.label
    {
        return Err(mismatch("token", named, &token.label));
    }
    if let Some(named) = &query.serial
        && named.trim() != token.serial
    {
        return Err(mismatch("serial", named, &token.serial));
    }
    Ok(())
}

/// Describes every signing key of the token; keys keyward cannot use are skipped with a
/// warning.
fn list(lease: &mut Lease) -> Result<Vec<KeyDescription>, OpError> {
    let token = lease.token.label.clone();
    let mut found = Vec::new();
    for handle in keys::signing_keys(&lease.session)? {
        found.push((handle, keys::read_attrs(&lease.session, handle)?));
    }
    let mut label_count: HashMap<&[u8], usize> = HashMap::new();
    for (_, attrs) in &found {
        *label_count.entry(&attrs.label).or_default() += 1;
    }
    let mut out = Vec::new();
    for (handle, attrs) in &found {
        let label = std::str::from_utf8(&attrs.label).ok();
        let reference = match label {
            Some(l) if is_valid_key_name(l) && label_count[attrs.label.as_slice()] == 1 => {
                l.to_string()
            }
            _ if !attrs.id.is_empty() && is_valid_key_name(&id_reference(&attrs.id)) => {
                id_reference(&attrs.id)
            }
            _ => {
                tracing::warn!(token = %token, label = %attrs.label_text(), "skipping a private key that has neither a unique valid label nor a usable CKA_ID; name it with a pkcs11: URI in a [[key]] table");
                continue;
            }
        };
        match keys::describe(&lease.session, *handle, &reference, &token) {
            Ok(key) => out.push(key),
            Err(OpError::Pkcs11 { what, error }) if is_stale(&error) => {
                return Err(OpError::Pkcs11 { what, error });
            }
            Err(OpError::Pkcs11 { what, error }) => {
                tracing::warn!(token = %token, key = %reference, "skipping key: {what}: {}", errors::describe(&error))
            }
            Err(OpError::Backend(e)) => {
                tracing::warn!(token = %token, key = %reference, "skipping key: {e}")
            }
        }
    }
    out.sort_by(|a, b| a.reference.cmp(&b.reference));
    Ok(out)
}

/// Creates a key pair labelled `name` on the token and describes it.
fn generate(lease: &mut Lease, name: &str, spec: KeySpec) -> Result<KeyDescription, OpError> {
    let token = lease.token.label.clone();
    let recipe = mechanisms::key_gen(spec);
    let mechanism_type = mechanisms::gen_mechanism_type(spec);
    if !lease.token.offers(mechanism_type) {
        return Err(BackendError::Unsupported(format!(
            "token {token:?} cannot generate {spec} keys: it lacks {mechanism_type}"
        ))
        .into());
    }
    if keys::private_key_labelled(&lease.session, name)? {
        return Err(BackendError::InvalidInput(format!(
            "a private key labelled {name:?} already exists on token {token:?}"
        ))
        .into());
    }
    let mut id = vec![0u8; 16];
    openssl::rand::rand_bytes(&mut id)
        .map_err(|e| BackendError::Internal(format!("cannot make a key id: {e}")))?;
    let label = Attribute::Label(name.as_bytes().to_vec());
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        label.clone(),
        Attribute::Id(id.clone()),
    ];
    let public_base = [
        Attribute::Token(true),
        Attribute::Verify(true),
        label,
        Attribute::Id(id),
    ];
    let attempt = |spec_attrs: &[Attribute]| {
        let mut public = public_base.to_vec();
        public.extend_from_slice(spec_attrs);
        lease
            .session
            .generate_key_pair(&recipe.mechanism, &public, &private)
    };
    let mut result = attempt(&recipe.public);
    if let (Err(e), Some(params)) = (&result, &recipe.alternative_params)
        && refused_params(e)
    {
        result = attempt(&[Attribute::EcParams(params.clone())]);
    }
    let (_, private_handle) = result.doing(|| format!("generating a {spec} key pair"))?;
    tracing::info!(token = %token, key = %name, spec = %spec, "pkcs11 key pair generated");
    lease.handles.insert(name.to_string(), private_handle);
    keys::describe(&lease.session, private_handle, name, &token)
}

fn refused_params(error: &CkError) -> bool {
    matches!(
        rv_of(error),
        Some(
            RvError::AttributeValueInvalid
                | RvError::CurveNotSupported
                | RvError::DomainParamsInvalid
                | RvError::TemplateInconsistent
        )
    )
}

#[async_trait]
impl Backend for Pkcs11Backend {
    fn backend_type(&self) -> &str {
        "pkcs11"
    }

    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
        self.blocking("listing keys".into(), |pool, what| pool.run(what, list))
            .await
    }

    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
        let query = parse_reference(reference)?;
        let reference = reference.to_string();
        let what = format!("describing key {reference:?}");
        self.blocking(what, move |pool, what| {
            pool.run(what, |lease| {
                let handle = key_handle(lease, &reference, &query)?;
                keys::describe(&lease.session, handle, &reference, &lease.token.label)
            })
        })
        .await
    }

    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
        let query = parse_reference(reference)?;
        let reference = reference.to_string();
        let algorithm = op.algorithm();
        let op = op.to_owned();
        let mechanism_type = mechanisms::sign_mechanism_type(algorithm);
        let what = format!("signing with key {reference:?} ({algorithm})");
        self.blocking(what, move |pool, what| {
            pool.run(what, |lease| {
                if !lease.token.offers(mechanism_type) {
                    return Err(BackendError::Unsupported(format!(
                        "token {:?} cannot sign with {algorithm}: it lacks {mechanism_type}",
                        lease.token.label
                    ))
                    .into());
                }
                let handle = key_handle(lease, &reference, &query)?;
                let call = mechanisms::sign_call(op.as_op());
                let bytes = lease
                    .session
                    .sign(&call.mechanism, handle, &call.data)
                    .doing(|| format!("{mechanism_type}"))?;
                Ok(Signature {
                    bytes,
                    ecdsa_format: call.ecdsa_format,
                    key_version: None,
                })
            })
        })
        .await
    }

    async fn generate_key(
        &self,
        name: &str,
        spec: KeySpec,
    ) -> Result<KeyDescription, BackendError> {
        if !is_valid_key_name(name) {
            return Err(BackendError::InvalidInput(format!(
                "{name:?} is not a valid key name: use 1-128 letters, digits, '.', '_' and '-'"
            )));
        }
        let name = name.to_string();
        let what = format!("generating {spec} key {name:?}");
        self.blocking(what, move |pool, what| {
            pool.run(what, |lease| generate(lease, &name, spec))
        })
        .await
    }

    async fn delete_key(&self, reference: &str) -> Result<Deletion, BackendError> {
        let query = parse_reference(reference)?;
        let reference = reference.to_string();
        let what = format!("deleting key {reference:?}");
        let (token, publics) = self
            .blocking(what, move |pool, what| {
                let destroyed = pool.run(what, |lease| {
                    let handle = key_handle(lease, &reference, &query)?;
                    let publics = keys::destroy(&lease.session, handle)?;
                    lease.handles.remove(&reference);
                    Ok((lease.token.label.clone(), publics))
                });
                // Other sessions may have the destroyed object's handle cached.
                if destroyed.is_ok() {
                    pool.reset();
                }
                destroyed
            })
            .await?;
        Ok(Deletion {
            outcome: DeletionOutcome::Deleted,
            detail: format!(
                "destroyed the private key object and {publics} public key object(s) on token {token:?} (C_DestroyObject); this cannot be undone"
            ),
            effective_at: None,
        })
    }
}
