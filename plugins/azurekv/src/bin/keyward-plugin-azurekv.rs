//! `keyward-plugin-azurekv`: the azurekv backend as a plugin process. keywardd starts it; see
//! docs/plugins.md and docs/azurekv.md.

fn main() -> std::process::ExitCode {
    // The credential chain reads AZURE_* (service principal, workload identity, the Azure CLI's
    // configuration) and the managed-identity endpoint of App Service and Arc
    // (IDENTITY_ENDPOINT, IDENTITY_HEADER): keywardd passes them from its environment.
    keyward_plugin_api::plugin::Plugin::new(keyward_plugin_azurekv::AzureKvBackend::new)
        .pass_env(&["AZURE_*", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"])
        .run()
}
