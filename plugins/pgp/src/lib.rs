//! The `pgp` backend: signing keys from an OpenPGP secret keyring (a TSK file, armored or
//! binary, e.g. `gpg --export-secret-keys`).
//!
//! - The keyring file must be mode 0600, like every key file keywardd reads.
//! - Protected secret keys are unlocked when the backend starts, with the passphrase from
//!   `passphrase_env` / `passphrase_file`; unlocked keys live in OpenSSL `PKey` objects in the
//!   daemon (or the plugin process) only.
//! - From each certificate in the keyring the backend serves one key: the (sub)key named by
//!   `fingerprint`, or else the first valid, alive, signing-capable key with a secret part.
//!   Its reference is that key's fingerprint (upper-case hex); the certificate's fingerprint and
//!   either key id also name it.
//! - `describe_key` carries the certificate (without secrets), so `GetPublicKey` returns it and
//!   `keyward pgp export` prints it.
//!
//! Signing goes through OpenSSL like the local backend, so every agent algorithm works (RSA-PSS
//! too); OpenPGP signatures are then made by clients through the SDK's `pgp` signer.

mod convert;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use keyward_plugin_api::secret::check_private_mode;
use keyward_plugin_api::{
    Backend, BackendError, Deletion, KeyDescription, KeySpec, Secret, SignOp, Signature,
    read_secret,
};
use openssl::ec::EcKey;
use openssl::pkey::{PKey, Private};
use serde::Deserialize;

pub use convert::spki;
/// The OpenPGP implementation this crate uses (LGPL-2.0-or-later; see NOTICE).
pub use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::cert::prelude::*;
use openpgp::packet::key::{KeyParts, KeyRole};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::types::RevocationStatus;

/// The `[[backend]]` settings of a `pgp` backend.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgpSettings {
    /// The secret keyring: one or more TSKs, armored or binary (mode 0600).
    pub keyring: PathBuf,
    /// Serve only this key: the fingerprint (or key id) of a certificate or of a signing subkey.
    pub fingerprint: Option<String>,
    /// An environment variable holding the passphrase of protected secret keys.
    pub passphrase_env: Option<String>,
    /// A file (mode 0600) holding the passphrase of protected secret keys.
    pub passphrase_file: Option<PathBuf>,
}

/// One signing key, unlocked.
struct PgpKey {
    /// The signing key's fingerprint, upper-case hex.
    reference: String,
    /// Other names: the certificate's fingerprint and both key ids.
    aliases: Vec<String>,
    spec: KeySpec,
    public_key_der: Vec<u8>,
    /// The certificate without secrets, binary.
    certificate: Vec<u8>,
    private: PKey<Private>,
    ec: Option<EcKey<Private>>,
}

impl fmt::Debug for PgpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgpKey")
            .field("reference", &self.reference)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// Keys from an OpenPGP secret keyring as a backend.
#[derive(Debug)]
pub struct PgpBackend {
    keyring: PathBuf,
    keys: Vec<Arc<PgpKey>>,
}

/// Upper-case hex without spaces or a `0x` prefix.
fn normalize(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_whitespace()).collect();
    let name = name
        .strip_prefix("0x")
        .or_else(|| name.strip_prefix("0X"))
        .unwrap_or(&name);
    name.to_ascii_uppercase()
}

/// Why a certificate cannot be used now, in words: not valid under the standard policy,
/// revoked or expired. `None` when it is fine.
pub fn certificate_problem(cert: &Cert) -> Option<String> {
    let policy = StandardPolicy::new();
    let fingerprint = cert.fingerprint().to_hex();
    let valid = match cert.with_policy(&policy, None) {
        Ok(valid) => valid,
        Err(e) => {
            return Some(format!(
                "the OpenPGP certificate {fingerprint} is not valid under the standard policy: {e}"
            ));
        }
    };
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        return Some(format!(
            "the OpenPGP certificate {fingerprint} is revoked; make a new one"
        ));
    }
    if valid.alive().is_err() {
        let when = valid
            .primary_key()
            .key_expiration_time()
            .map(|t| format!(" on {}", humantime(t)))
            .unwrap_or_default();
        return Some(format!(
            "the OpenPGP certificate {fingerprint} expired{when}; extend it (`gpg --quick-set-expire`) or make a new one"
        ));
    }
    None
}

/// Seconds since the epoch, for messages (no date crate needed).
fn humantime(time: std::time::SystemTime) -> String {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => format!("unix time {}", d.as_secs()),
        Err(_) => "before 1970".into(),
    }
}

