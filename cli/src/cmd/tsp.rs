//! RFC 3161 timestamps for Notary signatures: the request, the exchange with a Time Stamping
//! Authority over HTTP, and the reading of its response.
//!
//! The Notary Project timestamps the *primitive signature* (the JWS `signature` bytes, the
//! COSE signature), hashed with the hash of the signing algorithm (ES384 → SHA-384, PS256 →
//! SHA-256, ...), with `certReq` set so the TSA includes its certificate (notation-core-go
//! `timestampJWS` / COSE `Sign`, specs/signing-and-verification-workflow.md). The request and
//! response are RustCrypto's `x509-tsp` types encoded with `der`; nothing is laid out by hand.
//! The token's checks are in [`super::tsp_check`].

use std::time::Duration;

use der::asn1::{Int, OctetString};
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode};
use keyward_sdk::SignatureAlgorithm;
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion};

use crate::output::Failure;

/// A TSA answer larger than this is refused before it is read further (a TimeStampResp with a
/// chain of a few certificates is a few KiB; notation's client allows 1 MiB too).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// How long the whole exchange with the TSA may take.
const TSA_TIMEOUT: Duration = Duration::from_secs(30);

const ID_SHA_256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA_384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA_512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// The hash of a message imprint: the Notary Project allows the SHA-2 family only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImprintHash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl ImprintHash {
    /// The hash the Notary Project uses to timestamp a signature made with `algorithm`: the
    /// signing algorithm's own hash.
    pub fn for_signature(algorithm: SignatureAlgorithm) -> Result<ImprintHash, String> {
        use SignatureAlgorithm as A;
        Ok(match algorithm {
            A::EcdsaSha256 | A::RsaPssSha256 => ImprintHash::Sha256,
            A::EcdsaSha384 | A::RsaPssSha384 => ImprintHash::Sha384,
            A::EcdsaSha512 | A::RsaPssSha512 => ImprintHash::Sha512,
            other => {
                return Err(format!(
                    "{} is not a Notary signature algorithm",
                    other.name()
                ));
            }
        })
    }

    /// The hash of a SHA-2 OID; `None` for any other.
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<ImprintHash> {
        [
            ImprintHash::Sha256,
            ImprintHash::Sha384,
            ImprintHash::Sha512,
        ]
        .into_iter()
        .find(|hash| hash.oid() == *oid)
    }

    /// The algorithm's OID.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            ImprintHash::Sha256 => ID_SHA_256,
            ImprintHash::Sha384 => ID_SHA_384,
            ImprintHash::Sha512 => ID_SHA_512,
        }
    }

    /// "SHA-256", ...
    pub fn name(self) -> &'static str {
        match self {
            ImprintHash::Sha256 => "SHA-256",
            ImprintHash::Sha384 => "SHA-384",
            ImprintHash::Sha512 => "SHA-512",
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ImprintHash::Sha256 => Sha256::digest(data).to_vec(),
            ImprintHash::Sha384 => Sha384::digest(data).to_vec(),
            ImprintHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// An RFC 3161 request, and what its answer must repeat.
#[derive(Clone, Debug)]
pub struct Request {
    /// The DER `TimeStampReq`.
    pub der: Vec<u8>,
    /// The imprint's hash.
    pub hash: ImprintHash,
    /// The imprint: the hash of the signature.
    pub digest: Vec<u8>,
    /// The nonce, big-endian, when the request has one.
    pub nonce: Option<Vec<u8>>,
}

impl Request {
    /// A request for a timestamp over `signature` with a fresh 128-bit nonce and `certReq`.
    pub fn new(hash: ImprintHash, signature: &[u8]) -> Result<Request, Failure> {
        let mut nonce = [0u8; 16];
        openssl::rand::rand_bytes(&mut nonce)
            .map_err(|e| Failure::new(format!("cannot make a nonce: {e}")))?;
        // Positive, and without a leading zero byte: one DER form, compared byte for byte.
        nonce[0] = (nonce[0] & 0x7f) | 0x01;
        let digest = hash.digest(signature);
        let request = TimeStampReq {
            version: TspVersion::V1,
            message_imprint: MessageImprint {
                // NULL parameters, as notation's tspclient-go sends them.
                hash_algorithm: cms::cert::x509::spki::AlgorithmIdentifier {
                    oid: hash.oid(),
                    parameters: Some(Any::null()),
                },
                hashed_message: OctetString::new(digest.clone()).map_err(encoding)?,
            },
            req_policy: None,
            nonce: Some(Int::new(&nonce).map_err(encoding)?),
            cert_req: true,
            extensions: None,
        };
        Ok(Request {
            der: request.to_der().map_err(encoding)?,
            hash,
            digest,
            nonce: Some(nonce.to_vec()),
        })
    }

    /// Reads a request written by `keyward notary sign --timestamp-request-out` (or any DER
    /// `TimeStampReq` over the same signature).
    pub fn parse(der: &[u8]) -> Result<Request, String> {
        let request = TimeStampReq::from_der(der)
            .map_err(|e| format!("it is not a DER RFC 3161 TimeStampReq ({e})"))?;
        let oid = request.message_imprint.hash_algorithm.oid;
        let hash = ImprintHash::from_oid(&oid).ok_or_else(|| {
            format!(
                "its imprint uses hash {oid}; Notary timestamps use SHA-256, SHA-384 or SHA-512"
            )
        })?;
        Ok(Request {
            der: der.to_vec(),
            hash,
            digest: request.message_imprint.hashed_message.as_bytes().to_vec(),
            nonce: request.nonce.map(|n| n.as_bytes().to_vec()),
        })
    }
}

fn encoding(error: der::Error) -> Failure {
    Failure::new(format!("cannot encode the RFC 3161 request: {error}"))
}

/// Posts `request` to the TSA at `url` (`application/timestamp-query`) and returns the DER
/// `TimeStampResp`, refusing anything that is not a timestamp reply or is too large.
pub async fn exchange(url: &str, request: &Request) -> Result<Vec<u8>, Failure> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        Failure::new(format!(
            "--timestamp-url {url:?} is not a URL ({e}); give the TSA's RFC 3161 endpoint, e.g. http://timestamp.example.com/"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Failure::new(format!(
            "--timestamp-url {url:?}: use an http:// or https:// URL"
        )));
    }
    let client = reqwest::Client::builder()
        .timeout(TSA_TIMEOUT)
        .build()
        .map_err(|e| Failure::new(format!("cannot set up an HTTP client: {e}")))?;
    let unreachable = |e: reqwest::Error| {
        Failure::new(format!(
            "the TSA at {url} did not answer: {}; check --timestamp-url, or timestamp later with --timestamp-request-out and `keyward notary timestamp`",
            error_chain(&e)
        ))
    };
    let mut response = client
        .post(parsed.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/timestamp-query")
        .header(reqwest::header::ACCEPT, "application/timestamp-reply")
        .body(request.der.clone())
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if !status.is_success() {
        return Err(Failure::new(format!(
            "the TSA at {url} answered HTTP {status}; check that the URL is its RFC 3161 endpoint"
        )));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !content_type.starts_with("application/timestamp-reply") {
        return Err(Failure::new(format!(
            "the TSA at {url} answered with content type {content_type:?}, not application/timestamp-reply; check that the URL is its RFC 3161 endpoint"
        )));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large(url));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large(url));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large(url: &str) -> Failure {
    Failure::new(format!(
        "the TSA at {url} sent more than {} KiB; a timestamp response is a few KiB, so this is not one",
        MAX_RESPONSE_BYTES / 1024
    ))
}

/// reqwest's error with its causes ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The `TimeStampToken` (DER `ContentInfo`) of a granted `TimeStampResp`; a refusal says the
/// TSA's status, text and failure bits.
pub fn token_from_response(der: &[u8]) -> Result<Vec<u8>, String> {
    if der.len() > MAX_RESPONSE_BYTES {
        return Err(format!(
            "it is larger than {} KiB, so it is not a timestamp response",
            MAX_RESPONSE_BYTES / 1024
        ));
    }
    let response = TimeStampResp::from_der(der)
        .map_err(|e| format!("it is not a DER RFC 3161 TimeStampResp ({e})"))?;
    use cmpv2::status::PkiStatus;
    match response.status.status {
        PkiStatus::Accepted | PkiStatus::GrantedWithMods => {}
        other => {
            let text: Vec<String> = response
                .status
                .status_string
                .iter()
                .flatten()
                .map(|s| s.as_str().to_string())
                .collect();
            let fail_info = response
                .status
                .fail_info
                .map(|bits| format!(" (failure: {bits:?})"))
                .unwrap_or_default();
            return Err(format!(
                "the TSA refused the request: status {other:?}{fail_info}{}",
                if text.is_empty() {
                    String::new()
                } else {
                    format!(": {}", text.join("; "))
                }
            ));
        }
    }
    let token = response
        .time_stamp_token
        .ok_or("the TSA granted the request but sent no TimeStampToken")?;
    token
        .to_der()
        .map_err(|e| format!("cannot encode the TimeStampToken: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_imprint_hash_follows_the_signing_algorithm() {
        use SignatureAlgorithm as A;
        for (algorithm, hash) in [
            (A::EcdsaSha256, ImprintHash::Sha256),
            (A::EcdsaSha384, ImprintHash::Sha384),
            (A::EcdsaSha512, ImprintHash::Sha512),
            (A::RsaPssSha256, ImprintHash::Sha256),
            (A::RsaPssSha384, ImprintHash::Sha384),
            (A::RsaPssSha512, ImprintHash::Sha512),
        ] {
            assert_eq!(ImprintHash::for_signature(algorithm), Ok(hash));
            assert_eq!(ImprintHash::from_oid(&hash.oid()), Some(hash));
        }
        assert!(ImprintHash::for_signature(A::Ed25519).is_err());
        assert_eq!(ImprintHash::Sha384.digest(b"x").len(), 48);
    }

    #[test]
    fn a_request_round_trips_with_its_nonce_and_cert_req() {
        let request = Request::new(ImprintHash::Sha384, b"signature").unwrap();
        let decoded = TimeStampReq::from_der(&request.der).unwrap();
        assert!(decoded.cert_req);
        assert_eq!(decoded.message_imprint.hash_algorithm.oid, ID_SHA_384);
        let parsed = Request::parse(&request.der).unwrap();
        assert_eq!(parsed.digest, ImprintHash::Sha384.digest(b"signature"));
        assert_eq!(parsed.nonce, request.nonce);
        assert_eq!(parsed.nonce.as_ref().unwrap().len(), 16);
        assert_ne!(
            Request::new(ImprintHash::Sha384, b"signature")
                .unwrap()
                .nonce,
            request.nonce,
            "every request has its own nonce"
        );
        assert!(Request::parse(b"\x30\x00").is_err());
    }

    #[test]
    fn responses_that_are_not_granted_tokens_are_refused_with_the_reason() {
        use cmpv2::status::{PkiStatus, PkiStatusInfo};
        let rejected = TimeStampResp {
            status: PkiStatusInfo {
                status: PkiStatus::Rejection,
                status_string: Some(vec![der::asn1::Utf8StringRef::new("bad alg").unwrap()]),
                fail_info: None,
            },
            time_stamp_token: None,
        }
        .to_der()
        .unwrap();
        let error = token_from_response(&rejected).unwrap_err();
        assert!(
            error.contains("Rejection") && error.contains("bad alg"),
            "{error}"
        );
        let error = token_from_response(b"not DER").unwrap_err();
        assert!(error.contains("TimeStampResp"), "{error}");
        let huge = vec![0u8; MAX_RESPONSE_BYTES + 1];
        assert!(token_from_response(&huge).unwrap_err().contains("KiB"));
    }
}
