//! The Vault token: getting one, keeping it alive, and getting a new one when it is refused.
//!
//! - A configured token (`token_env`/`token_file`) is looked up once (`auth/token/lookup-self`)
//!   to learn its TTL; a renewable one is renewed (`auth/token/renew-self`) once two thirds of
//!   its TTL have passed. A refused `token_file` token is read again from the file (a Vault Agent
//!   sink rewrites it).
//! - A login method (AppRole, Kubernetes, JWT) logs in on first use and remembers the lease; it
//!   is renewed the same way, and when renewal fails, is capped by the max TTL, or the token is
//!   refused, the backend logs in again and the request is tried once more.
//!
//! Nothing runs in the background: the check is made before each request. Logins and renewals
//! are serialised by a lock, so a burst of requests after an expiry logs in once.

use std::path::Path;
use std::time::{Duration, Instant};

use keyward_plugin_api::{BackendError, Secret, read_secret};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::http::{CallError, Http, Purpose, Verb};
use crate::settings::{AuthSettings, SecretSource};
use crate::wire::{AppRoleLogin, AuthAnswer, Body, JwtLogin, LookupAnswer, login_body};

/// The auth method, with the secrets it needs that are read once at start.
#[derive(Debug)]
enum Method {
    /// A configured token; `source` is kept to re-read a file.
    Static { source: SecretSource },
    /// AppRole: the secret id is read at start.
    AppRole {
        role_id: String,
        secret_id: Secret,
        mount: String,
    },
    /// Kubernetes or JWT: the JWT file is read at each login (it rotates).
    Jwt {
        kind: &'static str,
        role: String,
        token_file: std::path::PathBuf,
        mount: String,
    },
}

/// How long a token lives, as Vault last said.
#[derive(Clone, Copy, Debug)]
struct Lease {
    /// When Vault gave or renewed it.
    since: Instant,
    /// Its TTL then.
    ttl: Duration,
    /// The TTL of the first lease, to notice a renewal capped by the max TTL.
    first_ttl: Duration,
    /// Whether it can be renewed.
    renewable: bool,
}

impl Lease {
    fn due(&self) -> bool {
        self.renewable && self.since.elapsed() >= self.ttl * 2 / 3
    }
}

/// What is known of the current token's lease.
#[derive(Clone, Copy, Debug)]
enum LeaseState {
    /// A configured token not looked up yet.
    Unknown,
    /// Never expires, or cannot be looked up: never renewed.
    Never,
    /// Expires: renew when due.
    Expires(Lease),
}

#[derive(Debug)]
struct State {
    token: Option<Secret>,
    /// Bumped at every new token, so a refusal of an old one does not discard a newer one.
    generation: u64,
    lease: LeaseState,
}

/// A token to send, and which one it is.
#[derive(Debug)]
pub struct Token {
    /// The token.
    pub secret: Secret,
    /// Its generation, for [`Authenticator::refused`].
    pub generation: u64,
}

/// Hands out a valid token for each request.
#[derive(Debug)]
pub struct Authenticator {
    method: Method,
    state: Mutex<State>,
}

impl Authenticator {
    /// Reads the secrets the method needs now (a missing variable or an open secret file is a
    /// configuration error); talks to no server.
    pub fn new(settings: &AuthSettings) -> Result<Self, BackendError> {
        let mut token = None;
        let method = match settings {
            AuthSettings::Token(source) => {
                token = Some(read_required("token", source)?);
                Method::Static {
                    source: source.clone(),
                }
            }
            AuthSettings::AppRole {
                role_id,
                secret_id,
                mount,
            } => Method::AppRole {
                role_id: role_id.clone(),
                secret_id: read_required("approle_secret_id", secret_id)?,
                mount: mount.clone(),
            },
            AuthSettings::Kubernetes {
                role,
                token_file,
                mount,
            } => Method::Jwt {
                kind: "kubernetes",
                role: role.clone(),
                token_file: token_file.clone(),
                mount: mount.clone(),
            },
            AuthSettings::Jwt {
                role,
                token_file,
                mount,
            } => Method::Jwt {
                kind: "jwt",
                role: role.clone(),
                token_file: token_file.clone(),
                mount: mount.clone(),
            },
        };
        Ok(Authenticator {
            method,
            state: Mutex::new(State {
                token,
                generation: 0,
                lease: LeaseState::Unknown,
            }),
        })
    }

    /// A token to send now: logs in, looks up or renews first when needed.
    pub async fn token(&self, http: &Http) -> Result<Token, BackendError> {
        let mut state = self.state.lock().await;
        match (&state.token, state.lease) {
            (None, _) => self.login(&mut state, http).await?,
            (Some(_), LeaseState::Unknown) => self.look_up(&mut state, http).await?,
            (Some(_), LeaseState::Expires(lease)) if lease.due() => {
                self.renew(&mut state, http, lease).await?
            }
            _ => {}
        }
        let secret = state
            .token
            .clone()
            .ok_or_else(|| BackendError::Internal("no vault token after login".into()))?;
        Ok(Token {
            secret,
            generation: state.generation,
        })
    }

