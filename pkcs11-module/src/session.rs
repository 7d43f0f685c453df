//! Sessions: opening and closing, login state, object searches and attributes.
//!
//! Every session is its own lock; the session table and the object store are held only for
//! the moment it takes to look something up, never across a call to the agent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki_sys::*;

use crate::module::{Module, SLOT_ID};
use crate::objects::{Attr, Object, objects_of};
use crate::sign::SignOperation;

/// The most sessions open at once (`CKR_SESSION_COUNT` beyond).
pub const MAX_SESSIONS: usize = 4096;
/// The most attributes in one search template (`CKR_ARGUMENTS_BAD` beyond).
pub const MAX_TEMPLATE: usize = 256;
/// How long the key list read from the agent serves searches before it is read again: a key
/// made with `keyward keys generate` shows in a running consumer's next search after this.
const REFRESH_AFTER: Duration = Duration::from_secs(2);

/// The open sessions and the application's login state.
#[derive(Debug, Default)]
pub struct Sessions {
    last_handle: CK_SESSION_HANDLE,
    open: BTreeMap<CK_SESSION_HANDLE, Arc<Mutex<Session>>>,
    logged_in: bool,
}

impl Sessions {
    /// All sessions and read-write sessions.
    pub fn counts(&self) -> (usize, usize) {
        let rw = self
            .open
            .values()
            .filter(|s| s.lock().is_ok_and(|s| s.read_write))
            .count();
        (self.open.len(), rw)
    }
}

/// One session.
#[derive(Debug)]
pub struct Session {
    read_write: bool,
    /// The handles a search has still to return, in reverse order.
    pub(crate) find: Option<Vec<CK_OBJECT_HANDLE>>,
    pub(crate) sign: Option<SignOperation>,
}

/// How `C_GetAttributeValue` answered one attribute.
#[derive(Debug, PartialEq, Eq)]
pub enum AttrOutcome {
    /// Copied (or, without a buffer, its length reported): the length.
    Ok(usize),
    /// The buffer is shorter than this length: `CKR_BUFFER_TOO_SMALL`.
    TooSmall,
    /// `CKR_ATTRIBUTE_SENSITIVE`.
    Sensitive,
    /// `CKR_ATTRIBUTE_TYPE_INVALID`.
    Invalid,
}

