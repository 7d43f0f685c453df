//! `keyward cert issue|csr|attach|show`: X.509 certificates for agent keys.
//!
//! Certificates are made with rcgen through the agent: the SDK's [`AgentKey`] has the agent
//! sign the TBSCertificate, so no private key is ever read here. The leaf profile is the one
//! the Notary Project requires of a signing certificate (basicConstraints CA:FALSE critical,
//! keyUsage digitalSignature critical, extendedKeyUsage codeSigning); `--self-signed-ca` makes
//! a CA certificate (CA:TRUE critical, keyUsage keyCertSign + cRLSign critical) for a key that
//! then issues leaves with `--ca`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use keyward_sdk::Client;
use keyward_sdk::x509::rcgen::{
    self, BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyUsagePurpose, SerialNumber,
};
use keyward_sdk::x509::{AgentKey, chain_to_pem};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cmd::{Agent, connect};
use crate::output::{EXIT_OK, Failure, read_input, write_output, write_stdout};

pub const AFTER_HELP: &str = "\
Subjects are comma-separated: C (country), ST (state), L, O, OU, CN. Notation trust policies
name signers by C, ST and O, so give at least those. A comma inside a value is written \\,.

Examples:
  keyward cert issue --key signer --subject \"C=US,ST=WA,O=Example,CN=signer\"
  keyward cert issue --key root --self-signed-ca --subject \"C=US,ST=WA,O=Example,CN=Example Root\"
  keyward cert issue --key signer --ca root --subject \"C=US,ST=WA,O=Example,CN=signer\" --output chain.pem
  keyward cert issue --key signer --subject \"C=US,ST=WA,O=Example,CN=signer\" --validity 12h
  keyward cert csr --key signer --subject \"C=US,ST=WA,O=Example,CN=signer\" > signer.csr
  keyward cert attach --key signer chain.pem
  keyward cert show --key signer";

/// `keyward cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a certificate for a key: self-signed, by another agent key acting as CA, or a CA
    Issue(IssueArgs),
    /// Write a certificate signing request (PEM) for a key, for an external CA
    Csr(CsrArgs),
    /// Attach a certificate chain (PEM, leaf first) to a key
    Attach(AttachArgs),
    /// Show the certificate chain attached to a key
    Show(ShowArgs),
}

