//! Key specs, signature algorithms and hashes, and how they fit together.

use std::fmt;

use keyward_proto::v1;

/// The kind of key pair a key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
    /// ECDSA on NIST P-521.
    EcP521,
    /// RSA with a 2048-bit modulus.
    Rsa2048,
    /// RSA with a 3072-bit modulus.
    Rsa3072,
    /// RSA with a 4096-bit modulus.
    Rsa4096,
    /// Ed25519 (RFC 8032).
    Ed25519,
}

/// A signature scheme. RSA-PSS uses MGF1 with the same hash and a salt as long as the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// ECDSA over a SHA-256 digest.
    EcdsaSha256,
    /// ECDSA over a SHA-384 digest.
    EcdsaSha384,
    /// ECDSA over a SHA-512 digest.
    EcdsaSha512,
    /// RSASSA-PSS, SHA-256, MGF1-SHA-256, salt length 32.
    RsaPssSha256,
    /// RSASSA-PSS, SHA-384, MGF1-SHA-384, salt length 48.
    RsaPssSha384,
    /// RSASSA-PSS, SHA-512, MGF1-SHA-512, salt length 64.
    RsaPssSha512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RsaPkcs1Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RsaPkcs1Sha512,
    /// Pure Ed25519 over the message (no pre-hash).
    Ed25519,
}

/// The hash a signature algorithm signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-256 (32-byte digest).
    Sha256,
    /// SHA-384 (48-byte digest).
    Sha384,
    /// SHA-512 (64-byte digest).
    Sha512,
}

/// How an ECDSA signature is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EcdsaFormat {
    /// ASN.1 DER `ECDSA-Sig-Value` (X.509, OpenSSL, cosign).
    Der,
    /// Fixed-length big-endian `r || s` (IEEE P1363: JOSE, COSE, Notation, PKCS#11).
    Raw,
}

const RSA_ALGORITHMS: &[SignatureAlgorithm] = &[
    SignatureAlgorithm::RsaPssSha256,
    SignatureAlgorithm::RsaPssSha384,
    SignatureAlgorithm::RsaPssSha512,
    SignatureAlgorithm::RsaPkcs1Sha256,
    SignatureAlgorithm::RsaPkcs1Sha384,
    SignatureAlgorithm::RsaPkcs1Sha512,
];

impl KeySpec {
    /// Every key spec.
    pub const ALL: [KeySpec; 7] = [
        KeySpec::EcP256,
        KeySpec::EcP384,
        KeySpec::EcP521,
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
        KeySpec::Ed25519,
    ];

    /// The algorithms a key of this spec signs with; the first is the default.
    pub fn algorithms(self) -> &'static [SignatureAlgorithm] {
        use SignatureAlgorithm::*;
        match self {
            KeySpec::EcP256 => &[EcdsaSha256, EcdsaSha384, EcdsaSha512],
            KeySpec::EcP384 => &[EcdsaSha384, EcdsaSha256, EcdsaSha512],
            KeySpec::EcP521 => &[EcdsaSha512, EcdsaSha256, EcdsaSha384],
            // The default follows the Notary key-size table: 2048 -> PS256, 3072 -> PS384,
            // 4096 -> PS512.
            KeySpec::Rsa2048 => RSA_ALGORITHMS,
            KeySpec::Rsa3072 => &[
                RsaPssSha384,
                RsaPssSha256,
                RsaPssSha512,
                RsaPkcs1Sha256,
                RsaPkcs1Sha384,
                RsaPkcs1Sha512,
            ],
            KeySpec::Rsa4096 => &[
                RsaPssSha512,
                RsaPssSha256,
                RsaPssSha384,
                RsaPkcs1Sha256,
                RsaPkcs1Sha384,
                RsaPkcs1Sha512,
            ],
            KeySpec::Ed25519 => &[Ed25519],
        }
    }

    /// The natural algorithm for the key: P-256 -> ECDSA-SHA256, P-384 -> ECDSA-SHA384,
    /// P-521 -> ECDSA-SHA512, RSA -> PSS with the key size's hash, Ed25519 -> Ed25519.
    pub fn default_algorithm(self) -> SignatureAlgorithm {
        self.algorithms()[0]
    }

    /// Whether a key of this spec can sign with `algorithm`.
    pub fn supports(self, algorithm: SignatureAlgorithm) -> bool {
        self.algorithms().contains(&algorithm)
    }

    /// The length in bytes of each of r and s for ECDSA keys.
    pub fn ecdsa_field_len(self) -> Option<usize> {
        match self {
            KeySpec::EcP256 => Some(32),
            KeySpec::EcP384 => Some(48),
            KeySpec::EcP521 => Some(66),
            _ => None,
        }
    }

    /// RSA modulus size in bits.
    pub fn rsa_bits(self) -> Option<u32> {
        match self {
            KeySpec::Rsa2048 => Some(2048),
            KeySpec::Rsa3072 => Some(3072),
            KeySpec::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// The lowercase name (`ec-p256`).
    pub fn name(self) -> &'static str {
        v1::KeySpec::from(self).name()
    }

    /// Parses a name such as `ec-p256` or `rsa-2048`.
    pub fn from_name(name: &str) -> Option<Self> {
        v1::KeySpec::from_name(name).and_then(|s| Self::try_from(s).ok())
    }
}

