//! The way to the Parsec service: a `parsec_client::BasicClient` made on first use (it asks the
//! service for its authenticators and providers), made again after the service went away.
//!
//! Parsec answers one request per connection, so the client holds no connection between calls:
//! a restarted service is reached again by the next call. The client is only rebuilt (the
//! authenticator and provider asked again) after a call could not reach the service.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parsec_client::BasicClient;
use parsec_client::core::interface::requests::ProviderId;
use parsec_client::core::ipc_handler::{Connect, ReadWrite};
use parsec_client::error::{ClientErrorKind, Error, Result};

use crate::settings::{ParsecSettings, provider_name};

/// Connects to the service's socket for each request. parsec-client's own handler checks that
/// the socket exists when it is made, which would make a plugin started before the service
/// unusable; this one simply connects (and fails, UNAVAILABLE) each time until it is there.
#[derive(Debug, Clone)]
struct Socket {
    path: PathBuf,
    timeout: Option<Duration>,
}

impl Connect for Socket {
    fn connect(&self) -> Result<Box<dyn ReadWrite>> {
        let stream = UnixStream::connect(&self.path).map_err(ClientErrorKind::Ipc)?;
        stream
            .set_read_timeout(self.timeout)
            .map_err(ClientErrorKind::Ipc)?;
        stream
            .set_write_timeout(self.timeout)
            .map_err(ClientErrorKind::Ipc)?;
        Ok(Box::new(Stream(stream)))
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }
}

struct Stream(UnixStream);

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The Parsec service a backend talks to.
#[derive(Debug)]
pub(crate) struct Service {
    settings: ParsecSettings,
    client: Mutex<Option<Arc<BasicClient>>>,
}

/// Whether `error` means the service could not be reached (or answered garbage): the client is
/// made again on the next call.
pub(crate) fn is_unreachable(error: &Error) -> bool {
    matches!(
        error,
        Error::Client(
            ClientErrorKind::Ipc(_)
                | ClientErrorKind::InvalidSocketAddress
                | ClientErrorKind::InvalidServiceResponseType
                | ClientErrorKind::Interface(_)
        )
    )
}

impl Service {
    /// A service reached through `settings` (nothing is contacted yet).
    pub fn new(settings: ParsecSettings) -> Self {
        Service {
            settings,
            client: Mutex::new(None),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &std::path::Path {
        &self.settings.socket
    }

    fn make_client(&self) -> std::result::Result<BasicClient, (Error, String)> {
        let mut client = BasicClient::default();
        client.set_ipc_handler(Box::new(Socket {
            path: self.settings.socket.clone(),
            timeout: Some(self.settings.io_timeout),
        }));
        client
            .set_default_auth(self.settings.application_name.clone())
            .map_err(|e| {
                let what = match &e {
                    Error::Client(ClientErrorKind::MissingParam) => {
                        "the service uses the Direct authenticator: set application_name".into()
                    }
                    Error::Client(ClientErrorKind::NoAuthenticator) => {
                        "the service offers no authenticator this client supports (UnixPeerCredentials or Direct)".into()
                    }
                    _ => "asking the service for its authenticators".to_string(),
                };
                (e, what)
            })?;
        match self.settings.provider {
            None => client
                .set_default_provider()
                .map_err(|e| (e, "asking the service for its providers".into()))?,
            Some(wanted) => {
                let providers = client
                    .list_providers()
                    .map_err(|e| (e, "asking the service for its providers".into()))?;
                if !providers.iter().any(|p| p.id == wanted) {
                    let offered: Vec<&str> = providers
                        .iter()
                        .filter(|p| p.id != ProviderId::Core)
                        .map(|p| provider_name(p.id))
                        .collect();
                    return Err((
                        Error::Client(ClientErrorKind::NoProvider),
                        format!(
                            "provider = {:?}, but the service offers only: {}",
                            provider_name(wanted),
                            offered.join(", ")
                        ),
                    ));
                }
                client.set_implicit_provider(wanted);
            }
        }
        tracing::info!(
            socket = %self.settings.socket.display(),
            provider = provider_name(client.implicit_provider()),
            auth = ?client.auth_data().auth_type(),
            "connected to the Parsec service"
        );
        Ok(client)
    }

    fn client(&self) -> std::result::Result<Arc<BasicClient>, (Error, String)> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        let client = Arc::new(self.make_client()?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs `call` with the client (blocking: call from a blocking thread). On failure, the
    /// error and what keyward was doing when it is the set-up that failed.
    pub fn call<T>(
        &self,
        call: impl FnOnce(&BasicClient) -> Result<T>,
    ) -> std::result::Result<T, (Error, Option<String>)> {
        let client = self.client().map_err(|(e, what)| {
            if is_unreachable(&e) {
                self.forget();
            }
            (e, Some(what))
        })?;
        call(&client).map_err(|e| {
            if is_unreachable(&e) {
                self.forget();
            }
            (e, None)
        })
    }

    /// The provider the keys live in (after a successful call).
    pub fn provider(&self) -> Option<ProviderId> {
        let slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map(|c| c.implicit_provider())
    }

    fn forget(&self) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
