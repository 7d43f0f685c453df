//! The session pool of one token: one login, sessions reused across requests, and recovery.
//!
//! - The token is found by label (or serial) whenever the pool (re)opens: slot ids change when a
//!   token is re-initialised or re-plugged.
//! - Login state is per application, so the first session of a pool generation logs in (one
//!   `pkcs11 login` line in the log per attempt) and later sessions share it;
//!   `CKR_USER_ALREADY_LOGGED_IN` counts as success.
//! - A call whose session, login or cached object handle went stale (`CKR_SESSION_HANDLE_INVALID`,
//!   `CKR_USER_NOT_LOGGED_IN`, `CKR_TOKEN_NOT_PRESENT`, `CKR_OBJECT_HANDLE_INVALID`, ...) drops
//!   every session of that generation with its cached handles, re-opens and logs in again, and
//!   is retried once; a second failure is `Unavailable`.
//! - A rejected PIN is remembered: no login is tried again until the PIN source holds a
//!   different PIN (it is re-read on each call) or the backend restarts, because real tokens
//!   lock after a few failed logins. Meanwhile every call fails fast with `PermissionDenied`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::MechanismType;
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use keyward_plugin_api::{BackendError, Secret};

use crate::errors::{Context, OpError, ckr_name, describe, is_pin_rejected, is_stale, rv_of};
use crate::settings::{PinSource, TokenSelector};

/// The mechanisms keyward signs and generates keys with.
const USED_MECHANISMS: [MechanismType; 7] = [
    MechanismType::ECDSA,
    MechanismType::RSA_PKCS,
    MechanismType::RSA_PKCS_PSS,
    MechanismType::EDDSA,
    MechanismType::ECC_KEY_PAIR_GEN,
    MechanismType::RSA_PKCS_KEY_PAIR_GEN,
    MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
];

/// The token as found in its slot.
#[derive(Debug)]
pub(crate) struct Token {
    /// The slot it is in now.
    pub slot: Slot,
    /// Its label, without padding.
    pub label: String,
    /// Its serial number, without padding.
    pub serial: String,
    /// The mechanisms it offers; `None` if the token would not say.
    pub mechanisms: Option<Vec<MechanismType>>,
    /// Whether keys can be used only after a login.
    pub login_required: bool,
}

impl Token {
    /// Whether the token offers `mechanism` (assumed yes when it does not list them).
    pub fn offers(&self, mechanism: MechanismType) -> bool {
        self.mechanisms
            .as_ref()
            .is_none_or(|list| list.contains(&mechanism))
    }
}

/// A session taken from the pool for one call.
#[derive(Debug)]
pub(crate) struct Lease {
    /// The open, logged-in session.
    pub session: Session,
    /// The token it is on.
    pub token: Arc<Token>,
    /// Private-key handles found on this session, by reference. Dropped with the session.
    pub handles: HashMap<String, ObjectHandle>,
    generation: u64,
}

/// A PIN the token rejected, and what every call answers until it changes.
#[derive(Debug)]
struct Rejected {
    pin: Secret,
    message: String,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped whenever the sessions are dropped; leases of older generations are closed when
    /// they come back.
    generation: u64,
    token: Option<Arc<Token>>,
    idle: Vec<Lease>,
    /// Sessions opened in this generation.
    open: usize,
    /// Leases out (of any generation): the module may be re-initialised only when none is.
    out: usize,
    logged_in: bool,
    pin: Option<Secret>,
    rejected: Option<Rejected>,
}

/// The sessions of one token.
#[derive(Debug)]
pub(crate) struct Pool {
    ctx: Pkcs11,
    /// The module's path, to know whether other backends of this process share it.
    module: PathBuf,
    selector: TokenSelector,
    pin_source: Option<PinSource>,
    size: usize,
    /// The token's name for messages: its label as configured or first found.
    name: String,
    state: Mutex<State>,
}

impl Pool {
    /// A pool on the token `selector` picks; nothing is opened yet.
    pub fn new(
        ctx: Pkcs11,
        module: PathBuf,
        selector: TokenSelector,
        pin_source: Option<PinSource>,
        pin: Option<Secret>,
        size: usize,
    ) -> Self {
        let name = match &selector {
            TokenSelector::Label(label) => label.clone(),
            TokenSelector::Serial(serial) => format!("serial {serial}"),
        };
        Pool {
            ctx,
            module,
            selector,
            pin_source,
            size,
            name,
            state: Mutex::new(State {
                pin,
                ..State::default()
            }),
        }
    }

    /// The token's name for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of sessions the pool may keep open.
    pub fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds the token among the module's slots; the error lists the tokens present.
    pub fn find_token(&self) -> Result<Token, OpError> {
        self.scan()?.map_err(|present| {
            BackendError::unavailable(format!(
                "no token with {} is present; tokens present: {present}",
                self.selector
            ))
            .into()
        })
    }

