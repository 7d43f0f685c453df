//! The `[[backend]]` settings of an `azurekv` backend.
//!
//! The table names the vault (`vault_url`), how keyward gets an Entra ID token (`credential`),
//! an optional CA bundle for the vault's TLS certificate (`ca_file`), whether keys are
//! discovered by listing the vault (`discover`), whether new keys are HSM keys (`hsm_keys`),
//! how fast the vault may be called (`rate_limit`, `rate_burst`) and how often an unpinned
//! key's current version is checked (`version_check_interval`). It never holds a secret: client secrets, certificates and
//! federated tokens come from the standard `AZURE_*` environment variables or files (see
//! [`crate::credential`]). The table is checked while it is read, so `keywardd --check-config`
//! refuses a bad one without touching the network or the file system.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How often an unpinned key's current version is checked by default.
pub const DEFAULT_VERSION_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// The longest `version_check_interval` accepted (a day).
const MAX_VERSION_CHECK_INTERVAL: u64 = 86_400;
/// The highest `rate_limit` / `rate_burst` accepted.
const MAX_RATE: u32 = 100_000;

/// How the backend gets its Entra ID token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// A service principal from `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` and
    /// `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH`.
    Environment,
    /// Workload identity federation: `AZURE_FEDERATED_TOKEN_FILE` (Kubernetes, CI OIDC).
    WorkloadIdentity,
    /// The managed identity of the Azure resource (VM/IMDS, or App Service style with
    /// `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
    ManagedIdentity,
    /// The account signed in with `az login`.
    AzureCli,
    /// Environment, workload identity, managed identity, Azure CLI: the first that works.
    Default,
}

impl CredentialKind {
    /// Every kind, in the order the `default` chain tries them (itself last).
    pub const ALL: [CredentialKind; 5] = [
        CredentialKind::Environment,
        CredentialKind::WorkloadIdentity,
        CredentialKind::ManagedIdentity,
        CredentialKind::AzureCli,
        CredentialKind::Default,
    ];

    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            CredentialKind::Environment => "environment",
            CredentialKind::WorkloadIdentity => "workload_identity",
            CredentialKind::ManagedIdentity => "managed_identity",
            CredentialKind::AzureCli => "azure_cli",
            CredentialKind::Default => "default",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// The settings of one `azurekv` backend, validated.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct AzureKvSettings {
    /// The vault, `https://<name>.vault.azure.net` (or a Managed HSM, a sovereign cloud, a
    /// private endpoint), without a trailing `/`.
    pub vault_url: String,
    /// How the backend authenticates.
    pub credential: CredentialKind,
    /// The client id of a user-assigned managed identity, or the application's client id for
    /// `environment` / `workload_identity` instead of `AZURE_CLIENT_ID`. Not a secret.
    pub client_id: Option<String>,
    /// The tenant for `environment` / `workload_identity` instead of `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// A PEM bundle of the CAs that issue the vault's TLS certificate, trusted instead of the
    /// system's (private endpoints behind a TLS-inspecting proxy, an emulator).
    pub ca_file: Option<PathBuf>,
    /// Whether `list_keys` lists the vault's signing keys (`true`), or only the keys named in
    /// `[[key]]` tables are served (`false`).
    pub discover: bool,
    /// `generate_key` makes HSM-protected keys (`EC-HSM`, `RSA-HSM`): needed for Managed HSM,
    /// optional on a premium vault.
    pub hsm_keys: bool,
    /// Requests per second sent to the vault at most, if set.
    pub rate_limit: Option<u32>,
    /// How many requests may go at once before `rate_limit` applies.
    pub rate_burst: u32,
    /// How long an unpinned key keeps signing with the version keyward last read as current
    /// before keyward reads the key again (zero: before every signature).
    pub version_check_interval: Duration,
}

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    vault_url: String,
    credential: Option<String>,
    client_id: Option<String>,
    tenant_id: Option<String>,
    ca_file: Option<PathBuf>,
    discover: Option<bool>,
    hsm_keys: Option<bool>,
    rate_limit: Option<u32>,
    rate_burst: Option<u32>,
    version_check_interval: Option<u32>,
}

impl TryFrom<RawSettings> for AzureKvSettings {
    type Error = String;

