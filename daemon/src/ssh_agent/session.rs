//! One connection to the ssh-agent socket: who is calling, framing, and each request.
//!
//! - `REQUEST_IDENTITIES`: the offered keys, in order, the key id as comment.
//! - `SIGN_REQUEST`: through the signing core ([`crate::signing`]) with the purpose the data
//!   tells ([`super::sign`]); a key that is not offered, a certificate, or an `ssh-rsa`
//!   (SHA-1) request is refused.
//! - `session-bind@openssh.com`: the host key's signature over the session id is checked and
//!   the binding remembered for this connection: a login on it must be for a bound session
//!   (as OpenSSH's agent does), and its audit record names the host key.
//! - `query`: the extensions answered here.
//! - Adding keys (`ssh-add FILE`, `-s`), removing them (`-d`, `-D`, `-e`) and `lock` /
//!   `unlock` (`-x`, `-X`) are refused with a log line: keyward's keys live in its backends
//!   and are chosen by `[ssh_agent] keys`; a locked agent would have to hold a passphrase
//!   for every client of the socket (see docs/ssh.md).
//!
//! The protocol has one failure answer with no text, so every refusal is explained in the
//! daemon's log (and, for signatures, in the audit log).

use futures_util::{SinkExt, StreamExt};
use keyward_plugin_api::{EcdsaFormat, SignInput};
use ssh_agent_lib::proto::extension::{QueryResponse, SessionBind};
use ssh_agent_lib::proto::{Extension, PublicCredential, Response, SignRequest};
use ssh_encoding::{Decode, Encode};
use ssh_key::HashAlg;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::sign::{Intent, classify, encode, plan};
use super::{Current, MAX_MESSAGE_LEN, Offer, keys};
use crate::audit::{CallerRecord, Record, Stage};
use crate::auth::{Caller, LocalCaller};
use crate::error::AgentError;
use crate::signing::{self, Via};

const REQUEST_IDENTITIES: u8 = 11;
const SIGN_REQUEST: u8 = 13;
const ADD_IDENTITY: u8 = 17;
const REMOVE_IDENTITY: u8 = 18;
const REMOVE_ALL_IDENTITIES: u8 = 19;
const ADD_SMARTCARD_KEY: u8 = 20;
const REMOVE_SMARTCARD_KEY: u8 = 21;
const LOCK: u8 = 22;
const UNLOCK: u8 = 23;
const ADD_ID_CONSTRAINED: u8 = 25;
const ADD_SMARTCARD_KEY_CONSTRAINED: u8 = 26;
const EXTENSION: u8 = 27;

/// Session bindings remembered per connection (OpenSSH keeps 128).
const MAX_BINDINGS: usize = 16;

/// The extensions this agent answers (`query`).
const EXTENSIONS: [&str; 2] = ["query", "session-bind@openssh.com"];

/// A connection's state.
#[derive(Debug)]
struct Session {
    caller: Caller,
    /// `session-bind@openssh.com`: (session id, host key fingerprint), oldest first.
    bindings: Vec<(Vec<u8>, String)>,
}

/// Serves one connection until the client closes it, sends something unframeable, is refused,
/// or `stop` turns true between two requests.
pub async fn serve_connection(
    stream: UnixStream,
    current: Current,
    mut stop: watch::Receiver<bool>,
) {
    let caller = match stream.peer_cred() {
        Ok(cred) => Caller::Local(LocalCaller {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid().filter(|pid| *pid > 0),
        }),
        Err(e) => {
            tracing::warn!("ssh-agent: closing a connection without peer credentials: {e}");
            return;
        }
    };
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_MESSAGE_LEN)
        .new_codec();
    let mut framed = Framed::new(stream, codec);
    let mut session = Session {
        caller,
        bindings: Vec::new(),
    };
    loop {
        let frame = tokio::select! {
            frame = framed.next() => frame,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let message = match frame {
            None => return,
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                // Too long (checked before anything is allocated) or a broken connection: the
                // stream cannot be resynchronised, so it is closed.
                tracing::warn!(caller = %session.caller, "ssh-agent: closing the connection: {e} (messages are limited to {MAX_MESSAGE_LEN} bytes)");
                return;
            }
        };
        // Each request on the generation current now: a reload may have changed who is allowed.
        let offer = current.get();
        if let Err(denied) = offer.auth.allow(&session.caller) {
            record_denied(&offer, &session.caller, &denied).await;
            return;
        }
        let response = session.handle(&offer, &message).await;
        let mut encoded = Vec::new();
        if let Err(e) = response.encode(&mut encoded) {
            tracing::error!("ssh-agent: cannot encode an answer: {e}");
            return;
        }
        if framed.send(Bytes::from(encoded)).await.is_err() {
            return;
        }
    }
}

