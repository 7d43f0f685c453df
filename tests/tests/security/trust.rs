//! A client trusts only its own agent, tested with two real accounts (root runs the tests,
//! `nobody` plays the other user): a squatter's directory and socket are refused before
//! anything is sent, a listener that runs as another uid is refused after connecting and
//! before sending, and `KEYWARD_AGENT_UID` trusts a system agent running as its own user.
//! (A root-owned agent used by another user: `daemon::allowed_uids_are_served`.)

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use keyward_tests::cli::{assert_cli_exit, exit};
use keyward_tests::peers::{Peer, require};
use keyward_tests::users::{CliCopy, NOBODY};
use keyward_tests::{
    COMMAND_TIMEOUT, cli_command, run_with_timeout, set_mode, stderr_text, toml_string,
};

/// A Python listener on a Unix socket that prints `ready` once it listens, then what its first
/// connection sent (`<bytes>:<first 32 bytes, hex>`) once that connection ends. As root it
/// binds, then becomes `uid` before `listen()`, so the kernel reports `uid` as the server's
/// peer credentials.
const LISTENER: &str = r#"
import os, socket, sys
path, uid = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.setgroups([]); os.setgid(uid); os.setuid(uid)
s.listen(8)
print("ready", flush=True)
conn, _ = s.accept()
data = b""
while True:
    chunk = conn.recv(65536)
    if not chunk:
        break
    data += chunk
print("%d:%s" % (len(data), data[:32].hex()), flush=True)
"#;

struct Listener {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Listener {
    /// Starts the listener on `socket` as `uid` and waits until it listens (its first line).
    fn start(python: &Path, socket: &Path, uid: u32) -> Listener {
        let mut child = Command::new(python)
            .args(["-c", LISTENER])
            .arg(socket)
            .arg(uid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the squatter's listener (Python)");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the listener");
        assert_eq!(line.trim(), "ready", "the listener did not start");
        Listener { child, stdout }
    }

    /// What the first connection sent; returns once that connection has ended (the client
    /// process has exited by then, so its end of the connection is closed).
    fn first_connection(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read the listener");
        line.trim().to_string()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chown(path: &Path, uid: u32) {
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(uid)),
    )
    .expect("chown");
}

/// `keyward keys list` as root with `XDG_RUNTIME_DIR` unset and `TMPDIR=tmp`: the default socket
/// is then `<tmp>/keyward-0/agent.sock`.
fn keys_list_default_socket(tmp: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(keyward_tests::binary("keyward"));
    command
        .args(["keys", "list"])
        .env_remove("KEYWARD_SOCK")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("KEYWARD_AGENT_UID")
        .env("TMPDIR", tmp)
        .env("RUST_BACKTRACE", "1");
    for (name, value) in env {
        command.env(name, value);
    }
    run_with_timeout(command, None, COMMAND_TIMEOUT)
}

#[test]
fn a_squatters_directory_and_socket_are_refused_before_anything_is_sent() {
    let Some(python) = require(Peer::Python) else {
        return;
    };
    // A shared temporary directory, like /tmp (root's, 1777).
    let tmp = tempfile::tempdir().expect("temp dir");
    set_mode(tmp.path(), 0o1777);
    // The squatter (nobody) made keyward-0 first, open to all, and listens in it.
    let squat = tmp.path().join("keyward-0");
    fs::create_dir(&squat).unwrap();
    chown(&squat, NOBODY);
    set_mode(&squat, 0o777);
    let socket = squat.join("agent.sock");
    let mut listener = Listener::start(&python, &socket, NOBODY);
    chown(&socket, NOBODY);

    let output = keys_list_default_socket(tmp.path(), &[]);
    let shown = squat.canonicalize().unwrap();
    assert_cli_exit(
        &output,
        exit::NO_AGENT,
        "a squatter's socket",
        &[
            &format!("refusing to use the agent socket {}", socket.display()),
            &format!(
                "its directory {} belongs to uid {NOBODY}, not to you (uid 0) or root",
                shown.display()
            ),
            "another user may have created it to intercept your requests",
            "set XDG_RUNTIME_DIR",
            &format!("KEYWARD_AGENT_UID={NOBODY}"),
        ],
    );
    // Nothing reached the squatter: the first connection it sees is this probe.
    let mut probe = std::os::unix::net::UnixStream::connect(&socket).expect("probe");
    std::io::Write::write_all(&mut probe, b"probe").unwrap();
    drop(probe);
    assert_eq!(
        listener.first_connection(),
        format!("5:{}", hex::encode("probe"))
    );
}

#[test]
fn a_listener_of_another_uid_is_refused_after_connecting_before_sending() {
    let Some(python) = require(Peer::Python) else {
        return;
    };
    // Root's private directory and socket file, but the process listening runs as nobody.
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("run");
    fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o700);
    let socket = dir.join("agent.sock");
    let mut listener = Listener::start(&python, &socket, NOBODY);
    assert_eq!(fs::metadata(&socket).unwrap().uid(), 0);

