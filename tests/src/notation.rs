//! The Notation end-to-end harness: the real `notation` CLI (v1.3.2) with a hermetic config
//! and plugin directory, a real distribution registry (Debian's `docker-registry`) on a free
//! loopback port with a temporary storage root, and a minimal plain-HTTP client to push blobs
//! and manifests to it.
//!
//! Tools are found through `KEYWARD_TEST_NOTATION` (else `~/.cache/keyward/bin/notation`) and
//! `KEYWARD_TEST_REGISTRY` (else `/usr/bin/docker-registry`) by [`crate::peers::require`]; when
//! one is missing, [`tools`] prints `skipped: ...` and the test returns (under CI it fails).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::peers::{Peer, require};
use crate::{COMMAND_TIMEOUT, TestDaemon, binary, run_with_timeout, stderr_text, stdout_text};

/// The OCI image manifest media type.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index media type.
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// The notation and registry executables.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `notation` v1.3.2.
    pub notation: PathBuf,
    /// distribution's registry (`docker-registry` on Debian).
    pub registry: PathBuf,
}

/// The tools, through [`crate::peers::require`]: `None` after printing why the test is skipped
/// (a panic under CI).
pub fn tools() -> Option<Tools> {
    let notation = require(Peer::Notation)?;
    let registry = require(Peer::Registry)?;
    Some(Tools { notation, registry })
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A registry on `127.0.0.1:<free port>`, storing into a temporary directory; killed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Registry {
    /// Starts the registry and waits until `GET /v2/` answers.
    pub fn start(tools: &Tools) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("keyward-registry-")
            .tempdir()
            .expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write the registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(&tools.registry)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", tools.registry.display()));
        let registry = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok((200, _)) = registry.request("GET", "/v2/", None, &[]) {
                return registry;
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not answer on port {port}; its log:\n{}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `localhost:<port>`: notation talks plain HTTP to `localhost` without being told.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// One HTTP/1.1 request; returns the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        self.exchange(method, path, content_type, body)
            .map(|(status, _, body)| (status, body))
    }

    /// One HTTP/1.1 request; returns the status, the `Location` header and the body.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Option<String>, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\nAccept: {MANIFEST_TYPE}, {INDEX_TYPE}\r\n",
            self.port,
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
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let location = text
            .lines()
            .take_while(|line| !line.is_empty())
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("location")
                    .then(|| value.trim().to_string())
            });
        let body = match response.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => response[at + 4..].to_vec(),
            None => Vec::new(),
        };
        Ok((status, location, body))
    }

    /// Uploads a blob in one request; returns its digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        let (status, location, body) = self
            .exchange("POST", &format!("/v2/{repo}/blobs/uploads/"), None, &[])
            .expect("start a blob upload");
        let location = match (status, location) {
            (202, Some(location)) => location,
            _ => panic!(
                "blob upload to {repo}: status {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        };
        // The location may be absolute; keep the path and query.
        let location = match location.find("/v2/") {
            Some(at) => location[at..].to_string(),
            None => location,
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let (status, body) = self
            .request(
                "PUT",
                &format!("{location}{separator}digest={digest}"),
                Some("application/octet-stream"),
                bytes,
            )
            .expect("push a blob");
        assert_eq!(
            status,
            201,
            "blob upload to {repo}: {}",
            String::from_utf8_lossy(&body)
        );
        digest
    }

    /// Puts a manifest under `reference` (a tag or its digest); returns its digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let (status, body) = self
            .request(
                "PUT",
                &format!("/v2/{repo}/manifests/{reference}"),
                Some(media_type),
                bytes,
            )
            .expect("push a manifest");
        assert_eq!(
            status,
            201,
            "manifest upload to {repo}:{reference}: {}",
            String::from_utf8_lossy(&body)
        );
        digest_of(bytes)
    }

    /// Pushes a small image (a config and one layer that names `repo`) tagged `v1`; returns
    /// the manifest bytes and the image reference `localhost:<port>/<repo>@sha256:...`.
    pub fn push_image(&self, repo: &str) -> (Vec<u8>, String) {
        let config = self.push_blob(repo, b"{}");
        let layer_bytes = format!("layer of {repo}\n");
        let layer = self.push_blob(repo, layer_bytes.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{}}}]}}"#,
            layer_bytes.len()
        );
        let digest = self.push_manifest(repo, "v1", MANIFEST_TYPE, manifest.as_bytes());
        (
            manifest.into_bytes(),
            format!("{}/{repo}@{digest}", self.host()),
        )
    }

    /// Stores a Notary signature the way notation v1 does: the empty config, the envelope
    /// blob, the signature manifest (by digest) and the referrers tag `sha256-<hex>` (an index
    /// listing it), since this registry has no referrers API.
    pub fn attach_signature(
        &self,
        repo: &str,
        subject_digest: &str,
        envelope: &[u8],
        manifest: &[u8],
    ) {
        self.push_blob(repo, b"{}");
        self.push_blob(repo, envelope);
        let signature = digest_of(manifest);
        self.push_manifest(repo, &signature, MANIFEST_TYPE, manifest);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": [{
                "mediaType": MANIFEST_TYPE,
                "digest": signature,
                "size": manifest.len(),
                "artifactType": "application/vnd.cncf.notary.signature"
            }]
        })
        .to_string();
        let tag = subject_digest.replace(':', "-");
        self.push_manifest(repo, &tag, INDEX_TYPE, index.as_bytes());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hermetic notation: its own config directory (also the libexec, so plugins live in
/// `<dir>/plugins`), cache and HOME.
#[derive(Debug)]
pub struct Notation {
    bin: PathBuf,
    dir: TempDir,
}

impl Notation {
    /// A fresh configuration for the `notation` at `tools.notation`.
    pub fn new(tools: &Tools) -> Notation {
        let dir = tempfile::Builder::new()
            .prefix("keyward-notation-")
            .tempdir()
            .expect("temp dir");
        Notation {
            bin: tools.notation.clone(),
            dir,
        }
    }

    /// `NOTATION_CONFIG` (= `NOTATION_LIBEXEC`).
    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    fn env(&self, command: &mut Command) {
        let dir = self.dir.path();
        command
            .env("NOTATION_CONFIG", dir)
            .env("NOTATION_LIBEXEC", dir)
            .env("NOTATION_CACHE", dir.join("cache"))
            .env("HOME", dir.join("home"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("KEYWARD_SOCK");
    }

    /// Runs `notation ARGS`.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new(&self.bin);
        command.args(args);
        self.env(&mut command);
        run_with_timeout(command, None, COMMAND_TIMEOUT)
    }

    /// Runs `notation ARGS` and panics with its output unless it succeeds.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let output = self.run(&args);
        assert!(
            output.status.success(),
            "notation {args:?} failed ({}):\n{}{}",
            output.status,
            stdout_text(&output),
            stderr_text(&output)
        );
        stdout_text(&output)
    }

    /// Installs the plugin with `keyward notation install` (which must honour
    /// `NOTATION_LIBEXEC`) and checks that notation lists it.
    pub fn install_plugin(&self, daemon: &TestDaemon) {
        let mut command = crate::cli_command(daemon.socket());
        command.args(["notation", "install"]);
        self.env(&mut command);
        let output = run_with_timeout(command, None, COMMAND_TIMEOUT);
        crate::cli::assert_ok(&output, "keyward notation install");
        let listed = self.ok(["plugin", "ls"]);
        assert!(
            listed.contains("keyward") && listed.contains("SIGNATURE_GENERATOR.RAW"),
            "notation plugin ls:\n{listed}"
        );
    }

    /// `notation key add --plugin keyward --id KEY_ID --plugin-config socket=... NAME`.
    pub fn add_key(&self, name: &str, key_id: &str, socket: &Path) {
        self.ok([
            "key".to_string(),
            "add".into(),
            "--plugin".into(),
            "keyward".into(),
            "--id".into(),
            key_id.into(),
            "--plugin-config".into(),
            format!("socket={}", socket.display()),
            name.into(),
        ]);
    }

    /// Adds the PEM certificate `pem` to the CA trust store `store`.
    pub fn trust_ca(&self, store: &str, pem: &str) {
        self.trust("ca", store, pem);
    }

    /// Adds the PEM certificate `pem` to the trust store `store` of type `kind` (`ca`, `tsa`,
    /// `signingAuthority`).
    pub fn trust(&self, kind: &str, store: &str, pem: &str) {
        let name = format!("{kind}-{store}-{}.pem", &digest_of(pem.as_bytes())[7..19]);
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).expect("write the certificate");
        self.ok([
            "cert".as_ref(),
            "add".as_ref(),
            "--type".as_ref(),
            kind.as_ref(),
            "--store".as_ref(),
            store.as_ref(),
            path.as_os_str(),
        ]);
    }

    /// Imports a trust policy: one strict policy per `(repository, store, identity)`.
    pub fn policy(&self, registry: &Registry, policies: &[(&str, &str, &str)]) {
        let policies: Vec<serde_json::Value> = policies
            .iter()
            .map(|(repo, store, identity)| {
                serde_json::json!({
                    "name": format!("policy-{}", repo.replace('/', "-")),
                    "registryScopes": [format!("{}/{repo}", registry.host())],
                    "signatureVerification": { "level": "strict" },
                    "trustStores": [format!("ca:{store}")],
                    "trustedIdentities": [identity],
                })
            })
            .collect();
        self.import_policies(policies);
    }

    /// Imports a trust policy document made of `policies` (each a `trustPolicies` entry).
    pub fn import_policies(&self, policies: Vec<serde_json::Value>) {
        let document = serde_json::json!({ "version": "1.0", "trustPolicies": policies });
        let path = self.dir.path().join("policy-import.json");
        std::fs::write(&path, document.to_string()).expect("write the policy");
        self.ok([
            "policy".as_ref(),
            "import".as_ref(),
            "--force".as_ref(),
            path.as_os_str(),
        ]);
    }
}

/// Starts `binary("notation-keyward")` with `command`, `stdin` and `env`, returning its output.
pub fn run_plugin(command: &str, stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut process = Command::new(binary("notation-keyward"));
    process.arg(command).env_remove("KEYWARD_SOCK");
    for (name, value) in env {
        process.env(name, value);
    }
    run_with_timeout(process, Some(stdin), COMMAND_TIMEOUT)
}
