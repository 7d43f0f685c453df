//! Secrets (PINs, passphrases) from the environment or a file, never from the config text.
//!
//! Every backend names a secret the same way: `<name>_env = "VAR"` or `<name>_file = "/path"`.
//! A secret file that group or others can read is refused, as ssh refuses such key files.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::BackendError;

/// A secret read from the environment or a file. Its `Debug` output is redacted and its memory
/// is zeroed when dropped.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps bytes that are already secret.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// The secret bytes. Keep the borrow short and never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads the secret `what` (e.g. "passphrase") from the environment variable `env` or the file
/// `file`; `Ok(None)` when neither is set. Giving both is an error, as is an empty secret, an
/// unset variable, or a file that group or others can read. A single trailing newline in a file
/// is dropped (`echo secret > file` is the common way to make one).
pub fn read_secret(
    what: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, BackendError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(BackendError::InvalidInput(format!(
            "both {what}_env and {what}_file are set; keep one"
        ))),
        (None, None) => Ok(None),
        (Some(var), None) => match std::env::var_os(var) {
            Some(value) if !value.is_empty() => Ok(Some(Secret::new(value.into_encoded_bytes()))),
            Some(_) => Err(BackendError::InvalidInput(format!(
                "the environment variable {var} (named by {what}_env) is empty; set it to the {what}"
            ))),
            None => Err(BackendError::InvalidInput(format!(
                "the environment variable {var} (named by {what}_env) is not set; export it before starting keywardd"
            ))),
        },
        (None, Some(path)) => read_secret_file(what, path).map(Some),
    }
}

fn read_secret_file(what: &str, path: &Path) -> Result<Secret, BackendError> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| {
        BackendError::InvalidInput(format!("cannot open the {what} file {shown}: {e}"))
    })?;
    let meta = file.metadata().map_err(|e| {
        BackendError::InvalidInput(format!("cannot stat the {what} file {shown}: {e}"))
    })?;
    check_private_mode(&meta, path, what)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes).map_err(|e| {
        BackendError::InvalidInput(format!("cannot read the {what} file {shown}: {e}"))
    })?;
    let mut len = bytes.len();
    if bytes[..len].ends_with(b"\n") {
        len -= 1;
        if bytes[..len].ends_with(b"\r") {
            len -= 1;
        }
    }
    if len == 0 {
        return Err(BackendError::InvalidInput(format!(
            "the {what} file {shown} is empty"
        )));
    }
    Ok(Secret::new(bytes[..len].to_vec()))
}

/// Refuses a file that group or others may read or write: `what` names it in the message,
/// which says how to fix it.
pub fn check_private_mode(
    meta: &std::fs::Metadata,
    path: &Path,
    what: &str,
) -> Result<(), BackendError> {
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(BackendError::PermissionDenied(format!(
            "the {what} file {} is accessible by group or others (mode {mode:04o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn file_secrets_are_trimmed_and_checked() {
        let dir = std::env::temp_dir().join(format!("keyward-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pass");
        std::fs::write(&path, "hunter2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secret = read_secret("passphrase", None, Some(&path))
            .unwrap()
            .unwrap();
        assert_eq!(secret.expose(), b"hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret("passphrase", None, Some(&path)).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!err.to_string().contains("hunter2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_secrets() {
        assert!(read_secret("pin", None, None).unwrap().is_none());
        let err = read_secret("pin", Some("KEYWARD_TEST_SURELY_UNSET_VAR"), None).unwrap_err();
        assert!(err.to_string().contains("KEYWARD_TEST_SURELY_UNSET_VAR"));
        let both = read_secret("pin", Some("X"), Some(Path::new("/nonexistent"))).unwrap_err();
        assert!(both.to_string().contains("keep one"));
    }
}
