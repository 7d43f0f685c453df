//! The Unix socket listener and the gRPC server around the services.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyward_proto::v1::agent_server::AgentServer;
use keyward_proto::v1::key_admin_server::KeyAdminServer;
use keyward_proto::v1::signer_server::SignerServer;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tower::Layer;

use crate::audit::Auditor;
use crate::auth::Authenticator;
use crate::config::{Config, ConfigError};
use crate::grpc::admin::AdminService;
use crate::grpc::agent::AgentService;
use crate::grpc::layer::{CallerLayer, CallerService};
use crate::grpc::signer::SignerService;
use crate::keys::Registry;
use crate::policy::Policies;
use crate::reload::{self, Swappable};
use crate::signing::SigningCore;
use crate::status::{BackendView, StatusSource};
use crate::{backends, paths, plugin_dir, ssh_agent, transport};

/// Why the daemon could not run: a config error (exit status 2, like every config error) or
/// anything else (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config is wrong: a backend setting a plugin refused, a plugin that is not installed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The daemon failed (a socket it cannot bind, a state directory it cannot read).
    #[error("{0}")]
    Failed(String),
}

impl From<String> for DaemonError {
    fn from(message: String) -> Self {
        DaemonError::Failed(message)
    }
}

/// How long in-flight requests get to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Holds the socket: the lock that keeps a second daemon off it, and removal on drop.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    /// `None` for a socket inherited from the service manager, which owns it (and keeps
    /// other daemons off it by listening itself).
    lock: Option<File>,
}

impl SocketGuard {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        // The lock file stays: removing it would let two daemons lock different files. An
        // inherited socket stays too: the service manager listens on it for the next start.
        if self.lock.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Prepares the socket's directory, takes the lock, clears a stale socket and binds.
pub fn bind(config: &Config) -> Result<(UnixListener, SocketGuard), String> {
    bind_socket(
        &config.socket,
        config.socket_is_default,
        !config.allow_uids.is_empty(),
        "--socket",
    )
}

/// Binds a Unix socket of the daemon (the agent socket, the ssh-agent socket): prepares its
/// directory (created 0700, or 0711 when `open_to_others`, and owned by us when `is_default` or
/// missing), takes `<socket>.lock`, clears a stale socket, binds and sets the mode (0600, or
/// 0666 when `open_to_others`). `elsewhere` names the setting that chooses another path.
///
/// A socket the service manager passed for this path (socket activation, [`crate::activation`])
/// is used instead of binding: its directory and owner are checked and its mode set the same.
pub fn bind_socket(
    socket: &Path,
    is_default: bool,
    open_to_others: bool,
    elsewhere: &str,
) -> Result<(UnixListener, SocketGuard), String> {
    let shown = socket.display();
    let socket_mode = if open_to_others { 0o666 } else { 0o600 };
    if let Some(inherited) = crate::activation::claim(socket) {
        crate::activation::check_inherited(socket)?;
        transport::set_socket_mode(socket, socket_mode)?;
        inherited
            .set_nonblocking(true)
            .map_err(|e| format!("cannot use the inherited socket {shown}: {e}"))?;
        let listener = UnixListener::from_std(inherited)
            .map_err(|e| format!("cannot use the inherited socket {shown}: {e}"))?;
        tracing::info!(socket = %shown, "serving a socket passed by the service manager (socket activation)");
        return Ok((
            listener,
            SocketGuard {
                path: socket.to_path_buf(),
                lock: None,
            },
        ));
    }
    let parent = socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir_mode = if open_to_others { 0o711 } else { 0o700 };
    if is_default || !parent.exists() {
        paths::ensure_owned_dir(parent, dir_mode)?;
    } else if let Ok(meta) = parent.metadata() {
        // A directory the user chose: never chmod it, but say when it is risky.
        if meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
            tracing::warn!(dir = %parent.display(), "the socket's directory is writable by others; another user could replace the socket");
        }
    }

