//! X.509 certificates for agent keys, made with [`rcgen`] without touching a private key.
//!
//! [`AgentKey`] implements rcgen's [`PublicKeyData`] and [`SigningKey`] by asking the agent to
//! sign: rcgen hands it the whole TBSCertificate (or CSR info), which is hashed here with the
//! algorithm's hash, and only the digest goes to the agent. ECDSA comes back DER (what X.509
//! wants); RSA keys sign PKCS#1 v1.5 with SHA-256, because rcgen has no RSA-PSS.
//!
//! rcgen calls [`SigningKey::sign`] synchronously. From inside a multi-thread tokio runtime the
//! call is bridged with `block_in_place` + `Handle::block_on`; outside any runtime it uses the
//! handle the key was made on. A current-thread runtime cannot be bridged (its only thread
//! would block): the call then fails with a message that says so.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use keyward_sdk::x509::{AgentKey, rcgen};
//! let client = keyward_sdk::Client::connect_default().await?;
//! let key = AgentKey::new(&client, "signer").await?;
//! let mut params = rcgen::CertificateParams::default();
//! params.distinguished_name.push(rcgen::DnType::CommonName, "signer");
//! let cert = params.self_signed(&key)?; // the agent signs; needs a multi-thread runtime
//! println!("{}", cert.pem());
//! # Ok(()) }
//! ```

use std::sync::Mutex;

pub use rcgen;
use rcgen::{PublicKeyData, SigningKey};
use spki::SubjectPublicKeyInfoRef;
use spki::der::Decode;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::{Client, Error, KeySpec, SignOptions, SignatureAlgorithm, SignatureFormat, digest};

/// An agent key that rcgen can sign certificates and CSRs with.
#[derive(Debug)]
pub struct AgentKey {
    client: Client,
    key_id: String,
    spec: KeySpec,
    spki: Vec<u8>,
    /// The subjectPublicKey BIT STRING contents (EC point, or PKCS#1 RSAPublicKey).
    public_key_bits: Vec<u8>,
    rcgen_algorithm: &'static rcgen::SignatureAlgorithm,
    algorithm: SignatureAlgorithm,
    handle: Handle,
    purpose: String,
    /// The agent's error from the last failed signature (rcgen's own error carries none).
    last_error: Mutex<Option<Error>>,
}

/// The rcgen algorithm and the agent algorithm a key spec signs certificates with.
pub fn certificate_algorithm(
    spec: KeySpec,
) -> Option<(&'static rcgen::SignatureAlgorithm, SignatureAlgorithm)> {
    Some(match spec {
        KeySpec::EcP256 => (
            &rcgen::PKCS_ECDSA_P256_SHA256,
            SignatureAlgorithm::EcdsaSha256,
        ),
        KeySpec::EcP384 => (
            &rcgen::PKCS_ECDSA_P384_SHA384,
            SignatureAlgorithm::EcdsaSha384,
        ),
        KeySpec::EcP521 => (
            &rcgen::PKCS_ECDSA_P521_SHA512,
            SignatureAlgorithm::EcdsaSha512,
        ),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            (&rcgen::PKCS_RSA_SHA256, SignatureAlgorithm::RsaPkcs1Sha256)
        }
        KeySpec::Ed25519 => (&rcgen::PKCS_ED25519, SignatureAlgorithm::Ed25519),
        KeySpec::Unspecified => return None,
    })
}

impl AgentKey {
    /// The agent key `key_id`, with its public key fetched from the agent. Must be called
    /// inside a tokio runtime (its handle is kept for signing from outside one).
    pub async fn new(client: &Client, key_id: &str) -> Result<AgentKey, Error> {
        let public = client.public_key(key_id).await?;
        let spec = public.info.key_spec();
        let (rcgen_algorithm, algorithm) = certificate_algorithm(spec).ok_or_else(|| {
            Error::InvalidInput(format!("key {key_id:?} has no key spec the SDK knows"))
        })?;
        let public_key_bits = SubjectPublicKeyInfoRef::from_der(&public.der)
            .map_err(|e| {
                Error::Verification(format!(
                    "key {key_id:?}: the agent's public key is not a valid SubjectPublicKeyInfo ({e})"
                ))
            })?
            .subject_public_key
            .raw_bytes()
            .to_vec();
        Ok(AgentKey {
            client: client.clone(),
            key_id: key_id.to_string(),
            spec,
            spki: public.der,
            public_key_bits,
            rcgen_algorithm,
            algorithm,
            handle: Handle::current(),
            purpose: String::new(),
            last_error: Mutex::new(None),
        })
    }

