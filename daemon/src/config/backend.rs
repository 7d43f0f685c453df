//! One `[[backend]]` table: the fields the daemon reads itself (name, type, isolation,
//! deadlines, `command`, `env`) and the backend's own settings, each with the line it was
//! written on, so that an error a plugin finds in a setting is reported at that line.

use std::collections::BTreeMap;
use std::time::Duration;

use keyward_plugin_api::is_valid_key_name;

use super::{ConfigError, ConfigSource};

/// Where a backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Inside the daemon.
    None,
    /// In its own child process, speaking `keyward.plugin.v1`.
    Process,
}

/// One `[[backend]]` table.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Instance name, used by keys and by `keys generate --backend`.
    pub name: String,
    /// Backend type (`local`, `external`, ...): lowercase letters, digits, `-` and `_`, so
    /// that `keyward-plugin-<type>` is a plain file name.
    pub backend_type: String,
    /// Where it runs; `None` when the config does not say (each type has a default).
    pub isolation: Option<Isolation>,
    /// The deadline of each call to the backend.
    pub timeout: Duration,
    /// How long a plugin process has to print its handshake.
    pub startup_timeout: Duration,
    /// How often a plugin process is health-checked.
    pub health_interval: Duration,
    /// `external` only: the plugin executable and its arguments.
    pub command: Option<Vec<String>>,
    /// Names of environment variables passed to a plugin process besides those its
    /// `*_env` settings name.
    pub env: Vec<String>,
    /// The backend's own settings (everything but the fields above).
    pub settings: toml::Table,
    /// The line of each key of the table (the daemon's fields and the settings).
    pub lines: BTreeMap<String, usize>,
    /// The line of the table, for errors found later.
    pub line: usize,
    /// The file it came from.
    pub origin: String,
}

impl BackendConfig {
    /// Deserializes this backend's settings into the backend's settings type (for the types
    /// that run in the daemon); errors name the backend and the line of the setting at fault.
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        T::deserialize(toml::Value::Table(self.settings.clone())).map_err(|e| {
            let message = e.message().trim_end().to_string();
            let setting = ["unknown field `", "missing field `"]
                .iter()
                .find_map(|marker| message.split(marker).nth(1))
                .and_then(|rest| rest.split('`').next())
                .map(str::to_string);
            self.setting_error(setting.as_deref(), message)
        })
    }

    /// An error about this backend, at its table's line.
    pub fn error(&self, message: impl std::fmt::Display) -> ConfigError {
        self.setting_error(None, message)
    }

    /// An error about `setting` of this backend, at that setting's line (the table's when the
    /// setting is not in the table, or none is named).
    pub fn setting_error(
        &self,
        setting: Option<&str>,
        message: impl std::fmt::Display,
    ) -> ConfigError {
        let line = setting
            .and_then(|s| self.lines.get(s))
            .copied()
            .unwrap_or(self.line);
        let what = match setting {
            Some(setting) => format!(
                "[[backend]] {:?} (type {}): `{setting}`: {message}",
                self.name, self.backend_type
            ),
            None => format!(
                "[[backend]] {:?} (type {}): {message}",
                self.name, self.backend_type
            ),
        };
        ConfigError {
            origin: format!("{} line {line}", self.origin),
            message: what,
        }
    }

    /// Whether two tables make the same backend (everything but where they were written).
    pub fn same_backend(&self, other: &BackendConfig) -> bool {
        self.name == other.name
            && self.backend_type == other.backend_type
            && self.isolation == other.isolation
            && self.timeout == other.timeout
            && self.startup_timeout == other.startup_timeout
            && self.health_interval == other.health_interval
            && self.command == other.command
            && self.env == other.env
            && self.settings == other.settings
    }
}

/// A raw `[[backend]]` table: values with their spans.
pub(super) type RawBackend = toml::Spanned<BTreeMap<String, toml::Spanned<toml::Value>>>;