/// Why [`check_certificate_for`] refuses a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateError {
    /// Not a certificate, not valid under the standard policy, or not one for this key.
    Invalid(String),
    /// A certificate for this key that cannot be used now: expired or revoked.
    NotValidNow(String),
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateError::Invalid(m) | CertificateError::NotValidNow(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CertificateError {}

/// Checks that the primary key or a signing subkey of `certificate` (binary or armored) is the
/// key `public_key_der` (a SubjectPublicKeyInfo) and, with `now_valid`, that the certificate
/// and that key are valid now (not expired, not revoked). Returns the certificate, binary, and
/// its fingerprint.
pub fn check_certificate_for(
    certificate: &[u8],
    public_key_der: &[u8],
    now_valid: bool,
) -> Result<(Vec<u8>, String), CertificateError> {
    use CertificateError::{Invalid, NotValidNow};
    let cert = Cert::from_bytes(certificate)
        .map_err(|e| Invalid(format!("this is not an OpenPGP certificate: {e}")))?;
    if cert.is_tsk() {
        return Err(Invalid(
            "the certificate carries secret key material; attach the public certificate only"
                .into(),
        ));
    }
    let policy = StandardPolicy::new();
    if now_valid
        && cert.with_policy(&policy, None).is_ok()
        && let Some(problem) = certificate_problem(&cert)
    {
        return Err(NotValidNow(problem));
    }
    let valid = cert.with_policy(&policy, None).map_err(|e| {
        Invalid(format!(
            "the OpenPGP certificate {} is not valid under the standard policy: {e}",
            cert.fingerprint().to_hex()
        ))
    })?;
    let mut found_unusable = None;
    for key in valid.keys() {
        let Ok((_, der)) = spki(key.key()) else {
            continue;
        };
        if der != public_key_der {
            continue;
        }
        if key.for_signing() && (!now_valid || key.alive().is_ok()) {
            if now_valid && let RevocationStatus::Revoked(_) = key.revocation_status() {
                found_unusable = Some(NotValidNow(format!(
                    "the key {} is revoked in the certificate",
                    key.key().fingerprint().to_hex()
                )));
                continue;
            }
            let bytes = cert.to_vec().map_err(|e| Invalid(e.to_string()))?;
            return Ok((bytes, cert.fingerprint().to_hex()));
        }
        found_unusable = Some(Invalid(format!(
            "the key {} is in the certificate but is not a live signing key (key flags, expiry)",
            key.key().fingerprint().to_hex()
        )));
    }
    Err(found_unusable.unwrap_or_else(|| {
        Invalid(format!(
            "neither the primary key nor a signing subkey of the OpenPGP certificate {} is this key",
            cert.fingerprint().to_hex()
        ))
    }))
}

impl PgpBackend {
    /// Reads the keyring and the passphrase, and unlocks the signing keys.
    pub fn new(settings: PgpSettings) -> Result<Self, BackendError> {
        let passphrase = read_secret(
            "passphrase",
            settings.passphrase_env.as_deref(),
            settings.passphrase_file.as_deref(),
        )?;
        let keyring = settings.keyring;
        let bytes = read_keyring(&keyring)?;
        let wanted = settings.fingerprint.as_deref().map(normalize);
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        let parser = CertParser::from_bytes(&bytes[..]).map_err(|e| {
            BackendError::InvalidInput(format!(
                "the keyring {} is not an OpenPGP keyring: {e}",
                keyring.display()
            ))
        })?;
        for cert in parser {
            let cert = cert.map_err(|e| {
                BackendError::InvalidInput(format!(
                    "cannot parse the keyring {}: {e}",
                    keyring.display()
                ))
            })?;
            match load_cert(&cert, wanted.as_deref(), passphrase.as_ref()) {
                Ok(Some(key)) => keys.push(Arc::new(key)),
                Ok(None) => {}
                Err(e) => {
                    if wanted.is_some() {
                        return Err(e);
                    }
                    tracing::warn!(keyring = %keyring.display(), "skipping certificate: {e}");
                    problems.push(e.to_string());
                }
            }
        }
        if keys.is_empty() {
            let why = if let Some(wanted) = &wanted {
                format!("no certificate or signing subkey with fingerprint {wanted}")
            } else if problems.is_empty() {
                "no certificate with a secret signing key".to_string()
            } else {
                problems.join("; ")
            };
            return Err(BackendError::InvalidInput(format!(
                "the keyring {} offers no signing key: {why}",
                keyring.display()
            )));
        }
        Ok(PgpBackend { keyring, keys })
    }

    /// The key `reference` names: a signing key fingerprint, a certificate fingerprint or a key
    /// id.
    fn key(&self, reference: &str) -> Result<Arc<PgpKey>, BackendError> {
        let name = normalize(reference);
        self.keys
            .iter()
            .find(|k| k.reference == name || k.aliases.contains(&name))
            .cloned()
            .ok_or_else(|| {
                BackendError::NotFound(format!(
                    "no signing key {reference} in the keyring {}; `keyward keys list` shows the keys it offers",
                    self.keyring.display()
                ))
            })
    }

    fn describe(key: &PgpKey) -> KeyDescription {
        KeyDescription {
            reference: key.reference.clone(),
            spec: key.spec,
            public_key_der: key.public_key_der.clone(),
            version: None,
            openpgp_certificate: Some(key.certificate.clone()),
            attributes: Default::default(),
            algorithms: Vec::new(),
        }
    }
}

fn read_keyring(path: &Path) -> Result<Vec<u8>, BackendError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        BackendError::InvalidInput(format!("cannot open the OpenPGP keyring {shown}: {e}"))
    })?;
    check_private_mode(&meta, path, "OpenPGP keyring")?;
    std::fs::read(path).map_err(|e| {
        BackendError::InvalidInput(format!("cannot read the OpenPGP keyring {shown}: {e}"))
    })
}

