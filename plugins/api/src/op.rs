//! [`SignOp`]: what a backend is asked to sign, valid by construction.
//!
//! A signature request is checked once, where it enters a process (the daemon's request
//! parsing, the plugin server when a wire request arrives): the algorithm's input kind and, for
//! a digest, its length against the algorithm's hash. After that the type carries the proof, so
//! a backend never checks the shape of its input again:
//!
//! - [`SignOp::Prehashed`]: RSA or ECDSA over a **digest** already computed with the
//!   algorithm's hash ([`Prehashed::digest`] has exactly [`HashAlgorithm::digest_len`] bytes).
//!   The backend must not hash it again.
//! - [`SignOp::Ed25519`]: pure Ed25519 over the **message** itself (RFC 8032, no pre-hash).
//!
//! Whether the algorithm fits a particular key (an ECDSA algorithm for an RSA key) is not part
//! of the type: only the holder of the key knows its spec. The daemon checks it against the key
//! it resolved before it calls a backend.

use std::fmt;

use crate::{HashAlgorithm, SignatureAlgorithm};

/// The input of a sign request as it arrives, before it is checked: the caller's `digest` or
/// `message` field. Turn it into a [`SignOp`] with [`SignOp::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInput<'a> {
    /// Bytes the caller says are a digest (RSA and ECDSA take one).
    Digest(&'a [u8]),
    /// Bytes the caller says are the message itself (pure Ed25519 takes one).
    Message(&'a [u8]),
}

/// A signature operation a backend can carry out as it is: see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignOp<'a> {
    /// RSA (PKCS#1 v1.5 or PSS with salt = hash length) or ECDSA over a digest.
    Prehashed(Prehashed<'a>),
    /// Pure Ed25519 over the message (any length; the daemon bounds it).
    Ed25519 {
        /// The message itself, not a digest of it.
        message: &'a [u8],
    },
}

/// An RSA or ECDSA algorithm with a digest of exactly its hash's length. Only
/// [`SignOp::prehashed`] (and [`SignOp::new`]) make one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prehashed<'a> {
    algorithm: SignatureAlgorithm,
    hash: HashAlgorithm,
    digest: &'a [u8],
}

impl<'a> Prehashed<'a> {
    /// The RSA or ECDSA algorithm (never [`SignatureAlgorithm::Ed25519`]).
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// The hash the digest was computed with (the algorithm's).
    pub fn hash(&self) -> HashAlgorithm {
        self.hash
    }

    /// The digest: `hash().digest_len()` bytes, already hashed by the caller.
    pub fn digest(&self) -> &'a [u8] {
        self.digest
    }
}

/// Why a sign request's input does not fit its algorithm. The messages are for the caller and
/// say what to send instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignOpError {
    /// A digest whose length is not the hash's.
    #[error("{algorithm} needs a {}-byte {} digest, got {got} bytes", .hash.digest_len(), .hash.name())]
    DigestLength {
        /// The algorithm asked for.
        algorithm: SignatureAlgorithm,
        /// Its hash.
        hash: HashAlgorithm,
        /// The length received.
        got: usize,
    },
    /// A message for an algorithm that signs a digest.
    #[error("{algorithm} signs a digest: hash the data with {} and send the digest", .hash.name())]
    MessageForDigest {
        /// The algorithm asked for.
        algorithm: SignatureAlgorithm,
        /// The hash to compute.
        hash: HashAlgorithm,
    },
    /// A digest for pure Ed25519.
    #[error(
        "ed25519 signs the message itself, not a digest: send the message (pure Ed25519 has no pre-hashed form here)"
    )]
    DigestForEd25519,
}

impl<'a> SignOp<'a> {
    /// Checks `input` against `algorithm`: a digest of the hash's length for RSA and ECDSA, a
    /// message for Ed25519.
    pub fn new(algorithm: SignatureAlgorithm, input: SignInput<'a>) -> Result<Self, SignOpError> {
        match (algorithm.hash(), input) {
            (Some(_), SignInput::Digest(digest)) => Self::prehashed(algorithm, digest),
            (Some(hash), SignInput::Message(_)) => {
                Err(SignOpError::MessageForDigest { algorithm, hash })
            }
            (None, SignInput::Message(message)) => Ok(SignOp::Ed25519 { message }),
            (None, SignInput::Digest(_)) => Err(SignOpError::DigestForEd25519),
        }
    }

