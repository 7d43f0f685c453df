//! The plugin side: serve a [`Backend`] over `keyward.plugin.v1`.

use std::future::Future;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use keyward_proto::plugin::v1 as wire;
use keyward_proto::plugin::v1::backend_server::{Backend as WireBackend, BackendServer};
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use super::check::{CHECK_SETTINGS_ARG, run_check};
use super::convert::{
    algorithm_from_wire, backend_error_to_status, deletion_to_wire, description_to_wire,
    format_to_wire, health_to_wire, spec_from_wire,
};
use super::{ENV_SOCKET, HANDSHAKE_LINE, PROTOCOL_VERSION};
use crate::{Backend, BackendError, Secret, SignInput, SignOp};

/// The whole `main` of a Rust plugin executable: reads the backend's settings (JSON) from stdin,
/// builds the backend with `make`, listens on `$KEYWARD_PLUGIN_SOCKET`, prints the handshake
/// line and serves until SIGTERM, SIGINT or the daemon's death. With `--check-settings` it
/// checks the settings instead and exits ([`super::check`]).
///
/// ```no_run
/// # #[derive(serde::Deserialize)] struct Settings;
/// # #[derive(Debug)] struct MyBackend;
/// # impl MyBackend { fn new(_: Settings) -> Result<Self, keyward_plugin_api::BackendError> { Ok(MyBackend) } }
/// # #[async_trait::async_trait] impl keyward_plugin_api::Backend for MyBackend {
/// #   fn backend_type(&self) -> &str { "mine" }
/// #   async fn list_keys(&self) -> Result<Vec<keyward_plugin_api::KeyDescription>, keyward_plugin_api::BackendError> { Ok(vec![]) }
/// #   async fn describe_key(&self, r: &str) -> Result<keyward_plugin_api::KeyDescription, keyward_plugin_api::BackendError> { Err(keyward_plugin_api::BackendError::NotFound(r.into())) }
/// #   async fn sign(&self, r: &str, _: keyward_plugin_api::SignOp<'_>) -> Result<keyward_plugin_api::Signature, keyward_plugin_api::BackendError> { Err(keyward_plugin_api::BackendError::NotFound(r.into())) }
/// # }
/// fn main() -> std::process::ExitCode {
///     keyward_plugin_api::plugin::run(MyBackend::new)
/// }
/// ```
pub fn run<S, B, F>(make: F) -> ExitCode
where
    S: DeserializeOwned,
    B: Backend + 'static,
    F: FnOnce(S) -> Result<B, BackendError>,
{
    Plugin::new(make).run()
}

/// A plugin executable's `main` with options; [`run`] is `Plugin::new(make).run()`.
///
/// ```no_run
/// # #[derive(serde::Deserialize)] struct Settings;
/// # #[derive(Debug)] struct Kms;
/// # impl Kms { fn new(_: Settings) -> Result<Self, keyward_plugin_api::BackendError> { Ok(Kms) } }
/// # #[async_trait::async_trait] impl keyward_plugin_api::Backend for Kms {
/// #   fn backend_type(&self) -> &str { "kms" }
/// #   async fn list_keys(&self) -> Result<Vec<keyward_plugin_api::KeyDescription>, keyward_plugin_api::BackendError> { Ok(vec![]) }
/// #   async fn describe_key(&self, r: &str) -> Result<keyward_plugin_api::KeyDescription, keyward_plugin_api::BackendError> { Err(keyward_plugin_api::BackendError::NotFound(r.into())) }
/// #   async fn sign(&self, r: &str, _: keyward_plugin_api::SignOp<'_>) -> Result<keyward_plugin_api::Signature, keyward_plugin_api::BackendError> { Err(keyward_plugin_api::BackendError::NotFound(r.into())) }
/// # }
/// fn main() -> std::process::ExitCode {
///     // The SDK's credential chain reads these from the environment.
///     keyward_plugin_api::plugin::Plugin::new(Kms::new)
///         .pass_env(&["CLOUD_*"])
///         .run()
/// }
/// ```
#[derive(Debug)]
pub struct Plugin<S, F> {
    make: F,
    env: &'static [&'static str],
    _settings: PhantomData<fn() -> S>,
}

