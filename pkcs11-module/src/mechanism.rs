//! The signing mechanisms the token offers, what each needs from a key, and how each maps to
//! one of the agent's algorithms.
//!
//! A mechanism is parsed once, in `C_SignInit`, into a [`SignMechanism`] (invalid parameters
//! never get further); which agent algorithm it signs with is then decided by the key and, for
//! the raw mechanisms (`CKM_ECDSA`, `CKM_RSA_PKCS`), by the input.

use cryptoki_sys::*;
use keyward_sdk::SignatureAlgorithm;

/// The hashes the agent signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    /// The digest length in bytes.
    pub fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// The hash whose digests are `len` bytes long.
    pub fn of_len(len: usize) -> Option<Hash> {
        [Hash::Sha256, Hash::Sha384, Hash::Sha512]
            .into_iter()
            .find(|h| h.len() == len)
    }

    /// The hash named by a PKCS#11 digest mechanism (`CKM_SHA256`, ...).
    fn from_digest_mechanism(mechanism: CK_MECHANISM_TYPE) -> Option<Hash> {
        match mechanism {
            CKM_SHA256 => Some(Hash::Sha256),
            CKM_SHA384 => Some(Hash::Sha384),
            CKM_SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    /// The MGF1 generator of the same hash.
    fn mgf1(self) -> CK_RSA_PKCS_MGF_TYPE {
        match self {
            Hash::Sha256 => CKG_MGF1_SHA256,
            Hash::Sha384 => CKG_MGF1_SHA384,
            Hash::Sha512 => CKG_MGF1_SHA512,
        }
    }

    pub(crate) fn ecdsa(self) -> SignatureAlgorithm {
        match self {
            Hash::Sha256 => SignatureAlgorithm::EcdsaSha256,
            Hash::Sha384 => SignatureAlgorithm::EcdsaSha384,
            Hash::Sha512 => SignatureAlgorithm::EcdsaSha512,
        }
    }

    pub(crate) fn rsa_pkcs1(self) -> SignatureAlgorithm {
        match self {
            Hash::Sha256 => SignatureAlgorithm::RsaPkcs1Sha256,
            Hash::Sha384 => SignatureAlgorithm::RsaPkcs1Sha384,
            Hash::Sha512 => SignatureAlgorithm::RsaPkcs1Sha512,
        }
    }

    pub(crate) fn rsa_pss(self) -> SignatureAlgorithm {
        match self {
            Hash::Sha256 => SignatureAlgorithm::RsaPssSha256,
            Hash::Sha384 => SignatureAlgorithm::RsaPssSha384,
            Hash::Sha512 => SignatureAlgorithm::RsaPssSha512,
        }
    }
}

/// The kinds of key the agent holds, as PKCS#11 sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    /// `CKK_EC`: P-256, P-384, P-521.
    Ec,
    /// `CKK_RSA`: 2048, 3072, 4096 bits.
    Rsa,
    /// `CKK_EC_EDWARDS`: Ed25519.
    Edwards,
}

impl KeyFamily {
    /// The `CKA_KEY_TYPE` value.
    pub fn key_type(self) -> CK_KEY_TYPE {
        match self {
            KeyFamily::Ec => CKK_EC,
            KeyFamily::Rsa => CKK_RSA,
            KeyFamily::Edwards => CKK_EC_EDWARDS,
        }
    }
}

/// The parameters of a `CK_MECHANISM`, read from C by the FFI layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MechanismParams {
    /// No parameter (a null pointer and a zero length).
    None,
    /// A `CK_RSA_PKCS_PSS_PARAMS`.
    Pss {
        /// `hashAlg`.
        hash: CK_MECHANISM_TYPE,
        /// `mgf`.
        mgf: CK_RSA_PKCS_MGF_TYPE,
        /// `sLen`.
        salt_len: CK_ULONG,
    },
    /// A `CK_EDDSA_PARAMS`.
    Eddsa {
        /// `phFlag`: Ed25519ph.
        prehash: bool,
        /// `ulContextDataLen`: Ed25519ctx.
        context_len: CK_ULONG,
    },
    /// A parameter of another length than this mechanism's parameter structure.
    Malformed,
}

