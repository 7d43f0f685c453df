//! `keyward-plugin-azurekv`: the azurekv backend as a plugin process (`isolation = "process"`).
//! keywardd starts it; see docs/plugins.md and docs/azurekv.md.

fn main() -> std::process::ExitCode {
    keyward_plugin_api::plugin::run(keyward_plugin_azurekv::AzureKvBackend::new)
}
