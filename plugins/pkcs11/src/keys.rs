//! Finding signing keys on the token and describing them: the private key object, its public
//! key (from the matching public-key object, `CKA_PUBLIC_KEY_INFO`, or the public components),
//! as a DER SubjectPublicKeyInfo built with OpenSSL. Only public attributes are ever read.

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyward_plugin_api::verify::key_spec_of_spki;
use keyward_plugin_api::{BackendError, KeyDescription};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey};
use openssl::rsa::Rsa;

use crate::errors::{Context, OpError};
use crate::uri::KeyQuery;

/// DER of the OID 1.2.840.10045.3.1.7 (P-256).
pub(crate) const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID 1.3.132.0.34 (P-384).
pub(crate) const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of the OID 1.3.132.0.35 (P-521).
pub(crate) const OID_P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
/// DER of the OID 1.3.101.112 (Ed25519, RFC 8410).
pub(crate) const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER PrintableString "edwards25519", the curve name PKCS#11 3.0 tokens (and OpenSC) use.
pub(crate) const NAME_ED25519: &[u8] = b"\x13\x0cedwards25519";
/// DER of the OID 1.3.6.1.4.1.11591.15.1 (GnuPG's Ed25519 curve), seen on some tokens.
const OID_ED25519_GNU: &[u8] = &[
    0x06, 0x09, 0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01,
];

/// The attributes keyward reads from a key object. All are public.
const READ: [AttributeType; 9] = [
    AttributeType::KeyType,
    AttributeType::Label,
    AttributeType::Id,
    AttributeType::EcParams,
    AttributeType::EcPoint,
    AttributeType::Modulus,
    AttributeType::PublicExponent,
    AttributeType::PublicKeyInfo,
    AttributeType::AlwaysAuthenticate,
];

/// The public attributes of one key object.
#[derive(Debug, Default)]
pub(crate) struct KeyAttrs {
    pub key_type: Option<KeyType>,
    pub label: Vec<u8>,
    pub id: Vec<u8>,
    ec_params: Option<Vec<u8>>,
    ec_point: Option<Vec<u8>>,
    modulus: Option<Vec<u8>>,
    exponent: Option<Vec<u8>>,
    public_key_info: Option<Vec<u8>>,
    /// `CKA_ALWAYS_AUTHENTICATE`: the key wants the PIN again before every signature.
    always_authenticate: bool,
}

impl KeyAttrs {
    /// The label as text, for messages.
    pub fn label_text(&self) -> String {
        String::from_utf8_lossy(&self.label).into_owned()
    }
}

/// Reads the public attributes of `object`.
pub(crate) fn read_attrs(session: &Session, object: ObjectHandle) -> Result<KeyAttrs, OpError> {
    let attrs = session
        .get_attributes(object, &READ)
        .doing(|| "reading key attributes".into())?;
    let mut out = KeyAttrs::default();
    for attr in attrs {
        match attr {
            Attribute::KeyType(t) => out.key_type = Some(t),
            Attribute::Label(v) => out.label = v,
            Attribute::Id(v) => out.id = v,
            Attribute::EcParams(v) if !v.is_empty() => out.ec_params = Some(v),
            Attribute::EcPoint(v) if !v.is_empty() => out.ec_point = Some(v),
            Attribute::Modulus(v) if !v.is_empty() => out.modulus = Some(v),
            Attribute::PublicExponent(v) if !v.is_empty() => out.exponent = Some(v),
            Attribute::PublicKeyInfo(v) if !v.is_empty() => out.public_key_info = Some(v),
            Attribute::AlwaysAuthenticate(b) => out.always_authenticate = b,
            _ => {}
        }
    }
    Ok(out)
}

/// Every private key on the token that may sign.
pub(crate) fn signing_keys(session: &Session) -> Result<Vec<ObjectHandle>, OpError> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Sign(true),
        ])
        .doing(|| "listing the private keys".into())
}

/// Whether any private key (signing or not) has this label.
pub(crate) fn private_key_labelled(session: &Session, label: &str) -> Result<bool, OpError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .doing(|| format!("looking for a private key labelled {label:?}"))?;
    Ok(!found.is_empty())
}

