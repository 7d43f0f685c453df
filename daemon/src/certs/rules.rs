//! The per-certificate rules of the Notary Project certificate requirements: the leaf's and
//! the CAs' basicConstraints, keyUsage and extendedKeyUsage, key sizes, and signature
//! algorithms (no SHA-1).

use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};

use super::{Cert, ChainError, invalid};

/// Signature algorithms with SHA-2 only (RSA PKCS#1 v1.5, RSA-PSS, ECDSA).
pub(super) fn check_signature_algorithm(cert: &Cert<'_>, total: usize) -> Result<(), ChainError> {
    let oid = cert.parsed.signature_algorithm.algorithm.to_id_string();
    let ok = [
        "1.2.840.113549.1.1.11", // sha256WithRSAEncryption
        "1.2.840.113549.1.1.12", // sha384WithRSAEncryption
        "1.2.840.113549.1.1.13", // sha512WithRSAEncryption
        "1.2.840.113549.1.1.10", // RSASSA-PSS
        "1.2.840.10045.4.3.2",   // ecdsa-with-SHA256
        "1.2.840.10045.4.3.3",   // ecdsa-with-SHA384
        "1.2.840.10045.4.3.4",   // ecdsa-with-SHA512
    ];
    if ok.contains(&oid.as_str()) {
        return Ok(());
    }
    let sha1 = ["1.2.840.113549.1.1.5", "1.2.840.10045.4.1", "1.3.14.3.2.29"];
    let message = if sha1.contains(&oid.as_str()) {
        format!(
            "{} is signed with SHA-1, which notary refuses; reissue it with SHA-256 or stronger",
            cert.name(total)
        )
    } else {
        let name = match oid.as_str() {
            "1.3.101.112" => "Ed25519".to_string(),
            "1.3.101.113" => "Ed448".to_string(),
            "1.2.840.113549.1.1.4" => "MD5 with RSA".to_string(),
            other => other.to_string(),
        };
        format!(
            "{} is signed with {name}; notary accepts RSA (PKCS#1 v1.5 or PSS) and ECDSA with SHA-256/384/512 only",
            cert.name(total)
        )
    };
    Err(invalid("signature algorithm (no SHA-1)", message))
}

/// The notary key spec of a certificate's key ("RSA-2048", "EC-256"), or why it has none.
fn key_spec(key: &PKey<Public>) -> Result<String, String> {
    match key.id() {
        Id::RSA => Ok(format!("RSA-{}", key.bits())),
        Id::EC => {
            let curve = key
                .ec_key()
                .ok()
                .and_then(|ec| ec.group().curve_name())
                .ok_or("an EC key on an unnamed curve")?;
            match curve {
                Nid::X9_62_PRIME256V1 => Ok("EC-256".into()),
                Nid::SECP384R1 => Ok("EC-384".into()),
                Nid::SECP521R1 => Ok("EC-521".into()),
                other => Err(format!(
                    "an EC key on curve {}",
                    other.short_name().unwrap_or("?")
                )),
            }
        }
        Id::ED25519 => Err("an Ed25519 key".into()),
        _ => Err("a key of a type notary does not accept".into()),
    }
}