/// A signing mechanism with its parameters checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignMechanism {
    /// `CKM_ECDSA`: the caller's digest in, raw `r || s` out; the digest's length names the hash.
    Ecdsa,
    /// `CKM_ECDSA_SHA256/384/512`: the module hashes the data.
    EcdsaWith(Hash),
    /// `CKM_RSA_PKCS`: the caller's DigestInfo in; its hash OID names the hash.
    RsaPkcs,
    /// `CKM_SHA256/384/512_RSA_PKCS`: the module hashes the data.
    RsaPkcsWith(Hash),
    /// `CKM_RSA_PKCS_PSS`: the caller's digest in, the hash from the parameters.
    RsaPss(Hash),
    /// `CKM_SHA256/384/512_RSA_PKCS_PSS`: the module hashes the data.
    RsaPssWith(Hash),
    /// `CKM_EDDSA`: pure Ed25519 over the data.
    Eddsa,
}

/// Every mechanism the token lists, with the key family it needs.
pub const MECHANISMS: [(CK_MECHANISM_TYPE, KeyFamily); 13] = [
    (CKM_ECDSA, KeyFamily::Ec),
    (CKM_ECDSA_SHA256, KeyFamily::Ec),
    (CKM_ECDSA_SHA384, KeyFamily::Ec),
    (CKM_ECDSA_SHA512, KeyFamily::Ec),
    (CKM_RSA_PKCS, KeyFamily::Rsa),
    (CKM_SHA256_RSA_PKCS, KeyFamily::Rsa),
    (CKM_SHA384_RSA_PKCS, KeyFamily::Rsa),
    (CKM_SHA512_RSA_PKCS, KeyFamily::Rsa),
    (CKM_RSA_PKCS_PSS, KeyFamily::Rsa),
    (CKM_SHA256_RSA_PKCS_PSS, KeyFamily::Rsa),
    (CKM_SHA384_RSA_PKCS_PSS, KeyFamily::Rsa),
    (CKM_SHA512_RSA_PKCS_PSS, KeyFamily::Rsa),
    (CKM_EDDSA, KeyFamily::Edwards),
];

/// What `C_GetMechanismInfo` says of `mechanism`: key sizes in bits (the agent's key specs)
/// and `CKF_SIGN` only (`C_Verify` is not offered: verify with the public key object or
/// certificate in the caller's own crypto library). `None` for mechanisms the token lacks.
pub fn mechanism_info(mechanism: CK_MECHANISM_TYPE) -> Option<CK_MECHANISM_INFO> {
    let (_, family) = MECHANISMS.iter().find(|(m, _)| *m == mechanism)?;
    let (min, max, flags) = match family {
        KeyFamily::Ec => (
            256,
            521,
            CKF_SIGN | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
        ),
        KeyFamily::Rsa => (2048, 4096, CKF_SIGN),
        KeyFamily::Edwards => (255, 255, CKF_SIGN),
    };
    Some(CK_MECHANISM_INFO {
        ulMinKeySize: min,
        ulMaxKeySize: max,
        flags,
    })
}

impl SignMechanism {
    /// Parses a mechanism and its parameters. Unknown mechanisms are `CKR_MECHANISM_INVALID`;
    /// parameters this module cannot honour are `CKR_MECHANISM_PARAM_INVALID`.
    pub fn parse(mechanism: CK_MECHANISM_TYPE, params: MechanismParams) -> Result<Self, CK_RV> {
        let no_params = |m: SignMechanism| match params {
            MechanismParams::None => Ok(m),
            _ => Err(CKR_MECHANISM_PARAM_INVALID),
        };
        match mechanism {
            CKM_ECDSA => no_params(SignMechanism::Ecdsa),
            CKM_ECDSA_SHA256 => no_params(SignMechanism::EcdsaWith(Hash::Sha256)),
            CKM_ECDSA_SHA384 => no_params(SignMechanism::EcdsaWith(Hash::Sha384)),
            CKM_ECDSA_SHA512 => no_params(SignMechanism::EcdsaWith(Hash::Sha512)),
            CKM_RSA_PKCS => no_params(SignMechanism::RsaPkcs),
            CKM_SHA256_RSA_PKCS => no_params(SignMechanism::RsaPkcsWith(Hash::Sha256)),
            CKM_SHA384_RSA_PKCS => no_params(SignMechanism::RsaPkcsWith(Hash::Sha384)),
            CKM_SHA512_RSA_PKCS => no_params(SignMechanism::RsaPkcsWith(Hash::Sha512)),
            CKM_RSA_PKCS_PSS => Ok(SignMechanism::RsaPss(pss_hash(params, None)?)),
            CKM_SHA256_RSA_PKCS_PSS => pss_hash(params, Some(Hash::Sha256)).map(Self::RsaPssWith),
            CKM_SHA384_RSA_PKCS_PSS => pss_hash(params, Some(Hash::Sha384)).map(Self::RsaPssWith),
            CKM_SHA512_RSA_PKCS_PSS => pss_hash(params, Some(Hash::Sha512)).map(Self::RsaPssWith),
            CKM_EDDSA => match params {
                // Pure Ed25519 only: the agent signs neither Ed25519ph nor Ed25519ctx.
                MechanismParams::None
                | MechanismParams::Eddsa {
                    prehash: false,
                    context_len: 0,
                } => Ok(SignMechanism::Eddsa),
                _ => Err(CKR_MECHANISM_PARAM_INVALID),
            },
            _ => Err(CKR_MECHANISM_INVALID),
        }
    }

