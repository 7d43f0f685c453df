//! A real RFC 3161 Time Stamping Authority for the timestamp tests: sigstore's
//! `timestamp-server` v2.1.3 with its in-memory signer (a fresh root, intermediate and
//! timestamping certificate on every start, so two instances are two unrelated TSAs).
//!
//! timestamp-server always starts a Prometheus listener on the fixed address `:2112` (every
//! interface) and exits when that port is taken. So that it binds nothing on this machine's
//! network and two instances never collide, it runs in a network namespace of its own
//! (`unshare --net`, or `--map-root-user --net` when not root) and serves its API on a Unix
//! socket; a small forwarder in the test process gives notation and keyward the
//! `http://127.0.0.1:<free port>/api/v1/timestamp` URL they need.
//!
//! The server comes from `KEYWARD_TEST_TSA`, else `~/.cache/keyward/bin/timestamp-server`
//! (`scripts/test timestamp` builds it); when it or `unshare` is missing, [`Tsa::start`] prints
//! `skipped: ...` and returns `None`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The RFC 3161 endpoint of timestamp-server.
const TIMESTAMP_PATH: &str = "/api/v1/timestamp";
/// Its certificate chain (PEM, leaf first, ending with its root).
const CERTCHAIN_PATH: &str = "/api/v1/timestamp/certchain";

/// A running timestamp-server; stopped (by its own PID) on drop.
#[derive(Debug)]
pub struct Tsa {
    child: Child,
    dir: TempDir,
    socket: PathBuf,
    forwarder: Forwarder,
    chain_pem: String,
}

impl Tsa {
    /// Starts a TSA and waits until it serves its certificate chain; `None` after printing
    /// why the test is skipped.
    pub fn start() -> Option<Tsa> {
        let server = crate::peers::require(crate::peers::Peer::Tsa)?;
        let Some(unshare) = namespace_prefix() else {
            crate::peers::missing(
                "`unshare --net` cannot make a network namespace here (timestamp-server v2.1.3 \
                 always binds a metrics port on every interface, so it runs isolated)",
                "install util-linux and run as root or with user namespaces enabled",
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("keyward-tsa-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("tsa.sock");
        let log = std::fs::File::create(dir.path().join("tsa.log")).expect("TSA log");
        let child = Command::new(&unshare[0])
            .args(&unshare[1..])
            .arg(&server)
            .args(["serve", "--scheme", "unix", "--socket-path"])
            .arg(&socket)
            .args([
                "--timestamp-signer",
                "memory",
                "--include-chain-in-response",
                "--disable-ntp-monitoring",
                "--log-type",
                "prod",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        let forwarder = Forwarder::start(socket.clone());
        let mut tsa = Tsa {
            child,
            dir,
            socket,
            forwarder,
            chain_pem: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, body)) = tsa.http("GET", CERTCHAIN_PATH, None, &[]) {
                tsa.chain_pem = String::from_utf8(body).expect("the chain is PEM text");
                break;
            }
            if let Ok(Some(status)) = tsa.child.try_wait() {
                panic!(
                    "timestamp-server exited ({status}); its log:\n{}",
                    tsa.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timestamp-server did not serve {CERTCHAIN_PATH} within 30 s; its log:\n{}",
                tsa.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            tsa.chain_pem.matches("BEGIN CERTIFICATE").count(),
            3,
            "timestamp-server's memory signer has a leaf, an intermediate and a root:\n{}",
            tsa.chain_pem
        );
        Some(tsa)
    }

    /// `http://127.0.0.1:<port>/api/v1/timestamp`, the URL for `--timestamp-url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{TIMESTAMP_PATH}", self.forwarder.port)
    }

    /// The TSA's root certificate, written as PEM to a file in its directory.
    pub fn root_pem(&self) -> PathBuf {
        let root = self
            .chain_pem
            .split_inclusive("-----END CERTIFICATE-----")
            .filter(|block| block.contains("BEGIN CERTIFICATE"))
            .last()
            .expect("a root certificate")
            .trim_start();
        let path = self.dir.path().join("tsa-root.pem");
        std::fs::write(&path, format!("{root}\n")).expect("write the TSA root");
        path
    }

    /// The TSA's whole chain (PEM), for `openssl ts -verify -untrusted`.
    pub fn chain_pem(&self) -> PathBuf {
        let path = self.dir.path().join("tsa-chain.pem");
        std::fs::write(&path, &self.chain_pem).expect("write the TSA chain");
        path
    }

    /// Sends a DER `TimeStampReq` the way a TSA client elsewhere would; returns the DER
    /// `TimeStampResp`.
    pub fn respond(&self, request: &[u8]) -> Vec<u8> {
        let (status, body) = self
            .http(
                "POST",
                TIMESTAMP_PATH,
                Some("application/timestamp-query"),
                request,
            )
            .expect("the TSA answers");
        assert_eq!(
            status,
            200,
            "the TSA refused the request: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// What timestamp-server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tsa.log")).unwrap_or_default()
    }

    /// One HTTP/1.0 exchange over the Unix socket (HTTP/1.0: no chunked body to decode).
    fn http(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(content_type) = content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let at = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
        let status = String::from_utf8_lossy(&response[..at])
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, response[at + 4..].to_vec()))
    }
}

impl Drop for Tsa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command that runs a program in a new network namespace, if this machine allows one.
fn namespace_prefix() -> Option<Vec<String>> {
    let candidates: [&[&str]; 2] = [
        &["unshare", "--net"],
        &["unshare", "--map-root-user", "--net"],
    ];
    candidates.into_iter().find_map(|prefix| {
        let works = Command::new(prefix[0])
            .args(&prefix[1..])
            .arg("true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        works.then(|| prefix.iter().map(|s| s.to_string()).collect())
    })
}

/// Forwards connections from `127.0.0.1:<free port>` to a Unix socket, a thread per direction.
#[derive(Debug)]
struct Forwarder {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    fn start(target: PathBuf) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().expect("its address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                match UnixStream::connect(&target) {
                    Ok(server) => forward(client, server),
                    // Not up yet: the client sees a closed connection and its caller retries.
                    Err(_) => drop(client),
                }
            }
        });
        Forwarder {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

fn forward(client: TcpStream, server: UnixStream) {
    let (Ok(mut client_read), Ok(mut server_read)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    let (mut client_write, mut server_write) = (client, server);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut server_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Write);
    });
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `openssl ts -verify`: an independent check that `token` (DER TimeStampToken) is over
/// `digest_hex` and chains to `root`, with `chain` as untrusted intermediates.
pub fn openssl_verifies(token: &Path, digest_hex: &str, root: &Path, chain: &Path) -> bool {
    let output = crate::openssl([
        "ts".as_ref(),
        "-verify".as_ref(),
        "-token_in".as_ref(),
        "-in".as_ref(),
        token.as_os_str(),
        "-digest".as_ref(),
        digest_hex.as_ref(),
        "-CAfile".as_ref(),
        root.as_os_str(),
        "-untrusted".as_ref(),
        chain.as_os_str(),
    ]);
    output.status.success() && crate::stdout_text(&output).contains("Verification: OK")
}