/// `keyward cert issue`
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The key the certificate is for
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// The subject, e.g. "C=US,ST=WA,O=Example,CN=signer"
    #[arg(long, value_name = "DN")]
    subject: String,
    /// Days of validity, from now
    #[arg(long, value_name = "N", default_value_t = 365)]
    days: u32,
    /// Validity as a duration from now (90s, 30m, 24h, 7d, 1h30m) instead of --days: short-lived
    /// signing certificates, or a test of what happens when one expires
    #[arg(long, value_name = "DURATION", value_parser = super::notary::parse_duration, conflicts_with = "days")]
    validity: Option<u64>,
    /// Have this agent key sign the certificate as CA (it needs a CA certificate attached)
    #[arg(long, value_name = "CA_KEY_ID", conflicts_with = "self_signed_ca")]
    ca: Option<String>,
    /// Make a self-signed CA certificate (CA:TRUE, keyCertSign, cRLSign) instead of a leaf
    #[arg(long)]
    self_signed_ca: bool,
    /// Do not attach the certificate to the key in the agent
    #[arg(long)]
    no_attach: bool,
    /// Also write the PEM chain (leaf first) to FILE
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// `keyward cert csr`
#[derive(Debug, Args)]
pub struct CsrArgs {
    /// The key the request is for
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// The subject, e.g. "C=US,ST=WA,O=Example,CN=signer"
    #[arg(long, value_name = "DN")]
    subject: String,
    /// Write the CSR to FILE instead of stdout
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// `keyward cert attach`
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The key the chain belongs to
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// The chain: PEM certificates, leaf first, ending with the root; - reads stdin
    #[arg(value_name = "CHAIN.pem")]
    chain: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// `keyward cert show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The key
    #[arg(long, value_name = "KEY_ID")]
    key: String,
    /// Print the chain as PEM instead of a summary
    #[arg(long, conflicts_with = "json")]
    pem: bool,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// Runs `keyward cert ...`.
pub async fn run(agent: &Agent, command: CertCommand) -> Result<i32, Failure> {
    match command {
        CertCommand::Issue(args) => issue(agent, args).await,
        CertCommand::Csr(args) => csr(agent, args).await,
        CertCommand::Attach(args) => attach(agent, args).await,
        CertCommand::Show(args) => show(agent, args).await,
    }
}

/// Parses "C=US,ST=WA,O=Example,CN=signer" (`\,` escapes a comma).
pub fn parse_subject(text: &str) -> Result<DistinguishedName, Failure> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ',' => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    let mut name = DistinguishedName::new();
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (attr, value) = part.split_once('=').ok_or_else(|| {
            Failure::new(format!(
                "--subject: {part:?} is not ATTRIBUTE=VALUE; write e.g. \"C=US,ST=WA,O=Example,CN=signer\""
            ))
        })?;
        let kind = match attr.trim().to_ascii_uppercase().as_str() {
            "C" => DnType::CountryName,
            "ST" | "S" => DnType::StateOrProvinceName,
            "L" => DnType::LocalityName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "CN" => DnType::CommonName,
            other => {
                return Err(Failure::new(format!(
                    "--subject: unknown attribute {other:?}; use C, ST, L, O, OU and CN"
                )));
            }
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(Failure::new(format!("--subject: {attr} has no value")));
        }
        if kind == DnType::CountryName && value.len() != 2 {
            return Err(Failure::new(format!(
                "--subject: C={value} is not a two-letter country code"
            )));
        }
        name.push(kind, value);
    }
    if name.iter().next().is_none() {
        return Err(Failure::new(
            "--subject is empty; write e.g. \"C=US,ST=WA,O=Example,CN=signer\"",
        ));
    }
    Ok(name)
}

/// A random positive 16-byte serial number.
fn random_serial() -> Result<SerialNumber, Failure> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom")
            .map_err(|e| Failure::new(format!("cannot open /dev/urandom: {e}")))?,
        &mut bytes,
    )
    .map_err(|e| Failure::new(format!("cannot read /dev/urandom: {e}")))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// How long a new certificate is valid, from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// `--days N`.
    Days(u32),
    /// `--validity DURATION`, in seconds.
    Seconds(u64),
}

impl Validity {
    fn duration(self) -> Result<time::Duration, Failure> {
        match self {
            Validity::Days(0) => Err(Failure::new("--days must be at least 1")),
            Validity::Days(days) => Ok(time::Duration::days(i64::from(days))),
            // Beyond 100 years rcgen and most verifiers stop making sense of the dates.
            Validity::Seconds(seconds) if seconds > 100 * 366 * 86_400 => Err(Failure::new(
                "--validity is longer than 100 years; give a shorter duration",
            )),
            Validity::Seconds(seconds) => Ok(time::Duration::seconds(seconds as i64)),
        }
    }

    fn describe(self) -> String {
        match self {
            Validity::Days(days) => format!("{days} days"),
            Validity::Seconds(seconds) => format!("{seconds} seconds"),
        }
    }
}

/// Parameters of a Notary signing (leaf) certificate, or of a CA certificate.
pub fn certificate_params(
    subject: DistinguishedName,
    validity: Validity,
    ca: bool,
) -> Result<CertificateParams, Failure> {
    let lifetime = validity.duration()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    let now = time::OffsetDateTime::now_utc();
    // A minute back, so a verifier whose clock is a little behind accepts it at once.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + lifetime;
    params.serial_number = Some(random_serial()?);
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    } else {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.use_authority_key_identifier_extension = true;
    }
    Ok(params)
}