pub(super) fn check_leaf(cert: &Cert<'_>, total: usize) -> Result<(), ChainError> {
    let name = cert.name(total);
    match cert.parsed.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            return Err(invalid(
                "leaf basicConstraints",
                format!(
                    "{name} is the signing certificate but has CA:TRUE; a leaf must have CA:FALSE"
                ),
            ));
        }
        Err(e) => {
            return Err(invalid(
                "leaf basicConstraints",
                format!("{name} has a bad basicConstraints extension ({e})"),
            ));
        }
        _ => {}
    }
    let ku = match cert.parsed.key_usage() {
        Ok(Some(ku)) => ku,
        Ok(None) => {
            return Err(invalid(
                "leaf keyUsage",
                format!(
                    "{name} has no keyUsage extension; a signing certificate needs keyUsage = critical, digitalSignature"
                ),
            ));
        }
        Err(e) => {
            return Err(invalid(
                "leaf keyUsage",
                format!("{name} has a bad keyUsage extension ({e})"),
            ));
        }
    };
    if !ku.critical {
        return Err(invalid(
            "leaf keyUsage",
            format!("{name} has a keyUsage extension that is not critical; mark it critical"),
        ));
    }
    if !ku.value.digital_signature() {
        return Err(invalid(
            "leaf keyUsage",
            format!("{name} lacks digitalSignature in keyUsage"),
        ));
    }
    let forbidden = [
        (ku.value.key_encipherment(), "keyEncipherment"),
        (ku.value.data_encipherment(), "dataEncipherment"),
        (ku.value.key_agreement(), "keyAgreement"),
        (ku.value.key_cert_sign(), "keyCertSign"),
        (ku.value.crl_sign(), "cRLSign"),
        (ku.value.encipher_only(), "encipherOnly"),
        (ku.value.decipher_only(), "decipherOnly"),
    ];
    let found: Vec<&str> = forbidden
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, n)| *n)
        .collect();
    if !found.is_empty() {
        return Err(invalid(
            "leaf keyUsage",
            format!(
                "{name} has keyUsage {} besides digitalSignature; a signing certificate may have digitalSignature (and nonRepudiation) only",
                found.join(", ")
            ),
        ));
    }
    match cert.parsed.extended_key_usage() {
        Ok(Some(eku)) => {
            let v = eku.value;
            let forbidden = [
                (v.any, "anyExtendedKeyUsage"),
                (v.server_auth, "serverAuth"),
                (v.client_auth, "clientAuth"),
                (v.email_protection, "emailProtection"),
                (v.time_stamping, "timeStamping"),
                (v.ocsp_signing, "OCSPSigning"),
            ];
            let found: Vec<&str> = forbidden
                .iter()
                .filter(|(set, _)| *set)
                .map(|(_, n)| *n)
                .collect();
            if !found.is_empty() {
                return Err(invalid(
                    "leaf extendedKeyUsage",
                    format!(
                        "{name} has extendedKeyUsage {}; a signing certificate may have codeSigning only",
                        found.join(", ")
                    ),
                ));
            }
        }
        Ok(None) => {}
        Err(e) => {
            return Err(invalid(
                "leaf extendedKeyUsage",
                format!("{name} has a bad extendedKeyUsage extension ({e})"),
            ));
        }
    }
    let spec = key_spec(&cert.key).map_err(|what| {
        invalid(
            "key size",
            format!("{name} has {what}; notary signs with RSA-2048/3072/4096 or EC-256/384/521 keys only"),
        )
    })?;
    if !matches!(
        spec.as_str(),
        "RSA-2048" | "RSA-3072" | "RSA-4096" | "EC-256" | "EC-384" | "EC-521"
    ) {
        return Err(invalid(
            "key size",
            format!(
                "{name} has a {spec} key; notary signs with RSA-2048/3072/4096 or EC-256/384/521 keys only"
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_ca(cert: &Cert<'_>, total: usize, below: usize) -> Result<(), ChainError> {
    let name = cert.name(total);
    match cert.parsed.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca && bc.critical => {
            if let Some(len) = bc.value.path_len_constraint
                && (len as usize) < below
            {
                return Err(invalid(
                    "CA basicConstraints",
                    format!(
                        "{name} allows a path length of {len} but {below} intermediate CA certificate(s) follow it"
                    ),
                ));
            }
        }
        Ok(Some(bc)) if bc.value.ca => {
            return Err(invalid(
                "CA basicConstraints",
                format!(
                    "{name} is a CA certificate whose basicConstraints extension is not critical; mark it critical"
                ),
            ));
        }
        Ok(_) => {
            return Err(invalid(
                "CA basicConstraints",
                format!("{name} issues certificates but lacks basicConstraints critical, CA:TRUE"),
            ));
        }
        Err(e) => {
            return Err(invalid(
                "CA basicConstraints",
                format!("{name} has a bad basicConstraints extension ({e})"),
            ));
        }
    }
    match cert.parsed.key_usage() {
        Ok(Some(ku)) if ku.critical && ku.value.key_cert_sign() => {}
        Ok(Some(ku)) if ku.critical => {
            return Err(invalid(
                "CA keyUsage",
                format!("{name} is a CA certificate without keyCertSign in keyUsage"),
            ));
        }
        Ok(Some(_)) => {
            return Err(invalid(
                "CA keyUsage",
                format!(
                    "{name} is a CA certificate whose keyUsage extension is not critical; mark it critical"
                ),
            ));
        }
        Ok(None) => {
            return Err(invalid(
                "CA keyUsage",
                format!(
                    "{name} is a CA certificate without a keyUsage extension; it needs keyUsage = critical, keyCertSign"
                ),
            ));
        }
        Err(e) => {
            return Err(invalid(
                "CA keyUsage",
                format!("{name} has a bad keyUsage extension ({e})"),
            ));
        }
    }
    let strong = match cert.key.id() {
        Id::RSA => cert.key.bits() >= 2048,
        Id::EC => cert.key.bits() >= 256,
        _ => false,
    };
    if !strong {
        let what = key_spec(&cert.key).unwrap_or_else(|what| what);
        return Err(invalid(
            "key size",
            format!(
                "{name} has {what} ({} bits); notary needs CA keys of RSA >= 2048 or EC >= 256 bits",
                cert.key.bits()
            ),
        ));
    }
    Ok(())
}
