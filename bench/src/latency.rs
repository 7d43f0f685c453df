//! `keyward-bench latency`: sign latency through the agent, and the in-process floor.

use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use keyward_sdk::{Client, KeySpec, SignOptions, Signature, SignatureAlgorithm};

use crate::LatencyArgs;
use crate::drive::{Budget, Op, drive};
use crate::floor;
use crate::report::{self, Path, Report, Row};
use crate::resources::Watch;
use crate::spawn::PrivateDaemon;
use crate::stats::Summary;

/// What is signed: a digest (ECDSA, RSA) or a message (Ed25519).
#[derive(Clone, Debug)]
pub enum Input {
    /// A digest of the algorithm's hash size.
    Digest(Vec<u8>),
    /// The message itself.
    Message(Vec<u8>),
}

impl Input {
    /// A 32/48/64-byte digest for ECDSA and RSA, a 64-byte message for Ed25519.
    pub fn for_algorithm(algorithm: SignatureAlgorithm) -> Result<Input> {
        Ok(if algorithm == SignatureAlgorithm::Ed25519 {
            Input::Message((0u8..64).collect())
        } else {
            Input::Digest(keyward_sdk::digest(algorithm, b"keyward-bench")?)
        })
    }
}

/// Runs the latency benchmark and prints the report.
pub async fn run(args: LatencyArgs) -> Result<()> {
    if args.count == 0 || args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--count and --clients must be at least 1");
    }
    if args.keys.is_empty() {
        bail!("--keys names no key type");
    }
    let (mut daemon, client, backend) = if args.spawn {
        eprintln!("starting a private keywardd...");
        // With --keyward-ssh its ssh-agent socket offers the benchmark keys (each offered
        // once it is generated).
        let ssh_keys: Vec<String> = if args.keyward_ssh {
            args.keys.iter().map(|spec| spawned_key_id(*spec)).collect()
        } else {
            Vec::new()
        };
        let (daemon, client) =
            PrivateDaemon::start_local(&args.isolation, &ssh_keys, args.audit).await?;
        (Some(daemon), client, "local".to_string())
    } else {
        let socket = args
            .socket
            .clone()
            .or_else(|| {
                std::env::var_os(keyward_sdk::SOCKET_ENV)
                    .filter(|v| !v.is_empty())
                    .map(Into::into)
            })
            .unwrap_or_else(keyward_sdk::default_socket_path);
        (None, Client::connect(&socket).await?, args.backend.clone())
    };
    let socket = daemon.as_ref().map_or_else(
        || client.socket().to_path_buf(),
        |d| d.socket().to_path_buf(),
    );
    let pid = daemon.as_ref().and_then(PrivateDaemon::pid);

    let mut rows = Vec::new();
    for &spec in &args.keys {
        let key_id = if args.spawn {
            spawned_key_id(spec)
        } else {
            format!("bench-{}-{}", spec.name(), std::process::id())
        };
        let keyward_ssh = daemon.as_ref().and_then(PrivateDaemon::ssh_socket);
        rows.extend(bench_key(&client, &args, &backend, pid, &key_id, spec, keyward_ssh).await?);
    }
    if let Some(daemon) = daemon.as_mut() {
        daemon.stop();
    }

    let report = Report {
        benchmark: "latency",
        socket,
        spawned: args.spawn,
        count: args.count,
        duration_s: args.duration,
        warmup: args.warmup,
        note: format!(
            "Floor: OpenSSL in-process, one thread. Server CPU and RSS: keywardd{} (or the \
             baseline agent) from /proc during the series.",
            if args.isolation == "process" {
                " and its plugin process"
            } else {
                ""
            }
        ),
        rows,
    };
    report::print(&report, args.json, args.json_out.as_ref())
}

/// The benchmark key of `spec` in a spawned daemon.
fn spawned_key_id(spec: KeySpec) -> String {
    format!("bench-{}", spec.name())
}

