//! `keyward-plugin-parsec`: the Parsec backend as a plugin process. keywardd starts it; see
//! docs/parsec.md and docs/plugins.md.

fn main() -> std::process::ExitCode {
    keyward_plugin_api::plugin::run(keyward_plugin_parsec::ParsecBackend::new)
}
