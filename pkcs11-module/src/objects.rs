//! The token's objects: for every agent key a private key, its public key and, when the key has
//! a certificate chain, the leaf certificate; their attributes; object handles and searches.
//!
//! `CKA_LABEL` is the key id and `CKA_ID` is the key id's UTF-8 bytes, on all three objects of
//! a key. Both depend on nothing but the id, so they are the same after a restart of the agent
//! or the consumer, and `pkcs11:token=keyward;object=KEY_ID` (RFC 7512) names the key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cryptoki_sys::*;
use der::asn1::{ObjectIdentifier, OctetStringRef};
use der::{Decode, Encode};
use keyward_sdk::{KeySpec, PublicKey, SignatureAlgorithm};

use crate::mechanism::{KeyFamily, allowed_mechanisms};

/// The most keys the token shows; the agent lists more only if misconfigured.
pub const MAX_KEYS: usize = 10_000;

/// An agent key as the signing code needs it.
#[derive(Debug, PartialEq, Eq)]
pub struct AgentKey {
    /// The key id the agent knows it by.
    pub id: String,
    /// EC, RSA or Edwards.
    pub family: KeyFamily,
    /// The algorithms the agent signs with it.
    pub algorithms: Vec<SignatureAlgorithm>,
    /// The length of every signature it makes: raw `r || s` for ECDSA, the modulus length for
    /// RSA, 64 for Ed25519.
    pub signature_len: usize,
}

/// An attribute as `C_GetAttributeValue` answers it.
#[derive(Debug, PartialEq, Eq)]
pub enum Attr {
    /// The value, encoded as PKCS#11 lays it out (`CK_ULONG` native-endian, `CK_BBOOL` a byte).
    Value(Vec<u8>),
    /// A private part of the key: `CKR_ATTRIBUTE_SENSITIVE`.
    Sensitive,
}

/// One token object.
#[derive(Debug)]
pub struct Object {
    /// `CKO_PRIVATE_KEY`, `CKO_PUBLIC_KEY` or `CKO_CERTIFICATE`.
    pub class: CK_OBJECT_CLASS,
    /// The key it belongs to.
    pub key: Arc<AgentKey>,
    attributes: BTreeMap<CK_ATTRIBUTE_TYPE, Attr>,
}

impl Object {
    /// The attribute `kind`, `None` when the object has no such attribute.
    pub fn attribute(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<&Attr> {
        self.attributes.get(&kind)
    }

    /// Whether every attribute of `template` has exactly the given value here (`C_FindObjects`).
    pub fn matches(&self, template: &[(CK_ATTRIBUTE_TYPE, &[u8])]) -> bool {
        template.iter().all(|(kind, value)| {
            matches!(self.attributes.get(kind), Some(Attr::Value(v)) if v.as_slice() == *value)
        })
    }
}

fn ulong(value: CK_ULONG) -> Attr {
    Attr::Value(value.to_ne_bytes().to_vec())
}

fn boolean(value: bool) -> Attr {
    Attr::Value(vec![if value { CK_TRUE } else { CK_FALSE }])
}

fn bytes(value: &[u8]) -> Attr {
    Attr::Value(value.to_vec())
}

fn der_of(value: &impl Encode) -> Result<Vec<u8>, String> {
    value.to_der().map_err(|e| format!("cannot encode: {e}"))
}

/// What a public key gives the objects: the family's attributes and the signature length.
struct KeyMaterial {
    family: KeyFamily,
    signature_len: usize,
    /// `CKA_EC_PARAMS`, `CKA_MODULUS`, ... shared by the private and the public key.
    shared: Vec<(CK_ATTRIBUTE_TYPE, Attr)>,
    /// Attributes only the public key has (`CKA_EC_POINT`, `CKA_MODULUS_BITS`).
    public_only: Vec<(CK_ATTRIBUTE_TYPE, Attr)>,
}

fn curve_oid(spec: KeySpec) -> Option<(&'static str, usize)> {
    Some(match spec {
        KeySpec::EcP256 => ("1.2.840.10045.3.1.7", 32),
        KeySpec::EcP384 => ("1.3.132.0.34", 48),
        KeySpec::EcP521 => ("1.3.132.0.35", 66),
        _ => return None,
    })
}

fn key_material(spec: KeySpec, spki_der: &[u8]) -> Result<KeyMaterial, String> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| format!("the agent's public key is not a SubjectPublicKeyInfo: {e}"))?;
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or("the agent's public key has a partial last byte")?;
    let oid = |s: &str| -> Result<Attr, String> {
        let oid = ObjectIdentifier::new(s).map_err(|e| e.to_string())?;
        Ok(Attr::Value(der_of(&oid)?))
    };
    let point = |bits: &[u8]| -> Result<Attr, String> {
        let octets = OctetStringRef::new(bits).map_err(|e| e.to_string())?;
        Ok(Attr::Value(der_of(&octets)?))
    };
    match spec {
        KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => {
            let (curve, field_len) = curve_oid(spec).ok_or("not a curve")?;
            if bits.len() != 1 + 2 * field_len || bits[0] != 4 {
                return Err("the agent's EC public key is not an uncompressed point".into());
            }
            Ok(KeyMaterial {
                family: KeyFamily::Ec,
                signature_len: 2 * field_len,
                shared: vec![(CKA_EC_PARAMS, oid(curve)?)],
                public_only: vec![(CKA_EC_POINT, point(bits)?)],
            })
        }
        KeySpec::Ed25519 => {
            if bits.len() != 32 {
                return Err("the agent's Ed25519 public key is not 32 bytes".into());
            }
            Ok(KeyMaterial {
                family: KeyFamily::Edwards,
                signature_len: 64,
                // RFC 8410's id-Ed25519, which PKCS#11 3.0 allows in CKA_EC_PARAMS.
                shared: vec![(CKA_EC_PARAMS, oid("1.3.101.112")?)],
                public_only: vec![(CKA_EC_POINT, point(bits)?)],
            })
        }
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let rsa = pkcs1::RsaPublicKey::<der::asn1::UintRef<'_>>::from_der(bits)
                .map_err(|e| format!("the agent's RSA public key does not parse: {e}"))?;
            let modulus = rsa.modulus.as_bytes();
            let modulus_bits = modulus.len() * 8 - modulus[0].leading_zeros() as usize;
            Ok(KeyMaterial {
                family: KeyFamily::Rsa,
                signature_len: modulus.len(),
                // CKA_MODULUS_BITS belongs to public keys; consumers (pkcs11-tool for PSS, Java)
                // also read it from the private key, where it reveals nothing.
                shared: vec![
                    (CKA_MODULUS, bytes(modulus)),
                    (CKA_PUBLIC_EXPONENT, bytes(rsa.public_exponent.as_bytes())),
                    (CKA_MODULUS_BITS, ulong(modulus_bits as CK_ULONG)),
                ],
                public_only: vec![],
            })
        }
        other => Err(format!("key spec {other:?} is not one this token knows")),
    }
}

