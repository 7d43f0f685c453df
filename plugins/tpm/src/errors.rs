//! What a TSS return code means for keyward: which failures mean the TPM cannot be reached (drop
//! the connection, answer UNAVAILABLE), which mean an authorization value was refused (never
//! sent again), the dictionary-attack lockout, and the rest. Messages name the `TPM_RC_*` code
//! and never carry an authorization value.

/// How keyward treats a failed TSS call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The TPM could not be reached or the connection broke (a TCTI failure, a malformed or
    /// missing answer, a TPM that was reset under us): the connection is dropped and rebuilt
    /// on the next call.
    Transport,
    /// TPM_RC_AUTH_FAIL / TPM_RC_BAD_AUTH: the authorization value is wrong. The first counts
    /// toward the dictionary-attack lockout.
    AuthFail,
    /// TPM_RC_LOCKOUT: the TPM refuses authorizations of DA-protected objects for a while.
    Lockout,
    /// The TPM is busy or short of memory for the moment (TPM_RC_RETRY, TPM_RC_YIELDED,
    /// TPM_RC_TESTING, TPM_RC_NV_RATE, TPM_RC_*_MEMORY, ...).
    Busy,
    /// The TPM does not implement this curve, key size, hash or scheme.
    Unsupported,
    /// The key blob does not belong under this TPM's storage key (TPM_RC_INTEGRITY): another
    /// TPM's key, or this TPM was cleared since.
    ForeignKey,
    /// Anything else.
    Other,
}

use tss_esapi::constants::response_code::Tss2ResponseCode;

/// The raw TSS2_RC of a tss-esapi error, when it came from the TSS stack.
pub(crate) fn raw_rc(error: &tss_esapi::Error) -> Option<u32> {
    match error {
        // tss-esapi 7 keeps the code private; its Display is "Response code value: 0x<hex>"
        // (pinned by the unit test below).
        tss_esapi::Error::Tss2Error(code) => {
            let text = match code {
                Tss2ResponseCode::Success => return Some(0),
                Tss2ResponseCode::FormatZero(rc) => rc.to_string(),
                Tss2ResponseCode::FormatOne(rc) => rc.to_string(),
            };
            let hex = text.rsplit("0x").next()?;
            u32::from_str_radix(hex.trim(), 16).ok()
        }
        tss_esapi::Error::WrapperError(_) => None,
    }
}

const TCTI_LAYER: u32 = 10;
const ESAPI_LAYER: u32 = 7;
const SYS_LAYER: u32 = 8;
const RESMGR_LAYER: u32 = 11;
const RESMGR_TPM_LAYER: u32 = 12;

/// The TPM's own response code (`TPM_RC_*`, format-one codes reduced to their error number),
/// when `rc` is one.
pub(crate) fn tpm_code(rc: u32) -> Option<u32> {
    let layer = (rc >> 16) & 0xff;
    if layer != 0 && layer != RESMGR_TPM_LAYER {
        return None;
    }
    let rc = rc & 0xffff;
    Some(if rc & 0x80 != 0 {
        // Format one: bits 8..11 name the handle, session or parameter; the error is bits 0..5.
        0x80 | (rc & 0x3f)
    } else {
        rc & 0xfff
    })
}

/// Classifies a failed call.
pub(crate) fn kind(error: &tss_esapi::Error) -> Kind {
    let Some(rc) = raw_rc(error) else {
        return Kind::Other;
    };
    let layer = (rc >> 16) & 0xff;
    let base = rc & 0xffff;
    match layer {
        TCTI_LAYER | RESMGR_LAYER => return Kind::Transport,
        // IO_ERROR, NO_CONNECTION, TRY_AGAIN, MALFORMED_RESPONSE, INSUFFICIENT_RESPONSE,
        // BAD_TCTI_STRUCTURE: the stack below ESAPI lost the TPM.
        ESAPI_LAYER | SYS_LAYER if matches!(base, 8 | 9 | 10 | 17 | 19 | 22) => {
            return Kind::Transport;
        }
        ESAPI_LAYER | SYS_LAYER => return Kind::Other,
        _ => {}
    }
    match tpm_code(rc) {
        Some(0x08e | 0x0a2) => Kind::AuthFail,
        Some(0x921) => Kind::Lockout,
        Some(0x902..=0x904 | 0x908 | 0x90a | 0x920 | 0x922 | 0x923) => Kind::Busy,
        // TPM_RC_INITIALIZE (not started: reset under us), TPM_RC_FAILURE (failure mode),
        // TPM_RC_REFERENCE_* / TPM_RC_HANDLE (a handle the TPM forgot: it was reset).
        Some(0x100 | 0x101 | 0x08b | 0x910..=0x916) => Kind::Transport,
        Some(0x081 | 0x083 | 0x087 | 0x092 | 0x0a6 | 0x143) => Kind::Unsupported,
        Some(0x09f) => Kind::ForeignKey,
        _ => Kind::Other,
    }
}