    /// The `CKM_` value.
    #[cfg(test)]
    pub fn ck_type(self) -> CK_MECHANISM_TYPE {
        match self {
            SignMechanism::Ecdsa => CKM_ECDSA,
            SignMechanism::EcdsaWith(Hash::Sha256) => CKM_ECDSA_SHA256,
            SignMechanism::EcdsaWith(Hash::Sha384) => CKM_ECDSA_SHA384,
            SignMechanism::EcdsaWith(Hash::Sha512) => CKM_ECDSA_SHA512,
            SignMechanism::RsaPkcs => CKM_RSA_PKCS,
            SignMechanism::RsaPkcsWith(Hash::Sha256) => CKM_SHA256_RSA_PKCS,
            SignMechanism::RsaPkcsWith(Hash::Sha384) => CKM_SHA384_RSA_PKCS,
            SignMechanism::RsaPkcsWith(Hash::Sha512) => CKM_SHA512_RSA_PKCS,
            SignMechanism::RsaPss(_) => CKM_RSA_PKCS_PSS,
            SignMechanism::RsaPssWith(Hash::Sha256) => CKM_SHA256_RSA_PKCS_PSS,
            SignMechanism::RsaPssWith(Hash::Sha384) => CKM_SHA384_RSA_PKCS_PSS,
            SignMechanism::RsaPssWith(Hash::Sha512) => CKM_SHA512_RSA_PKCS_PSS,
            SignMechanism::Eddsa => CKM_EDDSA,
        }
    }

    /// The name recorded as the signature's purpose in the agent's audit log.
    pub fn name(self) -> &'static str {
        match self {
            SignMechanism::Ecdsa => "CKM_ECDSA",
            SignMechanism::EcdsaWith(Hash::Sha256) => "CKM_ECDSA_SHA256",
            SignMechanism::EcdsaWith(Hash::Sha384) => "CKM_ECDSA_SHA384",
            SignMechanism::EcdsaWith(Hash::Sha512) => "CKM_ECDSA_SHA512",
            SignMechanism::RsaPkcs => "CKM_RSA_PKCS",
            SignMechanism::RsaPkcsWith(Hash::Sha256) => "CKM_SHA256_RSA_PKCS",
            SignMechanism::RsaPkcsWith(Hash::Sha384) => "CKM_SHA384_RSA_PKCS",
            SignMechanism::RsaPkcsWith(Hash::Sha512) => "CKM_SHA512_RSA_PKCS",
            SignMechanism::RsaPss(_) => "CKM_RSA_PKCS_PSS",
            SignMechanism::RsaPssWith(Hash::Sha256) => "CKM_SHA256_RSA_PKCS_PSS",
            SignMechanism::RsaPssWith(Hash::Sha384) => "CKM_SHA384_RSA_PKCS_PSS",
            SignMechanism::RsaPssWith(Hash::Sha512) => "CKM_SHA512_RSA_PKCS_PSS",
            SignMechanism::Eddsa => "CKM_EDDSA",
        }
    }

    /// The key family the mechanism signs with.
    pub fn family(self) -> KeyFamily {
        match self {
            SignMechanism::Ecdsa | SignMechanism::EcdsaWith(_) => KeyFamily::Ec,
            SignMechanism::Eddsa => KeyFamily::Edwards,
            _ => KeyFamily::Rsa,
        }
    }

    /// The hash the module computes over the data, for mechanisms that hash (and so allow
    /// `C_SignUpdate`).
    pub fn hashes_with(self) -> Option<Hash> {
        match self {
            SignMechanism::EcdsaWith(h)
            | SignMechanism::RsaPkcsWith(h)
            | SignMechanism::RsaPssWith(h) => Some(h),
            _ => None,
        }
    }

    /// Whether a key with `algorithms` can serve this mechanism for some input.
    pub fn allowed_by(self, algorithms: &[SignatureAlgorithm]) -> bool {
        let any = |f: fn(Hash) -> SignatureAlgorithm| {
            [Hash::Sha256, Hash::Sha384, Hash::Sha512]
                .iter()
                .any(|h| algorithms.contains(&f(*h)))
        };
        match self {
            SignMechanism::Ecdsa => any(Hash::ecdsa),
            SignMechanism::RsaPkcs => any(Hash::rsa_pkcs1),
            SignMechanism::EcdsaWith(h) => algorithms.contains(&h.ecdsa()),
            SignMechanism::RsaPkcsWith(h) => algorithms.contains(&h.rsa_pkcs1()),
            SignMechanism::RsaPss(h) | SignMechanism::RsaPssWith(h) => {
                algorithms.contains(&h.rsa_pss())
            }
            SignMechanism::Eddsa => algorithms.contains(&SignatureAlgorithm::Ed25519),
        }
    }
}

