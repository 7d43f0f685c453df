//! `keyward-plugin-pgp`: the pgp backend as a plugin process (`isolation = "process"`).
//! keywardd starts it; see docs/pgp.md and docs/plugins.md.

fn main() -> std::process::ExitCode {
    keyward_plugin_api::plugin::run(keyward_plugin_pgp::PgpBackend::new)
}
