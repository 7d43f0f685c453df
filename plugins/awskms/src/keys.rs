//! KMS key references, key specs and signing algorithms in keyward's terms.
//!
//! A reference (a `[[key]] ref`, or the part after `<backend>/` of a discovered id) is one of:
//!
//! - a key id: `1234abcd-12ab-34cd-56ef-1234567890ab`, or `mrk-<32 hex>` for a multi-Region key;
//! - a key ARN or an alias ARN: `arn:aws:kms:eu-west-1:111122223333:key/<id>`, `...:alias/<name>`;
//! - an alias: `alias/<name>`;
//! - a bare alias name: `<name>`, as keyward lists keys that have an alias and names the keys it
//!   creates (so `awskms/release` is the key behind `alias/release`).

use aws_sdk_kms::types::{
    KeyMetadata, KeySpec as KmsKeySpec, KeyState, KeyUsageType, SigningAlgorithmSpec,
};
use keyward_plugin_api::{BackendError, KeySpec, Prehashed, SignatureAlgorithm, is_valid_key_name};

/// How a reference names a KMS key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// A key id (a UUID or `mrk-...`).
    KeyId(String),
    /// A key or alias ARN.
    Arn(String),
    /// An alias, with its `alias/` prefix.
    Alias(String),
}

impl Reference {
    /// Parses a reference; `InvalidInput` says what the accepted forms are.
    pub fn parse(reference: &str) -> Result<Self, BackendError> {
        let bad = |why: &str| {
            BackendError::InvalidInput(format!(
                "{reference:?} is not a KMS key reference ({why}): use a key id, a key or alias ARN, \
                 alias/<name>, or an alias name"
            ))
        };
        if let Some(rest) = reference.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let ok = parts.len() == 5
                && parts[1] == "kms"
                && !parts[2].is_empty()
                && !parts[3].is_empty()
                && (parts[4].starts_with("key/") || parts[4].starts_with("alias/"))
                && reference.len() <= 2048
                && !reference.contains(char::is_whitespace);
            return if ok {
                Ok(Reference::Arn(reference.to_string()))
            } else {
                Err(bad(
                    "an ARN must look like arn:aws:kms:<region>:<account>:key/<id>",
                ))
            };
        }
        if let Some(name) = reference.strip_prefix("alias/") {
            return if is_alias_name(name) {
                Ok(Reference::Alias(reference.to_string()))
            } else {
                Err(bad(
                    "an alias name has 1-250 letters, digits, '/', '_' and '-'",
                ))
            };
        }
        if is_key_id(reference) {
            return Ok(Reference::KeyId(reference.to_string()));
        }
        if is_alias_name(reference) {
            return Ok(Reference::Alias(format!("alias/{reference}")));
        }
        Err(bad("it holds characters KMS does not allow in an alias"))
    }

    /// What to send as `KeyId`.
    pub fn kms_id(&self) -> &str {
        match self {
            Reference::KeyId(s) | Reference::Arn(s) | Reference::Alias(s) => s,
        }
    }
}

/// Whether `name` is usable as a KMS alias name (after `alias/`).
pub fn is_alias_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 250
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
}

/// Whether `text` has the shape of a key id: a lowercase UUID, or `mrk-` and 32 hex digits.
pub fn is_key_id(text: &str) -> bool {
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if let Some(rest) = text.strip_prefix("mrk-") {
        return rest.len() == 32 && hex(rest);
    }
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && hex(group))
}

/// The reference a discovered key is listed under: the first (in sorted order) of its alias
/// names that keyward can use as a key id and that does not look like a key id, without
/// `alias/`; else its key id.
pub fn discovered_reference(key_id: &str, aliases: &[String]) -> String {
    aliases
        .iter()
        .filter_map(|alias| alias.strip_prefix("alias/"))
        .filter(|name| is_valid_key_name(name) && is_alias_name(name) && !is_key_id(name))
        .min()
        .map_or_else(|| key_id.to_string(), str::to_string)
}

/// The keyward spec of a KMS key spec; `None` for specs keyward does not sign with here.
pub fn spec_of(kms: &KmsKeySpec) -> Option<KeySpec> {
    match kms {
        KmsKeySpec::EccNistP256 => Some(KeySpec::EcP256),
        KmsKeySpec::EccNistP384 => Some(KeySpec::EcP384),
        KmsKeySpec::EccNistP521 => Some(KeySpec::EcP521),
        KmsKeySpec::Rsa2048 => Some(KeySpec::Rsa2048),
        KmsKeySpec::Rsa3072 => Some(KeySpec::Rsa3072),
        KmsKeySpec::Rsa4096 => Some(KeySpec::Rsa4096),
        _ => None,
    }
}

/// The KMS key spec of a keyward spec; `None` for Ed25519, which this backend does not use.
pub fn kms_spec(spec: KeySpec) -> Option<KmsKeySpec> {
    match spec {
        KeySpec::EcP256 => Some(KmsKeySpec::EccNistP256),
        KeySpec::EcP384 => Some(KmsKeySpec::EccNistP384),
        KeySpec::EcP521 => Some(KmsKeySpec::EccNistP521),
        KeySpec::Rsa2048 => Some(KmsKeySpec::Rsa2048),
        KeySpec::Rsa3072 => Some(KmsKeySpec::Rsa3072),
        KeySpec::Rsa4096 => Some(KmsKeySpec::Rsa4096),
        KeySpec::Ed25519 => None,
    }
}