/// Audits a caller the agent does not serve (the connection is then closed).
async fn record_denied(offer: &Offer, caller: &Caller, denied: &AgentError) {
    let audit = offer.core.auditor();
    if audit.enabled() {
        let record = Record {
            event: "ssh",
            result: "denied",
            caller: CallerRecord::inspect(caller),
            error: Some(denied.to_string()),
            ..Record::default()
        };
        let _ = audit.record(record, Stage::Before).await;
    }
}

/// Decodes a whole message body; trailing bytes are an error.
fn decode_all<T: Decode>(mut body: &[u8]) -> Result<T, String>
where
    T::Error: std::fmt::Display,
{
    let value = T::decode(&mut body).map_err(|e| e.to_string())?;
    if !body.is_empty() {
        return Err(format!("{} bytes after the message", body.len()));
    }
    Ok(value)
}

impl Session {
    async fn handle(&mut self, offer: &Offer, message: &[u8]) -> Response {
        let Some((&kind, body)) = message.split_first() else {
            tracing::info!(caller = %self.caller, "ssh-agent: an empty message; answering failure");
            return Response::Failure;
        };
        let refuse = |what: &str, why: &str| {
            tracing::warn!(caller = %self.caller, "ssh-agent: refused {what}: {why}");
            Response::Failure
        };
        // Messages carrying private keys or passphrases are refused without being decoded.
        match kind {
            REQUEST_IDENTITIES => {
                let keys = keys::offered(offer.core.registry(), &offer.keys).await;
                Response::IdentitiesAnswer(keys::identities(&keys))
            }
            SIGN_REQUEST => match decode_all::<SignRequest>(body) {
                Ok(request) => self.sign(offer, request).await,
                Err(e) => refuse("a malformed sign request", &e),
            },
            EXTENSION => match decode_all::<Extension>(body) {
                Ok(extension) => self.extension(extension),
                Err(e) => refuse("a malformed extension request", &e),
            },
            ADD_IDENTITY | ADD_ID_CONSTRAINED => refuse(
                "to add a private key (ssh-add FILE)",
                "keyward never holds keys it was handed; create or import the key in a backend and list its id in [ssh_agent] keys",
            ),
            ADD_SMARTCARD_KEY | ADD_SMARTCARD_KEY_CONSTRAINED => refuse(
                "to load a PKCS#11 provider (ssh-add -s)",
                "keyward loads no library a client names; configure a pkcs11 or yubikey backend and list its keys in [ssh_agent] keys",
            ),
            REMOVE_IDENTITY | REMOVE_ALL_IDENTITIES | REMOVE_SMARTCARD_KEY => refuse(
                "to remove keys (ssh-add -d/-D/-e)",
                "the keys offered are [ssh_agent] keys in keywardd's config; change it and reload (SIGHUP)",
            ),
            LOCK | UNLOCK => refuse(
                "lock/unlock (ssh-add -x/-X)",
                "keywardd's ssh-agent socket cannot be locked; stop offering keys by removing them from [ssh_agent] keys and reloading, or limit them with a policy",
            ),
            other => refuse(
                &format!("message type {other}"),
                "this agent does not know it",
            ),
        }
    }

