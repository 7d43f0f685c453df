//! `keyward notary sign`: a Notary Project signature for an OCI manifest, made from local files
//! only, so it can be made in an air-gapped room and attached to the image later.
//!
//! The payload is `{"targetArtifact": <descriptor>}` (mediaType, digest `sha256:<hex of the
//! manifest bytes>`, size); the envelope is JWS or COSE ([`super::envelope`]) with the key's
//! certificate chain. `--signature-manifest` also writes the OCI manifest that stores the
//! signature in a registry (notation v1's layout: config `application/vnd.cncf.notary.signature`
//! `{}`, one layer = the envelope, `subject` = the signed manifest, the chain's thumbprints).
//! `--timestamp-url` adds an RFC 3161 timestamp at once; `--timestamp-request-out` writes the
//! request for a TSA reached from elsewhere ([`super::notary_timestamp`]).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use keyward_sdk::{SignOptions, SignatureFormat};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::envelope::{Format, Request, Unsigned, notary_algorithm, rfc3339};
use crate::cmd::{Agent, connect};
use crate::output::{EXIT_OK, Failure, read_input, write_output, write_stdout};

pub const AFTER_HELP: &str = "\
The key needs a certificate chain (keyward cert issue / keyward cert attach).
--expiry takes a duration: 90s, 30m, 24h, 7d or combinations such as 1h30m (plain numbers
are seconds).
--timestamp-url adds an RFC 3161 timestamp (so the signature outlives its certificate), checked
before anything is written; --timestamp-root-cert names the TSA root it must chain to.

Examples:
  keyward notary sign --key signer --manifest manifest.json --output sig.jws
  keyward notary sign --key signer --descriptor desc.json --envelope cose --expiry 30d \\
      --output sig.cose --signature-manifest sig-manifest.json
  keyward notary sign --key signer --manifest manifest.json --output sig.jws \\
      --timestamp-url http://tsa.example/ --timestamp-root-cert tsa-root.pem
  # air-gapped: write the request, have it timestamped elsewhere, then add the answer
  keyward notary sign --key signer --manifest manifest.json --output sig.jws \\
      --timestamp-request-out sig.tsq
  keyward notary timestamp --envelope sig.jws --response sig.tsr --request sig.tsq \\
      --timestamp-root-cert tsa-root.pem --signature-manifest sig-manifest.json
  # later, online: push the {} config blob, the envelope blob and sig-manifest.json
  # (by its digest); docs/notation.md has the steps.";

/// The empty JSON config blob `{}` of a notation v1 signature manifest.
pub const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// The artifact type / legacy config media type of Notary signatures.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";

/// `keyward notary ...`
#[derive(Debug, clap::Subcommand)]
pub enum NotaryCommand {
    /// Sign an OCI manifest offline into a Notary signature envelope
    #[command(after_help = AFTER_HELP)]
    Sign(SignArgs),
    /// Add an RFC 3161 timestamp obtained elsewhere to an envelope (air-gapped signing)
    #[command(after_help = super::notary_timestamp::AFTER_HELP)]
    Timestamp(super::notary_timestamp::TimestampArgs),
}

/// `keyward notary sign`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["descriptor", "manifest"])))]
pub struct SignArgs {
    /// The key to sign with (it needs a certificate chain)
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// The target as an OCI descriptor (JSON with mediaType, digest, size)
    #[arg(long, value_name = "FILE")]
    descriptor: Option<PathBuf>,
    /// The target manifest itself (its bytes are hashed as they are)
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// The manifest's media type [default: its "mediaType" field]
    #[arg(long, value_name = "TYPE")]
    media_type: Option<String>,
    /// The envelope format: jws or cose
    #[arg(long, value_name = "FORMAT", default_value = "jws", value_parser = ["jws", "cose"])]
    envelope: String,
    /// How long the signature is valid (e.g. 30d); without it, it does not expire
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    expiry: Option<u64>,
    /// Where to write the envelope
    #[arg(long, short, value_name = "FILE")]
    output: PathBuf,
    /// Also write the OCI manifest that stores the signature in a registry
    #[arg(long, value_name = "FILE")]
    signature_manifest: Option<PathBuf>,
    /// Timestamp the signature at this RFC 3161 Time Stamping Authority
    #[arg(long, value_name = "URL", conflicts_with = "timestamp_request_out")]
    timestamp_url: Option<String>,
    /// The TSA's root certificate (PEM or DER): the timestamp's chain must lead to it
    #[arg(long, value_name = "FILE", requires = "timestamp_url")]
    timestamp_root_cert: Option<PathBuf>,
    /// Write an RFC 3161 request (DER TimeStampReq) for the signature, for `notary timestamp`
    #[arg(long, value_name = "FILE")]
    timestamp_request_out: Option<PathBuf>,
}