/// rcgen's error, with the agent's message behind a remote-key failure.
fn rcgen_failure(key: &AgentKey, what: &str, error: rcgen::Error) -> Failure {
    match key.take_error() {
        Some(agent) => Failure::from(agent),
        None => Failure::new(format!("key {:?}: cannot {what}: {error}", key.key_id())),
    }
}

async fn issue(agent: &Agent, args: IssueArgs) -> Result<i32, Failure> {
    let subject = parse_subject(&args.subject)?;
    let validity = match args.validity {
        Some(seconds) => Validity::Seconds(seconds),
        None => Validity::Days(args.days),
    };
    let params = certificate_params(subject, validity, args.self_signed_ca)?;
    let client = connect(agent).await?;
    let key = AgentKey::new(&client, &args.key)
        .await?
        .with_purpose("keyward cert issue");
    let chain = match &args.ca {
        None => {
            let cert = params
                .self_signed(&key)
                .map_err(|e| rcgen_failure(&key, "sign the certificate", e))?;
            vec![cert.der().to_vec()]
        }
        Some(ca_id) => {
            let ca_chain = ca_chain(&client, ca_id).await?;
            let ca_key = AgentKey::new(&client, ca_id)
                .await?
                .with_purpose(format!("keyward cert issue for key {}", args.key));
            let issuer = Issuer::from_ca_cert_der(&ca_chain[0].as_slice().into(), &ca_key)
                .map_err(|e| {
                    Failure::new(format!(
                        "key {ca_id:?}: its CA certificate cannot be used ({e})"
                    ))
                })?;
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(|e| rcgen_failure(&ca_key, "sign the certificate", e))?;
            std::iter::once(cert.der().to_vec())
                .chain(ca_chain)
                .collect()
        }
    };
    let pem = chain_to_pem(&chain);
    if !args.no_attach {
        client.attach_certificate_chain(&args.key, &pem).await?;
    }
    let what = if args.self_signed_ca {
        "self-signed CA certificate"
    } else if args.ca.is_some() {
        "certificate"
    } else {
        "self-signed certificate"
    };
    let signer = args
        .ca
        .as_deref()
        .map(|ca| format!(" signed by key {ca:?}"))
        .unwrap_or_default();
    let attached = if args.no_attach {
        "not attached (--no-attach)".to_string()
    } else {
        format!("attached to key {:?}", args.key)
    };
    if args.json {
        if let Some(path) = &args.output {
            write_output(Some(path), pem.as_bytes())?;
        }
        crate::json::print(&ChainJson::new(&args.key, !args.no_attach, &chain))?;
        return Ok(EXIT_OK);
    }
    match &args.output {
        Some(path) => {
            write_output(Some(path), pem.as_bytes())?;
            let summary = format!(
                "issued a {what} for key {:?}{signer} (valid {}), {attached}; chain of {} written to {}\n",
                args.key,
                validity.describe(),
                chain.len(),
                path.display()
            );
            write_stdout(summary.as_bytes())?;
        }
        None => write_stdout(pem.as_bytes())?,
    }
    Ok(EXIT_OK)
}

/// The CA key's attached chain, checked to start with a CA certificate.
async fn ca_chain(client: &Client, ca_id: &str) -> Result<Vec<Vec<u8>>, Failure> {
    let public = client.public_key(ca_id).await?;
    let chain = public.certificate_chain;
    let hint = format!(
        "make one with `keyward cert issue --key {ca_id} --self-signed-ca --subject ...` (or attach the CA's chain with `keyward cert attach`)"
    );
    let Some(first) = chain.first() else {
        return Err(Failure::new(format!(
            "key {ca_id:?} has no CA certificate attached; {hint}"
        )));
    };
    let is_ca = X509Certificate::from_der(first)
        .ok()
        .and_then(|(_, cert)| {
            cert.basic_constraints()
                .ok()
                .flatten()
                .map(|bc| bc.value.ca)
        })
        .unwrap_or(false);
    if !is_ca {
        return Err(Failure::new(format!(
            "key {ca_id:?} has a certificate that is not a CA certificate (no CA:TRUE); {hint}"
        )));
    }
    Ok(chain)
}

