//! The thread that owns the TPM connection.
//!
//! A `tss_esapi::Context` is not `Send`, and a TPM runs one command at a time anyway: one
//! thread owns the context and runs the backend's jobs in order. It keeps two objects loaded:
//! the storage root key (re-created from its template after a reconnect: same template, same
//! key) and the last key used, so that a run of signatures with one key costs one TPM2_Sign
//! each. Two objects fit every TPM, including one reached without a resource manager (swtpm,
//! `mssim`), which holds only three.
//!
//! When the TPM cannot be reached or its answers stop making sense (a TCTI error, a reset TPM
//! that forgot its objects), the connection is dropped and the next job opens a new one. A job
//! is tried again on a fresh connection at most once, and never when the failed command was a
//! TPM2_Sign carrying an authorization value: a wrong PIN must be sent once, not twice.

use std::str::FromStr;
use std::sync::mpsc;

use keyward_plugin_api::{BackendError, Secret};
use tss_esapi::constants::CapabilityType;
use tss_esapi::constants::PropertyTag;
use tss_esapi::constants::tss::{
    TPM2_PT_LOCKOUT_COUNTER, TPM2_RH_NULL, TPM2_ST_HASHCHECK, TPM2_TRANSIENT_FIRST,
};
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Auth, CapabilityData, Digest, HashcheckTicket, Private, Public, Signature, SignatureScheme,
};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::{Context, TctiNameConf};

use crate::errors::{Kind, kind};
use crate::templates::storage_root_template;

/// What the worker was doing when a TSS call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Opening the TCTI and the ESAPI context.
    Connect,
    /// Creating the storage root key under the owner hierarchy.
    StorageKey,
    /// Loading a key blob under the storage root key.
    Load,
    /// TPM2_Sign.
    Sign,
    /// TPM2_Create.
    Create,
    /// Reading TPM properties.
    Query,
}

/// A failed TSS call and where.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Where.
    pub stage: Stage,
    /// The TSS error.
    pub error: tss_esapi::Error,
}

type Result<T> = std::result::Result<T, Failure>;

fn at(stage: Stage) -> impl FnOnce(tss_esapi::Error) -> Failure {
    move |error| Failure { stage, error }
}

/// The dictionary-attack state of the TPM (TPM_PT_LOCKOUT_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lockout {
    /// Failed authorizations counted now.
    pub counter: u32,
    /// Failures after which the TPM locks out.
    pub max_tries: u32,
    /// Seconds after which one failure is forgotten.
    pub interval: u32,
    /// Seconds before lockoutAuth may be tried again after it failed.
    pub recovery: u32,
}

struct Connection {
    context: Context,
    storage_key: KeyHandle,
    /// The last key loaded: its private blob (which names it) and its handle.
    loaded: Option<(Vec<u8>, KeyHandle)>,
}

/// The state the TPM thread keeps.
pub(crate) struct Worker {
    tcti: String,
    storage_template: Public,
    owner_auth: Option<Secret>,
    connection: Option<Connection>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("tcti", &self.tcti)
            .field("connected", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The way to the TPM thread; dropping the last one stops the thread.
#[derive(Clone, Debug)]
pub(crate) struct Tpm {
    jobs: mpsc::Sender<Job>,
}

impl Tpm {
    /// Starts the TPM thread. Nothing is opened until the first job.
    pub fn start(
        tcti: String,
        owner_auth: Option<Secret>,
    ) -> std::result::Result<Self, BackendError> {
        let storage_template = storage_root_template()?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut worker = Worker {
                    tcti,
                    storage_template,
                    owner_auth,
                    connection: None,
                };
                while let Ok(job) = queue.recv() {
                    job(&mut worker);
                }
            })
            .map_err(|e| BackendError::Internal(format!("cannot start the TPM thread: {e}")))?;
        Ok(Tpm { jobs })
    }

    /// Runs `job` on the TPM thread, after the jobs queued before it.
    pub async fn run<T, F>(&self, job: F) -> std::result::Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Worker) -> T + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |worker| {
                let _ = reply.send(job(worker));
            }))
            .map_err(|_| BackendError::Internal("the TPM thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| BackendError::Internal("the TPM thread dropped a job".into()))
    }
}

impl Worker {
    /// Forgets the owner hierarchy's auth value after the TPM refused it (it is DA-protected:
    /// it must not be sent again).
    pub fn forget_owner_auth(&mut self) {
        self.owner_auth = None;
    }