/// The KMS signing algorithm and the digest to send for `op` with a key of `spec`; `None`
/// when KMS has no such algorithm.
///
/// KMS ties each curve to one hash (P-256 signs only `ECDSA_SHA_256`, P-384 `ECDSA_SHA_384`,
/// P-521 `ECDSA_SHA_512`) and checks the digest's length, while keyward offers every ECDSA hash
/// on every curve. ECDSA uses a digest only as `bits2int`: its leftmost bits, as many as the
/// group order has, as an integer. So the digest is cut to the curve's hash length when longer
/// (the leftmost bytes: exactly what the curve takes from it) and left-padded with zero bytes
/// when shorter (the same integer, still below the order's length), and the signature KMS
/// makes is the ECDSA signature over the requested hash. The daemon verifies it as such.
pub fn kms_request(spec: KeySpec, op: Prehashed<'_>) -> Option<(SigningAlgorithmSpec, Vec<u8>)> {
    use SignatureAlgorithm::*;
    let (algorithm, digest) = (op.algorithm(), op.digest());
    let rsa = match algorithm {
        RsaPssSha256 => SigningAlgorithmSpec::RsassaPssSha256,
        RsaPssSha384 => SigningAlgorithmSpec::RsassaPssSha384,
        RsaPssSha512 => SigningAlgorithmSpec::RsassaPssSha512,
        RsaPkcs1Sha256 => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
        RsaPkcs1Sha384 => SigningAlgorithmSpec::RsassaPkcs1V15Sha384,
        RsaPkcs1Sha512 => SigningAlgorithmSpec::RsassaPkcs1V15Sha512,
        Ed25519 => return None,
        EcdsaSha256 | EcdsaSha384 | EcdsaSha512 => {
            let (kms_algorithm, len) = match spec {
                KeySpec::EcP384 => (SigningAlgorithmSpec::EcdsaSha384, 48),
                KeySpec::EcP521 => (SigningAlgorithmSpec::EcdsaSha512, 64),
                _ => (SigningAlgorithmSpec::EcdsaSha256, 32),
            };
            let sent = if digest.len() >= len {
                digest[..len].to_vec()
            } else {
                let mut padded = vec![0u8; len - digest.len()];
                padded.extend_from_slice(digest);
                padded
            };
            return Some((kms_algorithm, sent));
        }
    };
    Some((rsa, digest.to_vec()))
}

/// Why this backend does not do Ed25519, for `Unsupported` errors.
pub const ED25519_UNSUPPORTED: &str = "the awskms backend does not sign with Ed25519: KMS's \
    ECC_NIST_EDWARDS25519 keys are not wired into keyward yet; use an ec-p256, ec-p384, ec-p521 or \
    rsa-2048/3072/4096 key, or the local, pkcs11 or vault backend for Ed25519";

