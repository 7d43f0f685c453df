//! Making backend instances from `[[backend]]` tables.
//!
//! keywardd links one backend type, `local`, which runs in the daemon. Every other type is its
//! own executable, `keyward-plugin-<type>` ([`crate::plugin_dir`]), run as a supervised child
//! process ([`crate::plugin_host`]); `external` backends name their executable in `command`.
//! This module knows no backend type but `local` (and `pkcs11` when keywardd is built with the
//! `pkcs11-in-process` cargo feature, so that `isolation = "none"` can load a fast PKCS#11
//! module into the daemon): adding a backend type touches no file of the daemon.
//!
//! Before a plugin starts (and for `--check-config`) its executable checks its own settings
//! (`--check-settings`, [`crate::plugin_check`]): a bad setting is a config error at that
//! setting's line, the answer names the environment variables the plugin needs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use keyward_plugin_api::Backend;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{BackendConfig, ConfigError, Isolation};
use crate::deadline::Deadline;
use crate::plugin_check::{Checked, base_env, check_settings};
use crate::plugin_dir;
use crate::plugin_host::{LaunchSpec, PluginBackend, check_executable};

/// The backend types this keywardd runs inside itself.
pub fn in_process_types() -> &'static [&'static str] {
    &[
        "local",
        #[cfg(feature = "pkcs11-in-process")]
        "pkcs11",
    ]
}

/// Where a backend type runs unless its config says otherwise: `local` in the daemon, every
/// other type in its own process (C libraries, card readers and cloud SDKs must not be able to
/// crash, hang or read the daemon).
fn default_isolation(backend_type: &str) -> Isolation {
    if backend_type == "local" {
        Isolation::None
    } else {
        Isolation::Process
    }
}

/// How one backend will run, once its config has been checked.
#[derive(Debug, Clone)]
pub enum Plan {
    /// In the daemon.
    InProcess,
    /// As a plugin process.
    Process {
        /// The executable, checked.
        program: PathBuf,
        /// Its arguments (`external` only).
        args: Vec<String>,
        /// Variables (or `PREFIX*` patterns) it needs from the daemon's environment, from its
        /// `--check-settings` answer.
        pass_env: Vec<String>,
        /// Why its settings were not checked before the start, if they were not.
        unchecked: Option<String>,
    },
}

/// Checks a backend's config without making it: the isolation fits this build, an in-process
/// backend's settings parse, a plugin's executable exists and is safe to run, and the plugin
/// accepts its settings. Nothing is created and no secret is read.
pub async fn check(config: &BackendConfig, plugin_dirs: &[PathBuf]) -> Result<Plan, ConfigError> {
    let isolation = config
        .isolation
        .unwrap_or_else(|| default_isolation(&config.backend_type));
    if isolation == Isolation::None {
        return match config.backend_type.as_str() {
            "local" => config
                .settings::<keyward_plugin_local::LocalSettings>()
                .map(|_| Plan::InProcess),
            #[cfg(feature = "pkcs11-in-process")]
            "pkcs11" => config
                .settings::<keyward_plugin_pkcs11::Pkcs11Settings>()
                .map(|_| Plan::InProcess),
            other => Err(config.setting_error(
                Some("isolation"),
                format!(
                    "keywardd runs only {} inside itself, not {other}; remove `isolation = \"none\"` to run it as a plugin process{}",
                    in_process_types().join(" and "),
                    if other == "pkcs11" {
                        " (or build keywardd with the cargo feature `pkcs11-in-process`)"
                    } else {
                        ""
                    }
                ),
            )),
        };
    }
    let (program, args) = match &config.command {
        Some(command) => {
            let (program, args) = command
                .split_first()
                .ok_or_else(|| config.setting_error(Some("command"), "empty `command`"))?;
            (PathBuf::from(program), args.to_vec())
        }
        None => (
            plugin_dir::find(&config.backend_type, plugin_dirs)
                .map_err(|e| config.setting_error(Some("type"), e))?,
            Vec::new(),
        ),
    };
    let program = check_executable(&program).map_err(|e| {
        let setting = if config.command.is_some() {
            "command"
        } else {
            "type"
        };
        config.setting_error(Some(setting), e)
    })?;
    let (pass_env, unchecked) = match check_settings(config, &program, &args).await? {
        Checked::Fine { env } => (env, None),
        Checked::Unchecked(why) => (Vec::new(), Some(why)),
    };
    Ok(Plan::Process {
        program,
        args,
        pass_env,
        unchecked,
    })
}

/// Makes a backend inside the daemon; every call to it runs under the backend's `timeout`.
fn build_in_process(config: &BackendConfig) -> Result<Arc<dyn Backend>, ConfigError> {
    let backend: Arc<dyn Backend> = match config.backend_type.as_str() {
        "local" => {
            let settings: keyward_plugin_local::LocalSettings = config.settings()?;
            Arc::new(
                keyward_plugin_local::LocalBackend::new(settings).map_err(|e| config.error(e))?,
            )
        }
        #[cfg(feature = "pkcs11-in-process")]
        "pkcs11" => {
            let settings: keyward_plugin_pkcs11::Pkcs11Settings = config.settings()?;
            Arc::new(
                keyward_plugin_pkcs11::Pkcs11Backend::new(settings).map_err(|e| config.error(e))?,
            )
        }
        other => {
            return Err(config.error(format!("backend type {other} cannot run in keywardd")));
        }
    };
    Ok(Arc::new(Deadline::new(
        &config.name,
        config.timeout,
        backend,
    )))
}

