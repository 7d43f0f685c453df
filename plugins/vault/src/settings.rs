//! The `[[backend]]` settings of a `vault` backend.
//!
//! The table is flat (`token_env = ..`, `approle_role_id = ..`, ...) as written in the config;
//! it is checked while it is read, so `keywardd --check-config` already refuses a table with no
//! auth method, two auth methods, or an address that is not an `http(s)://` URL.

use std::path::PathBuf;

use serde::Deserialize;

/// Where Kubernetes mounts a pod's service account token.
pub const DEFAULT_KUBERNETES_TOKEN_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The settings of one `vault` backend, validated.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct VaultSettings {
    /// The server, `http(s)://host:port` (a path prefix is kept; no trailing `/`).
    pub address: String,
    /// The path of the transit secrets engine (default `transit`), without slashes around it.
    pub mount: String,
    /// The Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// A PEM bundle of the CAs to trust instead of the system's (private CAs, `-dev-tls`).
    pub ca_file: Option<PathBuf>,
    /// How the backend gets a Vault token.
    pub auth: AuthSettings,
}

/// Where a secret comes from: an environment variable or a file of mode 0600.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// The value of this environment variable.
    Env(String),
    /// The contents of this file (a trailing newline is dropped).
    File(PathBuf),
}

impl SecretSource {
    /// `(env, file)` as [`keyward_plugin_api::read_secret`] takes them.
    pub fn parts(&self) -> (Option<&str>, Option<&std::path::Path>) {
        match self {
            SecretSource::Env(var) => (Some(var), None),
            SecretSource::File(path) => (None, Some(path)),
        }
    }
}

/// The auth method: exactly one per backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthSettings {
    /// A token given to keyward (`token_env` / `token_file`). If it is renewable it is renewed;
    /// a `token_file` is read again when the token is refused, so a Vault Agent sink works.
    Token(SecretSource),
    /// AppRole login (`approle_role_id` + `approle_secret_id_env` / `approle_secret_id_file`).
    AppRole {
        /// The role id (an identifier, not a secret).
        role_id: String,
        /// The secret id.
        secret_id: SecretSource,
        /// The auth mount (default `approle`).
        mount: String,
    },
    /// Kubernetes login with the pod's service account token (`kubernetes_role`).
    Kubernetes {
        /// The Vault role.
        role: String,
        /// The service account token file, read at each login.
        token_file: PathBuf,
        /// The auth mount (default `kubernetes`).
        mount: String,
    },
    /// JWT/OIDC login with a token a CI system writes to a file (`jwt_role`, `jwt_token_file`).
    Jwt {
        /// The Vault role.
        role: String,
        /// The JWT file, read at each login.
        token_file: PathBuf,
        /// The auth mount (default `jwt`).
        mount: String,
    },
}

impl AuthSettings {
    /// The method's name as the docs call it.
    pub fn name(&self) -> &'static str {
        match self {
            AuthSettings::Token(_) => "token",
            AuthSettings::AppRole { .. } => "approle",
            AuthSettings::Kubernetes { .. } => "kubernetes",
            AuthSettings::Jwt { .. } => "jwt",
        }
    }
}

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    address: String,
    mount: Option<String>,
    namespace: Option<String>,
    ca_file: Option<PathBuf>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    approle_role_id: Option<String>,
    approle_secret_id_env: Option<String>,
    approle_secret_id_file: Option<PathBuf>,
    approle_mount: Option<String>,
    kubernetes_role: Option<String>,
    kubernetes_token_file: Option<PathBuf>,
    kubernetes_mount: Option<String>,
    jwt_role: Option<String>,
    jwt_token_file: Option<PathBuf>,
    jwt_mount: Option<String>,
}

impl TryFrom<RawSettings> for VaultSettings {
    type Error = String;

    fn try_from(raw: RawSettings) -> Result<Self, String> {
        let address = check_address(&raw.address)?;
        if raw.ca_file.is_some() && address.starts_with("http://") {
            return Err(format!(
                "ca_file is set but address {address} is plain http; use https:// or drop ca_file"
            ));
        }
        let mount = check_path("mount", raw.mount.as_deref().unwrap_or("transit"))?;
        let namespace = raw
            .namespace
            .as_deref()
            .map(|ns| check_path("namespace", ns))
            .transpose()?;
        let auth = auth_settings(&raw)?;
        Ok(VaultSettings {
            address,
            mount,
            namespace,
            ca_file: raw.ca_file,
            auth,
        })
    }
}

