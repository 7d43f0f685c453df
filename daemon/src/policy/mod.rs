//! Per-key policy: who may sign with a key, with which algorithms, for which purposes, how often.
//!
//! A `[[key]]` may carry a `[key.policy]` table; `[default_policy]` (top level) applies to every
//! key that has none, including keys created later with `keyward keys generate` and keys a
//! backend lists. A key with a policy is deny-by-default: a caller is served only when every rule
//! the policy sets holds:
//!
//! - local callers (the Unix socket): at least one of `uids`, `gids`, `executables` must be set,
//!   and each one that is set must match (`gid` is the primary gid from SO_PEERCRED; an
//!   executable is the target of `/proc/<pid>/exe`, with an optional SHA-256 of that file);
//! - remote callers (mutual TLS): one of the certificate's identities must be in
//!   `mtls_identities`; a key with no policy at all is never available to remote callers;
//! - `algorithms`, `purpose` (a regular expression matched against the whole purpose),
//!   `rate_limit` (the key's token bucket) and `caller_rate_limit` (one bucket per uid or per
//!   mTLS identity).
//!
//! A policy belongs to the key material, not only to the id: a key without a policy of its own
//! whose public key is that of a key with a policy (the same key file named twice, or
//! `<backend>/<name>`) gets that policy too (see [`crate::signer`]). `GetPublicKey` and
//! `ListKeys` are not restricted by policies: public keys are public.

mod process;
mod rules;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_plugin_api::SignatureAlgorithm;

use crate::auth::Caller;
use crate::config::Config;
use crate::error::AgentError;
use crate::ratelimit::{Exceeded, Limiter};

pub use process::{ExeHashCache, ProcessInfo, canonical_executables, inspect_process};
pub use rules::{Executable, PolicyRules, Purpose};

/// One policy applied to a request: the rules and the id whose policy it is.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The key id whose policy this is (the bucket owner; the key itself for the default).
    pub owner: String,
    /// Whether this is `[default_policy]`.
    pub is_default: bool,
    /// The rules.
    pub rules: Arc<PolicyRules>,
}

impl Applied {
    fn name(&self, key_id: &str) -> String {
        if self.is_default {
            format!("policy of key {key_id:?} (default_policy)")
        } else if self.owner == key_id {
            format!("policy of key {key_id:?}")
        } else {
            format!(
                "policy of key {:?} (the same key as {key_id:?})",
                self.owner
            )
        }
    }
}

/// Everything the policies decide on.
#[derive(Debug)]
pub struct SignAttempt<'a> {
    /// The key id asked for.
    pub key_id: &'a str,
    /// Who asks.
    pub caller: &'a Caller,
    /// The caller's executable, for local callers when a rule needs it.
    pub process: &'a ProcessInfo,
    /// The algorithm the signature would use.
    pub algorithm: SignatureAlgorithm,
    /// The request's purpose.
    pub purpose: &'a str,
}

/// The policies of a running daemon and their token buckets.
#[derive(Debug, Default)]
pub struct Policies {
    /// key id -> (its backend, its policy): the policies that govern signing.
    keys: HashMap<String, (String, Arc<PolicyRules>)>,
    default: Option<Arc<PolicyRules>>,
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
    /// key id -> (its backend, whether its policy says `protected = true`), for every key
    /// with a policy of its own (also one that only protects).
    protection: HashMap<String, (String, bool)>,
    /// `[default_policy] protected = true`.
    default_protected: bool,
}

impl Policies {
    /// The policies of the config's keys and its default policy, with executable paths
    /// resolved as `/proc/<pid>/exe` shows them.
    pub fn from_config(config: &Config) -> Self {
        let mut keys = HashMap::new();
        let mut protection = HashMap::new();
        for key in &config.keys {
            if let Some(rules) = &key.policy {
                protection.insert(key.id.clone(), (key.backend.clone(), rules.protected));
                if rules.protection_only() {
                    continue;
                }
                let mut rules = rules.clone();
                canonical_executables(&mut rules, &key.id);
                keys.insert(key.id.clone(), (key.backend.clone(), Arc::new(rules)));
            }
        }
        let default_protected = config
            .default_policy
            .as_ref()
            .is_some_and(|rules| rules.protected);
        let default = config
            .default_policy
            .clone()
            .filter(|rules| !rules.protection_only())
            .map(|mut rules| {
                canonical_executables(&mut rules, "default_policy");
                Arc::new(rules)
            });
        Policies {
            keys,
            default,
            limiters: Mutex::default(),
            protection,
            default_protected,
        }
    }

