//! `scripts/install` into a temporary prefix: binaries, plugins in `libexec/keyward`, man
//! pages, completions and units where they belong; the installed keywardd finds its plugins
//! there with no `plugin_dir` (`--check-config` says which binary is missing when one is not),
//! serves the docs' PKCS#11 example on SoftHSM and signs (openssl verifies); `--uninstall`
//! removes every file it put there.

use std::process::Command;

use keyward_tests::softhsm;
use keyward_tests::{stderr_text, stdout_text};

use crate::common::{self, have};

fn install(args: &[&str]) -> String {
    let mut command = Command::new(common::repo().join("scripts/install"));
    command.args(args);
    stdout_text(&common::ok(command, &format!("scripts/install {args:?}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_installed_keywardd_finds_its_plugins_in_the_prefix_and_signs_with_softhsm() {
    if keyward_tests::peers::require(keyward_tests::peers::Peer::SoftHsm).is_none()
        || !have("bash", "Debian bash")
    {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let prefix = root.path().join("prefix");
    let prefix_str = prefix.to_str().unwrap();
    let from = common::bin_dir();
    let said = install(&["--prefix", prefix_str, "--from", from.to_str().unwrap()]);
    assert!(
        said.contains("scripts/install --uninstall --prefix"),
        "{said}"
    );
    for file in [
        "bin/keywardd",
        "bin/keyward",
        "bin/notation-keyward",
        "bin/sigstore-kms-keyward",
        "libexec/keyward/keyward-plugin-pkcs11",
        "libexec/keyward/keyward-plugin-yubikey",
        "libexec/keyward/keyward-plugin-vault",
        "share/man/man1/keyward.1",
        "share/man/man1/keyward-sign.1",
        "share/man/man8/keywardd.8",
        "share/bash-completion/completions/keyward",
        "share/zsh/site-functions/_keyward",
        "share/fish/vendor_completions.d/keyward.fish",
        "lib/systemd/user/keywardd.socket",
        "lib/systemd/system/keywardd.service",
    ] {
        assert!(prefix.join(file).is_file(), "{file} was not installed");
    }
    // The units start this prefix's keywardd.
    let unit = std::fs::read_to_string(prefix.join("lib/systemd/user/keywardd.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={prefix_str}/bin/keywardd")),
        "{unit}"
    );
    // The completion script is one bash can load, and it completes subcommands.
    let output = keyward_tests::run_with_timeout(
        {
            let mut c = Command::new("bash");
            c.arg("-c").arg(format!(
                "source {prefix_str}/share/bash-completion/completions/keyward && COMP_WORDS=(keyward ke) COMP_CWORD=1 && _keyward keyward ke keyward && printf '%s\\n' \"${{COMPREPLY[@]}}\""
            ));
            c
        },
        None,
        common::DEADLINE,
    );
    assert!(
        stdout_text(&output).lines().any(|l| l == "keys"),
        "bash completion: {}{}",
        stdout_text(&output),
        stderr_text(&output)
    );
    // The man page is the one of this CLI (clap_mangen, from its definitions).
    let page = std::fs::read_to_string(prefix.join("share/man/man1/keyward-sign.1")).unwrap();
    assert!(
        page.contains(".TH keyward-sign 1") && page.contains("\\-\\-key"),
        "{page}"
    );

    // The docs' PKCS#11 example, on SoftHSM, started with the installed keywardd: its plugin
    // comes from PREFIX/libexec/keyward (there is no plugin_dir in the config).
    let (hsm, example) = common::softhsm_from_docs();
    assert!(!example.contains("\nplugin_dir"), "{example}");
    let keywardd = prefix.join("bin/keywardd");
    let builder = hsm.daemon(&example, softhsm::PIN).program(keywardd.clone());
    let daemon = builder.start().await;
    let config = daemon.config_path().to_path_buf();
    let cli = prefix.join("bin/keyward");
    common::sign_and_verify(&cli, daemon.socket(), daemon.dir(), "release", b"installed");

    // Without the plugin, --check-config names the binary to install.
    std::fs::remove_file(prefix.join("libexec/keyward/keyward-plugin-pkcs11")).unwrap();
    let output = keyward_tests::run_with_timeout(
        {
            let mut c = Command::new(&keywardd);
            c.arg("--config").arg(&config).arg("--check-config");
            c
        },
        None,
        common::DEADLINE,
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr_text(&output));
    assert!(
        stderr_text(&output).contains("keyward-plugin-pkcs11 is not installed")
            && stderr_text(&output).contains(&format!("{prefix_str}/libexec/keyward")),
        "{}",
        stderr_text(&output)
    );

    drop(daemon);

    // --uninstall removes every file it installed (the one removed by hand included).
    install(&["--uninstall", "--prefix", prefix_str]);
    let left: Vec<_> = walk(&prefix);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}
