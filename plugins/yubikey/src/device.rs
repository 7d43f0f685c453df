//! The card: opened for a burst of operations, released when idle, PIN handling, and the
//! translation of the yubikey crate's errors into [`BackendError`] kinds.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use keyward_plugin_api::{BackendError, Secret};
use yubikey::{MgmKey, Serial, YubiKey};

use crate::settings::{ManagementKey, YubikeySettings};

/// The card handle and what the backend remembers about the PIN.
#[derive(Default)]
pub struct State {
    card: Option<YubiKey>,
    last_used: Option<Instant>,
    /// The PIN the card rejected, and the retries it reported then. It is not sent again until
    /// the PIN source gives another one.
    rejected_pin: Option<(Secret, u8)>,
    /// A PIN given by `keyward yubikey unlock`, kept in memory (zeroized) until it expires
    /// (`None`: until the backend restarts).
    unlocked_pin: Option<(Secret, Option<Instant>)>,
    /// Per slot: the attributes learned for the key with this public key (policies from the
    /// slot metadata or as requested at generation, the attestation certificate).
    slots: HashMap<u8, (Vec<u8>, BTreeMap<String, String>)>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("open", &self.card.is_some())
            .field("pin_rejected", &self.rejected_pin.is_some())
            .field("unlocked", &self.unlocked_pin.is_some())
            .finish_non_exhaustive()
    }
}

/// One YubiKey, shared by every call of the backend.
#[derive(Debug)]
pub struct Device {
    pub settings: YubikeySettings,
    state: Mutex<State>,
}

/// What went wrong talking to the card, before it is given a key name.
pub type CardResult<T> = Result<T, BackendError>;

impl Device {
    pub fn new(settings: YubikeySettings) -> Arc<Self> {
        let device = Arc::new(Device {
            settings,
            state: Mutex::new(State::default()),
        });
        let weak = Arc::downgrade(&device);
        std::thread::Builder::new()
            .name("yubikey-idle".into())
            .spawn(move || release_when_idle(weak))
            .ok();
        device
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Which device the settings name, for messages.
    pub fn describe(&self) -> String {
        match self.settings.serial {
            Some(serial) => format!("the YubiKey with serial {serial}"),
            None => "the YubiKey".into(),
        }
    }

    /// Runs `op` with the open card (opening it first). A PC/SC failure drops the handle, so the
    /// next call opens the card again (after it was pulled out and plugged in).
    pub fn with_card<T>(
        &self,
        op: impl FnOnce(&mut Session<'_>) -> CardResult<T>,
    ) -> CardResult<T> {
        let mut state = self.lock();
        if let Some((_, Some(expires))) = &state.unlocked_pin
            && Instant::now() >= *expires
        {
            // The card may still hold the PIN as verified: reopen it, so that an expired
            // unlock really stops PIN-protected operations.
            state.unlocked_pin = None;
            state.card = None;
            tracing::info!("the PIN from `keyward yubikey unlock` expired");
        }
        if state.card.is_none() {
            let card = match self.settings.serial {
                Some(serial) => YubiKey::open_by_serial(Serial(serial)),
                None => YubiKey::open(),
            }
            .map_err(|e| {
                BackendError::unavailable(format!(
                    "cannot open {}: {}; plug it in (and check that pcscd runs: `ykman list` should show it)",
                    self.describe(),
                    describe_error(&e)
                ))
            })?;
            tracing::debug!(serial = %card.serial(), version = %card.version(), "yubikey opened");
            state.card = Some(card);
        }
        let mut session = Session {
            device: self,
            state: &mut state,
        };
        let result = op(&mut session);
        if let Err(BackendError::Unavailable { .. }) = &result {
            state.card = None;
        }
        state.last_used = Some(Instant::now());
        if self.settings.idle_release.is_zero() {
            state.card = None;
        }
        result
    }

    /// Checks `pin` on the card, then keeps it in memory for `ttl` (`None`: until the backend
    /// restarts) — `keyward yubikey unlock`. A PIN the card rejects is not kept (the error
    /// says how many retries are left); one the card rejected before is not sent again.
    /// Why PIN-protected keys cannot sign now, if they cannot (`keyward status` shows the
    /// backend as locked): no PIN configured or given by `keyward yubikey unlock` (or it
    /// expired), or the configured PIN was rejected. Does not touch the card.
    pub fn locked(&self) -> Option<String> {
        let backend =
            std::env::var(keyward_plugin_api::plugin::ENV_NAME).unwrap_or_else(|_| "NAME".into());
        let state = self.lock();
        let unlocked = matches!(
            &state.unlocked_pin,
            Some((_, expires)) if expires.is_none_or(|at| Instant::now() < at)
        );
        if unlocked {
            return None;
        }
        if let Some((_, retries)) = &state.rejected_pin {
            return Some(format!(
                "{} rejected the configured PIN ({retries} retries left); fix pin_env/pin_file, or run `keyward yubikey unlock --backend {backend}`",
                self.describe()
            ));
        }
        if self.settings.pin.is_none() {
            return Some(format!(
                "no PIN: keys whose pin_policy needs one cannot sign until `keyward yubikey unlock --backend {backend}` (or set pin_env/pin_file)"
            ));
        }
        None
    }

    pub fn unlock(&self, pin: Secret, ttl: Option<Duration>) -> CardResult<()> {
        self.with_card(|session| {
            let previous = session.state.unlocked_pin.take();
            session.state.unlocked_pin = Some((pin, None));
            match session.verify_pin(true) {
                Ok(_) => {
                    if let Some((_, expires)) = &mut session.state.unlocked_pin {
                        *expires = ttl.map(|ttl| Instant::now() + ttl);
                    }
                    Ok(())
                }
                Err(e) => {
                    session.state.unlocked_pin = previous;
                    Err(e)
                }
            }
        })
    }
}

/// The card while one operation burst holds it.
pub struct Session<'a> {
    device: &'a Device,
    state: &'a mut State,
}

impl Session<'_> {
    pub fn card(&mut self) -> &mut YubiKey {
        self.state
            .card
            .as_mut()
            .expect("the card is open during a session")
    }