    fn try_from(raw: RawSettings) -> Result<Self, String> {
        let vault_url = check_vault_url(&raw.vault_url)?;
        let credential = match raw.credential.as_deref() {
            None => CredentialKind::Default,
            Some(name) => CredentialKind::from_name(name).ok_or_else(|| {
                format!(
                    "credential = {name:?} is not known; use one of: {}",
                    CredentialKind::ALL.map(CredentialKind::name).join(", ")
                )
            })?,
        };
        let client_id = identifier("client_id", raw.client_id)?;
        let tenant_id = identifier("tenant_id", raw.tenant_id)?;
        if tenant_id.is_some()
            && matches!(
                credential,
                CredentialKind::ManagedIdentity | CredentialKind::AzureCli
            )
        {
            return Err(format!(
                "tenant_id does not apply to credential = {:?}: a managed identity and the \
                 Azure CLI know their tenant",
                credential.name()
            ));
        }
        if client_id.is_some() && credential == CredentialKind::AzureCli {
            return Err(
                "client_id does not apply to credential = \"azure_cli\": the CLI uses the account \
                 signed in with `az login`"
                    .to_string(),
            );
        }
        if raw
            .ca_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err("ca_file is empty; give the path of a PEM file or drop it".to_string());
        }
        for (what, value) in [
            ("rate_limit", raw.rate_limit),
            ("rate_burst", raw.rate_burst),
        ] {
            if let Some(value) = value
                && !(1..=MAX_RATE).contains(&value)
            {
                return Err(format!(
                    "{what} = {value}: give requests per second, 1 to {MAX_RATE}"
                ));
            }
        }
        if raw.rate_burst.is_some() && raw.rate_limit.is_none() {
            return Err("rate_burst needs rate_limit (requests per second)".to_string());
        }
        let interval = raw
            .version_check_interval
            .map_or(DEFAULT_VERSION_CHECK_INTERVAL.as_secs(), u64::from);
        if interval > MAX_VERSION_CHECK_INTERVAL {
            return Err(format!(
                "version_check_interval = {interval}: give seconds, 0 to {MAX_VERSION_CHECK_INTERVAL}"
            ));
        }
        Ok(AzureKvSettings {
            vault_url,
            credential,
            client_id,
            tenant_id,
            ca_file: raw.ca_file,
            discover: raw.discover.unwrap_or(true),
            hsm_keys: raw.hsm_keys.unwrap_or(false),
            rate_limit: raw.rate_limit,
            rate_burst: raw.rate_burst.or(raw.rate_limit).unwrap_or(1),
            version_check_interval: Duration::from_secs(interval),
        })
    }
}

/// An id such as a client or tenant id: letters, digits, `-`, `.` (a GUID or a domain).
fn identifier(what: &str, value: Option<String>) -> Result<Option<String>, String> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim().to_string();
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if ok {
        Ok(Some(value))
    } else {
        Err(format!(
            "{what} must be an id (a GUID such as 00000000-0000-0000-0000-000000000000)"
        ))
    }
}

/// An `https://` URL without credentials, path, query or fragment; returned without a
/// trailing `/`. Plain `http://` is refused: the Azure SDK never sends a token over it.
fn check_vault_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        format!("vault_url {url:?} is not a URL ({e}); write https://<name>.vault.azure.net")
    })?;
    if parsed.scheme() != "https" {
        return Err(format!(
            "vault_url {url:?} must start with https://: Key Vault tokens are never sent over plain HTTP"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("vault_url {url:?} has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "vault_url must not hold credentials; choose a `credential` kind instead".to_string(),
        );
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "vault_url {url:?} must be the vault itself (https://<name>.vault.azure.net), without a path; \
             name keys in [[key]] tables"
        ));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<AzureKvSettings, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let s = parse(r#"{"vault_url": "https://kw.vault.azure.net/"}"#).unwrap();
        assert_eq!(s.vault_url, "https://kw.vault.azure.net");
        assert_eq!(s.credential, CredentialKind::Default);
        assert!(s.discover && !s.hsm_keys);
        assert_eq!((s.rate_limit, s.rate_burst), (None, 1));
        assert_eq!(s.client_id, None);
        assert_eq!(s.version_check_interval, DEFAULT_VERSION_CHECK_INTERVAL);
    }

    #[test]
    fn every_kind_parses() {
        for kind in CredentialKind::ALL {
            let json = format!(
                r#"{{"vault_url": "https://127.0.0.1:8443", "credential": "{}"}}"#,
                kind.name()
            );
            assert_eq!(parse(&json).unwrap().credential, kind);
        }
        let s = parse(
            r#"{"vault_url": "https://h", "credential": "managed_identity", "client_id": " abc-1 ",
                "discover": false, "rate_limit": 50, "ca_file": "/etc/ca.pem", "hsm_keys": true}"#,
        )
        .unwrap();
        assert_eq!(s.client_id.as_deref(), Some("abc-1"));
        assert!(!s.discover && s.hsm_keys);
        assert_eq!((s.rate_limit, s.rate_burst), (Some(50), 50));
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        for (json, want) in [
            (r#"{"vault_url": "http://kw.vault.azure.net"}"#, "https://"),
            (r#"{"vault_url": "kw.vault.azure.net"}"#, "not a URL"),
            (
                r#"{"vault_url": "https://kw.vault.azure.net/keys/k"}"#,
                "without a path",
            ),
            (
                r#"{"vault_url": "https://u:secret@kw.vault.azure.net"}"#,
                "credentials",
            ),
            (
                r#"{"vault_url": "https://h", "credential": "password"}"#,
                "managed_identity",
            ),
            (
                r#"{"vault_url": "https://h", "credential": "azure_cli", "tenant_id": "t"}"#,
                "tenant_id does not apply",
            ),
            (
                r#"{"vault_url": "https://h", "client_id": "a b"}"#,
                "must be an id",
            ),
            (r#"{"vault_url": "https://h", "rate_limit": 0}"#, "1 to"),
            (
                r#"{"vault_url": "https://h", "version_check_interval": 100000}"#,
                "0 to 86400",
            ),
            (
                r#"{"vault_url": "https://h", "rate_burst": 5}"#,
                "needs rate_limit",
            ),
            (
                r#"{"vault_url": "https://h", "client_secret": "x"}"#,
                "unknown field",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
            assert!(!err.contains("secret@"), "{err}");
        }
    }
}