    let lock_path = socket.with_extension("sock.lock");
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            format!(
                "another keywardd is already running on {shown}; stop it first, or choose another path with {elsewhere}"
            )
        },
    )?;

    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Err(format!(
                    "another process is already listening on {shown}; stop it first, or choose another path with {elsewhere}"
                ));
            }
            tracing::info!(socket = %shown, "replacing a stale socket");
            std::fs::remove_file(socket)
                .map_err(|e| format!("cannot remove the stale socket {shown}: {e}"))?;
        }
        Ok(_) => {
            return Err(format!(
                "{shown} exists and is not a socket; remove it or choose another path with {elsewhere}"
            ));
        }
        Err(_) => {}
    }
    let listener =
        UnixListener::bind(socket).map_err(|e| format!("cannot listen on {shown}: {e}"))?;
    transport::set_socket_mode(socket, socket_mode)?;
    Ok((
        listener,
        SocketGuard {
            path: socket.to_path_buf(),
            lock: Some(lock),
        },
    ))
}

/// Runs the daemon until `shutdown` completes, then drains in-flight requests (up to 30 s),
/// removes the socket and returns. The config is never reloaded.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let (_reload_tx, reloads) = mpsc::channel(1);
    run_with_reload(config, shutdown, reloads).await
}

/// Like [`run`], and every config received on `reloads` (a new config, or the error that
/// made reading it fail) replaces the running one (see [`crate::reload`]).
pub async fn run_with_reload(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    reloads: mpsc::Receiver<Result<Config, String>>,
) -> Result<(), DaemonError> {
    crate::status::mark_started();
    // Before the first plugin starts, so that its restarts are counted.
    if let Some(metrics) = &config.metrics {
        crate::metrics::install(metrics)?;
    }
    // Plugin sockets live in a fresh private directory (0700), removed when the daemon exits.
    let plugin_sockets = tempfile::Builder::new()
        .prefix("keyward-plugins-")
        .tempdir()
        .map_err(|e| format!("cannot create a directory for plugin sockets: {e}"))?;
    let (stop_plugins, plugins_stop) = tokio::sync::watch::channel(false);
    let context = backends::PluginContext {
        socket_dir: plugin_sockets.path().to_path_buf(),
        stop: plugins_stop,
    };
    let plugin_dirs = plugin_dir::search_dirs(config.plugin_dir.as_deref());
    let running =
        backends::build_changed(&config.backends, &plugin_dirs, &context, &BTreeMap::new()).await?;
    let mut daemon = Daemon {
        config,
        context,
        running,
        retiring: Vec::new(),
    };
    let result = daemon
        .serve(shutdown, reloads)
        .await
        .map_err(DaemonError::Failed);
    // Stop the plugins after the last request has drained.
    let _ = stop_plugins.send(true);
    backends::stop_all(std::mem::take(&mut daemon.running).into_values()).await;
    for task in daemon.retiring {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    drop(plugin_sockets);
    tracing::info!("keywardd stopped");
    result
}

/// The running daemon: its config and backends, which change on reload.
struct Daemon {
    config: Config,
    context: backends::PluginContext,
    running: BTreeMap<String, backends::Running>,
    /// Tasks stopping retired plugins once their last requests are done.
    retiring: Vec<tokio::task::JoinHandle<()>>,
}

/// What serves one generation of the config.
struct Generation {
    registry: Arc<Registry>,
    signer: CallerService<SignerServer<SignerService>>,
    admin: CallerService<KeyAdminServer<AdminService>>,
    /// What the ssh-agent socket offers (when `[ssh_agent]` is configured).
    ssh: Option<ssh_agent::Offer>,
    agent: CallerService<AgentServer<AgentService>>,
}

impl Daemon {
    fn backend_map(&self) -> BTreeMap<String, Arc<dyn keyward_plugin_api::Backend>> {
        self.running
            .iter()
            .map(|(name, running)| (name.clone(), running.backend.clone()))
            .collect()
    }

    /// The backends of the running config, in config order, for status.
    fn backend_views(&self) -> Vec<BackendView> {
        self.config
            .backends
            .iter()
            .filter_map(|config| {
                let running = self.running.get(&config.name)?;
                Some(BackendView {
                    name: config.name.clone(),
                    backend_type: config.backend_type.clone(),
                    backend: running.backend.clone(),
                    plugin: running.plugin.as_ref().map(|p| p.handle.clone()),
                })
            })
            .collect()
    }

    /// Gives new plugin processes their startup deadline, so the first requests do not race
    /// them; a plugin that fails stays down and retries on its own.
    async fn wait_plugins<'a>(plugins: impl Iterator<Item = &'a backends::Running>) {
        let waits = plugins
            .filter_map(|running| running.plugin.as_ref())
            .map(|plugin| plugin.handle.wait_started(Duration::from_secs(15)));
        futures_join_all(waits).await;
    }

    fn generation(&self, registry: Arc<Registry>, audit: &Auditor) -> Generation {
        let config = &self.config;
        let auth = Arc::new(Authenticator::new(
            rustix::process::getuid().as_raw(),
            config.allow_uids.clone(),
            config.admin_uids.clone(),
        ));
        let policies = Arc::new(Policies::from_config(config));
        let limits = Arc::new(config.limits.clone());
        let core = SigningCore::new(registry.clone(), policies.clone(), audit.clone())
            .with_limits(limits.clone());
        let ssh = config.ssh_agent.as_ref().map(|ssh| ssh_agent::Offer {
            core: core.clone(),
            auth: auth.clone(),
            keys: ssh.keys.clone().into(),
        });
        // The caller layer authenticates every RPC of both services (grpc/layer.rs). The
        // decoders refuse a request larger than the largest the config allows before decoding
        // it; the handlers then check each field's bound (limits.rs).
        let signer = CallerLayer::signer(auth.clone(), audit.clone()).layer(
            SignerServer::new(SignerService::new(core))
                .max_decoding_message_size(limits.signer_decoding_limit()),
        );
        let admin = CallerLayer::admin(auth.clone(), audit.clone()).layer(
            KeyAdminServer::new(
                AdminService::new(registry.clone(), policies, audit.clone())
                    .with_limits(limits.clone()),
            )
            .max_decoding_message_size(limits.admin_decoding_limit()),
        );
        // Status is for every caller; the admin decision only adds details (grpc/agent.rs).
        let status = StatusSource {
            registry: registry.clone(),
            backends: self.backend_views(),
            config: config.clone(),
            audit: audit.clone(),
        };
        // A status request has no fields worth more than a few bytes.
        let agent = CallerLayer::admin(auth, audit.clone()).layer(
            AgentServer::new(AgentService::new(Arc::new(status))).max_decoding_message_size(4096),
        );
        Generation {
            registry,
            signer,
            admin,
            ssh,
            agent,
        }
    }

    async fn serve(
        &mut self,
        shutdown: impl Future<Output = ()> + Send,
        mut reloads: mpsc::Receiver<Result<Config, String>>,
    ) -> Result<(), String> {
        let registry = Arc::new(Registry::new(&self.config, self.backend_map())?);
        let (listener, guard) = bind(&self.config)?;
        let ssh_listener = match &self.config.ssh_agent {
            Some(ssh) => Some(ssh_agent::bind(ssh, !self.config.allow_uids.is_empty())?),
            None => None,
        };
        for path in crate::activation::unclaimed() {
            tracing::warn!(socket = %path.display(), "the service manager passed a socket the config does not name (socket, [ssh_agent] socket); it is not served");
        }
        Self::wait_plugins(self.running.values()).await;
        let audit = match &self.config.audit {
            Some(audit) => Auditor::open(audit)?,
            None => Auditor::default(),
        };
        let mut current = self.generation(registry, &audit);
        let signer = Swappable::new(current.signer.clone());
        let admin = Swappable::new(current.admin.clone());
        let agent = Swappable::new(current.agent.clone());

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<SignerServer<SignerService>>().await;
        health.set_serving::<KeyAdminServer<AdminService>>().await;
        health.set_serving::<AgentServer<AgentService>>().await;
        let reflection = transport::reflection()?;

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        // The mutual-TLS listener serves the same services; remote callers are told apart by
        // their connection (`auth.rs`), so there is nothing else to configure here.
        let remote = match &self.config.tls {
            None => None,
            Some(tls) => {
                let incoming = tokio::net::TcpListener::bind(tls.listen)
                    .await
                    .map_err(|e| format!("[tls] cannot listen on {}: {e}", tls.listen))?;
                let server = transport::server(&self.config.limits)
                    .tls_config(tls.server_config()?)
                    .map_err(|e| {
                        format!("[tls] the certificate, key or client_ca is unusable: {e}")
                    })?
                    .add_service(signer.clone())
                    .add_service(admin.clone())
                    .add_service(agent.clone())
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(incoming),
                        stopped(stop_rx.clone()),
                    );
                tracing::info!(listen = %tls.listen, "listening for mutual-TLS clients");
                Some(server)
            }
        };
        let admission = transport::Admission::new((&self.config.limits).into());
        let local = transport::server(&self.config.limits)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(signer.clone())
            .add_service(admin.clone())
            .add_service(agent.clone())
            .serve_with_incoming_shutdown(
                transport::unix_incoming(listener, admission),
                stopped(stop_rx.clone()),
            );
        // The ssh-agent socket: a second front-end over the same signing core (ssh_agent/).
        let ssh_current = current.ssh.clone().map(ssh_agent::Current::new);
        let ssh_server = match (ssh_listener, &ssh_current) {
            (Some((listener, ssh_guard)), Some(current)) => {
                tracing::info!(socket = %ssh_guard.path().display(), "serving the ssh-agent protocol");
                let serving = ssh_agent::serve(listener, current.clone(), stop_rx.clone());
                Some(async move {
                    serving.await;
                    drop(ssh_guard);
                })
            }
            _ => None,
        };
        let servers = async {
            let remote = async {
                let ssh = async {
                    if let Some(server) = ssh_server {
                        server.await;
                    }
                };
                let remote = async {
                    match remote {
                        Some(server) => server.await,
                        None => Ok(()),
                    }
                };
                let (remote, ()) = tokio::join!(remote, ssh);
                remote
            };
            // The first server that fails stops the daemon.
            tokio::try_join!(local, remote)
                .map(drop)
                .map_err(|e| format!("the server failed: {e}"))
        };

        tracing::info!(
            socket = %self.config.socket.display(),
            backends = self.config.backends.len(),
            pid = std::process::id(),
            "keywardd ready"
        );
        crate::activation::ready("serving");
        // Check configured keys in the background: a slow backend must not delay serving.
        let checking = current.registry.clone();
        tokio::spawn(async move { checking.check_named_keys().await });

        let mut stopping = stop_rx;
        let drain_deadline = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            tracing::info!("shutting down: finishing in-flight requests");
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        let mut servers = std::pin::pin!(servers);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut drain_deadline = std::pin::pin!(drain_deadline);
        let mut signalled = false;
        let result = loop {
            tokio::select! {
                result = &mut servers => break result,
                () = &mut shutdown, if !signalled => {
                    signalled = true;
                    crate::activation::stopping();
                }
                () = &mut drain_deadline => {
                    tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; exiting anyway");
                    break Ok(());
                }
                Some(reload) = reloads.recv(), if !signalled => {
                    // main.rs said RELOADING=1 on SIGHUP; READY=1 again whatever the outcome,
                    // since the running config serves either way.
                    let _ready = ReadyAgain;
                    match reload {
                        Err(message) => tracing::error!("config reload refused, the running config stays: {message}"),
                        Ok(config) => match self.reload(config, &current, &audit).await {
                            Ok(next) => {
                                signer.replace(next.signer.clone());
                                admin.replace(next.admin.clone());
                                if let (Some(current), Some(offer)) = (&ssh_current, &next.ssh) {
                                    current.replace(offer.clone());
                                }
                                agent.replace(next.agent.clone());
                                current.registry.retire();
                                current = next;
                                let checking = current.registry.clone();
                                tokio::spawn(async move { checking.check_named_keys().await });
                            }
                            Err(message) => tracing::error!("config reload refused, the running config stays: {message}"),
                        },
                    }
                }
            }
        };
        drop(guard);
        if let Some((seq, head)) = audit.head() {
            // An anchor for the chain outside the audit log itself.
            tracing::info!(seq, head = %head, "audit log head at shutdown");
        }
        result
    }

    /// Builds the generation for `new`; on error nothing running is changed. The caller
    /// swaps it in.
    async fn reload(
        &mut self,
        mut new: Config,
        current: &Generation,
        audit: &Auditor,
    ) -> Result<Generation, String> {
        let kept = reload::keep_restart_only(&self.config, &mut new);
        if !kept.is_empty() {
            tracing::warn!(
                settings = %kept.join(", "),
                "these settings changed in the config but take effect only when keywardd restarts; their running values stay"
            );
        }
        // No key creation or chain attachment may run while the state is read again.
        let _admin = current.registry.admin_lock().await;
        let plugin_dirs = plugin_dir::search_dirs(new.plugin_dir.as_deref());
        let fresh =
            backends::build_changed(&new.backends, &plugin_dirs, &self.context, &self.running)
                .await
                .map_err(|e| e.to_string())?;
        Self::wait_plugins(fresh.values()).await;
        let mut map: BTreeMap<String, Arc<dyn keyward_plugin_api::Backend>> = BTreeMap::new();
        for backend in &new.backends {
            let running = fresh
                .get(&backend.name)
                .or_else(|| self.running.get(&backend.name))
                .ok_or_else(|| {
                    format!("internal error: backend {:?} was not built", backend.name)
                })?;
            map.insert(backend.name.clone(), running.backend.clone());
        }
        let registry = match current.registry.successor(&new, map) {
            Ok(registry) => Arc::new(registry),
            Err(e) => {
                backends::stop_all(fresh.into_values()).await;
                return Err(e);
            }
        };
        // Committed from here on.
        let rebuilt: Vec<String> = fresh.keys().cloned().collect();
        let changes = reload::BackendChanges::between(&self.config, &new, &rebuilt);
        let mut retired = Vec::new();
        for name in self.running.keys().cloned().collect::<Vec<_>>() {
            if fresh.contains_key(&name) || !new.backends.iter().any(|b| b.name == name) {
                retired.extend(self.running.remove(&name));
            }
        }
        self.running.extend(fresh);
        let socket_mode = if new.allow_uids.is_empty() {
            0o600
        } else {
            0o666
        };
        let sockets = std::iter::once(&new.socket).chain(new.ssh_agent.as_ref().map(|s| &s.socket));
        for socket in sockets {
            if let Err(e) = transport::set_socket_mode(socket, socket_mode) {
                tracing::warn!(socket = %socket.display(), "cannot set the socket's mode after reload: {e}");
            }
        }
        let keys = new.keys.len();
        self.config = new;
        let next = self.generation(registry, audit);
        // Retired plugins stop once every request that started on the old generation is done.
        if retired.iter().any(|r| r.plugin.is_some()) {
            let old = Arc::downgrade(&current.registry);
            self.retiring.push(tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
                while old.strong_count() > 0 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                backends::stop_all(retired).await;
            }));
        }
        tracing::info!(
            added = ?changes.added,
            changed = ?changes.changed,
            removed = ?changes.removed,
            keys,
            "config reloaded"
        );
        Ok(next)
    }
}

/// Says `READY=1` when a reload is over, however it ended.
struct ReadyAgain;

impl Drop for ReadyAgain {
    fn drop(&mut self) {
        crate::activation::ready("serving");
    }
}

async fn futures_join_all(futures: impl Iterator<Item = impl Future<Output = ()>>) {
    let mut set = Vec::new();
    for future in futures {
        set.push(future);
    }
    for future in set {
        future.await;
    }
}
