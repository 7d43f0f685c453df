//! One lowkey-vault process: where its jar and Java are, its certificate, and starting,
//! stopping and starting it again on the same two ports.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use super::relay::TokenShim;
use super::{AOT_ENV, JAR_ENV, JAVA_ENV};
use crate::{openssl, stderr_text};

/// How long the JVM may take to serve: about 12 s on an idle two-core machine (5 s with the
/// AOT cache), but over 80 s was seen without the cache while other builds loaded it.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// The password of the generated server key store.
const STORE_PASSWORD: &str = "keyward-test";

/// The jar: [`JAR_ENV`] (set by `scripts/test`), else the newest `lowkey-vault-app-*.jar` in
/// `$KEYWARD_LOWKEY_DIR` when that is set, else in `../shared/peers/lowkey-vault` next to the
/// clone (where this project's machines keep one built from source) or
/// `~/.cache/keyward/lowkey-vault`: the places `scripts/test` looks, in its order. Tests get it
/// through [`crate::peers::require`].
pub(crate) fn find_jar() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(JAR_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{JAR_ENV}={} does not exist",
            path.display()
        );
        return Some(path);
    }
    if let Some(dir) = std::env::var_os("KEYWARD_LOWKEY_DIR").filter(|v| !v.is_empty()) {
        return newest_jar(Path::new(&dir));
    }
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let shared = crate::plugins::workspace_root().join("../shared/peers/lowkey-vault");
    [shared, home.join(".cache/keyward/lowkey-vault")]
        .iter()
        .find_map(|dir| newest_jar(dir))
}

/// The newest `lowkey-vault-app-*.jar` in `dir`.
fn newest_jar(dir: &Path) -> Option<PathBuf> {
    let mut jars: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("lowkey-vault-app-") && n.ends_with(".jar"))
                })
                .collect()
        })
        .unwrap_or_default();
    jars.sort_by_key(|p| version_numbers(p));
    jars.pop()
}

/// The numbers of `lowkey-vault-app-<major>.<minor>.<patch>[-x].jar`.
fn version_numbers(jar: &Path) -> Vec<u32> {
    let name = jar.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let version = name.trim_start_matches("lowkey-vault-app-");
    version
        .trim_end_matches(".jar")
        .split(['.', '-'])
        .map_while(|part| part.parse().ok())
        .collect()
}

/// The Java major version a lowkey-vault jar needs (3.x: 17, 4.x: 21, 5.0 and later: 25).
fn java_needed(jar: &Path) -> u32 {
    match version_numbers(jar).first() {
        Some(0..=3) => 17,
        Some(4) => 21,
        _ => 25,
    }
}

/// The major version of the JDK or JRE at `home`, from its `release` file
/// (`JAVA_VERSION="25.0.1"`).
fn java_major(home: &Path) -> Option<u32> {
    let release = fs::read_to_string(home.join("release")).ok()?;
    let line = release
        .lines()
        .find_map(|line| line.strip_prefix("JAVA_VERSION="))?;
    line.trim_matches('"')
        .split(['.', '-', '+'])
        .next()?
        .parse()
        .ok()
}

/// `java` for `jar`: [`JAVA_ENV`]; else `$JAVA_HOME/bin/java` when that Java is new enough;
/// else the oldest JDK under `/usr/lib/jvm` that is new enough; or why there is none.
pub(crate) fn java_for(jar: &Path) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(JAVA_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let needed = java_needed(jar);
    if let Some(home) = std::env::var_os("JAVA_HOME").map(PathBuf::from) {
        let java = home.join("bin/java");
        if java.is_file() && java_major(&home).is_some_and(|major| major >= needed) {
            return Ok(java);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/jvm")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let home = e.path();
                    let major = java_major(&home)?;
                    let java = home.join("bin/java");
                    (major >= needed && java.is_file()).then_some((major, java))
                })
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates
        .into_iter()
        .next()
        .map(|(_, java)| java)
        .ok_or_else(|| {
            format!(
                "{} needs Java {needed} or newer, and neither {JAVA_ENV}, JAVA_HOME nor /usr/lib/jvm has one",
                jar.display()
            )
        })
}

pub(super) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A lowkey-vault process (a JVM) with its own directory, certificate and two ports; killed
/// when dropped, and in any case when the test process ends
/// ([`crate::process::spawn_tied_to_this_process`]).
#[derive(Debug)]
pub(super) struct Server {
    jar: PathBuf,
    java: PathBuf,
    dir: TempDir,
    pub(super) port: u16,
    token_port: u16,
    pub(super) shim: TokenShim,
    child: Option<Child>,
}

impl Server {
    /// Starts a server in `dir` and waits until it serves; `None` when the jar or Java is
    /// missing (after [`crate::peers::require`] said so).
    pub(super) fn start(dir: TempDir) -> Option<Server> {
        let jar = crate::peers::require(crate::peers::Peer::LowkeyVault)?;
        let java = java_for(&jar).expect("peers::require checked that Java is there");
        let token_port = free_port();
        let mut server = Server {
            jar,
            java,
            dir,
            port: free_port(),
            token_port,
            shim: TokenShim::start(token_port),
            child: None,
        };
        server.make_certificate();
        server.spawn();
        Some(server)
    }