/// The signing key of one certificate, unlocked; `None` when `wanted` names another certificate.
fn load_cert(
    cert: &Cert,
    wanted: Option<&str>,
    passphrase: Option<&Secret>,
) -> Result<Option<PgpKey>, BackendError> {
    let cert_fpr = cert.fingerprint().to_hex();
    fn names<P: KeyParts, R: KeyRole>(key: &openpgp::packet::Key<P, R>) -> [String; 2] {
        [key.fingerprint().to_hex(), key.keyid().to_hex()]
    }
    let cert_named = wanted.is_some_and(|w| w == cert_fpr || w == cert.keyid().to_hex());
    let key_named = |fpr: &[String; 2]| wanted.is_some_and(|w| fpr.contains(&w.to_string()));
    if let Some(w) = wanted
        && !cert_named
        && !cert.keys().any(|k| names(k.key()).contains(&w.to_string()))
    {
        return Ok(None);
    }
    // Say plainly when no key of the certificate has a type keyward can use (the policy check
    // below would only say that no binding signature verifies).
    if let Err(e) = spki(cert.primary_key().key())
        && !cert.keys().subkeys().any(|k| spki(k.key()).is_ok())
    {
        return Err(BackendError::Unsupported(e));
    }
    if let Some(problem) = certificate_problem(cert) {
        return Err(BackendError::InvalidInput(problem));
    }
    let policy = StandardPolicy::new();
    let valid = cert
        .with_policy(&policy, None)
        .map_err(|e| BackendError::InvalidInput(e.to_string()))?;
    let mut candidates = valid
        .keys()
        .for_signing()
        .alive()
        .revoked(false)
        .secret()
        .filter(|k| wanted.is_none() || cert_named || key_named(&names(k.key())));
    let Some(chosen) = candidates.next() else {
        return Err(BackendError::InvalidInput(match wanted {
            Some(w) if !cert_named => format!(
                "the key {w} of the OpenPGP certificate {cert_fpr} is not a valid, live signing key with a secret part"
            ),
            _ => format!(
                "the OpenPGP certificate {cert_fpr} has no valid, live signing key with a secret part"
            ),
        }));
    };
    let key = chosen.key().clone().role_into_unspecified();
    let fingerprint = key.fingerprint().to_hex();
    let key = if key.secret().is_encrypted() {
        let Some(passphrase) = passphrase else {
            return Err(BackendError::InvalidInput(format!(
                "the OpenPGP key {fingerprint} is protected by a passphrase; set passphrase_env or passphrase_file"
            )));
        };
        let password = openpgp::crypto::Password::from(passphrase.expose());
        key.decrypt_secret(&password).map_err(|_| {
            BackendError::PermissionDenied(format!(
                "the passphrase does not unlock the OpenPGP key {fingerprint}; check passphrase_env or passphrase_file"
            ))
        })?
    } else {
        key
    };
    let unlocked = convert::unlock(&key)?;
    let public_key_der = unlocked.private.public_key_to_der().map_err(|e| {
        BackendError::Internal(format!("cannot encode the OpenPGP key {fingerprint}: {e}"))
    })?;
    let certificate = cert
        .clone()
        .strip_secret_key_material()
        .to_vec()
        .map_err(|e| {
            BackendError::Internal(format!(
                "cannot encode the OpenPGP certificate {cert_fpr}: {e}"
            ))
        })?;
    tracing::debug!(key = %fingerprint, certificate = %cert_fpr, spec = %unlocked.spec, "loaded OpenPGP signing key");
    Ok(Some(PgpKey {
        aliases: vec![cert_fpr, cert.keyid().to_hex(), key.keyid().to_hex()],
        reference: fingerprint,
        spec: unlocked.spec,
        public_key_der,
        certificate,
        private: unlocked.private,
        ec: unlocked.ec,
    }))
}