    /// Sets the purpose recorded in the agent's audit log for each signature.
    pub fn with_purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = purpose.into();
        self
    }

    /// The key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key's spec.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The public key, DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The agent algorithm certificates are signed with (ECDSA with the curve's hash, RSA
    /// PKCS#1 v1.5 SHA-256, Ed25519).
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// The agent's error behind the last `rcgen::Error::RemoteKeyError`, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.last_error.lock().expect("last error").take()
    }

    async fn sign_async(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let options = SignOptions {
            algorithm: Some(self.algorithm),
            format: SignatureFormat::Der,
            purpose: self.purpose.clone(),
        };
        let signature = if self.algorithm == SignatureAlgorithm::Ed25519 {
            self.client
                .sign_message(&self.key_id, message, &options)
                .await?
        } else {
            let digest = digest(self.algorithm, message)?;
            self.client
                .sign_digest(&self.key_id, &digest, &options)
                .await?
        };
        Ok(signature.bytes)
    }
}

impl PublicKeyData for AgentKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key_bits
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.rcgen_algorithm
    }
}

impl SigningKey for AgentKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let result = match Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| handle.block_on(self.sign_async(message)))
            }
            Ok(_) => Err(Error::InvalidInput(format!(
                "key {:?}: certificates are signed through the agent synchronously, which needs a multi-thread tokio runtime; this one is current-thread",
                self.key_id
            ))),
            Err(_) => self.handle.block_on(self.sign_async(message)),
        };
        result.map_err(|error| {
            *self.last_error.lock().expect("last error") = Some(error);
            rcgen::Error::RemoteKeyError
        })
    }
}

/// PEM text of DER certificates, in order.
pub fn chain_to_pem(chain: &[Vec<u8>]) -> String {
    let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    chain
        .iter()
        .map(|der| pem::encode_config(&pem::Pem::new("CERTIFICATE", der.clone()), lf))
        .collect()
}

/// The DER certificates of a PEM bundle, in order; other PEM blocks are an error.
pub fn pem_to_chain(text: &str) -> Result<Vec<Vec<u8>>, Error> {
    let blocks = pem::parse_many(text)
        .map_err(|e| Error::InvalidInput(format!("the PEM text cannot be read ({e})")))?;
    let mut chain = Vec::with_capacity(blocks.len());
    for (number, block) in blocks.into_iter().enumerate() {
        if block.tag() != "CERTIFICATE" {
            return Err(Error::InvalidInput(format!(
                "PEM block {} is a {:?}, not a CERTIFICATE",
                number + 1,
                block.tag()
            )));
        }
        chain.push(block.into_contents());
    }
    if chain.is_empty() {
        return Err(Error::InvalidInput(
            "no certificate found (expected -----BEGIN CERTIFICATE----- blocks)".into(),
        ));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let chain = vec![vec![1u8; 100], vec![2u8; 7]];
        let pem = chain_to_pem(&chain);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(pem_to_chain(&pem).unwrap(), chain);
        assert!(pem_to_chain("nothing").is_err());
        assert!(
            pem_to_chain("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n").is_err()
        );
    }

    #[test]
    fn every_key_spec_has_a_certificate_algorithm() {
        for spec in [
            KeySpec::EcP256,
            KeySpec::EcP384,
            KeySpec::EcP521,
            KeySpec::Rsa2048,
            KeySpec::Rsa3072,
            KeySpec::Rsa4096,
            KeySpec::Ed25519,
        ] {
            let (rcgen_alg, agent) = certificate_algorithm(spec).unwrap();
            let hash = match agent {
                SignatureAlgorithm::Ed25519 => None,
                other => Some(digest(other, b"").unwrap().len()),
            };
            // The hash rcgen writes into the certificate is the one the agent signs with.
            let expected = match format!("{rcgen_alg:?}").as_str() {
                "PKCS_ECDSA_P256_SHA256" | "PKCS_RSA_SHA256" => Some(32),
                "PKCS_ECDSA_P384_SHA384" => Some(48),
                "PKCS_ECDSA_P521_SHA512" => Some(64),
                "PKCS_ED25519" => None,
                other => panic!("unexpected algorithm {other}"),
            };
            assert_eq!(hash, expected, "{spec:?}");
        }
        assert!(certificate_algorithm(KeySpec::Unspecified).is_none());
    }
}