async fn csr(agent: &Agent, args: CsrArgs) -> Result<i32, Failure> {
    let subject = parse_subject(&args.subject)?;
    let mut params = certificate_params(subject, Validity::Days(1), false)?;
    params.use_authority_key_identifier_extension = false;
    params.serial_number = None;
    let client = connect(agent).await?;
    let key = AgentKey::new(&client, &args.key)
        .await?
        .with_purpose("keyward cert csr");
    let request = params
        .serialize_request(&key)
        .map_err(|e| rcgen_failure(&key, "sign the request", e))?;
    let pem = request
        .pem()
        .map_err(|e| Failure::new(format!("cannot encode the request as PEM: {e}")))?;
    if args.json {
        #[derive(serde::Serialize)]
        struct CsrJson<'a> {
            key_id: &'a str,
            csr_pem: &'a str,
        }
        let json = CsrJson {
            key_id: &args.key,
            csr_pem: &pem,
        };
        let mut text = serde_json::to_string_pretty(&json)
            .map_err(|e| Failure::new(format!("cannot encode the output as JSON: {e}")))?;
        text.push('\n');
        write_output(args.output.as_deref(), text.as_bytes())?;
        return Ok(EXIT_OK);
    }
    write_output(args.output.as_deref(), pem.as_bytes())?;
    Ok(EXIT_OK)
}

async fn attach(agent: &Agent, args: AttachArgs) -> Result<i32, Failure> {
    let pem = read_input(&args.chain, "certificate chain")?;
    let pem = String::from_utf8(pem).map_err(|_| {
        Failure::new(format!(
            "{} is not PEM text; give PEM certificates, leaf first",
            args.chain.display()
        ))
    })?;
    let client = connect(agent).await?;
    let (_, chain) = client.attach_certificate_chain(&args.key, &pem).await?;
    if args.json {
        crate::json::print(&ChainJson::new(&args.key, true, &chain))?;
        return Ok(EXIT_OK);
    }
    let text = format!(
        "attached a chain of {} certificate(s) to key {:?}\n",
        chain.len(),
        args.key
    );
    write_stdout(text.as_bytes())?;
    Ok(EXIT_OK)
}

async fn show(agent: &Agent, args: ShowArgs) -> Result<i32, Failure> {
    let client = connect(agent).await?;
    let public = client.public_key(&args.key).await?;
    if public.certificate_chain.is_empty() {
        return Err(Failure::new(format!(
            "key {:?} has no certificate chain; issue one with `keyward cert issue --key {} --subject ...` or attach one with `keyward cert attach`",
            args.key, args.key
        )));
    }
    if args.pem {
        write_stdout(chain_to_pem(&public.certificate_chain).as_bytes())?;
        return Ok(EXIT_OK);
    }
    if args.json {
        crate::json::print(&ChainJson::new(&args.key, true, &public.certificate_chain))?;
        return Ok(EXIT_OK);
    }
    let mut text = String::new();
    for (i, der) in public.certificate_chain.iter().enumerate() {
        text.push_str(&describe(i, der));
    }
    write_stdout(text.as_bytes())?;
    Ok(EXIT_OK)
}

/// The `--json` shape of `cert issue`, `cert attach` and `cert show`: the key, whether the
/// chain is attached, and each certificate (leaf first).
#[derive(Debug, serde::Serialize)]
struct ChainJson<'a> {
    key_id: &'a str,
    attached: bool,
    certificates: Vec<CertJson>,
}

/// One certificate in `--json` output.
#[derive(Debug, serde::Serialize)]
struct CertJson {
    subject: String,
    issuer: String,
    /// RFC 3339.
    not_before: String,
    not_after: String,
    ca: bool,
    sha256: String,
    pem: String,
}

