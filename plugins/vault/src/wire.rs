//! What carries a Vault secret over HTTP, in memory that is wiped when dropped: login bodies
//! built straight from borrowed secrets ([`login_body`], [`Body::secret`]), the
//! `X-Vault-Token` header ([`token_header`]), every answer's body ([`Answer`]) and the tokens
//! parsed from it ([`secret_field`], [`AuthAnswer`]). Copies made inside the HTTP and TLS stacks
//! are beyond reach (SECURITY.md says so).

use bytes::Bytes;
use keyward_plugin_api::{BackendError, Secret};
use reqwest::header::HeaderValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::http::CallError;

/// A request body: JSON, kept as bytes that every try of a request shares.
#[derive(Clone)]
pub struct Body(pub(crate) Bytes);

/// A body may hold a secret: only its size is shown.
impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.0.len())
    }
}

impl Body {
    /// The bytes sent.
    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A body that holds no secret.
    pub fn json(value: &Value) -> Body {
        Body(Bytes::from(value.to_string()))
    }

    /// A body that holds a secret (a login's secret id or JWT), built by the caller in a
    /// [`Zeroizing`] buffer: the bytes are handed to the HTTP stack without a copy and wiped
    /// when its last reference is dropped.
    pub fn secret(bytes: Zeroizing<Vec<u8>>) -> Body {
        Body(wiped_bytes(bytes))
    }
}

/// `secret` as [`Bytes`] without a copy: the owner is wiped ([`Zeroize`]) when the last clone
/// of the bytes is dropped, wherever the HTTP stack keeps them until then.
fn wiped_bytes<T>(secret: Zeroizing<T>) -> Bytes
where
    T: AsRef<[u8]> + Zeroize + Send + 'static,
{
    /// `Zeroizing<T>` derefs to `T` but is not itself `AsRef<[u8]>`.
    struct Owner<T: Zeroize>(Zeroizing<T>);
    impl<T: AsRef<[u8]> + Zeroize> AsRef<[u8]> for Owner<T> {
        fn as_ref(&self) -> &[u8] {
            (*self.0).as_ref()
        }
    }
    Bytes::from_owner(Owner(secret))
}

/// The `X-Vault-Token` header for `token`, marked sensitive, over a copy of the token that is
/// wiped when the header is dropped (a `HeaderValue` made from a slice would be a plain copy).
pub fn token_header(token: &Secret) -> Result<HeaderValue, CallError> {
    let wiped = wiped_bytes(Zeroizing::new(token.expose().to_vec()));
    let mut value = HeaderValue::from_maybe_shared(wiped).map_err(|_| {
        CallError::Decode(
            "the Vault token holds characters that cannot be sent in a header".to_string(),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// An answer's body, in memory that is wiped when it is dropped (it may hold a token).
#[derive(Debug)]
pub struct Answer(pub(crate) Zeroizing<Vec<u8>>);

impl Answer {
    /// Moves a received body into wiped memory, and wipes the received buffer itself when
    /// nothing else shares it (the HTTP stack's own buffers are beyond reach).
    pub fn take(bytes: Bytes) -> Answer {
        let kept = Zeroizing::new(bytes.to_vec());
        if let Ok(mut unique) = bytes.try_into_mut() {
            unique.zeroize();
        }
        Answer(kept)
    }

    /// The JSON of an answer that holds no secret (`Value::Null` for an empty body).
    pub fn json(&self) -> Result<Value, CallError> {
        if self.0.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.0).map_err(|e| {
            CallError::Decode(format!("vault answered with a body that is not JSON: {e}"))
        })
    }

    /// The answer as `T`, whose secret fields are [`Secret`]s (see [`secret_field`]).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, CallError> {
        serde_json::from_slice(&self.0).map_err(|e| {
            CallError::Decode(format!("vault answered with a body that is not JSON: {e}"))
        })
    }
}

/// For `#[serde(deserialize_with)]`: a JSON string read straight into a [`Secret`] (the string's
/// one allocation is the secret's, wiped on drop).
pub fn secret_field<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Secret>, D::Error> {
    let text: Option<String> = Deserialize::deserialize(deserializer)?;
    Ok(text
        .filter(|t| !t.is_empty())
        .map(|t| Secret::new(t.into_bytes())))
}

/// A login: its JSON built straight into wiped memory from borrowed secrets (no JSON value or
/// string holds a copy).
pub fn login_body(login: &impl Serialize) -> Result<Body, BackendError> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(512));
    serde_json::to_writer(&mut *bytes, login)
        .map_err(|e| BackendError::Internal(format!("cannot encode the login: {e}")))?;
    Ok(Body::secret(bytes))
}

