//! Notary Project signature envelopes, built by hand: JWS (flattened JSON serialization,
//! `application/jose+json`) and COSE_Sign1 (`application/cose`, with coset).
//!
//! Both carry the Notary payload, the signing scheme `notary.x509`, the signing time (and an
//! optional expiry) as critical protected headers, and the certificate chain leaf first
//! (`x5c` / `x5chain`) with the signing agent in the unprotected header. The signature is made
//! by the agent over the JWS signing input or the COSE `Sig_structure`; building is split in
//! two ([`Unsigned::to_be_signed`] then [`Unsigned::finish`]) so signing can be async.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use coset::cbor::value::Value;
use coset::{
    CborSerializable, CoseSign1, Header, HeaderBuilder, Label, RegisteredLabelWithPrivate,
    TaggedCborSerializable, iana,
};
use keyward_sdk::{KeySpec, SignatureAlgorithm};
use serde_json::json;

/// The Notary payload's media type.
pub const PAYLOAD_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";
/// The media type of a JWS envelope.
pub const JWS_MEDIA_TYPE: &str = "application/jose+json";
/// The media type of a COSE envelope.
pub const COSE_MEDIA_TYPE: &str = "application/cose";

const SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
const SIGNING_TIME: &str = "io.cncf.notary.signingTime";
const EXPIRY: &str = "io.cncf.notary.expiry";
const SIGNING_AGENT: &str = "io.cncf.notary.signingAgent";

/// Which envelope to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JWS JSON serialization.
    Jws,
    /// COSE_Sign1, tagged.
    Cose,
}

impl Format {
    /// The envelope's media type (the signature layer's mediaType).
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Jws => JWS_MEDIA_TYPE,
            Format::Cose => COSE_MEDIA_TYPE,
        }
    }
}

/// How a key spec signs Notary envelopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotaryAlgorithm {
    /// The JWS `alg` (ES256, PS384, ...).
    pub jws: &'static str,
    /// The COSE algorithm.
    pub cose: iana::Algorithm,
    /// What the agent signs with (ECDSA raw r||s, RSA-PSS with salt = hash length).
    pub agent: SignatureAlgorithm,
}

/// The algorithm the Notary specification assigns to a key spec; other keys cannot sign.
pub fn notary_algorithm(spec: KeySpec) -> Result<NotaryAlgorithm, String> {
    use SignatureAlgorithm as A;
    let (jws, cose, agent) = match spec {
        KeySpec::EcP256 => ("ES256", iana::Algorithm::ES256, A::EcdsaSha256),
        KeySpec::EcP384 => ("ES384", iana::Algorithm::ES384, A::EcdsaSha384),
        KeySpec::EcP521 => ("ES512", iana::Algorithm::ES512, A::EcdsaSha512),
        KeySpec::Rsa2048 => ("PS256", iana::Algorithm::PS256, A::RsaPssSha256),
        KeySpec::Rsa3072 => ("PS384", iana::Algorithm::PS384, A::RsaPssSha384),
        KeySpec::Rsa4096 => ("PS512", iana::Algorithm::PS512, A::RsaPssSha512),
        other => {
            return Err(format!(
                "a {} key cannot make Notary signatures: the Notary Project allows RSA-2048/3072/4096 and EC P-256/P-384/P-521 keys only",
                other.name()
            ));
        }
    };
    Ok(NotaryAlgorithm { jws, cose, agent })
}

/// What goes into an envelope besides the signature.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The Notary payload (JSON bytes).
    pub payload: &'a [u8],
    /// The algorithm.
    pub algorithm: NotaryAlgorithm,
    /// Signing time, seconds since the Unix epoch.
    pub signing_time: i64,
    /// Expiry, seconds since the Unix epoch.
    pub expiry: Option<i64>,
    /// The certificate chain, DER, leaf first.
    pub chain: &'a [Vec<u8>],
    /// `io.cncf.notary.signingAgent`.
    pub signing_agent: &'a str,
}

