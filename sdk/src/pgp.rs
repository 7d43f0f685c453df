//! OpenPGP signatures and certificates from agent keys, made with sequoia-openpgp (feature
//! `pgp`; sequoia is LGPL-2.0-or-later, see NOTICE) without touching a private key.
//!
//! [`AgentSigner`] implements sequoia's [`crypto::Signer`](openpgp::crypto::Signer) over the
//! agent's `Sign`: sequoia hashes, the agent signs the digest (ECDSA with the curve's hash,
//! RSA PKCS#1 v1.5) or, for Ed25519 (OpenPGP v4 EdDSA signs the hash as the message), signs the
//! digest bytes as a pure Ed25519 message.
//!
//! - [`create_certificate`] makes an OpenPGP certificate for any agent key: the primary key is
//!   the agent key (its creation time is the one of an already attached certificate, so the
//!   fingerprint stays the same, or the one given, or now), with a direct-key signature and a
//!   positive certification per user id, all signed through the agent.
//! - [`certificate`] fetches the certificate the agent has for a key and checks it is usable.
//! - [`sign_detached`] makes a detached signature over data, binary or ASCII-armored.
//!
//! Like [`x509::AgentKey`](crate::x509::AgentKey), signing bridges sequoia's synchronous call to
//! the async client: inside a multi-thread tokio runtime with `block_in_place`, outside one
//! with the handle the signer was made on.
//!
//! This crate selects no sequoia crypto backend; the binary that uses it does (feature
//! `pgp-crypto-nettle` or `pgp-crypto-openssl`, or its own dependency on sequoia-openpgp).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::Packet;
use openpgp::crypto::mpi;
use openpgp::packet::key::{Key4, PrimaryRole, PublicParts, UnspecifiedRole};
use openpgp::packet::signature::SignatureBuilder;
use openpgp::packet::{Key, UserID};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, Message, Signer as StreamSigner};
use openpgp::types::{
    Curve, Features, HashAlgorithm, KeyFlags, PublicKeyAlgorithm, RevocationStatus, SignatureType,
};
use spki::SubjectPublicKeyInfoRef;
use spki::der::Decode;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::{Client, Error, KeySpec, SignOptions, SignatureAlgorithm, SignatureFormat};

fn pgp_error(key_id: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("key {key_id:?}: {what}: {e}"))
}

/// The OpenPGP public key for an agent key: `spki_der` (a SubjectPublicKeyInfo) of `spec`,
/// created at `creation_time`. The creation time is part of the fingerprint.
pub fn key_from_spki(
    key_id: &str,
    spec: KeySpec,
    spki_der: &[u8],
    creation_time: SystemTime,
) -> Result<Key<PublicParts, PrimaryRole>, Error> {
    let info = SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| {
        Error::Verification(format!(
            "key {key_id:?}: the agent's public key is not a valid SubjectPublicKeyInfo ({e})"
        ))
    })?;
    let bits = info.subject_public_key.raw_bytes();
    let curve = match spec {
        KeySpec::EcP256 => Some(Curve::NistP256),
        KeySpec::EcP384 => Some(Curve::NistP384),
        KeySpec::EcP521 => Some(Curve::NistP521),
        _ => None,
    };
    let key: Key4<PublicParts, PrimaryRole> = match spec {
        KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => Key4::new(
            creation_time,
            PublicKeyAlgorithm::ECDSA,
            mpi::PublicKey::ECDSA {
                curve: curve.expect("an EC spec"),
                q: mpi::MPI::new(bits),
            },
        ),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            use rsa::pkcs1::DecodeRsaPublicKey;
            use rsa::traits::PublicKeyParts;
            let rsa = rsa::RsaPublicKey::from_pkcs1_der(bits).map_err(|e| {
                Error::Verification(format!("key {key_id:?}: the RSA public key is malformed ({e})"))
            })?;
            Key4::import_public_rsa(&rsa.e().to_bytes_be(), &rsa.n().to_bytes_be(), creation_time)
        }
        KeySpec::Ed25519 => Key4::import_public_ed25519(bits, creation_time),
        KeySpec::Unspecified => {
            return Err(Error::InvalidInput(format!(
                "key {key_id:?} has a key type OpenPGP cannot express here; OpenPGP certificates need an ECDSA P-256/P-384/P-521, RSA or Ed25519 key"
            )));
        }
    }
    .map_err(|e| pgp_error(key_id, "cannot make an OpenPGP key", e))?;
    Ok(key.into())
}

