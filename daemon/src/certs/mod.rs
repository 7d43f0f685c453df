//! X.509 certificate chains attached to keys: PEM parsing and the checks a chain must pass.
//!
//! A chain is leaf first, each certificate issued by the next, ending with a self-signed root
//! (or the leaf alone when it is self-signed). The rules are those of the Notary Project
//! signature specification ("Certificate Requirements"), as notation enforces them at sign and
//! verify time, so a chain this module accepts is one `notation sign` accepts:
//!
//! - the leaf's public key is the key's;
//! - each certificate's signature verifies with the next one's public key, and its issuer name
//!   is the next one's subject; the last is self-signed; a leaf in a longer chain is not;
//! - CA certificates: basicConstraints critical with CA:TRUE (path length respected), keyUsage
//!   critical with keyCertSign;
//! - the leaf: basicConstraints, when present, CA:FALSE; keyUsage critical with
//!   digitalSignature and nothing but nonRepudiation besides; extendedKeyUsage, when present,
//!   without serverAuth, clientAuth, emailProtection, timeStamping, OCSPSigning or
//!   anyExtendedKeyUsage; a key that is RSA 2048/3072/4096 or EC P-256/P-384/P-521;
//! - CA keys RSA of at least 2048 bits or EC of at least 256;
//! - no SHA-1 (nor any signature algorithm besides RSA PKCS#1 v1.5 / PSS with SHA-2 and
//!   ECDSA with SHA-256/384/512);
//! - every certificate valid now.
//!
//! A chain whose first certificate is itself a CA (CA:TRUE and keyCertSign) is a CA's chain,
//! attached to the key that signs certificates: every certificate in it must then meet the CA
//! rules.
//!
//! Signatures are checked with OpenSSL; everything else is read with `x509-parser`.

mod rules;

use keyward_plugin_api::pemfile;
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use rules::{check_ca, check_leaf, check_signature_algorithm};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// Why a chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The chain is malformed or breaks a rule (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// The chain does not fit the key, or is outside its validity period
    /// (FAILED_PRECONDITION).
    #[error("{0}")]
    Precondition(String),
}

/// Most certificates a chain may have.
const MAX_CHAIN_LEN: usize = 10;

/// Splits a PEM bundle into DER certificates, in order (plugin-api's one PEM reader). Text
/// outside the PEM blocks is ignored; a block that is not a certificate is an error.
pub fn parse_pem_bundle(pem: &[u8]) -> Result<Vec<Vec<u8>>, ChainError> {
    let chain =
        pemfile::certificates(pem).map_err(|e| ChainError::Invalid(format!("{e}, leaf first")))?;
    if chain.len() > MAX_CHAIN_LEN {
        return Err(ChainError::Invalid(format!(
            "the chain has {} certificates; at most {MAX_CHAIN_LEN} are accepted",
            chain.len()
        )));
    }
    Ok(chain)
}

/// Writes a chain as a PEM bundle.
pub fn to_pem(chain: &[Vec<u8>]) -> String {
    pemfile::encode_certificates(chain)
}

/// One certificate, parsed both ways.
struct Cert<'a> {
    /// 1-based position, for messages.
    number: usize,
    parsed: X509Certificate<'a>,
    openssl: X509,
    key: PKey<Public>,
}

impl Cert<'_> {
    /// "certificate 2 of 3 (C=US, O=Example, CN=root)"
    fn name(&self, total: usize) -> String {
        format!(
            "certificate {} of {total} ({})",
            self.number,
            self.parsed.subject()
        )
    }

    fn self_signed(&self) -> bool {
        self.parsed.subject().as_raw() == self.parsed.issuer().as_raw()
            && self.openssl.verify(&self.key).unwrap_or(false)
    }
}

fn invalid(rule: &str, message: String) -> ChainError {
    ChainError::Invalid(format!("rule {rule}: {message}"))
}

