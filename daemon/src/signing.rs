//! [`SigningCore`]: authorise, audit, sign and verify, for any front-end.
//!
//! The gRPC `Sign` handler ([`crate::grpc::signer`]) is a thin adapter over
//! [`SigningCore::sign`]; the ssh-agent socket ([`crate::ssh_agent`]) is another, with the
//! same policies, rate limits and audit records (its event is `ssh`, see [`Via`]). A request reaches the core with an authenticated
//! [`Caller`] (the caller layer's); the core then:
//!
//! 0. checks the request's sizes against their bounds ([`check_bounds`]) before anything else
//!    reads it: the key id, the purpose, the digest, the message (its key's cap, [`Limits`]);
//! 1. resolves the key ([`crate::keys::Registry`]);
//! 2. turns the request into a [`SignOp`] for that key: the algorithm (the key's default when
//!    none is named) must fit the key, the input must be a digest of the hash's length (RSA,
//!    ECDSA) or a message (Ed25519) — the one place the daemon checks a signing input;
//! 3. applies the key's policies (caller rules, algorithms, purpose, token buckets);
//! 4. records the attempt ([`Audited`]), has the backend sign, verifies the signature against
//!    the key's public key (a bad one is withheld), records the outcome;
//! 5. converts an ECDSA signature to the encoding the caller asked for.

use std::sync::Arc;
use std::time::Instant;

use keyward_plugin_api::encoding::{ecdsa_der_to_raw, ecdsa_raw_to_der};
use keyward_plugin_api::{
    BackendError, EcdsaFormat, KeySpec, SignInput, SignOp, SignatureAlgorithm,
};

use crate::audit::{Auditor, Record};
use crate::audited::{Audited, refusal_result};
use crate::auth::Caller;
use crate::error::AgentError;
use crate::keys::{Registry, ResolvedKey};
use crate::limits::{self, Limits, check_len};
use crate::policy::{Applied, ExeHashCache, Policies, ProcessInfo, SignAttempt, inspect_process};
use crate::shown::{quoted, shown};

/// Longest `purpose` accepted, in bytes.
pub const MAX_PURPOSE_LEN: usize = limits::MAX_PURPOSE_BYTES;

/// The purposes only the ssh-agent socket sets (`ssh:auth`, `ssh:sig:<namespace>`,
/// `ssh:other`, from the data it signs); a gRPC request may not claim them, so a policy's
/// `purpose` pattern can trust them.
pub const SSH_PURPOSE_PREFIX: &str = "ssh:";

/// The front-end a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via<'a> {
    /// The gRPC API (`keyward.v1.Signer/Sign`): audit event `sign`.
    Grpc,
    /// The ssh-agent socket: audit event `ssh`.
    SshAgent {
        /// The SHA-256 fingerprint of the server host key the connection was bound to
        /// (`session-bind@openssh.com`), for a login.
        host_key: Option<&'a str>,
    },
}

impl Via<'_> {
    /// The audit event of a signature requested this way.
    pub fn event(self) -> &'static str {
        match self {
            Via::Grpc => "sign",
            Via::SshAgent { .. } => "ssh",
        }
    }
}

/// A signature request as a front-end received it, not yet checked against the key.
#[derive(Clone, Copy, Debug)]
pub struct SignRequest<'a> {
    /// The key id as the caller spelled it.
    pub key_id: &'a str,
    /// The algorithm; `None`: the key's default.
    pub algorithm: Option<SignatureAlgorithm>,
    /// A digest (RSA, ECDSA) or the message (Ed25519), as the caller said.
    pub input: SignInput<'a>,
    /// The ECDSA encoding the caller wants (others are not converted).
    pub format: EcdsaFormat,
    /// What the signature is for, free text, audited.
    pub purpose: &'a str,
    /// The front-end that received it.
    pub via: Via<'a>,
}

/// A signature, verified, in the encoding asked for.
#[derive(Debug)]
pub struct Signed {
    /// The key that signed (the version that signed, after a rotation).
    pub key: Arc<ResolvedKey>,
    /// The signature.
    pub signature: Vec<u8>,
    /// The algorithm it was made with.
    pub algorithm: SignatureAlgorithm,
    /// Its ECDSA encoding (DER for RSA and Ed25519).
    pub format: EcdsaFormat,
    /// The key version that signed (empty for backends without versions).
    pub key_version: String,
}

