//! The `[[backend]]` settings of a `pkcs11` backend, checked when the config is read, and where
//! the PIN comes from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keyward_plugin_api::{BackendError, Secret, read_secret};
use serde::Deserialize;

/// The default number of sessions kept open on the token.
pub const DEFAULT_SESSIONS: usize = 4;
/// The default number of seconds a call waits for a free session.
pub const DEFAULT_SESSION_WAIT_SECS: u64 = 20;

/// The `[[backend]]` settings of a `pkcs11` backend.
///
/// Exactly one of `token_label` and `token_serial` names the token; at most one of `pin_env`,
/// `pin_file` and `pin_credential` gives its user PIN. Checked when the config is read
/// (`keywardd --check-config`), before any module is loaded.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct Pkcs11Settings {
    /// The PKCS#11 module (shared library) to load, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Which token of the module holds the keys.
    pub token: TokenSelector,
    /// Where the user PIN comes from; `None` for a token that needs no login.
    pub pin: Option<PinSource>,
    /// How many sessions to keep open on the token (at least 1).
    pub sessions: usize,
    /// How long a call waits for a free session before it fails with a timeout.
    pub session_wait: Duration,
}

/// How the token is found among the module's slots (again each time the pool re-opens: slot ids
/// change when tokens are re-initialised or re-plugged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    /// `CKA_LABEL` of the token (`token_label`), compared without the padding blanks.
    Label(String),
    /// The token's serial number (`token_serial`).
    Serial(String),
}

impl TokenSelector {
    /// Whether a token with this label and serial is the one selected.
    pub fn matches(&self, label: &str, serial: &str) -> bool {
        match self {
            TokenSelector::Label(want) => label.trim_end() == want.trim_end(),
            TokenSelector::Serial(want) => serial.trim() == want.trim(),
        }
    }
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSelector::Label(label) => write!(f, "label {label:?}"),
            TokenSelector::Serial(serial) => write!(f, "serial {serial:?}"),
        }
    }
}

/// Where the user PIN is read from. The PIN itself is never in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// An environment variable (`pin_env`).
    Env(String),
    /// A file readable by its owner only (`pin_file`).
    File(PathBuf),
    /// A systemd credential (`pin_credential`): `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

impl PinSource {
    /// Reads the PIN now (again after a rejected PIN, to notice that it changed).
    pub fn read(&self) -> Result<Secret, BackendError> {
        let secret = match self {
            PinSource::Env(var) => read_secret("pin", Some(var), None)?,
            PinSource::File(path) => read_secret("pin", None, Some(path))?,
            PinSource::Credential(name) => {
                let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                    return Err(BackendError::InvalidInput(format!(
                        "pin_credential = {name:?} but $CREDENTIALS_DIRECTORY is not set: run keywardd as a systemd service with LoadCredential={name}:<file> (with isolation = \"process\", also list it in env = [\"CREDENTIALS_DIRECTORY\"])"
                    )));
                };
                read_secret("pin", None, Some(&Path::new(&dir).join(name)))?
            }
        };
        secret.ok_or_else(|| BackendError::Internal("the PIN source gave no PIN".into()))
    }
}

impl std::fmt::Display for PinSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinSource::Env(var) => write!(f, "pin_env {var}"),
            PinSource::File(path) => write!(f, "pin_file {}", path.display()),
            PinSource::Credential(name) => write!(f, "pin_credential {name}"),
        }
    }
}

/// The settings as written in the config, before the cross-field checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    module: PathBuf,
    token_label: Option<String>,
    token_serial: Option<String>,
    pin_env: Option<String>,
    pin_file: Option<PathBuf>,
    pin_credential: Option<String>,
    sessions: Option<usize>,
    session_wait_secs: Option<u64>,
}

impl TryFrom<RawSettings> for Pkcs11Settings {
    type Error = String;

    fn try_from(raw: RawSettings) -> Result<Self, String> {
        if !raw.module.is_absolute() {
            return Err(format!(
                "module = {:?} must be an absolute path to the PKCS#11 library",
                raw.module
            ));
        }
        let token = match (raw.token_label, raw.token_serial) {
            (Some(label), None) if !label.trim().is_empty() => TokenSelector::Label(label),
            (None, Some(serial)) if !serial.trim().is_empty() => TokenSelector::Serial(serial),
            (Some(_), Some(_)) => {
                return Err("both token_label and token_serial are set; keep one".into());
            }
            (None, None) => {
                return Err(
                    "name the token with token_label (or token_serial); `pkcs11-tool --module <module> --list-token-slots` shows them"
                        .into(),
                );
            }
            _ => return Err("token_label / token_serial must not be empty".into()),
        };
        let pin = match (raw.pin_env, raw.pin_file, raw.pin_credential) {
            (None, None, None) => None,
            (Some(var), None, None) => Some(PinSource::Env(var)),
            (None, Some(path), None) => Some(PinSource::File(path)),
            (None, None, Some(name)) => {
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    return Err(format!(
                        "pin_credential = {name:?} must be a credential name, not a path"
                    ));
                }
                Some(PinSource::Credential(name))
            }
            _ => {
                return Err("set only one of pin_env, pin_file and pin_credential".into());
            }
        };
        let sessions = raw.sessions.unwrap_or(DEFAULT_SESSIONS);
        if !(1..=64).contains(&sessions) {
            return Err(format!("sessions = {sessions}: use 1 to 64"));
        }
        let wait = raw.session_wait_secs.unwrap_or(DEFAULT_SESSION_WAIT_SECS);
        if !(1..=3600).contains(&wait) {
            return Err(format!("session_wait_secs = {wait}: use 1 to 3600"));
        }
        Ok(Pkcs11Settings {
            module: raw.module,
            token,
            pin,
            sessions,
            session_wait: Duration::from_secs(wait),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Pkcs11Settings, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn valid_settings() {
        let s = parse(r#"{"module":"/m.so","token_label":"T","pin_env":"PIN"}"#).unwrap();
        assert_eq!(s.token, TokenSelector::Label("T".into()));
        assert_eq!(s.pin, Some(PinSource::Env("PIN".into())));
        assert_eq!(s.sessions, DEFAULT_SESSIONS);
        let s = parse(r#"{"module":"/m.so","token_serial":"abc","sessions":2}"#).unwrap();
        assert_eq!(s.token, TokenSelector::Serial("abc".into()));
        assert_eq!((s.pin, s.sessions), (None, 2));
        assert!(TokenSelector::Label("T".into()).matches("T   ", "x"));
    }

    #[test]
    fn invalid_settings() {
        for (json, needle) in [
            (r#"{"module":"/m.so"}"#, "token_label"),
            (
                r#"{"module":"/m.so","token_label":"a","token_serial":"b"}"#,
                "keep one",
            ),
            (
                r#"{"module":"/m.so","token_label":"a","pin_env":"A","pin_file":"/p"}"#,
                "only one",
            ),
            (r#"{"module":"m.so","token_label":"a"}"#, "absolute"),
            (
                r#"{"module":"/m.so","token_label":"a","sessions":0}"#,
                "sessions",
            ),
            (
                r#"{"module":"/m.so","token_label":"a","pin":"1234"}"#,
                "pin",
            ),
            (
                r#"{"module":"/m.so","token_label":"a","pin_credential":"../x"}"#,
                "not a path",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
