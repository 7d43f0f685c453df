//! How keywardd finds plugin executables and has them check their own settings: a bad setting
//! is reported by the plugin (`--check-settings`) at that setting's line of the config, exit
//! status 2, for `--check-config` and at start-up alike, for built-in plugins and for a
//! third-party one (the Python example); a missing plugin is named with where it was looked
//! for; `plugin_dir` points keywardd at plugins elsewhere.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

use keyward_sdk::KeySpec;
use keyward_tests::peers::{Peer, require};
use keyward_tests::plugins::{
    backend_table, config_head, path_line, plugin_processes, python_command,
};
use keyward_tests::{DaemonBuilder, binary, stderr_text, stdout_text, toml_string};

/// Runs keywardd on `config` (with `args`) to its exit.
fn run(builder: DaemonBuilder, config: &str, args: &[&str]) -> Output {
    let mut builder = builder.config(config);
    for arg in args {
        builder = builder.arg(*arg);
    }
    builder.run_to_exit(Duration::from_secs(30))
}

/// The 1-based line of the first line of `config` that starts with `prefix`.
fn line_of(config: &str, prefix: &str) -> usize {
    config
        .lines()
        .position(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}"))
        + 1
}

/// `config` is refused with exit status 2 and a message containing each of `wanted`, by
/// `--check-config` and at start-up.
fn assert_refused(config: &str, wanted: &[&str]) {
    for args in [&["--check-config"][..], &[]] {
        let output = run(DaemonBuilder::new(), config, args);
        let text = format!("{}{}", stdout_text(&output), stderr_text(&output));
        assert_eq!(output.status.code(), Some(2), "{args:?}:\n{text}");
        for want in wanted {
            assert!(text.contains(want), "{args:?}: {want:?} not in:\n{text}");
        }
    }
}

#[test]
fn a_built_in_plugin_names_the_bad_setting_and_its_line() {
    let builder = DaemonBuilder::new();
    let config = format!(
        "{}{}",
        config_head(builder.dir()),
        backend_table(
            "v",
            "vault",
            "address = \"https://vault.example:8200\"\ntoken_env = \"VAULT_TOKEN\"\nmount = 7"
        )
    );
    let line = line_of(&config, "mount = 7");
    assert_refused(
        &config,
        &[
            &format!("line {line}: [[backend]] \"v\" (type vault): `mount`:"),
            "invalid type",
        ],
    );

    // An unknown setting: the plugin names it.
    let config = format!(
        "{}{}",
        config_head(builder.dir()),
        backend_table(
            "v",
            "vault",
            "address = \"https://vault.example:8200\"\ntoken_env = \"VAULT_TOKEN\"\nadress = \"x\""
        )
    );
    let line = line_of(&config, "adress");
    assert_refused(
        &config,
        &[
            &format!("line {line}: "),
            "`adress`",
            "unknown field `adress`",
        ],
    );

    // A good one passes, without contacting the Vault (there is none).
    let output = run(
        DaemonBuilder::new(),
        &config.replace("adress = \"x\"", ""),
        &["--check-config"],
    );
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert!(stdout_text(&output).contains("config OK: 1 backend(s)"));
}

#[test]
fn a_third_party_plugin_checks_its_settings_too() {
    let Some(python) = require(Peer::Python) else {
        return;
    };
    let builder = DaemonBuilder::new();
    let config = format!(
        "{}{}",
        config_head(builder.dir()),
        backend_table(
            "py",
            "external",
            &format!("{}\nsign_delay_seconds = \"slow\"", python_command(&python))
        )
    );
    let line = line_of(&config, "sign_delay_seconds");
    assert_refused(
        &config,
        &[&format!(
            "line {line}: [[backend]] \"py\" (type external): `sign_delay_seconds`:"
        )],
    );
}

#[test]
fn a_missing_plugin_is_named_with_where_it_was_looked_for() {
    let builder = DaemonBuilder::new();
    // A type nobody built: looked for next to keywardd.
    let config = format!(
        "{}{}",
        config_head(builder.dir()),
        backend_table("x", "nosuchtype", "")
    );
    let next_to_keywardd = binary("keywardd")
        .parent()
        .expect("a directory")
        .display()
        .to_string();
    assert_refused(
        &config,
        &[
            &format!("line {}: ", line_of(&config, "type = \"nosuchtype\"")),
            "keyward-plugin-nosuchtype is not installed",
            &format!("looked in {next_to_keywardd}"),
            "install keyward-plugin-nosuchtype",
        ],
    );

    // plugin_dir replaces the default places.
    let empty = builder.dir().join("no-plugins");
    fs::create_dir(&empty).expect("create the directory");
    let config = format!(
        "{}{}{}",
        config_head(builder.dir()),
        path_line("plugin_dir", &empty),
        backend_table(
            "v",
            "vault",
            "address = \"https://vault.example:8200\"\ntoken_env = \"T\""
        )
    );
    assert_refused(
        &config,
        &[&format!(
            "keyward-plugin-vault is not installed (looked in {})",
            empty.display()
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_dir_finds_plugins_elsewhere() {
    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let plugins = dir.join("libexec");
    fs::create_dir(&plugins).expect("create the plugin directory");
    let plugin = plugins.join("keyward-plugin-local");
    fs::copy(binary("keyward-plugin-local"), &plugin).expect("copy the plugin");
    fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = format!(
        "{}plugin_dir = {}\n{}",
        config_head(&dir),
        toml_string(plugins.to_str().expect("UTF-8")),
        backend_table(
            "elsewhere",
            "local",
            &format!(
                "isolation = \"process\"\n{}",
                path_line("path", &dir.join("keys"))
            )
        )
    );
    let daemon = builder.config(&config).start().await;
    let client = daemon.client().await;
    client
        .generate_key("elsewhere", "k", KeySpec::EcP256)
        .await
        .expect("generate through the plugin in plugin_dir");
    let running = plugin_processes(&daemon, "keyward-plugin-local");
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(
        running[0].cmdline.contains(plugin.to_str().expect("UTF-8")),
        "the plugin runs from {}: {running:?}",
        plugin.display()
    );
}