/// Checks everything about a chain that does not depend on the key or on the clock.
pub fn check_rules(chain: &[Vec<u8>]) -> Result<(), ChainError> {
    if chain.is_empty() {
        return Err(ChainError::Invalid("the certificate chain is empty".into()));
    }
    let mut certs = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        certs.push(parse(i + 1, der)?);
    }
    let total = certs.len();
    // Issuance: each certificate by the next, the last self-signed.
    for pair in certs.windows(2) {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.parsed.issuer().as_raw() != parent.parsed.subject().as_raw()
            || !child.openssl.verify(&parent.key).unwrap_or(false)
        {
            return Err(invalid(
                "chain order",
                format!(
                    "{} is not issued by {}: put the certificates leaf first, each followed by its issuer",
                    child.name(total),
                    parent.name(total)
                ),
            ));
        }
        if child.self_signed() {
            let what = if child.number == 1 {
                "the leaf"
            } else {
                "an intermediate"
            };
            return Err(invalid(
                "chain order",
                format!(
                    "{} is self-signed but is {what}; only the last certificate (the root) may be self-signed",
                    child.name(total)
                ),
            ));
        }
    }
    let root = &certs[total - 1];
    if !root.self_signed() {
        return Err(invalid(
            "chain order",
            format!(
                "the chain must end with a self-signed root, but {} is issued by {} (or its signature does not verify); append the issuer's certificates up to the root",
                root.name(total),
                root.parsed.issuer()
            ),
        ));
    }
    let ca_chain = is_ca(&certs[0]);
    for (i, cert) in certs.iter().enumerate() {
        if i == 0 && !ca_chain {
            check_leaf(cert, total)?;
        } else {
            // Below a CA at position i there are i-1 intermediates (none below a CA leaf).
            check_ca(cert, total, i.saturating_sub(1))?;
        }
    }
    for cert in &certs {
        check_signature_algorithm(cert, total)?;
    }
    Ok(())
}

/// Checks that the chain's leaf holds the public key `spki_der` (DER SubjectPublicKeyInfo).
pub fn check_key(chain: &[Vec<u8>], spki_der: &[u8]) -> Result<(), ChainError> {
    let leaf = chain
        .first()
        .ok_or_else(|| ChainError::Invalid("the certificate chain is empty".into()))?;
    let leaf = parse(1, leaf)?;
    let key = PKey::public_key_from_der(spki_der)
        .map_err(|e| ChainError::Precondition(format!("the key's public key is unusable: {e}")))?;
    if leaf.parsed.public_key().raw != spki_der && !leaf.key.public_eq(&key) {
        return Err(ChainError::Precondition(format!(
            "rule leaf public key: the leaf certificate ({}) is for another public key than this key's; issue or request a certificate for this key (keyward cert issue / keyward cert csr)",
            leaf.parsed.subject()
        )));
    }
    Ok(())
}

/// Checks that every certificate is valid at `now` (seconds since the Unix epoch).
pub fn check_validity(chain: &[Vec<u8>], now: i64) -> Result<(), ChainError> {
    let total = chain.len();
    for (i, der) in chain.iter().enumerate() {
        let cert = parse(i + 1, der)?;
        let validity = cert.parsed.validity();
        let (from, to) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        if now < from {
            return Err(ChainError::Precondition(format!(
                "rule validity: {} is not valid yet (valid from {}); check the clock or wait",
                cert.name(total),
                validity.not_before
            )));
        }
        if now > to {
            return Err(ChainError::Precondition(format!(
                "rule validity: {} expired on {}; issue a new certificate",
                cert.name(total),
                validity.not_after
            )));
        }
    }
    Ok(())
}

/// The earliest expiry of the chain (seconds since the Unix epoch), for logs.
pub fn not_after(chain: &[Vec<u8>]) -> Option<i64> {
    chain
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min()
}

fn parse(number: usize, der: &[u8]) -> Result<Cert<'_>, ChainError> {
    let parsed = match X509Certificate::from_der(der) {
        Ok(([], parsed)) => parsed,
        Ok(_) => {
            return Err(ChainError::Invalid(format!(
                "certificate {number} has trailing bytes after its DER encoding"
            )));
        }
        Err(e) => {
            return Err(ChainError::Invalid(format!(
                "certificate {number} is not a valid X.509 certificate ({e})"
            )));
        }
    };
    let openssl = X509::from_der(der).map_err(|e| {
        ChainError::Invalid(format!(
            "certificate {number} is not a valid X.509 certificate ({e})"
        ))
    })?;
    let key = PKey::public_key_from_der(parsed.public_key().raw).map_err(|e| {
        ChainError::Invalid(format!(
            "certificate {number} ({}) has a public key OpenSSL cannot read ({e})",
            parsed.subject()
        ))
    })?;
    Ok(Cert {
        number,
        parsed,
        openssl,
        key,
    })
}

/// A CA's own chain starts with a certificate that has CA:TRUE and keyCertSign; anything
/// else is a signing chain and its first certificate must meet the leaf rules.
fn is_ca(cert: &Cert<'_>) -> bool {
    matches!(cert.parsed.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
        && matches!(cert.parsed.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign())
}