/// The one signing private key `query` names; `NotFound` or an ambiguity error otherwise.
pub(crate) fn find_private(
    session: &Session,
    query: &KeyQuery,
    token: &str,
) -> Result<ObjectHandle, OpError> {
    let find = |label: Option<&Vec<u8>>, id: Option<&Vec<u8>>| {
        let mut template = vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Sign(true),
        ];
        template.extend(label.map(|l| Attribute::Label(l.clone())));
        template.extend(id.map(|i| Attribute::Id(i.clone())));
        session
            .find_objects(&template)
            .doing(|| "finding the private key".into())
    };
    let mut found = find(query.label.as_ref(), query.id.as_ref())?;
    if found.is_empty()
        && let Some(id) = &query.fallback_id
    {
        found = find(None, Some(id))?;
    }
    let what = describe_query(query);
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(BackendError::NotFound(format!(
            "token {token:?} has no signing private key with {what}"
        ))
        .into()),
        _ => Err(BackendError::InvalidInput(format!(
            "token {token:?} has {} signing private keys with {what}; name one by its id (\"id-<hex>\" or a pkcs11: URI with id=)",
            found.len()
        ))
        .into()),
    }
}

fn describe_query(query: &KeyQuery) -> String {
    let mut parts = Vec::new();
    if let Some(label) = &query.label {
        parts.push(format!("label {:?}", String::from_utf8_lossy(label)));
    }
    if let Some(id) = &query.id {
        parts.push(format!("id {}", hex::encode(id)));
    }
    if let Some(id) = &query.fallback_id {
        parts.push(format!("(or id {})", hex::encode(id)));
    }
    parts.join(" ")
}

/// The public key object paired with a private key: same `CKA_ID` (when it has one), else
/// same label.
fn find_public(session: &Session, private: &KeyAttrs) -> Result<Option<KeyAttrs>, OpError> {
    let template = if !private.id.is_empty() {
        Attribute::Id(private.id.clone())
    } else if !private.label.is_empty() {
        Attribute::Label(private.label.clone())
    } else {
        return Ok(None);
    };
    let found = session
        .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), template])
        .doing(|| "finding the public key object".into())?;
    match found.first() {
        Some(handle) => read_attrs(session, *handle).map(Some),
        None => Ok(None),
    }
}

/// Describes the private key `object` as `reference`: its spec and public key.
pub(crate) fn describe(
    session: &Session,
    object: ObjectHandle,
    reference: &str,
    token: &str,
) -> Result<KeyDescription, OpError> {
    let private = read_attrs(session, object)?;
    let unsupported = |why: String| {
        OpError::Backend(BackendError::Unsupported(format!(
            "key {reference:?} (label {:?}) on token {token:?}: {why}",
            private.label_text()
        )))
    };
    match private.key_type {
        Some(KeyType::RSA | KeyType::EC | KeyType::EC_EDWARDS) => {}
        Some(other) => {
            return Err(unsupported(format!(
                "key type {other} is not supported; keyward signs with RSA, EC (P-256/384/521) and Ed25519 keys"
            )));
        }
        None => return Err(unsupported("the token does not tell its key type".into())),
    }
    if private.always_authenticate {
        return Err(unsupported(
            "it asks for the PIN before every signature (CKA_ALWAYS_AUTHENTICATE), which keyward does not do; make the key with a PIN policy of once (ykman piv keys generate --pin-policy ONCE)"
                .into(),
        ));
    }
    let public = find_public(session, &private)?;
    let spki = public
        .as_ref()
        .map(|public| public_key_der(public, private.key_type))
        .filter(Result::is_ok)
        .or_else(|| private.public_key_info.clone().map(Ok))
        .unwrap_or_else(|| public_key_der(&private, private.key_type))
        .map_err(|why| unsupported(format!("cannot build its public key: {why}")))?;
    let spec = key_spec_of_spki(&spki).map_err(|e| unsupported(e.to_string()))?;
    Ok(KeyDescription {
        reference: reference.to_string(),
        spec,
        public_key_der: spki,
        version: None,
        openpgp_certificate: None,
        attributes: Default::default(),
        algorithms: Vec::new(),
    })
}

