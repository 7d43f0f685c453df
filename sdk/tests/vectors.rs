//! The test vectors shared with the Go SDK (`sdk/testdata/vectors.json`, made by
//! `sdk/testdata/make_vectors.py` with Python's hashlib and `cryptography`): digests,
//! the algorithm a key spec, hash and padding choose, and ECDSA DER <-> raw encodings. The Go
//! SDK's `vectors_test.go` reads the same file, so the two SDKs stay byte-compatible.

use keyward_sdk::encoding::{ecdsa_der_to_raw, ecdsa_raw_to_der};
use keyward_sdk::{HashAlgorithm, KeySpec, RsaPadding, SignatureAlgorithm, algorithm_for};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/vectors.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

fn text<'a>(case: &'a Value, field: &str) -> &'a str {
    case[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {case}"))
}

#[test]
fn digests_match() {
    let vectors = vectors();
    let cases = vectors["digests"].as_array().expect("digests");
    assert!(!cases.is_empty());
    for case in cases {
        let input = hex::decode(text(case, "input_hex")).expect("hex");
        for hash in [
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
        ] {
            let digest = hash.digest(&input);
            assert_eq!(hex::encode(&digest), text(case, hash.name()), "{case}");
            assert_eq!(digest.len(), hash.len());
        }
    }
}

#[test]
fn algorithm_choice_matches() {
    let vectors = vectors();
    let cases = vectors["algorithms"].as_array().expect("algorithms");
    assert!(cases.len() > 50);
    for case in cases {
        let spec = KeySpec::from_name(text(case, "key_spec")).expect("a key spec name");
        let padding = match text(case, "padding") {
            "pss" => RsaPadding::Pss,
            _ => RsaPadding::Pkcs1,
        };
        let chosen = match text(case, "hash") {
            "none" => algorithm_for(spec, None, padding).ok(),
            // Hashes the agent has no algorithm for (sha1, sha224) do not even parse.
            name => HashAlgorithm::from_name(name)
                .and_then(|hash| algorithm_for(spec, Some(hash), padding).ok()),
        };
        let expected = case["algorithm"]
            .as_str()
            .map(|name| SignatureAlgorithm::from_name(name).expect("an algorithm name"));
        assert_eq!(chosen, expected, "{case}");
    }
}

#[test]
fn ecdsa_encodings_match() {
    let vectors = vectors();
    let cases = vectors["ecdsa"].as_array().expect("ecdsa");
    assert!(!cases.is_empty());
    for case in cases {
        let spec = KeySpec::from_name(text(case, "key_spec")).expect("a key spec name");
        let raw = hex::decode(text(case, "raw_hex")).expect("hex");
        let der = hex::decode(text(case, "der_hex")).expect("hex");
        assert_eq!(
            ecdsa_raw_to_der(spec, &raw).expect("raw -> der"),
            der,
            "{case}"
        );
        assert_eq!(
            ecdsa_der_to_raw(spec, &der).expect("der -> raw"),
            raw,
            "{case}"
        );
    }
    // Not a signature: refused, not mangled.
    assert!(ecdsa_der_to_raw(KeySpec::EcP256, b"\x30\x00").is_err());
    assert!(ecdsa_raw_to_der(KeySpec::EcP256, &[1u8; 63]).is_err());
    assert!(ecdsa_raw_to_der(KeySpec::Rsa2048, &[1u8; 64]).is_err());
}