impl<S, B, F> Plugin<S, F>
where
    S: DeserializeOwned,
    B: Backend + 'static,
    F: FnOnce(S) -> Result<B, BackendError>,
{
    /// A plugin whose backend `make` builds from its settings `S`.
    pub fn new(make: F) -> Self {
        Plugin {
            make,
            env: &[],
            _settings: PhantomData,
        }
    }

    /// Variables this plugin needs from the daemon's environment besides those its `*_env`
    /// settings name (names, or prefixes ending in `*`). keywardd learns them from the
    /// `--check-settings` answer and passes them when it starts the plugin.
    pub fn pass_env(mut self, names: &'static [&'static str]) -> Self {
        self.env = names;
        self
    }

    /// Runs the plugin (or its `--check-settings` mode) and returns its exit code.
    pub fn run(self) -> ExitCode {
        if std::env::args()
            .skip(1)
            .any(|arg| arg == CHECK_SETTINGS_ARG)
        {
            return run_check::<S>(self.env);
        }
        serve_main(self.make)
    }
}

fn serve_main<S, B, F>(make: F) -> ExitCode
where
    S: DeserializeOwned,
    B: Backend + 'static,
    F: FnOnce(S) -> Result<B, BackendError>,
{
    init_logging();
    // If keywardd dies, even by SIGKILL, its plugins must not live on holding keys.
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
    {
        tracing::warn!("cannot ask to be stopped with the daemon: {e}");
    }
    // execve reset keywardd's PR_SET_DUMPABLE: set it again before any secret is read, so that
    // other processes of the same uid cannot ptrace this one or read its memory, and it never
    // dumps core (RLIMIT_CORE 0 is inherited from keywardd).
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!("cannot make the plugin process non-dumpable: {e}");
    }
    let Some(socket) = std::env::var_os(ENV_SOCKET) else {
        eprintln!(
            "this is a keyward backend plugin: keywardd starts it (see docs/plugins.md); {ENV_SOCKET} is not set"
        );
        return ExitCode::from(2);
    };
    let settings = match read_settings::<S>() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("invalid backend settings: {message}");
            return ExitCode::from(2);
        }
    };
    let backend = match make(settings) {
        Ok(backend) => Arc::new(backend),
        Err(e) => {
            eprintln!("cannot start the backend: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = bind(Path::new(&socket))?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{HANDSHAKE_LINE}")
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot print the handshake: {e}"))?;
        drop(stdout);
        serve(backend, listener, shutdown_signal())
            .await
            .map_err(|e| format!("serving failed: {e}"))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The daemon timestamps and prefixes every line it reads from a plugin's stderr.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

fn read_settings<S: DeserializeOwned>() -> Result<S, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    let text = if text.trim().is_empty() { "{}" } else { &text };
    serde_json::from_str(text).map_err(|e| e.to_string())
}

fn bind(socket: &Path) -> Result<UnixListener, String> {
    let listener = UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot set the mode of {}: {e}", socket.display()))?;
    Ok(listener)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => std::future::pending().await,
    }
}

