//! Making backend instances from `[[backend]]` tables: in the daemon (`isolation = "none"`) or
//! as supervised plugin processes (`isolation = "process"`, and always for `type = "external"`).
//! Each built-in backend type is behind a cargo feature of this crate.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyward_plugin_api::Backend;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{BackendConfig, ConfigError, Isolation};
use crate::plugin_host::{LaunchSpec, PluginBackend, check_executable};

/// The backend types this build of keywardd knows, besides `external`.
pub fn known_types() -> Vec<&'static str> {
    [
        #[cfg(feature = "local")]
        "local",
        #[cfg(feature = "pkcs11")]
        "pkcs11",
        #[cfg(feature = "vault")]
        "vault",
        #[cfg(feature = "awskms")]
        "awskms",
        #[cfg(feature = "azurekv")]
        "azurekv",
        #[cfg(feature = "pgp")]
        "pgp",
        #[cfg(feature = "yubikey")]
        "yubikey",
    ]
    .into_iter()
    .collect()
}

/// Where a backend type runs unless its config says otherwise. Backends that load C libraries
/// or talk to card readers will default to `Process`.
fn default_isolation(backend_type: &str) -> Isolation {
    match backend_type {
        // A PKCS#11 module is foreign C code that can crash or hang: keep it out of the daemon.
        // A card reader (PC/SC) can hang or vanish mid-call: keep it out of the daemon too.
        "external" | "pkcs11" | "yubikey" => Isolation::Process,
        _ => Isolation::None,
    }
}

fn unknown_type(config: &BackendConfig) -> ConfigError {
    config.error(format!(
        "unknown backend type {:?}; this keywardd supports: {}, external",
        config.backend_type,
        known_types().join(", ")
    ))
}

/// Checks a backend's settings without making it (no directory is created, no secret read).
pub fn check(config: &BackendConfig) -> Result<(), ConfigError> {
    match config.backend_type.as_str() {
        #[cfg(feature = "local")]
        "local" => config
            .settings::<keyward_plugin_local::LocalSettings>()
            .map(drop),
        #[cfg(feature = "pkcs11")]
        "pkcs11" => config
            .settings::<keyward_plugin_pkcs11::Pkcs11Settings>()
            .map(drop),
        #[cfg(feature = "vault")]
        "vault" => config
            .settings::<keyward_plugin_vault::VaultSettings>()
            .map(drop),
        #[cfg(feature = "awskms")]
        "awskms" => config
            .settings::<keyward_plugin_awskms::AwsKmsSettings>()
            .map(drop),
        #[cfg(feature = "azurekv")]
        "azurekv" => config
            .settings::<keyward_plugin_azurekv::AzureKvSettings>()
            .map(drop),
        #[cfg(feature = "pgp")]
        "pgp" => config
            .settings::<keyward_plugin_pgp::PgpSettings>()
            .map(drop),
        #[cfg(feature = "yubikey")]
        "yubikey" => config
            .settings::<keyward_plugin_yubikey::YubikeySettings>()
            .map(drop),
        "external" => Ok(()),
        _ => Err(unknown_type(config)),
    }
}

