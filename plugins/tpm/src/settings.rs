//! The `[[backend]]` settings of a `tpm` backend, checked when they are read (also by
//! `keyward-plugin-tpm --check-settings`): no TPM is opened and no secret is read here.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use keyward_plugin_api::{BackendError, Secret, read_secret};
use serde::Deserialize;
use tss_esapi::tcti_ldr::TctiNameConf;

/// The TCTI used when the config names none: the kernel's resource manager, which lets several
/// programs share the TPM.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// The `[[backend]]` settings of a `tpm` backend.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct TpmSettings {
    /// The directory of the key files (`<name>.tpm`), created 0700 when missing.
    pub path: PathBuf,
    /// How to reach the TPM, as a TCTI string (`device:/dev/tpmrm0`,
    /// `swtpm:host=127.0.0.1,port=2321`, `mssim:...`, `tabrmd:...`).
    pub tcti: String,
    /// Where the keys' authorization value (PIN) comes from, if they have one.
    pub pin: Option<SecretSource>,
    /// Where the owner hierarchy's authorization value comes from, when the machine's owner set
    /// one (most leave it empty).
    pub owner_auth: Option<SecretSource>,
}

/// An environment variable or a file (readable by its owner only) holding a secret. The secret
/// itself is never in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `<what>_env = "VAR"`.
    Env(String),
    /// `<what>_file = "/path"`.
    File(PathBuf),
}

impl SecretSource {
    fn new(env: Option<String>, file: Option<PathBuf>, what: &str) -> Result<Option<Self>, String> {
        match (env, file) {
            (None, None) => Ok(None),
            (Some(var), None) if !var.is_empty() => Ok(Some(SecretSource::Env(var))),
            (Some(_), None) => Err(format!("{what}_env must name an environment variable")),
            (None, Some(path)) if path.is_absolute() => Ok(Some(SecretSource::File(path))),
            (None, Some(path)) => Err(format!(
                "{what}_file = {:?} must be an absolute path",
                path.display()
            )),
            (Some(_), Some(_)) => Err(format!("both {what}_env and {what}_file are set; keep one")),
        }
    }

    /// Reads the secret now. `what` names it in errors (`pin`, `owner_auth`).
    pub fn read(&self, what: &str) -> Result<Secret, BackendError> {
        let secret = match self {
            SecretSource::Env(var) => read_secret(what, Some(var), None)?,
            SecretSource::File(path) => read_secret(what, None, Some(Path::new(path)))?,
        };
        secret.ok_or_else(|| BackendError::Internal(format!("the {what} source gave nothing")))
    }
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "the environment variable {var}"),
            SecretSource::File(path) => write!(f, "the file {}", path.display()),
        }
    }
}

/// The settings as written in the config, before the cross-field checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    path: PathBuf,
    tcti: Option<String>,
    pin_env: Option<String>,
    pin_file: Option<PathBuf>,
    owner_auth_env: Option<String>,
    owner_auth_file: Option<PathBuf>,
}

impl TryFrom<RawSettings> for TpmSettings {
    type Error = String;

    fn try_from(raw: RawSettings) -> Result<Self, String> {
        if !raw.path.is_absolute() {
            return Err(format!(
                "path = {:?} must be an absolute path to the key directory",
                raw.path.display()
            ));
        }
        let tcti = raw.tcti.unwrap_or_else(|| DEFAULT_TCTI.to_string());
        // Parsing only: nothing is opened until the backend starts.
        TctiNameConf::from_str(&tcti).map_err(|e| {
            format!(
                "tcti = {tcti:?} is not a TCTI string ({e}); use e.g. \"device:/dev/tpmrm0\" or \"swtpm:host=127.0.0.1,port=2321\""
            )
        })?;
        Ok(TpmSettings {
            path: raw.path,
            tcti,
            pin: SecretSource::new(raw.pin_env, raw.pin_file, "pin")?,
            owner_auth: SecretSource::new(raw.owner_auth_env, raw.owner_auth_file, "owner_auth")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<TpmSettings, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn valid_settings() {
        let s = parse(r#"{"path":"/var/lib/keyward/tpm"}"#).unwrap();
        assert_eq!(s.tcti, DEFAULT_TCTI);
        assert_eq!((s.pin, s.owner_auth), (None, None));
        let s = parse(
            r#"{"path":"/k","tcti":"swtpm:host=127.0.0.1,port=2321","pin_file":"/etc/keyward/tpm.pin"}"#,
        )
        .unwrap();
        assert_eq!(s.tcti, "swtpm:host=127.0.0.1,port=2321");
        assert_eq!(
            s.pin,
            Some(SecretSource::File(PathBuf::from("/etc/keyward/tpm.pin")))
        );
        let s = parse(r#"{"path":"/k","pin_env":"TPM_PIN","owner_auth_env":"OWNER"}"#).unwrap();
        assert_eq!(s.pin, Some(SecretSource::Env("TPM_PIN".into())));
        assert_eq!(s.owner_auth, Some(SecretSource::Env("OWNER".into())));
    }

    #[test]
    fn invalid_settings() {
        for (json, needle) in [
            (r#"{}"#, "path"),
            (r#"{"path":"keys"}"#, "absolute"),
            (r#"{"path":"/k","tcti":"carrier-pigeon:x"}"#, "tcti"),
            (r#"{"path":"/k","pin_env":"A","pin_file":"/p"}"#, "keep one"),
            (r#"{"path":"/k","pin_file":"pin.txt"}"#, "absolute"),
            (r#"{"path":"/k","pin":"1234"}"#, "pin"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
