//! One `SSH_AGENTC_SIGN_REQUEST` as a request to the signing core, and the signature in SSH's
//! encoding.
//!
//! What the agent signs is told apart the way OpenSSH's own agent parses it: an SSHSIG blob
//! (`ssh-keygen -Y sign`, git) carries its namespace; a login is an `SSH_MSG_USERAUTH_REQUEST`
//! for the `publickey` method. That becomes the request's `purpose` (`ssh:sig:<namespace>`,
//! `ssh:auth`, or `ssh:other`), which the audit log records and the policies' `purpose`
//! pattern matches. The gRPC API refuses purposes that start with `ssh:`, so a policy that
//! allows `ssh:sig:git` allows git signatures made through this socket and nothing else.

use keyward_plugin_api::{KeySpec, SignatureAlgorithm};
use sha2::Digest;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, Mpint, Signature};

/// `SSH_AGENT_RSA_SHA2_256`: sign with `rsa-sha2-256`.
pub const RSA_SHA2_256: u32 = 2;
/// `SSH_AGENT_RSA_SHA2_512`: sign with `rsa-sha2-512`.
pub const RSA_SHA2_512: u32 = 4;
/// `SSH_MSG_USERAUTH_REQUEST`.
const USERAUTH_REQUEST: u8 = 50;
/// The longest SSHSIG namespace accepted (the purpose must stay under 256 bytes).
pub const MAX_NAMESPACE_LEN: usize = 128;

/// What the data to sign is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// A public-key login (`SSH_MSG_USERAUTH_REQUEST`): its session id and user.
    Login {
        /// The SSH session identifier the signature is bound to.
        session_id: Vec<u8>,
        /// The user the client logs in as.
        user: String,
    },
    /// An SSHSIG signature (`ssh-keygen -Y sign`, git) in this namespace.
    Sshsig {
        /// `git`, `file`, ...: printable ASCII, no spaces.
        namespace: String,
    },
    /// Anything else (an SSH certificate being issued with `ssh-keygen -s -U`, ...).
    Other,
}

impl Intent {
    /// The request's `purpose`: `ssh:auth`, `ssh:sig:<namespace>` or `ssh:other`.
    pub fn purpose(&self) -> String {
        match self {
            Intent::Login { .. } => "ssh:auth".into(),
            Intent::Sshsig { namespace } => format!("ssh:sig:{namespace}"),
            Intent::Other => "ssh:other".into(),
        }
    }
}

/// A cursor over SSH wire data (RFC 4251 `string`, `byte`, `boolean`).
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let body = self.0.get(4..4usize.checked_add(len)?)?;
        self.0 = &self.0[4 + len..];
        Some(body)
    }
}

/// What `data` is (see [`Intent`]). An SSHSIG blob that is malformed, or whose namespace is
/// empty, too long or not printable ASCII, is refused.
pub fn classify(data: &[u8]) -> Result<Intent, String> {
    if let Some(rest) = data.strip_prefix(b"SSHSIG") {
        let mut wire = Wire(rest);
        let namespace = wire
            .string()
            .ok_or("the data starts like an SSHSIG blob but is malformed")?;
        let (_reserved, _hash, _digest) = (wire.string(), wire.string(), wire.string());
        if _digest.is_none() || !wire.0.is_empty() {
            return Err("the data starts like an SSHSIG blob but is malformed".into());
        }
        if namespace.is_empty()
            || namespace.len() > MAX_NAMESPACE_LEN
            || !namespace.iter().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "the SSHSIG namespace must be 1 to {MAX_NAMESPACE_LEN} printable ASCII characters without spaces (ssh-keygen -Y sign -n NAMESPACE)"
            ));
        }
        let namespace = String::from_utf8(namespace.to_vec()).expect("ASCII is UTF-8");
        return Ok(Intent::Sshsig { namespace });
    }
    Ok(login(data).unwrap_or(Intent::Other))
}

/// An `SSH_MSG_USERAUTH_REQUEST` for the `publickey` method (RFC 4252 section 7; OpenSSH's
/// host-bound variant too), as ssh signs it: `string session_id, byte 50, string user,
/// string service, string method, boolean TRUE, string algorithm, string key[, string host key]`.
fn login(data: &[u8]) -> Option<Intent> {
    let mut wire = Wire(data);
    let session_id = wire.string()?;
    if session_id.is_empty() || session_id.len() > 64 || wire.byte()? != USERAUTH_REQUEST {
        return None;
    }
    let user = wire.string()?;
    let _service = wire.string()?;
    let method = wire.string()?;
    if method != b"publickey" && method != b"publickey-hostbound-v00@openssh.com" {
        return None;
    }
    if wire.byte()? == 0 {
        return None;
    }
    Some(Intent::Login {
        session_id: session_id.to_vec(),
        user: String::from_utf8_lossy(user).into_owned(),
    })
}