/// Turns a request into the operation a key of `spec` can sign with `allowed` (the default
/// first: `spec.algorithms()`, or fewer when the backend restricts the key, see
/// `KeyDescription::allowed_algorithms`): the algorithm (the key's default when `algorithm` is
/// `None`) must fit the key and be allowed, the input must fit the algorithm, the purpose must
/// be short. The error is the reason, without the key.
pub fn operation<'a>(
    spec: KeySpec,
    allowed: &[SignatureAlgorithm],
    algorithm: Option<SignatureAlgorithm>,
    input: SignInput<'a>,
    purpose: &str,
) -> Result<SignOp<'a>, String> {
    if purpose.len() > MAX_PURPOSE_LEN {
        return Err(format!(
            "the purpose is {} bytes long; keep it under {MAX_PURPOSE_LEN}",
            purpose.len()
        ));
    }
    let names =
        |list: &[SignatureAlgorithm]| list.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ");
    let default = allowed
        .first()
        .copied()
        .unwrap_or_else(|| spec.default_algorithm());
    let algorithm = algorithm.unwrap_or(default);
    if !spec.supports(algorithm) {
        return Err(format!(
            "a {spec} key cannot sign with {algorithm}; use one of: {}",
            names(if allowed.is_empty() {
                spec.algorithms()
            } else {
                allowed
            })
        ));
    }
    if !allowed.is_empty() && !allowed.contains(&algorithm) {
        return Err(format!(
            "this {spec} key signs only with {} (its backend's policy for the key); ask for one of those",
            names(allowed)
        ));
    }
    SignOp::new(algorithm, input).map_err(|e| e.to_string())
}

/// Checks the sizes of what a caller sent before anything else reads it: the key id, the
/// purpose, a digest (at most a SHA-512), a message (at most its key's cap,
/// [`Limits::message_cap`]). The error names the key (cut and escaped) and says what to do.
pub fn check_bounds(limits: &Limits, request: &SignRequest<'_>) -> Result<(), AgentError> {
    check_len("key id", request.key_id, limits::MAX_KEY_ID_BYTES).map_err(|m| {
        AgentError::InvalidArgument(format!("{m}; no key id is longer than 257 bytes"))
    })?;
    let key = quoted(request.key_id);
    check_len("purpose", request.purpose, limits::MAX_PURPOSE_BYTES)
        .map_err(|m| AgentError::InvalidArgument(format!("key {key}: {m}")))?;
    match request.input {
        SignInput::Digest(digest) if digest.len() > limits::MAX_DIGEST_BYTES => {
            Err(AgentError::InvalidArgument(format!(
                "key {key}: the digest is {} bytes long; no digest is longer than {} bytes (SHA-512); send the digest, not the data",
                digest.len(),
                limits::MAX_DIGEST_BYTES
            )))
        }
        SignInput::Message(message) if message.len() > limits.message_cap(request.key_id) => {
            Err(AgentError::InvalidArgument(format!(
                "key {key}: the message is {} bytes long and this key signs messages of at most {} bytes; raise max_message_bytes on the key's [[key]] table (or in [limits]) to sign longer ones",
                message.len(),
                limits.message_cap(request.key_id)
            )))
        }
        _ => Ok(()),
    }
}

/// Authorises, audits, signs and verifies: see the module documentation.
#[derive(Debug, Clone)]
pub struct SigningCore {
    registry: Arc<Registry>,
    policies: Arc<Policies>,
    exe_hashes: Arc<ExeHashCache>,
    limits: Arc<Limits>,
    audit: Auditor,
}

impl SigningCore {
    /// A core over `registry`, deciding with `policies`, recording in `audit`.
    pub fn new(registry: Arc<Registry>, policies: Arc<Policies>, audit: Auditor) -> Self {
        SigningCore {
            registry,
            policies,
            exe_hashes: Arc::default(),
            limits: Arc::default(),
            audit,
        }
    }