    /// The token, or (`Ok(Err(..))`) the list of the tokens present when it is missing.
    fn scan(&self) -> Result<Result<Token, String>, OpError> {
        let slots = self
            .ctx
            .get_slots_with_token()
            .doing(|| "listing the module's slots".into())?;
        let mut present = Vec::new();
        let mut empty = 0;
        for slot in slots {
            let Ok(info) = self.ctx.get_token_info(slot) else {
                continue;
            };
            if !info.token_initialized() {
                empty += 1;
                continue;
            }
            let (label, serial) = (info.label().trim_end(), info.serial_number().trim());
            if self.selector.matches(label, serial) {
                return Ok(Ok(Token {
                    slot,
                    label: label.to_string(),
                    serial: serial.to_string(),
                    mechanisms: self.mechanisms(slot),
                    login_required: info.login_required(),
                }));
            }
            present.push(format!("{label:?} (serial {serial:?})"));
        }
        if present.is_empty() {
            present.push("none".into());
        }
        if empty > 0 {
            present.push(format!("and {empty} uninitialised"));
        }
        Ok(Err(present.join(", ")))
    }

    /// Finds the token for a new generation of sessions. A module lists the tokens it found
    /// when it was initialised, so when the token is missing and no session is in use, the
    /// module is finalised and initialised again and searched again.
    fn locate(&self, state: &mut State) -> Result<Token, OpError> {
        if let Ok(Ok(token)) = self.scan() {
            return Ok(token);
        }
        // Another backend of this process on the same module may be inside a call: then the
        // module is left alone.
        let alone = crate::module_users(&self.module) <= 1;
        if state.out == 0 && state.idle.is_empty() && alone {
            tracing::info!(token = %self.name, "the token is missing; re-initialising the PKCS#11 module to look again");
            // No session of ours is open (none is out, none idle), so none can be in a call.
            if let Err(e) = self.ctx.clone().finalize() {
                tracing::debug!("C_Finalize: {}", describe(&e));
            }
            match self
                .ctx
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            {
                Ok(()) => {}
                Err(e) if rv_of(&e) == Some(RvError::CryptokiAlreadyInitialized) => {}
                Err(e) => {
                    return Err(OpError::Pkcs11 {
                        what: "re-initialising the module".into(),
                        error: e,
                    });
                }
            }
        }
        self.find_token()
    }

    /// Which of the mechanisms keyward uses the token in `slot` offers. Asked one by one:
    /// listing them all makes cryptoki log every vendor mechanism it does not know.
    fn mechanisms(&self, slot: Slot) -> Option<Vec<MechanismType>> {
        let mut offered = Vec::new();
        for mechanism in USED_MECHANISMS {
            match self.ctx.get_mechanism_info(slot, mechanism) {
                Ok(_) => offered.push(mechanism),
                Err(e) if rv_of(&e) == Some(RvError::MechanismInvalid) => {}
                // The token will not say: assume it does, and let the call tell.
                Err(_) => return None,
            }
        }
        Some(offered)
    }

    /// The current generation.
    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Runs `op` on a pooled session; a stale session is replaced and `op` retried once.
    /// `what` ("signing with key x") starts error messages.
    pub fn run<T>(
        &self,
        what: &str,
        op: impl Fn(&mut Lease) -> Result<T, OpError>,
    ) -> Result<T, BackendError> {
        for attempt in 0..2 {
            let generation = self.generation();
            let result = self.checkout().and_then(|mut lease| {
                let result = op(&mut lease);
                match &result {
                    Err(OpError::Pkcs11 { error, .. }) if is_stale(error) => self.discard(lease),
                    _ => self.checkin(lease),
                }
                result
            });
            let (step, error) = match result {
                Ok(value) => return Ok(value),
                Err(OpError::Backend(error)) => return Err(error),
                Err(OpError::Pkcs11 { what: step, error }) => (step, error),
            };
            if !is_stale(&error) {
                return Err(crate::errors::to_backend_error(
                    &self.name,
                    &format!("{what}: {step}"),
                    &error,
                ));
            }
            self.invalidate(generation);
            if attempt == 0 {
                tracing::warn!(
                    token = %self.name,
                    "{what}: {step} failed with {}; re-opening the token's sessions and retrying once",
                    describe(&error)
                );
                continue;
            }
            return Err(BackendError::unavailable(format!(
                "{what}: token {:?} is not usable even after its sessions were re-opened ({step}: {}); check that the token is present and its PIN and driver work",
                self.name,
                describe(&error)
            )));
        }
        Err(BackendError::Internal(format!("{what}: retry loop ended")))
    }

    /// A session: an idle one, or a new one (opening and logging in as needed).
    fn checkout(&self) -> Result<Lease, OpError> {
        let mut state = self.lock();
        self.check_rejected(&mut state)?;
        if let Some(lease) = state.idle.pop() {
            state.out += 1;
            return Ok(lease);
        }
        let token = match &state.token {
            Some(token) => token.clone(),
            None => {
                let token = Arc::new(self.locate(&mut state)?);
                state.token = Some(token.clone());
                token
            }
        };
        let session = self
            .ctx
            .open_rw_session(token.slot)
            .doing(|| format!("opening a session on slot {}", token.slot.id()))?;
        if !state.logged_in {
            self.login(&mut state, &session, &token)?;
        }
        state.open += 1;
        state.out += 1;
        tracing::debug!(
            token = %self.name,
            generation = state.generation,
            "pkcs11 session opened ({} of at most {})",
            state.open,
            self.size
        );
        Ok(Lease {
            session,
            token,
            handles: HashMap::new(),
            generation: state.generation,
        })
    }