/// Signs `op` (a digest for ECDSA and RSA, the message for Ed25519) with `key`
/// ([`keyward_plugin_api::softkey::sign`]).
fn sign(key: &PgpKey, op: SignOp<'_>) -> Result<Signature, BackendError> {
    keyward_plugin_api::softkey::sign(key.spec, &key.private, key.ec.as_ref(), None, op)
}

#[async_trait]
impl Backend for PgpBackend {
    fn backend_type(&self) -> &str {
        "pgp"
    }

    async fn delete_key(&self, reference: &str) -> Result<Deletion, BackendError> {
        Err(BackendError::Unsupported(format!(
            "the pgp backend serves the keys of its keyring file and never changes it: remove key {reference} from the keyring (`gpg --delete-secret-keys {reference}`, then export the keyring again), then reload keywardd"
        )))
    }

    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
        Ok(self.keys.iter().map(|k| Self::describe(k)).collect())
    }

    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
        Ok(Self::describe(&*self.key(reference)?))
    }

    /// A certificate's fingerprint, either key id, any case, with or without `0x`: the
    /// signing key's fingerprint.
    async fn canonical_reference(&self, reference: &str) -> Result<Option<String>, BackendError> {
        match self.key(reference) {
            Ok(key) => Ok(Some(key.reference.clone())),
            Err(BackendError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
        let key = self.key(reference)?;
        if key.spec.rsa_bits().is_some() {
            // RSA private operations take milliseconds: keep them off the async workers.
            let op = op.to_owned();
            tokio::task::spawn_blocking(move || sign(&key, op.as_op()))
                .await
                .map_err(|e| BackendError::Internal(format!("signing task failed: {e}")))?
        } else {
            sign(&key, op)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use keyward_plugin_api::verify::verify_signature;
    use openpgp::cert::CipherSuite;
    use openpgp::serialize::SerializeInto;

    use super::*;

    fn keyring(
        dir: &Path,
        name: &str,
        suite: CipherSuite,
        password: Option<&str>,
    ) -> (PathBuf, Cert) {
        let (cert, _) = CertBuilder::general_purpose(Some(format!("{name} <{name}@example.com>")))
            .set_cipher_suite(suite)
            .set_password(password.map(Into::into))
            .generate()
            .expect("generate a test key");
        let path = dir.join(format!("{name}.tsk"));
        std::fs::write(&path, cert.as_tsk().armored().to_vec().unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (path, cert)
    }

    #[tokio::test]
    async fn every_supported_suite_loads_signs_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "hunter2\n").unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let suites = [
            (CipherSuite::Cv25519, KeySpec::Ed25519),
            (CipherSuite::P256, KeySpec::EcP256),
            (CipherSuite::P384, KeySpec::EcP384),
            (CipherSuite::P521, KeySpec::EcP521),
            (CipherSuite::RSA2k, KeySpec::Rsa2048),
        ];
        let mut spkis = Vec::new();
        for (n, (suite, spec)) in suites.into_iter().enumerate() {
            let (path, cert) = keyring(dir.path(), &format!("k{n}"), suite, Some("hunter2"));
            let backend = PgpBackend::new(PgpSettings {
                keyring: path,
                passphrase_file: Some(pass.clone()),
                ..PgpSettings::default()
            })
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
            let keys = backend.list_keys().await.unwrap();
            assert_eq!(keys.len(), 1);
            let key = &keys[0];
            assert_eq!(key.spec, spec);
            // general_purpose makes a certification-only primary and a signing subkey.
            let policy = StandardPolicy::new();
            let valid = cert.with_policy(&policy, None).unwrap();
            let signing = valid.keys().subkeys().for_signing().next().unwrap();
            assert_eq!(key.reference, signing.key().fingerprint().to_hex());
            let by_cert = backend
                .describe_key(&cert.fingerprint().to_hex().to_lowercase())
                .await
                .unwrap();
            assert_eq!(by_cert.reference, key.reference);
            for spelling in [
                format!("0x{}", cert.fingerprint().to_hex().to_lowercase()),
                cert.keyid().to_hex(),
                key.reference.to_lowercase(),
            ] {
                assert_eq!(
                    backend.canonical_reference(&spelling).await.unwrap(),
                    Some(key.reference.clone()),
                    "{spelling}"
                );
            }
            assert_eq!(
                backend.canonical_reference("0xDEADBEEF").await.unwrap(),
                None
            );
            let certificate = key.openpgp_certificate.as_deref().unwrap();
            assert!(!Cert::from_bytes(certificate).unwrap().is_tsk());
            check_certificate_for(certificate, &key.public_key_der, true).unwrap();
            for &algorithm in spec.algorithms() {
                let data = vec![7u8; algorithm.hash().map_or(100, |h| h.digest_len())];
                let op = match algorithm.hash() {
                    Some(_) => SignOp::prehashed(algorithm, &data).unwrap(),
                    None => SignOp::ed25519(&data),
                };
                let signature = backend.sign(&key.reference, op).await.unwrap();
                verify_signature(
                    &key.public_key_der,
                    op,
                    &signature.bytes,
                    signature.ecdsa_format,
                )
                .unwrap_or_else(|e| panic!("{spec} {algorithm}: {e}"));
            }
            spkis.push((certificate.to_vec(), key.public_key_der.clone()));
        }
        let err = check_certificate_for(&spkis[0].0, &spkis[1].1, true).unwrap_err();
        assert!(
            matches!(&err, CertificateError::Invalid(m) if m.contains("is this key")),
            "{err:?}"
        );
    }

    #[test]
    fn expired_or_revoked_certificates_are_not_valid_now() {
        let day = std::time::Duration::from_secs(86_400);
        let (cert, _) = CertBuilder::general_purpose(Some("old <old@example.com>"))
            .set_cipher_suite(CipherSuite::P256)
            .set_creation_time(std::time::SystemTime::now() - 10 * day)
            .set_validity_period(Some(day))
            .generate()
            .expect("generate");
        let public = cert.clone().strip_secret_key_material();
        let bytes = public.to_vec().unwrap();
        let signing = |cert: &Cert| {
            let policy = StandardPolicy::new();
            let key = cert
                .keys()
                .with_policy(&policy, None)
                .for_signing()
                .next()
                .expect("a signing key (expired or not)");
            spki(key.key()).expect("an SPKI").1
        };
        let der = signing(&public);
        let err = check_certificate_for(&bytes, &der, true).unwrap_err();
        assert!(
            matches!(&err, CertificateError::NotValidNow(m) if m.contains("expired")),
            "{err:?}"
        );
        // Not checked for validity now, it is the key's certificate.
        check_certificate_for(&bytes, &der, false).expect("the key's certificate");

        let (fresh, revocation_of_fresh) =
            CertBuilder::general_purpose(Some("gone <gone@example.com>"))
                .set_cipher_suite(CipherSuite::P256)
                .generate()
                .expect("generate");
        let (revoked, _) = fresh
            .strip_secret_key_material()
            .insert_packets(revocation_of_fresh)
            .expect("insert the revocation");
        let der = signing(&revoked);
        let err = check_certificate_for(&revoked.to_vec().unwrap(), &der, true).unwrap_err();
        assert!(
            matches!(&err, CertificateError::NotValidNow(m) if m.contains("revoked")),
            "{err:?}"
        );
    }

    #[test]
    fn passphrase_errors_name_the_key_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (path, cert) = keyring(dir.path(), "locked", CipherSuite::P256, Some("hunter2"));
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "wrong horse").unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let settings = PgpSettings {
            keyring: path.clone(),
            passphrase_file: Some(pass),
            ..PgpSettings::default()
        };
        let err = PgpBackend::new(settings).unwrap_err().to_string();
        assert!(err.contains("the passphrase does not unlock"), "{err}");
        assert!(!err.contains("wrong horse") && !err.contains("hunter2"));
        let none = PgpBackend::new(PgpSettings {
            keyring: path,
            ..PgpSettings::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            none.contains("set passphrase_env or passphrase_file"),
            "{none}"
        );
        let wanted = PgpBackend::new(PgpSettings {
            keyring: keyring(dir.path(), "open", CipherSuite::P256, None).0,
            fingerprint: Some(cert.fingerprint().to_hex()),
            ..PgpSettings::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            wanted.contains("no certificate or signing subkey"),
            "{wanted}"
        );
        assert_eq!(normalize(" 0xab cd "), "ABCD");
    }
}
