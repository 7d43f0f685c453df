//! `keyward-plugin-pgp --check-openpgp-cert`: the daemon's OpenPGP certificate checks, run in
//! the pgp plugin's executable so that keywardd links no OpenPGP implementation.
//!
//! keywardd writes one [`CertificateCheck`] as JSON on the program's stdin and reads one
//! [`CertificateAnswer`] line from its stdout; the program exits 0 either way (a refused
//! certificate is an answer, not a failure). It creates nothing, reads no secret, and opens no
//! connection.

use std::io::{Read, Write};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

/// The argument that selects the certificate check.
pub const CHECK_OPENPGP_ARG: &str = "--check-openpgp-cert";
/// The longest certificate the daemon sends (and the plugin reads).
pub const MAX_CERTIFICATE_BYTES: usize = 1 << 20;

/// What to check: is `certificate` (binary or armored) the certificate of the key
/// `public_key_der` (a SubjectPublicKeyInfo), through its primary key or a signing subkey, and,
/// with `now_valid`, valid now (not expired, not revoked)?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateCheck {
    /// The certificate as the caller gave it.
    pub certificate: Vec<u8>,
    /// The key's public key.
    pub public_key_der: Vec<u8>,
    /// Whether it must be usable now.
    pub now_valid: bool,
}

/// Why a certificate is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateProblem {
    /// Not a certificate, not valid under the standard policy, or not one for this key.
    Invalid,
    /// A certificate for this key that cannot be used now: expired or revoked.
    NotValidNow,
}

/// The answer: the certificate (binary, without anything but the certificate) and its
/// fingerprint, or the problem and a message that says what to do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateAnswer {
    /// Always 1: marks the line as an answer of this protocol version.
    pub keyward_check: u32,
    /// The certificate, binary, when accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate: Vec<u8>,
    /// Its fingerprint (upper-case hex), when accepted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<CertificateProblem>,
    /// What is wrong, when refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl CertificateAnswer {
    /// The certificate of the key, accepted.
    pub fn accepted(certificate: Vec<u8>, fingerprint: String) -> Self {
        CertificateAnswer {
            keyward_check: 1,
            certificate,
            fingerprint,
            ..CertificateAnswer::default()
        }
    }

    /// Refused, and why.
    pub fn refused(problem: CertificateProblem, message: impl Into<String>) -> Self {
        CertificateAnswer {
            keyward_check: 1,
            problem: Some(problem),
            message: message.into(),
            ..CertificateAnswer::default()
        }
    }

    /// Parses the program's stdout; `None` when it is not an answer.
    pub fn parse(stdout: &[u8]) -> Option<Self> {
        let line = stdout.split(|&b| b == b'\n').find(|l| !l.is_empty())?;
        serde_json::from_slice::<CertificateAnswer>(line)
            .ok()
            .filter(|answer| answer.keyward_check == 1)
    }
}

/// The whole `--check-openpgp-cert` mode: reads the request on stdin, answers with `check`'s
/// verdict on stdout. Exit 2 only when the request itself cannot be read.
pub fn run_certificate_check(
    check: impl FnOnce(&CertificateCheck) -> CertificateAnswer,
) -> ExitCode {
    let mut text = Vec::new();
    let read = std::io::stdin()
        .take(4 * MAX_CERTIFICATE_BYTES as u64)
        .read_to_end(&mut text);
    let request = match read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice::<CertificateCheck>(&text).map_err(|e| e.to_string()))
    {
        Ok(request) => request,
        Err(e) => {
            eprintln!("{CHECK_OPENPGP_ARG}: cannot read the request on stdin: {e}");
            return ExitCode::from(2);
        }
    };
    let answer = if request.certificate.len() > MAX_CERTIFICATE_BYTES {
        CertificateAnswer::refused(
            CertificateProblem::Invalid,
            format!(
                "the certificate is {} bytes; at most {MAX_CERTIFICATE_BYTES} are accepted",
                request.certificate.len()
            ),
        )
    } else {
        check(&request)
    };
    let line = serde_json::to_string(&answer).unwrap_or_else(|_| "{}".into());
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip() {
        let accepted = CertificateAnswer::accepted(vec![1, 2], "ABCD".into());
        let line = serde_json::to_vec(&accepted).unwrap();
        assert_eq!(CertificateAnswer::parse(&line), Some(accepted));
        let refused = CertificateAnswer::refused(CertificateProblem::NotValidNow, "expired");
        let line = serde_json::to_string(&refused).unwrap();
        assert!(line.contains(r#""problem":"not_valid_now""#), "{line}");
        assert_eq!(CertificateAnswer::parse(line.as_bytes()), Some(refused));
        assert_eq!(CertificateAnswer::parse(b"usage: ..."), None);
    }
}
