//! OpenPGP key material <-> OpenSSL keys and SubjectPublicKeyInfo.

use keyward_plugin_api::{BackendError, KeySpec};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::rsa::Rsa;
use sequoia_openpgp as openpgp;
use zeroize::Zeroizing;

use openpgp::crypto::mpi;
use openpgp::packet::Key;
use openpgp::packet::key::{KeyParts, KeyRole, SecretParts, UnspecifiedRole};
use openpgp::types::Curve;

/// What keyward can sign with, in words for error messages.
pub(crate) const SUPPORTED: &str =
    "keyward signs with RSA 2048/3072/4096, ECDSA P-256/P-384/P-521 and Ed25519 OpenPGP keys";

/// An unlocked signing key as OpenSSL objects.
pub(crate) struct Unlocked {
    pub(crate) spec: KeySpec,
    pub(crate) private: PKey<Private>,
    /// The same key as an `EcKey` (ECDSA only), for signing a digest as it is.
    pub(crate) ec: Option<EcKey<Private>>,
}

fn ssl(e: openssl::error::ErrorStack) -> String {
    e.to_string()
}

fn curve_nid(curve: &Curve) -> Option<(Nid, KeySpec)> {
    match curve {
        Curve::NistP256 => Some((Nid::X9_62_PRIME256V1, KeySpec::EcP256)),
        Curve::NistP384 => Some((Nid::SECP384R1, KeySpec::EcP384)),
        Curve::NistP521 => Some((Nid::SECP521R1, KeySpec::EcP521)),
        _ => None,
    }
}

fn rsa_spec(bits: u32) -> Option<KeySpec> {
    match bits {
        2048 => Some(KeySpec::Rsa2048),
        3072 => Some(KeySpec::Rsa3072),
        4096 => Some(KeySpec::Rsa4096),
        _ => None,
    }
}

fn unsupported<P: KeyParts, R: KeyRole>(key: &Key<P, R>, what: &str) -> String {
    format!(
        "the OpenPGP key {} is {what}, which keyward cannot use: {SUPPORTED}",
        key.fingerprint().to_hex()
    )
}

/// The key spec and DER SubjectPublicKeyInfo of an OpenPGP public key.
pub fn spki<P: KeyParts, R: KeyRole>(key: &Key<P, R>) -> Result<(KeySpec, Vec<u8>), String> {
    let (spec, pkey): (KeySpec, PKey<Public>) = match key.mpis() {
        mpi::PublicKey::RSA { e, n } => {
            let rsa = Rsa::from_public_components(
                BigNum::from_slice(n.value()).map_err(ssl)?,
                BigNum::from_slice(e.value()).map_err(ssl)?,
            )
            .map_err(ssl)?;
            let bits = rsa.size() * 8;
            let spec = rsa_spec(bits).ok_or_else(|| unsupported(key, &format!("RSA-{bits}")))?;
            (spec, PKey::from_rsa(rsa).map_err(ssl)?)
        }
        mpi::PublicKey::ECDSA { curve, q } => {
            let (nid, spec) =
                curve_nid(curve).ok_or_else(|| unsupported(key, &format!("ECDSA on {curve}")))?;
            let group = EcGroup::from_curve_name(nid).map_err(ssl)?;
            let mut ctx = BigNumContext::new().map_err(ssl)?;
            let point = EcPoint::from_bytes(&group, q.value(), &mut ctx).map_err(ssl)?;
            let ec = EcKey::from_public_key(&group, &point).map_err(ssl)?;
            (spec, PKey::from_ec_key(ec).map_err(ssl)?)
        }
        mpi::PublicKey::EdDSA { curve, q } => {
            if *curve != Curve::Ed25519 {
                return Err(unsupported(key, &format!("EdDSA on {curve}")));
            }
            let raw = q.value();
            let raw = match raw.split_first() {
                Some((0x40, rest)) if rest.len() == 32 => rest,
                _ => {
                    return Err(format!(
                        "the Ed25519 OpenPGP key {} has a malformed point",
                        key.fingerprint().to_hex()
                    ));
                }
            };
            (
                KeySpec::Ed25519,
                PKey::public_key_from_raw_bytes(raw, Id::ED25519).map_err(ssl)?,
            )
        }
        mpi::PublicKey::Ed25519 { a } => (
            KeySpec::Ed25519,
            PKey::public_key_from_raw_bytes(a, Id::ED25519).map_err(ssl)?,
        ),
        _ => return Err(unsupported(key, &key.pk_algo().to_string())),
    };
    Ok((spec, pkey.public_key_to_der().map_err(ssl)?))
}