    /// Vault refused the token of `generation` (HTTP 403). Returns whether a new token may do
    /// better: one obtained since, a fresh login, or a changed token file.
    pub async fn refused(&self, generation: u64) -> bool {
        let mut state = self.state.lock().await;
        if state.generation != generation {
            return true;
        }
        match &self.method {
            Method::Static {
                source: SecretSource::Env(_),
            } => false,
            Method::Static {
                source: source @ SecretSource::File(_),
            } => match read_required("token", source) {
                Ok(fresh) if state.token.as_ref().map(Secret::expose) != Some(fresh.expose()) => {
                    tracing::info!("the vault token file changed; using the new token");
                    install(&mut state, fresh, LeaseState::Unknown);
                    true
                }
                _ => false,
            },
            Method::AppRole { .. } | Method::Jwt { .. } => {
                tracing::info!("vault refused the token; logging in again");
                state.token = None;
                true
            }
        }
    }

    async fn login(&self, state: &mut State, http: &Http) -> Result<(), BackendError> {
        let (mount, body, what) = match &self.method {
            Method::Static { source } => {
                let token = read_required("token", source)?;
                install(state, token, LeaseState::Unknown);
                return self.look_up(state, http).await;
            }
            Method::AppRole {
                role_id,
                secret_id,
                mount,
            } => {
                let secret_id = std::str::from_utf8(secret_id.expose()).map_err(|_| {
                    BackendError::InvalidInput("the approle secret id is not UTF-8".into())
                })?;
                let body = login_body(&AppRoleLogin { role_id, secret_id })?;
                (
                    mount,
                    body,
                    format!("log in with approle role id {role_id:?}"),
                )
            }
            Method::Jwt {
                kind,
                role,
                token_file,
                mount,
            } => {
                let jwt = read_jwt(kind, token_file)?;
                let body = login_body(&JwtLogin { role, jwt: &jwt })?;
                (mount, body, format!("log in with {kind} role {role:?}"))
            }
        };
        let path = format!("auth/{mount}/login");
        let answer = http.call_secret(Verb::Post, &path, None, Some(&body)).await;
        drop(body);
        let answer = answer.map_err(|e| login_error(http, e, &path, &what))?;
        let auth = answer
            .parse::<AuthAnswer>()
            .map_err(|e| login_error(http, e, &path, &what))?
            .auth
            .ok_or_else(|| {
                BackendError::Internal(format!("vault answered {path} without an auth section"))
            })?;
        let secret = auth.client_token.ok_or_else(|| {
            BackendError::Internal(format!("vault answered {path} without a token"))
        })?;
        let lease = lease_of(auth.lease_duration, auth.renewable, None);
        tracing::info!(ttl = ?lease_ttl(&lease), "logged in to vault at {} ({path})", http.address());
        install(state, secret, lease);
        Ok(())
    }

    /// Learns a configured token's TTL. A token that may not look itself up is used as it is.
    async fn look_up(&self, state: &mut State, http: &Http) -> Result<(), BackendError> {
        let token = state.token.clone();
        // The answer repeats the token (`data.id`): read into wiped memory, the token skipped.
        let answer = http
            .call_secret(Verb::Get, "auth/token/lookup-self", token.as_ref(), None)
            .await
            .and_then(|answer| answer.parse::<LookupAnswer>());
        state.lease = match answer {
            Ok(answer) => {
                let data = answer.data.unwrap_or_default();
                let lease = lease_of(data.ttl, data.renewable, None);
                tracing::debug!(ttl = ?lease_ttl(&lease), "looked up the vault token");
                lease
            }
            Err(error) if !error.is_refusal() => {
                let purpose = Purpose::new("read", "auth/token/lookup-self", "look up the token");
                return Err(http.error(error, &purpose));
            }
            Err(error) => {
                tracing::warn!(
                    "cannot look up the vault token ({}); it will not be renewed",
                    error.text()
                );
                LeaseState::Never
            }
        };
        Ok(())
    }

