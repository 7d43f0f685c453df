//! `keyward-plugin-pgp`: the pgp backend as a plugin process. keywardd starts it; see
//! docs/pgp.md and docs/plugins.md.
//!
//! With `--check-openpgp-cert` it is instead the daemon's OpenPGP certificate checker
//! (`KeyAdmin.AttachOpenPgpCertificate`): one request on stdin, one answer on stdout
//! ([`keyward_plugin_api::plugin::openpgp`]), so keywardd itself links no OpenPGP code.

use keyward_plugin_api::plugin::openpgp::{
    CHECK_OPENPGP_ARG, CertificateAnswer, CertificateProblem, run_certificate_check,
};
use keyward_plugin_pgp::{CertificateError, check_certificate_for};

fn main() -> std::process::ExitCode {
    if std::env::args().skip(1).any(|arg| arg == CHECK_OPENPGP_ARG) {
        return run_certificate_check(|request| {
            match check_certificate_for(
                &request.certificate,
                &request.public_key_der,
                request.now_valid,
            ) {
                Ok((certificate, fingerprint)) => {
                    CertificateAnswer::accepted(certificate, fingerprint)
                }
                Err(CertificateError::Invalid(message)) => {
                    CertificateAnswer::refused(CertificateProblem::Invalid, message)
                }
                Err(CertificateError::NotValidNow(message)) => {
                    CertificateAnswer::refused(CertificateProblem::NotValidNow, message)
                }
            }
        });
    }
    keyward_plugin_api::plugin::run(keyward_plugin_pgp::PgpBackend::new)
}
