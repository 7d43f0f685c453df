//! The `[[backend]]` settings of a `yubikey` backend, checked when the config is read.

use std::path::PathBuf;
use std::time::Duration;

use keyward_plugin_api::{BackendError, Secret, read_secret};
use serde::Deserialize;

/// The default seconds a sign waits for a touch before it gives up.
pub const DEFAULT_TOUCH_TIMEOUT_SECS: u64 = 15;
/// The default milliseconds the card stays open after the last operation.
pub const DEFAULT_IDLE_RELEASE_MS: u64 = 500;

/// The `[[backend]]` settings of a `yubikey` backend.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct YubikeySettings {
    /// The device's serial number (`ykman list --serials`); `None`: the only YubiKey present.
    pub serial: Option<u32>,
    /// Where the PIV PIN comes from; `None`: keys whose PIN policy is `never` only.
    pub pin: Option<SecretSource>,
    /// How the management key (needed to generate keys) is found.
    pub management_key: ManagementKey,
    /// PIN and touch policy of generated keys.
    pub pin_policy: String,
    /// See `pin_policy`.
    pub touch_policy: String,
    /// How long a sign waits for a touch.
    pub touch_timeout: Duration,
    /// How long the card stays open after the last operation (other tools can use it after).
    pub idle_release: Duration,
}

/// A secret named by `<what>_env` or `<what>_file`; never the secret itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file readable by its owner only.
    File(PathBuf),
}

impl SecretSource {
    fn new(what: &str, env: Option<String>, file: Option<PathBuf>) -> Result<Option<Self>, String> {
        match (env, file) {
            (None, None) => Ok(None),
            (Some(var), None) => Ok(Some(SecretSource::Env(var))),
            (None, Some(path)) => Ok(Some(SecretSource::File(path))),
            (Some(_), Some(_)) => Err(format!("both {what}_env and {what}_file are set; keep one")),
        }
    }

    /// Reads the secret now (again after a rejected PIN, to notice that it changed).
    pub fn read(&self, what: &str) -> Result<Secret, BackendError> {
        let secret = match self {
            SecretSource::Env(var) => read_secret(what, Some(var), None)?,
            SecretSource::File(path) => read_secret(what, None, Some(path))?,
        };
        secret.ok_or_else(|| BackendError::Internal(format!("the {what} source gave nothing")))
    }
}

/// The PIV management key, used to generate keys and to write their certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagementKey {
    /// The factory default (3DES before firmware 5.7, AES-192 from 5.7).
    Default,
    /// Stored on the device, protected by the PIN (`ykman piv access change-management-key
    /// --protect`).
    PinProtected,
    /// Hex from an environment variable or a file.
    Secret(SecretSource),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    serial: Option<u32>,
    pin_env: Option<String>,
    pin_file: Option<PathBuf>,
    management_key: Option<String>,
    management_key_env: Option<String>,
    management_key_file: Option<PathBuf>,
    pin_policy: Option<String>,
    touch_policy: Option<String>,
    touch_timeout_secs: Option<u64>,
    idle_release_ms: Option<u64>,
}

/// The PIN policies `pin_policy` accepts.
pub const PIN_POLICIES: [&str; 4] = ["default", "never", "once", "always"];
/// The touch policies `touch_policy` accepts.
pub const TOUCH_POLICIES: [&str; 4] = ["default", "never", "always", "cached"];

impl TryFrom<RawSettings> for YubikeySettings {
    type Error = String;

    fn try_from(raw: RawSettings) -> Result<Self, String> {
        let pin = SecretSource::new("pin", raw.pin_env, raw.pin_file)?;
        let secret_key = SecretSource::new(
            "management_key",
            raw.management_key_env,
            raw.management_key_file,
        )?;
        let management_key = match (raw.management_key.as_deref(), secret_key) {
            (None | Some("default"), None) => ManagementKey::Default,
            (Some("pin-protected"), None) => ManagementKey::PinProtected,
            (None, Some(source)) => ManagementKey::Secret(source),
            (Some(other), None) => {
                return Err(format!(
                    "management_key = {other:?}: use \"default\" or \"pin-protected\", or give the key (hex) with management_key_env / management_key_file"
                ));
            }
            (Some(_), Some(_)) => {
                return Err(
                    "management_key and management_key_env/_file are both set; keep one".into(),
                );
            }
        };
        if management_key == ManagementKey::PinProtected && pin.is_none() {
            return Err(
                "management_key = \"pin-protected\" needs the PIN: set pin_env or pin_file".into(),
            );
        }
        let pin_policy = raw.pin_policy.unwrap_or_else(|| "default".into());
        if !PIN_POLICIES.contains(&pin_policy.as_str()) {
            return Err(format!(
                "pin_policy = {pin_policy:?}: use one of {PIN_POLICIES:?}"
            ));
        }
        let touch_policy = raw.touch_policy.unwrap_or_else(|| "default".into());
        if !TOUCH_POLICIES.contains(&touch_policy.as_str()) {
            return Err(format!(
                "touch_policy = {touch_policy:?}: use one of {TOUCH_POLICIES:?}"
            ));
        }
        let touch = raw.touch_timeout_secs.unwrap_or(DEFAULT_TOUCH_TIMEOUT_SECS);
        if !(1..=300).contains(&touch) {
            return Err(format!("touch_timeout_secs = {touch}: use 1 to 300"));
        }
        let idle = raw.idle_release_ms.unwrap_or(DEFAULT_IDLE_RELEASE_MS);
        if idle > 600_000 {
            return Err(format!("idle_release_ms = {idle}: use 0 to 600000"));
        }
        Ok(YubikeySettings {
            serial: raw.serial,
            pin,
            management_key,
            pin_policy,
            touch_policy,
            touch_timeout: Duration::from_secs(touch),
            idle_release: Duration::from_millis(idle),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<YubikeySettings, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn valid_settings() {
        let s = parse(r#"{}"#).unwrap();
        assert_eq!(
            (s.serial, s.pin, s.management_key),
            (None, None, ManagementKey::Default)
        );
        let s = parse(r#"{"serial":123,"pin_env":"PIN","management_key":"pin-protected","touch_policy":"cached"}"#)
            .unwrap();
        assert_eq!(s.serial, Some(123));
        assert_eq!(s.pin, Some(SecretSource::Env("PIN".into())));
        assert_eq!(s.management_key, ManagementKey::PinProtected);
        let s = parse(r#"{"management_key_file":"/k"}"#).unwrap();
        assert_eq!(
            s.management_key,
            ManagementKey::Secret(SecretSource::File("/k".into()))
        );
    }

    #[test]
    fn invalid_settings() {
        for (json, needle) in [
            (r#"{"pin_env":"A","pin_file":"/p"}"#, "keep one"),
            (r#"{"pin":"123456"}"#, "pin"),
            (r#"{"management_key":"010203"}"#, "management_key_env"),
            (r#"{"management_key":"pin-protected"}"#, "needs the PIN"),
            (r#"{"pin_policy":"sometimes"}"#, "pin_policy"),
            (r#"{"touch_timeout_secs":0}"#, "touch_timeout_secs"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