/// Makes a backend inside the daemon.
fn build_in_process(config: &BackendConfig) -> Result<Arc<dyn Backend>, ConfigError> {
    match config.backend_type.as_str() {
        #[cfg(feature = "local")]
        "local" => {
            let settings: keyward_plugin_local::LocalSettings = config.settings()?;
            let backend =
                keyward_plugin_local::LocalBackend::new(settings).map_err(|e| config.error(e))?;
            Ok(Arc::new(backend))
        }
        #[cfg(feature = "pkcs11")]
        "pkcs11" => {
            let settings: keyward_plugin_pkcs11::Pkcs11Settings = config.settings()?;
            let backend =
                keyward_plugin_pkcs11::Pkcs11Backend::new(settings).map_err(|e| config.error(e))?;
            Ok(Arc::new(backend))
        }
        #[cfg(feature = "yubikey")]
        "yubikey" => {
            let settings: keyward_plugin_yubikey::YubikeySettings = config.settings()?;
            let backend = keyward_plugin_yubikey::YubikeyBackend::new(settings)
                .map_err(|e| config.error(e))?;
            Ok(Arc::new(backend))
        }
        #[cfg(feature = "vault")]
        "vault" => {
            let settings: keyward_plugin_vault::VaultSettings = config.settings()?;
            let backend =
                keyward_plugin_vault::VaultBackend::new(settings).map_err(|e| config.error(e))?;
            Ok(Arc::new(backend))
        }
        #[cfg(feature = "awskms")]
        "awskms" => {
            let settings: keyward_plugin_awskms::AwsKmsSettings = config.settings()?;
            let backend =
                keyward_plugin_awskms::AwsKmsBackend::new(settings).map_err(|e| config.error(e))?;
            Ok(Arc::new(backend))
        }
        #[cfg(feature = "azurekv")]
        "azurekv" => {
            let settings: keyward_plugin_azurekv::AzureKvSettings = config.settings()?;
            let backend = keyward_plugin_azurekv::AzureKvBackend::new(settings)
                .map_err(|e| config.error(e))?;
            Ok(Arc::new(backend))
        }
        #[cfg(feature = "pgp")]
        "pgp" => {
            let settings: keyward_plugin_pgp::PgpSettings = config.settings()?;
            let backend =
                keyward_plugin_pgp::PgpBackend::new(settings).map_err(|e| config.error(e))?;
            Ok(Arc::new(backend))
        }
        _ => Err(unknown_type(config)),
    }
}

/// What the daemon needs to run plugin processes.
#[derive(Debug)]
pub struct PluginContext {
    /// A private (0700) directory for plugin sockets.
    pub socket_dir: PathBuf,
    /// Where the built-in `keyward-plugin-<type>` executables are (next to keywardd).
    pub plugin_dir: PathBuf,
    /// Completes (turns true) when the daemon stops.
    pub stop: watch::Receiver<bool>,
}

/// A backend instance of a running daemon: its config (to tell whether a reload changed it),
/// the backend, and its supervisor when it is a plugin process.
#[derive(Debug)]
pub struct Running {
    /// The `[[backend]]` table it was made from.
    pub config: BackendConfig,
    /// The backend (a [`PluginBackend`] for plugin processes).
    pub backend: Arc<dyn Backend>,
    /// The plugin process, for start-up waiting and shutdown.
    pub plugin: Option<RunningPlugin>,
}

/// A supervised plugin process with its own stop signal, so that a reload can stop one plugin
/// while the others keep running.
#[derive(Debug)]
pub struct RunningPlugin {
    /// The handle requests go through.
    pub handle: PluginBackend,
    /// The supervisor task; it ends after the process has stopped.
    pub task: JoinHandle<()>,
    stop: Arc<watch::Sender<bool>>,
}

impl RunningPlugin {
    /// Stops the plugin process (SIGTERM, then SIGKILL) and waits for its supervisor, at most
    /// `limit`.
    pub async fn stop(self, limit: std::time::Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(limit, self.task).await;
    }
}

/// Whether two `[[backend]]` tables make the same backend (everything but where they were
/// written down).
fn same_backend(a: &BackendConfig, b: &BackendConfig) -> bool {
    a.name == b.name
        && a.backend_type == b.backend_type
        && a.isolation == b.isolation
        && a.timeout == b.timeout
        && a.startup_timeout == b.startup_timeout
        && a.health_interval == b.health_interval
        && a.command == b.command
        && a.env == b.env
        && a.settings == b.settings
}

/// Makes the backends of `configs` that `previous` does not already run with the same table
/// (all of them at start-up). The unchanged ones are left in `previous` to be taken over as
/// they are: no plugin restart, no new login. On error, plugins started here are stopped.
pub async fn build_changed(
    configs: &[BackendConfig],
    context: &PluginContext,
    previous: &BTreeMap<String, Running>,
) -> Result<BTreeMap<String, Running>, ConfigError> {
    let mut built: BTreeMap<String, Running> = BTreeMap::new();
    for config in configs {
        if previous
            .get(&config.name)
            .is_some_and(|running| same_backend(&running.config, config))
        {
            continue;
        }
        match build_one(config, context) {
            Ok(running) => {
                built.insert(config.name.clone(), running);
            }
            Err(e) => {
                stop_all(built.into_values()).await;
                return Err(e);
            }
        }
    }
    Ok(built)
}

