//! Reloading the config on SIGHUP.
//!
//! The gRPC services are wrapped in [`Swappable`]: every request clones the service that is
//! current when it arrives and runs to the end on it, with that generation's registry,
//! backends and policies. A reload builds the next generation completely (backends whose
//! `[[backend]]` table did not change are taken over as they are) and only then swaps it in;
//! a config with an error is refused and the running generation stays. Retired plugin
//! processes are stopped once the requests that started on them have finished.
//!
//! What a reload cannot change without dropping connections or the audit chain (`socket`,
//! `state_dir`, `[audit]`, `[tls]`, `[metrics]`, `log_format`, the `[ssh_agent]` socket, the
//! connection settings of `[limits]`) keeps its running value, with a warning to restart.

use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tonic::server::NamedService;
use tower::Service;

use crate::config::Config;
use crate::ssh_agent::SshAgentConfig;

/// A service whose implementation can be replaced while the server runs. Requests already
/// dispatched keep the implementation they started with.
#[derive(Debug)]
pub struct Swappable<S> {
    current: Arc<RwLock<S>>,
}

impl<S> Clone for Swappable<S> {
    fn clone(&self) -> Self {
        Swappable {
            current: self.current.clone(),
        }
    }
}

impl<S: Clone> Swappable<S> {
    /// Serves `service` until [`Swappable::replace`] is called.
    pub fn new(service: S) -> Self {
        Swappable {
            current: Arc::new(RwLock::new(service)),
        }
    }

    /// Serves `service` from the next request on.
    pub fn replace(&self, service: S) {
        *self.current.write().expect("service lock") = service;
    }
}

impl<S: NamedService> NamedService for Swappable<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, R> Service<R> for Swappable<S>
where
    S: Service<R> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // tonic's generated servers are always ready; readiness is checked per request below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        let mut service = self.current.read().expect("service lock").clone();
        service.call(request)
    }
}

/// Keeps in `new` the running values of what a reload cannot change, and names them.
pub fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    if new.socket != running.socket {
        new.socket = running.socket.clone();
        new.socket_is_default = running.socket_is_default;
        kept.push("socket");
    }
    if new.state_dir != running.state_dir {
        new.state_dir = running.state_dir.clone();
        kept.push("state_dir");
    }
    if new.audit != running.audit {
        new.audit = running.audit.clone();
        kept.push("[audit]");
    }
    if new.tls != running.tls {
        new.tls = running.tls.clone();
        kept.push("[tls]");
    }
    // The ssh-agent socket is made at start: its path (and whether there is one) stays; the
    // keys it offers follow the new config (none when the table was removed).
    match (&running.ssh_agent, &mut new.ssh_agent) {
        (None, None) => {}
        (None, Some(_)) => {
            new.ssh_agent = None;
            kept.push("[ssh_agent]");
        }
        (Some(running), None) => {
            new.ssh_agent = Some(SshAgentConfig {
                keys: Vec::new(),
                ..running.clone()
            });
            kept.push("[ssh_agent] (its socket stays, offering no keys)");
        }
        (Some(running), Some(new)) => {
            if new.socket != running.socket {
                new.socket = running.socket.clone();
                new.socket_is_default = running.socket_is_default;
                kept.push("[ssh_agent] socket");
            }
        }
    }
    if new.metrics != running.metrics {
        new.metrics = running.metrics.clone();
        kept.push("[metrics]");
    }
    if new.log_format != running.log_format {
        new.log_format = running.log_format;
        kept.push("log_format");
    }
    if new.limits.keep_connection_settings(&running.limits) {
        kept.push("the connection settings of [limits]");
    }
    kept
}

/// What a reload changed among the backends, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BackendChanges {
    /// Backends that are new.
    pub added: Vec<String>,
    /// Backends whose table changed (rebuilt).
    pub changed: Vec<String>,
    /// Backends no longer in the config.
    pub removed: Vec<String>,
}

impl BackendChanges {
    /// Compares the backend names of the running config with the new one, given which names
    /// were rebuilt.
    pub fn between(running: &Config, new: &Config, rebuilt: &[String]) -> Self {
        let had = |name: &str| running.backends.iter().any(|b| b.name == name);
        let has = |name: &str| new.backends.iter().any(|b| b.name == name);
        BackendChanges {
            added: rebuilt.iter().filter(|n| !had(n)).cloned().collect(),
            changed: rebuilt.iter().filter(|n| had(n)).cloned().collect(),
            removed: running
                .backends
                .iter()
                .filter(|b| !has(&b.name))
                .map(|b| b.name.clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, Overrides, parse};

    fn config(text: &str) -> Config {
        let text = format!("state_dir = \"/tmp/keyward-reload-test\"\n{text}");
        parse(
            &ConfigSource::text("test.toml", text),
            &Overrides::default(),
        )
        .expect("a valid config")
    }

    const A: &str = "[[backend]]\nname = \"a\"\ntype = \"local\"\npath = \"/tmp/a\"\n";
    const B: &str = "[[backend]]\nname = \"b\"\ntype = \"local\"\npath = \"/tmp/b\"\n";

    #[test]
    fn restart_only_settings_keep_their_running_values() {
        let running = config(&format!("socket = \"/tmp/one.sock\"\n{A}"));
        let mut new = config(&format!(
            "socket = \"/tmp/two.sock\"\n[audit]\npath = \"/tmp/audit.log\"\n{A}"
        ));
        let kept = keep_restart_only(&running, &mut new);
        assert_eq!(kept, ["socket", "[audit]"]);
        assert_eq!(new.socket, running.socket);
        assert_eq!(new.audit, None);

        let mut same = config(&format!(
            "socket = \"/tmp/one.sock\"\n[limits]\nmax_message_bytes = 128\n{B}"
        ));
        assert!(keep_restart_only(&running, &mut same).is_empty());
        assert_eq!(same.limits.max_message_bytes, 128, "message caps do change");

        let mut fewer = config(&format!(
            "socket = \"/tmp/one.sock\"\n[limits]\nmax_connections = 2\n{A}"
        ));
        assert_eq!(
            keep_restart_only(&running, &mut fewer),
            ["the connection settings of [limits]"]
        );
        assert_eq!(fewer.limits.max_connections, running.limits.max_connections);
    }

    #[test]
    fn backend_changes_name_what_was_added_changed_and_removed() {
        let running = config(A);
        let new = config(B);
        let changes = BackendChanges::between(&running, &new, &["b".to_string()]);
        assert_eq!(
            changes,
            BackendChanges {
                added: vec!["b".into()],
                changed: vec![],
                removed: vec!["a".into()],
            }
        );
        let both = config(&format!("{A}{B}"));
        let changes = BackendChanges::between(&both, &both, &["a".to_string()]);
        assert_eq!(changes.changed, ["a"]);
        assert!(changes.added.is_empty() && changes.removed.is_empty());
    }
}
