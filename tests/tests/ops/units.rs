//! The systemd units in dist/systemd: `systemd-analyze verify` finds nothing to say about any
//! of them (it exits 0 even on unknown keys, so its output must be empty; the check is shown
//! to fail on a broken unit), the system unit carries its hardening and the socket units
//! listen where the configs put the socket.

use std::path::Path;
use std::process::Command;

use keyward_tests::{stderr_text, stdout_text};

use crate::common::{self, have};

/// `systemd-analyze [--user] verify` on copies of `units` whose ExecStart names the built
/// keywardd (verify checks that the program exists); its whole output.
fn verify(dir: &Path, units: &[&str], user: bool) -> (bool, String) {
    let keywardd = keyward_tests::binary("keywardd");
    let mut command = Command::new("systemd-analyze");
    if user {
        let runtime = dir.join("runtime");
        std::fs::create_dir_all(&runtime).unwrap();
        command.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
    }
    command.args(["verify", "--man=no"]);
    for unit in units {
        let text = std::fs::read_to_string(common::repo().join(unit))
            .unwrap()
            .replace("/usr/bin/keywardd", keywardd.to_str().unwrap());
        let copy = dir.join(Path::new(unit).file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        command.arg(copy);
    }
    let output = keyward_tests::run_with_timeout(command, None, common::DEADLINE);
    (
        output.status.success(),
        format!("{}{}", stdout_text(&output), stderr_text(&output)),
    )
}

fn tool() -> bool {
    have(
        "systemd-analyze",
        "scripts/test ops installs it (Debian systemd)",
    )
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if !tool() {
        return;
    }
    for (units, user) in [
        (
            [
                "dist/systemd/system/keywardd.service",
                "dist/systemd/system/keywardd.socket",
            ],
            false,
        ),
        (
            [
                "dist/systemd/user/keywardd.service",
                "dist/systemd/user/keywardd.socket",
            ],
            true,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (ok, said) = verify(dir.path(), &units, user);
        assert!(ok && said.trim().is_empty(), "{units:?}:\n{said}");
    }
    // The check can fail: a misspelt setting is reported.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(common::repo().join("dist/systemd/system/keywardd.service"))
        .unwrap()
        .replace("ProtectSystem=strict", "ProtectSytem=strict");
    let copy = dir.path().join("keywardd.service");
    std::fs::write(&copy, text).unwrap();
    let output = keyward_tests::run_with_timeout(
        {
            let mut c = Command::new("systemd-analyze");
            c.args(["verify", "--man=no"]).arg(&copy);
            c
        },
        None,
        common::DEADLINE,
    );
    assert!(
        stderr_text(&output).contains("ProtectSytem"),
        "{}",
        stderr_text(&output)
    );
}

/// The `Key=value` lines of a unit.
fn settings(unit: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(common::repo().join(unit))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_system_unit_is_hardened_notifies_and_listens_where_the_config_serves() {
    let service = settings("dist/systemd/system/keywardd.service");
    for (key, value) in [
        ("Type", "notify"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("User", "keyward"),
        ("StateDirectory", "keyward"),
        ("RuntimeDirectory", "keyward"),
        ("ConfigurationDirectory", "keyward"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX"),
        ("LimitMEMLOCK", "infinity"),
        ("CapabilityBoundingSet", ""),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert!(
            service.iter().any(|(k, v)| k == key && v == value),
            "keywardd.service has no {key}={value}"
        );
    }
    // The package's config serves the socket keywardd.socket listens on, in the directory
    // the service's RuntimeDirectory= keeps.
    let config: toml::Table =
        std::fs::read_to_string(common::repo().join("dist/config/keywardd.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let socket = settings("dist/systemd/system/keywardd.socket");
    let listen = socket
        .iter()
        .find(|(k, _)| k == "ListenStream")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(config["socket"].as_str(), Some(listen.as_str()));
    assert!(listen.starts_with("/run/keyward/"), "{listen}");
    assert_eq!(config["state_dir"].as_str(), Some("/var/lib/keyward"));
    // The user socket is keywardd's default socket ($XDG_RUNTIME_DIR/keyward/agent.sock), so
    // neither the config nor the clients name it.
    let user = settings("dist/systemd/user/keywardd.socket");
    assert!(
        user.iter()
            .any(|(k, v)| k == "ListenStream" && v == "%t/keyward/agent.sock"),
        "{user:?}"
    );
    let user_service = settings("dist/systemd/user/keywardd.service");
    assert!(
        user_service
            .iter()
            .any(|(k, v)| k == "Type" && v == "notify")
    );
}