    /// The attributes cached for `slot` when its key still has the public key `spki_der`.
    pub fn cached_attributes(&self, slot: u8, spki_der: &[u8]) -> Option<BTreeMap<String, String>> {
        self.state
            .slots
            .get(&slot)
            .filter(|(der, _)| der == spki_der)
            .map(|(_, attributes)| attributes.clone())
    }

    /// Remembers `attributes` for the key with `spki_der` in `slot`.
    pub fn cache_attributes(
        &mut self,
        slot: u8,
        spki_der: Vec<u8>,
        attributes: BTreeMap<String, String>,
    ) {
        self.state.slots.insert(slot, (spki_der, attributes));
    }

    /// Whether a PIN is available (an unexpired unlock or a configured source).
    pub fn has_pin(&self) -> bool {
        self.state.unlocked_pin.is_some() || self.device.settings.pin.is_some()
    }

    /// The PIN to use now: an unexpired unlock, else the configured source.
    fn current_pin(&mut self) -> CardResult<Option<Secret>> {
        if let Some((pin, expires)) = &self.state.unlocked_pin {
            if expires.is_none_or(|at| Instant::now() < at) {
                return Ok(Some(pin.clone()));
            }
            self.state.unlocked_pin = None;
        }
        self.device
            .settings
            .pin
            .as_ref()
            .map(|source| source.read("pin"))
            .transpose()
    }

    /// Verifies the PIN on the card. A PIN the card rejected is never sent again: the call
    /// fails at once until the PIN source changes (no retry burns a try).
    pub fn verify_pin(&mut self, required: bool) -> CardResult<bool> {
        let Some(pin) = self.current_pin()? else {
            if required {
                return Err(no_pin(self.device));
            }
            return Ok(false);
        };
        if let Some((rejected, retries)) = &self.state.rejected_pin
            && rejected.expose() == pin.expose()
        {
            return Err(wrong_pin(self.device, *retries, false));
        }
        match self.card().verify_pin(pin.expose()) {
            Ok(()) => {
                self.state.rejected_pin = None;
                Ok(true)
            }
            Err(yubikey::Error::WrongPin { tries }) => {
                self.state.rejected_pin = Some((pin, tries));
                Err(wrong_pin(self.device, tries, true))
            }
            Err(yubikey::Error::PinLocked) => Err(BackendError::PermissionDenied(format!(
                "the PIV PIN of {} is blocked; unblock it with `ykman piv access unblock-pin`",
                self.device.describe()
            ))),
            Err(e) => Err(card_error(self.device, "verify the PIN", &e)),
        }
    }

