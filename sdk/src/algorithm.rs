//! Choosing the agent's signature algorithm from what a caller's own API hands over: a key
//! spec, a hash (or none, for pure Ed25519) and, for RSA, a padding.
//!
//! Front-ends that speak another tool's vocabulary (`sigstore-kms-keyward`: Go `crypto.Hash`
//! numbers; the Go SDK: `crypto.SignerOpts`) go through this one table, and the Go SDK has the
//! same table: `sdk/testdata/vectors.json` holds the answers both must give.

use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::{Error, KeySpec, SignatureAlgorithm};

/// A hash the agent's algorithms use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl HashAlgorithm {
    /// `sha256`, `sha384` or `sha512`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    /// Parses [`HashAlgorithm::name`] (case-insensitive, `sha-256` too).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().replace('-', "").as_str() {
            "sha256" => Some(HashAlgorithm::Sha256),
            "sha384" => Some(HashAlgorithm::Sha384),
            "sha512" => Some(HashAlgorithm::Sha512),
            _ => None,
        }
    }

    /// The digest length in bytes.
    pub fn len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    /// Always false: no hash has an empty digest (for clippy's `len_without_is_empty`).
    pub fn is_empty(self) -> bool {
        false
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlgorithm::Sha256 => Sha256::digest(data).to_vec(),
            HashAlgorithm::Sha384 => Sha384::digest(data).to_vec(),
            HashAlgorithm::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// The hash `algorithm` signs with; `None` for Ed25519 (and the zero value).
    pub fn of(algorithm: SignatureAlgorithm) -> Option<Self> {
        use SignatureAlgorithm::*;
        match algorithm {
            EcdsaSha256 | RsaPssSha256 | RsaPkcs1Sha256 => Some(HashAlgorithm::Sha256),
            EcdsaSha384 | RsaPssSha384 | RsaPkcs1Sha384 => Some(HashAlgorithm::Sha384),
            EcdsaSha512 | RsaPssSha512 | RsaPkcs1Sha512 => Some(HashAlgorithm::Sha512),
            Ed25519 | Unspecified => None,
        }
    }
}

/// The RSA signature padding. PSS always has a salt as long as the hash (the agent's
/// contract).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RsaPadding {
    /// RSASSA-PKCS1-v1_5: what X.509 certificates and sigstore's RSA verifier expect.
    #[default]
    Pkcs1,
    /// RSASSA-PSS with MGF1 of the same hash and salt length = hash length.
    Pss,
}

/// The agent algorithm for a key of `spec` signing a digest of `hash` (`None`: the message
/// itself, pure Ed25519) with `padding` (RSA only; ignored otherwise).
///
/// ECDSA keys take any of the three hashes (a P-384 key signs a SHA-256 digest when asked:
/// cosign does that); Ed25519 takes no hash at all. Anything else is
/// [`Error::InvalidInput`] saying what the key can do.
pub fn algorithm_for(
    spec: KeySpec,
    hash: Option<HashAlgorithm>,
    padding: RsaPadding,
) -> Result<SignatureAlgorithm, Error> {
    use HashAlgorithm::*;
    use SignatureAlgorithm::*;
    let chosen = match (spec, hash) {
        (KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521, Some(hash)) => match hash {
            Sha256 => EcdsaSha256,
            Sha384 => EcdsaSha384,
            Sha512 => EcdsaSha512,
        },
        (KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096, Some(hash)) => {
            match (padding, hash) {
                (RsaPadding::Pkcs1, Sha256) => RsaPkcs1Sha256,
                (RsaPadding::Pkcs1, Sha384) => RsaPkcs1Sha384,
                (RsaPadding::Pkcs1, Sha512) => RsaPkcs1Sha512,
                (RsaPadding::Pss, Sha256) => RsaPssSha256,
                (RsaPadding::Pss, Sha384) => RsaPssSha384,
                (RsaPadding::Pss, Sha512) => RsaPssSha512,
            }
        }
        (KeySpec::Ed25519, None) => Ed25519,
        (KeySpec::Ed25519, Some(hash)) => {
            return Err(Error::InvalidInput(format!(
                "an ed25519 key signs the message itself, not a {} digest: pass the message with no hash",
                hash.name()
            )));
        }
        (KeySpec::Unspecified, _) => {
            return Err(Error::InvalidInput("the key has no key spec".into()));
        }
        (spec, None) => {
            return Err(Error::InvalidInput(format!(
                "a {} key signs a digest: say which hash made it (sha256, sha384 or sha512)",
                spec.name()
            )));
        }
    };
    Ok(chosen)
}
