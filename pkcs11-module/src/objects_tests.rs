//! Tests of the objects built for agent keys, on real public keys and a real certificate.

use super::*;
use crate::fixtures::{self, EC_P256, EC_P256_CERT, EC_P521, ED25519, RSA_2048};

fn value(object: &Object, kind: CK_ATTRIBUTE_TYPE) -> Vec<u8> {
    match object.attribute(kind) {
        Some(Attr::Value(v)) => v.clone(),
        other => panic!("attribute {kind:#x} of a {:#x}: {other:?}", object.class),
    }
}

fn ulong_of(object: &Object, kind: CK_ATTRIBUTE_TYPE) -> CK_ULONG {
    CK_ULONG::from_ne_bytes(value(object, kind).try_into().unwrap())
}

fn bool_of(object: &Object, kind: CK_ATTRIBUTE_TYPE) -> bool {
    match value(object, kind).as_slice() {
        [CK_TRUE] => true,
        [CK_FALSE] => false,
        other => panic!("attribute {kind:#x} is not a CK_BBOOL: {other:?}"),
    }
}

fn by_class(objects: &[Object], class: CK_OBJECT_CLASS) -> &Object {
    objects.iter().find(|o| o.class == class).unwrap()
}

#[test]
fn a_key_with_a_chain_is_a_private_key_a_public_key_and_a_certificate_with_one_id() {
    let key = fixtures::key("release-signing", KeySpec::EcP256, EC_P256, &[EC_P256_CERT]);
    let objects = objects_of(&key).unwrap();
    assert_eq!(objects.len(), 3);
    for object in &objects {
        assert_eq!(value(object, CKA_LABEL), b"release-signing");
        assert_eq!(value(object, CKA_ID), b"release-signing");
        assert_eq!(ulong_of(object, CKA_CLASS), object.class);
        assert!(bool_of(object, CKA_TOKEN));
        assert!(!bool_of(object, CKA_PRIVATE));
        assert!(!bool_of(object, CKA_MODIFIABLE));
        assert!(!bool_of(object, CKA_DESTROYABLE));
    }

    let private = by_class(&objects, CKO_PRIVATE_KEY);
    assert_eq!(ulong_of(private, CKA_KEY_TYPE), CKK_EC);
    for (kind, expected) in [
        (CKA_SIGN, true),
        (CKA_SENSITIVE, true),
        (CKA_ALWAYS_SENSITIVE, true),
        (CKA_EXTRACTABLE, false),
        (CKA_NEVER_EXTRACTABLE, true),
        (CKA_DECRYPT, false),
        (CKA_ALWAYS_AUTHENTICATE, false),
    ] {
        assert_eq!(bool_of(private, kind), expected, "{kind:#x}");
    }
    // id-prime256v1
    assert_eq!(
        value(private, CKA_EC_PARAMS),
        [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
    );
    assert_eq!(private.attribute(CKA_VALUE), Some(&Attr::Sensitive));
    assert_eq!(value(private, CKA_PUBLIC_KEY_INFO), EC_P256);
    assert_eq!(private.key.signature_len, 64);

    let public = by_class(&objects, CKO_PUBLIC_KEY);
    // A DER OCTET STRING around the uncompressed point, which ends the SubjectPublicKeyInfo.
    let point = value(public, CKA_EC_POINT);
    assert_eq!(point[..3], [0x04, 0x41, 0x04]);
    assert!(EC_P256.ends_with(&point[2..]));
    assert_eq!(public.attribute(CKA_VALUE), None);

    let cert = by_class(&objects, CKO_CERTIFICATE);
    assert_eq!(value(cert, CKA_VALUE), EC_P256_CERT);
    assert_eq!(ulong_of(cert, CKA_CERTIFICATE_TYPE), CKC_X_509);
    // The serial was set with `openssl req -set_serial 0x0102030405`: a DER INTEGER.
    assert_eq!(value(cert, CKA_SERIAL_NUMBER), [0x02, 0x05, 1, 2, 3, 4, 5]);
    let subject = value(cert, CKA_SUBJECT);
    assert_eq!(subject[0], 0x30, "a DER Name");
    // Self-signed: the issuer is the subject, and both are inside the certificate.
    assert_eq!(value(cert, CKA_ISSUER), subject);
    assert!(EC_P256_CERT.windows(subject.len()).any(|w| w == subject));
    assert_eq!(value(private, CKA_SUBJECT), subject);
}

#[test]
fn rsa_keys_carry_modulus_and_exponent_and_hide_the_private_parts() {
    let objects = objects_of(&fixtures::key("r", KeySpec::Rsa2048, RSA_2048, &[])).unwrap();
    assert_eq!(objects.len(), 2, "no certificate object without a chain");
    let private = by_class(&objects, CKO_PRIVATE_KEY);
    let public = by_class(&objects, CKO_PUBLIC_KEY);
    for key in [private, public] {
        assert_eq!(ulong_of(key, CKA_KEY_TYPE), CKK_RSA);
        let modulus = value(key, CKA_MODULUS);
        assert_eq!(modulus.len(), 256);
        assert_ne!(modulus[0], 0, "no leading zero byte");
        assert_eq!(value(key, CKA_PUBLIC_EXPONENT), [1, 0, 1]);
        assert_eq!(ulong_of(key, CKA_MODULUS_BITS), 2048);
    }
    for secret in [
        CKA_PRIVATE_EXPONENT,
        CKA_PRIME_1,
        CKA_PRIME_2,
        CKA_COEFFICIENT,
    ] {
        assert_eq!(private.attribute(secret), Some(&Attr::Sensitive));
    }
    assert_eq!(private.key.signature_len, 256);
    let allowed = value(private, CKA_ALLOWED_MECHANISMS);
    assert_eq!(
        allowed.len() / size_of::<CK_ULONG>(),
        8,
        "eight RSA mechanisms"
    );
}

#[test]
fn edwards_and_p521_keys_encode_their_points_and_curves() {
    let ed = objects_of(&fixtures::key("e", KeySpec::Ed25519, ED25519, &[])).unwrap();
    let public = by_class(&ed, CKO_PUBLIC_KEY);
    assert_eq!(ulong_of(public, CKA_KEY_TYPE), CKK_EC_EDWARDS);
    assert_eq!(value(public, CKA_EC_PARAMS), [0x06, 0x03, 0x2b, 0x65, 0x70]);
    assert_eq!(value(public, CKA_EC_POINT)[..2], [0x04, 0x20]);
    assert_eq!(public.key.signature_len, 64);

    let p521 = objects_of(&fixtures::key("p", KeySpec::EcP521, EC_P521, &[])).unwrap();
    let public = by_class(&p521, CKO_PUBLIC_KEY);
    // 133 bytes need the long length form.
    assert_eq!(value(public, CKA_EC_POINT)[..4], [0x04, 0x81, 0x85, 0x04]);
    assert_eq!(public.key.signature_len, 132);
}

#[test]
fn a_public_key_that_does_not_fit_its_spec_is_left_out_with_a_reason() {
    let wrong = fixtures::key("x", KeySpec::EcP256, RSA_2048, &[]);
    assert!(
        objects_of(&wrong)
            .unwrap_err()
            .contains("uncompressed point")
    );
    let garbage = fixtures::key("x", KeySpec::Rsa2048, b"\x30\x03\x02\x01\x01", &[]);
    assert!(objects_of(&garbage).is_err());
    let bad_cert = fixtures::key("x", KeySpec::EcP256, EC_P256, &[b"not a certificate"]);
    assert!(objects_of(&bad_cert).unwrap_err().contains("certificate"));
}

#[test]
fn handles_survive_refreshes_and_are_never_reused() {
    let mut store = ObjectStore::default();
    store.replace(fixtures::objects());
    let find = |store: &ObjectStore, label: &[u8], class: CK_OBJECT_CLASS| {
        let class = class.to_ne_bytes();
        store.find(&[(CKA_LABEL, label), (CKA_CLASS, &class)])
    };
    let ec = find(&store, b"ec", CKO_PRIVATE_KEY);
    assert_eq!(ec.len(), 1);
    let rsa = find(&store, b"rsa", CKO_PUBLIC_KEY);
    assert_eq!(find(&store, b"ec", CKO_CERTIFICATE).len(), 1);
    assert!(find(&store, b"rsa", CKO_CERTIFICATE).is_empty());
    assert_eq!(
        store.find(&[]).len(),
        9,
        "every object matches an empty template"
    );

    // The agent no longer lists "rsa": its handles die; "ec" keeps its handle.
    let without_rsa = fixtures::objects()
        .into_iter()
        .filter(|o| o.key.id != "rsa")
        .collect();
    store.replace(without_rsa);
    assert_eq!(find(&store, b"ec", CKO_PRIVATE_KEY), ec);
    assert!(store.get(rsa[0]).is_none());

    // It comes back: same id and class, same handle; nothing else took it meanwhile.
    store.replace(fixtures::objects());
    assert_eq!(find(&store, b"rsa", CKO_PUBLIC_KEY), rsa);
    let mut all = store.find(&[]);
    all.dedup();
    assert_eq!(all.len(), 9);
}

#[test]
fn templates_compare_values_byte_for_byte() {
    let mut store = ObjectStore::default();
    store.replace(fixtures::objects());
    let yes = [CK_TRUE];
    let signers = store.find(&[(CKA_SIGN, &yes)]);
    assert_eq!(signers.len(), 4, "one private key per fixture key");
    // A sensitive attribute matches nothing, whatever the value asked for.
    assert!(store.find(&[(CKA_PRIVATE_EXPONENT, b"x")]).is_empty());
    // A label is compared exactly, not as a prefix.
    assert!(store.find(&[(CKA_LABEL, b"e")]).is_empty());
}
