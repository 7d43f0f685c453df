//! The function table, and the functions this token refuses. Part of the `ffi` module: the
//! entry points it lists are there.

use std::os::raw::c_void;

use cryptoki_sys::*;

use super::*;

/// Functions this token does not offer: after the initialisation check, always `$rv`.
macro_rules! refused {
    ($($name:ident($($arg:ty),*) => $rv:expr;)*) => {$(
        unsafe extern "C" fn $name($(_: $arg),*) -> CK_RV {
            guard(|| {
                current()?;
                Err($rv)
            })
        }
    )*};
}

type Bytes = *mut CK_BYTE;
type Len = *mut CK_ULONG;
type Mech = *mut CK_MECHANISM;
type Template = *mut CK_ATTRIBUTE;
type Handle = CK_OBJECT_HANDLE;
type Out = *mut CK_OBJECT_HANDLE;
type S = CK_SESSION_HANDLE;
const NO: CK_RV = CKR_FUNCTION_NOT_SUPPORTED;

refused! {
    // Tokens, PINs and keys are managed by keywardd (`keyward keys generate`), never here.
    c_init_token(CK_SLOT_ID, *mut CK_UTF8CHAR, CK_ULONG, *mut CK_UTF8CHAR) => NO;
    c_init_pin(S, *mut CK_UTF8CHAR, CK_ULONG) => NO;
    c_set_pin(S, *mut CK_UTF8CHAR, CK_ULONG, *mut CK_UTF8CHAR, CK_ULONG) => NO;
    c_create_object(S, Template, CK_ULONG, Out) => NO;
    c_generate_key(S, Mech, Template, CK_ULONG, Out) => NO;
    c_generate_key_pair(S, Mech, Template, CK_ULONG, Template, CK_ULONG, Out, Out) => NO;
    c_wrap_key(S, Mech, Handle, Handle, Bytes, Len) => NO;
    c_unwrap_key(S, Mech, Handle, Bytes, CK_ULONG, Template, CK_ULONG, Out) => NO;
    c_derive_key(S, Mech, Handle, Template, CK_ULONG, Out) => NO;
    c_get_operation_state(S, Bytes, Len) => NO;
    c_set_operation_state(S, Bytes, CK_ULONG, Handle, Handle) => NO;
    // Signing only: no encryption, digests, recovery or verification (verify with the public
    // key object or the certificate in the caller's own crypto library).
    c_encrypt_init(S, Mech, Handle) => NO;
    c_encrypt(S, Bytes, CK_ULONG, Bytes, Len) => NO;
    c_encrypt_update(S, Bytes, CK_ULONG, Bytes, Len) => NO;
    c_encrypt_final(S, Bytes, Len) => NO;
    c_decrypt_init(S, Mech, Handle) => NO;
    c_decrypt(S, Bytes, CK_ULONG, Bytes, Len) => NO;
    c_decrypt_update(S, Bytes, CK_ULONG, Bytes, Len) => NO;
    c_decrypt_final(S, Bytes, Len) => NO;
    c_digest_init(S, Mech) => NO;
    c_digest(S, Bytes, CK_ULONG, Bytes, Len) => NO;
    c_digest_update(S, Bytes, CK_ULONG) => NO;
    c_digest_key(S, Handle) => NO;
    c_digest_final(S, Bytes, Len) => NO;
    c_sign_recover_init(S, Mech, Handle) => NO;
    c_sign_recover(S, Bytes, CK_ULONG, Bytes, Len) => NO;
    c_verify_init(S, Mech, Handle) => NO;
    c_verify(S, Bytes, CK_ULONG, Bytes, CK_ULONG) => NO;
    c_verify_update(S, Bytes, CK_ULONG) => NO;
    c_verify_final(S, Bytes, CK_ULONG) => NO;
    c_verify_recover_init(S, Mech, Handle) => NO;
    c_verify_recover(S, Bytes, CK_ULONG, Bytes, Len) => NO;
    c_digest_encrypt_update(S, Bytes, CK_ULONG, Bytes, Len) => NO;
    c_decrypt_digest_update(S, Bytes, CK_ULONG, Bytes, Len) => NO;
    c_sign_encrypt_update(S, Bytes, CK_ULONG, Bytes, Len) => NO;
    c_decrypt_verify_update(S, Bytes, CK_ULONG, Bytes, Len) => NO;
    c_seed_random(S, Bytes, CK_ULONG) => CKR_RANDOM_NO_RNG;
    c_generate_random(S, Bytes, CK_ULONG) => CKR_RANDOM_NO_RNG;
    c_get_function_status(S) => CKR_FUNCTION_NOT_PARALLEL;
    c_cancel_function(S) => CKR_FUNCTION_NOT_PARALLEL;
    c_wait_for_slot_event(CK_FLAGS, *mut CK_SLOT_ID, *mut c_void) => NO;
}

