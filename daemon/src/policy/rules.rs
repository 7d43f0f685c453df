//! The rules of a policy table (`[key.policy]`, `[default_policy]`): parsing and validation.

use std::path::PathBuf;

use keyward_plugin_api::SignatureAlgorithm;
use serde::Deserialize;

use crate::ratelimit::Rate;

/// An entry of `executables`: a path, and optionally the SHA-256 the file must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executable {
    /// An absolute path, compared with the target of `/proc/<pid>/exe`.
    pub path: PathBuf,
    /// The file's SHA-256, when pinned.
    pub sha256: Option<[u8; 32]>,
}

/// A purpose pattern: the text from the config and the anchored regular expression.
#[derive(Clone, Debug)]
pub struct Purpose {
    /// As written in the config.
    pub pattern: String,
    pub(super) regex: regex::Regex,
}

/// The rules of one `[key.policy]` or of `[default_policy]`, validated. `None` = not set.
#[derive(Clone, Debug, Default)]
pub struct PolicyRules {
    /// Local callers' uids.
    pub uids: Option<Vec<u32>>,
    /// Local callers' primary gids.
    pub gids: Option<Vec<u32>>,
    /// Local callers' executables.
    pub executables: Option<Vec<Executable>>,
    /// Remote callers' certificate identities (`spiffe://...`, `CN=...`, `DNS:...`).
    pub mtls_identities: Option<Vec<String>>,
    /// The algorithms the key may sign with.
    pub algorithms: Option<Vec<SignatureAlgorithm>>,
    /// The key's token bucket.
    pub rate_limit: Option<Rate>,
    /// One token bucket per caller.
    pub caller_rate_limit: Option<Rate>,
    /// The pattern the whole `purpose` must match.
    pub purpose: Option<Purpose>,
    /// `protected = true`: `keyward keys delete` refuses the key. Not a signing rule: a policy
    /// that sets nothing else leaves signing as it would be without a policy of the key's own.
    pub protected: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    uids: Option<Vec<u32>>,
    gids: Option<Vec<u32>>,
    executables: Option<Vec<toml::Value>>,
    mtls_identities: Option<Vec<String>>,
    algorithms: Option<Vec<String>>,
    rate_limit: Option<RawRate>,
    caller_rate_limit: Option<RawRate>,
    purpose: Option<String>,
    #[serde(default)]
    protected: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: f64,
    burst: u32,
}

impl PolicyRules {
    /// Parses a policy table; the error says which field is wrong and how.
    pub fn parse(table: toml::Table) -> Result<PolicyRules, String> {
        let raw = RawPolicy::deserialize(toml::Value::Table(table))
            .map_err(|e| e.message().trim_end().to_string())?;
        let executables = match raw.executables {
            None => None,
            Some(list) => Some(list.into_iter().map(executable).collect::<Result<_, _>>()?),
        };
        let algorithms = match raw.algorithms {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|name| {
                        SignatureAlgorithm::from_name(name).ok_or_else(|| {
                            format!(
                                "algorithms: unknown algorithm {name:?}; use names such as ecdsa-sha256, rsa-pss-sha256, ed25519"
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let purpose = match raw.purpose {
            None => None,
            Some(pattern) => {
                let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        format!("purpose {pattern:?} is not a valid regular expression: {e}")
                    })?;
                Some(Purpose { pattern, regex })
            }
        };
        if raw
            .mtls_identities
            .iter()
            .flatten()
            .any(|id| id.trim().is_empty())
        {
            return Err("mtls_identities: an identity is empty".into());
        }
        Ok(PolicyRules {
            uids: raw.uids,
            gids: raw.gids,
            executables,
            mtls_identities: raw.mtls_identities,
            algorithms,
            rate_limit: raw.rate_limit.map(|r| rate("rate_limit", r)).transpose()?,
            caller_rate_limit: raw
                .caller_rate_limit
                .map(|r| rate("caller_rate_limit", r))
                .transpose()?,
            purpose,
            protected: raw.protected,
        })
    }

    /// True when the policy sets `protected` and no signing rule at all: it protects the key
    /// from deletion and leaves signing alone.
    pub fn protection_only(&self) -> bool {
        let PolicyRules {
            uids,
            gids,
            executables,
            mtls_identities,
            algorithms,
            rate_limit,
            caller_rate_limit,
            purpose,
            protected,
        } = self;
        *protected
            && uids.is_none()
            && gids.is_none()
            && executables.is_none()
            && mtls_identities.is_none()
            && algorithms.is_none()
            && rate_limit.is_none()
            && caller_rate_limit.is_none()
            && purpose.is_none()
    }

    /// Whether any local caller can pass (some of `uids`, `gids`, `executables` is set).
    pub(super) fn names_local_callers(&self) -> bool {
        self.uids.is_some() || self.gids.is_some() || self.executables.is_some()
    }

    /// True when checking this policy needs the SHA-256 of the caller's executable.
    pub fn pins_executables(&self) -> bool {
        self.executables
            .iter()
            .flatten()
            .any(|e| e.sha256.is_some())
    }

    /// True when checking this policy needs the caller's executable.
    pub fn names_executables(&self) -> bool {
        self.executables.is_some()
    }

    /// Why no caller can ever pass, if that is so (for a warning at start-up). A policy that
    /// only protects the key from deletion does not govern signing.
    pub fn allows_nobody(&self) -> bool {
        !self.protection_only() && !self.names_local_callers() && self.mtls_identities.is_none()
    }
}

fn rate(field: &str, raw: RawRate) -> Result<Rate, String> {
    if !(raw.per_second.is_finite() && raw.per_second > 0.0) {
        return Err(format!(
            "{field}: per_second = {} must be a number above 0",
            raw.per_second
        ));
    }
    if raw.burst == 0 {
        return Err(format!("{field}: burst must be at least 1"));
    }
    Ok(Rate {
        per_second: raw.per_second,
        burst: raw.burst,
    })
}

fn executable(value: toml::Value) -> Result<Executable, String> {
    let shape = "executables: each entry is a path or { path = \"/usr/bin/x\", sha256 = \"<64 hex digits>\" }";
    let (path, sha256) = match value {
        toml::Value::String(path) => (path, None),
        toml::Value::Table(mut table) => {
            let path = match table.remove("path") {
                Some(toml::Value::String(path)) => path,
                _ => return Err(shape.into()),
            };
            let sha256 = match table.remove("sha256") {
                None => None,
                Some(toml::Value::String(hex)) => Some(parse_sha256(&hex).ok_or_else(|| {
                    format!("executables: sha256 of {path} must be 64 hex digits, not {hex:?}")
                })?),
                Some(_) => return Err(shape.into()),
            };
            if let Some(field) = table.keys().next() {
                return Err(format!(
                    "executables: unknown field `{field}` in the entry for {path}; {shape}"
                ));
            }
            (path, sha256)
        }
        _ => return Err(shape.into()),
    };
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(format!(
            "executables: {} is not an absolute path",
            path.display()
        ));
    }
    Ok(Executable { path, sha256 })
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}
