//! What is attached to keys: X.509 certificate chains (from a `[[key]]`'s `certificate_chain`
//! file or `KeyAdmin.AttachCertificateChain`) and OpenPGP certificates
//! (`KeyAdmin.AttachOpenPgpCertificate`), kept in `<state_dir>/certs/` and checked when loaded.
//!
//! Both kinds go through one path ([`Attachment`], [`store`], [`Attached::insert`]); only their
//! checks differ (`crate::certs` for chains, the pgp plugin for OpenPGP certificates).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::certs;
use crate::config::Config;
use crate::state::State;

use super::KeyId;

/// Something attached to a key, checked.
#[derive(Debug, Clone)]
pub enum Attachment {
    /// An X.509 chain, DER, leaf first.
    Chain(Vec<Vec<u8>>),
    /// An OpenPGP certificate, binary, and the public key (SPKI) it was checked against.
    OpenPgp {
        /// The certificate.
        certificate: Vec<u8>,
        /// The key's public key it was found to belong to.
        checked_for: Vec<u8>,
    },
}

impl Attachment {
    /// What it is, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Attachment::Chain(_) => "certificate chain",
            Attachment::OpenPgp { .. } => "OpenPGP certificate",
        }
    }
}

/// An OpenPGP certificate, and the public key it is known to belong to (`None` when loaded
/// from the state directory and not checked yet).
#[derive(Debug, Clone)]
pub struct StoredOpenPgp {
    /// The certificate, binary.
    pub certificate: Vec<u8>,
    /// The SPKI it was checked against.
    pub checked_for: Option<Vec<u8>>,
}

/// Everything attached to keys, by canonical key id.
#[derive(Debug, Default)]
pub struct Attached {
    chains: HashMap<String, Vec<Vec<u8>>>,
    /// ids whose chain comes from the config (attaching another is refused).
    config_chains: HashMap<String, PathBuf>,
    openpgp: HashMap<String, StoredOpenPgp>,
}

impl Attached {
    /// What the state directory holds, then the config's chains (which win).
    pub fn load(state: &State, config: &Config) -> Self {
        let mut attached = Attached::default();
        for (id, read) in state.load_chains() {
            let id = file_id(&id);
            match read.and_then(|pem| {
                let chain = certs::parse_pem_bundle(&pem).map_err(|e| e.to_string())?;
                certs::check_rules(&chain).map_err(|e| e.to_string())?;
                Ok(chain)
            }) {
                Ok(chain) => {
                    warn_if_expired(&id, &chain);
                    attached.chains.insert(id, chain);
                }
                Err(e) => tracing::warn!(
                    key = %id,
                    path = %state.chain_path(&file_name(&id)).display(),
                    "the stored certificate chain is not served: {e}; attach a new one with `keyward cert attach` or `keyward cert issue`"
                ),
            }
        }
        for (id, read) in state.load_openpgp() {
            let id = file_id(&id);
            match read {
                Ok(certificate) => {
                    attached.openpgp.insert(
                        id,
                        StoredOpenPgp {
                            certificate,
                            checked_for: None,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(key = %id, "the stored OpenPGP certificate is not served: {e}")
                }
            }
        }
        for key in &config.keys {
            if let Some((path, chain)) = &key.certificate_chain {
                warn_if_expired(&key.id, chain);
                attached.chains.insert(key.id.clone(), chain.clone());
                attached.config_chains.insert(key.id.clone(), path.clone());
            }
        }
        attached
    }

    /// The chain attached to `id` (empty when none is).
    pub fn chain(&self, id: &KeyId) -> Vec<Vec<u8>> {
        self.chains.get(id.as_str()).cloned().unwrap_or_default()
    }

    /// The config file `id`'s chain comes from, if it comes from the config.
    pub fn config_chain(&self, id: &KeyId) -> Option<&PathBuf> {
        self.config_chains.get(id.as_str())
    }

    /// The OpenPGP certificate attached to `id`.
    pub fn openpgp(&self, id: &KeyId) -> Option<&StoredOpenPgp> {
        self.openpgp.get(id.as_str())
    }

    /// Notes that `id`'s OpenPGP certificate belongs to the key `spki`.
    pub fn openpgp_checked(&mut self, id: &KeyId, spki: &[u8]) {
        if let Some(stored) = self.openpgp.get_mut(id.as_str()) {
            stored.checked_for = Some(spki.to_vec());
        }
    }

    /// Attaches `attachment` to `id` (it was stored already).
    pub fn insert(&mut self, id: &KeyId, attachment: Attachment) {
        let id = id.as_str().to_string();
        match attachment {
            Attachment::Chain(chain) => {
                self.chains.insert(id, chain);
            }
            Attachment::OpenPgp {
                certificate,
                checked_for,
            } => {
                self.openpgp.insert(
                    id,
                    StoredOpenPgp {
                        certificate,
                        checked_for: Some(checked_for),
                    },
                );
            }
        }
    }
}

impl Attached {
    /// Forgets what is attached to `id` (a deleted key); the files go with [`remove_files`].
    pub fn remove(&mut self, id: &KeyId) {
        self.chains.remove(id.as_str());
        self.config_chains.remove(id.as_str());
        self.openpgp.remove(id.as_str());
    }
}

/// Removes the files of what is attached to `id` from the state directory.
pub fn remove_files(state: &State, id: &KeyId) -> Result<(), String> {
    state.remove_attachments(&file_name(id.as_str()))
}

/// Writes `attachment` of `id` to the state directory (atomically, replacing an older one).
pub fn store(state: &State, id: &KeyId, attachment: &Attachment) -> Result<(), String> {
    let name = file_name(id.as_str());
    match attachment {
        Attachment::Chain(chain) => state.save_chain(&name, &certs::to_pem(chain)),
        Attachment::OpenPgp { certificate, .. } => state.save_openpgp(&name, certificate),
    }
}

/// The file name (without extension) a key's attachments are stored under: `/` (in
/// `<backend>/<name>` ids) becomes `%2F`, which no key id contains.
fn file_name(key_id: &str) -> String {
    key_id.replace('/', "%2F")
}

/// The key id of a stored attachment's file name.
fn file_id(name: &str) -> String {
    name.replace("%2F", "/")
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn warn_if_expired(key_id: &str, chain: &[Vec<u8>]) {
    if let Err(e) = certs::check_validity(chain, now()) {
        tracing::warn!(key = %key_id, "{e}");
    }
}
