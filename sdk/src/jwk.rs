//! Public keys as JSON Web Keys (RFC 7517 / RFC 7518), for JOSE tooling.
//!
//! [`public_key_jwk`] turns a DER SubjectPublicKeyInfo (what [`crate::Client::public_key`]
//! returns) into the JWK of the public key: `kty`/`crv`/`x`/`y` for EC keys, `kty`/`n`/`e` for
//! RSA and `kty=OKP`/`crv=Ed25519`/`x` for Ed25519 (RFC 8037). Every value is base64url without
//! padding; EC coordinates are left-padded to the field size (32, 48 or 66 bytes).
//!
//! The members are written in lexicographic order with no whitespace, so the text is also the
//! input of an RFC 7638 JWK thumbprint.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::traits::PublicKeyParts;
use spki::der::Decode;
use spki::{DecodePublicKey, ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::Error;

pub(crate) const OID_EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
pub(crate) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(crate) const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// The uncompressed affine coordinates of an EC public key for one curve crate.
macro_rules! ec_coordinates {
    ($curve:ident, $spki:expr) => {{
        let key = $curve::PublicKey::from_public_key_der($spki).map_err(|e| bad_key(&e))?;
        let point = key.to_encoded_point(false);
        match (point.x(), point.y()) {
            (Some(x), Some(y)) => (x.to_vec(), y.to_vec()),
            _ => return Err(bad_key(&"the point is not uncompressed")),
        }
    }};
}

/// The JWK (JSON text) of the public key `spki_der`, a DER SubjectPublicKeyInfo of a P-256,
/// P-384, P-521, RSA or Ed25519 key.
///
/// ```
/// # fn demo(spki_der: &[u8]) -> Result<(), keyward_sdk::Error> {
/// let jwk = keyward_sdk::jwk::public_key_jwk(spki_der)?;
/// // {"crv":"P-256","kty":"EC","x":"...","y":"..."}
/// # Ok(()) }
/// ```
pub fn public_key_jwk(spki_der: &[u8]) -> Result<String, Error> {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| bad_key(&e))?;
    let oid = spki.algorithm.oid;
    if oid == OID_EC_PUBLIC_KEY {
        let curve: ObjectIdentifier = spki.algorithm.parameters_oid().map_err(|e| bad_key(&e))?;
        let (crv, (x, y)) = match curve {
            OID_P256 => ("P-256", ec_coordinates!(p256, spki_der)),
            OID_P384 => ("P-384", ec_coordinates!(p384, spki_der)),
            OID_P521 => ("P-521", ec_coordinates!(p521, spki_der)),
            other => {
                return Err(Error::InvalidInput(format!(
                    "cannot express a key on elliptic curve {other} as a JWK: only P-256, P-384 and P-521 are supported"
                )));
            }
        };
        Ok(format!(
            r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
            b64url(&x),
            b64url(&y)
        ))
    } else if oid == OID_RSA_ENCRYPTION {
        let key = rsa::RsaPublicKey::from_public_key_der(spki_der).map_err(|e| bad_key(&e))?;
        Ok(format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            b64url(&key.e().to_bytes_be()),
            b64url(&key.n().to_bytes_be())
        ))
    } else if oid == OID_ED25519 {
        let key =
            ed25519_dalek::VerifyingKey::from_public_key_der(spki_der).map_err(|e| bad_key(&e))?;
        Ok(format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            b64url(key.as_bytes())
        ))
    } else {
        Err(Error::InvalidInput(format!(
            "cannot express a public key of algorithm {oid} as a JWK: only EC (P-256, P-384, P-521), RSA and Ed25519 keys are supported"
        )))
    }
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn bad_key(error: &dyn std::fmt::Display) -> Error {
    Error::Verification(format!("unusable public key: {error}"))
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    // Vectors made with the openssl CLI: the DER SubjectPublicKeyInfo of a fresh key, and the
    // JWK members taken from `openssl pkey -pubin -text` (the EC point's coordinates, the RSA
    // modulus and exponent, the Ed25519 public key), base64url-encoded. The P-256 and P-521
    // keys were picked so that their y coordinate starts with a zero byte, to check the padding.
    const P256_SPKI: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEGcP6dhslDZN7fov61XvKxoUGmy/9gC2jHPL6nEIIO5AA1hljM5Ub4RtueVQOYC/00zVIslWWKhZysfbXtwRQWQ==";
    const P256_JWK: &str = r#"{"crv":"P-256","kty":"EC","x":"GcP6dhslDZN7fov61XvKxoUGmy_9gC2jHPL6nEIIO5A","y":"ANYZYzOVG-EbbnlUDmAv9NM1SLJVlioWcrH217cEUFk"}"#;

    const P384_SPKI: &str = "MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEJQHKQrz93BrP4eA9v488B1W30ONeab5N430ZSDJWW9eEJ9IFhHhjnlShGWDW96BAcsxoMUtRE0DrUNrNzBKOWZMe4Ce47P7zbh0yApb1CTu5s3ai8xjiC6MSFmSdT9PJ";
    const P384_JWK: &str = r#"{"crv":"P-384","kty":"EC","x":"JQHKQrz93BrP4eA9v488B1W30ONeab5N430ZSDJWW9eEJ9IFhHhjnlShGWDW96BA","y":"csxoMUtRE0DrUNrNzBKOWZMe4Ce47P7zbh0yApb1CTu5s3ai8xjiC6MSFmSdT9PJ"}"#;

    const P521_SPKI: &str = "MIGbMBAGByqGSM49AgEGBSuBBAAjA4GGAAQBy2Fm/bbjbFWWbbT9kqzORuAw4X9X/n6ZenShqhs7PLMRadPsPmrFYkQPZftOt7hxW3A7lzQFf3osm7HAXz/mfsgA5+qDExeXreDB1gos+SQdeaqeXgHo74wuYyhfVJbcJ75T7FWbSnNN7E9x9UvKZWkBl12NtyOEKT9u6T0zHetSbCo=";
    const P521_JWK: &str = r#"{"crv":"P-521","kty":"EC","x":"ActhZv2242xVlm20_ZKszkbgMOF_V_5-mXp0oaobOzyzEWnT7D5qxWJED2X7Tre4cVtwO5c0BX96LJuxwF8_5n7I","y":"AOfqgxMXl63gwdYKLPkkHXmqnl4B6O-MLmMoX1SW3Ce-U-xVm0pzTexPcfVLymVpAZddjbcjhCk_buk9Mx3rUmwq"}"#;

    const ED25519_SPKI: &str = "MCowBQYDK2VwAyEAxs0yHuW/1X533KkmI34qMMA3HBKny14IRIK7Mj7N7Qk=";
    const ED25519_JWK: &str =
        r#"{"crv":"Ed25519","kty":"OKP","x":"xs0yHuW_1X533KkmI34qMMA3HBKny14IRIK7Mj7N7Qk"}"#;

    const RSA2048_SPKI: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAlW9E9xFmxOh3qt/UIhdJ+7/Sq5zIzde2O64zGMz/RiTOo/6iCpls4+27laYuKRbJVXl8/SbJjwGPTlPdHwxdRaONFMts35NXToyWmrM6O0a24q3bCrK9gVDX6LOWEXQogaRgutSYXCeiRibO7MDa29pjLtTOKjV/HwxcgQIGGuPI2/ZGVxEckg8jTrQTIlPdT2a5NXPSm15ZUolLUqCJleSgCciXWdHURDqZHoMPf2SXGuTCTiyW7LOS3cRk6uyr3h6ZoXqkUDsEg0uGu+Lb0OtYws/r+jrdjzjXcto5rxocKEy5xE6HW9GlhgM+JbxoEbNjTihHKZF4gWTe4A8lLQIDAQAB";
    const RSA2048_JWK: &str = r#"{"e":"AQAB","kty":"RSA","n":"lW9E9xFmxOh3qt_UIhdJ-7_Sq5zIzde2O64zGMz_RiTOo_6iCpls4-27laYuKRbJVXl8_SbJjwGPTlPdHwxdRaONFMts35NXToyWmrM6O0a24q3bCrK9gVDX6LOWEXQogaRgutSYXCeiRibO7MDa29pjLtTOKjV_HwxcgQIGGuPI2_ZGVxEckg8jTrQTIlPdT2a5NXPSm15ZUolLUqCJleSgCciXWdHURDqZHoMPf2SXGuTCTiyW7LOS3cRk6uyr3h6ZoXqkUDsEg0uGu-Lb0OtYws_r-jrdjzjXcto5rxocKEy5xE6HW9GlhgM-JbxoEbNjTihHKZF4gWTe4A8lLQ"}"#;

    fn jwk_of(spki_b64: &str) -> String {
        public_key_jwk(&STANDARD.decode(spki_b64).unwrap()).unwrap()
    }

    #[test]
    fn ec_keys() {
        assert_eq!(jwk_of(P256_SPKI), P256_JWK);
        assert_eq!(jwk_of(P384_SPKI), P384_JWK);
        assert_eq!(jwk_of(P521_SPKI), P521_JWK);
    }

    #[test]
    fn ec_coordinates_are_padded_to_the_field_size() {
        for (spki, size) in [(P256_SPKI, 32), (P384_SPKI, 48), (P521_SPKI, 66)] {
            let jwk = jwk_of(spki);
            for member in ["\"x\":\"", "\"y\":\""] {
                let start = jwk.find(member).unwrap() + member.len();
                let value = &jwk[start..start + jwk[start..].find('"').unwrap()];
                assert_eq!(URL_SAFE_NO_PAD.decode(value).unwrap().len(), size, "{jwk}");
            }
        }
    }

    #[test]
    fn rsa_key() {
        assert_eq!(jwk_of(RSA2048_SPKI), RSA2048_JWK);
    }

    #[test]
    fn ed25519_key() {
        assert_eq!(jwk_of(ED25519_SPKI), ED25519_JWK);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(public_key_jwk(b"not a key").is_err());
        let mut der = STANDARD.decode(P256_SPKI).unwrap();
        der.truncate(40);
        assert!(public_key_jwk(&der).is_err());
    }
}