/// The certificate fields PKCS#11 repeats as attributes.
struct CertificateFields {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    serial: Vec<u8>,
}

fn certificate_fields(leaf: &[u8]) -> Result<CertificateFields, String> {
    let cert = x509_cert::Certificate::from_der(leaf)
        .map_err(|e| format!("its leaf certificate does not parse: {e}"))?;
    let tbs = cert.tbs_certificate();
    Ok(CertificateFields {
        subject: der_of(tbs.subject())?,
        issuer: der_of(tbs.issuer())?,
        serial: der_of(tbs.serial_number())?,
    })
}

/// The objects of one agent key: private key, public key and (with a chain) certificate.
/// `Err` says why the key cannot be shown (it is left out of the token).
pub fn objects_of(key: &PublicKey) -> Result<Vec<Object>, String> {
    let spec = key.info.key_spec();
    let material = key_material(spec, &key.der)?;
    let agent_key = Arc::new(AgentKey {
        id: key.info.key_id.clone(),
        family: material.family,
        algorithms: key.info.algorithms().collect(),
        signature_len: material.signature_len,
    });
    let certificate = match key.certificate_chain.first() {
        Some(leaf) => Some((leaf, certificate_fields(leaf)?)),
        None => None,
    };
    let subject = certificate
        .as_ref()
        .map_or(&[][..], |(_, c)| c.subject.as_slice());
    let label = key.info.key_id.as_bytes();

    let storage = |class: CK_OBJECT_CLASS| {
        vec![
            (CKA_CLASS, ulong(class)),
            (CKA_TOKEN, boolean(true)),
            // No login is needed to see or use any object: the agent's policy decides who signs.
            (CKA_PRIVATE, boolean(false)),
            (CKA_MODIFIABLE, boolean(false)),
            (CKA_COPYABLE, boolean(false)),
            (CKA_DESTROYABLE, boolean(false)),
            (CKA_LABEL, bytes(label)),
            (CKA_ID, bytes(label)),
        ]
    };
    let key_common = |class: CK_OBJECT_CLASS| {
        let mut attrs = storage(class);
        attrs.extend([
            (CKA_KEY_TYPE, ulong(material.family.key_type())),
            (CKA_START_DATE, bytes(&[])),
            (CKA_END_DATE, bytes(&[])),
            (CKA_DERIVE, boolean(false)),
            (CKA_LOCAL, boolean(false)),
            (CKA_KEY_GEN_MECHANISM, ulong(CK_UNAVAILABLE_INFORMATION)),
            (CKA_SUBJECT, bytes(subject)),
            (CKA_PUBLIC_KEY_INFO, bytes(&key.der)),
        ]);
        attrs.extend(material.shared.iter().map(|(k, v)| (*k, clone_attr(v))));
        attrs
    };

    let mut private = key_common(CKO_PRIVATE_KEY);
    let mechanisms: Vec<u8> = allowed_mechanisms(material.family, &agent_key.algorithms)
        .iter()
        .flat_map(|m| m.to_ne_bytes())
        .collect();
    private.extend([
        (CKA_SENSITIVE, boolean(true)),
        (CKA_ALWAYS_SENSITIVE, boolean(true)),
        (CKA_EXTRACTABLE, boolean(false)),
        (CKA_NEVER_EXTRACTABLE, boolean(true)),
        (CKA_SIGN, boolean(true)),
        (CKA_SIGN_RECOVER, boolean(false)),
        (CKA_DECRYPT, boolean(false)),
        (CKA_UNWRAP, boolean(false)),
        (CKA_WRAP_WITH_TRUSTED, boolean(false)),
        (CKA_ALWAYS_AUTHENTICATE, boolean(false)),
        (CKA_ALLOWED_MECHANISMS, Attr::Value(mechanisms)),
    ]);
    private.extend(
        [
            CKA_VALUE,
            CKA_PRIVATE_EXPONENT,
            CKA_PRIME_1,
            CKA_PRIME_2,
            CKA_EXPONENT_1,
            CKA_EXPONENT_2,
            CKA_COEFFICIENT,
        ]
        .map(|kind| (kind, Attr::Sensitive)),
    );

    let mut public = key_common(CKO_PUBLIC_KEY);
    public.extend([
        (CKA_ENCRYPT, boolean(false)),
        // Signatures are verified by the caller's own crypto (C_Verify is not offered).
        (CKA_VERIFY, boolean(false)),
        (CKA_VERIFY_RECOVER, boolean(false)),
        (CKA_WRAP, boolean(false)),
        (CKA_TRUSTED, boolean(false)),
    ]);
    public.extend(
        material
            .public_only
            .iter()
            .map(|(k, v)| (*k, clone_attr(v))),
    );

    let mut objects = vec![
        object(CKO_PRIVATE_KEY, &agent_key, private),
        object(CKO_PUBLIC_KEY, &agent_key, public),
    ];
    if let Some((leaf, fields)) = certificate {
        let mut cert = storage(CKO_CERTIFICATE);
        cert.extend([
            (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
            (CKA_TRUSTED, boolean(false)),
            (
                CKA_CERTIFICATE_CATEGORY,
                ulong(CK_CERTIFICATE_CATEGORY_TOKEN_USER),
            ),
            (CKA_JAVA_MIDP_SECURITY_DOMAIN, ulong(0)),
            (CKA_START_DATE, bytes(&[])),
            (CKA_END_DATE, bytes(&[])),
            (CKA_SUBJECT, bytes(&fields.subject)),
            (CKA_ISSUER, bytes(&fields.issuer)),
            (CKA_SERIAL_NUMBER, bytes(&fields.serial)),
            (CKA_VALUE, bytes(leaf)),
        ]);
        objects.push(object(CKO_CERTIFICATE, &agent_key, cert));
    }
    Ok(objects)
}

fn clone_attr(attr: &Attr) -> Attr {
    match attr {
        Attr::Value(v) => Attr::Value(v.clone()),
        Attr::Sensitive => Attr::Sensitive,
    }
}

fn object(
    class: CK_OBJECT_CLASS,
    key: &Arc<AgentKey>,
    attributes: Vec<(CK_ATTRIBUTE_TYPE, Attr)>,
) -> Object {
    Object {
        class,
        key: key.clone(),
        attributes: attributes.into_iter().collect(),
    }
}

/// The objects the token shows now, by handle. A handle names the same object (key id and
/// class) for as long as the module is initialised, across refreshes; a key that disappears
/// leaves its handles invalid, and they are never reused.
#[derive(Debug, Default)]
pub struct ObjectStore {
    handles: HashMap<(String, CK_OBJECT_CLASS), CK_OBJECT_HANDLE>,
    last_handle: CK_OBJECT_HANDLE,
    objects: BTreeMap<CK_OBJECT_HANDLE, Arc<Object>>,
}

impl ObjectStore {
    /// Replaces every object with `objects` (the agent's answer now).
    pub fn replace(&mut self, objects: Vec<Object>) {
        self.objects.clear();
        for object in objects {
            let id = (object.key.id.clone(), object.class);
            let handle = match self.handles.get(&id) {
                Some(handle) => *handle,
                None => {
                    self.last_handle += 1;
                    self.handles.insert(id, self.last_handle);
                    self.last_handle
                }
            };
            self.objects.insert(handle, Arc::new(object));
        }
    }

    /// The object behind `handle`.
    pub fn get(&self, handle: CK_OBJECT_HANDLE) -> Option<Arc<Object>> {
        self.objects.get(&handle).cloned()
    }

    /// The handles of the objects that match `template`, in handle order.
    pub fn find(&self, template: &[(CK_ATTRIBUTE_TYPE, &[u8])]) -> Vec<CK_OBJECT_HANDLE> {
        self.objects
            .iter()
            .filter(|(_, o)| o.matches(template))
            .map(|(h, _)| *h)
            .collect()
    }
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
