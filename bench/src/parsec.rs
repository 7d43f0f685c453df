//! `keyward-bench parsec`: signatures by a Parsec key through keyward's parsec backend (1 and N
//! clients) against parsec-client calling the same service directly (the floor: one
//! PsaSignHash request per signature, a new connection each, as Parsec's protocol has it).
//!
//! Needs a running Parsec service (`--socket`); docs/parsec.md shows a configuration for a
//! software TPM and SoftHSM2. Both paths run as this user, so they are the same Parsec
//! application: the benchmark's keys get names of their own and are destroyed at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use keyward_sdk::{KeySpec, SignOptions};
use parsec_client::BasicClient;
use parsec_client::core::interface::operations::psa_algorithm::{
    Algorithm, AsymmetricSignature, Hash, SignHash,
};
use parsec_client::core::interface::operations::psa_key_attributes::{
    Attributes, EccFamily, Lifetime, Policy, Type, UsageFlags,
};
use parsec_client::core::interface::requests::ProviderId;
use parsec_client::core::ipc_handler::unix_socket::Handler;

use crate::pkcs11::agent_series;
use crate::report::{Path as RowPath, Report, Row};
use crate::spawn::{Extra, PrivateDaemon};
use crate::stats::Summary;

/// `keyward-bench parsec`
#[derive(Debug, Args)]
pub struct ParsecArgs {
    /// The Parsec service's socket
    #[arg(long, value_name = "PATH", default_value = "/run/parsec/parsec.sock")]
    pub socket: PathBuf,
    /// The providers to measure, comma-separated (tpm, pkcs11, mbed-crypto)
    #[arg(long, value_delimiter = ',', default_value = "tpm,pkcs11")]
    pub providers: Vec<String>,
    /// Signatures per series (an ECDSA P-256 key, ecdsa-sha256)
    #[arg(long, default_value_t = 300)]
    pub count: usize,
    /// Concurrent clients of the agent series
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub clients: Vec<usize>,
    /// Print JSON instead of Markdown
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON document to this file
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

fn provider_id(name: &str) -> Result<ProviderId> {
    Ok(match name {
        "tpm" => ProviderId::Tpm,
        "pkcs11" => ProviderId::Pkcs11,
        "mbed-crypto" => ProviderId::MbedCrypto,
        other => bail!("unknown provider {other:?} (tpm, pkcs11, mbed-crypto)"),
    })
}

fn client(socket: &std::path::Path, provider: ProviderId) -> Result<BasicClient> {
    let mut client = BasicClient::default();
    client.set_ipc_handler(Box::new(
        Handler::new(socket.to_path_buf(), Some(Duration::from_secs(60)))
            .with_context(|| format!("no Parsec socket at {}", socket.display()))?,
    ));
    client.set_default_auth(None)?;
    client.set_implicit_provider(provider);
    Ok(client)
}

/// Runs the Parsec matrix and prints the report.
pub async fn run(args: ParsecArgs) -> Result<()> {
    let tables: String = args
        .providers
        .iter()
        .map(|p| {
            format!(
                "[[backend]]\nname = \"parsec-{p}\"\ntype = \"parsec\"\nsocket = {:?}\nprovider = {p:?}\n",
                args.socket.display().to_string(),
            )
        })
        .collect();
    let (mut daemon, agent) = PrivateDaemon::start_with(Extra::Backends(&tables), &[]).await?;
    let mut rows = Vec::new();
    let tag = std::process::id();
    for name in &args.providers {
        let provider = provider_id(name)?;
        let direct_key = format!("keyward-bench-direct-{tag}");
        let agent_key = format!("keyward-bench-agent-{name}-{tag}");

        eprintln!("{name}: {} direct parsec-client signatures...", args.count);
        let (socket, count, key) = (args.socket.clone(), args.count, direct_key.clone());
        let floor =
            tokio::task::spawn_blocking(move || direct(&socket, provider, &key, count)).await??;
        let algorithm = keyward_sdk::SignatureAlgorithm::EcdsaSha256;
        rows.push(Row {
            spec: KeySpec::EcP256,
            key_id: direct_key,
            algorithm,
            path: RowPath::ParsecDirect,
            label: format!("parsec-client, {name} provider"),
            clients: 1,
            summary: floor,
            overhead_p50_us: None,
            resources: None,
        });

        let backend = format!("parsec-{name}");
        let key = agent
            .generate_key(&backend, &agent_key, KeySpec::EcP256)
            .await?;
        let digest = Arc::new(keyward_sdk::digest(algorithm, b"keyward-bench parsec")?);
        let options = Arc::new(SignOptions {
            algorithm: Some(algorithm),
            ..SignOptions::default()
        });
        let check = agent.sign_digest(&agent_key, &digest, &options).await?;
        keyward_sdk::verify_digest(&key.der, algorithm, &digest, &check.bytes, check.format)
            .context("the agent's signature does not verify")?;
        for &clients in &args.clients {
            eprintln!(
                "{name}: {} signatures through keyward, {clients} client(s)...",
                args.count
            );
            let (summary, resources) = agent_series(
                &agent,
                daemon.pid(),
                &agent_key,
                &digest,
                &options,
                args.count,
                clients,
            )
            .await?;
            rows.push(Row {
                spec: KeySpec::EcP256,
                key_id: agent_key.clone(),
                algorithm,
                path: RowPath::Agent,
                label: format!("keyward parsec, {name} provider (plugin process)"),
                clients,
                summary,
                overhead_p50_us: Some(summary.p50_us - floor.p50_us),
                resources,
            });
        }
        let (socket, key) = (args.socket.clone(), agent_key);
        tokio::task::spawn_blocking(move || {
            client(&socket, provider)?
                .psa_destroy_key(&key)
                .map_err(anyhow::Error::from)
        })
        .await??;
    }
    daemon.stop();
    let report = Report {
        benchmark: "parsec",
        socket: daemon.socket().to_path_buf(),
        spawned: true,
        count: args.count,
        duration_s: None,
        warmup: 100,
        note: format!(
            "Parsec service at {}; ECDSA P-256 keys made by Parsec in each provider; the floor is \
             parsec-client's psa_sign_hash called in a loop on one thread.",
            args.socket.display()
        ),
        rows,
    };
    crate::report::print(&report, args.json, args.json_out.as_ref())
}

/// `count` psa_sign_hash calls with a new ECDSA P-256 key named `name`, destroyed afterwards.
fn direct(
    socket: &std::path::Path,
    provider: ProviderId,
    name: &str,
    count: usize,
) -> Result<Summary> {
    let client = client(socket, provider)?;
    let mut usage_flags = UsageFlags::default();
    usage_flags.set_sign_hash().set_verify_hash();
    let alg = AsymmetricSignature::Ecdsa {
        hash_alg: SignHash::Specific(Hash::Sha256),
    };
    client.psa_generate_key(
        name,
        Attributes {
            lifetime: Lifetime::Persistent,
            key_type: Type::EccKeyPair {
                curve_family: EccFamily::SecpR1,
            },
            bits: 256,
            policy: Policy {
                usage_flags,
                permitted_algorithms: Algorithm::AsymmetricSignature(alg),
            },
        },
    )?;
    let digest = [7u8; 32];
    let result = (|| -> Result<Summary> {
        for _ in 0..20 {
            client.psa_sign_hash(name, &digest, alg)?;
        }
        let start = Instant::now();
        let mut latencies = Vec::with_capacity(count);
        for _ in 0..count {
            let t0 = Instant::now();
            client.psa_sign_hash(name, &digest, alg)?;
            latencies.push(t0.elapsed());
        }
        Ok(Summary::new(latencies, start.elapsed()))
    })();
    client.psa_destroy_key(name)?;
    result
}
