//! The key directory: `<path>/<name>.tpm`, one TSS2 PRIVATE KEY file per key, 0600 in a 0700
//! directory. The files hold only TPM-wrapped private areas, useless without this TPM, but they
//! are kept private like any key file.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use keyward_plugin_api::{BackendError, is_valid_key_name};

use crate::keyfile::{KeyFile, MAX_FILE_LEN};

/// The extension of key files.
pub const EXTENSION: &str = "tpm";

/// The key directory of a backend.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens the directory, creating it (0700) when missing; refuses one that group or others
    /// may write.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        let shown = dir.display();
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    BackendError::InvalidInput(format!(
                        "cannot create the key directory {shown}: {e}"
                    ))
                })?;
        }
        let meta = fs::metadata(dir).map_err(|e| {
            BackendError::InvalidInput(format!("cannot use the key directory {shown}: {e}"))
        })?;
        if !meta.is_dir() {
            return Err(BackendError::InvalidInput(format!(
                "path {shown} is not a directory"
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(BackendError::PermissionDenied(format!(
                "the key directory {shown} is writable by group or others; run `chmod 700 {shown}`"
            )));
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, BackendError> {
        if !is_valid_key_name(name) {
            return Err(BackendError::InvalidInput(format!(
                "{name:?} is not a tpm key name: use letters, digits, '.', '_' and '-' (the key is the file <name>.{EXTENSION} in the backend's directory)"
            )));
        }
        Ok(self.dir.join(format!("{name}.{EXTENSION}")))
    }

    /// The names of the key files in the directory, sorted.
    pub fn names(&self) -> Result<Vec<String>, BackendError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| {
            BackendError::unavailable(format!(
                "cannot list the key directory {}: {e}",
                self.dir.display()
            ))
        })?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let stem = name.strip_suffix(&format!(".{EXTENSION}"))?;
                is_valid_key_name(stem).then(|| stem.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// What identifies the current content of `name`'s file without reading it (inode, size,
    /// modification time): a cache of parsed keys is valid while it stays the same.
    pub fn stamp(&self, name: &str) -> Result<(u64, u64, i64, i64), BackendError> {
        let path = self.path(name)?;
        match fs::metadata(&path) {
            Ok(meta) => Ok((meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BackendError::NotFound(
                format!("no tpm key {name:?} ({} does not exist)", path.display()),
            )),
            Err(e) => Err(BackendError::unavailable(format!(
                "cannot stat the key file {}: {e}",
                path.display()
            ))),
        }
    }

    /// Reads and parses the key file of `name`.
    pub fn read(&self, name: &str) -> Result<KeyFile, BackendError> {
        let path = self.path(name)?;
        let shown = path.display();
        let mut file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackendError::NotFound(format!(
                    "no tpm key {name:?} ({shown} does not exist); create one with `keyward keys generate --backend <backend> --type ec-p256 {name}`"
                )));
            }
            Err(e) => {
                return Err(BackendError::Unavailable {
                    message: format!("cannot read the key file {shown}: {e}"),
                    retry_after: None,
                });
            }
        };
        let meta = file
            .metadata()
            .map_err(|e| BackendError::Internal(format!("cannot stat {shown}: {e}")))?;
        keyward_plugin_api::secret::check_private_mode(&meta, &path, "tpm key")?;
        if meta.len() > MAX_FILE_LEN {
            return Err(BackendError::InvalidInput(format!(
                "{shown} is {} bytes long: not a TPM key file",
                meta.len()
            )));
        }
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .map_err(|e| BackendError::Internal(format!("cannot read {shown}: {e}")))?;
        KeyFile::from_pem(&text)
            .map_err(|reason| BackendError::InvalidInput(format!("{shown}: {reason}")))
    }

    /// Writes the new key `name`; fails if a key of that name exists. The file appears whole
    /// or not at all (written to a temporary name, synced, then linked in place).
    pub fn create(&self, name: &str, key: &KeyFile) -> Result<PathBuf, BackendError> {
        let path = self.path(name)?;
        if path.exists() {
            return Err(BackendError::InvalidInput(format!(
                "a tpm key named {name:?} exists ({}); choose another name",
                path.display()
            )));
        }
        let text = key.to_pem().map_err(BackendError::Internal)?;
        let temp = self
            .dir
            .join(format!(".{name}.{EXTENSION}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            // A hard link never replaces an existing file: two creations of one name cannot
            // both succeed.
            fs::hard_link(&temp, &path)
        })();
        let _ = fs::remove_file(&temp);
        written.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                BackendError::InvalidInput(format!(
                    "a tpm key named {name:?} exists; choose another name"
                ))
            } else {
                BackendError::Internal(format!("cannot write {}: {e}", path.display()))
            }
        })?;
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(path)
    }
}