/// Measures one key type: through the agent with each client count, in-process, through
/// keywardd's ssh-agent socket when it has one, and through the baseline agents asked for.
async fn bench_key(
    client: &Client,
    args: &LatencyArgs,
    backend: &str,
    pid: Option<u32>,
    key_id: &str,
    spec: KeySpec,
    keyward_ssh: Option<&std::path::Path>,
) -> Result<Vec<Row>> {
    let key = client
        .generate_key(backend, key_id, spec)
        .await
        .with_context(|| format!("cannot generate the {} benchmark key", spec.name()))?;
    let algorithm = match key.info.algorithms().next() {
        Some(algorithm) => algorithm,
        None => client.default_algorithm(key_id).await?,
    };
    let input = Arc::new(Input::for_algorithm(algorithm)?);
    let options = Arc::new(SignOptions {
        algorithm: Some(algorithm),
        ..SignOptions::default()
    });
    let budget = Budget::new(args.count, args.duration);
    for _ in 0..args.warmup {
        sign(client, key_id, &input, &options).await?;
    }
    check_signature(client, key_id, &key.der, algorithm, &input, &options).await?;

    eprintln!("{}: {} in-process...", spec.name(), budget.describe());
    let (count, warmup, floor_input) = (args.count, args.warmup, Arc::clone(&input));
    let floor = tokio::task::spawn_blocking(move || {
        floor::measure(spec, algorithm, &floor_input, count, warmup)
    })
    .await??;

    let label = match (args.isolation.as_str(), args.audit) {
        ("process", false) => format!("keyward {backend} (plugin process)"),
        ("process", true) => format!("keyward {backend} (plugin process, audit log)"),
        (_, false) => format!("keyward {backend}"),
        (_, true) => format!("keyward {backend} (audit log)"),
    };
    let row = |path, label: &str, clients, summary: Summary, overhead, resources| Row {
        spec,
        key_id: key_id.to_string(),
        algorithm,
        path,
        label: label.to_string(),
        clients,
        summary,
        overhead_p50_us: overhead,
        resources,
    };
    let mut rows = Vec::new();
    for &clients in &args.clients {
        eprintln!(
            "{}: {} ({}) through the agent, {clients} client(s)...",
            spec.name(),
            budget.describe(),
            algorithm.name(),
        );
        let watch = pid.and_then(Watch::start);
        let agent = measure_agent(
            client,
            key_id,
            &input,
            &options,
            budget,
            clients,
            args.connection_per_client,
        )
        .await?;
        let usage = watch.and_then(|w| w.finish(agent.count));
        rows.push(row(
            Path::Agent,
            &label,
            clients,
            agent,
            Some(agent.p50_us - floor.p50_us),
            usage,
        ));
    }
    rows.push(row(
        Path::InProcess,
        "in-process OpenSSL",
        1,
        floor,
        None,
        None,
    ));
    if args.ssh_agent {
        let ssh = crate::sshagent::SshAgent::start(spec)?;
        let message: Vec<u8> = (0u8..64).collect();
        for &clients in &args.clients {
            eprintln!(
                "{}: {} through ssh-agent, {clients} client(s)...",
                spec.name(),
                budget.describe()
            );
            let watch = Watch::start(ssh.pid());
            let summary = ssh
                .key()
                .measure(&message, budget, clients, args.warmup)
                .await?;
            let usage = watch.and_then(|w| w.finish(summary.count));
            rows.push(row(
                Path::SshAgent,
                if spec.name().starts_with("rsa") {
                    "OpenSSH ssh-agent (rsa-sha2-256, PKCS#1 v1.5)"
                } else {
                    "OpenSSH ssh-agent"
                },
                clients,
                summary,
                Some(summary.p50_us - floor.p50_us),
                usage,
            ));
        }
    }
    if let Some(socket) = keyward_ssh {
        // keywardd's own ssh-agent socket, the same requests as to OpenSSH's ssh-agent.
        let key = crate::sshagent::AgentKey::listed(socket, key_id, spec).await?;
        let message: Vec<u8> = (0u8..64).collect();
        for &clients in &args.clients {
            eprintln!(
                "{}: {} through keywardd's ssh-agent socket, {clients} client(s)...",
                spec.name(),
                budget.describe()
            );
            let watch = pid.and_then(Watch::start);
            let summary = key.measure(&message, budget, clients, args.warmup).await?;
            let usage = watch.and_then(|w| w.finish(summary.count));
            rows.push(row(
                Path::KeywardSsh,
                if spec.name().starts_with("rsa") {
                    "keyward local, ssh-agent socket (rsa-sha2-256, PKCS#1 v1.5)"
                } else {
                    "keyward local, ssh-agent socket"
                },
                clients,
                summary,
                Some(summary.p50_us - floor.p50_us),
                usage,
            ));
        }
    }
    if args.gpg_agent {
        let gpg = crate::gpgagent::GpgAgent::start(spec)?;
        let digest = keyward_sdk::digest(
            match spec {
                KeySpec::EcP384 => SignatureAlgorithm::EcdsaSha384,
                KeySpec::EcP521 => SignatureAlgorithm::EcdsaSha512,
                _ => SignatureAlgorithm::EcdsaSha256,
            },
            b"keyward-bench",
        )?;
        let gpg_label = if spec.name().starts_with("rsa") {
            "GnuPG gpg-agent (PKCS#1 v1.5)"
        } else {
            "GnuPG gpg-agent"
        };
        for &clients in &args.clients {
            eprintln!(
                "{}: {} through gpg-agent, {clients} client(s)...",
                spec.name(),
                budget.describe()
            );
            let watch = Watch::start(gpg.pid());
            let summary = gpg.measure(&digest, budget, clients, args.warmup).await?;
            let usage = watch.and_then(|w| w.finish(summary.count));
            rows.push(row(
                Path::GpgAgent,
                gpg_label,
                clients,
                summary,
                Some(summary.p50_us - floor.p50_us),
                usage,
            ));
        }
    }
    Ok(rows)
}

