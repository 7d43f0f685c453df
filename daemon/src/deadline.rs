//! [`Deadline`]: a backend in the daemon whose every call runs under its `timeout`, as plugin
//! calls do ([`crate::plugin_host`]), so that no client waits past a backend's deadline whatever
//! the backend does. An overrun answers `DEADLINE_EXCEEDED`; work a backend moved to the
//! blocking pool finishes there, its result dropped.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use keyward_plugin_api::{
    Backend, BackendError, Deletion, Health, KeyDescription, KeySpec, Secret, SignOp, Signature,
};

/// A backend whose calls have a deadline.
#[derive(Debug)]
pub struct Deadline {
    name: String,
    timeout: Duration,
    inner: std::sync::Arc<dyn Backend>,
}

impl Deadline {
    /// `inner`, the backend instance `name`, with `timeout` per call.
    pub fn new(name: &str, timeout: Duration, inner: std::sync::Arc<dyn Backend>) -> Self {
        Deadline {
            name: name.to_string(),
            timeout,
            inner,
        }
    }

    async fn run<T>(
        &self,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(BackendError::Timeout(format!(
                    "backend {:?} did not answer within {:.1}s (raise `timeout` on the backend if it is slow)",
                    self.name,
                    self.timeout.as_secs_f64()
                )))
            })
    }
}

#[async_trait]
impl Backend for Deadline {
    fn backend_type(&self) -> &str {
        self.inner.backend_type()
    }

    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
        self.run(self.inner.list_keys()).await
    }

    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
        self.run(self.inner.describe_key(reference)).await
    }

    async fn canonical_reference(&self, reference: &str) -> Result<Option<String>, BackendError> {
        self.run(self.inner.canonical_reference(reference)).await
    }

    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
        self.run(self.inner.sign(reference, op)).await
    }

    async fn generate_key(
        &self,
        name: &str,
        spec: KeySpec,
    ) -> Result<KeyDescription, BackendError> {
        self.run(self.inner.generate_key(name, spec)).await
    }

    async fn generate_key_with(
        &self,
        name: &str,
        spec: KeySpec,
        options: &BTreeMap<String, String>,
    ) -> Result<KeyDescription, BackendError> {
        self.run(self.inner.generate_key_with(name, spec, options))
            .await
    }

    async fn unlock(&self, secret: Secret, ttl: Option<Duration>) -> Result<(), BackendError> {
        self.run(self.inner.unlock(secret, ttl)).await
    }

    async fn delete_key(&self, reference: &str) -> Result<Deletion, BackendError> {
        self.run(self.inner.delete_key(reference)).await
    }

    async fn health(&self) -> Result<Health, BackendError> {
        self.run(self.inner.health()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Stuck;

    #[async_trait]
    impl Backend for Stuck {
        fn backend_type(&self) -> &str {
            "stuck"
        }
        async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
            std::future::pending().await
        }
        async fn describe_key(&self, _: &str) -> Result<KeyDescription, BackendError> {
            std::future::pending().await
        }
        async fn sign(&self, _: &str, _: SignOp<'_>) -> Result<Signature, BackendError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_call_that_overruns_its_deadline_is_a_timeout() {
        let backend = Deadline::new(
            "slow",
            Duration::from_millis(20),
            std::sync::Arc::new(Stuck),
        );
        let err = backend.list_keys().await.unwrap_err();
        assert!(
            matches!(&err, BackendError::Timeout(m) if m.contains("backend \"slow\" did not answer")),
            "{err:?}"
        );
        // The optional calls keep their defaults.
        assert!(matches!(
            backend.generate_key("k", KeySpec::EcP256).await,
            Err(BackendError::Unsupported(_))
        ));
    }
}
