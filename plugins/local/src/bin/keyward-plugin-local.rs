//! `keyward-plugin-local`: the local backend as a plugin process (`isolation = "process"`).
//! keywardd starts it; see docs/plugins.md.

fn main() -> std::process::ExitCode {
    keyward_plugin_api::plugin::run(keyward_plugin_local::LocalBackend::new)
}