/// The function table (Cryptoki 2.40).
pub(super) static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION {
        major: 2,
        minor: 40,
    },
    C_Initialize: Some(c_initialize),
    C_Finalize: Some(c_finalize),
    C_GetInfo: Some(c_get_info),
    C_GetFunctionList: Some(c_get_function_list),
    C_GetSlotList: Some(c_get_slot_list),
    C_GetSlotInfo: Some(c_get_slot_info),
    C_GetTokenInfo: Some(c_get_token_info),
    C_GetMechanismList: Some(c_get_mechanism_list),
    C_GetMechanismInfo: Some(c_get_mechanism_info),
    C_InitToken: Some(c_init_token),
    C_InitPIN: Some(c_init_pin),
    C_SetPIN: Some(c_set_pin),
    C_OpenSession: Some(c_open_session),
    C_CloseSession: Some(c_close_session),
    C_CloseAllSessions: Some(c_close_all_sessions),
    C_GetSessionInfo: Some(c_get_session_info),
    C_GetOperationState: Some(c_get_operation_state),
    C_SetOperationState: Some(c_set_operation_state),
    C_Login: Some(c_login),
    C_Logout: Some(c_logout),
    C_CreateObject: Some(c_create_object),
    C_CopyObject: Some(c_copy_object),
    C_DestroyObject: Some(c_destroy_object),
    C_GetObjectSize: Some(c_get_object_size),
    C_GetAttributeValue: Some(c_get_attribute_value),
    C_SetAttributeValue: Some(c_set_attribute_value),
    C_FindObjectsInit: Some(c_find_objects_init),
    C_FindObjects: Some(c_find_objects),
    C_FindObjectsFinal: Some(c_find_objects_final),
    C_EncryptInit: Some(c_encrypt_init),
    C_Encrypt: Some(c_encrypt),
    C_EncryptUpdate: Some(c_encrypt_update),
    C_EncryptFinal: Some(c_encrypt_final),
    C_DecryptInit: Some(c_decrypt_init),
    C_Decrypt: Some(c_decrypt),
    C_DecryptUpdate: Some(c_decrypt_update),
    C_DecryptFinal: Some(c_decrypt_final),
    C_DigestInit: Some(c_digest_init),
    C_Digest: Some(c_digest),
    C_DigestUpdate: Some(c_digest_update),
    C_DigestKey: Some(c_digest_key),
    C_DigestFinal: Some(c_digest_final),
    C_SignInit: Some(c_sign_init),
    C_Sign: Some(c_sign),
    C_SignUpdate: Some(c_sign_update),
    C_SignFinal: Some(c_sign_final),
    C_SignRecoverInit: Some(c_sign_recover_init),
    C_SignRecover: Some(c_sign_recover),
    C_VerifyInit: Some(c_verify_init),
    C_Verify: Some(c_verify),
    C_VerifyUpdate: Some(c_verify_update),
    C_VerifyFinal: Some(c_verify_final),
    C_VerifyRecoverInit: Some(c_verify_recover_init),
    C_VerifyRecover: Some(c_verify_recover),
    C_DigestEncryptUpdate: Some(c_digest_encrypt_update),
    C_DecryptDigestUpdate: Some(c_decrypt_digest_update),
    C_SignEncryptUpdate: Some(c_sign_encrypt_update),
    C_DecryptVerifyUpdate: Some(c_decrypt_verify_update),
    C_GenerateKey: Some(c_generate_key),
    C_GenerateKeyPair: Some(c_generate_key_pair),
    C_WrapKey: Some(c_wrap_key),
    C_UnwrapKey: Some(c_unwrap_key),
    C_DeriveKey: Some(c_derive_key),
    C_SeedRandom: Some(c_seed_random),
    C_GenerateRandom: Some(c_generate_random),
    C_GetFunctionStatus: Some(c_get_function_status),
    C_CancelFunction: Some(c_cancel_function),
    C_WaitForSlotEvent: Some(c_wait_for_slot_event),
};