/// Answers attribute `kind` of `object` into `buffer` (`None`: length only).
pub fn attribute_into(
    object: &Object,
    kind: CK_ATTRIBUTE_TYPE,
    buffer: Option<&mut [u8]>,
) -> AttrOutcome {
    match object.attribute(kind) {
        None => AttrOutcome::Invalid,
        Some(Attr::Sensitive) => AttrOutcome::Sensitive,
        Some(Attr::Value(value)) => match buffer {
            None => AttrOutcome::Ok(value.len()),
            Some(buffer) if buffer.len() < value.len() => AttrOutcome::TooSmall,
            Some(buffer) => {
                buffer[..value.len()].copy_from_slice(value);
                AttrOutcome::Ok(value.len())
            }
        },
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock is caught at the C boundary; the state it protects is
    // still consistent (every update is a single assignment), so poisoning is ignored.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Module {
    /// The session behind `handle`.
    pub(crate) fn session(&self, handle: CK_SESSION_HANDLE) -> Result<Arc<Mutex<Session>>, CK_RV> {
        lock(&self.sessions)
            .open
            .get(&handle)
            .cloned()
            .ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    /// Runs `f` on the locked session `handle`.
    pub(crate) fn with_session<T>(
        &self,
        handle: CK_SESSION_HANDLE,
        f: impl FnOnce(&mut Session) -> Result<T, CK_RV>,
    ) -> Result<T, CK_RV> {
        let session = self.session(handle)?;
        let mut guard = lock(&session);
        f(&mut guard)
    }

    /// `C_OpenSession`. Parallel sessions do not exist since PKCS#11 2.01: `CKF_SERIAL_SESSION`
    /// is required.
    pub fn open_session(
        &self,
        slot: CK_SLOT_ID,
        flags: CK_FLAGS,
    ) -> Result<CK_SESSION_HANDLE, CK_RV> {
        if slot != SLOT_ID {
            return Err(CKR_SLOT_ID_INVALID);
        }
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        }
        let mut sessions = lock(&self.sessions);
        if sessions.open.len() >= MAX_SESSIONS {
            return Err(CKR_SESSION_COUNT);
        }
        sessions.last_handle += 1;
        let handle = sessions.last_handle;
        let session = Session {
            read_write: flags & CKF_RW_SESSION != 0,
            find: None,
            sign: None,
        };
        sessions.open.insert(handle, Arc::new(Mutex::new(session)));
        Ok(handle)
    }

    /// `C_CloseSession`. Closing the last session logs the application out.
    pub fn close_session(&self, handle: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
        let mut sessions = lock(&self.sessions);
        sessions
            .open
            .remove(&handle)
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        if sessions.open.is_empty() {
            sessions.logged_in = false;
        }
        Ok(())
    }

    /// `C_CloseAllSessions`.
    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<(), CK_RV> {
        if slot != SLOT_ID {
            return Err(CKR_SLOT_ID_INVALID);
        }
        let mut sessions = lock(&self.sessions);
        sessions.open.clear();
        sessions.logged_in = false;
        Ok(())
    }

    /// `C_GetSessionInfo`.
    pub fn session_info(&self, handle: CK_SESSION_HANDLE) -> Result<CK_SESSION_INFO, CK_RV> {
        let logged_in = lock(&self.sessions).logged_in;
        self.with_session(handle, |session| {
            let state = match (session.read_write, logged_in) {
                (false, false) => CKS_RO_PUBLIC_SESSION,
                (true, false) => CKS_RW_PUBLIC_SESSION,
                (false, true) => CKS_RO_USER_FUNCTIONS,
                (true, true) => CKS_RW_USER_FUNCTIONS,
            };
            let rw = if session.read_write {
                CKF_RW_SESSION
            } else {
                0
            };
            Ok(CK_SESSION_INFO {
                slotID: SLOT_ID,
                state,
                flags: CKF_SERIAL_SESSION | rw,
                ulDeviceError: 0,
            })
        })
    }

    /// `C_Login`: any PIN is accepted and ignored (the agent decides, by the caller's uid,
    /// executable and policy). There is no security officer: `CKU_SO` is
    /// `CKR_USER_TYPE_INVALID`. `CKU_CONTEXT_SPECIFIC` is accepted during a signing operation
    /// (no key needs it: `CKA_ALWAYS_AUTHENTICATE` is false).
    pub fn login(&self, handle: CK_SESSION_HANDLE, user_type: CK_USER_TYPE) -> Result<(), CK_RV> {
        let signing = self.with_session(handle, |session| Ok(session.sign.is_some()))?;
        match user_type {
            CKU_USER => {
                let mut sessions = lock(&self.sessions);
                if sessions.logged_in {
                    return Err(CKR_USER_ALREADY_LOGGED_IN);
                }
                sessions.logged_in = true;
                Ok(())
            }
            CKU_CONTEXT_SPECIFIC if signing => Ok(()),
            CKU_CONTEXT_SPECIFIC => Err(CKR_OPERATION_NOT_INITIALIZED),
            _ => Err(CKR_USER_TYPE_INVALID),
        }
    }

    /// `C_Logout`.
    pub fn logout(&self, handle: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
        self.session(handle)?;
        let mut sessions = lock(&self.sessions);
        if !sessions.logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        sessions.logged_in = false;
        Ok(())
    }

    /// Reads the agent's keys again when the last read is older than [`REFRESH_AFTER`].
    fn refresh_objects(&self) -> Result<(), CK_RV> {
        let fresh = lock(&self.token)
            .refreshed
            .is_some_and(|at| at.elapsed() < REFRESH_AFTER);
        if fresh {
            return Ok(());
        }
        let keys = self.agent.keys(self.key_filter.as_ref())?;
        let mut objects = Vec::new();
        for key in &keys {
            match objects_of(key) {
                Ok(mut of_key) => objects.append(&mut of_key),
                Err(why) => crate::agent::report(
                    "listing the agent's keys",
                    &format!("key {:?} is left out of the token: {why}", key.info.key_id),
                ),
            }
        }
        let mut token = lock(&self.token);
        token.objects.replace(objects);
        token.refreshed = Some(Instant::now());
        Ok(())
    }

    /// The object behind `handle` (read from the agent on first use).
    pub fn object(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
    ) -> Result<Arc<Object>, CK_RV> {
        self.session(session)?;
        if lock(&self.token).refreshed.is_none() {
            self.refresh_objects()?;
        }
        lock(&self.token)
            .objects
            .get(handle)
            .ok_or(CKR_OBJECT_HANDLE_INVALID)
    }

    /// `C_FindObjectsInit`: the matching objects are chosen now, from a key list at most
    /// [`REFRESH_AFTER`] old.
    pub fn find_init(
        &self,
        handle: CK_SESSION_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, &[u8])],
    ) -> Result<(), CK_RV> {
        if template.len() > MAX_TEMPLATE {
            return Err(CKR_ARGUMENTS_BAD);
        }
        self.with_session(handle, |session| match session.find {
            Some(_) => Err(CKR_OPERATION_ACTIVE),
            None => Ok(()),
        })?;
        self.refresh_objects()?;
        let mut found = lock(&self.token).objects.find(template);
        found.reverse();
        self.with_session(handle, |session| {
            if session.find.is_some() {
                return Err(CKR_OPERATION_ACTIVE);
            }
            session.find = Some(found);
            Ok(())
        })
    }

    /// `C_FindObjects`: up to `max` more handles.
    pub fn find_next(
        &self,
        handle: CK_SESSION_HANDLE,
        max: usize,
    ) -> Result<Vec<CK_OBJECT_HANDLE>, CK_RV> {
        self.with_session(handle, |session| {
            let remaining = session.find.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
            let take = max.min(remaining.len());
            let mut batch = remaining.split_off(remaining.len() - take);
            batch.reverse();
            Ok(batch)
        })
    }

    /// `C_FindObjectsFinal`.
    pub fn find_final(&self, handle: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
        self.with_session(handle, |session| {
            session
                .find
                .take()
                .map(|_| ())
                .ok_or(CKR_OPERATION_NOT_INITIALIZED)
        })
    }

    /// `C_CopyObject`, `C_DestroyObject`, `C_SetAttributeValue`: `CKR_ACTION_PROHIBITED` for
    /// every object that exists (they are `CKA_COPYABLE`, `CKA_DESTROYABLE` and
    /// `CKA_MODIFIABLE` false: the agent owns its keys and certificates).
    pub fn change_object(
        &self,
        session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
    ) -> Result<(), CK_RV> {
        self.object(session, handle)?;
        Err(CKR_ACTION_PROHIBITED)
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
