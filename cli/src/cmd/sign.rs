//! `keyward sign`: have the agent sign a file, stdin or a precomputed digest.
//!
//! For RSA and ECDSA the input is hashed here and only the digest goes to the agent; Ed25519
//! signs the message itself, so the whole input is sent.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Args;
use keyward_sdk::{SignOptions, SignatureAlgorithm, SignatureFormat};

use crate::cmd::{Agent, connect, parse_algorithm, parse_format};
use crate::output::{EXIT_OK, Failure, read_input, write_output, write_stdout};

pub const AFTER_HELP: &str = "\
Algorithms: ecdsa-sha256, ecdsa-sha384, ecdsa-sha512, rsa-pss-sha256, rsa-pss-sha384,
rsa-pss-sha512, rsa-pkcs1-sha256, rsa-pkcs1-sha384, rsa-pkcs1-sha512, ed25519.
Without --algorithm the key's default is used (the first one `keyward keys list` shows).

The signature's raw bytes go to --output; without it, they are printed in base64 on stdout.
ECDSA signatures are DER by default (what OpenSSL and X.509 expect); --format raw gives r || s.
--json prints {key_id, algorithm, format, key_version, signature (base64)} instead of the
base64 line (the raw bytes still go to --output when it is given).

Examples:
  keyward sign --key release --input app.tar.gz --output app.tar.gz.sig
  openssl dgst -sha256 -verify release.pub.pem -signature app.tar.gz.sig app.tar.gz
  echo hello | keyward sign --key release --input -
  keyward sign --key release --digest \"$(sha256sum app.tar.gz | cut -d' ' -f1)\"
  keyward sign --key jose --algorithm ecdsa-sha256 --format raw --input payload";

/// `keyward sign`
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The key to sign with
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// The signature algorithm [default: the key's default]
    #[arg(long, value_name = "ALG", value_parser = parse_algorithm)]
    algorithm: Option<SignatureAlgorithm>,
    /// ECDSA signature encoding: der or raw (r || s)
    #[arg(long, value_name = "FORMAT", value_parser = parse_format, default_value = "der")]
    format: SignatureFormat,
    /// The data to sign; - reads stdin
    #[arg(long, short, value_name = "FILE")]
    input: Option<PathBuf>,
    /// A digest to sign, in hex, computed with the algorithm's hash (RSA and ECDSA only)
    #[arg(long, value_name = "HEX")]
    digest: Option<String>,
    /// Write the raw signature to FILE instead of base64 on stdout
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Why this signature is made, for the agent's audit log (at most 256 bytes)
    #[arg(long, value_name = "TEXT")]
    purpose: Option<String>,
    /// Print JSON (key, algorithm, format, key version, base64 signature) instead
    #[arg(long)]
    json: bool,
}

/// What `keyward sign` signs.
enum Input {
    Message(Vec<u8>),
    Digest(Vec<u8>),
}

/// Runs `keyward sign`.
pub async fn run(agent: &Agent, args: SignArgs) -> Result<i32, Failure> {
    // Everything that can be checked without the agent is checked first.
    let input = match (&args.input, &args.digest) {
        (Some(_), Some(_)) => {
            return Err(Failure::new(
                "--input and --digest cannot be used together: sign a file (--input) or a precomputed digest (--digest)",
            ));
        }
        (None, None) => {
            return Err(Failure::new(
                "nothing to sign: give --input FILE (- for stdin) or --digest HEX",
            ));
        }
        (Some(path), None) => Input::Message(read_input(path, "input file")?),
        (None, Some(hex_digest)) => {
            let digest = parse_digest(hex_digest)?;
            if let Some(algorithm) = args.algorithm {
                check_digest(&args.key, algorithm, &digest)?;
            }
            Input::Digest(digest)
        }
    };
    let client = connect(agent).await?;
    let options = SignOptions {
        algorithm: args.algorithm,
        format: args.format,
        purpose: args.purpose.clone().unwrap_or_default(),
    };
    let signature = match input {
        Input::Message(message) => client.sign_message(&args.key, &message, &options).await?,
        Input::Digest(digest) => {
            let algorithm = match args.algorithm {
                Some(algorithm) => algorithm,
                None => client.default_algorithm(&args.key).await?,
            };
            check_digest(&args.key, algorithm, &digest)?;
            let options = SignOptions {
                algorithm: Some(algorithm),
                ..options
            };
            client.sign_digest(&args.key, &digest, &options).await?
        }
    };
    if let Some(path) = &args.output {
        write_output(Some(path), &signature.bytes)?;
    }
    if args.json {
        #[derive(serde::Serialize)]
        struct SignedJson<'a> {
            key_id: &'a str,
            algorithm: &'static str,
            format: &'static str,
            key_version: &'a str,
            signature: String,
        }
        crate::json::print(&SignedJson {
            key_id: &args.key,
            algorithm: signature.algorithm.name(),
            format: signature.format.name(),
            key_version: &signature.key_version,
            signature: STANDARD.encode(&signature.bytes),
        })?;
    } else if args.output.is_none() {
        write_stdout(format!("{}\n", STANDARD.encode(&signature.bytes)).as_bytes())?;
    }
    Ok(EXIT_OK)
}

/// Decodes `--digest`: hex digits, optionally with a `0x` prefix and whitespace.
fn parse_digest(text: &str) -> Result<Vec<u8>, Failure> {
    let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let cleaned = cleaned
        .strip_prefix("0x")
        .or_else(|| cleaned.strip_prefix("0X"))
        .unwrap_or(&cleaned);
    if cleaned.is_empty() {
        return Err(Failure::new("--digest is empty: give the digest in hex"));
    }
    hex::decode(cleaned).map_err(|error| {
        let reason = match error {
            hex::FromHexError::InvalidHexCharacter { c, index } => {
                format!("{c:?} at position {index} is not a hex digit")
            }
            hex::FromHexError::OddLength => "it has an odd number of hex digits".to_string(),
            other => other.to_string(),
        };
        Failure::new(format!("--digest is not valid hex: {reason}"))
    })
}

/// Checks that `digest` fits `algorithm` before asking the agent.
fn check_digest(key: &str, algorithm: SignatureAlgorithm, digest: &[u8]) -> Result<(), Failure> {
    if algorithm == SignatureAlgorithm::Ed25519 {
        return Err(Failure::new(format!(
            "key {key:?} would sign with ed25519, which signs the message itself, not a digest: use --input instead of --digest"
        )));
    }
    // The hash's output length: the digest of nothing has it.
    let expected = keyward_sdk::digest(algorithm, b"")?.len();
    if digest.len() != expected {
        return Err(Failure::new(format!(
            "{} needs a {expected}-byte digest ({} hex digits), but --digest has {} bytes",
            algorithm.name(),
            expected * 2,
            digest.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parsing() {
        assert_eq!(parse_digest("00ff").unwrap(), vec![0, 255]);
        assert_eq!(parse_digest(" 0xAB cd\n").unwrap(), vec![0xab, 0xcd]);
        assert!(parse_digest("").is_err());
        assert!(parse_digest("abc").is_err());
        assert!(parse_digest("zz").is_err());
    }

    #[test]
    fn digest_length_is_checked() {
        let alg = SignatureAlgorithm::EcdsaSha256;
        assert!(check_digest("k", alg, &[0; 32]).is_ok());
        assert!(check_digest("k", alg, &[0; 48]).is_err());
        assert!(check_digest("k", SignatureAlgorithm::RsaPssSha384, &[0; 48]).is_ok());
        assert!(check_digest("k", SignatureAlgorithm::Ed25519, &[0; 32]).is_err());
    }
}
