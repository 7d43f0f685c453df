//! The key file: the TSS2 PRIVATE KEY format (PEM around ASN.1 DER), as written by
//! ssh-tpm-agent, tpm2-openssl and tpm2-tss-engine ("ASN.1 Specification for TPM 2.0 Key
//! Files"):
//!
//! ```text
//! TPMKey ::= SEQUENCE {
//!   type        OBJECT IDENTIFIER,            -- id-loadablekey 2.23.133.10.1.3
//!   emptyAuth   [0] EXPLICIT BOOLEAN OPTIONAL,
//!   policy      [1] EXPLICIT SEQUENCE OF TPMPolicy OPTIONAL,
//!   secret      [2] EXPLICIT OCTET STRING OPTIONAL,
//!   authPolicy  [3] EXPLICIT SEQUENCE OF TPMAuthPolicy OPTIONAL,
//!   description [4] EXPLICIT UTF8String OPTIONAL,
//!   rsaParent   [5] EXPLICIT BOOLEAN OPTIONAL,
//!   parent      INTEGER,                      -- 0x40000001: the owner hierarchy's SRK
//!   pubkey      OCTET STRING,                 -- TPM2B_PUBLIC
//!   privkey     OCTET STRING                  -- TPM2B_PRIVATE, wrapped by the parent
//! }
//! ```
//!
//! The private part is encrypted by the TPM under its storage root key: the file is useless on
//! another TPM, or on this one after `tpm2_clear`. keyward reads and writes loadable keys whose
//! parent is the owner hierarchy, without policies (a key with a PCR or auth policy is refused
//! with a clear error rather than half-supported).

use der::asn1::{Any, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Sequence};
use tss_esapi::structures::{Private, Public, PublicBuffer};
use tss_esapi::traits::{Marshall, UnMarshall};

/// The PEM label of a TPM key file.
pub const PEM_LABEL: &str = "TSS2 PRIVATE KEY";
/// `id-loadablekey`: a key to load with TPM2_Load under `parent`.
const LOADABLE_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.10.1.3");
/// TPM_RH_OWNER: the parent is the storage root key of the owner hierarchy, created on demand
/// from the standard template.
pub const OWNER_PARENT: u32 = 0x4000_0001;
/// Key files are a few hundred bytes; anything much larger is not one.
pub const MAX_FILE_LEN: u64 = 16 * 1024;

#[derive(Sequence)]
struct TpmKeyAsn1 {
    key_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    empty_auth: Option<bool>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    policy: Option<Any>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    secret: Option<Any>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    auth_policy: Option<Any>,
    #[asn1(context_specific = "4", tag_mode = "EXPLICIT", optional = "true")]
    description: Option<String>,
    #[asn1(context_specific = "5", tag_mode = "EXPLICIT", optional = "true")]
    rsa_parent: Option<bool>,
    parent: u32,
    pubkey: OctetString,
    privkey: OctetString,
}

/// A TPM-wrapped key as stored on disk.
#[derive(Clone, Debug)]
pub struct KeyFile {
    /// True when the key has no authorization value (no PIN).
    pub empty_auth: bool,
    /// The free-text description (keyward writes the key's name).
    pub description: Option<String>,
    /// The public area.
    pub public: Public,
    /// The public area as stored (TPM2B_PUBLIC).
    pub public_blob: Vec<u8>,
    /// The wrapped private area as stored (TPM2B_PRIVATE).
    pub private_blob: Vec<u8>,
}

impl KeyFile {
    /// A key file for a key the TPM just created under the owner SRK.
    pub fn new(
        public: Public,
        private: &Private,
        empty_auth: bool,
        description: &str,
    ) -> Result<Self, String> {
        let public_blob = PublicBuffer::try_from(public.clone())
            .and_then(|buffer| buffer.marshall())
            .map_err(|e| format!("cannot encode the public area: {e}"))?;
        let value = private.value();
        let len = u16::try_from(value.len()).map_err(|_| "the private area is too large")?;
        let mut private_blob = len.to_be_bytes().to_vec();
        private_blob.extend_from_slice(value);
        Ok(KeyFile {
            empty_auth,
            description: Some(description.to_string()),
            public,
            public_blob,
            private_blob,
        })
    }

    /// Parses a key file; the error says what is wrong with it.
    pub fn from_pem(text: &[u8]) -> Result<Self, String> {
        let pem = pem::parse(text).map_err(|e| format!("not a PEM file ({e})"))?;
        if pem.tag() != PEM_LABEL {
            return Err(format!(
                "a PEM {:?} block, not a TPM key ({PEM_LABEL:?})",
                pem.tag()
            ));
        }
        let asn1 = TpmKeyAsn1::from_der(pem.contents())
            .map_err(|e| format!("not a TPM key file ({e})"))?;
        if asn1.key_type != LOADABLE_KEY {
            return Err(format!(
                "a TPM key of type {} (an importable or sealed key): only loadable keys (2.23.133.10.1.3) are supported",
                asn1.key_type
            ));
        }
        if asn1.policy.is_some() || asn1.auth_policy.is_some() || asn1.secret.is_some() {
            return Err(
                "a TPM key with a policy or an import secret: keyward supports keys without policies".into(),
            );
        }
        if asn1.rsa_parent == Some(true) || asn1.parent != OWNER_PARENT {
            return Err(format!(
                "a TPM key whose parent is {:#x}{}: keyward loads keys under the owner hierarchy's storage key (parent 0x40000001)",
                asn1.parent,
                if asn1.rsa_parent == Some(true) {
                    " (an RSA SRK)"
                } else {
                    ""
                }
            ));
        }
        let public_blob = asn1.pubkey.into_bytes().into_vec();
        let public = PublicBuffer::unmarshall(&public_blob)
            .and_then(Public::try_from)
            .map_err(|e| format!("its public area does not parse ({e})"))?;
        let private_blob = asn1.privkey.into_bytes().into_vec();
        private_from_blob(&private_blob)?;
        Ok(KeyFile {
            empty_auth: asn1.empty_auth.unwrap_or(false),
            description: asn1.description,
            public,
            public_blob,
            private_blob,
        })
    }