fn auth_settings(raw: &RawSettings) -> Result<AuthSettings, String> {
    let token = raw.token_env.is_some() || raw.token_file.is_some();
    let approle = raw.approle_role_id.is_some()
        || raw.approle_secret_id_env.is_some()
        || raw.approle_secret_id_file.is_some()
        || raw.approle_mount.is_some();
    let kubernetes = raw.kubernetes_role.is_some()
        || raw.kubernetes_token_file.is_some()
        || raw.kubernetes_mount.is_some();
    let jwt = raw.jwt_role.is_some() || raw.jwt_token_file.is_some() || raw.jwt_mount.is_some();
    let chosen: Vec<&str> = [
        (token, "token"),
        (approle, "approle"),
        (kubernetes, "kubernetes"),
        (jwt, "jwt"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if chosen.len() != 1 {
        let found = if chosen.is_empty() {
            "none".to_string()
        } else {
            chosen.join(" and ")
        };
        return Err(format!(
            "set exactly one auth method (found {found}): token_env or token_file; \
             approle_role_id with approle_secret_id_env or approle_secret_id_file; \
             kubernetes_role; or jwt_role with jwt_token_file. Use one [[backend]] per method"
        ));
    }
    let mount = |value: &Option<String>, default: &str| {
        check_path("auth mount", value.as_deref().unwrap_or(default))
    };
    if token {
        return one_source("token", &raw.token_env, &raw.token_file).map(AuthSettings::Token);
    }
    if approle {
        let role_id = non_empty("approle_role_id", &raw.approle_role_id)?;
        let secret_id = one_source(
            "approle_secret_id",
            &raw.approle_secret_id_env,
            &raw.approle_secret_id_file,
        )?;
        return Ok(AuthSettings::AppRole {
            role_id,
            secret_id,
            mount: mount(&raw.approle_mount, "approle")?,
        });
    }
    if kubernetes {
        return Ok(AuthSettings::Kubernetes {
            role: non_empty("kubernetes_role", &raw.kubernetes_role)?,
            token_file: raw
                .kubernetes_token_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_KUBERNETES_TOKEN_FILE)),
            mount: mount(&raw.kubernetes_mount, "kubernetes")?,
        });
    }
    Ok(AuthSettings::Jwt {
        role: non_empty("jwt_role", &raw.jwt_role)?,
        token_file: raw.jwt_token_file.clone().ok_or_else(|| {
            "jwt_role needs jwt_token_file: the file where the CI system writes the job's OIDC token"
                .to_string()
        })?,
        mount: mount(&raw.jwt_mount, "jwt")?,
    })
}

fn one_source(
    what: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<SecretSource, String> {
    match (env, file) {
        (Some(_), Some(_)) => Err(format!("both {what}_env and {what}_file are set; keep one")),
        (Some(var), None) if !var.is_empty() => Ok(SecretSource::Env(var.clone())),
        (None, Some(path)) => Ok(SecretSource::File(path.clone())),
        _ => Err(format!("set {what}_env or {what}_file")),
    }
}

fn non_empty(what: &str, value: &Option<String>) -> Result<String, String> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(format!("{what} must be set and not empty")),
    }
}

/// An `http(s)://` URL without credentials, query or fragment; returned without a trailing `/`.
fn check_address(address: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(address).map_err(|e| {
        format!("address {address:?} is not a URL ({e}); write http(s)://host:port")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "address {address:?} must start with https:// (or http:// for a local dev server)"
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("address {address:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "address must not hold credentials; use token_env, token_file or a login method"
                .to_string(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "address {address:?} must not have a query or a fragment"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// A mount or namespace path: segments of letters, digits, `-`, `_` and `.`, joined by `/`.
fn check_path(what: &str, value: &str) -> Result<String, String> {
    let trimmed = value.trim_matches('/');
    let ok = !trimmed.is_empty()
        && trimmed.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    if ok {
        Ok(trimmed.to_string())
    } else {
        Err(format!(
            "{what} {value:?} is not a valid Vault path: use letters, digits, '-', '_', '.' and '/'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<VaultSettings, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_token_backend_gets_defaults() {
        let s = parse(r#"{"address": "https://vault.example:8200/", "token_env": "VT"}"#).unwrap();
        assert_eq!(s.address, "https://vault.example:8200");
        assert_eq!(s.mount, "transit");
        assert_eq!(s.auth, AuthSettings::Token(SecretSource::Env("VT".into())));
    }

    #[test]
    fn login_methods_get_their_default_mounts() {
        let s = parse(
            r#"{"address": "http://127.0.0.1:8200", "mount": "/keys/transit/",
                "approle_role_id": "r", "approle_secret_id_file": "/s"}"#,
        )
        .unwrap();
        assert_eq!(s.mount, "keys/transit");
        assert_eq!(
            s.auth,
            AuthSettings::AppRole {
                role_id: "r".into(),
                secret_id: SecretSource::File("/s".into()),
                mount: "approle".into()
            }
        );
        let k = parse(r#"{"address": "http://h:1", "kubernetes_role": "signer"}"#).unwrap();
        assert_eq!(
            k.auth,
            AuthSettings::Kubernetes {
                role: "signer".into(),
                token_file: DEFAULT_KUBERNETES_TOKEN_FILE.into(),
                mount: "kubernetes".into()
            }
        );
        let j = parse(r#"{"address": "http://h:1", "jwt_role": "ci", "jwt_token_file": "/t"}"#)
            .unwrap();
        assert_eq!(j.auth.name(), "jwt");
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        for (json, want) in [
            (r#"{"address": "http://h:1"}"#, "found none"),
            (
                r#"{"address": "http://h:1", "token_env": "A", "jwt_role": "r", "jwt_token_file": "/t"}"#,
                "found token and jwt",
            ),
            (
                r#"{"address": "http://h:1", "token_env": "A", "token_file": "/t"}"#,
                "keep one",
            ),
            (
                r#"{"address": "http://h:1", "approle_role_id": "r"}"#,
                "approle_secret_id_env",
            ),
            (
                r#"{"address": "http://h:1", "jwt_role": "r"}"#,
                "jwt_token_file",
            ),
            (r#"{"address": "h:1", "token_env": "A"}"#, "https://"),
            (
                r#"{"address": "http://u:p@h:1", "token_env": "A"}"#,
                "credentials",
            ),
            (
                r#"{"address": "http://h:1", "token_env": "A", "ca_file": "/ca"}"#,
                "plain http",
            ),
            (
                r#"{"address": "http://h:1", "token_env": "A", "mount": "a/../b"}"#,
                "not a valid Vault path",
            ),
            (
                r#"{"address": "http://h:1", "token_env": "A", "tokn_file": "/t"}"#,
                "unknown field",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
            assert!(!err.contains(":p@"), "{err}");
        }
    }
}
