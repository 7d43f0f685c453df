//! The daemon's persistent state: the ids of keys created through `KeyAdmin`, and the
//! certificate chains attached to keys.
//!
//! `<state_dir>/keys.json` maps each created key id to its backend and reference;
//! `<state_dir>/certs/<key id>.pem` holds the chain attached to a key (PEM, leaf first),
//! `<state_dir>/certs/<key id>.pgp` its OpenPGP certificate (binary). Files
//! are written atomically (temporary file 0600, fsync, rename, directory fsync) so a crash
//! leaves the old or the new version, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FORMAT_VERSION: u32 = 1;

/// One created key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The id clients use.
    pub id: String,
    /// The backend instance.
    pub backend: String,
    /// The key in the backend's own words.
    #[serde(rename = "ref")]
    pub reference: String,
    /// When it was created (seconds since the Unix epoch).
    pub created: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    keys: Vec<CreatedKey>,
}

/// The state directory and what it holds.
#[derive(Debug)]
pub struct State {
    path: PathBuf,
    certs: PathBuf,
}

impl State {
    /// Opens the state in `dir` (created 0700 if missing).
    pub fn open(dir: &Path) -> Result<(Self, Vec<CreatedKey>), String> {
        crate::paths::ensure_owned_dir(dir, 0o700)?;
        let path = dir.join("keys.json");
        let keys = match fs::read(&path) {
            Ok(bytes) => {
                let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| {
                    format!(
                        "the state file {} is damaged ({e}); restore it from a backup or move it away",
                        path.display()
                    )
                })?;
                if file.version != FORMAT_VERSION {
                    return Err(format!(
                        "the state file {} has format version {}, this keywardd reads version {FORMAT_VERSION}",
                        path.display(),
                        file.version
                    ));
                }
                file.keys
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok((
            State {
                path,
                certs: dir.join("certs"),
            },
            keys,
        ))
    }

    /// Where the chain of `key_id` is kept.
    pub fn chain_path(&self, key_id: &str) -> PathBuf {
        self.certs.join(format!("{key_id}.pem"))
    }

    /// Stores the PEM chain of `key_id` (replacing any earlier one).
    pub fn save_chain(&self, key_id: &str, pem: &str) -> Result<(), String> {
        crate::paths::ensure_owned_dir(&self.certs, 0o700)?;
        let path = self.chain_path(key_id);
        write_atomic(&path, pem.as_bytes())
            .map_err(|e| format!("cannot write the certificate chain {}: {e}", path.display()))
    }

    /// Where the OpenPGP certificate of `key_id` is kept.
    pub fn openpgp_path(&self, key_id: &str) -> PathBuf {
        self.certs.join(format!("{key_id}.pgp"))
    }

    /// Stores the binary OpenPGP certificate of `key_id` (replacing any earlier one).
    pub fn save_openpgp(&self, key_id: &str, certificate: &[u8]) -> Result<(), String> {
        crate::paths::ensure_owned_dir(&self.certs, 0o700)?;
        let path = self.openpgp_path(key_id);
        write_atomic(&path, certificate).map_err(|e| {
            format!(
                "cannot write the OpenPGP certificate {}: {e}",
                path.display()
            )
        })
    }

    /// Removes the chain and OpenPGP certificate of `key_id`, if any (a deleted key).
    pub fn remove_attachments(&self, key_id: &str) -> Result<(), String> {
        for path in [self.chain_path(key_id), self.openpgp_path(key_id)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
            }
        }
        Ok(())
    }

    /// Every stored OpenPGP certificate: (key id as in the file name, bytes).
    pub fn load_openpgp(&self) -> Vec<(String, Result<Vec<u8>, String>)> {
        let Ok(entries) = fs::read_dir(&self.certs) else {
            return Vec::new();
        };
        let mut certs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pgp"))
            else {
                continue;
            };
            let read = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()));
            certs.push((id.to_string(), read));
        }
        certs.sort_by(|a, b| a.0.cmp(&b.0));
        certs
    }

    /// Every stored chain: (key id, PEM text). Unreadable files are reported as errors with
    /// their path, so the caller can log them and go on.
    pub fn load_chains(&self) -> Vec<(String, Result<Vec<u8>, String>)> {
        let Ok(entries) = fs::read_dir(&self.certs) else {
            return Vec::new();
        };
        let mut chains = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pem"))
            else {
                continue;
            };
            let read = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()));
            chains.push((id.to_string(), read));
        }
        chains.sort_by(|a, b| a.0.cmp(&b.0));
        chains
    }

    /// Replaces the list of created keys on disk.
    pub fn save(&self, keys: &[CreatedKey]) -> Result<(), String> {
        let file = StateFile {
            version: FORMAT_VERSION,
            keys: keys.to_vec(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        write_atomic(&self.path, &bytes)
            .map_err(|e| format!("cannot write the state file {}: {e}", self.path.display()))
    }
}

/// Writes `bytes` to `path` through a 0600 temporary file in the same directory: fsync, rename,
/// directory fsync.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok::<_, std::io::Error>(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (state, keys) = State::open(dir.path()).unwrap();
        assert!(keys.is_empty());
        let key = CreatedKey {
            id: "k".into(),
            backend: "local".into(),
            reference: "k".into(),
            created: 1,
        };
        state.save(std::slice::from_ref(&key)).unwrap();
        let (_, keys) = State::open(dir.path()).unwrap();
        assert_eq!(keys, vec![key]);
        fs::write(dir.path().join("keys.json"), "{not json").unwrap();
        let err = State::open(dir.path()).unwrap_err();
        assert!(err.contains("damaged"), "{err}");
    }

    #[test]
    fn chains_are_stored_0600_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (state, _) = State::open(dir.path()).unwrap();
        assert!(state.load_chains().is_empty());
        state.save_chain("signer", "PEM ONE").unwrap();
        state.save_chain("signer", "PEM TWO").unwrap();
        let path = dir.path().join("certs/signer.pem");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let chains = state.load_chains();
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0].0, "signer");
        assert_eq!(chains[0].1.as_deref().unwrap(), b"PEM TWO");
    }
}
