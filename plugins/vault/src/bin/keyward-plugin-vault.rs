//! `keyward-plugin-vault`: the vault backend as a plugin process (`isolation = "process"`).
//! keywardd starts it; see docs/plugins.md and docs/vault.md.

fn main() -> std::process::ExitCode {
    keyward_plugin_api::plugin::run(keyward_plugin_vault::VaultBackend::new)
}