    /// The same core with `limits` (the config's `[limits]`; the defaults otherwise).
    pub fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.exe_hashes = Arc::new(ExeHashCache::with_max_bytes(limits.max_executable_bytes));
        self.limits = limits;
        self
    }

    /// The registry it signs with.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The audit log it records in.
    pub fn auditor(&self) -> &Auditor {
        &self.audit
    }

    /// Signs `request` for `caller` (already authenticated), with every check, record and
    /// verification of the module documentation.
    pub async fn sign(
        &self,
        caller: &Caller,
        request: SignRequest<'_>,
    ) -> Result<Signed, AgentError> {
        let started = Instant::now();
        if let Err(refused) = check_bounds(&self.limits, &request) {
            let refused = self
                .refuse_via(
                    caller,
                    request.via,
                    request.key_id,
                    request.purpose,
                    refused,
                )
                .await;
            return Err(refused);
        }
        let mut audited = Audited::new(&self.audit, request.via.event(), caller);
        audited.record.key = request.key_id.to_string();
        audited.record.purpose = request.purpose.to_string();
        if let Via::SshAgent {
            host_key: Some(host_key),
        } = request.via
        {
            audited.record.ssh_host_key = host_key.to_string();
        }
        if audited.enabled() {
            audited.record.digest = input_digest(request.input);
        }
        let pid = caller.local().and_then(|c| c.pid);
        let (key, op) = match self.decide(caller, &request, &mut audited.record).await {
            Ok(decided) => decided,
            Err(refused) => {
                let result = refusal_result(&refused);
                tracing::warn!(key = %shown(request.key_id), caller = %caller, pid = ?pid, "sign {result}: {refused}");
                return Err(audited.refuse(refused).await);
            }
        };
        let work = self.sign_verified(&key, op, request.format);
        let result = audited
            .run(work, |signed, record| {
                record.key_version = signed.key_version.clone();
            })
            .await;
        match result {
            Ok(signed) => {
                // DEBUG, not INFO: the audit log is the record of every signature, and at the
                // default level this line cost more CPU (formatting) than the signature itself.
                // The macro checks the level before it evaluates or formats any field.
                tracing::debug!(
                    key = %key.id,
                    backend = %key.backend_name,
                    algorithm = %signed.algorithm,
                    caller = %caller,
                    pid = ?pid,
                    purpose = %shown(request.purpose),
                    key_version = %signed.key_version,
                    micros = started.elapsed().as_micros() as u64,
                    "signed"
                );
                Ok(signed)
            }
            Err(e) => {
                if let AgentError::Backend {
                    source: BackendError::NotFound(_),
                    ..
                } = e
                {
                    self.registry.evict(&key.id);
                }
                tracing::warn!(key = %key.id, caller = %caller, pid = ?pid, "sign failed: {e}");
                Err(e)
            }
        }
    }

    /// Records a sign request refused before it reached the key (too large, or one the
    /// front-end could not even parse: an unknown algorithm number, no input) and returns the
    /// refusal. The key id is recorded and logged cut to its bound.
    pub async fn refuse(&self, caller: &Caller, key_id: &str, error: AgentError) -> AgentError {
        self.refuse_via(caller, Via::Grpc, key_id, "", error).await
    }

    /// Like [`SigningCore::refuse`], for a request that came `via` a front-end with a
    /// `purpose` already known.
    pub async fn refuse_via(
        &self,
        caller: &Caller,
        via: Via<'_>,
        key_id: &str,
        purpose: &str,
        error: AgentError,
    ) -> AgentError {
        let mut audited = Audited::new(&self.audit, via.event(), caller);
        audited.record.key = crate::shown::bounded(key_id).into_owned();
        audited.record.purpose = crate::shown::bounded(purpose).into_owned();
        tracing::warn!(key = %shown(key_id), caller = %caller, "sign {}: {error}", refusal_result(&error));
        audited.refuse(error).await
    }

    /// Everything between an authenticated caller and the backend: the key, the operation and
    /// the policies. Fills in what `record` learns on the way.
    async fn decide<'r>(
        &self,
        caller: &Caller,
        request: &SignRequest<'r>,
        record: &mut Record,
    ) -> Result<(Arc<ResolvedKey>, SignOp<'r>), AgentError> {
        reserved_purpose(request.via, request.purpose)
            .map_err(|m| AgentError::InvalidArgument(format!("key {:?}: {m}", request.key_id)))?;
        let key = self.registry.resolve(request.key_id).await?;
        record.key = key.id.to_string();
        record.backend = key.backend_name.clone();
        record.key_version = key.description.version.clone().unwrap_or_default();
        let op = operation(
            key.spec(),
            key.description.allowed_algorithms(),
            request.algorithm,
            request.input,
            request.purpose,
        )
        .map_err(|m| {
            AgentError::InvalidArgument(format!("key {}: {m}", quoted(key.id.as_str())))
        })?;
        record.algorithm = op.algorithm().name().to_string();
        let applied = self.applied_policies(&key).await?;
        // The caller's uid, gid or certificate first: a caller those rules refuse costs no
        // /proc read and no hash of its executable.
        self.policies
            .check_identity(&applied, caller, key.id.as_str())?;
        let process = self.inspect(caller, &applied).await;
        let attempt = SignAttempt {
            key_id: key.id.as_str(),
            caller,
            process: &process,
            algorithm: op.algorithm(),
            purpose: request.purpose,
        };
        self.policies.check(&applied, &attempt)?;
        Ok((key, op))
    }

    /// The policies that apply to `key`: its own; else those of keys with a policy on the same
    /// backend that have the same public key (the same key under another id); else the
    /// default policy. Empty when none applies.
    async fn applied_policies(&self, key: &ResolvedKey) -> Result<Vec<Applied>, AgentError> {
        if let Some(own) = self.policies.explicit(key.id.as_str()) {
            return Ok(vec![own]);
        }
        let mut applied = Vec::new();
        for (owner, backend) in self.policies.explicit_owners() {
            if backend != key.backend_name {
                continue;
            }
            let other = match self.registry.resolve(owner).await {
                Ok(other) => other,
                // A key that does not exist cannot be this one.
                Err(
                    AgentError::KeyNotFound { .. }
                    | AgentError::Backend {
                        source: BackendError::NotFound(_),
                        ..
                    },
                ) => continue,
                Err(e) => {
                    return Err(AgentError::PermissionDenied(format!(
                        "key {:?}: cannot tell whether it is key {owner:?}, which has a policy, under another id ({e}); use key {owner:?} or retry when it is available",
                        key.id.as_str()
                    )));
                }
            };
            if other.description.public_key_der == key.description.public_key_der {
                applied.extend(self.policies.explicit(owner));
            }
        }
        if applied.is_empty() {
            applied.extend(self.policies.default_for(key.id.as_str()));
        }
        Ok(applied)
    }

    /// The caller's executable (and its hash) when a policy asks for it.
    async fn inspect(&self, caller: &Caller, applied: &[Applied]) -> ProcessInfo {
        let Some(local) = caller.local() else {
            return ProcessInfo::default();
        };
        if !applied.iter().any(|a| a.rules.names_executables()) {
            return ProcessInfo::default();
        }
        let hash = applied.iter().any(|a| a.rules.pins_executables());
        inspect_process(local.pid, hash, &self.exe_hashes).await
    }

    /// Has the backend sign `op`, verifies the signature and encodes it as asked.
    async fn sign_verified(
        &self,
        key: &Arc<ResolvedKey>,
        op: SignOp<'_>,
        wanted: EcdsaFormat,
    ) -> Result<Signed, AgentError> {
        let algorithm = op.algorithm();
        let signature = key
            .backend
            .sign(&key.description.reference, op)
            .await
            .map_err(|source| AgentError::Backend {
                key_id: key.id.to_string(),
                backend: key.backend_name.clone(),
                source,
            })?;
        // A backend with key versions (Vault, Azure) may sign with a version made since the key
        // was cached (a rotation): read the key again and check the signature against the
        // public key of the version that signed, which is also what the reply then describes.
        let mut key = Arc::clone(key);
        if signature.key_version.is_some() && signature.key_version != key.description.version {
            self.registry.evict(&key.id);
            let fresh = self.registry.resolve(key.id.as_str()).await?;
            tracing::info!(
                key = %key.id,
                from = ?key.description.version,
                to = ?fresh.description.version,
                "the backend signed with a new key version; re-read the key"
            );
            key = fresh;
        }
        key.verifier
            .verify(op, &signature.bytes, signature.ecdsa_format)
            .map_err(|source| AgentError::BadSignature {
                key_id: key.id.to_string(),
                backend: key.backend_name.clone(),
                source,
            })?;
        let converted = |e| AgentError::Internal(format!("key {:?}: {e}", key.id.as_str()));
        let bytes = match (algorithm.is_ecdsa(), signature.ecdsa_format, wanted) {
            (true, EcdsaFormat::Der, EcdsaFormat::Raw) => {
                ecdsa_der_to_raw(&signature.bytes, key.spec().ecdsa_field_len().unwrap_or(0))
                    .map_err(converted)?
            }
            (true, EcdsaFormat::Raw, EcdsaFormat::Der) => {
                ecdsa_raw_to_der(&signature.bytes).map_err(converted)?
            }
            _ => signature.bytes,
        };
        let format = if algorithm.is_ecdsa() {
            wanted
        } else {
            EcdsaFormat::Der
        };
        let key_version = signature
            .key_version
            .or_else(|| key.description.version.clone())
            .unwrap_or_default();
        Ok(Signed {
            key,
            signature: bytes,
            algorithm,
            format,
            key_version,
        })
    }
}

