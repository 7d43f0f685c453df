//! Reading, checking and writing key files.

use keyward_plugin_api::awslc::AwsLcSigner;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use keyward_plugin_api::secret::check_private_mode;
use keyward_plugin_api::verify::key_spec_of_spki;
use keyward_plugin_api::{BackendError, KeySpec, Secret};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::symm::Cipher;
use zeroize::Zeroizing;

/// An unlocked private key with what the daemon may know about it.
pub(crate) struct LoadedKey {
    pub(crate) private: PKey<Private>,
    /// The same key as an `EC_KEY`, for EC keys: ECDSA through it skips OpenSSL 3's per-call
    /// EVP context set-up, which costs more than the signature itself.
    pub(crate) ec: Option<EcKey<Private>>,
    /// The same key in aws-lc-rs (ECDSA, Ed25519), which signs several times faster than
    /// OpenSSL 3; OpenSSL read (and decrypted) the file.
    pub(crate) fast: Option<AwsLcSigner>,
    pub(crate) spec: KeySpec,
    pub(crate) public_key_der: Vec<u8>,
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("spec", &self.spec)
            .field("private", &"<redacted>")
            .finish()
    }
}

/// Creates `dir` (and parents) if needed and makes it 0700.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), BackendError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            BackendError::InvalidInput(format!(
                "cannot create the key directory {}: {e}",
                dir.display()
            ))
        })?;
    let meta = fs::metadata(dir).map_err(|e| {
        BackendError::InvalidInput(format!(
            "cannot stat the key directory {}: {e}",
            dir.display()
        ))
    })?;
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
            BackendError::InvalidInput(format!(
                "the key directory {} is open to group or others and cannot be made 0700: {e}",
                dir.display()
            ))
        })?;
        tracing::warn!(dir = %dir.display(), "key directory was open to group or others; made it 0700");
    }
    Ok(())
}

/// What is wrong with the modes of the key directory and its key files (`keyward doctor`), one
/// sentence each with the command that fixes it. Keys already loaded keep signing after a
/// chmod, and a newly loaded one is refused: either way it needs attention.
pub(crate) fn unsafe_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let own_uid = rustix::process::getuid().as_raw();
    let shown = dir.display();
    match fs::metadata(dir) {
        Ok(meta) if meta.mode() & 0o077 != 0 => found.push(format!(
            "the key directory {shown} is open to group or others (mode {:04o}); run `chmod 700 {shown}`",
            meta.mode() & 0o7777
        )),
        Ok(_) => {}
        Err(e) => found.push(format!("cannot read the key directory {shown}: {e}")),
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    files.sort();
    for path in files {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let shown = path.display();
        if meta.mode() & 0o077 != 0 {
            found.push(format!(
                "the key file {shown} is readable or writable by group or others (mode {:04o}); run `chmod 600 {shown}`",
                meta.mode() & 0o7777
            ));
        }
        if meta.uid() != own_uid {
            found.push(format!(
                "the key file {shown} belongs to uid {}, not to keywardd's uid {own_uid}; run `chown {own_uid} {shown}`",
                meta.uid()
            ));
        }
    }
    found
}

/// Reads the key file at `path`: it must be mode 0600 or stricter; encrypted PKCS#8 needs the
/// passphrase.
pub(crate) fn load(path: &Path, passphrase: Option<&Secret>) -> Result<LoadedKey, BackendError> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BackendError::NotFound(format!("no key file at {shown}")),
        _ => BackendError::unavailable(format!("cannot open the key file {shown}: {e}")),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| BackendError::unavailable(format!("cannot stat the key file {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(BackendError::InvalidInput(format!(
            "{shown} is not a regular file"
        )));
    }
    check_private_mode(&meta, path, "key")?;
    let mut contents = Zeroizing::new(Vec::new());
    file.read_to_end(&mut contents)
        .map_err(|e| BackendError::unavailable(format!("cannot read the key file {shown}: {e}")))?;

    let private = parse_private_key(&contents, passphrase, path)?;
    let public_key_der = private.public_key_to_der().map_err(|e| {
        BackendError::Internal(format!("cannot encode the public key of {shown}: {e}"))
    })?;
    let spec = key_spec_of_spki(&public_key_der)
        .map_err(|e| BackendError::Unsupported(format!("the key in {shown}: {e}")))?;
    Ok(LoadedKey {
        ec: private.ec_key().ok(),
        fast: AwsLcSigner::from_pkey(spec, &private),
        private,
        spec,
        public_key_der,
    })
}

