//! The daemon's persistent state: the ids of keys created through `KeyAdmin`.
//!
//! `<state_dir>/keys.json` maps each created key id to its backend and reference. It is
//! rewritten atomically (temporary file, fsync, rename, directory fsync) so a crash leaves the
//! old or the new version, never a torn one.

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
        Ok((State { path }, keys))
    }

    /// Replaces the list of created keys on disk.
    pub fn save(&self, keys: &[CreatedKey]) -> Result<(), String> {
        let file = StateFile {
            version: FORMAT_VERSION,
            keys: keys.to_vec(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let shown = self.path.display();
        let result = (|| {
            let mut out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            out.write_all(&bytes)?;
            out.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok::<_, std::io::Error>(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| format!("cannot write the state file {shown}: {e}"))
    }
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
}
