//! An agent for the module's tests: keys in the local backend and in SoftHSM (through the
//! agent's pkcs11 backend), a CA key with certificates for two of them, the public keys as
//! PEM files.

use std::path::{Path, PathBuf};
use std::process::Output;

use keyward_sdk::KeySpec;

use crate::softhsm::{self, PIN, PIN_ENV, SO_PIN, SoftHsm};
use crate::{
    DaemonBuilder, TestDaemon, openssl, openssl_genpkey, run_cli, set_mode, stderr_text,
    stdout_text,
};

/// Keys in the local backend (`ca` issues certificates for `ec` and `hsm-rsa`) and in SoftHSM.
pub const LOCAL_KEYS: [(&str, KeySpec); 4] = [
    ("ec", KeySpec::EcP256),
    ("rsa", KeySpec::Rsa2048),
    ("ed", KeySpec::Ed25519),
    ("ca", KeySpec::EcP256),
];
pub const HSM_KEYS: [(&str, KeySpec); 2] =
    [("hsm-ec", KeySpec::EcP384), ("hsm-rsa", KeySpec::Rsa2048)];
/// Keys for libp11 (the OpenSSL engine, osslsigncode): libp11 0.4.12 stops enumerating a
/// token at the first key type it does not know (Ed25519), so the module shows it these only.
pub const LIBP11_KEYS: &str = "ec,rsa,ca,hsm-ec,hsm-rsa";

/// A running agent with the keys above, their public keys in `<work>/<id>.pub`, and the CA
/// certificate in `<work>/ca.pem`.
#[derive(Debug)]
pub struct Agent {
    daemon: TestDaemon,
    _hsm: SoftHsm,
    work: tempfile::TempDir,
}

impl Agent {
    /// Starts it; `None` (after a `skipped:` line) when SoftHSM is not installed.
    pub async fn start() -> Option<Agent> {
        crate::peers::require(crate::peers::Peer::SoftHsm)?;
        let hsm = SoftHsm::new();
        hsm.init_token("p11mod", SO_PIN, PIN);
        let daemon = DaemonBuilder::new()
            .extra_toml(&hsm.backend_toml("p11mod", ""))
            .env("SOFTHSM2_CONF", hsm.conf().to_str().expect("UTF-8 path"))
            .env(PIN_ENV, PIN)
            .start()
            .await;
        let client = daemon.client().await;
        for (id, spec) in LOCAL_KEYS {
            client
                .generate_key("local", id, spec)
                .await
                .expect("generate");
        }
        for (id, spec) in HSM_KEYS {
            client
                .generate_key(softhsm::BACKEND, id, spec)
                .await
                .expect("generate");
        }
        let work = tempfile::tempdir().expect("temp dir");
        let ca = work.path().join("ca.pem");
        let issue = |args: &[&str]| {
            let output = run_cli(&daemon, args);
            assert!(
                output.status.success(),
                "keyward {args:?}: {}",
                stderr_text(&output)
            );
        };
        let subject = "C=US,ST=WA,O=Example,CN=Example Code Signing CA";
        issue(&[
            "cert",
            "issue",
            "--key",
            "ca",
            "--self-signed-ca",
            "--subject",
            subject,
            "--output",
            ca.to_str().unwrap(),
        ]);
        for id in ["ec", "hsm-rsa"] {
            issue(&[
                "cert",
                "issue",
                "--key",
                id,
                "--ca",
                "ca",
                "--subject",
                &format!("C=US,ST=WA,O=Example,CN={id}"),
            ]);
        }
        for (id, _) in LOCAL_KEYS.iter().chain(&HSM_KEYS) {
            let key = client.public_key(id).await.expect("public key");
            std::fs::write(work.path().join(format!("{id}.pub")), key.pem).unwrap();
        }
        Some(Agent {
            daemon,
            _hsm: hsm,
            work,
        })
    }

    /// The agent's socket.
    pub fn socket(&self) -> &Path {
        self.daemon.socket()
    }

    /// The work directory.
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    /// A path in the work directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Writes a file in the work directory.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.file(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

/// Asserts that a command succeeded, with its output otherwise.
pub fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        stdout_text(output),
        stderr_text(output)
    );
}

/// `openssl dgst -<hash> -verify <key>.pub -signature SIG DATA` (with `options` as -sigopt).
pub fn openssl_verify(
    agent: &Agent,
    key: &str,
    hash: &str,
    options: &[&str],
    sig: &Path,
    data: &Path,
) -> Output {
    let public = agent.file(&format!("{key}.pub"));
    let mut args: Vec<String> = vec![
        "dgst".into(),
        format!("-{hash}"),
        "-verify".into(),
        public.display().to_string(),
    ];
    for option in options {
        args.extend(["-sigopt".into(), option.to_string()]);
    }
    args.extend([
        "-signature".into(),
        sig.display().to_string(),
        data.display().to_string(),
    ]);
    openssl(&args)
}

/// A self-signed CA certificate `<dir>/<name>.pem` that issued nothing here: verification
/// against it must fail.
pub fn stranger_ca(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(format!("{name}.key"));
    openssl_genpkey(
        &key,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let cert = dir.join(format!("{name}.pem"));
    let subject = format!("/CN={name}");
    let made = openssl([
        "req",
        "-x509",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        &subject,
        "-days",
        "2",
        "-out",
        cert.to_str().unwrap(),
    ]);
    assert_ok(&made, "openssl req -x509");
    cert
}

/// A P-256 key file `keys/<id>.pem` and its `[[key]]` with `policy` lines.
pub fn key_with_policy(builder: DaemonBuilder, id: &str, policy: &str) -> DaemonBuilder {
    let keys = builder.dir().join("keys");
    if !keys.exists() {
        std::fs::create_dir(&keys).unwrap();
        set_mode(&keys, 0o700);
    }
    openssl_genpkey(
        &keys.join(format!("{id}.pem")),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    builder.extra_toml(&format!(
        "[[key]]\nid = \"{id}\"\nbackend = \"local\"\nref = \"{id}\"\n[key.policy]\n{policy}\n"
    ))
}