    let mut command = cli_command(&socket);
    command
        .args(["keys", "list"])
        .env_remove("KEYWARD_AGENT_UID");
    let output = run_with_timeout(command, None, COMMAND_TIMEOUT);
    assert_cli_exit(
        &output,
        exit::NO_AGENT,
        "a listener of another uid",
        &[
            &format!(
                "the process listening on it runs as uid {NOBODY}, not as you (uid 0) or root"
            ),
            &format!("KEYWARD_AGENT_UID={NOBODY}"),
        ],
    );
    // The CLI connected (SO_PEERCRED needs a connection) and closed it without a byte.
    assert_eq!(listener.first_connection(), "0:");
}

#[tokio::test]
async fn keyward_agent_uid_trusts_a_system_agent_running_as_its_own_user() {
    // keywardd as nobody, in nobody's directory, serving root (allow_uids).
    let keywardd = CliCopy::of("keywardd");
    let work = tempfile::tempdir().expect("temp dir");
    set_mode(work.path(), 0o755);
    let home = work.path().join("home");
    fs::create_dir(&home).unwrap();
    chown(&home, NOBODY);
    set_mode(&home, 0o700);
    let path = |name: &str| toml_string(home.join(name).to_str().unwrap());
    let config = work.path().join("keywardd.toml");
    fs::write(
        &config,
        format!(
            "socket = {}\nstate_dir = {}\nallow_uids = [0]\n[[backend]]\nname = \"local\"\ntype = \"local\"\npath = {}\n",
            path("agent.sock"),
            path("state"),
            path("keys")
        ),
    )
    .unwrap();
    set_mode(&config, 0o644);
    let log = fs::File::create(work.path().join("keywardd.log")).unwrap();
    let _daemon = Kill(
        Command::new("setpriv")
            .args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
            ])
            .arg(keywardd.path())
            .arg("--config")
            .arg(&config)
            .env_remove("KEYWARD_SOCK")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start keywardd as nobody"),
    );
    let socket = home.join("agent.sock");
    let deadline = Instant::now() + Duration::from_secs(15);
    while keyward_tests::uds_channel(&socket).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "keywardd (nobody) did not start: {}",
            fs::read_to_string(work.path().join("keywardd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let list = |agent_uid: Option<String>| {
        let mut command = cli_command(&socket);
        command
            .args(["keys", "list"])
            .env_remove("KEYWARD_AGENT_UID");
        if let Some(uid) = agent_uid {
            command.env("KEYWARD_AGENT_UID", uid);
        }
        run_with_timeout(command, None, COMMAND_TIMEOUT)
    };
    let refused = list(None);
    assert_cli_exit(
        &refused,
        exit::NO_AGENT,
        "a system agent of another user, not named",
        &[
            &format!("belongs to uid {NOBODY}"),
            &format!("KEYWARD_AGENT_UID={NOBODY}"),
        ],
    );
    let served = list(Some(NOBODY.to_string()));
    assert!(
        served.status.success(),
        "KEYWARD_AGENT_UID={NOBODY}: {}",
        stderr_text(&served)
    );
    let bad = list(Some("keyward".into()));
    assert_cli_exit(
        &bad,
        exit::ERROR,
        "a non-numeric KEYWARD_AGENT_UID",
        &["not a numeric uid"],
    );
}

/// Kills (SIGKILL) and reaps a child when dropped, also when the test fails.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