/// The raw public key bytes that identify a key across OpenPGP encodings (legacy EdDSA vs v6
/// Ed25519 differ only in framing).
fn public_identity(mpis: &mpi::PublicKey) -> Option<Vec<u8>> {
    match mpis {
        mpi::PublicKey::RSA { e, n } => Some([b"rsa", n.value(), b"/", e.value()].concat()),
        mpi::PublicKey::ECDSA { curve, q } => {
            Some([curve.to_string().as_bytes(), b"/", q.value()].concat())
        }
        mpi::PublicKey::EdDSA {
            curve: Curve::Ed25519,
            q,
        } => q
            .value()
            .strip_prefix(&[0x40])
            .map(|a| [b"ed25519/".as_slice(), a].concat()),
        mpi::PublicKey::Ed25519 { a } => Some([b"ed25519/".as_slice(), a].concat()),
        _ => None,
    }
}

/// Signs OpenPGP data with an agent key: sequoia's `crypto::Signer` over the agent's `Sign`.
#[derive(Debug)]
pub struct AgentSigner {
    client: Client,
    key_id: String,
    spec: KeySpec,
    public: Key<PublicParts, UnspecifiedRole>,
    hashes: Vec<HashAlgorithm>,
    handle: Handle,
    purpose: String,
    /// The agent's error from the last failed signature (sequoia's own error is generic).
    last_error: Arc<Mutex<Option<Error>>>,
}

