//! The Unix socket listener and the gRPC server around the services.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keyward_proto::v1::key_admin_server::KeyAdminServer;
use keyward_proto::v1::signer_server::SignerServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::admin::AdminService;
use crate::audit::Auditor;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::policy::Policies;
use crate::registry::Registry;
use crate::signer::SignerService;
use crate::{backends, paths};

/// Longest message a client may send (an Ed25519 message is sent whole).
const MAX_REQUEST_BYTES: usize = 64 << 20;
/// How long in-flight requests get to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Holds the socket: the lock that keeps a second daemon off it, and removal on drop.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    _lock: File,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        // The lock file stays: removing it would let two daemons lock different files.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Prepares the socket's directory, takes the lock, clears a stale socket and binds.
pub fn bind(config: &Config) -> Result<(UnixListener, SocketGuard), String> {
    let socket = &config.socket;
    let shown = socket.display();
    let open_to_others = !config.allow_uids.is_empty();
    let parent = socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir_mode = if open_to_others { 0o711 } else { 0o700 };
    if config.socket_is_default || !parent.exists() {
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
                "another keywardd is already running on {shown}; stop it first, or start this one with --socket"
            )
        },
    )?;

    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Err(format!(
                    "another process is already listening on {shown}; stop it first, or start keywardd with --socket"
                ));
            }
            tracing::info!(socket = %shown, "replacing a stale socket");
            std::fs::remove_file(socket)
                .map_err(|e| format!("cannot remove the stale socket {shown}: {e}"))?;
        }
        Ok(_) => {
            return Err(format!(
                "{shown} exists and is not a socket; remove it or choose another --socket"
            ));
        }
        Err(_) => {}
    }
    let listener =
        UnixListener::bind(socket).map_err(|e| format!("cannot listen on {shown}: {e}"))?;
    let socket_mode = if open_to_others { 0o666 } else { 0o600 };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(socket_mode))
        .map_err(|e| format!("cannot set the mode of {shown}: {e}"))?;
    Ok((
        listener,
        SocketGuard {
            path: socket.clone(),
            _lock: lock,
        },
    ))
}

/// Runs the daemon until `shutdown` completes, then drains in-flight requests (up to 30 s),
/// removes the socket and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), String> {
    // Plugin sockets live in a fresh private directory (0700), removed when the daemon exits.
    let plugin_sockets = tempfile::Builder::new()
        .prefix("keyward-plugins-")
        .tempdir()
        .map_err(|e| format!("cannot create a directory for plugin sockets: {e}"))?;
    let (stop_plugins, plugins_stop) = tokio::sync::watch::channel(false);
    let context = backends::PluginContext {
        socket_dir: plugin_sockets.path().to_path_buf(),
        plugin_dir: backends::default_plugin_dir(),
        stop: plugins_stop,
    };
    let built = backends::build_all(&config.backends, &context).map_err(|e| e.to_string())?;
    let result = serve(&config, built.backends, &built.plugins, shutdown).await;
    // Stop the plugins after the last request has drained.
    let _ = stop_plugins.send(true);
    for (_, supervisor) in built.plugins {
        let _ = tokio::time::timeout(Duration::from_secs(10), supervisor).await;
    }
    drop(plugin_sockets);
    tracing::info!("keywardd stopped");
    result
}

async fn serve(
    config: &Config,
    backends: std::collections::BTreeMap<String, Arc<dyn keyward_plugin_api::Backend>>,
    plugins: &[(
        crate::plugin_host::PluginBackend,
        tokio::task::JoinHandle<()>,
    )],
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    let registry = Arc::new(Registry::new(config, backends)?);
    let (listener, guard) = bind(config)?;
    // Give plugin processes their startup deadline before declaring the daemon ready, so the
    // first requests do not race them; a plugin that fails stays down and retries on its own.
    let waits = plugins
        .iter()
        .map(|(plugin, _)| plugin.wait_started(Duration::from_secs(15)));
    futures_join_all(waits).await;
    let own_uid = rustix::process::getuid().as_raw();
    let auth = Authenticator::new(
        own_uid,
        config.allow_uids.clone(),
        config.admin_uids.clone(),
    );
    let policies = Arc::new(Policies::from_config(config));
    let audit = match &config.audit {
        Some(audit) => Auditor::open(audit)?,
        None => Auditor::default(),
    };
    let config = config.clone();

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SignerServer<SignerService>>().await;
    health.set_serving::<KeyAdminServer<AdminService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(keyward_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("cannot build the reflection service: {e}"))?;

    let signer = SignerServer::new(SignerService::new(
        registry.clone(),
        auth.clone(),
        policies,
        audit.clone(),
    ))
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let admin = KeyAdminServer::new(AdminService::new(registry.clone(), auth, audit.clone()));

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
    let remote = match &config.tls {
        None => None,
        Some(tls) => {
            let incoming = tokio::net::TcpListener::bind(tls.listen)
                .await
                .map_err(|e| format!("[tls] cannot listen on {}: {e}", tls.listen))?;
            let server = Server::builder()
                .tls_config(tls.server_config()?)
                .map_err(|e| format!("[tls] the certificate, key or client_ca is unusable: {e}"))?
                .add_service(signer.clone())
                .add_service(admin.clone())
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(incoming),
                    stopped(stop_rx.clone()),
                );
            tracing::info!(listen = %tls.listen, "listening for mutual-TLS clients");
            Some(server)
        }
    };
    let local = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(signer)
        .add_service(admin)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopped(stop_rx.clone()));
    let servers = async {
        let remote = async {
            match remote {
                Some(server) => server.await,
                None => Ok(()),
            }
        };
        // The first server that fails stops the daemon.
        tokio::try_join!(local, remote)
            .map(drop)
            .map_err(|e| format!("the server failed: {e}"))
    };

    tracing::info!(
        socket = %config.socket.display(),
        backends = config.backends.len(),
        pid = std::process::id(),
        "keywardd ready"
    );
    // Check configured keys in the background: a slow backend must not delay serving.
    let checking = registry.clone();
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
            () = &mut shutdown, if !signalled => signalled = true,
            () = &mut drain_deadline => {
                tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; exiting anyway");
                break Ok(());
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

async fn futures_join_all(futures: impl Iterator<Item = impl Future<Output = ()>>) {
    let mut set = Vec::new();
    for future in futures {
        set.push(future);
    }
    for future in set {
        future.await;
    }
}