/// How the core signs for a request: the algorithm, and the input (a digest of `data` with
/// the algorithm's hash, or `data` itself for Ed25519).
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The core's algorithm.
    pub algorithm: SignatureAlgorithm,
    /// The digest to sign; `None`: sign the data itself (Ed25519).
    pub digest: Option<Vec<u8>>,
}

/// The algorithm a key of `spec` signs with for `flags`: Ed25519; ECDSA with the curve's
/// hash (SHA-256, SHA-384, SHA-512 for P-256, P-384, P-521, RFC 5656); RSA with
/// `rsa-sha2-256` or `rsa-sha2-512` (RFC 8332). A request for a SHA-1 `ssh-rsa` signature
/// (an RSA key and neither flag) is refused.
pub fn plan(spec: KeySpec, flags: u32, data: &[u8]) -> Result<Plan, String> {
    let algorithm = match spec {
        KeySpec::Ed25519 => {
            return Ok(Plan {
                algorithm: SignatureAlgorithm::Ed25519,
                digest: None,
            });
        }
        KeySpec::EcP256 => SignatureAlgorithm::EcdsaSha256,
        KeySpec::EcP384 => SignatureAlgorithm::EcdsaSha384,
        KeySpec::EcP521 => SignatureAlgorithm::EcdsaSha512,
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            if flags & RSA_SHA2_256 != 0 {
                SignatureAlgorithm::RsaPkcs1Sha256
            } else if flags & RSA_SHA2_512 != 0 {
                SignatureAlgorithm::RsaPkcs1Sha512
            } else {
                return Err("the client asked for an ssh-rsa signature (SHA-1), which keyward never makes; use a client that asks for rsa-sha2-256 or rsa-sha2-512 (OpenSSH 7.2 or later)".into());
            }
        }
    };
    let digest = match algorithm.hash() {
        Some(keyward_plugin_api::HashAlgorithm::Sha256) => sha2::Sha256::digest(data).to_vec(),
        Some(keyward_plugin_api::HashAlgorithm::Sha384) => sha2::Sha384::digest(data).to_vec(),
        Some(keyward_plugin_api::HashAlgorithm::Sha512) | None => {
            sha2::Sha512::digest(data).to_vec()
        }
    };
    Ok(Plan {
        algorithm,
        digest: Some(digest),
    })
}

