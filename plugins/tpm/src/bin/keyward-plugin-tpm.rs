//! `keyward-plugin-tpm`: the TPM 2.0 backend as a plugin process. keywardd starts it; see
//! docs/tpm.md and docs/plugins.md.

fn main() -> std::process::ExitCode {
    keyward_plugin_api::plugin::run(keyward_plugin_tpm::TpmBackend::new)
}
