//! Tests of signing operations: which agent request each mechanism and input make, and the
//! codes for input the agent cannot sign.

use super::*;
use crate::mechanism::{KeyFamily, MechanismParams, pss};
use SignatureAlgorithm::*;

fn key(
    family: KeyFamily,
    algorithms: &[SignatureAlgorithm],
    signature_len: usize,
) -> Arc<AgentKey> {
    Arc::new(AgentKey {
        id: "k".into(),
        family,
        algorithms: algorithms.to_vec(),
        signature_len,
    })
}

fn ec() -> Arc<AgentKey> {
    key(KeyFamily::Ec, &[EcdsaSha256, EcdsaSha384, EcdsaSha512], 64)
}

fn rsa() -> Arc<AgentKey> {
    key(
        KeyFamily::Rsa,
        &[
            RsaPssSha256,
            RsaPssSha384,
            RsaPssSha512,
            RsaPkcs1Sha256,
            RsaPkcs1Sha384,
            RsaPkcs1Sha512,
        ],
        256,
    )
}

fn op(key: Arc<AgentKey>, mechanism: CK_MECHANISM_TYPE, params: MechanismParams) -> SignOperation {
    SignOperation::new(key, SignMechanism::parse(mechanism, params).unwrap()).unwrap()
}

/// The DER DigestInfo of `digest` for the hash with the last OID arc `arc` (1: SHA-256,
/// 2: SHA-384, 3: SHA-512, 4: SHA-224), with NULL parameters or none.
fn digest_info(arc: u8, digest: &[u8], null_params: bool) -> Vec<u8> {
    let mut algorithm = vec![
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, arc,
    ];
    if null_params {
        algorithm.extend([0x05, 0x00]);
    }
    let mut body = vec![0x30, algorithm.len() as u8];
    body.extend(algorithm);
    body.extend([0x04, digest.len() as u8]);
    body.extend(digest);
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[test]
fn digest_info_names_the_hash_and_anything_else_is_data_invalid() {
    let d32 = [7u8; 32];
    let d48 = [7u8; 48];
    assert_eq!(
        parse_digest_info(&digest_info(1, &d32, true)),
        Ok((Hash::Sha256, d32.to_vec()))
    );
    assert_eq!(
        parse_digest_info(&digest_info(2, &d48, false)),
        Ok((Hash::Sha384, d48.to_vec()))
    );
    let mut trailing = digest_info(1, &d32, true);
    trailing.push(0);
    let sha224 = digest_info(4, &[7u8; 28], true);
    let mut sha1 = vec![
        0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
    ];
    sha1.extend([0x04, 0x14]);
    sha1.extend([7u8; 20]);
    for bad in [
        digest_info(1, &d48, true), // a SHA-384-long digest labelled SHA-256
        trailing,
        sha224,
        sha1,
        d32.to_vec(), // a bare digest, no DigestInfo
        vec![],
    ] {
        assert_eq!(parse_digest_info(&bad), Err(CKR_DATA_INVALID), "{bad:02x?}");
    }
}

#[test]
fn keys_refuse_mechanisms_of_another_family_or_outside_their_algorithms() {
    let ecdsa = SignMechanism::parse(CKM_ECDSA, MechanismParams::None).unwrap();
    assert_eq!(
        SignOperation::new(rsa(), ecdsa).unwrap_err(),
        CKR_KEY_TYPE_INCONSISTENT
    );
    let only_sha256 = key(KeyFamily::Ec, &[EcdsaSha256], 64);
    let sha384 = SignMechanism::parse(CKM_ECDSA_SHA384, MechanismParams::None).unwrap();
    assert_eq!(
        SignOperation::new(only_sha256.clone(), sha384).unwrap_err(),
        CKR_MECHANISM_INVALID
    );
    // CKM_ECDSA is allowed, but a SHA-384-long digest is not one this key signs.
    let raw = SignOperation::new(only_sha256, ecdsa).unwrap();
    assert_eq!(raw.single(&[1; 48]).unwrap_err(), CKR_DATA_LEN_RANGE);
}

#[test]
fn raw_ecdsa_picks_the_hash_by_digest_length() {
    for (len, algorithm) in [(32, EcdsaSha256), (48, EcdsaSha384), (64, EcdsaSha512)] {
        let request = op(ec(), CKM_ECDSA, MechanismParams::None)
            .single(&vec![9; len])
            .unwrap();
        assert_eq!(request.algorithm, algorithm);
        assert_eq!(request.input, SignInput::Digest(vec![9; len]));
        assert_eq!(request.purpose, "pkcs11:CKM_ECDSA");
        assert_eq!(request.key_id, "k");
    }
    for len in [0, 20, 28, 33, 65] {
        let result = op(ec(), CKM_ECDSA, MechanismParams::None).single(&vec![9; len]);
        assert_eq!(result.unwrap_err(), CKR_DATA_LEN_RANGE, "{len} bytes");
    }
}

#[test]
fn hashing_mechanisms_give_the_same_digest_in_one_part_or_many() {
    let message = b"a message long enough to split into several parts";
    for (mechanism, params, algorithm) in [
        (CKM_ECDSA_SHA256, MechanismParams::None, EcdsaSha256),
        (CKM_SHA384_RSA_PKCS, MechanismParams::None, RsaPkcs1Sha384),
        (CKM_SHA512_RSA_PKCS_PSS, pss(Hash::Sha512), RsaPssSha512),
    ] {
        let key = if algorithm == EcdsaSha256 {
            ec()
        } else {
            rsa()
        };
        let single = op(key.clone(), mechanism, params).single(message).unwrap();
        let mut multi = op(key, mechanism, params);
        for part in message.chunks(7) {
            multi.update(part).unwrap();
        }
        assert!(multi.is_multi_part());
        let multi = multi.finish().unwrap();
        assert_eq!(single, multi);
        assert_eq!(single.algorithm, algorithm);
        let expected = keyward_sdk::digest(algorithm, message).unwrap();
        assert_eq!(single.input, SignInput::Digest(expected));
    }
}

#[test]
fn raw_mechanisms_are_single_part_and_multi_part_ones_end_with_final() {
    let mut raw = op(ec(), CKM_ECDSA, MechanismParams::None);
    assert_eq!(raw.update(b"x"), Err(CKR_OPERATION_NOT_INITIALIZED));
    assert_eq!(
        raw.finish().unwrap_err(),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_SignFinal without a hashing mechanism"
    );
    let mut hashing = op(ec(), CKM_ECDSA_SHA256, MechanismParams::None);
    hashing.update(b"x").unwrap();
    assert_eq!(
        hashing.single(b"y").unwrap_err(),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Sign after C_SignUpdate"
    );
}

#[test]
fn rsa_pkcs_signs_the_digest_inside_the_digest_info() {
    let digest = [5u8; 64];
    let request = op(rsa(), CKM_RSA_PKCS, MechanismParams::None)
        .single(&digest_info(3, &digest, true))
        .unwrap();
    assert_eq!(request.algorithm, RsaPkcs1Sha512);
    assert_eq!(request.input, SignInput::Digest(digest.to_vec()));
    // Longer than a 2048-bit key can pad: refused before parsing.
    let long = vec![0x30; 256 - 10];
    assert_eq!(
        op(rsa(), CKM_RSA_PKCS, MechanismParams::None)
            .single(&long)
            .unwrap_err(),
        CKR_DATA_LEN_RANGE
    );
    // A key that does not sign PKCS#1 v1.5 with SHA-384 refuses such a DigestInfo.
    let pkcs1_sha256 = key(KeyFamily::Rsa, &[RsaPkcs1Sha256], 256);
    let request = op(pkcs1_sha256, CKM_RSA_PKCS, MechanismParams::None)
        .single(&digest_info(2, &[1; 48], true));
    assert_eq!(request.unwrap_err(), CKR_DATA_INVALID);
}

#[test]
fn pss_takes_a_digest_of_the_parameters_hash() {
    let request = op(rsa(), CKM_RSA_PKCS_PSS, pss(Hash::Sha384))
        .single(&[3; 48])
        .unwrap();
    assert_eq!(request.algorithm, RsaPssSha384);
    assert_eq!(
        op(rsa(), CKM_RSA_PKCS_PSS, pss(Hash::Sha384))
            .single(&[3; 32])
            .unwrap_err(),
        CKR_DATA_LEN_RANGE
    );
}

#[test]
fn eddsa_sends_the_message_itself() {
    let ed = key(KeyFamily::Edwards, &[Ed25519], 64);
    let request = op(ed.clone(), CKM_EDDSA, MechanismParams::None)
        .single(b"the message")
        .unwrap();
    assert_eq!(request.algorithm, Ed25519);
    assert_eq!(request.input, SignInput::Message(b"the message".to_vec()));
    assert_eq!(request.purpose, "pkcs11:CKM_EDDSA");
    let too_long = vec![0; MAX_MESSAGE + 1];
    assert_eq!(
        op(ed, CKM_EDDSA, MechanismParams::None)
            .single(&too_long)
            .unwrap_err(),
        CKR_DATA_LEN_RANGE
    );
}
