//! The keys' authorization value (PIN): from `pin_env` / `pin_file`, or given over the socket
//! (`keyward unlock`, kept in memory for a while), and the PINs the TPM refused.
//!
//! Every refused authorization counts toward the TPM's dictionary-attack lockout, which then
//! locks every DA-protected key of the machine, not only keyward's. So a PIN the TPM refused is
//! remembered and never sent again, by any call: the next calls fail at once, naming where the
//! PIN came from, until a different PIN is configured (the source is read again then) or
//! unlocked.

use std::time::{Duration, Instant};

use keyward_plugin_api::{BackendError, Secret};

use crate::settings::SecretSource;

/// The longest authorization value a TPM takes for a key whose name hash is SHA-256.
pub const MAX_PIN_LEN: usize = 32;
/// How many refused PINs are remembered.
const REMEMBERED: usize = 8;

/// Where the PIN in use came from, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `keyward unlock`.
    Unlocked,
    /// `pin_env` / `pin_file`.
    Configured,
}

/// The PIN state of a backend.
#[derive(Debug)]
pub(crate) struct Pins {
    backend: String,
    source: Option<SecretSource>,
    configured: Option<Secret>,
    unlocked: Option<(Secret, Option<Instant>)>,
    refused: Vec<Secret>,
}

/// Refuses an authorization value the TPM cannot take.
pub(crate) fn check_len(pin: &Secret) -> Result<(), BackendError> {
    if pin.expose().len() > MAX_PIN_LEN {
        return Err(BackendError::InvalidInput(format!(
            "the PIN is {} bytes long; a TPM key's authorization value is at most {MAX_PIN_LEN} bytes",
            pin.expose().len()
        )));
    }
    Ok(())
}

impl Pins {
    /// Reads the configured PIN, if any (an unreadable source is a start-up error).
    pub fn new(backend: String, source: Option<SecretSource>) -> Result<Self, BackendError> {
        let configured = source.as_ref().map(|s| s.read("pin")).transpose()?;
        if let Some(pin) = &configured {
            check_len(pin)?;
        }
        Ok(Pins {
            backend,
            source,
            configured,
            unlocked: None,
            refused: Vec::new(),
        })
    }

    fn is_refused(&self, pin: &Secret) -> bool {
        self.refused.iter().any(|r| r.expose() == pin.expose())
    }

    /// The PIN to use now, or why there is none. `key` names the key in messages.
    pub fn current(&mut self, key: &str) -> Result<(Secret, Origin), BackendError> {
        if let Some((_, Some(until))) = &self.unlocked
            && Instant::now() >= *until
        {
            self.unlocked = None;
        }
        if let Some((pin, _)) = &self.unlocked {
            if self.is_refused(pin) {
                return Err(self.refused_error(key, Origin::Unlocked));
            }
            return Ok((pin.clone(), Origin::Unlocked));
        }
        let configured_refused = self.configured.as_ref().is_some_and(|p| self.is_refused(p));
        if configured_refused {
            // The file or variable may have been fixed since: read it again (only then).
            if let Some(Ok(pin)) = self.source.as_ref().map(|s| s.read("pin"))
                && check_len(&pin).is_ok()
            {
                self.configured = Some(pin);
            }
        }
        match &self.configured {
            Some(pin) if self.is_refused(pin) => Err(self.refused_error(key, Origin::Configured)),
            Some(pin) => Ok((pin.clone(), Origin::Configured)),
            None => Err(BackendError::PermissionDenied(format!(
                "key {key:?} has a PIN (a TPM authorization value) and backend {:?} has none: set pin_env or pin_file, or run `keyward unlock --backend {}`",
                self.backend, self.backend
            ))),
        }
    }

    /// The PIN new keys get: the current one, or none (keys without a PIN).
    pub fn for_new_key(&mut self) -> Result<Option<Secret>, BackendError> {
        if self.unlocked.is_none() && self.configured.is_none() {
            return Ok(None);
        }
        self.current("(new key)").map(|(pin, _)| Some(pin))
    }

    /// Records that the TPM refused `pin`.
    pub fn refused(&mut self, pin: Secret) {
        if !self.is_refused(&pin) {
            if self.refused.len() == REMEMBERED {
                self.refused.remove(0);
            }
            self.refused.push(pin);
        }
    }

    /// Whether `pin` was refused before.
    pub fn was_refused(&self, pin: &Secret) -> bool {
        self.is_refused(pin)
    }

    /// Keeps `pin` (already accepted by the TPM, or with no key to check it on) for `ttl`
    /// (`None`: until the plugin stops).
    pub fn unlock(&mut self, pin: Secret, ttl: Option<Duration>) {
        self.unlocked = Some((pin, ttl.map(|ttl| Instant::now() + ttl)));
    }

    /// The message for a PIN that was refused before.
    pub fn refused_error(&self, key: &str, origin: Origin) -> BackendError {
        let fix = match (origin, &self.source) {
            (Origin::Unlocked, _) => format!(
                "run `keyward unlock --backend {}` with the right PIN",
                self.backend
            ),
            (Origin::Configured, Some(source)) => format!(
                "put the right PIN in {source} (it is read again on the next call), or run `keyward unlock --backend {}`",
                self.backend
            ),
            (Origin::Configured, None) => {
                format!("run `keyward unlock --backend {}`", self.backend)
            }
        };
        BackendError::PermissionDenied(format!(
            "key {key:?}: the TPM refused this PIN before, and keyward does not send a refused PIN again (each wrong try counts toward the TPM's dictionary-attack lockout): {fix}"
        ))
    }

    /// Where a PIN of `origin` comes from, for messages.
    pub fn describe(&self, origin: Origin) -> String {
        match (origin, &self.source) {
            (Origin::Unlocked, _) => "the PIN given with `keyward unlock`".into(),
            (Origin::Configured, Some(source)) => format!("the PIN from {source}"),
            (Origin::Configured, None) => "the configured PIN".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_pin_is_never_handed_out_again() {
        let mut pins = Pins::new("tpm".into(), None).unwrap();
        let err = pins.current("k").unwrap_err();
        assert!(
            err.to_string().contains("keyward unlock --backend tpm"),
            "{err}"
        );
        assert_eq!(
            pins.for_new_key().unwrap().map(|p| p.expose().to_vec()),
            None
        );

        pins.unlock(Secret::new(b"1111".to_vec()), None);
        let (pin, origin) = pins.current("k").unwrap();
        assert_eq!((pin.expose(), origin), (&b"1111"[..], Origin::Unlocked));
        pins.refused(pin);
        let err = pins.current("k").unwrap_err();
        assert!(
            err.to_string()
                .contains("does not send a refused PIN again"),
            "{err}"
        );
        assert!(!err.to_string().contains("1111"));
        assert!(pins.was_refused(&Secret::new(b"1111".to_vec())));

        pins.unlock(
            Secret::new(b"2222".to_vec()),
            Some(Duration::from_secs(3600)),
        );
        assert_eq!(pins.current("k").unwrap().0.expose(), b"2222");
        pins.unlock(Secret::new(b"3333".to_vec()), Some(Duration::ZERO));
        assert!(pins.current("k").is_err(), "an expired unlock is gone");
        assert!(check_len(&Secret::new(vec![b'1'; 33])).is_err());
    }
}
