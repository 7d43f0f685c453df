//! Reading a finished Notary envelope (JWS or COSE) and adding an RFC 3161 timestamp token to
//! it, where the Notary signature specification puts it: the JWS unprotected header
//! `io.cncf.notary.timestampSignature` (base64 of the DER token) or the COSE unprotected header
//! labelled `io.cncf.notary.timestampSignature` (a bstr). Both are unsigned, so the signature,
//! the protected header and the payload are left byte for byte as they were.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use coset::cbor::value::Value as Cbor;
use coset::{CoseSign1, Label, TaggedCborSerializable, iana};
use serde_json::Value;

use super::envelope::{Format, rfc3339};
use super::tsp::ImprintHash;

/// The header that carries the timestamp token, in both envelope formats.
pub const TIMESTAMP_HEADER: &str = "io.cncf.notary.timestampSignature";
const SIGNING_TIME: &str = "io.cncf.notary.signingTime";

/// What a timestamp and a signature manifest need from an envelope.
#[derive(Clone, Debug)]
pub struct ParsedEnvelope {
    /// JWS or COSE.
    pub format: Format,
    /// The primitive signature (what is timestamped).
    pub signature: Vec<u8>,
    /// The imprint hash for this signature's algorithm.
    pub hash: ImprintHash,
    /// The certificate chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The payload's `targetArtifact`.
    pub target: Value,
    /// The signing time as RFC 3339.
    pub signing_time: String,
    /// It already carries a timestamp.
    pub timestamped: bool,
}

/// The imprint hash of a Notary algorithm: the hash of the signing algorithm.
fn hash_of_jws_alg(alg: &str) -> Option<ImprintHash> {
    Some(match alg {
        "ES256" | "PS256" => ImprintHash::Sha256,
        "ES384" | "PS384" => ImprintHash::Sha384,
        "ES512" | "PS512" => ImprintHash::Sha512,
        _ => return None,
    })
}

fn hash_of_cose_alg(alg: &coset::Algorithm) -> Option<ImprintHash> {
    use iana::Algorithm as A;
    let coset::Algorithm::Assigned(alg) = alg else {
        return None;
    };
    Some(match alg {
        A::ES256 | A::PS256 => ImprintHash::Sha256,
        A::ES384 | A::PS384 => ImprintHash::Sha384,
        A::ES512 | A::PS512 => ImprintHash::Sha512,
        _ => return None,
    })
}

impl ParsedEnvelope {
    /// Reads a JWS (JSON) or COSE_Sign1 (tagged CBOR) Notary envelope.
    pub fn parse(bytes: &[u8]) -> Result<ParsedEnvelope, String> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => parse_jws(bytes),
            Some(_) => parse_cose(bytes),
            None => Err("the envelope is empty".into()),
        }
    }
}

fn target_of(payload: &[u8]) -> Result<Value, String> {
    let payload: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("its payload is not the Notary JSON payload ({e})"))?;
    let target = payload["targetArtifact"].clone();
    let complete =
        target["mediaType"].is_string() && target["digest"].is_string() && target["size"].is_u64();
    if !complete {
        return Err("its payload has no targetArtifact with mediaType, digest and size".into());
    }
    Ok(target)
}

fn parse_jws(bytes: &[u8]) -> Result<ParsedEnvelope, String> {
    let jws: Value = serde_json::from_slice(bytes).map_err(|e| format!("it is not JSON ({e})"))?;
    let field = |name: &str| {
        jws[name]
            .as_str()
            .ok_or_else(|| format!("it is not a JWS envelope: no \"{name}\""))
    };
    let b64url = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(field(name)?)
            .map_err(|e| format!("its \"{name}\" is not base64url ({e})"))
    };
    let signature = b64url("signature")?;
    let protected: Value = serde_json::from_slice(&b64url("protected")?)
        .map_err(|e| format!("its protected header is not JSON ({e})"))?;
    let alg = protected["alg"].as_str().unwrap_or_default();
    let hash = hash_of_jws_alg(alg)
        .ok_or_else(|| format!("its algorithm {alg:?} is not a Notary algorithm"))?;
    let signing_time = protected[SIGNING_TIME]
        .as_str()
        .ok_or("it has no io.cncf.notary.signingTime (notary.x509 signatures carry one)")?
        .to_string();
    let chain = jws["header"]["x5c"]
        .as_array()
        .ok_or("it has no x5c certificate chain")?
        .iter()
        .map(|c| {
            c.as_str()
                .and_then(|c| STANDARD.decode(c).ok())
                .ok_or_else(|| "its x5c holds something other than base64 DER".to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParsedEnvelope {
        format: Format::Jws,
        signature,
        hash,
        chain,
        target: target_of(&b64url("payload")?)?,
        signing_time,
        timestamped: jws["header"].get(TIMESTAMP_HEADER).is_some(),
    })
}

fn cose_header<'a>(header: &'a coset::Header, label: &Label) -> Option<&'a Cbor> {
    header.rest.iter().find(|(l, _)| l == label).map(|(_, v)| v)
}

