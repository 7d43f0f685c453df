//! The names that people type for key specs and algorithms (`ec-p256`, `ecdsa-sha256`), in one
//! table shared by the CLI, the SDK, the daemon's config and its error messages.

use crate::v1::{KeySpec, SignatureAlgorithm, SignatureFormat};

const KEY_SPEC_NAMES: &[(KeySpec, &str)] = &[
    (KeySpec::EcP256, "ec-p256"),
    (KeySpec::EcP384, "ec-p384"),
    (KeySpec::EcP521, "ec-p521"),
    (KeySpec::Rsa2048, "rsa-2048"),
    (KeySpec::Rsa3072, "rsa-3072"),
    (KeySpec::Rsa4096, "rsa-4096"),
    (KeySpec::Ed25519, "ed25519"),
];

const ALGORITHM_NAMES: &[(SignatureAlgorithm, &str)] = &[
    (SignatureAlgorithm::EcdsaSha256, "ecdsa-sha256"),
    (SignatureAlgorithm::EcdsaSha384, "ecdsa-sha384"),
    (SignatureAlgorithm::EcdsaSha512, "ecdsa-sha512"),
    (SignatureAlgorithm::RsaPssSha256, "rsa-pss-sha256"),
    (SignatureAlgorithm::RsaPssSha384, "rsa-pss-sha384"),
    (SignatureAlgorithm::RsaPssSha512, "rsa-pss-sha512"),
    (SignatureAlgorithm::RsaPkcs1Sha256, "rsa-pkcs1-sha256"),
    (SignatureAlgorithm::RsaPkcs1Sha384, "rsa-pkcs1-sha384"),
    (SignatureAlgorithm::RsaPkcs1Sha512, "rsa-pkcs1-sha512"),
    (SignatureAlgorithm::Ed25519, "ed25519"),
];

impl KeySpec {
    /// The lowercase name (`ec-p256`); `unspecified` for the zero value.
    pub fn name(self) -> &'static str {
        KEY_SPEC_NAMES
            .iter()
            .find(|(spec, _)| *spec == self)
            .map_or("unspecified", |(_, name)| name)
    }

    /// Parses a name as printed by [`KeySpec::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        KEY_SPEC_NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(spec, _)| *spec)
    }

    /// Every name, for help texts and error messages.
    pub fn all_names() -> impl Iterator<Item = &'static str> {
        KEY_SPEC_NAMES.iter().map(|(_, name)| *name)
    }
}

impl SignatureAlgorithm {
    /// The lowercase name (`ecdsa-sha256`); `unspecified` for the zero value.
    pub fn name(self) -> &'static str {
        ALGORITHM_NAMES
            .iter()
            .find(|(alg, _)| *alg == self)
            .map_or("unspecified", |(_, name)| name)
    }

    /// Parses a name as printed by [`SignatureAlgorithm::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        ALGORITHM_NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(alg, _)| *alg)
    }

    /// Every name, for help texts and error messages.
    pub fn all_names() -> impl Iterator<Item = &'static str> {
        ALGORITHM_NAMES.iter().map(|(_, name)| *name)
    }
}

impl SignatureFormat {
    /// `der` or `raw` (`der` for the zero value, which means DER on the wire).
    pub fn name(self) -> &'static str {
        match self {
            SignatureFormat::Raw => "raw",
            SignatureFormat::Der | SignatureFormat::Unspecified => "der",
        }
    }

    /// Parses `der` or `raw` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "der" => Some(SignatureFormat::Der),
            "raw" => Some(SignatureFormat::Raw),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in KeySpec::all_names() {
            assert_eq!(KeySpec::from_name(name).unwrap().name(), name);
        }
        for name in SignatureAlgorithm::all_names() {
            assert_eq!(SignatureAlgorithm::from_name(name).unwrap().name(), name);
        }
        assert_eq!(KeySpec::from_name("EC-P256"), Some(KeySpec::EcP256));
        assert_eq!(KeySpec::from_name("ec-p999"), None);
        assert_eq!(SignatureAlgorithm::Unspecified.name(), "unspecified");
    }
}
