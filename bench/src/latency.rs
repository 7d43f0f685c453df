//! `keyward-bench latency`: sign latency through the agent, and the in-process floor.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use keyward_sdk::{Client, KeySpec, SignOptions, Signature, SignatureAlgorithm};
use tokio::task::JoinSet;

use crate::LatencyArgs;
use crate::floor;
use crate::report::{self, Path, Report, Row};
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
    fn for_algorithm(algorithm: SignatureAlgorithm) -> Result<Input> {
        Ok(if algorithm == SignatureAlgorithm::Ed25519 {
            Input::Message((0u8..64).collect())
        } else {
            Input::Digest(keyward_sdk::digest(algorithm, b"keyward-bench")?)
        })
    }
}

/// Runs the latency benchmark and prints the report.
pub async fn run(args: LatencyArgs) -> Result<()> {
    if args.count == 0 || args.clients == 0 {
        bail!("--count and --clients must be at least 1");
    }
    if args.keys.is_empty() {
        bail!("--keys names no key type");
    }
    let (mut daemon, client, backend) = if args.spawn {
        eprintln!("starting a private keywardd...");
        let (daemon, client) = PrivateDaemon::start(&args.isolation).await?;
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

    let mut rows = Vec::new();
    for &spec in &args.keys {
        let key_id = if args.spawn {
            format!("bench-{}", spec.name())
        } else {
            format!("bench-{}-{}", spec.name(), std::process::id())
        };
        rows.extend(bench_key(&client, &args, &backend, &key_id, spec).await?);
    }
    if let Some(daemon) = daemon.as_mut() {
        daemon.stop();
    }

    let report = Report {
        socket,
        spawned: args.spawn,
        count: args.count,
        clients: args.clients,
        warmup: args.warmup,
        rows,
    };
    let text = if args.json {
        report::json(&report)
    } else {
        report::markdown(&report)
    };
    // Written by hand rather than with println!, which panics when stdout is a closed pipe.
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("cannot write the report")
        }
        _ => Ok(()),
    }
}

/// Measures one key type: through the agent, then in-process.
async fn bench_key(
    client: &Client,
    args: &LatencyArgs,
    backend: &str,
    key_id: &str,
    spec: KeySpec,
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

    eprintln!(
        "{}: {} signatures ({}) through the agent, {} client(s)...",
        spec.name(),
        args.count,
        algorithm.name(),
        args.clients
    );
    for _ in 0..args.warmup {
        sign(client, key_id, &input, &options).await?;
    }
    check_signature(client, key_id, &key.der, algorithm, &input, &options).await?;
    let agent = measure_agent(
        client,
        key_id,
        &input,
        &options,
        args.count,
        args.clients,
        args.connection_per_client,
    )
    .await?;

    eprintln!("{}: {} signatures in-process...", spec.name(), args.count);
    let (count, warmup, floor_input) = (args.count, args.warmup, Arc::clone(&input));
    let floor = tokio::task::spawn_blocking(move || {
        floor::measure(spec, algorithm, &floor_input, count, warmup)
    })
    .await??;

    let row = |path, clients, summary: Summary, overhead| Row {
        spec,
        key_id: key_id.to_string(),
        algorithm,
        path,
        clients,
        summary,
        overhead_p50_us: overhead,
    };
    let mut rows = vec![
        row(
            Path::Agent,
            args.clients,
            agent,
            Some(agent.p50_us - floor.p50_us),
        ),
        row(Path::InProcess, 1, floor, None),
    ];
    if args.ssh_agent {
        eprintln!(
            "{}: {} signatures through ssh-agent...",
            spec.name(),
            args.count
        );
        let ssh = crate::sshagent::SshAgent::start(spec)?;
        let message: Vec<u8> = (0u8..64).collect();
        let summary = ssh
            .measure(&message, args.count, args.clients, args.warmup)
            .await?;
        rows.push(row(
            Path::SshAgent,
            args.clients,
            summary,
            Some(summary.p50_us - floor.p50_us),
        ));
    }
    Ok(rows)
}

/// One signature through the agent.
async fn sign(
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

/// `count` signatures through the agent by `clients` concurrent tasks sharing `client`.
async fn measure_agent(
    client: &Client,
    key_id: &str,
    input: &Arc<Input>,
    options: &Arc<SignOptions>,
    count: usize,
    clients: usize,
    connection_per_client: bool,
) -> Result<Summary> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(if connection_per_client {
            Client::connect(client.socket()).await?
        } else {
            client.clone()
        });
    }
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (task, client) in connections.into_iter().enumerate() {
        let n = count / clients + usize::from(task < count % clients);
        let key_id = key_id.to_string();
        let (input, options) = (Arc::clone(input), Arc::clone(options));
        tasks.spawn(async move {
            let mut latencies: Vec<Duration> = Vec::with_capacity(n);
            for _ in 0..n {
                let t0 = Instant::now();
                sign(&client, &key_id, &input, &options).await?;
                latencies.push(t0.elapsed());
            }
            Ok::<_, keyward_sdk::Error>(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result??);
    }
    Ok(Summary::new(latencies, start.elapsed()))
}