/// An AppRole login (`auth/<mount>/login`).
#[derive(Serialize)]
pub struct AppRoleLogin<'a> {
    /// The role id (not secret).
    pub role_id: &'a str,
    /// The secret id.
    pub secret_id: &'a str,
}

/// A Kubernetes or JWT login (`auth/<mount>/login`).
#[derive(Serialize)]
pub struct JwtLogin<'a> {
    /// The role.
    pub role: &'a str,
    /// The service account token or the job's JWT.
    pub jwt: &'a str,
}

impl std::fmt::Debug for AppRoleLogin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppRoleLogin {{ role_id: {:?}, .. }}", self.role_id)
    }
}

impl std::fmt::Debug for JwtLogin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtLogin {{ role: {:?}, .. }}", self.role)
    }
}

/// The answer of a login or a renewal.
#[derive(Debug, Deserialize)]
pub struct AuthAnswer {
    /// Its `auth` section.
    pub auth: Option<AuthSection>,
}

/// `auth` of a login or renewal answer.
#[derive(Debug, Default, Deserialize)]
pub struct AuthSection {
    /// The token (read straight into a [`Secret`]).
    #[serde(default, deserialize_with = "secret_field")]
    pub client_token: Option<Secret>,
    /// Its TTL, in seconds.
    pub lease_duration: Option<u64>,
    /// Whether it can be renewed.
    pub renewable: Option<bool>,
}

/// The answer of a token look-up; its `data.id`, the token itself, is skipped unread into any
/// string.
#[derive(Debug, Deserialize)]
pub struct LookupAnswer {
    /// Its `data` section.
    pub data: Option<LookupData>,
}

/// `data` of a token look-up.
#[derive(Debug, Default, Deserialize)]
pub struct LookupData {
    /// The TTL left, in seconds.
    pub ttl: Option<u64>,
    /// Whether it can be renewed.
    pub renewable: Option<bool>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A secret that says when it was wiped.
    struct Probe(Vec<u8>, Arc<AtomicBool>);

    impl AsRef<[u8]> for Probe {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Zeroize for Probe {
        fn zeroize(&mut self) {
            self.0.zeroize();
            self.1.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn secret_bytes_are_wiped_when_the_last_copy_goes() {
        let wiped = Arc::new(AtomicBool::new(false));
        let bytes = wiped_bytes(Zeroizing::new(Probe(b"s.token".to_vec(), wiped.clone())));
        // What reqwest keeps of a body for one try: a clone of the same bytes.
        let sent = bytes.clone();
        assert_eq!(&sent[..], b"s.token");
        drop(bytes);
        assert!(!wiped.load(Ordering::SeqCst), "still in use");
        drop(sent);
        assert!(wiped.load(Ordering::SeqCst), "wiped with the last copy");
    }

    #[test]
    fn the_token_header_is_sensitive() {
        let header = token_header(&Secret::new(b"s.abc".to_vec())).unwrap();
        assert!(header.is_sensitive());
        assert_eq!(header.as_bytes(), b"s.abc");
        assert!(token_header(&Secret::new(b"bad\nvalue".to_vec())).is_err());
    }

    #[test]
    fn tokens_are_parsed_into_secrets() {
        #[derive(serde::Deserialize)]
        struct Auth {
            #[serde(default, deserialize_with = "secret_field")]
            client_token: Option<Secret>,
        }
        let answer = Answer::take(Bytes::from_static(br#"{"client_token":"s.xyz","x":1}"#));
        let auth: Auth = answer.parse().unwrap();
        let token = auth.client_token.expect("a token");
        assert_eq!(token.expose(), b"s.xyz");
        assert_eq!(format!("{token:?}"), "Secret(<redacted>)");
        let empty: Auth = Answer::take(Bytes::from_static(br#"{"client_token":""}"#))
            .parse()
            .unwrap();
        assert!(empty.client_token.is_none());
        assert_eq!(
            Answer::take(Bytes::from_static(b" ")).json().unwrap(),
            Value::Null
        );
    }

    #[test]
    fn login_bodies_are_json_built_from_borrowed_secrets() {
        let body = login_body(&AppRoleLogin {
            role_id: "role-1",
            secret_id: "se\"cret",
        })
        .unwrap();
        assert_eq!(
            body.bytes(),
            br#"{"role_id":"role-1","secret_id":"se\"cret"}"#
        );
        assert_eq!(format!("{body:?}"), "Body(43 bytes)");
        let answer: LookupAnswer =
            serde_json::from_slice(br#"{"data":{"id":"s.token","ttl":60,"renewable":true}}"#)
                .unwrap();
        let data = answer.data.unwrap();
        assert_eq!((data.ttl, data.renewable), (Some(60), Some(true)));
    }
}
