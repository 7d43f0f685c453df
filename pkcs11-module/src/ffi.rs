//! The C boundary, and the only module of the workspace that uses `unsafe`: the exported
//! `C_GetFunctionList`, the function table, and conversions of the caller's pointers into
//! slices and references. Every function body runs under [`guard`], so a panic never unwinds
//! into C (it becomes `CKR_GENERAL_ERROR`); everything past the conversions is safe Rust in
//! the other modules.
//!
//! The pointer rules are PKCS#11's: a pointer the caller passes is null or valid for the
//! length it gives, for the duration of the call. Null where a value is required is
//! `CKR_ARGUMENTS_BAD`.
#![allow(unsafe_code)]

use std::os::raw::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use cryptoki_sys::*;

use crate::mechanism::MechanismParams;
use crate::module::{self, InitArgs, MutexCallbacks, current};
use crate::session::{AttrOutcome, MAX_TEMPLATE, attribute_into};
use crate::signing::Output;

mod table;
use table::FUNCTION_LIST;

/// Runs `f`, turning its error into the return value and a panic into `CKR_GENERAL_ERROR`.
fn guard(f: impl FnOnce() -> Result<(), CK_RV>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(rv)) => rv,
        Err(_) => CKR_GENERAL_ERROR,
    }
}

/// The `len` bytes at `ptr` (empty when `len` is 0).
///
/// # Safety
/// `ptr` is null or valid for reads of `len` bytes for the rest of the call.
unsafe fn input<'a>(ptr: *const u8, len: CK_ULONG) -> Result<&'a [u8], CK_RV> {
    if len == 0 {
        return Ok(&[]);
    }
    let len = usize::try_from(len).map_err(|_| CKR_ARGUMENTS_BAD)?;
    if ptr.is_null() || len > isize::MAX as usize {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, and the caller guarantees `len` readable bytes; the length fits isize.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The `len` elements at `ptr`, writable (empty when `len` is 0).
///
/// # Safety
/// `ptr` is null or valid for reads and writes of `len` elements for the rest of the call,
/// and nothing else refers to them meanwhile.
unsafe fn output<'a, T>(ptr: *mut T, len: CK_ULONG) -> Result<&'a mut [T], CK_RV> {
    if len == 0 {
        return Ok(&mut []);
    }
    let len = usize::try_from(len).map_err(|_| CKR_ARGUMENTS_BAD)?;
    if ptr.is_null()
        || len
            .checked_mul(size_of::<T>())
            .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, sized within isize, and valid for `len` elements by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// The value `ptr` points to, writable.
///
/// # Safety
/// `ptr` is null or valid, aligned and unaliased for the rest of the call.
unsafe fn target<'a, T>(ptr: *mut T) -> Result<&'a mut T, CK_RV> {
    // SAFETY: `as_mut` checks for null; validity is the caller's contract.
    unsafe { ptr.as_mut() }.ok_or(CKR_ARGUMENTS_BAD)
}

/// Writes `value` to `*ptr`.
///
/// # Safety
/// As [`target`].
unsafe fn write<T>(ptr: *mut T, value: T) -> Result<(), CK_RV> {
    // SAFETY: the caller's contract.
    *unsafe { target(ptr) }? = value;
    Ok(())
}

/// Writes `items` with the list convention: no buffer reports the count, a short buffer
/// reports it with `CKR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// As [`output`] for `list` with `*count` elements, and [`target`] for `count`.
unsafe fn write_list(
    items: &[CK_ULONG],
    list: *mut CK_ULONG,
    count: *mut CK_ULONG,
) -> Result<(), CK_RV> {
    // SAFETY: the caller's contract.
    let count = unsafe { target(count) }?;
    let needed = items.len() as CK_ULONG;
    if list.is_null() {
        *count = needed;
        return Ok(());
    }
    if *count < needed {
        *count = needed;
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: the caller's contract; `needed` <= the `*count` elements it provided.
    let out = unsafe { output(list, needed) }?;
    out.copy_from_slice(items);
    *count = needed;
    Ok(())
}

/// Writes a signature with the length convention of [`Output`].
///
/// # Safety
/// As [`output`] for `buffer` with `*len` bytes, and [`target`] for `len`.
unsafe fn write_signature(
    buffer: *mut u8,
    len: *mut CK_ULONG,
    sign: impl FnOnce(Option<&mut [u8]>) -> Result<Output, CK_RV>,
) -> Result<(), CK_RV> {
    // SAFETY: the caller's contract.
    let len = unsafe { target(len) }?;
    let buffer = match buffer.is_null() {
        true => None,
        // SAFETY: the caller's contract: `*len` writable bytes.
        false => Some(unsafe { output(buffer, *len) }?),
    };
    match sign(buffer)? {
        Output::Written(n) | Output::Length(n) => *len = n as CK_ULONG,
        Output::TooSmall(n) => {
            *len = n as CK_ULONG;
            return Err(CKR_BUFFER_TOO_SMALL);
        }
    }
    Ok(())
}

/// Reads a `CK_MECHANISM` and the parameter structures this module understands.
///
/// # Safety
/// `mechanism` is null or points to a `CK_MECHANISM` whose `pParameter` is valid for
/// `ulParameterLen` bytes.
unsafe fn read_mechanism(
    mechanism: *const CK_MECHANISM,
) -> Option<(CK_MECHANISM_TYPE, MechanismParams)> {
    // SAFETY: the caller's contract.
    let m = unsafe { mechanism.as_ref() }?;
    let params = if m.ulParameterLen == 0 {
        MechanismParams::None
    } else if m.pParameter.is_null() {
        MechanismParams::Malformed
    } else {
        match m.mechanism {
            CKM_RSA_PKCS_PSS
            | CKM_SHA256_RSA_PKCS_PSS
            | CKM_SHA384_RSA_PKCS_PSS
            | CKM_SHA512_RSA_PKCS_PSS
                if m.ulParameterLen as usize == size_of::<CK_RSA_PKCS_PSS_PARAMS>() =>
            {
                // SAFETY: `pParameter` holds `ulParameterLen` bytes, the size of the structure.
                let p = unsafe { (m.pParameter as *const CK_RSA_PKCS_PSS_PARAMS).read_unaligned() };
                MechanismParams::Pss {
                    hash: p.hashAlg,
                    mgf: p.mgf,
                    salt_len: p.sLen,
                }
            }
            CKM_EDDSA if m.ulParameterLen as usize == size_of::<CK_EDDSA_PARAMS>() => {
                // SAFETY: as above; the context pointer inside is not followed.
                let p = unsafe { (m.pParameter as *const CK_EDDSA_PARAMS).read_unaligned() };
                MechanismParams::Eddsa {
                    prehash: p.phFlag != CK_FALSE,
                    context_len: p.ulContextDataLen,
                }
            }
            _ => MechanismParams::Malformed,
        }
    };
    Some((m.mechanism, params))
}

unsafe extern "C" fn c_initialize(args: *mut c_void) -> CK_RV {
    guard(|| {
        // SAFETY: a non-null argument points to a CK_C_INITIALIZE_ARGS (PKCS#11 2.40 §5.4).
        let args = unsafe { (args as *const CK_C_INITIALIZE_ARGS).as_ref() }.map(|a| {
            let given = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            InitArgs {
                callbacks: match given.iter().filter(|g| **g).count() {
                    0 => MutexCallbacks::None,
                    4 => MutexCallbacks::All,
                    _ => MutexCallbacks::Some,
                },
                flags: a.flags,
                reserved_is_null: a.pReserved.is_null(),
            }
        });
        module::initialize(args)
    })
}

unsafe extern "C" fn c_finalize(reserved: *mut c_void) -> CK_RV {
    guard(|| module::finalize(reserved.is_null()))
}

unsafe extern "C" fn c_get_info(info: *mut CK_INFO) -> CK_RV {
    // SAFETY: `info` is null or a writable CK_INFO (the PKCS#11 contract, as for every pointer below).
    guard(|| unsafe { write(info, current()?.info()) })
}

unsafe extern "C" fn c_get_function_list(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    // The table is never written through: PKCS#11 declares the pointer non-const only for
    // historical reasons.
    // SAFETY: `list` is null or writable.
    guard(|| unsafe { write(list, (&raw const FUNCTION_LIST).cast_mut()) })
}

unsafe extern "C" fn c_get_slot_list(
    _present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: `list` holds `*count` slots or is null; `count` is writable.
    guard(|| unsafe { write_list(&current()?.slots(), list, count) })
}

unsafe extern "C" fn c_get_slot_info(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    // SAFETY: `info` is null or writable.
    guard(|| unsafe { write(info, current()?.slot_info(slot)?) })
}

unsafe extern "C" fn c_get_token_info(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    // SAFETY: `info` is null or writable.
    guard(|| unsafe { write(info, current()?.token_info(slot)?) })
}

unsafe extern "C" fn c_get_mechanism_list(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: `list` holds `*count` entries or is null; `count` is writable.
    guard(|| unsafe { write_list(&current()?.mechanisms(slot)?, list, count) })
}

unsafe extern "C" fn c_get_mechanism_info(
    slot: CK_SLOT_ID,
    kind: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    // SAFETY: `info` is null or writable.
    guard(|| unsafe { write(info, current()?.mechanism_info(slot, kind)?) })
}

unsafe extern "C" fn c_open_session(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _application: *mut c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    guard(|| {
        let module = current()?;
        // SAFETY: `session` is null or writable.
        let out = unsafe { target(session) }?;
        *out = module.open_session(slot, flags)?;
        Ok(())
    })
}

unsafe extern "C" fn c_close_session(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| current()?.close_session(session))
}

unsafe extern "C" fn c_close_all_sessions(slot: CK_SLOT_ID) -> CK_RV {
    guard(|| current()?.close_all_sessions(slot))
}

unsafe extern "C" fn c_get_session_info(
    session: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    // SAFETY: `info` is null or writable.
    guard(|| unsafe { write(info, current()?.session_info(session)?) })
}

/// The PIN is never read: any PIN is accepted.
unsafe extern "C" fn c_login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    _pin: *mut CK_UTF8CHAR,
    _len: CK_ULONG,
) -> CK_RV {
    guard(|| current()?.login(session, user))
}

unsafe extern "C" fn c_logout(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| current()?.logout(session))
}

unsafe extern "C" fn c_get_object_size(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    size: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let module = current()?;
        // SAFETY: `size` is null or writable.
        let size = unsafe { target(size) }?;
        module.object(session, object)?;
        *size = CK_UNAVAILABLE_INFORMATION;
        Ok(())
    })
}

