//! `C_SignInit`, `C_Sign`, `C_SignUpdate`, `C_SignFinal` on a session.
//!
//! The output follows PKCS#11's length convention: without a buffer the call reports the
//! signature's length and the operation stays active; with a buffer too short it reports the
//! length with `CKR_BUFFER_TOO_SMALL` and stays active; otherwise the operation ends, with
//! the signature or with an error. Signature lengths are known before signing (raw `r || s`,
//! the RSA modulus, 64 for Ed25519), so a length query never reaches the agent.

use cryptoki_sys::*;

use crate::mechanism::{MechanismParams, SignMechanism};
use crate::module::Module;
use crate::sign::SignOperation;

/// What a call that writes a signature did.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Wrote this many bytes; the operation ended.
    Written(usize),
    /// No buffer was given: the signature will be this long (`CKR_OK`).
    Length(usize),
    /// The buffer is too short for this length (`CKR_BUFFER_TOO_SMALL`).
    TooSmall(usize),
}

enum Step {
    Single,
    Final,
}

impl Module {
    /// `C_SignInit`. A null mechanism (`None`) cancels an active operation.
    pub fn sign_init(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: Option<(CK_MECHANISM_TYPE, MechanismParams)>,
        key: CK_OBJECT_HANDLE,
    ) -> Result<(), CK_RV> {
        let Some((mechanism, params)) = mechanism else {
            return self.with_session(session, |s| match s.sign.take() {
                Some(_) => Ok(()),
                None => Err(CKR_ARGUMENTS_BAD),
            });
        };
        self.with_session(session, |s| match s.sign {
            Some(_) => Err(CKR_OPERATION_ACTIVE),
            None => Ok(()),
        })?;
        let object = self.object(session, key).map_err(|rv| match rv {
            CKR_OBJECT_HANDLE_INVALID => CKR_KEY_HANDLE_INVALID,
            other => other,
        })?;
        match object.class {
            CKO_PRIVATE_KEY => {}
            CKO_PUBLIC_KEY => return Err(CKR_KEY_FUNCTION_NOT_PERMITTED),
            _ => return Err(CKR_KEY_HANDLE_INVALID),
        }
        let mechanism = SignMechanism::parse(mechanism, params)?;
        let operation = SignOperation::new(object.key.clone(), mechanism)?;
        self.with_session(session, |s| {
            if s.sign.is_some() {
                return Err(CKR_OPERATION_ACTIVE);
            }
            s.sign = Some(operation);
            Ok(())
        })
    }

    /// `C_Sign`: signs `data` in one call.
    pub fn sign(
        &self,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<Output, CK_RV> {
        self.finish(session, Step::Single, data, out)
    }

    /// `C_SignUpdate`: hashes one more part. An error ends the operation.
    pub fn sign_update(&self, session: CK_SESSION_HANDLE, part: &[u8]) -> Result<(), CK_RV> {
        self.with_session(session, |s| {
            let operation = s.sign.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
            let result = operation.update(part);
            if result.is_err() {
                s.sign = None;
            }
            result
        })
    }

    /// `C_SignFinal`: signs the parts given to `C_SignUpdate`.
    pub fn sign_final(
        &self,
        session: CK_SESSION_HANDLE,
        out: Option<&mut [u8]>,
    ) -> Result<Output, CK_RV> {
        self.finish(session, Step::Final, &[], out)
    }

    fn finish(
        &self,
        session: CK_SESSION_HANDLE,
        step: Step,
        data: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<Output, CK_RV> {
        let taken = self.with_session(session, |s| {
            let operation = s.sign.as_ref().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
            let wrong_step = match step {
                Step::Single => operation.is_multi_part(),
                Step::Final => operation.mechanism().hashes_with().is_none(),
            };
            if wrong_step {
                s.sign = None;
                return Err(CKR_OPERATION_NOT_INITIALIZED);
            }
            let len = operation.signature_len();
            match &out {
                None => Ok(Err(Output::Length(len))),
                Some(buffer) if buffer.len() < len => Ok(Err(Output::TooSmall(len))),
                Some(_) => Ok(Ok(s.sign.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?)),
            }
        })?;
        let operation = match taken {
            Ok(operation) => operation,
            Err(length_only) => return Ok(length_only),
        };
        let len = operation.signature_len();
        let request = match step {
            Step::Single => operation.single(data)?,
            Step::Final => operation.finish()?,
        };
        let signature = self.agent.sign(request, len)?;
        let buffer = out.ok_or(CKR_GENERAL_ERROR)?;
        buffer[..len].copy_from_slice(&signature);
        Ok(Output::Written(len))
    }
}
