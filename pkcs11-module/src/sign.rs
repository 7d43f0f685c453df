//! A signing operation, from `C_SignInit` to the request sent to the agent.
//!
//! Mechanisms that hash (`CKM_ECDSA_SHA256`, `CKM_SHA256_RSA_PKCS`, ...) take their data in one
//! `C_Sign` or in any number of `C_SignUpdate` parts, hashed as they come: the state is a hash
//! context, whatever the data's size. The raw mechanisms take one `C_Sign` with a digest
//! (`CKM_ECDSA`, `CKM_RSA_PKCS_PSS`), a DigestInfo (`CKM_RSA_PKCS`) or the message
//! (`CKM_EDDSA`); like SoftHSM, this module answers `CKR_OPERATION_NOT_INITIALIZED` to a
//! `C_SignUpdate` or `C_SignFinal` for those, and to a `C_Sign` after `C_SignUpdate`.

use std::sync::Arc;

use cryptoki_sys::*;
use der::Decode;
use der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef};
use keyward_sdk::SignatureAlgorithm;
use sha2::Digest;

use crate::mechanism::{Hash, SignMechanism};
use crate::objects::AgentKey;

/// The longest message `CKM_EDDSA` signs in one `C_Sign` (the agent takes 64 MiB requests).
pub const MAX_MESSAGE: usize = 16 << 20;

/// What is sent to the agent for one signature.
#[derive(Debug, PartialEq, Eq)]
pub struct SignRequest {
    /// The key id.
    pub key_id: String,
    /// The agent's algorithm.
    pub algorithm: SignatureAlgorithm,
    /// The input.
    pub input: SignInput,
    /// Recorded in the audit log: `pkcs11:<mechanism>`.
    pub purpose: String,
}

/// A digest (RSA, ECDSA) or a message (Ed25519).
#[derive(Debug, PartialEq, Eq)]
pub enum SignInput {
    /// The hash of the data, of the algorithm's hash length.
    Digest(Vec<u8>),
    /// The data itself.
    Message(Vec<u8>),
}