unsafe extern "C" fn c_get_attribute_value(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let module = current()?;
        // SAFETY: `template` holds `count` attributes.
        let template = unsafe { output(template, count) }?;
        let object = module.object(session, object)?;
        let mut first_error = None;
        for attribute in template.iter_mut() {
            let buffer = match attribute.pValue.is_null() {
                true => None,
                // SAFETY: each non-null `pValue` holds `ulValueLen` writable bytes.
                false => {
                    Some(unsafe { output(attribute.pValue.cast::<u8>(), attribute.ulValueLen) }?)
                }
            };
            let (len, error) = match attribute_into(&object, attribute.type_, buffer) {
                AttrOutcome::Ok(len) => (len as CK_ULONG, None),
                AttrOutcome::TooSmall => (CK_UNAVAILABLE_INFORMATION, Some(CKR_BUFFER_TOO_SMALL)),
                AttrOutcome::Sensitive => {
                    (CK_UNAVAILABLE_INFORMATION, Some(CKR_ATTRIBUTE_SENSITIVE))
                }
                AttrOutcome::Invalid => {
                    (CK_UNAVAILABLE_INFORMATION, Some(CKR_ATTRIBUTE_TYPE_INVALID))
                }
            };
            attribute.ulValueLen = len;
            first_error = first_error.or(error);
        }
        first_error.map_or(Ok(()), Err)
    })
}