/// Parses a duration flag (`90s`, `30m`, `24h`, `7d`, `1h30m`, or seconds;
/// [`super::parse_duration`]) into whole seconds, at least one.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let seconds = super::parse_duration(text)?.as_secs();
    if seconds == 0 {
        return Err(format!(
            "{text:?} is shorter than a second; give e.g. 90s, 30m, 24h or 7d"
        ));
    }
    Ok(seconds)
}

/// The target descriptor from `--descriptor` or `--manifest`.
fn target_descriptor(args: &SignArgs) -> Result<Value, Failure> {
    if let Some(path) = &args.manifest {
        let bytes = read_input(path, "manifest")?;
        let media_type = match &args.media_type {
            Some(media_type) => media_type.clone(),
            None => serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|m| m.get("mediaType").and_then(Value::as_str).map(String::from))
                .ok_or_else(|| {
                    Failure::new(format!(
                        "{} has no \"mediaType\" field; give --media-type (e.g. application/vnd.oci.image.manifest.v1+json)",
                        path.display()
                    ))
                })?,
        };
        return Ok(json!({
            "mediaType": media_type,
            "digest": format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            "size": bytes.len(),
        }));
    }
    let path = args
        .descriptor
        .as_deref()
        .ok_or_else(|| Failure::new("give --descriptor FILE or --manifest FILE"))?;
    let bytes = read_input(path, "descriptor")?;
    let descriptor: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::new(format!("{} is not JSON: {e}", path.display())))?;
    let field = |name: &str| descriptor.get(name).cloned();
    let media_type = args
        .media_type
        .clone()
        .map(Value::String)
        .or_else(|| field("mediaType"))
        .filter(Value::is_string);
    let digest = field("digest").filter(|d| {
        d.as_str().is_some_and(|d| {
            d.strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
    });
    let size = field("size").filter(Value::is_u64);
    let (Some(media_type), Some(digest), Some(size)) = (media_type, digest, size) else {
        return Err(Failure::new(format!(
            "{} must be an OCI descriptor with \"mediaType\", \"digest\" (sha256:<64 hex digits>) and \"size\"",
            path.display()
        )));
    };
    let mut target = json!({ "mediaType": media_type, "digest": digest, "size": size });
    for optional in ["artifactType", "annotations"] {
        if let Some(value) = field(optional) {
            target[optional] = value;
        }
    }
    Ok(target)
}

/// Runs `keyward notary ...`.
pub async fn run(agent: &Agent, command: NotaryCommand) -> Result<i32, Failure> {
    match command {
        NotaryCommand::Sign(args) => sign(agent, args).await,
        NotaryCommand::Timestamp(args) => super::notary_timestamp::run(args),
    }
}

async fn sign(agent: &Agent, args: SignArgs) -> Result<i32, Failure> {
    let target = target_descriptor(&args)?;
    let format = if args.envelope == "cose" {
        Format::Cose
    } else {
        Format::Jws
    };
    let payload = serde_json::to_vec(&json!({ "targetArtifact": target }))
        .map_err(|e| Failure::new(format!("cannot encode the payload: {e}")))?;
    // A root file that cannot be read fails before anything is signed.
    let timestamp_roots = match &args.timestamp_root_cert {
        Some(path) => super::notary_timestamp::load_roots(path)?,
        None => Vec::new(),
    };
    let client = connect(agent).await?;
    let public = client.public_key(&args.key).await?;
    let algorithm = notary_algorithm(public.info.key_spec())
        .map_err(|e| Failure::new(format!("key {:?}: {e}", args.key)))?;
    if public.certificate_chain.is_empty() {
        return Err(Failure::new(format!(
            "key {:?} has no certificate chain; Notary signatures need one: run `keyward cert issue --key {} --subject ...` first",
            args.key, args.key
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let signing_agent = format!("keyward/{}", env!("CARGO_PKG_VERSION"));
    let request = Request {
        payload: &payload,
        algorithm,
        signing_time: now,
        expiry: args.expiry.map(|e| now + e as i64),
        chain: &public.certificate_chain,
        signing_agent: &signing_agent,
    };
    let unsigned = Unsigned::new(format, &request).map_err(Failure::new)?;
    let digest = keyward_sdk::digest(algorithm.agent, &unsigned.to_be_signed())?;
    let options = SignOptions {
        algorithm: Some(algorithm.agent),
        format: SignatureFormat::Raw,
        purpose: format!(
            "keyward notary sign {}",
            target["digest"].as_str().unwrap_or("")
        ),
    };
    let signature = client.sign_digest(&args.key, &digest, &options).await?;
    // The envelope carries the chain fetched before signing; the agent returns the chain it
    // signed with, and the two differ only if someone attached a new chain meanwhile.
    if !signature.certificate_chain.is_empty()
        && signature.certificate_chain != public.certificate_chain
    {
        return Err(Failure::new(format!(
            "key {:?}: its certificate chain changed while signing; run the command again",
            args.key
        )));
    }
    let chain = public.certificate_chain;
    let mut envelope = unsigned.finish(&signature.bytes).map_err(Failure::new)?;
    let mut timestamp_note = String::new();
    if let Some(url) = &args.timestamp_url {
        let (stamped, checked) =
            super::notary_timestamp::timestamp_online(&args.key, &envelope, url, &timestamp_roots)
                .await?;
        envelope = stamped;
        timestamp_note =
            super::notary_timestamp::describe(&checked, args.timestamp_root_cert.as_deref());
    }
    if let Some(path) = &args.timestamp_request_out {
        let hash = super::tsp::ImprintHash::for_signature(algorithm.agent).map_err(Failure::new)?;
        let request = super::tsp::Request::new(hash, &signature.bytes)?;
        write_output(Some(path), &request.der)?;
        timestamp_note = format!(
            "timestamp request written to {}: have a TSA answer it, then run `keyward notary timestamp --envelope {} --response RESPONSE --request {}`\n",
            path.display(),
            args.output.display(),
            path.display()
        );
    }
    write_output(Some(&args.output), &envelope)?;
    if let Some(path) = &args.signature_manifest {
        let manifest = signature_manifest(&target, format, &envelope, &chain, &rfc3339(now));
        let mut text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Failure::new(format!("cannot encode the signature manifest: {e}")))?;
        text.push(b'\n');
        write_output(Some(path), &text)?;
    }
    let summary = format!(
        "signed {} ({}) with key {:?}: {} envelope ({}) written to {}\n",
        target["digest"].as_str().unwrap_or("?"),
        target["mediaType"].as_str().unwrap_or("?"),
        args.key,
        args.envelope.to_uppercase(),
        format.media_type(),
        args.output.display()
    );
    write_stdout(format!("{summary}{timestamp_note}").as_bytes())?;
    Ok(EXIT_OK)
}

/// The OCI image manifest that stores a Notary signature (notation v1 layout).
pub fn signature_manifest(
    target: &Value,
    format: Format,
    envelope: &[u8],
    chain: &[Vec<u8>],
    signing_time: &str,
) -> Value {
    let thumbprints: Vec<String> = chain
        .iter()
        .map(|der| hex::encode(Sha256::digest(der)))
        .collect();
    let subject = json!({
        "mediaType": target["mediaType"],
        "digest": target["digest"],
        "size": target["size"],
    });
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": SIGNATURE_ARTIFACT_TYPE,
            "digest": EMPTY_CONFIG_DIGEST,
            "size": 2
        },
        "layers": [{
            "mediaType": format.media_type(),
            "digest": format!("sha256:{}", hex::encode(Sha256::digest(envelope))),
            "size": envelope.len()
        }],
        "subject": subject,
        "annotations": {
            "io.cncf.notary.x509chain.thumbprint#S256":
                serde_json::to_string(&thumbprints).unwrap_or_default(),
            "org.opencontainers.image.created": signing_time
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::envelope::PAYLOAD_TYPE;
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400));
        assert_eq!(parse_duration("1h 30m"), Ok(5400));
        assert_eq!(parse_duration("10"), Ok(10));
        for bad in ["", "1x", "h", "0s", "500ms"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_signature_manifest_points_at_the_target_and_the_envelope() {
        let target =
            json!({"mediaType": "m", "digest": "sha256:ab", "size": 3, "annotations": {"a": "b"}});
        let manifest = signature_manifest(
            &target,
            Format::Cose,
            b"env",
            &[vec![1]],
            "1970-01-01T00:00:00Z",
        );
        assert_eq!(
            manifest["subject"],
            json!({"mediaType": "m", "digest": "sha256:ab", "size": 3})
        );
        assert_eq!(manifest["layers"][0]["mediaType"], "application/cose");
        assert_eq!(manifest["layers"][0]["size"], 3);
        assert_eq!(manifest["config"]["mediaType"], SIGNATURE_ARTIFACT_TYPE);
        let thumbprints: Vec<String> = serde_json::from_str(
            manifest["annotations"]["io.cncf.notary.x509chain.thumbprint#S256"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(thumbprints, vec![hex::encode(Sha256::digest([1u8]))]);
        assert_eq!(PAYLOAD_TYPE, "application/vnd.cncf.notary.payload.v1+json");
    }
}