/// An incremental hash.
#[derive(Clone, Debug)]
enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(hash: Hash) -> Self {
        match hash {
            Hash::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Hash::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Hash::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// An active signing operation of a session.
#[derive(Clone, Debug)]
pub struct SignOperation {
    key: Arc<AgentKey>,
    mechanism: SignMechanism,
    /// For hashing mechanisms: the hash of the parts so far.
    hasher: Option<Hasher>,
    /// Whether `C_SignUpdate` was called (then only `C_SignFinal` may end it).
    multi_part: bool,
}

impl SignOperation {
    /// Starts signing with `key`: the key must be of the mechanism's family
    /// (`CKR_KEY_TYPE_INCONSISTENT`) and the agent must sign with one of the mechanism's
    /// algorithms with it (`CKR_MECHANISM_INVALID`, as for a mechanism outside
    /// `CKA_ALLOWED_MECHANISMS`).
    pub fn new(key: Arc<AgentKey>, mechanism: SignMechanism) -> Result<Self, CK_RV> {
        if key.family != mechanism.family() {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        if !mechanism.allowed_by(&key.algorithms) {
            return Err(CKR_MECHANISM_INVALID);
        }
        Ok(SignOperation {
            hasher: mechanism.hashes_with().map(Hasher::new),
            key,
            mechanism,
            multi_part: false,
        })
    }

    /// The mechanism.
    pub fn mechanism(&self) -> SignMechanism {
        self.mechanism
    }

    /// The exact length of the signature this operation makes.
    pub fn signature_len(&self) -> usize {
        self.key.signature_len
    }

    /// Whether `C_SignUpdate` has been called.
    pub fn is_multi_part(&self) -> bool {
        self.multi_part
    }

    /// `C_SignUpdate`: hashes `part`. `CKR_OPERATION_NOT_INITIALIZED` for mechanisms that do
    /// not hash (the caller ends the operation then).
    pub fn update(&mut self, part: &[u8]) -> Result<(), CK_RV> {
        let hasher = self.hasher.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        hasher.update(part);
        self.multi_part = true;
        Ok(())
    }

    /// `C_SignFinal`: the request for the parts hashed so far.
    pub fn finish(self) -> Result<SignRequest, CK_RV> {
        let hash = self
            .mechanism
            .hashes_with()
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let digest = self
            .hasher
            .clone()
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?
            .finish();
        self.request_for(hash, digest)
    }

    /// `C_Sign`: the request for `data`, a whole message or the mechanism's raw input.
    pub fn single(mut self, data: &[u8]) -> Result<SignRequest, CK_RV> {
        if self.multi_part {
            return Err(CKR_OPERATION_NOT_INITIALIZED);
        }
        if self.hasher.is_some() {
            self.update(data)?;
            self.multi_part = false;
            return self.finish();
        }
        match self.mechanism {
            SignMechanism::Ecdsa => {
                let hash = Hash::of_len(data.len()).ok_or(CKR_DATA_LEN_RANGE)?;
                self.request_for(hash, data.to_vec())
            }
            SignMechanism::RsaPss(hash) => {
                if data.len() != hash.len() {
                    return Err(CKR_DATA_LEN_RANGE);
                }
                self.request_for(hash, data.to_vec())
            }
            SignMechanism::RsaPkcs => {
                // PKCS#1 v1.5 needs at least 11 bytes of padding around the DigestInfo.
                if data.len() + 11 > self.key.signature_len {
                    return Err(CKR_DATA_LEN_RANGE);
                }
                let (hash, digest) = parse_digest_info(data)?;
                self.request_for(hash, digest)
            }
            SignMechanism::Eddsa => {
                if data.len() > MAX_MESSAGE {
                    return Err(CKR_DATA_LEN_RANGE);
                }
                Ok(SignRequest {
                    key_id: self.key.id.clone(),
                    algorithm: SignatureAlgorithm::Ed25519,
                    input: SignInput::Message(data.to_vec()),
                    purpose: purpose(self.mechanism),
                })
            }
            SignMechanism::EcdsaWith(_)
            | SignMechanism::RsaPkcsWith(_)
            | SignMechanism::RsaPssWith(_) => Err(CKR_GENERAL_ERROR),
        }
    }

    /// The request for a digest of `hash`. A raw mechanism whose input names a hash the key
    /// does not sign with is `CKR_DATA_LEN_RANGE` (ECDSA: the digest length) or
    /// `CKR_DATA_INVALID` (RSA: the DigestInfo).
    fn request_for(&self, hash: Hash, digest: Vec<u8>) -> Result<SignRequest, CK_RV> {
        let (algorithm, refusal) = match self.mechanism.family() {
            crate::mechanism::KeyFamily::Ec => (hash.ecdsa(), CKR_DATA_LEN_RANGE),
            crate::mechanism::KeyFamily::Rsa => match self.mechanism {
                SignMechanism::RsaPss(_) | SignMechanism::RsaPssWith(_) => {
                    (hash.rsa_pss(), CKR_MECHANISM_INVALID)
                }
                _ => (hash.rsa_pkcs1(), CKR_DATA_INVALID),
            },
            crate::mechanism::KeyFamily::Edwards => return Err(CKR_GENERAL_ERROR),
        };
        if !self.key.algorithms.contains(&algorithm) {
            return Err(refusal);
        }
        Ok(SignRequest {
            key_id: self.key.id.clone(),
            algorithm,
            input: SignInput::Digest(digest),
            purpose: purpose(self.mechanism),
        })
    }
}

fn purpose(mechanism: SignMechanism) -> String {
    format!("pkcs11:{}", mechanism.name())
}

/// PKCS#1 `DigestInfo ::= SEQUENCE { digestAlgorithm AlgorithmIdentifier, digest OCTET STRING }`.
#[derive(der::Sequence)]
struct DigestInfo<'a> {
    algorithm: spki::AlgorithmIdentifier<AnyRef<'a>>,
    digest: &'a OctetStringRef,
}

const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// The hash and digest of a DER DigestInfo (`CKM_RSA_PKCS` input). Anything but SHA-256/384/512
/// with absent or NULL parameters and a digest of the hash's length is `CKR_DATA_INVALID`: the
/// agent signs PKCS#1 v1.5 only with those hashes.
pub fn parse_digest_info(data: &[u8]) -> Result<(Hash, Vec<u8>), CK_RV> {
    let info = DigestInfo::from_der(data).map_err(|_| CKR_DATA_INVALID)?;
    let hash = match info.algorithm.oid {
        SHA256 => Hash::Sha256,
        SHA384 => Hash::Sha384,
        SHA512 => Hash::Sha512,
        _ => return Err(CKR_DATA_INVALID),
    };
    if info.algorithm.parameters.is_some_and(|p| !p.is_null()) {
        return Err(CKR_DATA_INVALID);
    }
    let digest = info.digest.as_bytes();
    if digest.len() != hash.len() {
        return Err(CKR_DATA_INVALID);
    }
    Ok((hash, digest.to_vec()))
}

#[cfg(test)]
#[path = "sign_tests.rs"]
mod tests;
