//! `keyward-plugin-awskms`: the awskms backend as a plugin process (`isolation = "process"`).
//! keywardd starts it; see docs/plugins.md and docs/awskms.md.

fn main() -> std::process::ExitCode {
    keyward_plugin_api::plugin::run(keyward_plugin_awskms::AwsKmsBackend::new)
}