impl<'a> ChainJson<'a> {
    fn new(key_id: &'a str, attached: bool, chain: &[Vec<u8>]) -> Self {
        let certificates = chain
            .iter()
            .map(|der| {
                let parsed = X509Certificate::from_der(der).ok().map(|(_, c)| c);
                let text = |f: &dyn Fn(&X509Certificate<'_>) -> String| {
                    parsed.as_ref().map(f).unwrap_or_default()
                };
                CertJson {
                    subject: text(&|c| c.subject().to_string()),
                    issuer: text(&|c| c.issuer().to_string()),
                    not_before: text(&|c| {
                        super::envelope::rfc3339(c.validity().not_before.timestamp())
                    }),
                    not_after: text(&|c| {
                        super::envelope::rfc3339(c.validity().not_after.timestamp())
                    }),
                    ca: parsed.as_ref().is_some_and(
                        |c| matches!(c.basic_constraints().ok().flatten(), Some(bc) if bc.value.ca),
                    ),
                    sha256: hex::encode(Sha256::digest(der)),
                    pem: chain_to_pem(std::slice::from_ref(der)),
                }
            })
            .collect();
        ChainJson {
            key_id,
            attached,
            certificates,
        }
    }
}

/// A few lines about one certificate.
fn describe(index: usize, der: &[u8]) -> String {
    let fingerprint = hex::encode(Sha256::digest(der));
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return format!(
            "certificate {}: (cannot be parsed)\n  sha256: {fingerprint}\n",
            index + 1
        );
    };
    let role = match cert.basic_constraints().ok().flatten() {
        Some(bc) if bc.value.ca => "CA",
        _ => "leaf",
    };
    let validity = cert.validity();
    format!(
        "certificate {} ({role})\n  subject:    {}\n  issuer:     {}\n  not before: {}\n  not after:  {}\n  sha256:     {fingerprint}\n",
        index + 1,
        cert.subject(),
        cert.issuer(),
        validity.not_before,
        validity.not_after,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_and_errors_say_why() {
        let name = parse_subject("C=US, ST=WA,O=Example\\, Inc.,CN=signer").unwrap();
        let values: Vec<String> = name
            .iter()
            .map(|(kind, value)| format!("{kind:?}={value:?}"))
            .collect();
        assert_eq!(values.len(), 4, "{values:?}");
        assert!(values[2].contains("Example, Inc."), "{values:?}");
        for (bad, needle) in [
            ("", "empty"),
            ("CN", "ATTRIBUTE=VALUE"),
            ("X=1", "unknown attribute"),
            ("C=USA", "two-letter"),
            ("CN=", "no value"),
        ] {
            let message = format!("{:?}", parse_subject(bad).unwrap_err());
            assert!(message.contains(needle), "{bad:?}: {message}");
        }
    }

    #[test]
    fn leaf_and_ca_profiles() {
        let leaf =
            certificate_params(parse_subject("CN=a").unwrap(), Validity::Days(7), false).unwrap();
        assert!(matches!(leaf.is_ca, IsCa::ExplicitNoCa));
        assert_eq!(leaf.key_usages, vec![KeyUsagePurpose::DigitalSignature]);
        assert_eq!(
            leaf.extended_key_usages,
            vec![ExtendedKeyUsagePurpose::CodeSigning]
        );
        assert_eq!(
            (leaf.not_after - leaf.not_before).whole_minutes(),
            7 * 24 * 60 + 1
        );
        let ca =
            certificate_params(parse_subject("CN=a").unwrap(), Validity::Days(7), true).unwrap();
        assert!(matches!(ca.is_ca, IsCa::Ca(_)));
        assert!(ca.key_usages.contains(&KeyUsagePurpose::KeyCertSign));
        let name = || parse_subject("CN=a").unwrap();
        assert!(certificate_params(name(), Validity::Days(0), false).is_err());
        let short = certificate_params(name(), Validity::Seconds(90), false).unwrap();
        assert_eq!((short.not_after - short.not_before).whole_seconds(), 150);
        assert!(certificate_params(name(), Validity::Seconds(u64::MAX), false).is_err());
    }
}