/// The mechanisms a key with `algorithms` allows (`CKA_ALLOWED_MECHANISMS`), in list order.
pub fn allowed_mechanisms(family: KeyFamily, algorithms: &[SignatureAlgorithm]) -> Vec<CK_ULONG> {
    MECHANISMS
        .iter()
        .filter(|(_, f)| *f == family)
        .filter(|(m, _)| {
            let params = match *m {
                CKM_RSA_PKCS_PSS => return algorithms.iter().any(|a| is_pss(*a)),
                CKM_SHA256_RSA_PKCS_PSS => pss(Hash::Sha256),
                CKM_SHA384_RSA_PKCS_PSS => pss(Hash::Sha384),
                CKM_SHA512_RSA_PKCS_PSS => pss(Hash::Sha512),
                _ => MechanismParams::None,
            };
            SignMechanism::parse(*m, params).is_ok_and(|s| s.allowed_by(algorithms))
        })
        .map(|(m, _)| *m)
        .collect()
}

fn is_pss(algorithm: SignatureAlgorithm) -> bool {
    matches!(
        algorithm,
        SignatureAlgorithm::RsaPssSha256
            | SignatureAlgorithm::RsaPssSha384
            | SignatureAlgorithm::RsaPssSha512
    )
}

/// The PSS parameters the agent signs with for `hash`: MGF1 of the same hash, salt = hash length.
pub fn pss(hash: Hash) -> MechanismParams {
    MechanismParams::Pss {
        hash: match hash {
            Hash::Sha256 => CKM_SHA256,
            Hash::Sha384 => CKM_SHA384,
            Hash::Sha512 => CKM_SHA512,
        },
        mgf: hash.mgf1(),
        salt_len: hash.len() as CK_ULONG,
    }
}