    /// Whether the policy of `key_id` itself protects it from deletion: `Some(true)` or
    /// `Some(false)` when the key has a policy of its own, `None` when it has none.
    pub fn own_protection(&self, key_id: &str) -> Option<bool> {
        self.protection.get(key_id).map(|(_, protected)| *protected)
    }

    /// The ids whose own policy says `protected = true`, with their backends.
    pub fn protected_owners(&self) -> impl Iterator<Item = (&str, &str)> {
        self.protection
            .iter()
            .filter(|(_, (_, protected))| *protected)
            .map(|(id, (backend, _))| (id.as_str(), backend.as_str()))
    }

    /// Whether `[default_policy]` says `protected = true`.
    pub fn default_protected(&self) -> bool {
        self.default_protected
    }

    /// The ids that have a policy of their own, with their backends.
    pub fn explicit_owners(&self) -> impl Iterator<Item = (&str, &str)> {
        self.keys
            .iter()
            .map(|(id, (backend, _))| (id.as_str(), backend.as_str()))
    }

    /// The key's own policy, if it has one.
    pub fn explicit(&self, key_id: &str) -> Option<Applied> {
        self.keys.get(key_id).map(|(_, rules)| Applied {
            owner: key_id.to_string(),
            is_default: false,
            rules: rules.clone(),
        })
    }

    /// `[default_policy]` applied to `key_id`.
    pub fn default_for(&self, key_id: &str) -> Option<Applied> {
        self.default.as_ref().map(|rules| Applied {
            owner: key_id.to_string(),
            is_default: true,
            rules: rules.clone(),
        })
    }

    /// The rules about who the caller is (uids, gids, mTLS identities, whether local or remote
    /// callers are allowed at all), checked before anything is learnt about the caller's
    /// process: [`Policies::check`] checks them again with the rest.
    pub fn check_identity(
        &self,
        applied: &[Applied],
        caller: &Caller,
        key_id: &str,
    ) -> Result<(), AgentError> {
        for policy in applied {
            check_caller(&policy.rules, caller).map_err(|why| {
                AgentError::PermissionDenied(format!("{}: {why}", policy.name(key_id)))
            })?;
        }
        Ok(())
    }