impl AgentSigner {
    /// A signer for `key_id` whose OpenPGP key is `public` (which must be the agent key; the
    /// agent verifies every signature against the key, so a wrong one fails there). Must be
    /// called inside a tokio runtime.
    pub fn new(
        client: &Client,
        key_id: &str,
        spec: KeySpec,
        public: Key<PublicParts, UnspecifiedRole>,
    ) -> Result<AgentSigner, Error> {
        use HashAlgorithm::*;
        let hashes = match spec {
            KeySpec::EcP256 => vec![SHA256],
            KeySpec::EcP384 => vec![SHA384],
            KeySpec::EcP521 => vec![SHA512],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                vec![SHA512, SHA384, SHA256]
            }
            KeySpec::Ed25519 => vec![SHA512, SHA256],
            KeySpec::Unspecified => {
                return Err(Error::InvalidInput(format!(
                    "key {key_id:?} has a key type OpenPGP cannot express"
                )));
            }
        };
        Ok(AgentSigner {
            client: client.clone(),
            key_id: key_id.to_string(),
            spec,
            public,
            hashes,
            handle: Handle::current(),
            purpose: String::new(),
            last_error: Arc::default(),
        })
    }

    /// A signer for `key_id` as the signing key of its OpenPGP certificate (the one the agent
    /// serves; see [`certificate`]).
    pub async fn for_key(client: &Client, key_id: &str) -> Result<AgentSigner, Error> {
        let (cert, public) = certificate(client, key_id).await?;
        let identity = key_from_spki(
            key_id,
            public.info.key_spec(),
            &public.der,
            SystemTime::UNIX_EPOCH,
        )
        .map(|k| public_identity(k.mpis()))?;
        let policy = StandardPolicy::new();
        let valid = cert
            .with_policy(&policy, None)
            .map_err(|e| pgp_error(key_id, "the OpenPGP certificate is not valid", e))?;
        let key = valid
            .keys()
            .for_signing()
            .alive()
            .revoked(false)
            .find(|k| identity.is_some() && public_identity(k.key().mpis()) == identity)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "key {key_id:?}: the OpenPGP certificate {} has no live signing key that is this agent key; make one with `keyward pgp cert create --key {key_id}`",
                    cert.fingerprint().to_hex()
                ))
            })?;
        AgentSigner::new(
            client,
            key_id,
            public.info.key_spec(),
            key.key().clone().role_into_unspecified(),
        )
    }

    /// Sets the purpose recorded in the agent's audit log for each signature.
    pub fn with_purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = purpose.into();
        self
    }

    /// The agent's error behind the last failed signature, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.last_error.lock().expect("last error").take()
    }

    /// Turns a sequoia error into the agent's error when the agent caused it.
    fn explain(&self, e: impl std::fmt::Display, what: &str) -> Error {
        self.take_error()
            .unwrap_or_else(|| pgp_error(&self.key_id, what, e))
    }

    async fn sign_async(
        &self,
        hash: HashAlgorithm,
        digest: &[u8],
    ) -> Result<mpi::Signature, Error> {
        let unsupported = || {
            Error::InvalidInput(format!(
                "key {:?}: the agent cannot sign an OpenPGP {hash} digest with a {} key",
                self.key_id,
                self.spec.as_str_name()
            ))
        };
        let ecdsa = |h| match h {
            HashAlgorithm::SHA256 => Some(SignatureAlgorithm::EcdsaSha256),
            HashAlgorithm::SHA384 => Some(SignatureAlgorithm::EcdsaSha384),
            HashAlgorithm::SHA512 => Some(SignatureAlgorithm::EcdsaSha512),
            _ => None,
        };
        let rsa = |h| match h {
            HashAlgorithm::SHA256 => Some(SignatureAlgorithm::RsaPkcs1Sha256),
            HashAlgorithm::SHA384 => Some(SignatureAlgorithm::RsaPkcs1Sha384),
            HashAlgorithm::SHA512 => Some(SignatureAlgorithm::RsaPkcs1Sha512),
            _ => None,
        };
        let mut options = SignOptions {
            algorithm: None,
            format: SignatureFormat::Raw,
            purpose: self.purpose.clone(),
        };
        match self.spec {
            KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => {
                options.algorithm = Some(ecdsa(hash).ok_or_else(unsupported)?);
                let raw = self
                    .client
                    .sign_digest(&self.key_id, digest, &options)
                    .await?
                    .bytes;
                let (r, s) = raw.split_at(raw.len() / 2);
                Ok(mpi::Signature::ECDSA {
                    r: mpi::MPI::new(r),
                    s: mpi::MPI::new(s),
                })
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                options.algorithm = Some(rsa(hash).ok_or_else(unsupported)?);
                let signature = self
                    .client
                    .sign_digest(&self.key_id, digest, &options)
                    .await?;
                Ok(mpi::Signature::RSA {
                    s: mpi::MPI::new(&signature.bytes),
                })
            }
            KeySpec::Ed25519 => {
                options.algorithm = Some(SignatureAlgorithm::Ed25519);
                let signature = self
                    .client
                    .sign_message(&self.key_id, digest, &options)
                    .await?
                    .bytes;
                let bytes: [u8; 64] = signature.as_slice().try_into().map_err(|_| {
                    Error::Verification(format!(
                        "key {:?}: the agent returned an Ed25519 signature of {} bytes",
                        self.key_id,
                        signature.len()
                    ))
                })?;
                Ok(match self.public.pk_algo() {
                    PublicKeyAlgorithm::Ed25519 => mpi::Signature::Ed25519 { s: Box::new(bytes) },
                    _ => mpi::Signature::EdDSA {
                        r: mpi::MPI::new(&bytes[..32]),
                        s: mpi::MPI::new(&bytes[32..]),
                    },
                })
            }
            KeySpec::Unspecified => Err(unsupported()),
        }
    }
}

