//! The module's one global, `C_Initialize` / `C_Finalize`, and the slot and token descriptions.
//!
//! Fork: the global remembers the pid that initialised it. In a child after `fork()` every
//! function answers `CKR_CRYPTOKI_NOT_INITIALIZED`, as PKCS#11 asks, until the child calls
//! `C_Initialize`; that call leaves the parent's state untouched and leaked (its runtime,
//! connection and locks belong to threads that do not exist in the child, so dropping or
//! locking them could hang) and starts afresh. The global is an `ArcSwapOption`, which takes
//! no lock, so a child never waits on a lock a vanished thread of the parent held.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use cryptoki_sys::*;

use crate::agent::Agent;
use crate::objects::ObjectStore;
use crate::session::Sessions;

/// The only slot; it always holds the token.
pub const SLOT_ID: CK_SLOT_ID = 0;
/// The token's label, as RFC 7512 URIs name it (`pkcs11:token=keyward`).
pub const TOKEN_LABEL: &str = "keyward";
const MANUFACTURER: &str = "keyward";

static MODULE: ArcSwapOption<Module> = ArcSwapOption::const_empty();

/// Which of the four `CK_C_INITIALIZE_ARGS` mutex callbacks the application supplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutexCallbacks {
    /// None of them.
    None,
    /// All four.
    All,
    /// Some but not all: `CKR_ARGUMENTS_BAD`.
    Some,
}

/// `C_Initialize`'s argument, read by the FFI layer.
#[derive(Clone, Copy, Debug)]
pub struct InitArgs {
    /// The mutex callbacks supplied.
    pub callbacks: MutexCallbacks,
    /// `flags`.
    pub flags: CK_FLAGS,
    /// Whether `pReserved` is NULL, as it must be.
    pub reserved_is_null: bool,
}

/// The initialised module.
#[derive(Debug)]
pub struct Module {
    pid: u32,
    pub(crate) agent: Agent,
    pub(crate) token: Mutex<TokenState>,
    pub(crate) sessions: Mutex<Sessions>,
    /// The keys `KEYWARD_PKCS11_KEYS` limits the token to (read at `C_Initialize`).
    pub(crate) key_filter: Option<BTreeSet<String>>,
}

/// The objects and when they were last read from the agent.
#[derive(Debug, Default)]
pub struct TokenState {
    pub(crate) objects: ObjectStore,
    pub(crate) refreshed: Option<Instant>,
}

/// `C_Initialize`.
pub fn initialize(args: Option<InitArgs>) -> Result<(), CK_RV> {
    let mut may_create_threads = true;
    if let Some(args) = args {
        if !args.reserved_is_null || args.callbacks == MutexCallbacks::Some {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // Application mutexes without CKF_OS_LOCKING_OK would have to be used instead of the
        // operating system's: this module cannot (its locks are Rust's).
        if args.callbacks == MutexCallbacks::All && args.flags & CKF_OS_LOCKING_OK == 0 {
            return Err(CKR_CANT_LOCK);
        }
        may_create_threads = args.flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS == 0;
    }
    let pid = std::process::id();
    let current = MODULE.load_full();
    if current.as_ref().is_some_and(|m| m.pid == pid) {
        return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
    }
    let module = Arc::new(Module {
        pid,
        agent: Agent::new(may_create_threads)?,
        token: Mutex::default(),
        sessions: Mutex::default(),
        key_filter: crate::agent::key_filter(),
    });
    let previous = MODULE.compare_and_swap(&current, Some(module));
    let swapped = match (&*previous, &current) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    };
    drop(previous);
    if !swapped {
        // Another thread initialised the module meanwhile.
        return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
    }
    if let Some(parent) = current {
        // The parent's module, inherited through fork(): never dropped (see the module docs).
        std::mem::forget(parent);
    }
    Ok(())
}

impl Module {
    /// A module outside the global, with `objects` as the token's objects, fresh for an hour
    /// (so that nothing asks an agent).
    #[cfg(test)]
    pub(crate) fn for_tests(objects: Vec<crate::objects::Object>) -> Module {
        let module = Module {
            pid: std::process::id(),
            agent: Agent::new(true).unwrap(),
            token: Mutex::default(),
            sessions: Mutex::default(),
            key_filter: None,
        };
        module.install_for_tests(objects);
        module
    }

    /// Replaces the token's objects, fresh for an hour.
    #[cfg(test)]
    pub(crate) fn install_for_tests(&self, objects: Vec<crate::objects::Object>) {
        let mut token = self.token.lock().unwrap();
        token.objects.replace(objects);
        token.refreshed = Some(Instant::now() + std::time::Duration::from_secs(3600));
    }
}

