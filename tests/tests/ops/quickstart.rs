//! `scripts/quickstart` as the README runs it, into a temporary prefix and home with the
//! binaries already built (`--from`), in the background (no systemd user manager here): it
//! installs, starts the agent, signs, has openssl verify, says where everything is, and with
//! `--stop` stops the agent it started.

use std::process::Command;

use keyward_tests::{stderr_text, stdout_text};

use crate::common;

#[test]
fn the_quickstart_installs_starts_signs_verifies_and_says_where_everything_is() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let runtime = root.path().join("run");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&runtime).unwrap();
    keyward_tests::set_mode(&runtime, 0o700);
    let prefix = root.path().join("prefix");
    let mut command = Command::new(common::repo().join("scripts/quickstart"));
    command
        .arg("--prefix")
        .arg(&prefix)
        .arg("--from")
        .arg(common::bin_dir())
        .arg("--stop")
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("KEYWARD_QUICKSTART_SYSTEMD", "0")
        .env_remove("KEYWARD_SOCK")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_STATE_HOME");
    let output = common::ok(command, "scripts/quickstart");
    let said = stdout_text(&output);
    assert!(
        said.contains("Verified OK"),
        "{said}{}",
        stderr_text(&output)
    );
    let socket = runtime.join("keyward/agent.sock");
    for line in [
        format!("binaries:  {}/bin/keywardd", prefix.display()),
        format!("keys:      {}/.local/share/keyward/keys", home.display()),
        format!("socket:    {}", socket.display()),
        format!(
            "log:       {}/.local/state/keyward/keywardd.log",
            home.display()
        ),
        "stop it:   kill ".to_string(),
    ] {
        assert!(said.contains(&line), "no {line:?} in:\n{said}");
    }
    assert!(
        home.join(".local/share/keyward/keys/quickstart.pem")
            .is_file()
    );
    // --stop stopped the agent it started: its socket goes when it exits.
    keyward_tests::wait::until("keywardd to stop", common::DEADLINE, || {
        if socket.exists() {
            Err("the socket is still there".into())
        } else {
            Ok(())
        }
    });
}