impl openpgp::crypto::Signer for AgentSigner {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        &self.public
    }

    fn acceptable_hashes(&self) -> &[HashAlgorithm] {
        &self.hashes
    }

    fn sign(&mut self, hash_algo: HashAlgorithm, digest: &[u8]) -> openpgp::Result<mpi::Signature> {
        let result = match Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(self.sign_async(hash_algo, digest)))
            }
            Ok(_) => Err(Error::InvalidInput(format!(
                "key {:?}: OpenPGP signatures are made through the agent synchronously, which needs a multi-thread tokio runtime; this one is current-thread",
                self.key_id
            ))),
            Err(_) => self.handle.block_on(self.sign_async(hash_algo, digest)),
        };
        result.map_err(|error| {
            let message = error.to_string();
            *self.last_error.lock().expect("last error") = Some(error);
            openpgp::Error::InvalidOperation(message).into()
        })
    }
}

/// Why `cert` cannot be used now (not valid under the standard policy, revoked, expired), in
/// a sentence naming `key_id`; `None` when it is fine.
pub fn certificate_problem(key_id: &str, cert: &Cert) -> Option<String> {
    let policy = StandardPolicy::new();
    let fingerprint = cert.fingerprint().to_hex();
    let valid = match cert.with_policy(&policy, None) {
        Ok(valid) => valid,
        Err(e) => {
            return Some(format!(
                "key {key_id:?}: the OpenPGP certificate {fingerprint} is not valid under the standard policy: {e}"
            ));
        }
    };
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        return Some(format!(
            "key {key_id:?}: the OpenPGP certificate {fingerprint} is revoked; make a new one with `keyward pgp cert create --key {key_id}`"
        ));
    }
    if valid.alive().is_err() {
        return Some(format!(
            "key {key_id:?}: the OpenPGP certificate {fingerprint} has expired; make a new one with `keyward pgp cert create --key {key_id}`"
        ));
    }
    None
}

/// The OpenPGP certificate the agent serves for `key_id` (attached, or from a `pgp` backend),
/// checked to be usable now, with the key's public key.
pub async fn certificate(client: &Client, key_id: &str) -> Result<(Cert, crate::PublicKey), Error> {
    let public = client.public_key(key_id).await?;
    let Some(bytes) = public.openpgp_certificate.as_deref() else {
        return Err(Error::InvalidInput(format!(
            "key {key_id:?} has no OpenPGP certificate; make one with `keyward pgp cert create --key {key_id} --userid \"Name <mail>\"`"
        )));
    };
    let cert = Cert::from_bytes(bytes)
        .map_err(|e| pgp_error(key_id, "the agent's OpenPGP certificate is malformed", e))?;
    if let Some(problem) = certificate_problem(key_id, &cert) {
        return Err(Error::InvalidInput(problem));
    }
    Ok((cert, public))
}

/// How to make a certificate.
#[derive(Clone, Debug, Default)]
pub struct CertificateOptions {
    /// User ids (`Name <mail>`); the first is the primary one. At least one.
    pub userids: Vec<String>,
    /// The key's creation time (part of the fingerprint). `None`: the creation time in the
    /// certificate already attached to the key, if its primary key is this key; else now.
    pub creation_time: Option<SystemTime>,
    /// How long the certificate is valid after its creation; `None`: no expiry.
    pub validity: Option<Duration>,
}

