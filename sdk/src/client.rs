//! The agent client: connect, list keys, get public keys, sign, generate keys.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward_proto::v1::key_admin_client::KeyAdminClient;
use keyward_proto::v1::sign_request::Input;
use keyward_proto::v1::signer_client::SignerClient;
use keyward_proto::v1::{
    AttachCertificateChainRequest, GenerateKeyRequest, GetPublicKeyRequest, KeyInfo, KeySpec,
    ListKeysRequest, SignRequest, SignatureAlgorithm, SignatureFormat,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::trust::{self, ConnectOptions};
use crate::{Error, SOCKET_ENV, default_socket_path, digest};

/// A connection to `keywardd`. Cheap to clone; clones share one HTTP/2 connection, and calls on
/// it may run concurrently.
#[derive(Clone, Debug)]
pub struct Client {
    signer: SignerClient<Channel>,
    admin: KeyAdminClient<Channel>,
    socket: PathBuf,
    /// Each key's default algorithm, learned once: it never changes for a key.
    default_algorithms: Arc<Mutex<HashMap<String, SignatureAlgorithm>>>,
}

/// How long to wait for the socket to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A public key and what comes with it.
#[derive(Clone, Debug)]
pub struct PublicKey {
    /// The key's id, backend, spec and algorithms.
    pub info: KeyInfo,
    /// SubjectPublicKeyInfo, DER.
    pub der: Vec<u8>,
    /// SubjectPublicKeyInfo, PEM.
    pub pem: String,
    /// The backend's key version (empty when the backend has none).
    pub key_version: String,
    /// X.509 certificates, DER, leaf first (empty when none is attached).
    pub certificate_chain: Vec<Vec<u8>>,
    /// A binary OpenPGP certificate, if one is attached.
    pub openpgp_certificate: Option<Vec<u8>>,
}

/// A signature made by the agent. The agent has verified it against the key before returning.
#[derive(Clone, Debug)]
pub struct Signature {
    /// The signature bytes, in `format` for ECDSA.
    pub bytes: Vec<u8>,
    /// The algorithm that was used (the key's default when none was asked for).
    pub algorithm: SignatureAlgorithm,
    /// DER or raw `r || s` (ECDSA only; DER is reported for other algorithms).
    pub format: SignatureFormat,
    /// The key version that signed (empty when the backend has none).
    pub key_version: String,
    /// The key's X.509 chain, DER, leaf first (empty when none is attached).
    pub certificate_chain: Vec<Vec<u8>>,
}

/// How to sign.
#[derive(Clone, Debug, Default)]
pub struct SignOptions {
    /// The algorithm; `None` uses the key's default (P-256 -> ECDSA-SHA256, RSA -> PSS with the
    /// key size's hash, Ed25519 -> Ed25519).
    pub algorithm: Option<SignatureAlgorithm>,
    /// ECDSA encoding: DER (the default) or raw `r || s`.
    pub format: SignatureFormat,
    /// Why this signature is made; recorded in the agent's audit log.
    pub purpose: String,
}

impl Client {
    /// Connects to the agent listening on the Unix socket at `socket`, with the default
    /// [`ConnectOptions`] (see [`Client::connect_with`]).
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Client, Error> {
        Client::connect_with(socket, &ConnectOptions::default()).await
    }

    /// Connects to the agent listening on the Unix socket at `socket`, after checking that it
    /// is the caller's own agent: the socket's directory (symlinks resolved) and the socket
    /// must belong to the caller, to root or to the trusted uid (`options`, else
    /// `KEYWARD_AGENT_UID`), the directory must not be writable by group or others, and the
    /// process listening must run as one of those uids (`SO_PEERCRED`, read before anything
    /// is sent). Otherwise it fails with [`Error::UntrustedAgent`], which says what it found
    /// and how to fix it.
    pub async fn connect_with(
        socket: impl AsRef<Path>,
        options: &ConnectOptions,
    ) -> Result<Client, Error> {
        let socket = socket.as_ref().to_path_buf();
        let owners = options.owners()?;
        let resolved = trust::check_socket(&socket, &owners)?;
        let shown = socket.clone();
        // The URI is required by the API but unused: every connection goes to the socket.
        let channel = Endpoint::from_static("http://keyward.invalid")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let (path, shown) = (resolved.clone(), shown.clone());
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    // Checked on every (re)connection, before HTTP/2 sends its preface.
                    trust::check_peer(&stream, &shown, &owners).map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| {
                untrusted_cause(&e).unwrap_or_else(|| Error::Connect {
                    socket: socket.clone(),
                    reason: connect_reason(&e),
                })
            })?;
        Ok(Client {
            signer: SignerClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            admin: KeyAdminClient::new(channel),
            socket,
            default_algorithms: Arc::default(),
        })
    }

    /// Connects to a `keywardd` mutual-TLS listener at `url` (`https://host:port`), trusting
    /// the server certificates `ca_pem` issues and presenting `client_cert_pem` (with its
    /// chain) and `client_key_pem`. The daemon knows the caller by this certificate; its keys'
    /// policies decide what the caller may sign.
    ///
    /// A refused certificate may only show at the first call: with TLS 1.3 the server checks
    /// the client's certificate after the client considers the handshake done.
    pub async fn connect_tls(
        url: &str,
        ca_pem: &[u8],
        client_cert_pem: &[u8],
        client_key_pem: &[u8],
    ) -> Result<Client, Error> {
        let failed = |reason: String| Error::ConnectRemote {
            url: url.to_string(),
            reason,
        };
        if !url.starts_with("https://") {
            return Err(Error::InvalidInput(format!(
                "{url:?} is not an https:// URL; keywardd accepts TCP connections only with mutual TLS (https://host:port)"
            )));
        }
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(client_cert_pem, client_key_pem));
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| failed(format!("not a valid URL: {e}")))?
            .tls_config(tls)
            .map_err(|e| failed(connect_reason(&e)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| failed(connect_reason(&e)))?;
        Ok(Client {
            signer: SignerClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            admin: KeyAdminClient::new(channel),
            socket: PathBuf::from(url),
            default_algorithms: Arc::default(),
        })
    }

    /// Connects to `$KEYWARD_SOCK`, or to [`default_socket_path`] when it is unset.
    pub async fn connect_default() -> Result<Client, Error> {
        let socket = std::env::var_os(SOCKET_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(default_socket_path, PathBuf::from);
        Client::connect(socket).await
    }

    /// The socket this client talks to (the `https://` URL for [`Client::connect_tls`]).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every key the agent offers to this caller.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, Error> {
        let response = self.signer.clone().list_keys(ListKeysRequest {}).await?;
        Ok(response.into_inner().keys)
    }

    /// The public key of `key_id`, with its certificate chain.
    pub async fn public_key(&self, key_id: &str) -> Result<PublicKey, Error> {
        let response = self
            .signer
            .clone()
            .get_public_key(GetPublicKeyRequest {
                key_id: key_id.to_string(),
            })
            .await?
            .into_inner();
        let info = response.key.ok_or_else(|| Error::Agent {
            code: tonic::Code::Internal,
            message: format!("the agent sent no key description for key {key_id:?}"),
        })?;
        Ok(PublicKey {
            info,
            der: response.public_key_der,
            pem: response.public_key_pem,
            key_version: response.key_version,
            certificate_chain: response.certificate_chain,
            openpgp_certificate: Some(response.openpgp_certificate).filter(|c| !c.is_empty()),
        })
    }

    /// Signs a digest the caller computed with the algorithm's hash (RSA and ECDSA).
    pub async fn sign_digest(
        &self,
        key_id: &str,
        digest: &[u8],
        options: &SignOptions,
    ) -> Result<Signature, Error> {
        self.sign(key_id, Input::Digest(digest.to_vec()), options)
            .await
    }

    /// Signs `message`: for RSA and ECDSA it is hashed here and only the digest is sent; for
    /// Ed25519 the message itself is sent.
    pub async fn sign_message(
        &self,
        key_id: &str,
        message: &[u8],
        options: &SignOptions,
    ) -> Result<Signature, Error> {
        let algorithm = match options.algorithm {
            Some(algorithm) => algorithm,
            None => self.default_algorithm(key_id).await?,
        };
        let input = if algorithm == SignatureAlgorithm::Ed25519 {
            Input::Message(message.to_vec())
        } else {
            Input::Digest(digest(algorithm, message)?)
        };
        let options = SignOptions {
            algorithm: Some(algorithm),
            ..options.clone()
        };
        self.sign(key_id, input, &options).await
    }

    /// The algorithm the agent uses for `key_id` when none is asked for.
    /// The first call asks the agent; later calls for the same key are answered from memory.
    pub async fn default_algorithm(&self, key_id: &str) -> Result<SignatureAlgorithm, Error> {
        if let Some(known) = self.cached_default(key_id) {
            return Ok(known);
        }
        let key = self.public_key(key_id).await?;
        let algorithm = key.info.algorithms().next().ok_or_else(|| Error::Agent {
            code: tonic::Code::Internal,
            message: format!("the agent lists no algorithm for key {key_id:?}"),
        })?;
        self.default_algorithms
            .lock()
            .expect("default algorithm cache")
            .insert(key_id.to_string(), algorithm);
        Ok(algorithm)
    }

    fn cached_default(&self, key_id: &str) -> Option<SignatureAlgorithm> {
        self.default_algorithms
            .lock()
            .expect("default algorithm cache")
            .get(key_id)
            .copied()
    }

    async fn sign(
        &self,
        key_id: &str,
        input: Input,
        options: &SignOptions,
    ) -> Result<Signature, Error> {
        let request = SignRequest {
            key_id: key_id.to_string(),
            algorithm: options.algorithm.unwrap_or(SignatureAlgorithm::Unspecified) as i32,
            input: Some(input),
            format: options.format as i32,
            purpose: options.purpose.clone(),
        };
        let response = self.signer.clone().sign(request).await?.into_inner();
        Ok(Signature {
            algorithm: response.algorithm(),
            format: response.format(),
            bytes: response.signature,
            key_version: response.key_version,
            certificate_chain: response.certificate_chain,
        })
    }

    /// Creates a key pair of `spec` in the backend instance `backend`, known from then on as
    /// `key_id`. The private key is made inside the backend and never leaves it.
    pub async fn generate_key(
        &self,
        backend: &str,
        key_id: &str,
        spec: KeySpec,
    ) -> Result<PublicKey, Error> {
        self.generate_key_with(backend, key_id, spec, &BTreeMap::new())
            .await
    }

    /// [`Client::generate_key`] with backend-specific `options`, e.g. for a `yubikey` backend
    /// `slot` (`9c`), `pin_policy` (`never`, `once`, `always`) and `touch_policy` (`never`,
    /// `always`, `cached`). A backend refuses options it does not take (`INVALID_ARGUMENT`).
    pub async fn generate_key_with(
        &self,
        backend: &str,
        key_id: &str,
        spec: KeySpec,
        options: &BTreeMap<String, String>,
    ) -> Result<PublicKey, Error> {
        let response = self
            .admin
            .clone()
            .generate_key(GenerateKeyRequest {
                backend: backend.to_string(),
                key_id: key_id.to_string(),
                key_spec: spec as i32,
                options: options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .await?
            .into_inner();
        let info = response.key.ok_or_else(|| Error::Agent {
            code: tonic::Code::Internal,
            message: format!("the agent sent no key description for new key {key_id:?}"),
        })?;
        Ok(PublicKey {
            key_version: info.key_version.clone(),
            info,
            der: response.public_key_der,
            pem: response.public_key_pem,
            certificate_chain: Vec::new(),
            openpgp_certificate: None,
        })
    }
}

impl Client {
    /// Gives the backend instance `backend` the PIN it needs to sign (a `yubikey` backend
    /// without `pin_env`/`pin_file`), kept in the agent's memory for `ttl` (`None`: until the
    /// backend restarts). The backend checks it first: a wrong PIN is `PERMISSION_DENIED` with
    /// the retries left. Admins only. The PIN is never logged or recorded.
    pub async fn unlock_backend(
        &self,
        backend: &str,
        pin: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let request = keyward_proto::v1::UnlockBackendRequest {
            backend: backend.to_string(),
            pin: pin.to_vec(),
            ttl_seconds: ttl.map_or(0, |t| t.as_secs().max(1)),
        };
        self.admin.clone().unlock_backend(request).await?;
        Ok(())
    }

    /// Attaches an X.509 certificate chain (a PEM bundle, leaf first, ending with the root) to
    /// `key_id`. The agent checks it (the leaf is for this key, each certificate is issued by
    /// the next, the Notary Project certificate rules, validity), stores it and returns it
    /// from then on with the public key and every signature. Returns the key's description and
    /// the stored chain (DER, leaf first).
    pub async fn attach_certificate_chain(
        &self,
        key_id: &str,
        chain_pem: &str,
    ) -> Result<(KeyInfo, Vec<Vec<u8>>), Error> {
        let response = self
            .admin
            .clone()
            .attach_certificate_chain(AttachCertificateChainRequest {
                key_id: key_id.to_string(),
                certificate_chain_pem: chain_pem.to_string(),
            })
            .await?
            .into_inner();
        let info = response.key.ok_or_else(|| Error::Agent {
            code: tonic::Code::Internal,
            message: format!("the agent sent no key description for key {key_id:?}"),
        })?;
        Ok((info, response.certificate_chain))
    }
}

impl Client {
    /// Attaches an OpenPGP certificate (binary or armored) to `key_id`. The agent checks that
    /// its primary key or a signing subkey is this key and that it is valid now, stores it and
    /// returns it from then on with the public key. Returns the key's description, the stored
    /// certificate (binary) and its fingerprint.
    pub async fn attach_openpgp_certificate(
        &self,
        key_id: &str,
        certificate: &[u8],
    ) -> Result<(KeyInfo, Vec<u8>, String), Error> {
        let response = self
            .admin
            .clone()
            .attach_open_pgp_certificate(keyward_proto::v1::AttachOpenPgpCertificateRequest {
                key_id: key_id.to_string(),
                certificate: certificate.to_vec(),
            })
            .await?
            .into_inner();
        let info = response.key.ok_or_else(|| Error::Agent {
            code: tonic::Code::Internal,
            message: format!("the agent sent no key description for key {key_id:?}"),
        })?;
        Ok((info, response.certificate, response.fingerprint))
    }
}

/// The [`Error::UntrustedAgent`] the connector returned, if that is why connecting failed
/// (an `io::Error` hides its inner error from `source()`, so each level is unwrapped).
fn untrusted_cause(error: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(Error::UntrustedAgent { socket, reason }) = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Error>())
        {
            return Some(Error::UntrustedAgent {
                socket: socket.clone(),
                reason: reason.clone(),
            });
        }
        cause = current.source();
    }
    None
}

/// Why connecting failed, in words: the usual causes get a plain sentence.
fn connect_reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        match io.kind() {
            std::io::ErrorKind::NotFound => {
                return "no socket there (the agent is not running)".into();
            }
            std::io::ErrorKind::ConnectionRefused => {
                return "nothing is listening on the socket (the agent stopped)".into();
            }
            std::io::ErrorKind::PermissionDenied => {
                return "permission denied: the socket belongs to another user".into();
            }
            _ => {}
        }
    }
    let text = cause.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}
