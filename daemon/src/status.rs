//! What `keyward status` and `keyward doctor` are told (`keyward.v1.Agent/Status`): the agent's
//! version, pid and uptime; each backend's state (up, down, locked, starting, and why), its key
//! count and plugin restarts; for admins, where the agent keeps its files; and with `checks`,
//! the slower checks `doctor` runs (the config file on disk parsed again, each backend's
//! settings checked by its plugin, every named key resolved).
//!
//! Every backend is probed concurrently under [`PROBE_LIMIT`], so a hung backend costs one
//! limit, not the sum, and status answers even when backends do not.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use keyward_plugin_api::Backend;
use keyward_proto::v1;

use crate::audit::Auditor;
use crate::config::{self, Config};
use crate::keys::Registry;
use crate::plugin_host::{Phase, PluginBackend};

/// The longest a status probe (health, key listing) waits for one backend.
pub const PROBE_LIMIT: Duration = Duration::from_secs(5);

static STARTED: OnceLock<(SystemTime, Instant)> = OnceLock::new();

/// Notes the daemon's start (its first call wins).
pub fn mark_started() {
    STARTED.get_or_init(|| (SystemTime::now(), Instant::now()));
}

fn started() -> (SystemTime, Instant) {
    *STARTED.get_or_init(|| (SystemTime::now(), Instant::now()))
}

/// One backend instance as status sees it.
#[derive(Debug, Clone)]
pub struct BackendView {
    /// The `[[backend]]` name.
    pub name: String,
    /// Its type.
    pub backend_type: String,
    /// The backend.
    pub backend: Arc<dyn Backend>,
    /// Its plugin process, `None` when it runs inside keywardd.
    pub plugin: Option<PluginBackend>,
}

/// Everything one generation of the config can say about the agent.
#[derive(Debug)]
pub struct StatusSource {
    /// The generation's registry.
    pub registry: Arc<Registry>,
    /// Its backends, in config order.
    pub backends: Vec<BackendView>,
    /// Its config.
    pub config: Config,
    /// The audit log.
    pub audit: Auditor,
}

impl StatusSource {
    /// The answer to `Status`: `admin` adds where the agent keeps its files; `checks` (admins
    /// only) adds the config check and the keys that do not resolve.
    pub async fn status(&self, checks: bool, admin: bool) -> v1::StatusResponse {
        let (started_at, since) = started();
        let backends = join_all(self.backends.iter().map(probe)).await;
        let details = if admin {
            Some(self.details(checks).await)
        } else {
            None
        };
        v1::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at: started_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            uptime_seconds: since.elapsed().as_secs(),
            socket: self.config.socket.display().to_string(),
            backends,
            details,
        }
    }

    async fn details(&self, checks: bool) -> v1::AgentDetails {
        let config = &self.config;
        let shown = |path: &PathBuf| path.display().to_string();
        let (audit_seq, audit_head) = self.audit.head().unwrap_or_default();
        let mut details = v1::AgentDetails {
            config_file: config.file.as_ref().map(shown).unwrap_or_default(),
            state_dir: shown(&config.state_dir),
            plugin_dirs: crate::plugin_dir::search_dirs(config.plugin_dir.as_deref())
                .iter()
                .map(shown)
                .collect(),
            audit_log: config
                .audit
                .as_ref()
                .map(|a| shown(&a.path))
                .unwrap_or_default(),
            audit_seq,
            audit_head,
            socket_shared: !config.allow_uids.is_empty(),
            metrics_listen: config
                .metrics
                .as_ref()
                .map(|m| m.listen.to_string())
                .unwrap_or_default(),
            log_format: crate::logging::current().name().to_string(),
            ..v1::AgentDetails::default()
        };
        if checks {
            if let Some(file) = &config.file {
                details.config_checked = true;
                details.config_error = check_config_file(file, config).await.unwrap_or_default();
            }
            details.key_problems = self.key_problems().await;
        }
        details
    }

    /// The named keys that do not resolve now, each under [`PROBE_LIMIT`].
    async fn key_problems(&self) -> Vec<v1::KeyProblem> {
        let ids = self.registry.named_ids();
        let checks = ids.into_iter().map(|id| async move {
            let resolved = tokio::time::timeout(PROBE_LIMIT, self.registry.resolve(&id)).await;
            let problem = match resolved {
                Ok(Ok(_)) => return None,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!(
                    "its backend did not describe it within {}s",
                    PROBE_LIMIT.as_secs()
                ),
            };
            Some(v1::KeyProblem {
                backend: self.registry.backend_of(&id).unwrap_or_default(),
                key_id: id,
                problem,
            })
        });
        join_all(checks).await.into_iter().flatten().collect()
    }
}

