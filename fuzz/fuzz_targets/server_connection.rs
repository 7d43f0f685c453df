//! The server as a client connection sees it: arbitrary bytes written to a connection of a
//! real keywardd (run in this process, on a Unix socket in a temporary directory, with a
//! `local` backend holding one key), then the client's end of the stream, then whatever the
//! daemon answers read to its end. The bytes go through everything a caller reaches: the
//! connection limits and deadlines, the `:authority` filter, hyper's HTTP/2 server, tonic's
//! decoding, the caller layer, validation, policies, the audit log and the local backend.
//!
//! libfuzzer-sys aborts on any panic, so a panic in any task of the daemon is a finding. The
//! daemon runs on its own thread and runtime; each input is one connection. Its directory is
//! `$TMPDIR/keyward-fuzz-server-<pid>` (scripts/fuzz-smoke points TMPDIR at its scratch
//! directory, removed at exit).
#![no_main]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keyward_daemon::config::{ConfigSource, Overrides, parse};
use libfuzzer_sys::fuzz_target;

/// A P-256 key made for this target only (it signs nothing that matters).
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPyITpOwWqMnE4u2J
KFxaQkL7jmOeufMGqXXiGz5EJxahRANCAAQbv1LN5MWhkJstpxzrqsYg1viugxA0
kLzRVZXrokk+tLc73kCRBixnb52UWKMnVkBOhDZGXmXILVWe60HMSDaK
-----END PRIVATE KEY-----
";

/// How long to wait for the daemon to answer and close a connection after the client's end.
const ANSWER: Duration = Duration::from_secs(30);

fn set_mode(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Starts the daemon once; returns its socket.
fn daemon() -> &'static PathBuf {
    static SOCKET: OnceLock<PathBuf> = OnceLock::new();
    SOCKET.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("keyward-fuzz-server-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["", "keys", "state", "run"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
            set_mode(&dir.join(sub), 0o700);
        }
        std::fs::write(dir.join("keys/fuzz.pem"), KEY).expect("key");
        set_mode(&dir.join("keys/fuzz.pem"), 0o600);
        let socket = dir.join("run/agent.sock");
        let path = |p: &str| format!("{:?}", dir.join(p).to_str().expect("UTF-8"));
        let text = format!(
            "socket = {}\nstate_dir = {}\n\
             [limits]\nheader_timeout = 5\nidle_timeout = 10\n\
             [audit]\npath = {}\n\
             [[backend]]\nname = \"local\"\ntype = \"local\"\npath = {}\n\
             [[key]]\nid = \"fuzz\"\nbackend = \"local\"\nref = \"fuzz\"\n",
            path("run/agent.sock"),
            path("state"),
            path("audit.log"),
            path("keys"),
        );
        let config = parse(
            &ConfigSource::text("fuzz.toml", text),
            &Overrides::default(),
        )
        .expect("the fuzz config parses");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                // keywardd's main ignores SIGPIPE (Rust's runtime does that before main);
                // libFuzzer's main does not, and a write to a connection the other side closed
                // would kill the fuzzer. A tokio handler for it is what ignoring takes here.
                let _pipe = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::pipe())
                    .expect("SIGPIPE handler");
                keyward_daemon::server::run(config, std::future::pending())
                    .await
                    .expect("keywardd runs");
            });
        });
        let started = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "keywardd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        socket
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut stream) = UnixStream::connect(daemon()) else {
        return;
    };
    stream.set_read_timeout(Some(ANSWER)).expect("timeout");
    stream.set_write_timeout(Some(ANSWER)).expect("timeout");
    // The daemon may close first (it refuses what it cannot read): errors are answers too.
    let _ = stream.write_all(data);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = [0u8; 64 << 10];
    while let Ok(n) = stream.read(&mut answer) {
        if n == 0 {
            break;
        }
    }
});
