//! Test certificate authorities made with the `openssl` CLI: a CA, server certificates for
//! 127.0.0.1 and client certificates (valid or expired) for the mutual-TLS listener.

use std::path::{Path, PathBuf};

use crate::{openssl, set_mode, stderr_text};

/// A certificate and its private key, PEM files.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The certificate.
    pub cert: PathBuf,
    /// The private key (mode 0600).
    pub key: PathBuf,
}

impl Leaf {
    /// The certificate's PEM.
    pub fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert).expect("read certificate")
    }

    /// The key's PEM.
    pub fn key_pem(&self) -> Vec<u8> {
        std::fs::read(&self.key).expect("read key")
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server (SAN IP:127.0.0.1, serverAuth).
    Server,
    /// A TLS client (clientAuth).
    Client,
}

/// A CA in its own directory, issuing with `openssl ca` (which can set any validity).
#[derive(Debug)]
pub struct Ca {
    dir: PathBuf,
    /// The CA certificate (PEM).
    pub cert: PathBuf,
    key: PathBuf,
    issued: std::cell::Cell<u32>,
}

fn run(args: &[&str]) {
    let output = openssl(args);
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        stderr_text(&output)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

impl Ca {
    /// A new self-signed P-256 CA named `name`, in `dir/<name>/`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir CA");
        let cert = dir.join("ca.pem");
        let key = dir.join("ca.key");
        run(&[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            p(&key),
            "-out",
            p(&cert),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        std::fs::write(dir.join("index.txt"), "").expect("index");
        std::fs::write(dir.join("serial"), "1000\n").expect("serial");
        std::fs::write(
            dir.join("ca.cnf"),
            format!(
                "[ ca ]\ndefault_ca = this\n[ this ]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\nserial = {d}/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\nemail_in_dn = no\ncopy_extensions = none\n[ any ]\ncommonName = supplied\n",
                d = p(&dir)
            ),
        )
        .expect("ca.cnf");
        Ca {
            dir,
            cert,
            key,
            issued: std::cell::Cell::new(0),
        }
    }

    /// The CA certificate's PEM.
    pub fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert).expect("read CA certificate")
    }

    /// Issues a certificate for `/CN=<cn>` with `sans` (`URI:spiffe://...`, `DNS:x`), valid
    /// from now for a day, or for `dates` (`YYYYMMDDHHMMSSZ` start and end) when given.
    pub fn issue(
        &self,
        cn: &str,
        usage: Usage,
        sans: &[&str],
        dates: Option<(&str, &str)>,
    ) -> Leaf {
        let n = self.issued.get() + 1;
        self.issued.set(n);
        let base = self.dir.join(format!("leaf-{n}"));
        let key = base.with_extension("key");
        let csr = base.with_extension("csr");
        let cert = base.with_extension("pem");
        run(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            p(&key),
            "-out",
            p(&csr),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        set_mode(&key, 0o600);
        let mut sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let eku = match usage {
            Usage::Server => {
                sans.push("IP:127.0.0.1".into());
                "serverAuth"
            }
            Usage::Client => "clientAuth",
        };
        let mut ext = format!(
            "[ leaf ]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = {eku}\n"
        );
        if !sans.is_empty() {
            ext.push_str(&format!("subjectAltName = {}\n", sans.join(", ")));
        }
        let ext_file = base.with_extension("ext");
        std::fs::write(&ext_file, ext).expect("write extensions");
        let config = self.dir.join("ca.cnf");
        let mut args = vec![
            "ca",
            "-batch",
            "-notext",
            "-config",
            p(&config),
            "-cert",
            p(&self.cert),
            "-keyfile",
            p(&self.key),
            "-in",
            p(&csr),
            "-out",
            p(&cert),
            "-extfile",
            p(&ext_file),
            "-extensions",
            "leaf",
        ];
        match dates {
            Some((start, end)) => args.extend(["-startdate", start, "-enddate", end]),
            None => args.extend(["-days", "1"]),
        }
        run(&args);
        Leaf { cert, key }
    }
}
