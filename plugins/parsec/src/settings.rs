//! The `[[backend]]` settings of a `parsec` backend, checked when they are read (also by
//! `keyward-plugin-parsec --check-settings`): nothing is contacted here.

use std::path::PathBuf;
use std::time::Duration;

use parsec_client::core::interface::requests::ProviderId;
use serde::Deserialize;

/// Where the Parsec service listens unless the config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/parsec/parsec.sock";
/// How long one request to the service may take on the socket, by default.
pub const DEFAULT_IO_TIMEOUT_SECS: u64 = 30;

/// The `[[backend]]` settings of a `parsec` backend.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct ParsecSettings {
    /// The service's Unix socket.
    pub socket: PathBuf,
    /// The provider that holds the keys; `None`: the service's default (its first).
    pub provider: Option<ProviderId>,
    /// The application name, only for a service configured with the `Direct` authenticator
    /// (which trusts it); the `UnixPeerCredentials` authenticator ignores it and uses the
    /// plugin's uid, keywardd's.
    pub application_name: Option<String>,
    /// The read/write timeout of one request on the socket.
    pub io_timeout: Duration,
}

/// The names the config uses for Parsec's providers.
pub const PROVIDERS: [(&str, ProviderId); 5] = [
    ("tpm", ProviderId::Tpm),
    ("pkcs11", ProviderId::Pkcs11),
    ("mbed-crypto", ProviderId::MbedCrypto),
    ("trusted-service", ProviderId::TrustedService),
    ("cryptoauthlib", ProviderId::CryptoAuthLib),
];

/// The config's name of a provider.
pub fn provider_name(provider: ProviderId) -> &'static str {
    PROVIDERS
        .iter()
        .find(|(_, id)| *id == provider)
        .map_or("core", |(name, _)| name)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    socket: Option<PathBuf>,
    provider: Option<String>,
    application_name: Option<String>,
    io_timeout_secs: Option<u64>,
}

impl TryFrom<RawSettings> for ParsecSettings {
    type Error = String;

    fn try_from(raw: RawSettings) -> Result<Self, String> {
        let socket = raw.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        if !socket.is_absolute() {
            return Err(format!(
                "socket = {:?} must be an absolute path to the Parsec service's socket",
                socket.display()
            ));
        }
        let provider = match raw.provider {
            None => None,
            Some(name) => Some(
                PROVIDERS
                    .iter()
                    .find(|(known, _)| *known == name)
                    .map(|(_, id)| *id)
                    .ok_or_else(|| {
                        format!(
                            "provider = {name:?} is not a Parsec provider: use one of {}",
                            PROVIDERS.map(|(n, _)| n).join(", ")
                        )
                    })?,
            ),
        };
        if let Some(name) = &raw.application_name
            && (name.is_empty() || name.len() > 256)
        {
            return Err("application_name must be 1 to 256 characters".into());
        }
        let timeout = raw.io_timeout_secs.unwrap_or(DEFAULT_IO_TIMEOUT_SECS);
        if !(1..=600).contains(&timeout) {
            return Err(format!("io_timeout_secs = {timeout}: use 1 to 600"));
        }
        Ok(ParsecSettings {
            socket,
            provider,
            application_name: raw.application_name,
            io_timeout: Duration::from_secs(timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ParsecSettings, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn valid_settings() {
        let s = parse("{}").unwrap();
        assert_eq!(s.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(s.provider, None);
        assert_eq!(s.io_timeout, Duration::from_secs(DEFAULT_IO_TIMEOUT_SECS));
        let s =
            parse(r#"{"socket":"/tmp/p.sock","provider":"pkcs11","io_timeout_secs":5}"#).unwrap();
        assert_eq!(s.provider, Some(ProviderId::Pkcs11));
        assert_eq!(provider_name(ProviderId::Tpm), "tpm");
    }

    #[test]
    fn invalid_settings() {
        for (json, needle) in [
            (r#"{"socket":"parsec.sock"}"#, "absolute"),
            (r#"{"provider":"hsm"}"#, "mbed-crypto"),
            (r#"{"io_timeout_secs":0}"#, "io_timeout_secs"),
            (r#"{"application_name":""}"#, "application_name"),
            (r#"{"sockets":"/x"}"#, "sockets"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