    /// Fails fast while the PIN the token rejected is still the configured one.
    fn check_rejected(&self, state: &mut State) -> Result<(), OpError> {
        let Some(rejected) = &state.rejected else {
            return Ok(());
        };
        let fresh = self.pin_source.as_ref().map(PinSource::read);
        match fresh {
            Some(Ok(pin)) if pin.expose() != rejected.pin.expose() => {
                tracing::info!(token = %self.name, "the PIN source holds a new PIN; trying it once");
                state.pin = Some(pin);
                state.rejected = None;
                Ok(())
            }
            _ => Err(BackendError::PermissionDenied(rejected.message.clone()).into()),
        }
    }

    fn login(&self, state: &mut State, session: &Session, token: &Token) -> Result<(), OpError> {
        let Some(pin) = &state.pin else {
            if token.login_required {
                return Err(BackendError::PermissionDenied(format!(
                    "token {:?} requires a login but the backend has no PIN: set pin_env, pin_file or pin_credential",
                    self.name
                ))
                .into());
            }
            state.logged_in = true;
            return Ok(());
        };
        tracing::info!(token = %self.name, slot = token.slot.id(), "pkcs11 login");
        let raw = RawAuthPin::new(Box::new(pin.expose().to_vec()));
        match session.login_with_raw(UserType::User, &raw) {
            Ok(()) => {}
            Err(e) if rv_of(&e) == Some(RvError::UserAlreadyLoggedIn) => {}
            Err(e) if is_pin_rejected(&e) => {
                let source = self
                    .pin_source
                    .as_ref()
                    .map_or_else(|| "the configuration".to_string(), ToString::to_string);
                let code = rv_of(&e).map_or_else(|| e.to_string(), ckr_name);
                let message = format!(
                    "token {:?} rejected the PIN from {source} ({code}); keyward will not try it again until that PIN changes or the backend restarts (tokens lock after a few failed logins): fix the PIN, then restart keywardd",
                    self.name
                );
                tracing::error!(token = %self.name, "{message}");
                state.rejected = Some(Rejected {
                    pin: pin.clone(),
                    message: message.clone(),
                });
                return Err(BackendError::PermissionDenied(message).into());
            }
            Err(e) => {
                return Err(OpError::Pkcs11 {
                    what: "logging in".into(),
                    error: e,
                });
            }
        }
        state.logged_in = true;
        Ok(())
    }

    /// Returns a healthy session to the pool (or closes it if the pool was rebuilt meanwhile).
    fn checkin(&self, lease: Lease) {
        let mut state = self.lock();
        state.out = state.out.saturating_sub(1);
        if lease.generation == state.generation {
            state.idle.push(lease);
        } else {
            drop(state);
            drop(lease);
        }
    }

    /// Closes a stale session and starts a new generation.
    fn discard(&self, lease: Lease) {
        let mut state = self.lock();
        let idle = Self::invalidate_locked(&mut state, lease.generation);
        drop(state);
        drop(idle);
        drop(lease);
        // Counted as out until closed, so that the module is not re-initialised under it.
        let mut state = self.lock();
        state.out = state.out.saturating_sub(1);
    }

    /// Drops every session of `generation` (if it is still the current one), so that the next
    /// checkout finds the token again and logs in.
    fn invalidate(&self, generation: u64) {
        let mut state = self.lock();
        let idle = Self::invalidate_locked(&mut state, generation);
        drop(state);
        // Closing may take a while on a dying device: not under the lock.
        drop(idle);
    }

    /// Starts a new generation if `generation` is the current one; returns the idle sessions
    /// to close (after the lock is released).
    fn invalidate_locked(state: &mut State, generation: u64) -> Vec<Lease> {
        if state.generation != generation {
            return Vec::new();
        }
        state.generation += 1;
        state.token = None;
        state.logged_in = false;
        state.open = 0;
        std::mem::take(&mut state.idle)
    }

    /// Drops every idle session and the object handles cached on them (after a key was
    /// destroyed); leases out now are closed when they come back.
    pub fn reset(&self) {
        let generation = self.generation();
        self.invalidate(generation);
    }

    /// Opens the first session (and logs in) ahead of the first request, so that a wrong PIN or
    /// a missing token shows in the log at start-up. Failures are logged, not returned.
    pub fn warm_up(&self) {
        if let Err(e) = self.run("opening the first session", |_| Ok(())) {
            tracing::error!(token = %self.name, "{e}");
        }
    }
}

impl Drop for Pool {
    /// Closes the sessions and, when no other backend of this process uses the module,
    /// finalises it (some modules flush state or close connections to the HSM there).
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.lock().idle);
        drop(idle);
        if crate::module_users(&self.module) == 0
            && let Err(e) = self.ctx.clone().finalize()
        {
            tracing::debug!("C_Finalize: {}", describe(&e));
        }
    }
}