/// `C_Finalize`. Calls still running on other threads finish with the module they started
/// with; it is dropped (its runtime shut down) after the last of them.
pub fn finalize(reserved_is_null: bool) -> Result<(), CK_RV> {
    if !reserved_is_null {
        return Err(CKR_ARGUMENTS_BAD);
    }
    let current = current()?;
    let previous = MODULE.compare_and_swap(&Some(current.clone()), None);
    let swapped = previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, &current));
    drop(previous);
    if swapped {
        Ok(())
    } else {
        Err(CKR_CRYPTOKI_NOT_INITIALIZED)
    }
}

/// The module initialised by this process, or `CKR_CRYPTOKI_NOT_INITIALIZED`.
pub fn current() -> Result<Arc<Module>, CK_RV> {
    match MODULE.load_full() {
        Some(module) if module.pid == std::process::id() => Ok(module),
        _ => Err(CKR_CRYPTOKI_NOT_INITIALIZED),
    }
}

/// `text` in a blank-padded fixed-size PKCS#11 string (cut at a character boundary).
pub fn padded<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let mut end = text.len().min(N);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&text.as_bytes()[..end]);
    out
}

/// This crate's version as a `CK_VERSION`.
fn version() -> CK_VERSION {
    let part = |s: &str| s.parse::<u8>().unwrap_or(0);
    CK_VERSION {
        major: part(env!("CARGO_PKG_VERSION_MAJOR")),
        minor: part(env!("CARGO_PKG_VERSION_MINOR")),
    }
}

fn check_slot(slot: CK_SLOT_ID) -> Result<(), CK_RV> {
    if slot == SLOT_ID {
        Ok(())
    } else {
        Err(CKR_SLOT_ID_INVALID)
    }
}

impl Module {
    /// `C_GetInfo`: Cryptoki 2.40.
    pub fn info(&self) -> CK_INFO {
        CK_INFO {
            cryptokiVersion: CK_VERSION {
                major: 2,
                minor: 40,
            },
            manufacturerID: padded(MANUFACTURER),
            flags: 0,
            libraryDescription: padded("keyward agent PKCS#11 module"),
            libraryVersion: version(),
        }
    }

    /// `C_GetSlotList`: one slot, with its token always present.
    pub fn slots(&self) -> Vec<CK_SLOT_ID> {
        vec![SLOT_ID]
    }

    /// `C_GetSlotInfo`.
    pub fn slot_info(&self, slot: CK_SLOT_ID) -> Result<CK_SLOT_INFO, CK_RV> {
        check_slot(slot)?;
        Ok(CK_SLOT_INFO {
            slotDescription: padded("keyward agent (keywardd)"),
            manufacturerID: padded(MANUFACTURER),
            flags: CKF_TOKEN_PRESENT,
            hardwareVersion: version(),
            firmwareVersion: version(),
        })
    }

    /// `C_GetTokenInfo`. No login is required (`CKF_LOGIN_REQUIRED` is off): the agent decides
    /// who may sign by the caller's uid, executable and the key's policy. `C_Login` still
    /// accepts any PIN, for consumers that always log in. The token is not write-protected,
    /// so consumers that open read-write sessions can; it refuses every change to objects.
    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<CK_TOKEN_INFO, CK_RV> {
        check_slot(slot)?;
        let (sessions, rw_sessions) = self.sessions.lock().expect("sessions").counts();
        Ok(CK_TOKEN_INFO {
            label: padded(TOKEN_LABEL),
            manufacturerID: padded(MANUFACTURER),
            model: padded("agent"),
            serialNumber: padded("0"),
            flags: CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED,
            ulMaxSessionCount: crate::session::MAX_SESSIONS as CK_ULONG,
            ulSessionCount: sessions as CK_ULONG,
            ulMaxRwSessionCount: crate::session::MAX_SESSIONS as CK_ULONG,
            ulRwSessionCount: rw_sessions as CK_ULONG,
            ulMaxPinLen: 255,
            ulMinPinLen: 0,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: version(),
            firmwareVersion: version(),
            utcTime: [b' '; 16],
        })
    }

    /// `C_GetMechanismList`.
    pub fn mechanisms(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>, CK_RV> {
        check_slot(slot)?;
        Ok(crate::mechanism::MECHANISMS
            .iter()
            .map(|(m, _)| *m)
            .collect())
    }

    /// `C_GetMechanismInfo`.
    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        mechanism: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO, CK_RV> {
        check_slot(slot)?;
        crate::mechanism::mechanism_info(mechanism).ok_or(CKR_MECHANISM_INVALID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_blank_padded_and_cut_at_characters() {
        assert_eq!(&padded::<8>("key"), b"key     ");
        assert_eq!(&padded::<3>("keyward"), b"key");
        // "é" is two bytes: it does not fit in the last byte.
        assert_eq!(&padded::<4>("abcé"), b"abc ");
    }
}