/// A DER SubjectPublicKeyInfo from a key object's public components.
fn public_key_der(attrs: &KeyAttrs, key_type: Option<KeyType>) -> Result<Vec<u8>, String> {
    let ssl = |e: openssl::error::ErrorStack| e.to_string();
    match attrs.key_type.or(key_type) {
        Some(KeyType::RSA) => {
            let (Some(n), Some(e)) = (&attrs.modulus, &attrs.exponent) else {
                return Err("no CKA_MODULUS / CKA_PUBLIC_EXPONENT".into());
            };
            let rsa = Rsa::from_public_components(
                BigNum::from_slice(n).map_err(ssl)?,
                BigNum::from_slice(e).map_err(ssl)?,
            )
            .map_err(ssl)?;
            PKey::from_rsa(rsa)
                .and_then(|k| k.public_key_to_der())
                .map_err(ssl)
        }
        Some(KeyType::EC) => {
            let (Some(params), Some(point)) = (&attrs.ec_params, &attrs.ec_point) else {
                return Err("no CKA_EC_PARAMS / CKA_EC_POINT".into());
            };
            let nid = match params.as_slice() {
                OID_P256 => Nid::X9_62_PRIME256V1,
                OID_P384 => Nid::SECP384R1,
                OID_P521 => Nid::SECP521R1,
                other => {
                    return Err(format!(
                        "curve with CKA_EC_PARAMS {} is not supported (P-256, P-384, P-521 are)",
                        hex::encode(other)
                    ));
                }
            };
            let group = EcGroup::from_curve_name(nid).map_err(ssl)?;
            let mut ctx = BigNumContext::new().map_err(ssl)?;
            // CKA_EC_POINT is a DER OCTET STRING around 04||X||Y; some tokens give it bare.
            let point = unwrap_octet_string(point)
                .and_then(|inner| EcPoint::from_bytes(&group, inner, &mut ctx).ok())
                .map_or_else(|| EcPoint::from_bytes(&group, point, &mut ctx), Ok)
                .map_err(|e| format!("CKA_EC_POINT is not a point on the curve: {e}"))?;
            let key = EcKey::from_public_key(&group, &point).map_err(ssl)?;
            PKey::from_ec_key(key)
                .and_then(|k| k.public_key_to_der())
                .map_err(ssl)
        }
        Some(KeyType::EC_EDWARDS) => {
            let (Some(params), Some(point)) = (&attrs.ec_params, &attrs.ec_point) else {
                return Err("no CKA_EC_PARAMS / CKA_EC_POINT".into());
            };
            if !matches!(
                params.as_slice(),
                OID_ED25519 | NAME_ED25519 | OID_ED25519_GNU
            ) {
                return Err(format!(
                    "Edwards curve with CKA_EC_PARAMS {} is not supported (Ed25519 is)",
                    hex::encode(params)
                ));
            }
            let raw = unwrap_octet_string(point)
                .filter(|inner| inner.len() == 32)
                .unwrap_or(point);
            if raw.len() != 32 {
                return Err(format!("CKA_EC_POINT has {} bytes, not 32", raw.len()));
            }
            PKey::public_key_from_raw_bytes(raw, Id::ED25519)
                .and_then(|k| k.public_key_to_der())
                .map_err(ssl)
        }
        _ => Err("unknown key type".into()),
    }
}

/// The content of a DER OCTET STRING that spans all of `bytes`, if it is one.
fn unwrap_octet_string(bytes: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = bytes.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 2 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, &rest[n..])
    };
    (body.len() == len).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_strings() {
        assert_eq!(
            unwrap_octet_string(&[0x04, 0x02, 1, 2]),
            Some(&[1u8, 2][..])
        );
        assert_eq!(unwrap_octet_string(&[0x04, 0x03, 1, 2]), None);
        let mut long = vec![0x04, 0x81, 0x85];
        long.extend([7u8; 0x85]);
        assert_eq!(unwrap_octet_string(&long).map(<[u8]>::len), Some(0x85));
    }

    #[test]
    fn ec_spki_from_wrapped_and_bare_points() {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let bare = key
            .public_key()
            .to_bytes(
                &group,
                openssl::ec::PointConversionForm::UNCOMPRESSED,
                &mut ctx,
            )
            .unwrap();
        let expected = PKey::from_ec_key(key).unwrap().public_key_to_der().unwrap();
        let mut wrapped = vec![0x04, bare.len() as u8];
        wrapped.extend(&bare);
        for point in [bare, wrapped] {
            let attrs = KeyAttrs {
                key_type: Some(KeyType::EC),
                ec_params: Some(OID_P256.to_vec()),
                ec_point: Some(point),
                ..KeyAttrs::default()
            };
            assert_eq!(public_key_der(&attrs, None).unwrap(), expected);
        }
    }

    #[test]
    fn ed25519_spki_with_either_curve_name() {
        let key = PKey::generate_ed25519().unwrap();
        let raw = key.raw_public_key().unwrap();
        let mut point = vec![0x04, 0x20];
        point.extend(&raw);
        for params in [OID_ED25519, NAME_ED25519, OID_ED25519_GNU] {
            let attrs = KeyAttrs {
                key_type: Some(KeyType::EC_EDWARDS),
                ec_params: Some(params.to_vec()),
                ec_point: Some(point.clone()),
                ..KeyAttrs::default()
            };
            assert_eq!(
                public_key_der(&attrs, None).unwrap(),
                key.public_key_to_der().unwrap()
            );
        }
    }
}