    /// `algorithm` (RSA or ECDSA) over `digest`, which must be as long as its hash's output.
    pub fn prehashed(algorithm: SignatureAlgorithm, digest: &'a [u8]) -> Result<Self, SignOpError> {
        let Some(hash) = algorithm.hash() else {
            return Err(SignOpError::DigestForEd25519);
        };
        if digest.len() != hash.digest_len() {
            return Err(SignOpError::DigestLength {
                algorithm,
                hash,
                got: digest.len(),
            });
        }
        Ok(SignOp::Prehashed(Prehashed {
            algorithm,
            hash,
            digest,
        }))
    }

    /// Pure Ed25519 over `message`.
    pub fn ed25519(message: &'a [u8]) -> Self {
        SignOp::Ed25519 { message }
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        match self {
            SignOp::Prehashed(prehashed) => prehashed.algorithm,
            SignOp::Ed25519 { .. } => SignatureAlgorithm::Ed25519,
        }
    }

    /// The bytes to sign: the digest ([`SignOp::Prehashed`]) or the message
    /// ([`SignOp::Ed25519`]).
    pub fn bytes(&self) -> &'a [u8] {
        match self {
            SignOp::Prehashed(prehashed) => prehashed.digest,
            SignOp::Ed25519 { message } => message,
        }
    }

    /// The input as it would travel on the wire.
    pub fn input(&self) -> SignInput<'a> {
        match self {
            SignOp::Prehashed(prehashed) => SignInput::Digest(prehashed.digest),
            SignOp::Ed25519 { message } => SignInput::Message(message),
        }
    }

    /// A copy that owns its bytes, for work moved to another thread (RSA on the blocking pool).
    pub fn to_owned(&self) -> OwnedSignOp {
        OwnedSignOp {
            algorithm: self.algorithm(),
            bytes: self.bytes().to_vec(),
        }
    }
}

impl fmt::Display for SignOp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignOp::Prehashed(p) => {
                write!(f, "{} over a {}-byte digest", p.algorithm, p.digest.len())
            }
            SignOp::Ed25519 { message } => {
                write!(f, "ed25519 over a {}-byte message", message.len())
            }
        }
    }
}

/// A [`SignOp`] that owns its bytes (made by [`SignOp::to_owned`], so already valid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedSignOp {
    algorithm: SignatureAlgorithm,
    bytes: Vec<u8>,
}

impl OwnedSignOp {
    /// The operation, borrowing the bytes.
    pub fn as_op(&self) -> SignOp<'_> {
        match self.algorithm.hash() {
            Some(hash) => SignOp::Prehashed(Prehashed {
                algorithm: self.algorithm,
                hash,
                digest: &self.bytes,
            }),
            None => SignOp::Ed25519 {
                message: &self.bytes,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fitting_inputs_make_an_operation() {
        use SignatureAlgorithm::*;
        let d32 = [1u8; 32];
        let op = SignOp::new(EcdsaSha256, SignInput::Digest(&d32)).unwrap();
        assert_eq!(op.algorithm(), EcdsaSha256);
        assert_eq!(op.bytes(), &d32);
        assert!(matches!(op, SignOp::Prehashed(p) if p.hash() == HashAlgorithm::Sha256));
        assert_eq!(op.to_owned().as_op(), op);

        let err = SignOp::new(RsaPssSha384, SignInput::Digest(&d32)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rsa-pss-sha384 needs a 48-byte sha384 digest, got 32 bytes"
        );
        let err = SignOp::new(EcdsaSha512, SignInput::Message(b"hi")).unwrap_err();
        assert!(
            err.to_string().contains("hash the data with sha512"),
            "{err}"
        );
        assert_eq!(
            SignOp::new(Ed25519, SignInput::Digest(&d32)),
            Err(SignOpError::DigestForEd25519)
        );
        assert_eq!(
            SignOp::prehashed(Ed25519, &d32),
            Err(SignOpError::DigestForEd25519)
        );
        let op = SignOp::new(Ed25519, SignInput::Message(b"message")).unwrap();
        assert_eq!(op, SignOp::ed25519(b"message"));
        assert_eq!(op.input(), SignInput::Message(b"message"));
        assert_eq!(op.to_owned().as_op(), op);
    }
}
