//! The daemon's TOML configuration: parsing, validation, defaults.
//!
//! Unknown fields and bad values are errors that name the line. Backend-specific settings are
//! checked by the backend itself (its plugin's `--check-settings`, or the settings type of a
//! backend in the daemon), and reported at the line of the setting at fault ([`backend`]).

mod backend;
pub mod duration;

pub use backend::{BackendConfig, Isolation};

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use keyward_plugin_api::is_valid_key_name;
use serde::Deserialize;

use backend::{RawBackend, parse_backend};

use crate::audit::AuditConfig;
use crate::limits::{Limits, MAX_MESSAGE_CAP};
use crate::metrics::MetricsConfig;
use crate::paths;
use crate::policy::PolicyRules;
use crate::ssh_agent::SshAgentConfig;
use crate::tls::TlsConfig;

/// A configuration error, with the file and line where it was found when known.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ConfigError {
    origin: String,
    message: String,
}

impl ConfigError {
    fn at(source: &ConfigSource, line: Option<usize>, message: impl Into<String>) -> Self {
        let origin = match line {
            Some(line) => format!("{} line {line}", source.name),
            None => source.name.clone(),
        };
        ConfigError {
            origin,
            message: message.into(),
        }
    }
}

/// Where a config came from, for error messages.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    name: String,
    text: String,
    /// The config file's directory: relative paths in the config are relative to it.
    dir: Option<PathBuf>,
    /// The file, when it came from one.
    path: Option<PathBuf>,
}

impl ConfigSource {
    /// Reads a config file.
    pub fn file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: path.display().to_string(),
            message: format!("cannot read the config file: {e}"),
        })?;
        Ok(ConfigSource {
            name: path.display().to_string(),
            text,
            dir: path.parent().map(Path::to_path_buf),
            path: Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())),
        })
    }

    /// A config given as text (the embedded default, tests).
    pub fn text(name: &str, text: String) -> Self {
        ConfigSource {
            name: name.to_string(),
            text,
            dir: None,
            path: None,
        }
    }

    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    allow_uids: Vec<u32>,
    #[serde(default)]
    admin_uids: Vec<u32>,
    default_policy: Option<toml::Spanned<toml::Table>>,
    audit: Option<toml::Spanned<toml::Table>>,
    tls: Option<toml::Spanned<toml::Table>>,
    limits: Option<toml::Spanned<toml::Table>>,
    ssh_agent: Option<toml::Spanned<toml::Table>>,
    metrics: Option<toml::Spanned<toml::Table>>,
    log_format: Option<toml::Spanned<String>>,
    plugin_dir: Option<PathBuf>,
    #[serde(default)]
    backend: Vec<RawBackend>,
    #[serde(default)]
    key: Vec<toml::Spanned<RawKey>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    backend: String,
    #[serde(rename = "ref")]
    reference: String,
    certificate_chain: Option<PathBuf>,
    max_message_bytes: Option<u64>,
    policy: Option<toml::Spanned<toml::Table>>,
}

/// The whole daemon configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The socket to listen on.
    pub socket: PathBuf,
    /// Whether the socket is the default one (its directory is then ours to create and lock down).
    pub socket_is_default: bool,
    /// Where the registry of created keys and attached metadata lives.
    pub state_dir: PathBuf,
    /// Uids besides the daemon's own that may call it.
    pub allow_uids: Vec<u32>,
    /// Uids besides the daemon's own that may use `KeyAdmin` (generate, attach).
    pub admin_uids: Vec<u32>,
    /// `[default_policy]`: the policy of keys that have none of their own.
    pub default_policy: Option<PolicyRules>,
    /// `[audit]`: the audit log.
    pub audit: Option<AuditConfig>,
    /// `[tls]`: the mutual-TLS listener.
    pub tls: Option<TlsConfig>,
    /// `[limits]`, with each `[[key]]`'s `max_message_bytes`.
    pub limits: Limits,
    /// `[ssh_agent]`: the ssh-agent socket.
    pub ssh_agent: Option<SshAgentConfig>,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: Option<MetricsConfig>,
    /// `log_format`: `text` (the default) or `json`; `--log-format` wins.
    pub log_format: Option<LogFormat>,
    /// The config file, `None` for the embedded default.
    pub file: Option<PathBuf>,
    /// `plugin_dir`: where `keyward-plugin-<type>` executables are; `None`: next to keywardd,
    /// then `<prefix>/libexec/keyward` ([`crate::plugin_dir`]).
    pub plugin_dir: Option<PathBuf>,
    /// Backend instances, in config order.
    pub backends: Vec<BackendConfig>,
    /// Keys named in the config.
    pub keys: Vec<KeyConfig>,
}