    async fn renew(
        &self,
        state: &mut State,
        http: &Http,
        lease: Lease,
    ) -> Result<(), BackendError> {
        let token = state.token.clone();
        let logs_in = !matches!(self.method, Method::Static { .. });
        // One try: a failed renewal is replaced by a login, not retried.
        let answer = http
            .call_once(
                Verb::Post,
                "auth/token/renew-self",
                token.as_ref(),
                Some(&Body::json(&serde_json::json!({}))),
            )
            .await
            .and_then(|answer| answer.parse::<AuthAnswer>());
        match answer {
            Ok(answer) => {
                let auth = answer.auth.unwrap_or_default();
                let renewed = lease_of(auth.lease_duration, auth.renewable, Some(lease.first_ttl));
                tracing::debug!(ttl = ?lease_ttl(&renewed), "renewed the vault token");
                state.lease = renewed;
                let capped = matches!(renewed, LeaseState::Expires(l) if l.ttl < l.first_ttl);
                if capped && logs_in {
                    tracing::info!("the vault token reached its max TTL; logging in again");
                    return self.login(state, http).await;
                }
                Ok(())
            }
            // Down or sealed: the request would fail too; renew next time.
            Err(error) if error.is_unreachable() => {
                let purpose = Purpose::new("update", "auth/token/renew-self", "renew the token");
                Err(http.error(error, &purpose))
            }
            // Refused, expired, or past its max TTL (Vault answers that with a 500).
            Err(error) if logs_in => {
                tracing::info!(
                    "cannot renew the vault token ({}); logging in again",
                    error.text()
                );
                self.login(state, http).await
            }
            Err(error) => {
                tracing::warn!(
                    "cannot renew the vault token ({}); it is used until it expires",
                    error.text()
                );
                state.lease = LeaseState::Never;
                Ok(())
            }
        }
    }
}

fn install(state: &mut State, token: Secret, lease: LeaseState) {
    state.token = Some(token);
    state.generation += 1;
    state.lease = lease;
}

/// A lease from Vault's `lease_duration`/`ttl` (seconds) and `renewable`.
fn lease_of(ttl: Option<u64>, renewable: Option<bool>, first: Option<Duration>) -> LeaseState {
    let seconds = ttl.unwrap_or(0);
    if seconds == 0 {
        return LeaseState::Never;
    }
    let ttl = Duration::from_secs(seconds);
    LeaseState::Expires(Lease {
        since: Instant::now(),
        ttl,
        first_ttl: first.unwrap_or(ttl),
        renewable: renewable.unwrap_or(false),
    })
}

fn lease_ttl(lease: &LeaseState) -> Option<Duration> {
    match lease {
        LeaseState::Expires(lease) => Some(lease.ttl),
        _ => None,
    }
}

fn read_required(what: &str, source: &SecretSource) -> Result<Secret, BackendError> {
    let (env, file) = source.parts();
    read_secret(what, env, file)?
        .ok_or_else(|| BackendError::InvalidInput(format!("set {what}_env or {what}_file")))
}

/// A Kubernetes service account token or a CI job's JWT. These files are not secret-mode files
/// (Kubernetes projects them readable), so their mode is not checked; they are read at every
/// login because they rotate.
fn read_jwt(kind: &str, path: &Path) -> Result<Zeroizing<String>, BackendError> {
    let text = std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| BackendError::Unavailable {
            message: format!("cannot read the {kind} token file {}: {e}", path.display()),
            retry_after: None,
        })?;
    let jwt = text.trim();
    if jwt.is_empty() {
        return Err(BackendError::unavailable(format!(
            "the {kind} token file {} is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(jwt.to_string()))
}

fn login_error(http: &Http, error: CallError, path: &str, what: &str) -> BackendError {
    match error {
        // Vault answers a bad role or credential with 400 (AppRole) or 403: either way the
        // credentials are wrong, never the request.
        CallError::Status {
            status: 400 | 403, ..
        } => BackendError::PermissionDenied(format!(
            "vault at {} refused to {what} at {path} ({}); check the role and its credentials",
            http.address(),
            error.text()
        )),
        error => {
            let purpose = Purpose::new("update", path, what.to_string());
            http.error(error, &purpose)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_due_after_two_thirds() {
        let lease = Lease {
            since: Instant::now() - Duration::from_secs(7),
            ttl: Duration::from_secs(10),
            first_ttl: Duration::from_secs(10),
            renewable: true,
        };
        assert!(lease.due());
        let fresh = Lease {
            since: Instant::now() - Duration::from_secs(6),
            ..lease
        };
        assert!(!fresh.due());
        let fixed = Lease {
            renewable: false,
            ..lease
        };
        assert!(!fixed.due());
        assert!(matches!(
            lease_of(Some(0), Some(true), None),
            LeaseState::Never
        ));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let auth = Authenticator {
            method: Method::AppRole {
                role_id: "role-1".into(),
                secret_id: Secret::new(b"very-secret-id".to_vec()),
                mount: "approle".into(),
            },
            state: Mutex::new(State {
                token: Some(Secret::new(b"s.very-secret-token".to_vec())),
                generation: 1,
                lease: LeaseState::Never,
            }),
        };
        let text = format!("{auth:?}");
        assert!(text.contains("role-1"), "{text}");
        assert!(!text.contains("very-secret"), "{text}");
    }
}