/// Reads and checks the config file again, as a reload would (every backend's settings checked
/// by its plugin): the error, or `None`.
async fn check_config_file(file: &std::path::Path, running: &Config) -> Option<String> {
    let source = match config::ConfigSource::file(file) {
        Ok(source) => source,
        Err(e) => return Some(e.to_string()),
    };
    let overrides = config::Overrides {
        socket: Some(running.socket.clone()),
    };
    let parsed = match config::parse(&source, &overrides) {
        Ok(parsed) => parsed,
        Err(e) => return Some(e.to_string()),
    };
    let dirs = crate::plugin_dir::search_dirs(parsed.plugin_dir.as_deref());
    let checks = parsed
        .backends
        .iter()
        .map(|backend| crate::backends::check(backend, &dirs));
    let errors: Vec<String> = join_all(checks)
        .await
        .into_iter()
        .filter_map(|checked| checked.err().map(|e| e.to_string()))
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// One backend's state: its plugin's phase, then (when it answers) its health and key count.
async fn probe(view: &BackendView) -> v1::BackendStatus {
    let mut status = v1::BackendStatus {
        name: view.name.clone(),
        backend_type: view.backend_type.clone(),
        in_process: view.plugin.is_none(),
        ..v1::BackendStatus::default()
    };
    if let Some(plugin) = &view.plugin {
        let snapshot = plugin.snapshot();
        status.restarts = snapshot.restarts;
        match snapshot.phase {
            Phase::Running => {}
            Phase::Starting(after) => {
                status.state = v1::BackendState::Starting as i32;
                status.reason = match after {
                    Some(reason) => format!("its plugin is restarting after: {reason}"),
                    None => "its plugin is starting".into(),
                };
                return status;
            }
            Phase::Down(reason) => {
                status.state = v1::BackendState::Down as i32;
                status.reason = format!("its plugin is down: {reason}");
                return status;
            }
        }
    }
    let mut state = v1::BackendState::Up;
    match tokio::time::timeout(PROBE_LIMIT, view.backend.health()).await {
        Ok(Ok(health)) => {
            status.warnings = health.warnings;
            if let Some(locked) = health.locked {
                state = v1::BackendState::Locked;
                status.reason = locked;
            }
        }
        Ok(Err(e)) => status
            .warnings
            .push(format!("its health check failed: {e}")),
        Err(_) => status.warnings.push(format!(
            "it did not answer its health check within {}s",
            PROBE_LIMIT.as_secs()
        )),
    }
    match tokio::time::timeout(PROBE_LIMIT, view.backend.list_keys()).await {
        Ok(Ok(keys)) => {
            status.keys_listed = true;
            status.key_count = u32::try_from(keys.len()).unwrap_or(u32::MAX);
        }
        Ok(Err(e)) => {
            state = v1::BackendState::Down;
            status.reason = format!("it cannot list its keys: {e}");
        }
        Err(_) => {
            state = v1::BackendState::Down;
            status.reason = format!("it did not list its keys within {}s", PROBE_LIMIT.as_secs());
        }
    }
    status.state = state as i32;
    status
}