/// The spec of a key keyward can sign with; an error that says why not otherwise.
pub fn usable_spec(shown: &str, metadata: &KeyMetadata) -> Result<KeySpec, BackendError> {
    let usage = metadata.key_usage().map_or("?", |u| u.as_str());
    if metadata.key_usage() != Some(&KeyUsageType::SignVerify) {
        return Err(BackendError::Unsupported(format!(
            "KMS key {shown:?} has key usage {usage}; keyward signs only with SIGN_VERIFY keys"
        )));
    }
    let kms_spec = metadata.key_spec().map_or("?", |s| s.as_str());
    let spec = metadata.key_spec().and_then(spec_of).ok_or_else(|| {
        let extra = if kms_spec == "ECC_NIST_EDWARDS25519" {
            format!("; {ED25519_UNSUPPORTED}")
        } else {
            String::new()
        };
        BackendError::Unsupported(format!(
            "KMS key {shown:?} is a {kms_spec} key, which keyward does not sign with; use \
             ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, RSA_2048, RSA_3072 or RSA_4096{extra}"
        ))
    })?;
    let state = metadata
        .key_state()
        .cloned()
        .unwrap_or(if metadata.enabled() {
            KeyState::Enabled
        } else {
            KeyState::Disabled
        });
    let named = state.as_str();
    match state {
        KeyState::Enabled => Ok(spec),
        KeyState::Disabled => Err(BackendError::PermissionDenied(format!(
            "KMS key {shown:?} is disabled (key state {named}); enable it with `aws kms enable-key --key-id <key>`"
        ))),
        KeyState::PendingDeletion | KeyState::PendingReplicaDeletion => {
            Err(BackendError::PermissionDenied(format!(
                "KMS key {shown:?} is scheduled for deletion (key state {named}); `aws kms cancel-key-deletion` \
                 and `aws kms enable-key` bring it back"
            )))
        }
        KeyState::PendingImport => Err(BackendError::PermissionDenied(format!(
            "KMS key {shown:?} has no key material yet (key state {named})"
        ))),
        _ => Err(BackendError::unavailable(format!(
            "KMS key {shown:?} cannot sign right now (key state {named}); try again later"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use keyward_plugin_api::SignOp;

    use super::*;

    fn request(
        spec: KeySpec,
        algorithm: SignatureAlgorithm,
        digest: &[u8],
    ) -> Option<(SigningAlgorithmSpec, Vec<u8>)> {
        match SignOp::prehashed(algorithm, digest).ok()? {
            SignOp::Prehashed(op) => kms_request(spec, op),
            SignOp::Ed25519 { .. } => None,
        }
    }

    const UUID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn references() {
        assert_eq!(
            Reference::parse(UUID).unwrap(),
            Reference::KeyId(UUID.into())
        );
        let mrk = "mrk-1234abcd12ab34cd56ef1234567890ab";
        assert_eq!(Reference::parse(mrk).unwrap(), Reference::KeyId(mrk.into()));
        let arn = format!("arn:aws:kms:eu-west-1:111122223333:key/{UUID}");
        assert_eq!(Reference::parse(&arn).unwrap(), Reference::Arn(arn.clone()));
        let alias_arn = "arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/release";
        assert_eq!(Reference::parse(alias_arn).unwrap().kms_id(), alias_arn);
        assert_eq!(
            Reference::parse("alias/team/release").unwrap(),
            Reference::Alias("alias/team/release".into())
        );
        assert_eq!(
            Reference::parse("release-2026").unwrap().kms_id(),
            "alias/release-2026"
        );
        for bad in [
            "",
            "alias/",
            "alias/a b",
            "release.v2",
            "arn:aws:s3:::bucket",
            "arn:aws:kms:eu-west-1:111122223333:secret/x",
            "../x",
        ] {
            assert!(
                matches!(Reference::parse(bad), Err(BackendError::InvalidInput(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn key_ids_have_their_shape() {
        assert!(is_key_id(UUID));
        assert!(!is_key_id("1234ABCD-12ab-34cd-56ef-1234567890ab"));
        assert!(!is_key_id("1234abcd-12ab-34cd-56ef-1234567890a"));
        assert!(!is_key_id("mrk-12"));
        assert!(!is_key_id("release"));
    }

    #[test]
    fn discovered_keys_take_their_first_usable_alias() {
        let aliases = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            discovered_reference(UUID, &aliases(&["alias/zeta", "alias/alpha"])),
            "alpha"
        );
        // Names keyward cannot use as an id, or that would read as a key id, are passed over.
        assert_eq!(
            discovered_reference(
                UUID,
                &aliases(&["alias/team/release", &format!("alias/{UUID}")])
            ),
            UUID
        );
        assert_eq!(discovered_reference(UUID, &[]), UUID);
    }

    #[test]
    fn specs_and_algorithms_map_both_ways() {
        for spec in KeySpec::ALL {
            match kms_spec(spec) {
                Some(kms) => assert_eq!(spec_of(&kms), Some(spec)),
                None => assert_eq!(spec, KeySpec::Ed25519),
            }
            for &algorithm in spec.algorithms() {
                let digest = vec![1u8; algorithm.hash().map_or(0, |h| h.digest_len())];
                assert_eq!(
                    request(spec, algorithm, &digest).is_none(),
                    algorithm == SignatureAlgorithm::Ed25519
                );
            }
        }
        assert_eq!(spec_of(&KmsKeySpec::EccSecgP256K1), None);
        assert_eq!(spec_of(&KmsKeySpec::EccNistEdwards25519), None);
        let digest: Vec<u8> = (1..=48).collect();
        assert_eq!(
            request(KeySpec::Rsa3072, SignatureAlgorithm::RsaPssSha384, &digest),
            Some((SigningAlgorithmSpec::RsassaPssSha384, digest.clone()))
        );
    }

    #[test]
    fn ecdsa_digests_take_the_curves_hash_length() {
        let digest: Vec<u8> = (1..=48).collect();
        // Longer than the curve's hash: its leftmost bytes.
        let (alg, sent) =
            request(KeySpec::EcP256, SignatureAlgorithm::EcdsaSha384, &digest).unwrap();
        assert_eq!(alg, SigningAlgorithmSpec::EcdsaSha256);
        assert_eq!(sent, &digest[..32]);
        // Shorter: the same integer, zero bytes in front.
        let (alg, sent) =
            request(KeySpec::EcP521, SignatureAlgorithm::EcdsaSha384, &digest).unwrap();
        assert_eq!(alg, SigningAlgorithmSpec::EcdsaSha512);
        assert_eq!(&sent[..16], &[0u8; 16]);
        assert_eq!(&sent[16..], &digest[..]);
        // The curve's own hash: unchanged.
        let (alg, sent) =
            request(KeySpec::EcP384, SignatureAlgorithm::EcdsaSha384, &digest).unwrap();
        assert_eq!(alg, SigningAlgorithmSpec::EcdsaSha384);
        assert_eq!(sent, digest);
    }
}