/// Checks PSS parameters: the agent signs with MGF1 of the message hash and a salt as long as
/// the hash, nothing else. `expected` is the hash a `CKM_SHAn_RSA_PKCS_PSS` mechanism fixes.
fn pss_hash(params: MechanismParams, expected: Option<Hash>) -> Result<Hash, CK_RV> {
    let MechanismParams::Pss {
        hash,
        mgf,
        salt_len,
    } = params
    else {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    };
    let hash = Hash::from_digest_mechanism(hash).ok_or(CKR_MECHANISM_PARAM_INVALID)?;
    if expected.is_some_and(|e| e != hash) || mgf != hash.mgf1() || salt_len != hash.len() as u64 {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_needs_salt_of_the_hash_length_and_mgf1_of_the_same_hash() {
        let good = pss(Hash::Sha384);
        assert_eq!(
            SignMechanism::parse(CKM_RSA_PKCS_PSS, good),
            Ok(SignMechanism::RsaPss(Hash::Sha384))
        );
        assert_eq!(
            SignMechanism::parse(CKM_SHA384_RSA_PKCS_PSS, good),
            Ok(SignMechanism::RsaPssWith(Hash::Sha384))
        );
        let cases = [
            // The mechanism fixes SHA-256, the parameters say SHA-384.
            (CKM_SHA256_RSA_PKCS_PSS, good),
            (CKM_RSA_PKCS_PSS, MechanismParams::None),
            (CKM_RSA_PKCS_PSS, MechanismParams::Malformed),
            (
                CKM_RSA_PKCS_PSS,
                MechanismParams::Pss {
                    hash: CKM_SHA256,
                    mgf: CKG_MGF1_SHA256,
                    salt_len: 20,
                },
            ),
            (
                CKM_RSA_PKCS_PSS,
                MechanismParams::Pss {
                    hash: CKM_SHA256,
                    mgf: CKG_MGF1_SHA1,
                    salt_len: 32,
                },
            ),
            (
                CKM_RSA_PKCS_PSS,
                MechanismParams::Pss {
                    hash: CKM_SHA_1,
                    mgf: CKG_MGF1_SHA1,
                    salt_len: 20,
                },
            ),
        ];
        for (mechanism, params) in cases {
            assert_eq!(
                SignMechanism::parse(mechanism, params),
                Err(CKR_MECHANISM_PARAM_INVALID),
                "{mechanism:#x} {params:?}"
            );
        }
    }

    #[test]
    fn unknown_mechanisms_and_stray_parameters_are_refused() {
        assert_eq!(
            SignMechanism::parse(CKM_SHA1_RSA_PKCS, MechanismParams::None),
            Err(CKR_MECHANISM_INVALID)
        );
        assert_eq!(
            SignMechanism::parse(CKM_ECDSA_SHA1, MechanismParams::None),
            Err(CKR_MECHANISM_INVALID)
        );
        assert_eq!(
            SignMechanism::parse(CKM_ECDSA, MechanismParams::Malformed),
            Err(CKR_MECHANISM_PARAM_INVALID)
        );
        let ed25519ph = MechanismParams::Eddsa {
            prehash: true,
            context_len: 0,
        };
        assert_eq!(
            SignMechanism::parse(CKM_EDDSA, ed25519ph),
            Err(CKR_MECHANISM_PARAM_INVALID)
        );
        let pure = MechanismParams::Eddsa {
            prehash: false,
            context_len: 0,
        };
        assert_eq!(
            SignMechanism::parse(CKM_EDDSA, pure),
            Ok(SignMechanism::Eddsa)
        );
    }

    #[test]
    fn every_listed_mechanism_parses_and_has_info() {
        for (mechanism, family) in MECHANISMS {
            let params = match mechanism {
                CKM_RSA_PKCS_PSS | CKM_SHA256_RSA_PKCS_PSS => pss(Hash::Sha256),
                CKM_SHA384_RSA_PKCS_PSS => pss(Hash::Sha384),
                CKM_SHA512_RSA_PKCS_PSS => pss(Hash::Sha512),
                _ => MechanismParams::None,
            };
            let parsed = SignMechanism::parse(mechanism, params).unwrap();
            assert_eq!(parsed.ck_type(), mechanism);
            assert_eq!(parsed.family(), family);
            let info = mechanism_info(mechanism).unwrap();
            assert_eq!(info.flags & CKF_SIGN, CKF_SIGN);
            assert_eq!(info.flags & CKF_VERIFY, 0, "C_Verify is not offered");
        }
        assert!(mechanism_info(CKM_SHA256).is_none());
    }

    #[test]
    fn allowed_mechanisms_follow_the_keys_algorithms() {
        use SignatureAlgorithm::*;
        assert_eq!(
            allowed_mechanisms(KeyFamily::Ec, &[EcdsaSha256]),
            vec![CKM_ECDSA, CKM_ECDSA_SHA256]
        );
        assert_eq!(
            allowed_mechanisms(KeyFamily::Rsa, &[RsaPssSha256, RsaPkcs1Sha512]),
            vec![
                CKM_RSA_PKCS,
                CKM_SHA512_RSA_PKCS,
                CKM_RSA_PKCS_PSS,
                CKM_SHA256_RSA_PKCS_PSS
            ]
        );
        assert_eq!(
            allowed_mechanisms(KeyFamily::Edwards, &[Ed25519]),
            vec![CKM_EDDSA]
        );
    }
}