/// Refuses a purpose of the ssh-agent socket's (`ssh:...`) on a request from another
/// front-end.
pub fn reserved_purpose(via: Via<'_>, purpose: &str) -> Result<(), String> {
    match via {
        Via::Grpc if purpose.starts_with(SSH_PURPOSE_PREFIX) => Err(format!(
            "purposes starting with {SSH_PURPOSE_PREFIX:?} are set by keywardd's ssh-agent socket from the data it signs; choose another purpose"
        )),
        _ => Ok(()),
    }
}

/// The hex digest a sign request carries; for a message (Ed25519), its SHA-256.
fn input_digest(input: SignInput<'_>) -> String {
    match input {
        SignInput::Digest(digest) => hex::encode(digest),
        SignInput::Message(message) => hex::encode(<sha2::Sha256 as sha2::Digest>::digest(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operation_is_checked_against_the_key_once() {
        let d32 = [5u8; 32];
        // No algorithm: the key's default.
        let op = operation(
            KeySpec::EcP256,
            KeySpec::EcP256.algorithms(),
            None,
            SignInput::Digest(&d32),
            "",
        )
        .unwrap();
        assert_eq!(op.algorithm(), SignatureAlgorithm::EcdsaSha256);
        let op = operation(
            KeySpec::Ed25519,
            KeySpec::Ed25519.algorithms(),
            None,
            SignInput::Message(b"m"),
            "",
        )
        .unwrap();
        assert_eq!(op, SignOp::ed25519(b"m"));
        // An algorithm the key cannot use names the ones it can.
        let err = operation(
            KeySpec::EcP256,
            KeySpec::EcP256.algorithms(),
            Some(SignatureAlgorithm::RsaPssSha256),
            SignInput::Digest(&d32),
            "",
        )
        .unwrap_err();
        assert!(
            err.contains("a ec-p256 key cannot sign with rsa-pss-sha256; use one of: ecdsa-sha256"),
            "{err}"
        );
        // The input must fit the algorithm.
        let err = operation(
            KeySpec::Rsa3072,
            KeySpec::Rsa3072.algorithms(),
            None,
            SignInput::Digest(&d32),
            "",
        )
        .unwrap_err();
        assert!(
            err.contains("needs a 48-byte sha384 digest, got 32"),
            "{err}"
        );
        // The purpose is bounded.
        let long = "p".repeat(MAX_PURPOSE_LEN + 1);
        let err = operation(
            KeySpec::EcP256,
            KeySpec::EcP256.algorithms(),
            None,
            SignInput::Digest(&d32),
            &long,
        )
        .unwrap_err();
        assert!(err.contains("keep it under 256"), "{err}");
        // A key its backend restricts (a Parsec key's policy): its first algorithm is the
        // default, the others of the spec are refused with the ones it allows.
        let only = [SignatureAlgorithm::RsaPkcs1Sha256];
        let op = operation(KeySpec::Rsa2048, &only, None, SignInput::Digest(&d32), "").unwrap();
        assert_eq!(op.algorithm(), SignatureAlgorithm::RsaPkcs1Sha256);
        let err = operation(
            KeySpec::Rsa2048,
            &only,
            Some(SignatureAlgorithm::RsaPssSha256),
            SignInput::Digest(&d32),
            "",
        )
        .unwrap_err();
        assert!(err.contains("signs only with rsa-pkcs1-sha256"), "{err}");
    }

    #[test]
    fn only_the_ssh_agent_socket_sets_ssh_purposes() {
        let ssh = Via::SshAgent { host_key: None };
        assert!(reserved_purpose(ssh, "ssh:sig:git").is_ok());
        assert!(reserved_purpose(Via::Grpc, "release").is_ok());
        assert!(reserved_purpose(Via::Grpc, "sshfoo").is_ok());
        let err = reserved_purpose(Via::Grpc, "ssh:sig:git").unwrap_err();
        assert!(err.contains("set by keywardd's ssh-agent socket"), "{err}");
        assert_eq!((Via::Grpc.event(), ssh.event()), ("sign", "ssh"));
    }

    #[test]
    fn a_message_digest_is_audited_not_the_message() {
        assert_eq!(input_digest(SignInput::Digest(&[0xab, 0x01])), "ab01");
        assert_eq!(
            input_digest(SignInput::Message(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