    /// Checks a sign request against the policies that apply to its key (`applied`, empty
    /// when the key has none). A denial is `PERMISSION_DENIED` naming the rule; an exceeded
    /// rate is `RESOURCE_EXHAUSTED` with the time to wait.
    pub fn check(&self, applied: &[Applied], attempt: &SignAttempt<'_>) -> Result<(), AgentError> {
        if applied.is_empty() {
            return match attempt.caller {
                Caller::Local(_) => Ok(()),
                Caller::Remote(_) => Err(AgentError::PermissionDenied(format!(
                    "key {:?} has no policy, so it is not available to remote (mTLS) callers; give it a [key.policy] with mtls_identities",
                    attempt.key_id
                ))),
            };
        }
        for policy in applied {
            check_rules(&policy.rules, attempt).map_err(|why| {
                AgentError::PermissionDenied(format!("{}: {why}", policy.name(attempt.key_id)))
            })?;
        }
        let now = Instant::now();
        for policy in applied {
            let rules = &policy.rules;
            if rules.rate_limit.is_none() && rules.caller_rate_limit.is_none() {
                continue;
            }
            let limiter = self
                .limiters
                .lock()
                .expect("limiters lock")
                .entry(policy.owner.clone())
                .or_insert_with(|| {
                    Arc::new(Limiter::new(rules.rate_limit, rules.caller_rate_limit))
                })
                .clone();
            if let Err(exceeded) = limiter.admit(&attempt.caller.bucket_key(), now) {
                let (message, retry_after) = match exceeded {
                    Exceeded::Key { rate, retry_after } => (
                        format!("the key's rate_limit ({rate}) is exceeded"),
                        retry_after,
                    ),
                    Exceeded::Caller { rate, retry_after } => (
                        format!("{} exceeded its caller_rate_limit ({rate})", attempt.caller),
                        retry_after,
                    ),
                };
                let retry_after = retry_after.max(Duration::from_millis(1));
                return Err(AgentError::RateLimited {
                    message: format!(
                        "{}: {message}; retry in {} ms",
                        policy.name(attempt.key_id),
                        retry_after.as_millis().max(1)
                    ),
                    retry_after,
                });
            }
        }
        Ok(())
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().map(T::to_string).collect();
    format!("[{}]", shown.join(", "))
}

fn check_rules(rules: &PolicyRules, attempt: &SignAttempt<'_>) -> Result<(), String> {
    check_caller(rules, attempt.caller)?;
    if let (Caller::Local(_), Some(allowed)) = (attempt.caller, &rules.executables) {
        check_executable(allowed, attempt.process)?;
    }
    if let Some(algorithms) = &rules.algorithms
        && !algorithms.contains(&attempt.algorithm)
    {
        return Err(format!(
            "algorithm {} is not in algorithms {}",
            attempt.algorithm,
            list(algorithms)
        ));
    }
    if let Some(purpose) = &rules.purpose
        && !purpose.regex.is_match(attempt.purpose)
    {
        return Err(format!(
            "purpose {} does not match the pattern {:?}",
            crate::shown::quoted(attempt.purpose),
            purpose.pattern
        ));
    }
    Ok(())
}

/// The rules about who calls: everything but executables, algorithms and purpose.
fn check_caller(rules: &PolicyRules, caller: &Caller) -> Result<(), String> {
    match caller {
        Caller::Local(local) => {
            if !rules.names_local_callers() {
                return Err(
                    "local callers are not allowed (the policy names no uids, gids or executables)"
                        .into(),
                );
            }
            if let Some(uids) = &rules.uids
                && !uids.contains(&local.uid)
            {
                return Err(format!("uid {} is not in uids {}", local.uid, list(uids)));
            }
            if let Some(gids) = &rules.gids
                && !gids.contains(&local.gid)
            {
                return Err(format!("gid {} is not in gids {}", local.gid, list(gids)));
            }
        }
        Caller::Remote(remote) => {
            let Some(allowed) = &rules.mtls_identities else {
                return Err(
                    "remote (mTLS) callers are not allowed (the policy has no mtls_identities)"
                        .into(),
                );
            };
            if !remote.identities.iter().any(|id| allowed.contains(id)) {
                let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
                return Err(format!(
                    "mTLS identity {} is not in mtls_identities [{}]",
                    remote.describe(),
                    quoted.join(", ")
                ));
            }
        }
    }
    Ok(())
}

fn check_executable(allowed: &[Executable], process: &ProcessInfo) -> Result<(), String> {
    let paths = || list(&allowed.iter().map(|e| e.path.display()).collect::<Vec<_>>());
    let exe = match &process.exe {
        Some(Ok(exe)) => exe,
        Some(Err(why)) => {
            return Err(format!(
                "the caller's executable is unknown ({why}) and the policy allows only executables {}",
                paths()
            ));
        }
        None => {
            return Err(format!(
                "the caller's executable is unknown and the policy allows only executables {}",
                paths()
            ));
        }
    };
    let matched: Vec<&Executable> = allowed.iter().filter(|e| e.path == *exe).collect();
    if matched.is_empty() {
        return Err(format!(
            "executable {} is not in executables {}",
            exe.display(),
            paths()
        ));
    }
    if matched.iter().any(|rule| rule.sha256.is_none()) {
        return Ok(());
    }
    match &process.sha256 {
        Some(Ok(got)) if matched.iter().any(|rule| rule.sha256 == Some(*got)) => Ok(()),
        Some(Ok(got)) => Err(format!(
            "executable {} has sha256 {}, which is not the one executables pins",
            exe.display(),
            hex::encode(got)
        )),
        Some(Err(why)) => Err(format!(
            "executable {} cannot be hashed: {why}",
            exe.display()
        )),
        None => Err(format!("executable {} was not hashed", exe.display())),
    }
}

#[cfg(test)]
mod tests;
