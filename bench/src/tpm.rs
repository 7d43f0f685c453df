//! `keyward-bench tpm`: signatures by a TPM 2.0 key through keyward's tpm backend (1 and N
//! clients) against tss-esapi called directly on the same TPM with the key loaded once (the
//! floor: one TPM2_Sign per signature, nothing else).
//!
//! Without `--tcti` a private software TPM (swtpm, fresh state) is started on 127.0.0.1. swtpm
//! serves one connection at a time, so the direct series runs first and closes its connection
//! before keywardd starts.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use keyward_sdk::{KeySpec, SignOptions};
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket, KeyDerivationFunctionScheme, Public,
    PublicBuilder, PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder,
    RsaExponent, RsaScheme, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::{Context, TctiNameConf};

use crate::pkcs11::agent_series;
use crate::report::{Path as RowPath, Report, Row};
use crate::spawn::{Extra, PrivateDaemon};
use crate::stats::Summary;

/// `keyward-bench tpm`
#[derive(Debug, Args)]
pub struct TpmArgs {
    /// The TPM as a TCTI string (e.g. device:/dev/tpmrm0); default: a private swtpm
    #[arg(long, value_name = "TCTI")]
    pub tcti: Option<String>,
    /// Key types: ec-p256, ec-p384, rsa-2048, rsa-3072
    #[arg(long, value_delimiter = ',', default_value = "ec-p256,rsa-2048", value_parser = crate::parse_key_spec)]
    pub keys: Vec<KeySpec>,
    /// Signatures per series
    #[arg(long, default_value_t = 500)]
    pub count: usize,
    /// Concurrent clients of the agent series
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub clients: Vec<usize>,
    /// Print JSON instead of Markdown
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON document to this file
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<std::path::PathBuf>,
}

