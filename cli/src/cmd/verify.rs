//! `keyward verify`: check a signature locally, against the public key the agent hands out
//! (`--key`) or one from a file (`--public-key`, no agent needed).
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
use keyward_sdk::public_key::{algorithms_of, key_spec_of, spki_from_file};

pub const AFTER_HELP: &str = "\
The signature file may hold the raw signature bytes (sign --output) or the base64 text that
`keyward sign` prints. Without --algorithm the key's default is assumed. With --public-key
FILE (a PEM or DER SubjectPublicKeyInfo, e.g. from `keyward pubkey`) no agent is needed.

Exit status: 0 and \"signature OK\" when the signature verifies; 1 and \"signature INVALID:
<reason>\" on stderr when it does not; other codes on errors (unknown key, unreadable file,
no agent, ...). --json prints {\"valid\": true|false, \"reason\", \"algorithm\"} instead.

Examples:
  keyward sign --key release --input app.tar.gz > app.tar.gz.sig.b64
  keyward verify --key release --input app.tar.gz --signature app.tar.gz.sig.b64
  keyward pubkey --key release > release.pem      # once, then anywhere, without the agent:
  keyward verify --public-key release.pem --input app.tar.gz --signature app.tar.gz.sig.b64";

/// Standard base64 that accepts the text with or without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `keyward verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The key whose public key checks the signature (asked from the agent)
    #[arg(
        long,
        value_name = "KEY",
        required_unless_present = "public_key",
        conflicts_with = "public_key"
    )]
    key: Option<String>,
    /// A public key file (PEM or DER SubjectPublicKeyInfo): check without the agent
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// Print JSON ({"valid", "reason", "algorithm"}) instead of text
    #[arg(long)]
    json: bool,
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
    // The public key, its type and algorithms (the default first): from the file, or the agent.
    let (name, der, spec, algorithms) = match (&args.public_key, &args.key) {
        (Some(file), _) => {
            let der = spki_from_file(&read_input(file, "public key file")?).map_err(|e| {
                Failure::new(format!("{}: {}", quoted(file), Failure::from(e).message()))
            })?;
            let spec = key_spec_of(&der)?;
            (quoted(file), der, spec, algorithms_of(spec))
        }
        (None, Some(key_id)) => {
            let key = connect(agent).await?.public_key(key_id).await?;
            let algorithms: Vec<SignatureAlgorithm> = key.info.algorithms().collect();
            (
                format!("key {key_id:?}"),
                key.der,
                key.info.key_spec(),
                algorithms,
            )
        }
        (None, None) => return Err(Failure::new("give --key KEY or --public-key FILE")),
    };
    let algorithm = match args.algorithm {
        Some(algorithm) => algorithm,
        None => *algorithms.first().ok_or_else(|| {
            Failure::new(format!(
                "no algorithm is known for {name}; give --algorithm"
            ))
        })?,
    };
    if !algorithms.contains(&algorithm) {
        return Err(Failure::new(format!(
            "{name} ({}) does not sign with {}; its algorithms: {}",
            spec.name(),
            algorithm.name(),
            algorithm_names(algorithms.iter().copied()).replace(',', ", ")
        )));
    }
    let verdict =
        match keyward_sdk::verify_message(&der, algorithm, &message, &signature, args.format) {
            Ok(()) => None,
            Err(keyward_sdk::Error::Verification(reason)) => Some(reason),
            Err(other) => return Err(other.into()),
        };
    if args.json {
        #[derive(serde::Serialize)]
        struct VerifyJson<'a> {
            valid: bool,
            reason: Option<&'a str>,
            algorithm: &'static str,
        }
        crate::json::print(&VerifyJson {
            valid: verdict.is_none(),
            reason: verdict.as_deref(),
            algorithm: algorithm.name(),
        })?;
    } else if let Some(reason) = &verdict {
        eprintln!("signature INVALID: {reason}");
    } else {
        write_stdout(b"signature OK\n")?;
    }
    Ok(if verdict.is_none() {
        EXIT_OK
    } else {
        EXIT_INVALID
    })
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