/// One `[[key]]` table.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// The id clients use.
    pub id: String,
    /// The backend instance holding it.
    pub backend: String,
    /// The key in the backend's own words.
    pub reference: String,
    /// `certificate_chain = "chain.pem"`: the file, and its certificates (DER, leaf first),
    /// read and checked against the Notary rules when the config is loaded.
    pub certificate_chain: Option<(PathBuf, Vec<Vec<u8>>)>,
    /// `[key.policy]`.
    pub policy: Option<PolicyRules>,
}

/// How keywardd writes its log lines (stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event, no colours; without timestamps under systemd (journald stamps
    /// each line).
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `text` or `json`.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    /// Parses `text` or `json`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Command-line overrides.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--socket`.
    pub socket: Option<PathBuf>,
}

/// The configuration used when there is no config file: one local backend named `local`.
pub fn embedded_default() -> Result<ConfigSource, ConfigError> {
    let keys = paths::data_dir()
        .map_err(|message| ConfigError {
            origin: "embedded default config".into(),
            message,
        })?
        .join("keys");
    let keys = toml::Value::String(keys.display().to_string());
    Ok(ConfigSource::text(
        "embedded default config",
        format!("[[backend]]\nname = \"local\"\ntype = \"local\"\npath = {keys}\n"),
    ))
}