/// A private swtpm (fresh state in a temporary directory); killed when dropped.
struct Swtpm {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Swtpm {
    fn start() -> Result<Swtpm> {
        let dir = tempfile::Builder::new()
            .prefix("keyward-bench-tpm-")
            .tempdir()?;
        let setup = Command::new("swtpm_setup")
            .args(["--tpm2", "--overwrite", "--tpmstate"])
            .arg(dir.path())
            .output()
            .context("cannot run swtpm_setup (install swtpm swtpm-tools)")?;
        if !setup.status.success() {
            bail!(
                "swtpm_setup failed: {}",
                String::from_utf8_lossy(&setup.stderr)
            );
        }
        let port = loop {
            let first = TcpListener::bind("127.0.0.1:0")?;
            let port = first.local_addr()?.port();
            if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                break port;
            }
        };
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", dir.path().display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start swtpm")?;
        let mut swtpm = Swtpm {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if swtpm.child.try_wait()?.is_some() || Instant::now() > deadline {
                bail!("swtpm did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(swtpm)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the TPM matrix and prints the report.
pub async fn run(args: TpmArgs) -> Result<()> {
    let swtpm = match &args.tcti {
        Some(_) => None,
        None => Some(Swtpm::start()?),
    };
    let tcti = match (&args.tcti, &swtpm) {
        (Some(tcti), _) => tcti.clone(),
        (None, Some(swtpm)) => format!("swtpm:host=127.0.0.1,port={}", swtpm.port),
        (None, None) => unreachable!("a swtpm was started"),
    };
    let mut rows = Vec::new();
    let mut floors = Vec::new();
    for &spec in &args.keys {
        eprintln!(
            "{}: {} direct tss-esapi signatures...",
            spec.name(),
            args.count
        );
        let tcti = tcti.clone();
        let count = args.count;
        let summary = tokio::task::spawn_blocking(move || direct(&tcti, spec, count)).await??;
        floors.push((spec, summary));
    }

    let keys_dir = tempfile::Builder::new()
        .prefix("keyward-bench-tpm-keys-")
        .tempdir()?;
    let backend = format!(
        "[[backend]]\nname = \"tpm\"\ntype = \"tpm\"\npath = {:?}\ntcti = {:?}\n",
        keys_dir.path().display().to_string(),
        tcti,
    );
    let (mut daemon, client) = PrivateDaemon::start_with(Extra::Backends(&backend), &[]).await?;
    for (spec, floor) in floors {
        let label = format!("bench-{}", spec.name());
        let key = client.generate_key("tpm", &label, spec).await?;
        let algorithm = key.info.algorithms().next().context("no algorithm")?;
        let digest = Arc::new(keyward_sdk::digest(algorithm, b"keyward-bench tpm")?);
        let options = Arc::new(SignOptions {
            algorithm: Some(algorithm),
            ..SignOptions::default()
        });
        let check = client.sign_digest(&label, &digest, &options).await?;
        keyward_sdk::verify_digest(&key.der, algorithm, &digest, &check.bytes, check.format)
            .context("the agent's signature does not verify")?;
        rows.push(Row {
            spec,
            key_id: label.clone(),
            algorithm,
            path: RowPath::TpmDirect,
            label: RowPath::TpmDirect.name().to_string(),
            clients: 1,
            summary: floor,
            overhead_p50_us: None,
            resources: None,
        });
        for &clients in &args.clients {
            eprintln!(
                "{}: {} signatures through keyward, {clients} client(s)...",
                spec.name(),
                args.count
            );
            let (summary, resources) = agent_series(
                &client,
                daemon.pid(),
                &label,
                &digest,
                &options,
                args.count,
                clients,
            )
            .await?;
            rows.push(Row {
                spec,
                key_id: label.clone(),
                algorithm,
                path: RowPath::Agent,
                label: "keyward tpm (plugin process)".to_string(),
                clients,
                summary,
                overhead_p50_us: Some(summary.p50_us - floor.p50_us),
                resources,
            });
        }
    }
    daemon.stop();
    let report = Report {
        benchmark: "tpm",
        socket: daemon.socket().to_path_buf(),
        spawned: true,
        count: args.count,
        duration_s: None,
        warmup: 100,
        note: format!(
            "TPM: {tcti}. The floor loads the key once and calls TPM2_Sign (tss-esapi, password \
             session) per signature; keyward's tpm backend does the same in its plugin process, \
             whose one TPM thread serialises the signatures of all clients."
        ),
        rows,
    };
    drop(swtpm);
    crate::report::print(&report, args.json, args.json_out.as_ref())
}

/// `count` TPM2_Sign calls with a fresh key of `spec` under the owner SRK, loaded once.
fn direct(tcti: &str, spec: KeySpec, count: usize) -> Result<Summary> {
    let mut context = Context::new(TctiNameConf::from_str(tcti)?)?;
    context.set_sessions((Some(AuthSession::Password), None, None));
    let srk = context
        .create_primary(Hierarchy::Owner, srk_template()?, None, None, None, None)?
        .key_handle;
    let created = context.create(srk, key_template(spec)?, None, None, None, None)?;
    let key = context.load(srk, created.out_private, created.out_public)?;
    let (len, scheme) = match spec {
        KeySpec::EcP256 => (
            32,
            SignatureScheme::EcDsa {
                hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
            },
        ),
        KeySpec::EcP384 => (
            48,
            SignatureScheme::EcDsa {
                hash_scheme: HashScheme::new(HashingAlgorithm::Sha384),
            },
        ),
        KeySpec::Rsa2048 => (
            32,
            SignatureScheme::RsaPss {
                hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
            },
        ),
        _ => (
            48,
            SignatureScheme::RsaPss {
                hash_scheme: HashScheme::new(HashingAlgorithm::Sha384),
            },
        ),
    };
    let mut sign = || -> Result<Duration> {
        let validation = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })?;
        let digest = Digest::try_from(vec![7u8; len])?;
        let t0 = Instant::now();
        context.sign(key, digest, scheme, validation)?;
        Ok(t0.elapsed())
    };
    for _ in 0..20 {
        sign()?;
    }
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        latencies.push(sign()?);
    }
    let summary = Summary::new(latencies, start.elapsed());
    context.flush_context(key.into())?;
    context.flush_context(srk.into())?;
    Ok(summary)
}

fn srk_template() -> Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    Ok(PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()?)
}

fn key_template(spec: KeySpec) -> Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_no_da(true)
        .build()?;
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes);
    let public = match spec {
        KeySpec::EcP256 | KeySpec::EcP384 => builder
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new()
                    .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(
                        if spec == KeySpec::EcP256 {
                            HashingAlgorithm::Sha256
                        } else {
                            HashingAlgorithm::Sha384
                        },
                    )))
                    .with_curve(if spec == KeySpec::EcP256 {
                        EccCurve::NistP256
                    } else {
                        EccCurve::NistP384
                    })
                    .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                    .with_is_signing_key(true)
                    .build()?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build()?,
        KeySpec::Rsa2048 | KeySpec::Rsa3072 => builder
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new_unrestricted_signing_key(
                    RsaScheme::Null,
                    if spec == KeySpec::Rsa2048 {
                        RsaKeyBits::Rsa2048
                    } else {
                        RsaKeyBits::Rsa3072
                    },
                    RsaExponent::default(),
                )
                .build()?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default())
            .build()?,
        other => bail!(
            "the tpm benchmark measures ec-p256, ec-p384, rsa-2048 and rsa-3072, not {other:?}"
        ),
    };
    Ok(public)
}