    fn connection(&mut self) -> Result<&mut Connection> {
        if self.connection.is_none() {
            let conf = TctiNameConf::from_str(&self.tcti).map_err(at(Stage::Connect))?;
            let mut context = Context::new(conf).map_err(at(Stage::Connect))?;
            flush_leftovers(&mut context).map_err(at(Stage::Connect))?;
            context.set_sessions((Some(AuthSession::Password), None, None));
            if let Some(auth) = &self.owner_auth {
                let auth = Auth::try_from(auth.expose().to_vec()).map_err(at(Stage::StorageKey))?;
                context
                    .tr_set_auth(ObjectHandle::Owner, auth)
                    .map_err(at(Stage::StorageKey))?;
            }
            let storage_key = context
                .create_primary(
                    Hierarchy::Owner,
                    self.storage_template.clone(),
                    None,
                    None,
                    None,
                    None,
                )
                .map_err(at(Stage::StorageKey))?
                .key_handle;
            self.connection = Some(Connection {
                context,
                storage_key,
                loaded: None,
            });
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }

    /// Runs `job` on a connection; after a transport failure the connection is dropped, and
    /// the job is run once more on a new one when `retry(stage)` allows it.
    fn with_connection<T>(
        &mut self,
        retry: impl Fn(Stage) -> bool,
        mut job: impl FnMut(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let mut tries = 0;
        loop {
            tries += 1;
            let result = self.connection().and_then(&mut job);
            match result {
                Err(failure) if kind(&failure.error) == Kind::Transport => {
                    // Dropping the context flushes what it loaded (if the TPM still answers)
                    // and closes the TCTI.
                    self.connection = None;
                    if tries == 1 && failure.stage != Stage::Connect && retry(failure.stage) {
                        tracing::info!(
                            "the TPM connection failed ({}); reconnecting",
                            crate::errors::describe(&failure.error)
                        );
                        continue;
                    }
                    return Err(failure);
                }
                other => return other,
            }
        }
    }

    /// Signs `digest` with the key whose blobs are given, using `auth` (its PIN) if it has one.
    pub fn sign(
        &mut self,
        public: &Public,
        private_blob: &[u8],
        private: &Private,
        auth: Option<&[u8]>,
        digest: &[u8],
        scheme: SignatureScheme,
    ) -> Result<Signature> {
        let has_auth = auth.is_some();
        self.with_connection(
            // A TPM2_Sign that carried a PIN is never sent twice.
            |stage| stage != Stage::Sign || !has_auth,
            |connection| {
                let key = connection.load(public, private_blob, private)?;
                let context = &mut connection.context;
                let auth = Auth::try_from(auth.map(<[u8]>::to_vec).unwrap_or_default())
                    .map_err(at(Stage::Sign))?;
                context
                    .tr_set_auth(key.into(), auth)
                    .map_err(at(Stage::Sign))?;
                let validation = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
                    tag: TPM2_ST_HASHCHECK,
                    hierarchy: TPM2_RH_NULL,
                    digest: Default::default(),
                })
                .map_err(at(Stage::Sign))?;
                let digest = Digest::try_from(digest.to_vec()).map_err(at(Stage::Sign))?;
                context
                    .sign(key, digest, scheme, validation)
                    .map_err(at(Stage::Sign))
            },
        )
    }

    /// Creates a key from `template` under the storage root key with `auth` as its
    /// authorization value; returns its public area and wrapped private area.
    pub fn create(&mut self, template: Public, auth: Option<&[u8]>) -> Result<(Public, Private)> {
        self.with_connection(
            |_| true,
            |connection| {
                let auth = auth
                    .map(|a| Auth::try_from(a.to_vec()))
                    .transpose()
                    .map_err(at(Stage::Create))?;
                let created = connection
                    .context
                    .create(
                        connection.storage_key,
                        template.clone(),
                        auth,
                        None,
                        None,
                        None,
                    )
                    .map_err(at(Stage::Create))?;
                Ok((created.out_public, created.out_private))
            },
        )
    }

    /// The TPM's dictionary-attack counters, read now.
    pub fn lockout(&mut self) -> Result<Lockout> {
        self.with_connection(
            |_| true,
            |connection| {
                let (data, _) = connection
                    .context
                    .execute_without_session(|context| {
                        context.get_capability(
                            CapabilityType::TpmProperties,
                            TPM2_PT_LOCKOUT_COUNTER,
                            4,
                        )
                    })
                    .map_err(at(Stage::Query))?;
                let CapabilityData::TpmProperties(properties) = data else {
                    return Err(Failure {
                        stage: Stage::Query,
                        error: tss_esapi::Error::WrapperError(
                            tss_esapi::WrapperErrorKind::WrongValueFromTpm,
                        ),
                    });
                };
                let get = |tag| properties.find(tag).map_or(0, |p| p.value());
                Ok(Lockout {
                    counter: get(PropertyTag::LockoutCounter),
                    max_tries: get(PropertyTag::MaxAuthFail),
                    interval: get(PropertyTag::LockoutInterval),
                    recovery: get(PropertyTag::LockoutRecovery),
                })
            },
        )
    }
}

/// Flushes the transient objects a previous connection left in the TPM.
///
/// Without a resource manager (swtpm, a raw `/dev/tpm0`, `mssim`), objects stay loaded when the
/// program that loaded them exits without flushing them (a plugin stopped by a signal), and a
/// TPM holds only a few: a restarted plugin would soon meet TPM_RC_OBJECT_MEMORY. Such a TPM
/// has one user at a time, so what is loaded when we connect is ours from before. Behind a
/// resource manager (`/dev/tpmrm0`, tabrmd) a new connection sees no transient objects at all.
fn flush_leftovers(context: &mut Context) -> tss_esapi::Result<()> {
    let (data, _) = context.execute_without_session(|context| {
        context.get_capability(CapabilityType::Handles, TPM2_TRANSIENT_FIRST, 16)
    })?;
    let CapabilityData::Handles(handles) = data else {
        return Ok(());
    };
    for handle in handles.into_inner() {
        let object =
            context.execute_without_session(|context| context.tr_from_tpm_public(handle))?;
        context.flush_context(object)?;
        tracing::debug!("flushed a transient object left in the TPM by an earlier connection");
    }
    Ok(())
}

impl Connection {
    /// The handle of the key whose private blob is `private_blob`, loading it (and flushing
    /// the key loaded before) when it is not the one loaded.
    fn load(
        &mut self,
        public: &Public,
        private_blob: &[u8],
        private: &Private,
    ) -> Result<KeyHandle> {
        if let Some((blob, handle)) = &self.loaded
            && blob == private_blob
        {
            return Ok(*handle);
        }
        if let Some((_, handle)) = self.loaded.take() {
            self.context
                .flush_context(handle.into())
                .map_err(at(Stage::Load))?;
        }
        let handle = self
            .context
            .load(self.storage_key, private.clone(), public.clone())
            .map_err(at(Stage::Load))?;
        self.loaded = Some((private_blob.to_vec(), handle));
        Ok(handle)
    }
}