    /// An RSA server certificate for `localhost` and `127.0.0.1`, not a CA, in a PKCS#12 store
    /// (the temporary directory's path has no spaces).
    fn make_certificate(&self) {
        let dir = self.dir.path().to_str().expect("UTF-8");
        for (what, args) in [
            (
                "req",
                format!(
                    "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
                     -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
                     -addext basicConstraints=critical,CA:FALSE \
                     -addext keyUsage=critical,digitalSignature,keyEncipherment \
                     -addext extendedKeyUsage=serverAuth \
                     -keyout {dir}/server.key -out {dir}/server.pem"
                ),
            ),
            (
                "pkcs12",
                format!(
                    "pkcs12 -export -in {dir}/server.pem -inkey {dir}/server.key \
                     -name lowkey-vault -out {dir}/server.p12 -passout pass:{STORE_PASSWORD}"
                ),
            ),
        ] {
            let output = openssl(args.split_whitespace());
            assert!(
                output.status.success(),
                "openssl {what}: {}",
                stderr_text(&output)
            );
        }
    }

    pub(super) fn export_path(&self) -> PathBuf {
        self.dir.path().join("vault-export.json")
    }

    fn spawn(&mut self) {
        let store = self.dir.path().join("server.p12");
        let aot = std::env::var_os(AOT_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the lowkey-vault log");
        let child = crate::process::spawn_tied_to_this_process(&self.java, |command| {
            match &aot {
                // Made by scripts/test for this jar: the JVM starts 2-3 times faster. A cache
                // that does not fit is ignored with a warning in the log.
                Some(cache) => command.arg(format!("-XX:AOTCache={}", cache.display())),
                None => command.arg("-Xshare:auto"),
            };
            command
                .arg("-jar")
                .arg(&self.jar)
                .arg(format!("--server.port={}", self.port))
                .arg(format!("--app.token.port={}", self.token_port))
                .arg("--server.address=127.0.0.1")
                .arg(format!("--server.ssl.key-store=file:{}", store.display()))
                .arg(format!("--server.ssl.key-store-password={STORE_PASSWORD}"))
                .arg("--server.ssl.key-alias=lowkey-vault")
                .arg(format!(
                    "--LOWKEY_EXPORT_LOCATION={}",
                    self.export_path().display()
                ));
            if self.export_path().is_file() {
                // The export holds every vault: registering them again would clash.
                command
                    .arg(format!(
                        "--LOWKEY_IMPORT_LOCATION={}",
                        self.export_path().display()
                    ))
                    .arg("--LOWKEY_VAULT_NAMES=-");
            }
            command
                .env_clear()
                .env("HOME", self.dir.path())
                .env("PATH", "/usr/bin:/bin")
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup the log"))
                .stderr(log);
        });
        self.child = Some(child);
        self.wait_until_serving();
    }

    fn wait_until_serving(&mut self) {
        let started_before = self.log().matches("Started LowkeyVaultApp").count();
        let (port, token_port) = (self.port, self.token_port);
        crate::wait::until(
            &format!("lowkey-vault to serve on ports {port} and {token_port}"),
            START_TIMEOUT,
            || {
                let child = self.child.as_mut().expect("the server is running");
                if let Some(status) = child.try_wait().expect("wait for java") {
                    panic!(
                        "lowkey-vault exited with {status} before it served; its log:\n{}",
                        self.log()
                    );
                }
                let listening = [port, token_port].iter().all(|port| {
                    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
                    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
                });
                let log = self.log();
                if listening && log.matches("Started LowkeyVaultApp").count() > started_before {
                    Ok(())
                } else {
                    Err(log)
                }
            },
        );
    }

    /// The server's certificate (PEM), the CA file to trust.
    pub(super) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("lowkey-vault.log")
    }

    /// Everything the server printed.
    pub(super) fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// Registers one more vault, `https://127.0.0.1:<port>`: lowkey-vault picks the vault by
    /// the Host header, port included.
    pub(super) fn add_vault(&self, port: u16) {
        let body = json!({
            "baseUri": format!("https://127.0.0.1:{port}"),
            "recoveryLevel": "Recoverable",
            "recoverableDays": 90,
        });
        let url = format!("https://127.0.0.1:{}/management/vault", self.port);
        let (status, answer) = super::curl(&self.ca_file(), "POST", &url, Some(&body));
        assert_eq!(status, 200, "create the vault on port {port}: {answer}");
    }

    /// Stops the server (SIGTERM, then SIGKILL after 15 s) and waits for it.
    pub(super) fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::process::terminate(child, Duration::from_secs(15));
        }
    }

    pub(super) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts a stopped server again on the same ports, with the keys it had unless `empty`.
    pub(super) fn start_again(&mut self, empty: bool) {
        assert!(self.child.is_none(), "stop the server first");
        if empty {
            let _ = fs::remove_file(self.export_path());
        }
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