impl SignatureAlgorithm {
    /// The hash this algorithm signs, `None` for pure Ed25519.
    pub fn hash(self) -> Option<HashAlgorithm> {
        use SignatureAlgorithm::*;
        match self {
            EcdsaSha256 | RsaPssSha256 | RsaPkcs1Sha256 => Some(HashAlgorithm::Sha256),
            EcdsaSha384 | RsaPssSha384 | RsaPkcs1Sha384 => Some(HashAlgorithm::Sha384),
            EcdsaSha512 | RsaPssSha512 | RsaPkcs1Sha512 => Some(HashAlgorithm::Sha512),
            Ed25519 => None,
        }
    }

    /// True for the ECDSA algorithms.
    pub fn is_ecdsa(self) -> bool {
        matches!(
            self,
            SignatureAlgorithm::EcdsaSha256
                | SignatureAlgorithm::EcdsaSha384
                | SignatureAlgorithm::EcdsaSha512
        )
    }

    /// True for the RSA-PSS algorithms.
    pub fn is_rsa_pss(self) -> bool {
        matches!(
            self,
            SignatureAlgorithm::RsaPssSha256
                | SignatureAlgorithm::RsaPssSha384
                | SignatureAlgorithm::RsaPssSha512
        )
    }

    /// The lowercase name (`ecdsa-sha256`).
    pub fn name(self) -> &'static str {
        v1::SignatureAlgorithm::from(self).name()
    }

    /// Parses a name such as `ecdsa-sha256` or `rsa-pss-sha384`.
    pub fn from_name(name: &str) -> Option<Self> {
        v1::SignatureAlgorithm::from_name(name).and_then(|a| Self::try_from(a).ok())
    }
}

impl HashAlgorithm {
    /// The digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    /// `sha256`, `sha384` or `sha512`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! proto_enum_mapping {
    ($ours:ident, $theirs:ty, [$($variant:ident),* $(,)?]) => {
        impl From<$ours> for $theirs {
            fn from(value: $ours) -> Self {
                match value { $($ours::$variant => <$theirs>::$variant,)* }
            }
        }
        impl TryFrom<$theirs> for $ours {
            type Error = ();
            fn try_from(value: $theirs) -> Result<Self, ()> {
                match value {
                    $(<$theirs>::$variant => Ok($ours::$variant),)*
                    _ => Err(()),
                }
            }
        }
    };
}

proto_enum_mapping!(
    KeySpec,
    v1::KeySpec,
    [EcP256, EcP384, EcP521, Rsa2048, Rsa3072, Rsa4096, Ed25519]
);
proto_enum_mapping!(
    SignatureAlgorithm,
    v1::SignatureAlgorithm,
    [
        EcdsaSha256,
        EcdsaSha384,
        EcdsaSha512,
        RsaPssSha256,
        RsaPssSha384,
        RsaPssSha512,
        RsaPkcs1Sha256,
        RsaPkcs1Sha384,
        RsaPkcs1Sha512,
        Ed25519
    ]
);

/// Whether `name` is acceptable as a key id or a backend-local key name: 1 to 128 characters of
/// ASCII letters, digits, `.`, `_` and `-`, not starting with `.` or `-`. Such a name is safe
/// as a file name and in a URI.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_has_a_default_it_supports() {
        for spec in KeySpec::ALL {
            assert!(spec.supports(spec.default_algorithm()));
            assert_eq!(KeySpec::from_name(spec.name()), Some(spec));
        }
        assert_eq!(
            KeySpec::Rsa3072.default_algorithm(),
            SignatureAlgorithm::RsaPssSha384
        );
        assert!(!KeySpec::EcP256.supports(SignatureAlgorithm::Ed25519));
        assert!(!KeySpec::Ed25519.supports(SignatureAlgorithm::EcdsaSha256));
    }

    #[test]
    fn key_names() {
        for ok in ["a", "release-signing", "ci_key.v2", "A9"] {
            assert!(is_valid_key_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "../x",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(!is_valid_key_name(bad), "{bad}");
        }
    }
}