    async fn sign(&mut self, offer: &Offer, request: SignRequest) -> Response {
        let caller = self.caller.clone();
        let PublicCredential::Key(wanted) = &request.credential else {
            tracing::warn!(caller = %caller, "ssh-agent: refused to sign with a certificate: this agent offers plain keys");
            return Response::Failure;
        };
        let keys = keys::offered(offer.core.registry(), &offer.keys).await;
        let Some(offered) = keys.iter().find(|k| &k.ssh == wanted) else {
            tracing::warn!(caller = %caller, key = %wanted.fingerprint(HashAlg::Sha256), "ssh-agent: refused to sign with a key it does not offer; `ssh-add -L` lists the keys offered ([ssh_agent] keys)");
            return Response::Failure;
        };
        let key = &offered.key;
        let spec = key.spec();
        let refused = |purpose: &str, why: String| {
            let core = offer.core.clone();
            let (caller, id, purpose) = (caller.clone(), key.id.to_string(), purpose.to_string());
            async move {
                let error = AgentError::InvalidArgument(format!("key {id:?}: {why}"));
                core.refuse_via(
                    &caller,
                    Via::SshAgent { host_key: None },
                    &id,
                    &purpose,
                    error,
                )
                .await;
                Response::Failure
            }
        };
        let intent = match classify(&request.data) {
            Ok(intent) => intent,
            Err(why) => return refused("", why).await,
        };
        let purpose = intent.purpose();
        let host_key = match &intent {
            Intent::Login { session_id, .. } if !self.bindings.is_empty() => {
                match self.bindings.iter().find(|(id, _)| id == session_id) {
                    Some((_, host_key)) => Some(host_key.as_str()),
                    None => {
                        let why = "the login is for an SSH session this connection was not bound to (session-bind@openssh.com); refused as OpenSSH's agent does".to_string();
                        return refused(&purpose, why).await;
                    }
                }
            }
            _ => None,
        };
        let plan = match plan(spec, request.flags, &request.data) {
            Ok(plan) => plan,
            Err(why) => return refused(&purpose, why).await,
        };
        let input = match &plan.digest {
            Some(digest) => SignInput::Digest(digest),
            None => SignInput::Message(&request.data),
        };
        let core_request = signing::SignRequest {
            key_id: key.id.as_str(),
            algorithm: Some(plan.algorithm),
            input,
            format: EcdsaFormat::Raw,
            purpose: &purpose,
            via: Via::SshAgent { host_key },
        };
        // The core logs and audits a refusal or failure with its reason.
        let signed = match offer.core.sign(&caller, core_request).await {
            Ok(signed) => signed,
            Err(_) => return Response::Failure,
        };
        match encode(spec, signed.algorithm, signed.signature) {
            Ok(signature) => Response::SignResponse(signature),
            Err(e) => {
                tracing::error!(key = %key.id, "ssh-agent: {e}");
                Response::Failure
            }
        }
    }

    fn extension(&mut self, extension: Extension) -> Response {
        match extension.name.as_str() {
            "query" => match Extension::new_message(QueryResponse {
                extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
            }) {
                Ok(answer) => Response::ExtensionResponse(answer),
                Err(_) => Response::Failure,
            },
            "session-bind@openssh.com" => {
                let bind = match extension.parse_message::<SessionBind>() {
                    Ok(Some(bind)) => bind,
                    _ => {
                        tracing::warn!(caller = %self.caller, "ssh-agent: refused a malformed session-bind");
                        return Response::Failure;
                    }
                };
                if let Err(e) = bind.verify_signature() {
                    tracing::warn!(caller = %self.caller, "ssh-agent: refused a session-bind whose host key signature does not verify: {e}");
                    return Response::Failure;
                }
                if bind.session_id.len() > 64 {
                    tracing::warn!(caller = %self.caller, "ssh-agent: refused a session-bind with a session id over 64 bytes");
                    return Response::Failure;
                }
                if self.bindings.len() == MAX_BINDINGS {
                    self.bindings.remove(0);
                }
                let host_key = bind.host_key.fingerprint(HashAlg::Sha256).to_string();
                tracing::debug!(caller = %self.caller, host_key = %host_key, forwarding = bind.is_forwarding, "ssh-agent: session bound");
                self.bindings.push((bind.session_id, host_key));
                Response::Success
            }
            other => {
                tracing::info!(caller = %self.caller, "ssh-agent: unknown extension {:?}; answering failure", other.escape_debug().to_string());
                Response::Failure
            }
        }
    }
}