/// A short description of a failed call: the `TPM_RC_*` name when it has one, and the code.
pub(crate) fn describe(error: &tss_esapi::Error) -> String {
    let Some(rc) = raw_rc(error) else {
        return error.to_string();
    };
    let name = match ((rc >> 16) & 0xff, tpm_code(rc)) {
        (_, Some(code)) => tpm_rc_name(code).map(str::to_string),
        (TCTI_LAYER, None) => Some(format!("TCTI error {}", base_name(rc & 0xffff))),
        (ESAPI_LAYER, None) => Some(format!("ESAPI error {}", base_name(rc & 0xffff))),
        (SYS_LAYER, None) => Some(format!("SAPI error {}", base_name(rc & 0xffff))),
        _ => None,
    };
    match name {
        Some(name) => format!("{name} ({rc:#x})"),
        None => format!("TSS error {rc:#x}"),
    }
}

fn base_name(base: u32) -> &'static str {
    match base {
        1 => "GENERAL_FAILURE",
        3 => "BAD_CONTEXT",
        7 => "BAD_SEQUENCE",
        8 => "NO_CONNECTION",
        9 => "TRY_AGAIN",
        10 => "IO_ERROR",
        11 => "BAD_VALUE",
        17 => "MALFORMED_RESPONSE",
        19 => "INSUFFICIENT_RESPONSE",
        21 => "NOT_SUPPORTED",
        27 => "RSP_AUTH_FAILED",
        _ => "",
    }
}

fn tpm_rc_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0x081 => "TPM_RC_ASYMMETRIC",
        0x082 => "TPM_RC_ATTRIBUTES",
        0x083 => "TPM_RC_HASH",
        0x084 => "TPM_RC_VALUE",
        0x087 => "TPM_RC_KEY_SIZE",
        0x08b => "TPM_RC_HANDLE",
        0x08e => "TPM_RC_AUTH_FAIL",
        0x092 => "TPM_RC_SCHEME",
        0x095 => "TPM_RC_SIZE",
        0x09c => "TPM_RC_KEY",
        0x09d => "TPM_RC_POLICY_FAIL",
        0x09f => "TPM_RC_INTEGRITY",
        0x0a2 => "TPM_RC_BAD_AUTH",
        0x0a6 => "TPM_RC_CURVE",
        0x100 => "TPM_RC_INITIALIZE",
        0x101 => "TPM_RC_FAILURE",
        0x120 => "TPM_RC_DISABLED",
        0x125 => "TPM_RC_AUTH_MISSING",
        0x143 => "TPM_RC_COMMAND_CODE",
        0x185 => "TPM_RC_HIERARCHY",
        0x902 => "TPM_RC_OBJECT_MEMORY",
        0x903 => "TPM_RC_SESSION_MEMORY",
        0x904 => "TPM_RC_MEMORY",
        0x908 => "TPM_RC_YIELDED",
        0x90a => "TPM_RC_TESTING",
        0x920 => "TPM_RC_NV_RATE",
        0x921 => "TPM_RC_LOCKOUT",
        0x922 => "TPM_RC_RETRY",
        0x923 => "TPM_RC_NV_UNAVAILABLE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(rc: u32) -> tss_esapi::Error {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(rc))
    }

    #[test]
    fn raw_codes_survive_the_wrapper() {
        for rc in [0x98e, 0x921, 0xa000a, 0x7000a, 0x1, 0x9a2] {
            assert_eq!(raw_rc(&error(rc)), Some(rc), "{rc:#x}");
        }
    }

    #[test]
    fn classification() {
        // TPM_RC_AUTH_FAIL on session 1 (0x98e) and TPM_RC_BAD_AUTH (0x9a2).
        assert_eq!(kind(&error(0x98e)), Kind::AuthFail);
        assert_eq!(kind(&error(0x9a2)), Kind::AuthFail);
        assert_eq!(kind(&error(0x921)), Kind::Lockout);
        assert_eq!(kind(&error(0x922)), Kind::Busy);
        // The swtpm TCTI's I/O error, and ESAPI's own.
        assert_eq!(kind(&error(0xa000a)), Kind::Transport);
        assert_eq!(kind(&error(0x7000a)), Kind::Transport);
        assert_eq!(kind(&error(0x100)), Kind::Transport);
        // TPM_RC_CURVE on parameter 2 (0x2e6), TPM_RC_INTEGRITY on parameter 1 (0x1df).
        assert_eq!(kind(&error(0x2e6)), Kind::Unsupported);
        assert_eq!(kind(&error(0x1df)), Kind::ForeignKey);
        assert_eq!(
            kind(&tss_esapi::Error::WrapperError(
                tss_esapi::WrapperErrorKind::WrongParamSize
            )),
            Kind::Other
        );
        assert_eq!(describe(&error(0x98e)), "TPM_RC_AUTH_FAIL (0x98e)");
        assert_eq!(describe(&error(0x921)), "TPM_RC_LOCKOUT (0x921)");
        assert_eq!(describe(&error(0xa000a)), "TCTI error IO_ERROR (0xa000a)");
    }
}