unsafe extern "C" fn c_find_objects_init(
    session: CK_SESSION_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let module = current()?;
        if count > MAX_TEMPLATE as CK_ULONG {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: `template` holds `count` attributes (read only).
        let template = unsafe { output(template, count) }?;
        let mut wanted = Vec::with_capacity(template.len());
        for attribute in template.iter() {
            // SAFETY: each `pValue` holds `ulValueLen` readable bytes.
            let value = unsafe { input(attribute.pValue.cast::<u8>(), attribute.ulValueLen) }?;
            wanted.push((attribute.type_, value));
        }
        module.find_init(session, &wanted)
    })
}

unsafe extern "C" fn c_find_objects(
    session: CK_SESSION_HANDLE,
    objects: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let module = current()?;
        // SAFETY: `count` is null or writable; `objects` holds `max` handles.
        let (count, objects) = unsafe { (target(count)?, output(objects, max)?) };
        let found = module.find_next(session, objects.len())?;
        objects[..found.len()].copy_from_slice(&found);
        *count = found.len() as CK_ULONG;
        Ok(())
    })
}

unsafe extern "C" fn c_find_objects_final(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| current()?.find_final(session))
}

unsafe extern "C" fn c_sign_init(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let module = current()?;
        // SAFETY: `mechanism` is null or a CK_MECHANISM with a valid parameter.
        let mechanism = unsafe { read_mechanism(mechanism) };
        module.sign_init(session, mechanism, key)
    })
}

unsafe extern "C" fn c_sign(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    len: CK_ULONG,
    signature: *mut CK_BYTE,
    signature_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let module = current()?;
        // SAFETY: `data` holds `len` bytes; `signature` holds `*signature_len` writable bytes.
        unsafe {
            let data = input(data, len)?;
            write_signature(signature, signature_len, |out| {
                module.sign(session, data, out)
            })
        }
    })
}

unsafe extern "C" fn c_sign_update(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let module = current()?;
        // SAFETY: `part` holds `len` bytes.
        let part = unsafe { input(part, len) }?;
        module.sign_update(session, part)
    })
}

unsafe extern "C" fn c_sign_final(
    session: CK_SESSION_HANDLE,
    signature: *mut CK_BYTE,
    signature_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let module = current()?;
        // SAFETY: `signature` holds `*signature_len` writable bytes.
        unsafe {
            write_signature(signature, signature_len, |out| {
                module.sign_final(session, out)
            })
        }
    })
}

unsafe extern "C" fn c_copy_object(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    _template: *mut CK_ATTRIBUTE,
    _count: CK_ULONG,
    _new: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| current()?.change_object(session, object))
}

unsafe extern "C" fn c_destroy_object(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| current()?.change_object(session, object))
}

unsafe extern "C" fn c_set_attribute_value(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    _template: *mut CK_ATTRIBUTE,
    _count: CK_ULONG,
) -> CK_RV {
    guard(|| current()?.change_object(session, object))
}

/// The module's one exported symbol: consumers find every other function through the table.
///
/// # Safety
/// `list` is null or valid for one pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    // SAFETY: forwarded under the same contract.
    unsafe { c_get_function_list(list) }
}

#[cfg(test)]
#[path = "ffi_tests.rs"]
mod tests;