/// Serves `backend` on `listener` until `shutdown` completes.
pub async fn serve(
    backend: Arc<dyn Backend>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(
            BackendServer::new(PluginService { backend }).max_decoding_message_size(64 << 20),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}

#[derive(Debug)]
struct PluginService {
    backend: Arc<dyn Backend>,
}

fn status(error: BackendError) -> Status {
    backend_error_to_status(&error)
}

#[tonic::async_trait]
impl WireBackend for PluginService {
    async fn describe(
        &self,
        _request: Request<wire::DescribeRequest>,
    ) -> Result<Response<wire::DescribeResponse>, Status> {
        Ok(Response::new(wire::DescribeResponse {
            protocol_version: PROTOCOL_VERSION,
            backend_type: self.backend.backend_type().to_string(),
            description: format!("keyward-plugin-api {}", env!("CARGO_PKG_VERSION")),
        }))
    }

    async fn list_keys(
        &self,
        _request: Request<wire::ListKeysRequest>,
    ) -> Result<Response<wire::ListKeysResponse>, Status> {
        let keys = self.backend.list_keys().await.map_err(status)?;
        Ok(Response::new(wire::ListKeysResponse {
            keys: keys.into_iter().map(description_to_wire).collect(),
        }))
    }

    async fn describe_key(
        &self,
        request: Request<wire::DescribeKeyRequest>,
    ) -> Result<Response<wire::KeyDescription>, Status> {
        let key = self
            .backend
            .describe_key(&request.get_ref().reference)
            .await
            .map_err(status)?;
        Ok(Response::new(description_to_wire(key)))
    }

    async fn canonical_reference(
        &self,
        request: Request<wire::CanonicalReferenceRequest>,
    ) -> Result<Response<wire::CanonicalReferenceResponse>, Status> {
        let canonical = self
            .backend
            .canonical_reference(&request.get_ref().reference)
            .await
            .map_err(status)?;
        Ok(Response::new(wire::CanonicalReferenceResponse {
            found: canonical.is_some(),
            reference: canonical.unwrap_or_default(),
        }))
    }

    async fn sign(
        &self,
        request: Request<wire::SignRequest>,
    ) -> Result<Response<wire::SignResponse>, Status> {
        let request = request.into_inner();
        let algorithm = algorithm_from_wire(request.algorithm).map_err(status)?;
        let input = match &request.input {
            Some(wire::sign_request::Input::Digest(digest)) => SignInput::Digest(digest),
            Some(wire::sign_request::Input::Message(message)) => SignInput::Message(message),
            None => return Err(Status::invalid_argument("the request has no input")),
        };
        // The edge of this process: the request becomes a SignOp once, here.
        let op = SignOp::new(algorithm, input)
            .map_err(|e| status(BackendError::InvalidInput(e.to_string())))?;
        let signature = self
            .backend
            .sign(&request.reference, op)
            .await
            .map_err(status)?;
        Ok(Response::new(wire::SignResponse {
            signature: signature.bytes,
            ecdsa_format: format_to_wire(signature.ecdsa_format) as i32,
            key_version: signature.key_version.unwrap_or_default(),
        }))
    }

    async fn generate_key(
        &self,
        request: Request<wire::GenerateKeyRequest>,
    ) -> Result<Response<wire::KeyDescription>, Status> {
        let request = request.into_inner();
        let spec = spec_from_wire(request.spec).map_err(status)?;
        let options = request.options.into_iter().collect();
        let key = self
            .backend
            .generate_key_with(&request.name, spec, &options)
            .await
            .map_err(status)?;
        Ok(Response::new(description_to_wire(key)))
    }

    async fn unlock(
        &self,
        request: Request<wire::UnlockRequest>,
    ) -> Result<Response<wire::UnlockResponse>, Status> {
        let mut request = request.into_inner();
        let secret = Secret::new(std::mem::take(&mut request.secret));
        let ttl = Some(request.ttl_seconds)
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs);
        self.backend.unlock(secret, ttl).await.map_err(status)?;
        Ok(Response::new(wire::UnlockResponse {}))
    }

    async fn health(
        &self,
        _request: Request<wire::HealthRequest>,
    ) -> Result<Response<wire::HealthResponse>, Status> {
        let health = self.backend.health().await.map_err(status)?;
        Ok(Response::new(health_to_wire(health)))
    }

    async fn delete_key(
        &self,
        request: Request<wire::DeleteKeyRequest>,
    ) -> Result<Response<wire::DeleteKeyResponse>, Status> {
        let deletion = self
            .backend
            .delete_key(&request.get_ref().reference)
            .await
            .map_err(status)?;
        Ok(Response::new(deletion_to_wire(deletion)))
    }
}