fn parse_cose(bytes: &[u8]) -> Result<ParsedEnvelope, String> {
    let message = CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| format!("it is neither JSON (JWS) nor a tagged COSE_Sign1 ({e})"))?;
    let protected = &message.protected.header;
    let hash = protected
        .alg
        .as_ref()
        .and_then(hash_of_cose_alg)
        .ok_or("its algorithm is not a Notary algorithm")?;
    let signing_time = match cose_header(protected, &Label::Text(SIGNING_TIME.into())) {
        Some(Cbor::Tag(1, time)) => match time.as_ref() {
            Cbor::Integer(seconds) => rfc3339(
                i64::try_from(i128::from(*seconds))
                    .map_err(|_| "its signing time is out of range")?,
            ),
            _ => return Err("its signing time is not an epoch date".into()),
        },
        _ => return Err("it has no io.cncf.notary.signingTime".into()),
    };
    let x5chain = Label::Int(iana::HeaderParameter::X5Chain as i64);
    let chain = match cose_header(&message.unprotected, &x5chain)
        .or_else(|| cose_header(protected, &x5chain))
    {
        Some(Cbor::Array(certs)) => certs
            .iter()
            .map(|c| match c {
                Cbor::Bytes(der) => Ok(der.clone()),
                _ => Err("its x5chain holds something other than DER certificates".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Cbor::Bytes(der)) => vec![der.clone()],
        _ => return Err("it has no x5chain certificate chain".into()),
    };
    let payload = message
        .payload
        .as_deref()
        .ok_or("it has a detached payload; Notary envelopes carry theirs")?;
    Ok(ParsedEnvelope {
        format: Format::Cose,
        signature: message.signature.clone(),
        hash,
        chain,
        target: target_of(payload)?,
        signing_time,
        timestamped: cose_header(&message.unprotected, &Label::Text(TIMESTAMP_HEADER.into()))
            .is_some(),
    })
}

/// `envelope` with the DER timestamp `token` added to its unprotected header.
pub fn add_timestamp(envelope: &[u8], format: Format, token: &[u8]) -> Result<Vec<u8>, String> {
    match format {
        Format::Jws => {
            let mut jws: Value = serde_json::from_slice(envelope)
                .map_err(|e| format!("cannot read the JWS envelope: {e}"))?;
            let header = jws
                .get_mut("header")
                .and_then(Value::as_object_mut)
                .ok_or("the JWS envelope has no unprotected header")?;
            header.insert(
                TIMESTAMP_HEADER.into(),
                Value::String(STANDARD.encode(token)),
            );
            serde_json::to_vec(&jws).map_err(|e| format!("cannot encode the JWS: {e}"))
        }
        Format::Cose => {
            let mut message = CoseSign1::from_tagged_slice(envelope)
                .map_err(|e| format!("cannot read the COSE envelope: {e}"))?;
            let label = Label::Text(TIMESTAMP_HEADER.into());
            message.unprotected.rest.retain(|(l, _)| *l != label);
            message
                .unprotected
                .rest
                .push((label, Cbor::Bytes(token.to_vec())));
            message
                .to_tagged_vec()
                .map_err(|e| format!("cannot encode the COSE envelope: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::envelope::{Request, Unsigned, notary_algorithm};
    use super::*;
    use keyward_sdk::KeySpec;

    fn envelope(format: Format) -> (Vec<u8>, Vec<u8>) {
        let payload = serde_json::json!({"targetArtifact": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:abcd", "size": 12}})
        .to_string();
        let chain = vec![vec![1, 2, 3], vec![4, 5]];
        let request = Request {
            payload: payload.as_bytes(),
            algorithm: notary_algorithm(KeySpec::EcP384).unwrap(),
            signing_time: 1_700_000_000,
            expiry: None,
            chain: &chain,
            signing_agent: "keyward/test",
        };
        let unsigned = Unsigned::new(format, &request).unwrap();
        let tbs = unsigned.to_be_signed();
        (unsigned.finish(&[7; 96]).unwrap(), tbs)
    }

    #[test]
    fn both_formats_parse_and_keep_their_signed_bytes_when_timestamped() {
        for format in [Format::Jws, Format::Cose] {
            let (bytes, tbs) = envelope(format);
            let parsed = ParsedEnvelope::parse(&bytes).unwrap();
            assert_eq!(parsed.format, format);
            assert_eq!(parsed.signature, vec![7; 96]);
            assert_eq!(parsed.hash, ImprintHash::Sha384);
            assert_eq!(parsed.chain, vec![vec![1, 2, 3], vec![4, 5]]);
            assert_eq!(parsed.target["size"], 12);
            assert_eq!(parsed.signing_time, "2023-11-14T22:13:20Z");
            assert!(!parsed.timestamped);

            let stamped = add_timestamp(&bytes, format, b"token").unwrap();
            let again = ParsedEnvelope::parse(&stamped).unwrap();
            assert!(again.timestamped, "{format:?}");
            assert_eq!(again.signature, parsed.signature);
            match format {
                Format::Jws => {
                    let jws: Value = serde_json::from_slice(&stamped).unwrap();
                    assert_eq!(jws["header"][TIMESTAMP_HEADER], STANDARD.encode(b"token"));
                    let before: Value = serde_json::from_slice(&bytes).unwrap();
                    for field in ["protected", "payload", "signature"] {
                        assert_eq!(jws[field], before[field]);
                    }
                }
                Format::Cose => {
                    let message = CoseSign1::from_tagged_slice(&stamped).unwrap();
                    assert_eq!(message.tbs_data(b""), tbs, "the signed bytes are unchanged");
                    assert_eq!(
                        cose_header(&message.unprotected, &Label::Text(TIMESTAMP_HEADER.into())),
                        Some(&Cbor::Bytes(b"token".to_vec()))
                    );
                }
            }
        }
    }

    #[test]
    fn what_is_not_a_notary_envelope_is_refused_with_the_reason() {
        for (bytes, needle) in [
            (&b""[..], "empty"),
            (b"{}", "no \"signature\""),
            (b"\xd2\x84", "COSE_Sign1"),
            (b"{\"signature\": \"!\"}", "base64url"),
        ] {
            let error = ParsedEnvelope::parse(bytes).unwrap_err();
            assert!(error.contains(needle), "{error}");
        }
    }
}