/// Parses and validates a config.
pub fn parse(source: &ConfigSource, overrides: &Overrides) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(&source.text).map_err(|e| {
        let line = e.span().map(|span| source.line_of(span.start));
        ConfigError::at(source, line, e.message().trim_end().to_string())
    })?;

    let mut backends = Vec::new();
    let mut names = HashSet::new();
    for raw in raw.backend {
        let backend = parse_backend(source, raw)?;
        if !names.insert(backend.name.clone()) {
            return Err(ConfigError::at(
                source,
                Some(backend.line),
                format!(
                    "a second [[backend]] is named {:?}; backend names must be unique",
                    backend.name
                ),
            ));
        }
        backends.push(backend);
    }

    let mut limits = match raw.limits {
        None => Limits::default(),
        Some(table) => {
            let line = source.line_of(table.span().start);
            Limits::parse(table.into_inner())
                .map_err(|m| ConfigError::at(source, Some(line), format!("[limits]: {m}")))?
        }
    };
    let mut keys = Vec::new();
    let mut ids = HashSet::new();
    let mut refs = BTreeMap::new();
    for spanned in raw.key {
        let line = source.line_of(spanned.span().start);
        let key = spanned.into_inner();
        let err =
            |m: String| ConfigError::at(source, Some(line), format!("[[key]] {:?}: {m}", key.id));
        if !is_valid_key_name(&key.id) {
            return Err(err(
                "is not a valid key id: use 1-128 letters, digits, '.', '_' and '-'".into(),
            ));
        }
        if !names.contains(&key.backend) {
            return Err(err(format!(
                "names backend {:?}, which no [[backend]] defines",
                key.backend
            )));
        }
        if !ids.insert(key.id.clone()) {
            return Err(err("is defined twice; key ids must be unique".into()));
        }
        if let Some(other) =
            refs.insert((key.backend.clone(), key.reference.clone()), key.id.clone())
        {
            return Err(err(format!(
                "refers to the same key as [[key]] {other:?}; give each key one id"
            )));
        }
        let certificate_chain = match &key.certificate_chain {
            None => None,
            Some(file) => {
                let path = match &source.dir {
                    Some(dir) if file.is_relative() => dir.join(file),
                    _ => file.clone(),
                };
                let chain = read_chain(&path)
                    .map_err(|m| err(format!("certificate_chain {}: {m}", path.display())))?;
                Some((path, chain))
            }
        };
        if let Some(cap) = key.max_message_bytes {
            if !(64..=MAX_MESSAGE_CAP as u64).contains(&cap) {
                return Err(err(format!(
                    "max_message_bytes = {cap} is out of range; use 64 to {MAX_MESSAGE_CAP}"
                )));
            }
            limits
                .key_message_bytes
                .insert(key.id.clone(), cap as usize);
        }
        let policy = match key.policy {
            None => None,
            Some(table) => Some(policy_table(
                source,
                table,
                &format!("[[key]] {:?}", key.id),
            )?),
        };
        keys.push(KeyConfig {
            id: key.id,
            backend: key.backend,
            reference: key.reference,
            certificate_chain,
            policy,
        });
    }

    let (socket, socket_is_default) = match overrides.socket.clone().or(raw.socket) {
        Some(socket) => (socket, false),
        None => (
            paths::default_socket_path().map_err(|m| ConfigError::at(source, None, m))?,
            true,
        ),
    };
    let state_dir = match raw.state_dir {
        Some(dir) => dir,
        None => paths::data_dir().map_err(|m| ConfigError::at(source, None, m))?,
    };
    let default_policy = match raw.default_policy {
        None => None,
        Some(table) => Some(policy_table(source, table, "[default_policy]")?),
    };
    let audit = match raw.audit {
        None => None,
        Some(table) => {
            let line = source.line_of(table.span().start);
            Some(
                AuditConfig::parse(table.into_inner(), source.dir.as_deref())
                    .map_err(|m| ConfigError::at(source, Some(line), format!("[audit]: {m}")))?,
            )
        }
    };
    let tls = match raw.tls {
        None => None,
        Some(table) => {
            let line = source.line_of(table.span().start);
            Some(
                TlsConfig::parse(table.into_inner(), source.dir.as_deref())
                    .map_err(|m| ConfigError::at(source, Some(line), format!("[tls]: {m}")))?,
            )
        }
    };
    let ssh_agent = match raw.ssh_agent {
        None => None,
        Some(table) => {
            let line = source.line_of(table.span().start);
            Some(
                SshAgentConfig::parse(
                    table.into_inner(),
                    source.dir.as_deref(),
                    &socket,
                    socket_is_default,
                )
                .map_err(|m| ConfigError::at(source, Some(line), format!("[ssh_agent]: {m}")))?,
            )
        }
    };
    let metrics = match raw.metrics {
        None => None,
        Some(table) => {
            let line = source.line_of(table.span().start);
            Some(
                MetricsConfig::parse(table.into_inner(), source.dir.as_deref())
                    .map_err(|m| ConfigError::at(source, Some(line), format!("[metrics]: {m}")))?,
            )
        }
    };
    let log_format = match raw.log_format {
        None => None,
        Some(format) => {
            let line = source.line_of(format.span().start);
            Some(LogFormat::from_name(format.get_ref()).ok_or_else(|| {
                ConfigError::at(
                    source,
                    Some(line),
                    format!(
                        "log_format = {:?}: use \"text\" or \"json\"",
                        format.get_ref()
                    ),
                )
            })?)
        }
    };
    let own_uid = rustix::process::getuid().as_raw();
    if let Some(uid) = raw
        .admin_uids
        .iter()
        .find(|uid| **uid != own_uid && !raw.allow_uids.contains(uid))
    {
        return Err(ConfigError::at(
            source,
            None,
            format!(
                "admin_uids names uid {uid}, which may not use the agent at all; add it to allow_uids too"
            ),
        ));
    }
    Ok(Config {
        socket,
        socket_is_default,
        state_dir,
        allow_uids: raw.allow_uids,
        admin_uids: raw.admin_uids,
        default_policy,
        audit,
        tls,
        limits,
        ssh_agent,
        metrics,
        log_format,
        file: source.path.clone(),
        plugin_dir: raw.plugin_dir.map(|dir| match &source.dir {
            Some(base) if dir.is_relative() => base.join(dir),
            _ => dir,
        }),
        backends,
        keys,
    })
}

/// Parses a policy table; errors name its line and `what` (`[[key]] "id"`, `[default_policy]`).
fn policy_table(
    source: &ConfigSource,
    table: toml::Spanned<toml::Table>,
    what: &str,
) -> Result<PolicyRules, ConfigError> {
    let line = source.line_of(table.span().start);
    let rules = PolicyRules::parse(table.into_inner())
        .map_err(|m| ConfigError::at(source, Some(line), format!("{what} policy: {m}")))?;
    if rules.allows_nobody() {
        tracing::warn!(
            "{} line {line}: {what} policy names no uids, gids, executables or mtls_identities, so nobody may sign with it",
            source.name
        );
    }
    Ok(rules)
}

/// Reads a PEM chain file and checks it against the rules that need neither the key nor the
/// clock (those are checked when the key is first used, and validity is logged).
fn read_chain(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let chain = crate::certs::parse_pem_bundle(&pem).map_err(|e| e.to_string())?;
    crate::certs::check_rules(&chain).map_err(|e| e.to_string())?;
    Ok(chain)
}

#[cfg(test)]
mod tests;
