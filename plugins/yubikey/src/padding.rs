//! What the card signs: a PIV card does raw RSA and raw ECDSA, so the host prepares the input.
//!
//! - RSA PKCS#1 v1.5: `00 01 FF.. 00 DigestInfo` (RFC 8017 §9.2), as long as the modulus.
//! - RSA-PSS: EMSA-PSS-ENCODE (RFC 8017 §9.1.1), MGF1 with the same hash, salt = hash length,
//!   random salt from OpenSSL's CSPRNG.
//! - ECDSA: the digest cut to the field size (FIPS 186-4 §6.4 takes the leftmost bits) or
//!   left-padded with zeros (the same integer), as the card wants exactly the field size.

use keyward_plugin_api::{BackendError, HashAlgorithm};
use openssl::hash::{Hasher, MessageDigest};

fn digest_info_prefix(hash: HashAlgorithm) -> &'static [u8] {
    match hash {
        HashAlgorithm::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlgorithm::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        HashAlgorithm::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    }
}

fn message_digest(hash: HashAlgorithm) -> MessageDigest {
    match hash {
        HashAlgorithm::Sha256 => MessageDigest::sha256(),
        HashAlgorithm::Sha384 => MessageDigest::sha384(),
        HashAlgorithm::Sha512 => MessageDigest::sha512(),
    }
}

fn internal(e: openssl::error::ErrorStack) -> BackendError {
    BackendError::Internal(format!("openssl: {e}"))
}

/// EMSA-PKCS1-v1_5 encoding of `digest` for a modulus of `modulus_len` bytes.
pub fn pkcs1_v15(
    digest: &[u8],
    hash: HashAlgorithm,
    modulus_len: usize,
) -> Result<Vec<u8>, BackendError> {
    let prefix = digest_info_prefix(hash);
    let t_len = prefix.len() + digest.len();
    if modulus_len < t_len + 11 {
        return Err(BackendError::InvalidInput(
            "the RSA key is too short for this hash".into(),
        ));
    }
    let mut em = Vec::with_capacity(modulus_len);
    em.extend_from_slice(&[0x00, 0x01]);
    em.resize(modulus_len - t_len - 1, 0xff);
    em.push(0x00);
    em.extend_from_slice(prefix);
    em.extend_from_slice(digest);
    Ok(em)
}

fn mgf1(seed: &[u8], len: usize, hash: HashAlgorithm) -> Result<Vec<u8>, BackendError> {
    let mut out = Vec::with_capacity(len);
    let mut counter: u32 = 0;
    while out.len() < len {
        let mut hasher = Hasher::new(message_digest(hash)).map_err(internal)?;
        hasher.update(seed).map_err(internal)?;
        hasher.update(&counter.to_be_bytes()).map_err(internal)?;
        out.extend_from_slice(&hasher.finish().map_err(internal)?);
        counter += 1;
    }
    out.truncate(len);
    Ok(out)
}

/// EMSA-PSS encoding of `digest` (salt = hash length) for a modulus of `modulus_bits` bits.
pub fn pss(
    digest: &[u8],
    hash: HashAlgorithm,
    modulus_bits: usize,
) -> Result<Vec<u8>, BackendError> {
    let mut salt = vec![0u8; digest.len()];
    openssl::rand::rand_bytes(&mut salt).map_err(internal)?;
    pss_with_salt(digest, hash, modulus_bits, &salt)
}

fn pss_with_salt(
    digest: &[u8],
    hash: HashAlgorithm,
    modulus_bits: usize,
    salt: &[u8],
) -> Result<Vec<u8>, BackendError> {
    let em_bits = modulus_bits - 1;
    let em_len = em_bits.div_ceil(8);
    let h_len = digest.len();
    if em_len < h_len + salt.len() + 2 {
        return Err(BackendError::InvalidInput(
            "the RSA key is too short for this hash".into(),
        ));
    }
    let mut hasher = Hasher::new(message_digest(hash)).map_err(internal)?;
    hasher.update(&[0u8; 8]).map_err(internal)?;
    hasher.update(digest).map_err(internal)?;
    hasher.update(salt).map_err(internal)?;
    let h = hasher.finish().map_err(internal)?;
    let db_len = em_len - h_len - 1;
    let mut db = vec![0u8; db_len - salt.len() - 1];
    db.push(0x01);
    db.extend_from_slice(salt);
    let mask = mgf1(&h, db_len, hash)?;
    for (byte, m) in db.iter_mut().zip(mask) {
        *byte ^= m;
    }
    let unused_bits = 8 * em_len - em_bits;
    db[0] &= 0xff >> unused_bits;
    let mut em = db;
    em.extend_from_slice(&h);
    em.push(0xbc);
    // The card wants exactly the modulus length: a leading zero byte when em_len is shorter.
    let modulus_len = modulus_bits.div_ceil(8);
    let mut out = vec![0u8; modulus_len - em.len()];
    out.extend_from_slice(&em);
    Ok(out)
}

/// The ECDSA input for a curve whose field is `field_len` bytes.
pub fn ecdsa_input(digest: &[u8], field_len: usize) -> Vec<u8> {
    if digest.len() >= field_len {
        digest[..field_len].to_vec()
    } else {
        let mut input = vec![0u8; field_len - digest.len()];
        input.extend_from_slice(digest);
        input
    }
}

#[cfg(test)]
mod tests {
    use openssl::pkey::PKey;
    use openssl::rsa::{Padding, Rsa};
    use openssl::sign::{RsaPssSaltlen, Verifier};

    use super::*;

    #[test]
    fn host_padding_verifies_with_openssl() {
        let rsa = Rsa::generate(2048).unwrap();
        let key = PKey::from_rsa(rsa.clone()).unwrap();
        let message = b"keyward";
        for (hash, md) in [
            (HashAlgorithm::Sha256, MessageDigest::sha256()),
            (HashAlgorithm::Sha384, MessageDigest::sha384()),
            (HashAlgorithm::Sha512, MessageDigest::sha512()),
        ] {
            let digest = openssl::hash::hash(md, message).unwrap();
            // What the card does: the raw RSA private operation.
            let raw = |em: &[u8]| {
                let mut sig = vec![0u8; 256];
                let n = rsa.private_encrypt(em, &mut sig, Padding::NONE).unwrap();
                sig.truncate(n);
                sig
            };
            let sig = raw(&pkcs1_v15(&digest, hash, 256).unwrap());
            let mut v = Verifier::new(md, &key).unwrap();
            v.update(message).unwrap();
            assert!(v.verify(&sig).unwrap(), "pkcs1 {hash:?}");

            let sig = raw(&pss(&digest, hash, 2048).unwrap());
            let mut v = Verifier::new(md, &key).unwrap();
            v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
            v.update(message).unwrap();
            assert!(v.verify(&sig).unwrap(), "pss {hash:?}");
        }
    }

    #[test]
    fn ecdsa_input_is_field_sized() {
        assert_eq!(ecdsa_input(&[1; 48], 32), vec![1; 32]);
        let padded = ecdsa_input(&[1; 32], 48);
        assert_eq!(
            (padded.len(), &padded[..16], &padded[16..]),
            (48, &[0u8; 16][..], &[1u8; 32][..])
        );
    }
}
