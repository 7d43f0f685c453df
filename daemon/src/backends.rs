//! Making backend instances from `[[backend]]` tables. Each backend type is behind a cargo
//! feature of this crate.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyward_plugin_api::Backend;

use crate::config::{BackendConfig, ConfigError};

/// The backend types this build of keywardd knows.
pub fn known_types() -> Vec<&'static str> {
    [
        #[cfg(feature = "local")]
        "local",
    ]
    .into_iter()
    .collect()
}

/// Makes one backend from its config.
pub fn build(config: &BackendConfig) -> Result<Arc<dyn Backend>, ConfigError> {
    match config.backend_type.as_str() {
        #[cfg(feature = "local")]
        "local" => {
            let settings: keyward_plugin_local::LocalSettings = config.settings()?;
            let backend =
                keyward_plugin_local::LocalBackend::new(settings).map_err(|e| config.error(e))?;
            Ok(Arc::new(backend))
        }
        other => Err(config.error(format!(
            "unknown backend type {other:?}; this keywardd supports: {}",
            known_types().join(", ")
        ))),
    }
}

/// Checks a backend's settings without making it (no directory is created, no secret read).
pub fn check(config: &BackendConfig) -> Result<(), ConfigError> {
    match config.backend_type.as_str() {
        #[cfg(feature = "local")]
        "local" => config
            .settings::<keyward_plugin_local::LocalSettings>()
            .map(drop),
        other => Err(config.error(format!(
            "unknown backend type {other:?}; this keywardd supports: {}",
            known_types().join(", ")
        ))),
    }
}

/// Makes every backend of the config, by instance name.
pub fn build_all(
    configs: &[BackendConfig],
) -> Result<BTreeMap<String, Arc<dyn Backend>>, ConfigError> {
    configs
        .iter()
        .map(|config| Ok((config.name.clone(), build(config)?)))
        .collect()
}