fn parse_private_key(
    contents: &[u8],
    passphrase: Option<&Secret>,
    path: &Path,
) -> Result<PKey<Private>, BackendError> {
    let shown = path.display();
    let is_pem = contents.starts_with(b"-----BEGIN");
    let encrypted = is_pem && contents.starts_with(b"-----BEGIN ENCRYPTED PRIVATE KEY-----");
    if encrypted && passphrase.is_none() {
        return Err(BackendError::PermissionDenied(format!(
            "the key file {shown} is encrypted and no passphrase is configured; set passphrase_env or passphrase_file on its backend"
        )));
    }
    let parsed = if is_pem {
        // Never let OpenSSL fall back to prompting on a terminal: the callback answers for it.
        PKey::private_key_from_pem_callback(contents, |buf| match passphrase {
            Some(secret) if secret.expose().len() <= buf.len() => {
                let bytes = secret.expose();
                buf[..bytes.len()].copy_from_slice(bytes);
                Ok(bytes.len())
            }
            _ => Ok(0),
        })
    } else {
        PKey::private_key_from_der(contents)
    };
    parsed.map_err(|_| {
        if encrypted {
            BackendError::PermissionDenied(format!(
                "cannot decrypt the key file {shown}: wrong passphrase"
            ))
        } else {
            BackendError::InvalidInput(format!(
                "{shown} is not a PKCS#8, SEC1 or PKCS#1 private key (PEM) or a PKCS#8 DER key"
            ))
        }
    })
}

/// Makes a new key pair of `spec` and writes it to `path` (mode 0600), encrypted when a
/// passphrase is given. Never overwrites: an existing file is `InvalidInput` naming it.
pub(crate) fn generate(
    path: &Path,
    spec: KeySpec,
    passphrase: Option<&Secret>,
) -> Result<LoadedKey, BackendError> {
    let internal = |e: openssl::error::ErrorStack| {
        BackendError::Internal(format!("key generation for {spec} failed: {e}"))
    };
    let private = match spec {
        KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => {
            let nid = match spec {
                KeySpec::EcP256 => Nid::X9_62_PRIME256V1,
                KeySpec::EcP384 => Nid::SECP384R1,
                _ => Nid::SECP521R1,
            };
            let group = EcGroup::from_curve_name(nid).map_err(internal)?;
            PKey::from_ec_key(EcKey::generate(&group).map_err(internal)?).map_err(internal)?
        }
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let bits = spec.rsa_bits().unwrap_or(2048);
            PKey::from_rsa(Rsa::generate(bits).map_err(internal)?).map_err(internal)?
        }
        KeySpec::Ed25519 => PKey::generate_ed25519().map_err(internal)?,
    };
    let pem = Zeroizing::new(match passphrase {
        Some(secret) => private
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), secret.expose())
            .map_err(internal)?,
        None => private.private_key_to_pem_pkcs8().map_err(internal)?,
    });
    write_new_private_file(path, &pem)?;
    let public_key_der = private.public_key_to_der().map_err(internal)?;
    Ok(LoadedKey {
        ec: private.ec_key().ok(),
        fast: AwsLcSigner::from_pkey(spec, &private),
        private,
        spec,
        public_key_der,
    })
}

/// Writes `contents` to a new file at `path` with mode 0600, durably and without ever
/// replacing an existing file: a temporary file is written and synced, then hard-linked into
/// place (which fails if `path` exists), then the directory is synced.
fn write_new_private_file(path: &Path, contents: &[u8]) -> Result<(), BackendError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let io = |what: &str, e: std::io::Error| {
        BackendError::unavailable(format!("cannot {what} {}: {e}", path.display()))
    };
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("create a temporary file for", e))?;
        file.write_all(contents).map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("sync", e))?;
        fs::hard_link(&tmp, path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BackendError::InvalidInput(format!(
                "a key file already exists at {}; choose another key id or remove the file",
                path.display()
            )),
            _ => io("link", e),
        })?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync the directory of", e))
    })();
    let _ = fs::remove_file(&tmp);
    result
}