/// Makes an OpenPGP certificate whose primary key is the agent key `key_id`, all its
/// self-signatures made through the agent. It is not attached; see
/// [`Client::attach_openpgp_certificate`].
pub async fn create_certificate(
    client: &Client,
    key_id: &str,
    options: &CertificateOptions,
) -> Result<Cert, Error> {
    if options.userids.is_empty() {
        return Err(Error::InvalidInput(
            "an OpenPGP certificate needs at least one user id (--userid \"Name <mail>\")".into(),
        ));
    }
    let public = client.public_key(key_id).await?;
    let spec = public.info.key_spec();
    let creation_time = match options.creation_time {
        Some(time) => time,
        None => {
            let probe = key_from_spki(key_id, spec, &public.der, SystemTime::UNIX_EPOCH)?;
            let identity = public_identity(probe.mpis());
            public
                .openpgp_certificate
                .as_deref()
                .and_then(|bytes| Cert::from_bytes(bytes).ok())
                .map(|cert| cert.primary_key().key().clone())
                .filter(|primary| identity.is_some() && public_identity(primary.mpis()) == identity)
                .map(|primary| primary.creation_time())
                .unwrap_or_else(SystemTime::now)
        }
    };
    let primary = key_from_spki(key_id, spec, &public.der, creation_time)?;
    let mut signer = AgentSigner::new(
        client,
        key_id,
        spec,
        primary.clone().role_into_unspecified(),
    )?
    .with_purpose("openpgp certificate");
    // Self-signatures must not predate the key.
    let now = SystemTime::now().max(creation_time);
    let flags = KeyFlags::empty().set_certification().set_signing();
    let template = SignatureBuilder::new(SignatureType::DirectKey)
        .set_signature_creation_time(now)
        .and_then(|b| b.set_key_flags(flags))
        .and_then(|b| b.set_features(Features::sequoia()))
        .and_then(|b| {
            b.set_preferred_hash_algorithms(vec![HashAlgorithm::SHA512, HashAlgorithm::SHA256])
        })
        .and_then(|b| {
            b.set_key_validity_period(
                options
                    .validity
                    .map(|v| v + now.duration_since(creation_time).unwrap_or_default()),
            )
        })
        .map_err(|e| pgp_error(key_id, "cannot make the self-signature", e))?;
    let direct = template
        .clone()
        .sign_direct_key(&mut signer, Some(&primary))
        .map_err(|e| signer.explain(e, "the agent could not make the direct-key signature"))?;
    let mut packets: Vec<Packet> = vec![primary.clone().into(), direct.into()];
    let bare = Cert::try_from(vec![Packet::from(primary.clone())])
        .map_err(|e| pgp_error(key_id, "cannot make the certificate", e))?;
    for (n, userid) in options.userids.iter().enumerate() {
        let uid = UserID::from(userid.as_str());
        let builder = template
            .clone()
            .set_type(SignatureType::PositiveCertification)
            .set_primary_userid(n == 0)
            .map_err(|e| pgp_error(key_id, "cannot make the user id binding", e))?;
        let binding = uid
            .bind(&mut signer, &bare, builder)
            .map_err(|e| signer.explain(e, "the agent could not certify the user id"))?;
        packets.push(uid.into());
        packets.push(binding.into());
    }
    let cert = Cert::try_from(packets)
        .map_err(|e| pgp_error(key_id, "cannot assemble the certificate", e))?;
    if let Some(problem) = certificate_problem(key_id, &cert) {
        return Err(Error::Verification(problem));
    }
    Ok(cert)
}

/// A detached OpenPGP signature over `data` by the agent key `key_id` (with the signing key
/// of the certificate the agent serves for it), binary or ASCII-armored.
pub async fn sign_detached(
    client: &Client,
    key_id: &str,
    mut data: impl std::io::Read,
    armor: bool,
) -> Result<Vec<u8>, Error> {
    let signer = AgentSigner::for_key(client, key_id)
        .await?
        .with_purpose("openpgp signature");
    let failed = |e: &dyn std::fmt::Display| pgp_error(key_id, "cannot make the signature", e);
    let mut out = Vec::new();
    let signer_errors = signer.last_error.clone();
    {
        let message = Message::new(&mut out);
        let message = if armor {
            Armorer::new(message)
                .kind(openpgp::armor::Kind::Signature)
                .build()
                .map_err(|e| failed(&e))?
        } else {
            message
        };
        let mut writer = StreamSigner::new(message, signer)
            .map_err(|e| failed(&e))?
            .detached()
            .build()
            .map_err(|e| failed(&e))?;
        std::io::copy(&mut data, &mut writer)
            .map_err(|e| Error::InvalidInput(format!("cannot read the data to sign: {e}")))?;
        if let Err(e) = writer.finalize() {
            if let Some(agent) = signer_errors.lock().expect("signer errors").take() {
                return Err(agent);
            }
            return Err(failed(&e));
        }
    }
    out.flush().ok();
    Ok(out)
}