    /// Authenticates with the management key (to generate keys and write certificates).
    pub fn authenticate(&mut self) -> CardResult<()> {
        let device = self.device;
        let key = match &device.settings.management_key {
            ManagementKey::Default => MgmKey::get_default(self.card()),
            ManagementKey::PinProtected => {
                self.verify_pin(true)?;
                MgmKey::get_protected(self.card())
            }
            ManagementKey::Secret(source) => {
                let hex_key = source.read("management_key")?;
                let bytes = hex::decode(hex_key.expose().trim_ascii()).map_err(|_| {
                    BackendError::InvalidInput(
                        "the management key is not hex; give it as `ykman piv access change-management-key` prints it".into(),
                    )
                })?;
                let bytes = zeroize::Zeroizing::new(bytes);
                MgmKey::from_bytes(bytes.as_slice(), None)
            }
        }
        .map_err(|e| card_error(device, "load the management key", &e))?;
        self.card().authenticate(&key).map_err(|e| match e {
            yubikey::Error::AuthenticationError => BackendError::PermissionDenied(format!(
                "{} refused the management key; set management_key (\"default\", \"pin-protected\") or management_key_env/_file to the device's key",
                device.describe()
            )),
            other => card_error(device, "authenticate with the management key", &other),
        })
    }
}

/// The error for an operation that needs the PIN when the backend has none.
pub fn no_pin(device: &Device) -> BackendError {
    BackendError::PermissionDenied(format!(
        "no PIN: {} needs the PIV PIN; run `keyward yubikey unlock --backend <name>` (or set pin_env or pin_file in the backend config)",
        device.describe()
    ))
}

fn wrong_pin(device: &Device, retries: u8, just_now: bool) -> BackendError {
    let when = if just_now {
        "rejected the PIN"
    } else {
        "rejected this PIN before, so it was not sent again"
    };
    BackendError::PermissionDenied(format!(
        "{} {when} ({retries} retries left); fix the PIN in pin_env/pin_file or run `keyward yubikey unlock` (keyward never retries a rejected PIN)",
        device.describe()
    ))
}

/// A readable name for a crate error (no secrets in it).
pub fn describe_error(e: &yubikey::Error) -> String {
    match e {
        yubikey::Error::PcscError { inner: Some(inner) } => format!("PC/SC: {inner}"),
        other => other.to_string(),
    }
}

/// Maps a crate error during `what` to a kind: PC/SC failures (card removed, reader gone) are
/// `Unavailable`, so the handle is dropped and the next call opens the card again.
pub fn card_error(device: &Device, what: &str, e: &yubikey::Error) -> BackendError {
    match e {
        yubikey::Error::PcscError { .. } | yubikey::Error::AppletNotFound { .. } => {
            BackendError::unavailable(format!(
                "{} stopped answering while trying to {what} ({}); check that it is plugged in and retry",
                device.describe(),
                describe_error(e)
            ))
        }
        yubikey::Error::WrongPin { tries } => wrong_pin(device, *tries, true),
        yubikey::Error::NotSupported => BackendError::Unsupported(format!(
            "{} cannot {what}: not supported by this device or firmware",
            device.describe()
        )),
        yubikey::Error::AuthenticationError => BackendError::PermissionDenied(format!(
            "{} refused to {what}: security status not satisfied (PIN, touch or management key); check the key's PIN and touch policy",
            device.describe()
        )),
        other => {
            BackendError::Other(format!("{} failed to {what}: {other}", device.describe()).into())
        }
    }
}

fn release_when_idle(device: Weak<Device>) {
    loop {
        let Some(device) = device.upgrade() else {
            return;
        };
        let idle = device.settings.idle_release.max(Duration::from_millis(50));
        if let Ok(mut state) = device.state.try_lock()
            && state.card.is_some()
            && state.last_used.is_some_and(|t| t.elapsed() >= idle)
        {
            state.card = None;
            tracing::debug!("yubikey released after {idle:?} idle");
        }
        drop(device);
        std::thread::sleep(Duration::from_millis(100));
    }
}