/// One signature through the agent.
pub async fn sign(
    client: &Client,
    key_id: &str,
    input: &Input,
    options: &SignOptions,
) -> Result<Signature, keyward_sdk::Error> {
    match input {
        Input::Digest(digest) => client.sign_digest(key_id, digest, options).await,
        Input::Message(message) => client.sign_message(key_id, message, options).await,
    }
}

/// Checks one agent signature locally, so that the benchmark measures real signatures.
async fn check_signature(
    client: &Client,
    key_id: &str,
    spki_der: &[u8],
    algorithm: SignatureAlgorithm,
    input: &Input,
    options: &SignOptions,
) -> Result<()> {
    let signature = sign(client, key_id, input, options).await?;
    match input {
        Input::Digest(digest) => keyward_sdk::verify_digest(
            spki_der,
            algorithm,
            digest,
            &signature.bytes,
            signature.format,
        ),
        Input::Message(message) => keyward_sdk::verify_message(
            spki_der,
            algorithm,
            message,
            &signature.bytes,
            signature.format,
        ),
    }
    .with_context(|| format!("the agent's {} signature does not verify", algorithm.name()))
}

/// Signatures through the agent within `budget` by `clients` concurrent tasks sharing
/// `client` (or each with its own connection).
async fn measure_agent(
    client: &Client,
    key_id: &str,
    input: &Arc<Input>,
    options: &Arc<SignOptions>,
    budget: Budget,
    clients: usize,
    connection_per_client: bool,
) -> Result<Summary> {
    let key_id: Arc<str> = Arc::from(key_id);
    let mut ops = Vec::with_capacity(clients);
    for _ in 0..clients {
        ops.push(AgentSign {
            client: if connection_per_client {
                Client::connect(client.socket()).await?
            } else {
                client.clone()
            },
            key_id: Arc::clone(&key_id),
            input: Arc::clone(input),
            options: Arc::clone(options),
        });
    }
    drive(ops, budget).await
}

/// One client of the agent.
#[derive(Debug)]
pub struct AgentSign {
    /// Its connection (or a clone of a shared one).
    pub client: Client,
    /// The key signed with.
    pub key_id: Arc<str>,
    /// What is signed.
    pub input: Arc<Input>,
    /// The algorithm.
    pub options: Arc<SignOptions>,
}

impl Op for AgentSign {
    async fn call(&mut self) -> Result<()> {
        sign(&self.client, &self.key_id, &self.input, &self.options).await?;
        Ok(())
    }
}