/// The signature in SSH's encoding: Ed25519's 64 bytes; ECDSA's raw `r‖s` (fixed length, as
/// the core returns it when asked for `Raw`) as `mpint r, mpint s`; RSA's bytes.
pub fn encode(
    spec: KeySpec,
    algorithm: SignatureAlgorithm,
    signature: Vec<u8>,
) -> Result<Signature, String> {
    let bad = |e: ssh_key::Error| format!("cannot encode the signature for SSH: {e}");
    let (ssh_algorithm, blob) = match spec {
        KeySpec::Ed25519 => (Algorithm::Ed25519, signature),
        KeySpec::EcP256 | KeySpec::EcP384 | KeySpec::EcP521 => {
            let curve = match spec {
                KeySpec::EcP256 => EcdsaCurve::NistP256,
                KeySpec::EcP384 => EcdsaCurve::NistP384,
                _ => EcdsaCurve::NistP521,
            };
            let half = spec.ecdsa_field_len().unwrap_or(0);
            if signature.len() != 2 * half {
                return Err(format!(
                    "the ECDSA signature is {} bytes, not the {} of r and s",
                    signature.len(),
                    2 * half
                ));
            }
            let (r, s) = signature.split_at(half);
            let mut blob = Vec::with_capacity(2 * half + 10);
            for part in [r, s] {
                let mpint = Mpint::from_positive_bytes(part).map_err(bad)?;
                ssh_encoding::Encode::encode(&mpint, &mut blob)
                    .map_err(|e| format!("cannot encode the signature for SSH: {e}"))?;
            }
            (Algorithm::Ecdsa { curve }, blob)
        }
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let hash = match algorithm {
                SignatureAlgorithm::RsaPkcs1Sha512 => HashAlg::Sha512,
                _ => HashAlg::Sha256,
            };
            (Algorithm::Rsa { hash: Some(hash) }, signature)
        }
    };
    Signature::new(ssh_algorithm, blob).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    fn sshsig(namespace: &[u8]) -> Vec<u8> {
        let mut blob = b"SSHSIG".to_vec();
        for part in [namespace, b"", b"sha512", &[7u8; 64]] {
            string(&mut blob, part);
        }
        blob
    }

    fn userauth(method: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        string(&mut data, &[1u8; 32]);
        data.push(USERAUTH_REQUEST);
        for part in [b"git" as &[u8], b"ssh-connection", method] {
            string(&mut data, part);
        }
        data.push(1);
        string(&mut data, b"ssh-ed25519");
        string(&mut data, b"key blob");
        data
    }

    #[test]
    fn the_data_says_what_it_is_for() {
        let check = |data: &[u8], expect: Result<&str, &str>| match (classify(data), expect) {
            (Ok(intent), Ok(purpose)) => assert_eq!(intent.purpose(), purpose),
            (Err(e), Err(needle)) => assert!(e.contains(needle), "{e}"),
            (got, _) => panic!("{got:?} for {data:?}"),
        };
        check(&sshsig(b"git"), Ok("ssh:sig:git"));
        check(&sshsig(b"file"), Ok("ssh:sig:file"));
        check(&sshsig(b"auth"), Ok("ssh:sig:auth"));
        check(&userauth(b"publickey"), Ok("ssh:auth"));
        check(
            &userauth(b"publickey-hostbound-v00@openssh.com"),
            Ok("ssh:auth"),
        );
        check(&userauth(b"password"), Ok("ssh:other"));
        check(b"", Ok("ssh:other"));
        check(b"anything at all", Ok("ssh:other"));
        check(&sshsig(b""), Err("printable ASCII"));
        check(&sshsig(b"git commit"), Err("printable ASCII"));
        check(&sshsig(b"\x1b[31m"), Err("printable ASCII"));
        check(&sshsig(&[b'n'; 129]), Err("1 to 128"));
        check(b"SSHSIG\0\0\0\x09git", Err("malformed"));
        let mut trailing = sshsig(b"git");
        trailing.push(0);
        check(&trailing, Err("malformed"));
        assert_eq!(
            classify(&userauth(b"publickey")).unwrap(),
            Intent::Login {
                session_id: vec![1u8; 32],
                user: "git".into()
            }
        );
    }

    #[test]
    fn each_key_type_signs_with_its_ssh_algorithm() {
        let data = b"data";
        let p = plan(KeySpec::Ed25519, 0, data).unwrap();
        assert_eq!((p.algorithm, p.digest), (SignatureAlgorithm::Ed25519, None));
        for (spec, algorithm, len) in [
            (KeySpec::EcP256, SignatureAlgorithm::EcdsaSha256, 32),
            (KeySpec::EcP384, SignatureAlgorithm::EcdsaSha384, 48),
            (KeySpec::EcP521, SignatureAlgorithm::EcdsaSha512, 64),
        ] {
            let p = plan(spec, RSA_SHA2_256, data).unwrap();
            assert_eq!(p.algorithm, algorithm);
            assert_eq!(p.digest.unwrap().len(), len);
        }
        let p = plan(KeySpec::Rsa2048, RSA_SHA2_256, data).unwrap();
        assert_eq!(p.algorithm, SignatureAlgorithm::RsaPkcs1Sha256);
        assert_eq!(p.digest.unwrap(), sha2::Sha256::digest(data).to_vec());
        let p = plan(KeySpec::Rsa4096, RSA_SHA2_512, data).unwrap();
        assert_eq!(p.algorithm, SignatureAlgorithm::RsaPkcs1Sha512);
        let err = plan(KeySpec::Rsa3072, 0, data).unwrap_err();
        assert!(err.contains("ssh-rsa signature (SHA-1)"), "{err}");
    }

    #[test]
    fn ecdsa_signatures_become_two_mpints() {
        // r with its top bit set gets a leading zero; s with leading zeros loses them.
        let mut raw = vec![0x80u8; 32];
        raw.extend([0u8, 0, 5].iter().chain(&[1u8; 29]));
        let signature = encode(
            KeySpec::EcP256,
            SignatureAlgorithm::EcdsaSha256,
            raw.clone(),
        )
        .unwrap();
        assert_eq!(signature.algorithm().as_str(), "ecdsa-sha2-nistp256");
        let blob = signature.as_bytes();
        assert_eq!(&blob[..5], &[0, 0, 0, 33, 0]);
        assert_eq!(&blob[5..37], &raw[..32]);
        assert_eq!(&blob[37..42], &[0, 0, 0, 30, 5]);
        assert!(
            encode(
                KeySpec::EcP256,
                SignatureAlgorithm::EcdsaSha256,
                vec![1; 63]
            )
            .is_err()
        );
        let rsa = encode(
            KeySpec::Rsa2048,
            SignatureAlgorithm::RsaPkcs1Sha512,
            vec![1; 256],
        )
        .unwrap();
        assert_eq!(rsa.algorithm().as_str(), "rsa-sha2-512");
    }
}
