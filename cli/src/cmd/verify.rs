//! `keyward verify`: check a signature locally, against the public key the agent hands out.
//!
//! The check runs in this process with the RustCrypto crates ([`keyward_sdk::verify_message`]),
//! not in the agent, so it does not take the agent's word for it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use clap::Args;
use keyward_sdk::{SignatureAlgorithm, SignatureFormat};

use crate::cmd::{Agent, algorithm_names, connect, parse_algorithm, parse_format};
use crate::output::{EXIT_INVALID, EXIT_OK, Failure, quoted, read_input, write_stdout};

pub const AFTER_HELP: &str = "\
The signature file may hold the raw signature bytes (sign --output) or the base64 text that
`keyward sign` prints. Without --algorithm the key's default is assumed.

Exit status: 0 and \"signature OK\" when the signature verifies; 1 and \"signature INVALID:
<reason>\" on stderr when it does not; 2 on errors (unknown key, unreadable file, ...).

Examples:
  keyward sign --key release --input app.tar.gz > app.tar.gz.sig.b64
  keyward verify --key release --input app.tar.gz --signature app.tar.gz.sig.b64";

/// Standard base64 that accepts the text with or without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `keyward verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The key whose public key checks the signature
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// The signed data; - reads stdin
    #[arg(long, short, value_name = "FILE")]
    input: PathBuf,
    /// The signature: raw bytes or base64 text
    #[arg(long, short, value_name = "FILE")]
    signature: PathBuf,
    /// The signature algorithm [default: the key's default]
    #[arg(long, value_name = "ALG", value_parser = parse_algorithm)]
    algorithm: Option<SignatureAlgorithm>,
    /// ECDSA signature encoding: der or raw (r || s)
    #[arg(long, value_name = "FORMAT", value_parser = parse_format, default_value = "der")]
    format: SignatureFormat,
}

/// Runs `keyward verify`: exit 0 when the signature verifies, 1 when it does not.
pub async fn run(agent: &Agent, args: VerifyArgs) -> Result<i32, Failure> {
    if args.input == Path::new("-") && args.signature == Path::new("-") {
        return Err(Failure::new(
            "--input and --signature cannot both be read from stdin",
        ));
    }
    let message = read_input(&args.input, "input file")?;
    let signature = signature_bytes(read_input(&args.signature, "signature file")?);
    if signature.is_empty() {
        return Err(Failure::new(format!(
            "the signature file {} is empty",
            quoted(&args.signature)
        )));
    }
    let key = connect(agent).await?.public_key(&args.key).await?;
    let algorithm = match args.algorithm {
        Some(algorithm) => algorithm,
        None => key.info.algorithms().next().ok_or_else(|| {
            Failure::new(format!(
                "the agent lists no algorithm for key {:?}; give --algorithm",
                args.key
            ))
        })?,
    };
    if !key.info.algorithms().any(|a| a == algorithm) {
        return Err(Failure::new(format!(
            "key {:?} ({}) does not sign with {}; its algorithms: {}",
            args.key,
            key.info.key_spec().name(),
            algorithm.name(),
            algorithm_names(key.info.algorithms()).replace(',', ", ")
        )));
    }
    match keyward_sdk::verify_message(&key.der, algorithm, &message, &signature, args.format) {
        Ok(()) => {
            write_stdout(b"signature OK\n")?;
            Ok(EXIT_OK)
        }
        Err(keyward_sdk::Error::Verification(reason)) => {
            eprintln!("signature INVALID: {reason}");
            Ok(EXIT_INVALID)
        }
        Err(other) => Err(other.into()),
    }
}

/// The signature in `content`: the decoded bytes when it is base64 text, else `content` itself.
fn signature_bytes(content: Vec<u8>) -> Vec<u8> {
    let text: Vec<u8> = content
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let is_base64 = !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if is_base64 && let Ok(decoded) = BASE64.decode(&text) {
        return decoded;
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_text_is_decoded() {
        assert_eq!(signature_bytes(b"AAEC\n".to_vec()), vec![0, 1, 2]);
        assert_eq!(signature_bytes(b"AAECAw".to_vec()), vec![0, 1, 2, 3]);
        assert_eq!(
            signature_bytes(b" AAEC\r\nAw==\n".to_vec()),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn raw_bytes_are_kept() {
        let der = vec![0x30, 0x45, 0x02, 0x21, 0x00, 0xff];
        assert_eq!(signature_bytes(der.clone()), der);
        // Base64 alphabet but not decodable (a lone trailing character): kept as is.
        assert_eq!(signature_bytes(b"AAECA".to_vec()), b"AAECA".to_vec());
    }
}
