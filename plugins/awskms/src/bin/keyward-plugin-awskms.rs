//! `keyward-plugin-awskms`: the awskms backend as a plugin process. keywardd starts it; see
//! docs/plugins.md and docs/awskms.md.

fn main() -> std::process::ExitCode {
    // The AWS SDK's credential chain and settings come from AWS_* variables (keys, profile,
    // shared config files, web identity, container credentials, instance metadata switches):
    // keywardd passes them from its environment (and nothing else besides the basics).
    keyward_plugin_api::plugin::Plugin::new(keyward_plugin_awskms::AwsKmsBackend::new)
        .pass_env(&["AWS_*"])
        .run()
}