/// An envelope waiting for its signature.
#[derive(Debug)]
pub enum Unsigned {
    /// JWS: the encoded protected header and payload, and the unprotected header.
    Jws {
        /// BASE64URL(protected).
        protected: String,
        /// BASE64URL(payload).
        payload: String,
        /// The unprotected header.
        header: serde_json::Value,
    },
    /// COSE: the message without its signature.
    Cose(Box<CoseSign1>),
}

/// RFC 3339 UTC with seconds ("2025-01-31T12:00:00Z").
pub fn rfc3339(seconds: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "1970-01-01T00:00:00Z".into(),
    }
}

impl Unsigned {
    /// Lays out the envelope of `format` for `request`.
    pub fn new(format: Format, request: &Request<'_>) -> Result<Unsigned, String> {
        match format {
            Format::Jws => Ok(jws(request)),
            Format::Cose => cose(request),
        }
    }

    /// The bytes the signature is over (the agent hashes nothing: the caller hashes these).
    pub fn to_be_signed(&self) -> Vec<u8> {
        match self {
            Unsigned::Jws {
                protected, payload, ..
            } => format!("{protected}.{payload}").into_bytes(),
            Unsigned::Cose(message) => message.tbs_data(b""),
        }
    }

    /// The finished envelope with `signature` (ECDSA raw r||s, or RSA-PSS).
    pub fn finish(self, signature: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Unsigned::Jws {
                protected,
                payload,
                header,
            } => {
                let envelope = json!({
                    "payload": payload,
                    "protected": protected,
                    "header": header,
                    "signature": URL_SAFE_NO_PAD.encode(signature),
                });
                serde_json::to_vec(&envelope).map_err(|e| format!("cannot encode the JWS: {e}"))
            }
            Unsigned::Cose(mut message) => {
                message.signature = signature.to_vec();
                message
                    .to_tagged_vec()
                    .map_err(|e| format!("cannot encode the COSE envelope: {e}"))
            }
        }
    }
}

fn jws(request: &Request<'_>) -> Unsigned {
    let mut crit = vec![SIGNING_SCHEME];
    let mut protected = serde_json::Map::new();
    protected.insert("alg".into(), json!(request.algorithm.jws));
    protected.insert("cty".into(), json!(PAYLOAD_TYPE));
    protected.insert(SIGNING_SCHEME.into(), json!("notary.x509"));
    protected.insert(SIGNING_TIME.into(), json!(rfc3339(request.signing_time)));
    if let Some(expiry) = request.expiry {
        crit.push(EXPIRY);
        protected.insert(EXPIRY.into(), json!(rfc3339(expiry)));
    }
    protected.insert("crit".into(), json!(crit));
    let protected = serde_json::Value::Object(protected).to_string();
    let chain: Vec<String> = request.chain.iter().map(|c| STANDARD.encode(c)).collect();
    Unsigned::Jws {
        protected: URL_SAFE_NO_PAD.encode(protected),
        payload: URL_SAFE_NO_PAD.encode(request.payload),
        header: json!({ "x5c": chain, SIGNING_AGENT: request.signing_agent }),
    }
}

/// A CBOR tag-1 (epoch seconds) date.
fn epoch(seconds: i64) -> Value {
    Value::Tag(1, Box::new(Value::Integer(seconds.into())))
}