/// What the daemon needs to run plugin processes.
#[derive(Debug)]
pub struct PluginContext {
    /// A private (0700) directory for plugin sockets.
    pub socket_dir: PathBuf,
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

/// Makes the backends of `configs` that `previous` does not already run with the same table
/// (all of them at start-up). The unchanged ones are left in `previous` to be taken over as
/// they are: no plugin restart, no new login. Every changed one is checked first, so a config
/// error starts nothing; on a later error, plugins started here are stopped.
pub async fn build_changed(
    configs: &[BackendConfig],
    plugin_dirs: &[PathBuf],
    context: &PluginContext,
    previous: &BTreeMap<String, Running>,
) -> Result<BTreeMap<String, Running>, ConfigError> {
    let changed: Vec<&BackendConfig> = configs
        .iter()
        .filter(|config| {
            !previous
                .get(&config.name)
                .is_some_and(|running| running.config.same_backend(config))
        })
        .collect();
    // The checks run concurrently: each may start a plugin executable once (--check-settings).
    let mut checks = tokio::task::JoinSet::new();
    for (index, config) in changed.iter().enumerate() {
        let (config, dirs) = ((*config).clone(), plugin_dirs.to_vec());
        checks.spawn(async move { (index, check(&config, &dirs).await) });
    }
    let mut plans: Vec<Option<Plan>> = vec![None; changed.len()];
    let mut first_error: Option<(usize, ConfigError)> = None;
    while let Some(joined) = checks.join_next().await {
        let (index, checked) =
            joined.map_err(|e| changed[0].error(format!("internal error: a check failed: {e}")))?;
        match checked {
            Ok(plan) => plans[index] = Some(plan),
            // Report the error of the first backend in config order.
            Err(e) if first_error.as_ref().is_none_or(|(i, _)| index < *i) => {
                first_error = Some((index, e))
            }
            Err(_) => {}
        }
    }
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    let plans: Vec<Plan> = plans.into_iter().flatten().collect();
    let mut built: BTreeMap<String, Running> = BTreeMap::new();
    for (config, plan) in changed.into_iter().zip(plans) {
        match build_one(config, plan, context) {
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

fn build_one(
    config: &BackendConfig,
    plan: Plan,
    context: &PluginContext,
) -> Result<Running, ConfigError> {
    let Plan::Process {
        program,
        args,
        pass_env,
        unchecked,
    } = plan
    else {
        return Ok(Running {
            config: config.clone(),
            backend: build_in_process(config)?,
            plugin: None,
        });
    };
    if let Some(why) = unchecked {
        tracing::warn!(backend = %config.name, "settings not checked before the start: {why}");
    }
    let settings_json = serde_json::to_vec(&config.settings)
        .map_err(|e| config.error(format!("cannot encode the settings: {e}")))?;
    let spec = LaunchSpec {
        name: config.name.clone(),
        backend_type: config.backend_type.clone(),
        program,
        args,
        env: plugin_env(config, &pass_env),
        settings_json,
        socket_dir: context.socket_dir.clone(),
        call_timeout: config.timeout,
        startup_timeout: config.startup_timeout,
        health_interval: config.health_interval,
    };
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

/// The plugin's whole environment: a fixed PATH, HOME, KEYWARD_LOG, the variables its `*_env`
/// settings name, those its `env` list names and those its check answer asked for (`pass_env`,
/// names or `PREFIX*` patterns). Nothing else of the daemon's environment.
fn plugin_env(config: &BackendConfig, pass_env: &[String]) -> Vec<(OsString, OsString)> {
    // CREDENTIALS_DIRECTORY: systemd credentials (`*_credential` settings) must reach plugins.
    let mut names: Vec<String> = vec!["CREDENTIALS_DIRECTORY".into()];
    names.extend(
        config
            .settings
            .iter()
            .filter(|(key, _)| key.ends_with("_env"))
            .filter_map(|(_, value)| value.as_str().map(str::to_string)),
    );
    names.extend(config.env.iter().cloned());
    let mut env = base_env();
    for name in names {
        if let Some(value) = std::env::var_os(&name)
            && !env.iter().any(|(have, _)| *have == *name)
        {
            env.push((OsString::from(name), value));
        }
    }
    let prefixes: Vec<&str> = pass_env
        .iter()
        .filter_map(|p| p.strip_suffix('*'))
        .filter(|p| !p.is_empty())
        .collect();
    for (name, value) in std::env::vars_os() {
        let Some(text) = name.to_str() else { continue };
        let wanted = pass_env.iter().any(|p| p == text)
            || prefixes.iter().any(|prefix| text.starts_with(prefix));
        if wanted && !env.iter().any(|(have, _)| *have == name) {
            env.push((name, value));
        }
    }
    env
}
