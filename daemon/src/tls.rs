//! The remote listener: TCP with mutual TLS only (rustls through tonic), and the identity of
//! a remote caller taken from its client certificate.
//!
//! ```toml
//! [tls]
//! listen = "127.0.0.1:7443"
//! cert = "server.pem"        # the server's certificate chain (PEM, leaf first)
//! key = "server.key"         # its private key (PEM; refused when group or others can read it)
//! client_ca = "clients.pem"  # the CA(s) that issue client certificates; a client must present one
//! ```
//!
//! There is no plaintext TCP mode. A client without a certificate from `client_ca`, with an
//! expired one, or speaking plain HTTP/2 does not get past the handshake. A caller's identities
//! are its certificate's `spiffe://` URI SANs (the SPIFFE ID, first), `CN=<common name>`, its
//! other URI SANs as `URI:<uri>` and `DNS:<name>` SANs; policies name them in
//! `mtls_identities`. Every kind has its own prefix, so a URI SAN can never pass for a `CN=` or
//! `DNS:` identity (a URI SAN is any IA5 string: `CN=build-bot` is a valid one). Remote
//! callers have no uid: a key is available to them only through a policy that lists one of
//! their identities, and `KeyAdmin` is never available to them.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tonic::codegen::http::Extensions;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use zeroize::Zeroizing;

use crate::auth::RemoteCaller;
use crate::error::AgentError;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[tls]`, validated (files are read when the daemon starts, not by `--check-config`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA certificates that issue client certificates (PEM).
    pub client_ca: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    listen: String,
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
}

impl TlsConfig {
    /// Parses `[tls]`; relative paths are relative to `dir` (the config file's directory).
    pub fn parse(table: toml::Table, dir: Option<&Path>) -> Result<TlsConfig, String> {
        let raw = RawTls::deserialize(toml::Value::Table(table))
            .map_err(|e| e.message().trim_end().to_string())?;
        let listen = raw.listen.parse::<SocketAddr>().map_err(|_| {
            format!(
                "listen = {:?} is not an IP address and port (\"127.0.0.1:7443\", \"[::1]:7443\")",
                raw.listen
            )
        })?;
        let resolve = |path: PathBuf| match dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        };
        Ok(TlsConfig {
            listen,
            cert: resolve(raw.cert),
            key: resolve(raw.key),
            client_ca: resolve(raw.client_ca),
        })
    }

    /// Reads the files into a server configuration that requires client certificates.
    pub fn server_config(&self) -> Result<ServerTlsConfig, String> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| format!("[tls] {what} {}: cannot read it: {e}", path.display()))
        };
        let cert = read("cert", &self.cert)?;
        let client_ca = read("client_ca", &self.client_ca)?;
        let key_meta = std::fs::metadata(&self.key)
            .map_err(|e| format!("[tls] key {}: cannot read it: {e}", self.key.display()))?;
        if key_meta.mode() & 0o077 != 0 {
            return Err(format!(
                "[tls] key {} is accessible by group or others (mode {:04o}); run `chmod 600 {}`",
                self.key.display(),
                key_meta.mode() & 0o777,
                self.key.display()
            ));
        }
        let key = Zeroizing::new(read("key", &self.key)?);
        for (what, path, pem) in [
            ("cert", &self.cert, &cert),
            ("client_ca", &self.client_ca, &client_ca),
        ] {
            if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "[tls] {what} {} holds no PEM certificate",
                    path.display()
                ));
            }
        }
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key.as_slice()))
            .client_ca_root(Certificate::from_pem(client_ca))
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT))
    }
}

/// The remote caller of a request that came over the TLS listener (`None` for other
/// transports): its certificate's identities, or an error when it presented none.
pub fn remote_caller(extensions: &Extensions) -> Option<Result<RemoteCaller, AgentError>> {
    let info = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let address = info.get_ref().remote_addr();
    let leaf = info.peer_certs().and_then(|certs| certs.first().cloned());
    Some(match leaf {
        Some(leaf) => Ok(RemoteCaller {
            identities: identities(&leaf),
            address,
        }),
        None => Err(AgentError::PermissionDenied(
            "the TLS connection carries no client certificate; connect with one issued by the daemon's client_ca".into(),
        )),
    })
}

/// A certificate's identities: `spiffe://` URI SANs, `CN=<cn>`, other URI SANs as
/// `URI:<uri>`, `DNS:<name>` SANs; empty for a certificate that cannot be parsed.
pub fn identities(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let (mut spiffe, mut uris, mut dns) = (Vec::new(), Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                    spiffe.push(uri.to_string())
                }
                GeneralName::URI(uri) => uris.push(format!("URI:{uri}")),
                GeneralName::DNSName(name) => dns.push(format!("DNS:{name}")),
                _ => {}
            }
        }
    }
    let cns = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(|cn| format!("CN={cn}"));
    spiffe
        .into_iter()
        .chain(cns)
        .chain(uris)
        .chain(dns)
        .collect()
}