/// Turns an unlocked OpenPGP secret key into OpenSSL keys, checking that the secret and the
/// public parts belong together.
pub(crate) fn unlock(key: &Key<SecretParts, UnspecifiedRole>) -> Result<Unlocked, BackendError> {
    let fingerprint = key.fingerprint().to_hex();
    let (spec, public_der) = spki(key).map_err(BackendError::Unsupported)?;
    let openpgp::packet::key::SecretKeyMaterial::Unencrypted(secret) = key.secret() else {
        return Err(BackendError::Internal(format!(
            "the OpenPGP key {fingerprint} is still locked"
        )));
    };
    let unlocked = secret
        .map(|secret| -> Result<Unlocked, String> {
            match (key.mpis(), secret) {
                (mpi::PublicKey::RSA { e, n }, mpi::SecretKeyMaterial::RSA { d, p, q, .. }) => {
                    let n = BigNum::from_slice(n.value()).map_err(ssl)?;
                    let e = BigNum::from_slice(e.value()).map_err(ssl)?;
                    let d = BigNum::from_slice(d.value()).map_err(ssl)?;
                    let p = BigNum::from_slice(p.value()).map_err(ssl)?;
                    let q = BigNum::from_slice(q.value()).map_err(ssl)?;
                    let mut ctx = BigNumContext::new().map_err(ssl)?;
                    let one = BigNum::from_u32(1).map_err(ssl)?;
                    let (mut p1, mut q1) =
                        (BigNum::new().map_err(ssl)?, BigNum::new().map_err(ssl)?);
                    p1.checked_sub(&p, &one).map_err(ssl)?;
                    q1.checked_sub(&q, &one).map_err(ssl)?;
                    let (mut dmp1, mut dmq1, mut iqmp) = (
                        BigNum::new().map_err(ssl)?,
                        BigNum::new().map_err(ssl)?,
                        BigNum::new().map_err(ssl)?,
                    );
                    dmp1.nnmod(&d, &p1, &mut ctx).map_err(ssl)?;
                    dmq1.nnmod(&d, &q1, &mut ctx).map_err(ssl)?;
                    iqmp.mod_inverse(&q, &p, &mut ctx).map_err(ssl)?;
                    let rsa = Rsa::from_private_components(n, e, d, p, q, dmp1, dmq1, iqmp)
                        .map_err(ssl)?;
                    if !rsa.check_key().map_err(ssl)? {
                        return Err("the RSA secret key is inconsistent".into());
                    }
                    Ok(Unlocked {
                        spec,
                        private: PKey::from_rsa(rsa).map_err(ssl)?,
                        ec: None,
                    })
                }
                (mpi::PublicKey::ECDSA { curve, q }, mpi::SecretKeyMaterial::ECDSA { scalar }) => {
                    let (nid, _) = curve_nid(curve).ok_or("unsupported curve")?;
                    let group = EcGroup::from_curve_name(nid).map_err(ssl)?;
                    let mut ctx = BigNumContext::new().map_err(ssl)?;
                    let point = EcPoint::from_bytes(&group, q.value(), &mut ctx).map_err(ssl)?;
                    let scalar = BigNum::from_slice(scalar.value()).map_err(ssl)?;
                    let ec =
                        EcKey::from_private_components(&group, &scalar, &point).map_err(ssl)?;
                    ec.check_key().map_err(ssl)?;
                    Ok(Unlocked {
                        spec,
                        private: PKey::from_ec_key(ec.clone()).map_err(ssl)?,
                        ec: Some(ec),
                    })
                }
                (mpi::PublicKey::EdDSA { .. }, mpi::SecretKeyMaterial::EdDSA { scalar }) => {
                    let seed = Zeroizing::new(scalar.value_padded(32).to_vec());
                    Ok(Unlocked {
                        spec,
                        private: PKey::private_key_from_raw_bytes(&seed, Id::ED25519)
                            .map_err(ssl)?,
                        ec: None,
                    })
                }
                (mpi::PublicKey::Ed25519 { .. }, mpi::SecretKeyMaterial::Ed25519 { x }) => {
                    Ok(Unlocked {
                        spec,
                        private: PKey::private_key_from_raw_bytes(x, Id::ED25519).map_err(ssl)?,
                        ec: None,
                    })
                }
                _ => Err("the secret key material does not fit the public key".into()),
            }
        })
        .map_err(|e| {
            BackendError::InvalidInput(format!("cannot load the OpenPGP key {fingerprint}: {e}"))
        })?;
    let derived = unlocked.private.public_key_to_der().map_err(|e| {
        BackendError::Internal(format!("cannot encode the OpenPGP key {fingerprint}: {e}"))
    })?;
    if derived != public_der {
        return Err(BackendError::InvalidInput(format!(
            "the secret part of the OpenPGP key {fingerprint} does not match its public key; the keyring is damaged"
        )));
    }
    Ok(unlocked)
}