fn cose(request: &Request<'_>) -> Result<Unsigned, String> {
    let text = |s: &str| RegisteredLabelWithPrivate::Text(s.to_string());
    let mut crit = vec![text(SIGNING_SCHEME)];
    let mut protected = HeaderBuilder::new()
        .algorithm(request.algorithm.cose)
        .content_type(PAYLOAD_TYPE.to_string())
        .text_value(SIGNING_SCHEME.into(), Value::Text("notary.x509".into()))
        .text_value(SIGNING_TIME.into(), epoch(request.signing_time));
    if let Some(expiry) = request.expiry {
        crit.push(text(EXPIRY));
        protected = protected.text_value(EXPIRY.into(), epoch(expiry));
    }
    let mut protected: Header = protected.build();
    protected.crit = crit;
    let chain = Value::Array(request.chain.iter().cloned().map(Value::Bytes).collect());
    let mut unprotected = HeaderBuilder::new()
        .text_value(
            SIGNING_AGENT.into(),
            Value::Text(request.signing_agent.into()),
        )
        .build();
    unprotected.rest.insert(
        0,
        (Label::Int(iana::HeaderParameter::X5Chain as i64), chain),
    );
    let message = coset::CoseSign1Builder::new()
        .protected(protected)
        .unprotected(unprotected)
        .payload(request.payload.to_vec())
        .build();
    // Encoding once here surfaces a header that cannot be encoded before the agent signs.
    message
        .clone()
        .to_vec()
        .map_err(|e| format!("cannot encode the COSE headers: {e}"))?;
    Ok(Unsigned::Cose(Box::new(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(payload: &'a [u8], chain: &'a [Vec<u8>], expiry: Option<i64>) -> Request<'a> {
        Request {
            payload,
            algorithm: notary_algorithm(KeySpec::EcP384).unwrap(),
            signing_time: 1_700_000_000,
            expiry,
            chain,
            signing_agent: "keyward/test",
        }
    }

    #[test]
    fn algorithms_follow_the_key_spec() {
        assert_eq!(notary_algorithm(KeySpec::Rsa3072).unwrap().jws, "PS384");
        assert_eq!(
            notary_algorithm(KeySpec::EcP521).unwrap().agent,
            SignatureAlgorithm::EcdsaSha512
        );
        let error = notary_algorithm(KeySpec::Ed25519).unwrap_err();
        assert!(error.contains("ed25519"), "{error}");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn jws_headers_and_layout() {
        let chain = vec![vec![1, 2, 3]];
        let unsigned =
            Unsigned::new(Format::Jws, &request(b"{}", &chain, Some(1_700_000_600))).unwrap();
        let tbs = String::from_utf8(unsigned.to_be_signed()).unwrap();
        let (protected, payload) = tbs.split_once('.').unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(payload).unwrap(), b"{}");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(protected).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES384");
        assert_eq!(header["cty"], PAYLOAD_TYPE);
        assert_eq!(header[SIGNING_SCHEME], "notary.x509");
        assert_eq!(header[SIGNING_TIME], "2023-11-14T22:13:20Z");
        assert_eq!(header["crit"], json!([SIGNING_SCHEME, EXPIRY]));
        let envelope: serde_json::Value =
            serde_json::from_slice(&unsigned.finish(&[9; 96]).unwrap()).unwrap();
        assert_eq!(envelope["header"]["x5c"], json!(["AQID"]));
        assert_eq!(envelope["signature"].as_str().unwrap().len(), 128);
    }

    #[test]
    fn cose_headers_and_layout() {
        let chain = vec![vec![1, 2, 3], vec![4]];
        let unsigned = Unsigned::new(Format::Cose, &request(b"{}", &chain, None)).unwrap();
        let tbs = unsigned.to_be_signed();
        let bytes = unsigned.finish(&[7; 96]).unwrap();
        let message = CoseSign1::from_tagged_slice(&bytes).unwrap();
        assert_eq!(message.tbs_data(b""), tbs);
        let protected = &message.protected.header;
        assert_eq!(
            protected.alg,
            Some(coset::Algorithm::Assigned(iana::Algorithm::ES384))
        );
        assert_eq!(protected.crit.len(), 1);
        let time = protected
            .rest
            .iter()
            .find(|(label, _)| *label == Label::Text(SIGNING_TIME.into()))
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(time, epoch(1_700_000_000));
        let x5chain = message
            .unprotected
            .rest
            .iter()
            .find(|(label, _)| *label == Label::Int(33))
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(
            x5chain,
            Value::Array(vec![Value::Bytes(vec![1, 2, 3]), Value::Bytes(vec![4])])
        );
        assert_eq!(message.payload.as_deref(), Some(&b"{}"[..]));
    }
}