    /// The file's text.
    pub fn to_pem(&self) -> Result<String, String> {
        let asn1 = TpmKeyAsn1 {
            key_type: LOADABLE_KEY,
            empty_auth: self.empty_auth.then_some(true),
            policy: None,
            secret: None,
            auth_policy: None,
            description: self.description.clone(),
            rsa_parent: None,
            parent: OWNER_PARENT,
            pubkey: OctetString::new(self.public_blob.clone()).map_err(|e| e.to_string())?,
            privkey: OctetString::new(self.private_blob.clone()).map_err(|e| e.to_string())?,
        };
        let der = asn1
            .to_der()
            .map_err(|e| format!("cannot encode the key: {e}"))?;
        Ok(pem::encode(&pem::Pem::new(PEM_LABEL, der)))
    }

    /// The wrapped private area, to load.
    pub fn private(&self) -> Result<Private, String> {
        private_from_blob(&self.private_blob)
    }
}

fn private_from_blob(blob: &[u8]) -> Result<Private, String> {
    let (size, value) = blob
        .split_first_chunk::<2>()
        .ok_or("its private area is truncated")?;
    if usize::from(u16::from_be_bytes(*size)) != value.len() {
        return Err("its private area has the wrong length".into());
    }
    Private::try_from(value.to_vec()).map_err(|e| format!("its private area does not parse ({e})"))
}

#[cfg(test)]
mod tests {
    use tss_esapi::attributes::ObjectAttributesBuilder;
    use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
    use tss_esapi::interface_types::ecc::EccCurve;
    use tss_esapi::structures::{EccPoint, PublicBuilder};

    use super::*;

    fn public() -> Public {
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_sign_encrypt(true)
            .build()
            .unwrap();
        let parameters = crate::templates::ecc_signing_parameters(EccCurve::NistP256).unwrap();
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_ecc_parameters(parameters)
            .with_ecc_unique_identifier(EccPoint::default())
            .build()
            .unwrap()
    }

    #[test]
    fn round_trip() {
        let private = Private::try_from(vec![7u8; 100]).unwrap();
        let file = KeyFile::new(public(), &private, false, "release").unwrap();
        let text = file.to_pem().unwrap();
        assert!(
            text.starts_with("-----BEGIN TSS2 PRIVATE KEY-----"),
            "{text}"
        );
        let back = KeyFile::from_pem(text.as_bytes()).unwrap();
        assert!(!back.empty_auth);
        assert_eq!(back.description.as_deref(), Some("release"));
        assert_eq!(back.public, file.public);
        assert_eq!(back.private().unwrap().value(), &[7u8; 100]);
        let no_pin = KeyFile::new(public(), &private, true, "ci").unwrap();
        let back = KeyFile::from_pem(no_pin.to_pem().unwrap().as_bytes()).unwrap();
        assert!(back.empty_auth);
    }

    #[test]
    fn foreign_files_are_refused_with_a_reason() {
        let private = Private::try_from(vec![7u8; 10]).unwrap();
        let mut asn1 = TpmKeyAsn1 {
            key_type: LOADABLE_KEY,
            empty_auth: Some(true),
            policy: None,
            secret: None,
            auth_policy: None,
            description: None,
            rsa_parent: None,
            parent: 0x8100_0001,
            pubkey: OctetString::new(
                KeyFile::new(public(), &private, true, "x")
                    .unwrap()
                    .public_blob,
            )
            .unwrap(),
            privkey: OctetString::new(vec![0, 5, 9]).unwrap(),
        };
        let encode = |asn1: &TpmKeyAsn1| {
            pem::encode(&pem::Pem::new(PEM_LABEL, asn1.to_der().unwrap())).into_bytes()
        };
        let err = KeyFile::from_pem(&encode(&asn1)).unwrap_err();
        assert!(err.contains("0x81000001"), "{err}");
        asn1.parent = OWNER_PARENT;
        asn1.key_type = ObjectIdentifier::new_unwrap("2.23.133.10.1.5");
        let err = KeyFile::from_pem(&encode(&asn1)).unwrap_err();
        assert!(err.contains("sealed"), "{err}");
        asn1.key_type = LOADABLE_KEY;
        let err = KeyFile::from_pem(&encode(&asn1)).unwrap_err();
        assert!(err.contains("private area"), "{err}");
        let err =
            KeyFile::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err();
        assert!(err.contains("not a TPM key"), "{err}");
        assert!(KeyFile::from_pem(b"garbage").is_err());
    }
}
