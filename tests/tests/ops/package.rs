//! The "Done when" path of issue #19, as far as a machine without systemd as PID 1 allows: the
//! Debian package built with cargo-deb (from the debug binaries the other parts build: this
//! proves the packaging, not the optimiser), installed with `dpkg -i`, its units verified at
//! their installed paths, the installed keywardd started socket-activated
//! (`systemd-socket-activate`) with the docs' PKCS#11 example on SoftHSM and a metrics
//! listener, `keyward status` green, a signature verified by openssl, metrics scraped, and
//! `dpkg --purge`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use keyward_tests::softhsm;
use keyward_tests::{peers, stderr_text, stdout_text, toml_string};
use rustix::process::Signal;

use crate::common::{self, Activated, have};

/// Purges the package when the test ends, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "keyward"]).output();
    }
}

fn dpkg(args: &[&str]) -> String {
    let mut command = Command::new("dpkg");
    command.args(args);
    stdout_text(&common::ok(command, &format!("dpkg {args:?}")))
}

fn dpkg_deb(args: &[&str]) -> String {
    let mut command = Command::new("dpkg-deb");
    command.args(args);
    stdout_text(&common::ok(command, &format!("dpkg-deb {args:?}")))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// GET http://127.0.0.1:PORT/metrics, the body.
fn scrape(port: u16) -> String {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics listener");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

fn installed_cli(socket: &Path, args: &[&str]) -> std::process::Output {
    let mut command = Command::new("/usr/bin/keyward");
    command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("KEYWARD_SOCK");
    keyward_tests::run_with_timeout(command, None, common::DEADLINE)
}

#[test]
fn the_package_installs_and_its_socket_activated_keywardd_signs_with_the_docs_pkcs11_example() {
    if !rustix::process::getuid().is_root() {
        peers::missing(
            "dpkg -i needs root",
            "run scripts/test ops as root (CI does)",
        );
        return;
    }
    if peers::require(peers::Peer::SoftHsm).is_none()
        || !have("dpkg-deb", "scripts/test ops installs it (Debian dpkg)")
        || !have(
            "systemd-socket-activate",
            "scripts/test ops installs it (Debian systemd)",
        )
    {
        return;
    }
    if Path::new("/usr/bin/keywardd").exists()
        && Command::new("dpkg")
            .args(["-s", "keyward"])
            .output()
            .is_ok_and(|o| !o.status.success())
    {
        panic!(
            "/usr/bin/keywardd exists but no keyward package owns it; this test would overwrite it"
        );
    }
    let work = tempfile::tempdir().unwrap();
    let debs = work.path().join("debs");
    let target_dir = common::bin_dir().parent().unwrap().to_path_buf();
    let mut package = Command::new(common::repo().join("scripts/package"));
    package
        .args(["--from-debug", "--output"])
        .arg(&debs)
        .env("CARGO_TARGET_DIR", &target_dir);
    common::ok(package, "scripts/package --from-debug");
    // The plugin packages: each holds its plugins in /usr/libexec/keyward and depends on
    // keyward and on the libraries its plugins link.
    for (name, plugins, needs) in [
        (
            "keyward-plugin-yubikey",
            ["yubikey"].as_slice(),
            ["libpcsclite1", "pcscd"].as_slice(),
        ),
        ("keyward-plugin-tpm", &["tpm"], &["libtss2-esys"]),
        (
            "keyward-plugins-cloud",
            &["vault", "awskms", "azurekv"],
            &["ca-certificates"],
        ),
        ("keyward-plugin-parsec", &["parsec"], &[]),
    ] {
        let deb = debs.join(format!("{name}_0.1.0-1_amd64.deb"));
        let info = dpkg_deb(&["-f", deb.to_str().unwrap(), "Depends"]);
        // Exactly the keyward package of the same build (daemon/Cargo.toml spells the version
        // out; this catches it drifting from the crate's).
        let exact = format!("keyward (= {}-1)", env!("CARGO_PKG_VERSION"));
        assert!(
            info.split(",").any(|d| d.trim() == exact),
            "{name}: Depends lacks {exact}: {info}"
        );
        for need in needs {
            assert!(info.contains(need), "{name}: Depends lacks {need}: {info}");
        }
        let contents = dpkg_deb(&["-c", deb.to_str().unwrap()]);
        for plugin in plugins {
            assert!(
                contents.contains(&format!("./usr/libexec/keyward/keyward-plugin-{plugin}\n")),
                "{name} lacks keyward-plugin-{plugin}:\n{contents}"
            );
        }
    }
    let deb = std::fs::read_dir(&debs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("keyward_")
        })
        .expect("scripts/package wrote keyward_*.deb");

    let _installed = Installed;
    dpkg(&["-i", deb.to_str().unwrap()]);
    for file in [
        "/usr/bin/keywardd",
        "/usr/bin/keyward",
        "/usr/bin/notation-keyward",
        "/usr/libexec/keyward/keyward-plugin-pkcs11",
        // The PKCS#11 module for tools that speak only PKCS#11 (docs/pkcs11-module.md).
        "/usr/lib/keyward/libkeyward_pkcs11.so",
        "/usr/lib/systemd/system/keywardd.service",
        "/usr/lib/systemd/system/keywardd.socket",
        "/usr/lib/systemd/user/keywardd.socket",
        "/usr/share/man/man8/keywardd.8",
        "/usr/share/man/man1/keyward-status.1",
        "/usr/share/bash-completion/completions/keyward",
        // The LGPL notice for the two binaries that link sequoia-openpgp (NOTICE).
        "/usr/share/doc/keyward/NOTICE",
        "/etc/keyward/keywardd.toml",
    ] {
        assert!(Path::new(file).is_file(), "{file} was not installed");
    }
    // The config is a conffile, readable by root and the keyward user the package made.
    let conffiles = stdout_text(&common::ok(
        {
            let mut c = Command::new("dpkg-query");
            c.args(["-W", "-f=${Conffiles}", "keyward"]);
            c
        },
        "dpkg-query",
    ));
    assert!(
        conffiles.contains("/etc/keyward/keywardd.toml"),
        "{conffiles}"
    );
    let user = stdout_text(&common::ok(
        {
            let mut c = Command::new("getent");
            c.args(["passwd", "keyward"]);
            c
        },
        "getent passwd keyward",
    ));
    assert!(user.contains(":/var/lib/keyward:"), "{user}");
    assert_eq!(
        keyward_tests::mode_of(Path::new("/etc/keyward/keywardd.toml")),
        0o640
    );
    // The installed units, at their installed paths (ExecStart=/usr/bin/keywardd exists now).
    let output = keyward_tests::run_with_timeout(
        {
            let mut c = Command::new("systemd-analyze");
            c.args([
                "verify",
                "--man=no",
                "/usr/lib/systemd/system/keywardd.service",
                "/usr/lib/systemd/system/keywardd.socket",
            ]);
            c
        },
        None,
        common::DEADLINE,
    );
    assert!(
        output.status.success() && stderr_text(&output).trim().is_empty(),
        "systemd-analyze verify: {}{}",
        stdout_text(&output),
        stderr_text(&output)
    );

    // The quick-start signature with the installed binaries: the docs' PKCS#11 example on
    // SoftHSM, socket-activated, with a metrics listener.
    let (hsm, example) = common::softhsm_from_docs();
    let dir = work.path().join("agent");
    std::fs::create_dir_all(dir.join("run")).unwrap();
    keyward_tests::set_mode(&dir.join("run"), 0o700);
    let socket = dir.join("run/agent.sock");
    let port = free_port();
    let config = dir.join("keywardd.toml");
    std::fs::write(
        &config,
        format!(
            "socket = {}\nstate_dir = {}\n\n{example}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            toml_string(socket.to_str().unwrap()),
            toml_string(dir.join("state").to_str().unwrap()),
        ),
    )
    .unwrap();
    let mut activated = Activated::start(
        &dir,
        &[&socket],
        Path::new("/usr/bin/keywardd"),
        &["--config", config.to_str().unwrap()],
        &[
            ("SOFTHSM2_CONF", hsm.conf().to_str().unwrap()),
            (softhsm::PIN_ENV, softhsm::PIN),
        ],
    );
    // The first client starts the agent; status is green once the pkcs11 plugin is up.
    let status = keyward_tests::wait::until("keyward status green", common::DEADLINE, || {
        let output = installed_cli(&socket, &["status", "--json"]);
        let text = stdout_text(&output);
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(json) if output.status.code() == Some(0) && json["result"] == "ok" => Ok(json),
            _ => Err(format!(
                "exit {:?}: {text}{}",
                output.status.code(),
                stderr_text(&output)
            )),
        }
    });
    activated.wait_for("READY=1");
    let hsm_backend = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "hsm")
        .unwrap_or_else(|| panic!("{status:#}"));
    assert_eq!(hsm_backend["state"], "up", "{status:#}");
    assert_eq!(hsm_backend["in_process"], false, "{status:#}");

    common::sign_and_verify(
        Path::new("/usr/bin/keyward"),
        &socket,
        &dir,
        "release",
        b"from the package",
    );

    let metrics = scrape(port);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("keyward_signatures_total{")
                && l.contains("release")
                && !l.ends_with(" 0")),
        "{metrics}"
    );

    activated.signal(Signal::TERM);
    activated.wait_for("STOPPING=1");
    assert_eq!(activated.wait_exit(), Some(0), "{}", activated.log());

    dpkg(&["--purge", "keyward"]);
    for gone in [
        "/usr/bin/keywardd",
        "/usr/libexec/keyward/keyward-plugin-pkcs11",
        "/etc/keyward/keywardd.toml",
    ] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is still there after dpkg --purge"
        );
    }
}
