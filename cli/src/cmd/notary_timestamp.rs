//! Timestamping Notary envelopes: online during `keyward notary sign --timestamp-url`, and
//! air-gapped with `keyward notary sign --timestamp-request-out` then `keyward notary
//! timestamp --envelope E --response R`, which adds a TSA response obtained elsewhere.
//!
//! Either way the token passes every check of [`super::tsp_check`] before it is written, and
//! nothing is written when one fails (the Notary signing workflow: "if any of the above
//! timestamping step failed, implementations MUST fail the signing process").

use std::path::{Path, PathBuf};

use clap::Args;
use openssl::x509::X509;

use super::envelope_edit::{ParsedEnvelope, add_timestamp};
use super::notary::signature_manifest;
use super::tsp::{self, Request};
use super::tsp_check::{self, Checked, Expected};
use crate::output::{EXIT_OK, Failure, quoted, read_input, write_output, write_stdout};

pub const AFTER_HELP: &str = "\
The envelope comes from `keyward notary sign --timestamp-request-out REQUEST.tsq`; the response
is what the TSA answered to REQUEST.tsq (e.g. `curl -H 'Content-Type: application/timestamp-query'
--data-binary @REQUEST.tsq https://tsa.example/ -o RESPONSE.tsr`). The token is checked before it
is written: its imprint is the hash of the envelope's signature, its nonce is the request's
(with --request), the TSA's signature and certificate, its chain to --timestamp-root-cert, and
its time inside the signing certificate's validity.

Examples:
  keyward notary timestamp --envelope sig.jws --response sig.tsr --request sig.tsq \\
      --timestamp-root-cert tsa-root.pem --signature-manifest sig-manifest.json";

/// `keyward notary timestamp`
#[derive(Debug, Args)]
pub struct TimestampArgs {
    /// The envelope to timestamp (JWS or COSE); it is rewritten unless --output is given
    #[arg(long, value_name = "FILE")]
    envelope: PathBuf,
    /// The TSA's answer (DER TimeStampResp) to the request `notary sign` wrote
    #[arg(long, value_name = "FILE")]
    response: PathBuf,
    /// The request (DER TimeStampReq) the response answers: its nonce is checked too
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
    /// The TSA's root certificate (PEM or DER): the token's chain must lead to it
    #[arg(long, value_name = "FILE")]
    timestamp_root_cert: Option<PathBuf>,
    /// Write the timestamped envelope here instead of over --envelope
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Also write the OCI manifest that stores the timestamped envelope in a registry
    #[arg(long, value_name = "FILE")]
    signature_manifest: Option<PathBuf>,
}

/// An envelope larger than this is refused unread (a Notary envelope is a few KiB: a small
/// payload and a certificate chain; notation caps a plugin's whole answer at 64 MiB).
const MAX_ENVELOPE_BYTES: u64 = 16 * 1024 * 1024;
/// A TimeStampReq is a hundred bytes or so.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// Reads at most `max` bytes of `path` (`-`: stdin); more is an error, not a truncation.
fn read_bounded(path: &Path, what: &str, max: u64) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let failed = |e: std::io::Error| {
        Failure::new(format!(
            "cannot read {what} {}: {}",
            quoted(path),
            crate::output::io_reason(&e)
        ))
    };
    let mut bytes = Vec::new();
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(failed)?)
    };
    reader
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > max {
        return Err(Failure::new(format!(
            "{what} {} is larger than {} KiB, so it is not one",
            quoted(path),
            max / 1024
        )));
    }
    Ok(bytes)
}

/// Reads `--timestamp-root-cert`: one or more PEM certificates, or one DER certificate.
pub fn load_roots(path: &Path) -> Result<Vec<X509>, Failure> {
    let bytes = read_input(path, "TSA root certificate")?;
    let roots = if bytes.windows(10).any(|w| w == b"-----BEGIN") {
        X509::stack_from_pem(&bytes).ok()
    } else {
        X509::from_der(&bytes).ok().map(|cert| vec![cert])
    };
    match roots {
        Some(roots) if !roots.is_empty() => Ok(roots),
        _ => Err(Failure::new(format!(
            "--timestamp-root-cert {}: no certificate in it; give the TSA's root certificate as PEM or DER",
            quoted(path)
        ))),
    }
}

/// Checks `token` against `parsed` and adds it to `envelope`; `whose` starts the error
/// message (`key "signer"`, `"sig.jws"`).
pub fn checked_envelope(
    whose: &str,
    envelope: &[u8],
    parsed: &ParsedEnvelope,
    token: &[u8],
    nonce: Option<&[u8]>,
    roots: &[X509],
) -> Result<(Vec<u8>, Checked), Failure> {
    let expected = Expected {
        signature: &parsed.signature,
        hash: parsed.hash,
        nonce,
        signing_chain: &parsed.chain,
        roots,
    };
    let checked = tsp_check::check(token, &expected)
        .map_err(|reason| Failure::new(format!("{whose}: the timestamp is refused: {reason}")))?;
    let stamped = add_timestamp(envelope, parsed.format, token)
        .map_err(|e| Failure::new(format!("cannot add the timestamp: {e}")))?;
    Ok((stamped, checked))
}

