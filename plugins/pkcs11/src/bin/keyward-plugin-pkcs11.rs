//! `keyward-plugin-pkcs11`: the PKCS#11 backend as a plugin process (`isolation = "process"`,
//! the default for `type = "pkcs11"`). keywardd starts it; see docs/plugins.md and
//! docs/pkcs11.md.

fn main() -> std::process::ExitCode {
    keyward_plugin_api::plugin::run(keyward_plugin_pkcs11::Pkcs11Backend::new)
}
