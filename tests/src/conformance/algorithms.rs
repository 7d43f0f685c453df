//! The algorithm and key-spec tables of the contract, and verification with the `openssl` CLI.

use std::fs;
use std::path::Path;

use keyward_sdk::{KeySpec, SignatureAlgorithm as Alg};

use crate::{openssl, random_bytes, stderr_text};

/// Every signature algorithm of the API.
pub const ALL_ALGORITHMS: [Alg; 10] = [
    Alg::EcdsaSha256,
    Alg::EcdsaSha384,
    Alg::EcdsaSha512,
    Alg::RsaPssSha256,
    Alg::RsaPssSha384,
    Alg::RsaPssSha512,
    Alg::RsaPkcs1Sha256,
    Alg::RsaPkcs1Sha384,
    Alg::RsaPkcs1Sha512,
    Alg::Ed25519,
];

/// Every key spec of the API.
pub const ALL_SPECS: [KeySpec; 7] = [
    KeySpec::EcP256,
    KeySpec::EcP384,
    KeySpec::EcP521,
    KeySpec::Rsa2048,
    KeySpec::Rsa3072,
    KeySpec::Rsa4096,
    KeySpec::Ed25519,
];

/// The algorithms a key of `spec` must offer, its default first.
pub fn expected_algorithms(spec: KeySpec) -> &'static [Alg] {
    use Alg::*;
    match spec {
        KeySpec::EcP256 => &[EcdsaSha256, EcdsaSha384, EcdsaSha512],
        KeySpec::EcP384 => &[EcdsaSha384, EcdsaSha256, EcdsaSha512],
        KeySpec::EcP521 => &[EcdsaSha512, EcdsaSha256, EcdsaSha384],
        KeySpec::Rsa2048 => &[
            RsaPssSha256,
            RsaPssSha384,
            RsaPssSha512,
            RsaPkcs1Sha256,
            RsaPkcs1Sha384,
            RsaPkcs1Sha512,
        ],
        KeySpec::Rsa3072 => &[
            RsaPssSha384,
            RsaPssSha256,
            RsaPssSha512,
            RsaPkcs1Sha256,
            RsaPkcs1Sha384,
            RsaPkcs1Sha512,
        ],
        KeySpec::Rsa4096 => &[
            RsaPssSha512,
            RsaPssSha256,
            RsaPssSha384,
            RsaPkcs1Sha256,
            RsaPkcs1Sha384,
            RsaPkcs1Sha512,
        ],
        KeySpec::Ed25519 => &[Ed25519],
        KeySpec::Unspecified => &[],
    }
}

/// The digest length of `alg`'s hash (`None` for Ed25519).
pub fn digest_len(alg: Alg) -> Option<usize> {
    openssl_digest(alg).map(|name| match name {
        "-sha256" => 32,
        "-sha384" => 48,
        _ => 64,
    })
}

/// The `openssl dgst` flag for `alg`'s hash (`None` for Ed25519).
fn openssl_digest(alg: Alg) -> Option<&'static str> {
    use Alg::*;
    match alg {
        EcdsaSha256 | RsaPssSha256 | RsaPkcs1Sha256 => Some("-sha256"),
        EcdsaSha384 | RsaPssSha384 | RsaPkcs1Sha384 => Some("-sha384"),
        EcdsaSha512 | RsaPssSha512 | RsaPkcs1Sha512 => Some("-sha512"),
        Ed25519 | Unspecified => None,
    }
}

/// Whether `alg` is an ECDSA algorithm.
pub fn is_ecdsa(alg: Alg) -> bool {
    matches!(alg, Alg::EcdsaSha256 | Alg::EcdsaSha384 | Alg::EcdsaSha512)
}

/// The length of each of r and s for ECDSA keys.
pub fn ecdsa_field_len(spec: KeySpec) -> Option<usize> {
    match spec {
        KeySpec::EcP256 => Some(32),
        KeySpec::EcP384 => Some(48),
        KeySpec::EcP521 => Some(66),
        _ => None,
    }
}

/// Verifies `signature` over `message` with the `openssl` CLI (`dgst` for RSA and ECDSA DER,
/// `pkeyutl -rawin` for Ed25519). `Err` carries openssl's output.
pub fn openssl_verify(
    work: &Path,
    pub_pem: &Path,
    alg: Alg,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let unique = hex::encode(random_bytes(8));
    let msg_path = work.join(format!("msg-{unique}"));
    let sig_path = work.join(format!("sig-{unique}"));
    fs::write(&msg_path, message).expect("write message");
    fs::write(&sig_path, signature).expect("write signature");
    let (pem, msg, sig) = (path_str(pub_pem), path_str(&msg_path), path_str(&sig_path));
    let mut args: Vec<&str> = match openssl_digest(alg) {
        None => vec![
            "pkeyutl", "-verify", "-pubin", "-inkey", pem, "-rawin", "-in", msg, "-sigfile", sig,
        ],
        Some(digest) => vec!["dgst", digest, "-verify", pem, "-signature", sig],
    };
    if matches!(
        alg,
        Alg::RsaPssSha256 | Alg::RsaPssSha384 | Alg::RsaPssSha512
    ) {
        args.extend([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ]);
    }
    if openssl_digest(alg).is_some() {
        args.push(msg);
    }
    let output = openssl(&args);
    let _ = fs::remove_file(&msg_path);
    let _ = fs::remove_file(&sig_path);
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            stderr_text(&output)
        ))
    }
}

pub(super) fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}
