fn main() -> std::process::ExitCode {
    keyward_plugin_api::plugin::run(keyward_plugin_yubikey::YubikeyBackend::new)
}
