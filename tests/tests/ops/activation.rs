//! Socket activation driving the real keywardd: `systemd-socket-activate` binds the agent
//! socket and the `[ssh_agent]` socket, the first connection starts keywardd on them, and
//! keywardd tells the notification socket READY=1, RELOADING=1 (with MONOTONIC_USEC) and
//! READY=1 around SIGHUP, STOPPING=1 on SIGTERM. An inherited socket gets the checks of a
//! socket keywardd binds: the mode it sets, and a directory others can write is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use keyward_tests::{openssl, stderr_text, stdout_text, toml_string};
use rustix::process::Signal;

use crate::common::{self, Activated, have};

fn tools() -> bool {
    have(
        "systemd-socket-activate",
        "scripts/test ops installs it (Debian systemd)",
    ) && have(
        "ssh-add",
        "scripts/test ops installs it (Debian openssh-client)",
    )
}

/// A config with a local key `k` (made with openssl), served on `run/agent.sock` and, for
/// ssh, on `run/ssh.sock`.
fn setup(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    keyward_tests::openssl_genpkey(
        &keys.join("k.pem"),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = run.join("agent.sock");
    let ssh = run.join("ssh.sock");
    let config = dir.join("keywardd.toml");
    std::fs::write(
        &config,
        format!(
            "socket = {}\nstate_dir = {}\n\n[[backend]]\nname = \"local\"\ntype = \"local\"\npath = {}\n\n[ssh_agent]\nsocket = {}\nkeys = [\"k\"]\n\n[[key]]\nid = \"k\"\nbackend = \"local\"\nref = \"k\"\n",
            toml_string(socket.to_str().unwrap()),
            toml_string(dir.join("state").to_str().unwrap()),
            toml_string(keys.to_str().unwrap()),
            toml_string(ssh.to_str().unwrap()),
        ),
    )
    .unwrap();
    (config, socket, ssh)
}

#[test]
fn the_first_connection_starts_keywardd_which_serves_both_sockets_signs_and_notifies() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (config, socket, ssh) = setup(dir.path());
    let keywardd = keyward_tests::binary("keywardd");
    let mut activated = Activated::start(
        dir.path(),
        &[&socket, &ssh],
        &keywardd,
        &["--config", config.to_str().unwrap()],
        &[],
    );
    // Nothing connected yet: systemd-socket-activate holds the sockets and has not started
    // keywardd (it execs keywardd in place on the first connection).
    assert_eq!(activated.comm(), "systemd-socket-", "{}", activated.log());
    assert!(activated.pending().is_empty(), "{:?}", activated.messages);

    // The first connection: a signature through the agent socket.
    let message = dir.path().join("message.txt");
    std::fs::write(&message, b"socket-activated").unwrap();
    let signature = dir.path().join("message.sig");
    let mut sign = keyward_tests::cli_command(&socket);
    sign.args(["sign", "--key", "k", "--input"])
        .arg(&message)
        .arg("--output")
        .arg(&signature);
    common::ok(sign, "keyward sign through the activated socket");
    let ready = activated.wait_for("READY=1");
    assert!(ready.contains("STATUS=serving"), "{ready}");
    assert_eq!(activated.comm(), "keywardd");
    let log = activated.log();
    assert!(
        log.contains("serving a socket passed by the service manager"),
        "{log}"
    );

    // An independent verifier: openssl with the public key of the key file.
    let public = dir.path().join("k.pub.pem");
    let output = openssl([
        "pkey",
        "-in",
        dir.path().join("keys/k.pem").to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr_text(&output));
    common::assert_openssl_verifies(&public, &message, &signature);

    // keywardd set its mode on the inherited sockets (systemd-socket-activate made them with
    // the umask's 0755).
    for path in [&socket, &ssh] {
        assert_eq!(keyward_tests::mode_of(path), 0o600, "{}", path.display());
    }
    // The inherited ssh-agent socket serves the [ssh_agent] keys.
    let output = keyward_tests::run_with_timeout(
        {
            let mut c = Command::new("ssh-add");
            c.arg("-L").env("SSH_AUTH_SOCK", &ssh);
            c
        },
        None,
        common::DEADLINE,
    );
    assert!(
        output.status.success() && stdout_text(&output).starts_with("ecdsa-sha2-nistp256 "),
        "ssh-add -L: {}{}",
        stdout_text(&output),
        stderr_text(&output)
    );

    // Reload: RELOADING=1 with the monotonic time systemd (>= 253) requires, then READY=1.
    activated.signal(Signal::HUP);
    let reloading = activated.wait_for("RELOADING=1");
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    activated.wait_for("READY=1");
    // Stop: STOPPING=1, then a clean exit.
    activated.signal(Signal::TERM);
    activated.wait_for("STOPPING=1");
    assert_eq!(activated.wait_exit(), Some(0), "{}", activated.log());
}

#[test]
fn an_inherited_socket_in_a_directory_others_can_write_is_refused() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (config, socket, _ssh) = setup(dir.path());
    std::fs::set_permissions(
        socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let keywardd = keyward_tests::binary("keywardd");
    let mut activated = Activated::start(
        dir.path(),
        &[&socket],
        &keywardd,
        &["--config", config.to_str().unwrap()],
        &[],
    );
    // The connection starts keywardd, which refuses the socket and exits 1.
    let _connection = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    assert_eq!(activated.wait_exit(), Some(1), "{}", activated.log());
    let log = activated.log();
    assert!(
        log.contains("is writable by group or others")
            && log.contains("another user could replace the socket"),
        "{log}"
    );
    assert!(
        !activated.messages.iter().any(|m| m.contains("READY=1")),
        "{:?}",
        activated.pending()
    );
}