/// Timestamps `envelope`, signed by `key`, at the TSA at `url` (online `notary sign`).
pub async fn timestamp_online(
    key: &str,
    envelope: &[u8],
    url: &str,
    roots: &[X509],
) -> Result<(Vec<u8>, Checked), Failure> {
    let parsed = ParsedEnvelope::parse(envelope)
        .map_err(|e| Failure::new(format!("cannot read the new envelope: {e}")))?;
    let request = Request::new(parsed.hash, &parsed.signature)?;
    let response = tsp::exchange(url, &request).await?;
    let token = tsp::token_from_response(&response)
        .map_err(|e| Failure::new(format!("the TSA at {url} gave no timestamp: {e}")))?;
    let whose = format!("key {key:?}");
    checked_envelope(
        &whose,
        envelope,
        &parsed,
        &token,
        request.nonce.as_deref(),
        roots,
    )
}

/// One line on what the timestamp is and what was checked.
pub fn describe(checked: &Checked, root: Option<&Path>) -> String {
    let trust = match root.filter(|_| checked.chain_checked) {
        Some(root) => format!("its chain leads to {}", quoted(root)),
        None => "its chain was NOT checked against a root (no --timestamp-root-cert): the imprint, nonce, TSA signature and certificate, and the time were".to_string(),
    };
    format!(
        "timestamped at {} (± {} ms) by {:?}; {trust}\n",
        super::envelope::rfc3339(checked.time),
        checked.accuracy_ms,
        checked.tsa,
    )
}

/// Runs `keyward notary timestamp` (no agent needed).
pub fn run(args: TimestampArgs) -> Result<i32, Failure> {
    let envelope = read_bounded(&args.envelope, "envelope", MAX_ENVELOPE_BYTES)?;
    let response = read_bounded(
        &args.response,
        "timestamp response",
        tsp::MAX_RESPONSE_BYTES as u64,
    )?;
    let roots = match &args.timestamp_root_cert {
        Some(path) => load_roots(path)?,
        None => Vec::new(),
    };
    let parsed = ParsedEnvelope::parse(&envelope).map_err(|e| {
        Failure::new(format!(
            "{} is not a Notary envelope: {e}",
            quoted(&args.envelope)
        ))
    })?;
    if parsed.timestamped {
        return Err(Failure::new(format!(
            "{} already carries a timestamp; timestamp the envelope `keyward notary sign` wrote",
            quoted(&args.envelope)
        )));
    }
    let request = match &args.request {
        Some(path) => {
            let bytes = read_bounded(path, "timestamp request", MAX_REQUEST_BYTES)?;
            let request = Request::parse(&bytes)
                .map_err(|e| Failure::new(format!("--request {}: {e}", quoted(path))))?;
            if request.hash != parsed.hash
                || request.digest != parsed.hash.digest(&parsed.signature)
            {
                return Err(Failure::new(format!(
                    "--request {} was made for another signature than the one in {}; give the request `keyward notary sign` wrote with this envelope",
                    quoted(path),
                    quoted(&args.envelope)
                )));
            }
            Some(request)
        }
        None => None,
    };
    let token = tsp::token_from_response(&response).map_err(|e| {
        Failure::new(format!(
            "{} holds no timestamp: {e}",
            quoted(&args.response)
        ))
    })?;
    let nonce = request.as_ref().and_then(|r| r.nonce.as_deref());
    let whose = quoted(&args.envelope);
    let (stamped, checked) = checked_envelope(&whose, &envelope, &parsed, &token, nonce, &roots)?;
    let output = args.output.as_deref().unwrap_or(&args.envelope);
    write_replacing(output, &stamped)?;
    if let Some(path) = &args.signature_manifest {
        let manifest = signature_manifest(
            &parsed.target,
            parsed.format,
            &stamped,
            &parsed.chain,
            &parsed.signing_time,
        );
        let mut text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Failure::new(format!("cannot encode the signature manifest: {e}")))?;
        text.push(b'\n');
        write_output(Some(path), &text)?;
    }
    let nonce_note = if request.is_some() {
        ""
    } else {
        " (nonce not checked: give --request to check it)"
    };
    let text = format!(
        "{}{nonce_note}; envelope written to {}\n",
        describe(&checked, args.timestamp_root_cert.as_deref()).trim_end(),
        output.display()
    );
    write_stdout(text.as_bytes())?;
    Ok(EXIT_OK)
}

/// Writes `bytes` to `path` through a temporary file beside it, so an interrupted write never
/// leaves a half envelope where the signed one was.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    if path == Path::new("-") {
        return write_output(None, bytes);
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".keyward-tmp");
    let temporary = PathBuf::from(temporary);
    write_output(Some(&temporary), bytes)?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        Failure::new(format!(
            "cannot write {}: {}",
            quoted(path),
            crate::output::io_reason(&e)
        ))
    })
}