/// Stops the plugin processes among `backends` (in-process ones just drop).
pub async fn stop_all(backends: impl IntoIterator<Item = Running>) {
    for running in backends {
        if let Some(plugin) = running.plugin {
            plugin.stop(std::time::Duration::from_secs(10)).await;
        }
    }
}

fn build_one(config: &BackendConfig, context: &PluginContext) -> Result<Running, ConfigError> {
    check(config)?;
    let isolation = config
        .isolation
        .unwrap_or_else(|| default_isolation(&config.backend_type));
    match isolation {
        Isolation::None => Ok(Running {
            config: config.clone(),
            backend: build_in_process(config)?,
            plugin: None,
        }),
        Isolation::Process => {
            let spec = launch_spec(config, context)?;
            // The plugin stops when the daemon stops or when a reload retires it.
            let (stop, stop_rx) = watch::channel(false);
            let stop = Arc::new(stop);
            let forward = stop.clone();
            let mut daemon_stop = context.stop.clone();
            let mut own_stop = stop_rx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = daemon_stop.wait_for(|s| *s) => { let _ = forward.send(true); }
                    _ = own_stop.wait_for(|s| *s) => {}
                }
            });
            let (handle, task) = PluginBackend::spawn(spec, stop_rx);
            Ok(Running {
                config: config.clone(),
                backend: Arc::new(handle.clone()),
                plugin: Some(RunningPlugin { handle, task, stop }),
            })
        }
    }
}

fn launch_spec(config: &BackendConfig, context: &PluginContext) -> Result<LaunchSpec, ConfigError> {
    let (program, args) = match &config.command {
        Some(command) => {
            let (program, args) = command
                .split_first()
                .ok_or_else(|| config.error("empty `command`"))?;
            (PathBuf::from(program), args.to_vec())
        }
        None => (
            context
                .plugin_dir
                .join(format!("keyward-plugin-{}", config.backend_type)),
            Vec::new(),
        ),
    };
    let program = check_executable(&program).map_err(|e| config.error(e))?;
    let settings_json = serde_json::to_vec(&config.settings)
        .map_err(|e| config.error(format!("cannot encode the settings: {e}")))?;
    Ok(LaunchSpec {
        name: config.name.clone(),
        backend_type: config.backend_type.clone(),
        program,
        args,
        env: plugin_env(config),
        settings_json,
        socket_dir: context.socket_dir.clone(),
        call_timeout: config.timeout,
        startup_timeout: config.startup_timeout,
        health_interval: config.health_interval,
    })
}

/// The plugin's whole environment: a fixed PATH, HOME, KEYWARD_LOG, the variables its `*_env`
/// settings name and those its `env` list names. Nothing else of the daemon's environment.
fn plugin_env(config: &BackendConfig) -> Vec<(OsString, OsString)> {
    // CREDENTIALS_DIRECTORY: systemd credentials (`*_credential` settings) must reach plugins.
    let mut names: Vec<String> = vec![
        "HOME".into(),
        "KEYWARD_LOG".into(),
        "CREDENTIALS_DIRECTORY".into(),
    ];
    names.extend(
        config
            .settings
            .iter()
            .filter(|(key, _)| key.ends_with("_env"))
            .filter_map(|(_, value)| value.as_str().map(str::to_string)),
    );
    names.extend(config.env.iter().cloned());
    let mut env = vec![(
        OsString::from("PATH"),
        OsString::from("/usr/local/bin:/usr/bin:/bin"),
    )];
    for name in names {
        if let Some(value) = std::env::var_os(&name) {
            env.push((OsString::from(name), value));
        }
    }
    env
}

/// The directory of the running keywardd, where `keyward-plugin-<type>` binaries live.
pub fn default_plugin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}