/// Whether `name` can be a backend type: it becomes part of a file name.
fn is_valid_type(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Parses one `[[backend]]` table.
pub(super) fn parse_backend(
    source: &ConfigSource,
    raw: RawBackend,
) -> Result<BackendConfig, ConfigError> {
    let line = source.line_of(raw.span().start);
    let mut lines = BTreeMap::new();
    let mut table = toml::Table::new();
    for (key, value) in raw.into_inner() {
        lines.insert(key.clone(), source.line_of(value.span().start));
        table.insert(key, value.into_inner());
    }
    let at = |key: &str| lines.get(key).copied().unwrap_or(line);
    let name = take_string(&mut table, "name")
        .map_err(|m| ConfigError::at(source, Some(at("name")), format!("[[backend]]: {m}")))?;
    if !is_valid_key_name(&name) {
        return Err(ConfigError::at(
            source,
            Some(at("name")),
            format!(
                "[[backend]] name {name:?} is not valid: use letters, digits, '.', '_' and '-'"
            ),
        ));
    }
    let named = |key: &str, m: String| {
        ConfigError::at(source, Some(at(key)), format!("[[backend]] {name:?}: {m}"))
    };
    let backend_type = take_string(&mut table, "type").map_err(|m| named("type", m))?;
    if !is_valid_type(&backend_type) {
        return Err(named(
            "type",
            format!(
                "type {backend_type:?} is not valid: a backend type is lowercase letters, digits, '-' and '_' (local, pkcs11, vault, ...)"
            ),
        ));
    }
    let isolation = match table.remove("isolation") {
        None => None,
        Some(toml::Value::String(v)) if v == "process" => Some(Isolation::Process),
        Some(toml::Value::String(v)) if v == "none" => Some(Isolation::None),
        Some(other) => {
            return Err(named(
                "isolation",
                format!("`isolation` must be \"process\" or \"none\", not {other}"),
            ));
        }
    };
    let seconds = |table: &mut toml::Table, key: &str, default: f64| {
        take_seconds(table, key, default).map_err(|m| named(key, m))
    };
    let timeout = seconds(&mut table, "timeout", 30.0)?;
    let startup_timeout = seconds(&mut table, "startup_timeout", 10.0)?;
    let health_interval = seconds(&mut table, "health_interval", 5.0)?;
    let command = match table.remove("command") {
        None => None,
        Some(value) => Some(string_list(value, "command").map_err(|m| named("command", m))?),
    };
    let env = match table.remove("env") {
        None => Vec::new(),
        Some(value) => string_list(value, "env").map_err(|m| named("env", m))?,
    };
    if backend_type == "external" {
        if command.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(named(
                "command",
                "an external backend needs `command = [\"/path/to/plugin\", ...]`".into(),
            ));
        }
        if isolation == Some(Isolation::None) {
            return Err(named(
                "isolation",
                "an external backend always runs as a process; remove `isolation = \"none\"`"
                    .into(),
            ));
        }
    } else if command.is_some() {
        return Err(named(
            "command",
            "`command` is only for `type = \"external\"`; built-in backends run their own plugin binary".into(),
        ));
    }
    Ok(BackendConfig {
        name,
        backend_type,
        isolation,
        timeout,
        startup_timeout,
        health_interval,
        command,
        env,
        settings: table,
        lines,
        line,
        origin: source.name.clone(),
    })
}

/// A duration (`"30s"`, `"500ms"`, `"2m"`, or a number of seconds), `default` when absent,
/// between 1 ms and 1 hour.
fn take_seconds(table: &mut toml::Table, field: &str, default: f64) -> Result<Duration, String> {
    let duration = match table.remove(field) {
        None => Duration::from_secs_f64(default),
        Some(value) => super::duration::from_toml(&value).map_err(|m| format!("`{field}`: {m}"))?,
    };
    if !(Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&duration) {
        return Err(format!(
            "`{field}` = {} is out of range: use 1ms to 1h",
            humantime::format_duration(duration)
        ));
    }
    Ok(duration)
}

fn string_list(value: toml::Value, field: &str) -> Result<Vec<String>, String> {
    let not_list = || format!("`{field}` must be a list of strings");
    match value {
        toml::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s),
                _ => Err(not_list()),
            })
            .collect(),
        _ => Err(not_list()),
    }
}

fn take_string(table: &mut toml::Table, field: &str) -> Result<String, String> {
    match table.remove(field) {
        Some(toml::Value::String(value)) => Ok(value),
        Some(other) => Err(format!(
            "`{field}` must be a string, not {}",
            other.type_str()
        )),
        None => Err(format!("missing `{field}`")),
    }
}
