//! The C boundary driven through the function table, as a consumer calls it: the module's
//! lifecycle, null arguments, the list and length conventions, refused functions. One test,
//! because the module's state is process-global. No agent is needed: the token's objects are
//! fixtures and no signature is completed (the end-to-end tests sign through real consumers).

use std::ptr::null_mut;

use super::*;
use crate::fixtures;

fn functions() -> &'static CK_FUNCTION_LIST {
    let mut list: *mut CK_FUNCTION_LIST = null_mut();
    // SAFETY: a valid pointer to write to.
    assert_eq!(unsafe { C_GetFunctionList(&mut list) }, CKR_OK);
    // SAFETY: the module returns a pointer to its static table.
    unsafe { &*list }
}

unsafe extern "C" fn create_mutex(_: *mut *mut c_void) -> CK_RV {
    CKR_OK
}
unsafe extern "C" fn mutex_op(_: *mut c_void) -> CK_RV {
    CKR_OK
}

fn init_args(flags: CK_FLAGS, callbacks: usize, reserved: bool) -> CK_C_INITIALIZE_ARGS {
    let mut dummy = 0u8;
    CK_C_INITIALIZE_ARGS {
        CreateMutex: (callbacks > 0).then_some(create_mutex as _),
        DestroyMutex: (callbacks > 1).then_some(mutex_op as _),
        LockMutex: (callbacks > 2).then_some(mutex_op as _),
        UnlockMutex: (callbacks > 3).then_some(mutex_op as _),
        flags,
        pReserved: if reserved {
            (&raw mut dummy).cast()
        } else {
            null_mut()
        },
    }
}

/// A `CK_ATTRIBUTE` asking for `kind` into `buffer` (or only its length).
fn attribute(kind: CK_ATTRIBUTE_TYPE, buffer: Option<&mut [u8]>) -> CK_ATTRIBUTE {
    let (pointer, len) = match buffer {
        Some(b) => (b.as_mut_ptr().cast(), b.len() as CK_ULONG),
        None => (null_mut(), 0),
    };
    CK_ATTRIBUTE {
        type_: kind,
        pValue: pointer,
        ulValueLen: len,
    }
}

#[test]
fn the_function_table_follows_the_pkcs11_conventions() {
    let f = functions();
    assert_eq!((f.version.major, f.version.minor), (2, 40));
    // SAFETY (whole test): every pointer passed below is null on purpose or points to a live
    // local of the right type and length.
    unsafe {
        assert_eq!(C_GetFunctionList(null_mut()), CKR_ARGUMENTS_BAD);
        let mut info: CK_INFO = std::mem::zeroed();
        assert_eq!(
            f.C_GetInfo.unwrap()(&mut info),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_Finalize.unwrap()(null_mut()),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );

        // C_Initialize's argument rules.
        let initialize = f.C_Initialize.unwrap();
        for (args, expected) in [
            (init_args(CKF_OS_LOCKING_OK, 0, true), CKR_ARGUMENTS_BAD),
            (init_args(CKF_OS_LOCKING_OK, 2, false), CKR_ARGUMENTS_BAD),
            (init_args(0, 4, false), CKR_CANT_LOCK),
        ] {
            let mut args = args;
            assert_eq!(initialize((&raw mut args).cast()), expected);
        }
        let mut args = init_args(CKF_OS_LOCKING_OK, 4, false);
        assert_eq!(initialize((&raw mut args).cast()), CKR_OK);
        assert_eq!(initialize(null_mut()), CKR_CRYPTOKI_ALREADY_INITIALIZED);

        assert_eq!(f.C_GetInfo.unwrap()(&mut info), CKR_OK);
        assert_eq!(
            (info.cryptokiVersion.major, info.cryptokiVersion.minor),
            (2, 40)
        );
        assert_eq!(&info.manufacturerID[..8], b"keyward ");
        assert_eq!(f.C_GetInfo.unwrap()(null_mut()), CKR_ARGUMENTS_BAD);

        // Lists: a count query, a short buffer, a full answer.
        let get_slots = f.C_GetSlotList.unwrap();
        let mut count: CK_ULONG = 0;
        assert_eq!(
            get_slots(CK_TRUE, null_mut(), null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(get_slots(CK_TRUE, null_mut(), &mut count), CKR_OK);
        assert_eq!(count, 1);
        let mut slots = [99 as CK_SLOT_ID; 2];
        count = 0;
        assert_eq!(
            get_slots(CK_TRUE, slots.as_mut_ptr(), &mut count),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(count, 1);
        count = 2;
        assert_eq!(get_slots(CK_TRUE, slots.as_mut_ptr(), &mut count), CKR_OK);
        assert_eq!((count, slots[0]), (1, 0));

        let mut token: CK_TOKEN_INFO = std::mem::zeroed();
        assert_eq!(
            f.C_GetTokenInfo.unwrap()(5, &mut token),
            CKR_SLOT_ID_INVALID
        );
        assert_eq!(f.C_GetTokenInfo.unwrap()(0, &mut token), CKR_OK);
        assert_eq!(&token.label, b"keyward                         ");
        assert_eq!(token.flags & CKF_LOGIN_REQUIRED, 0);
        assert_eq!(token.flags & CKF_WRITE_PROTECTED, 0);

        let mut mechanisms = [0 as CK_MECHANISM_TYPE; 32];
        count = 32;
        assert_eq!(
            f.C_GetMechanismList.unwrap()(0, mechanisms.as_mut_ptr(), &mut count),
            CKR_OK
        );
        assert_eq!(count, 13);
        assert!(mechanisms[..13].contains(&CKM_SHA256_RSA_PKCS_PSS));
        let mut mechanism_info: CK_MECHANISM_INFO = std::mem::zeroed();
        let get_mechanism = f.C_GetMechanismInfo.unwrap();
        assert_eq!(get_mechanism(0, CKM_ECDSA, &mut mechanism_info), CKR_OK);
        assert_eq!(
            (mechanism_info.ulMinKeySize, mechanism_info.ulMaxKeySize),
            (256, 521)
        );
        assert_eq!(
            get_mechanism(0, CKM_SHA256, &mut mechanism_info),
            CKR_MECHANISM_INVALID
        );

        // Sessions and login.
        let mut session: CK_SESSION_HANDLE = 0;
        let open = f.C_OpenSession.unwrap();
        assert_eq!(
            open(0, CKF_SERIAL_SESSION, null_mut(), None, null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            open(0, 0, null_mut(), None, &mut session),
            CKR_SESSION_PARALLEL_NOT_SUPPORTED
        );
        assert_eq!(
            open(
                0,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                null_mut(),
                None,
                &mut session
            ),
            CKR_OK
        );
        let mut pin = *b"anything";
        assert_eq!(
            f.C_Login.unwrap()(session, CKU_USER, pin.as_mut_ptr(), 8),
            CKR_OK
        );
        assert_eq!(
            f.C_Login.unwrap()(session, CKU_USER, null_mut(), 0),
            CKR_USER_ALREADY_LOGGED_IN
        );
        let mut session_info: CK_SESSION_INFO = std::mem::zeroed();
        assert_eq!(
            f.C_GetSessionInfo.unwrap()(session, &mut session_info),
            CKR_OK
        );
        assert_eq!(session_info.state, CKS_RW_USER_FUNCTIONS);
        assert_eq!(
            f.C_CloseSession.unwrap()(session + 100),
            CKR_SESSION_HANDLE_INVALID
        );

        // Objects (fixtures, so no agent is asked).
        current().unwrap().install_for_tests(fixtures::objects());
        let class = CKO_PRIVATE_KEY.to_ne_bytes();
        let mut template = [
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: class.as_ptr() as *mut c_void,
                ulValueLen: 8,
            },
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: b"ec".as_ptr() as *mut c_void,
                ulValueLen: 2,
            },
        ];
        let bad = CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: null_mut(),
            ulValueLen: 2,
        };
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(session, [bad].as_mut_ptr(), 1),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(session, null_mut(), 1),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(session, template.as_mut_ptr(), 2),
            CKR_OK
        );
        let mut found = [0 as CK_OBJECT_HANDLE; 4];
        assert_eq!(
            f.C_FindObjects.unwrap()(session, found.as_mut_ptr(), 4, null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_FindObjects.unwrap()(session, found.as_mut_ptr(), 4, &mut count),
            CKR_OK
        );
        assert_eq!(count, 1);
        let key = found[0];
        assert_eq!(f.C_FindObjectsFinal.unwrap()(session), CKR_OK);
        assert_eq!(
            f.C_FindObjectsFinal.unwrap()(session),
            CKR_OPERATION_NOT_INITIALIZED
        );

        // C_GetAttributeValue: lengths, values, and one error for the attributes it cannot give.
        let mut label = [0u8; 16];
        let mut short = [0u8; 1];
        let mut sensitive = [0u8; 64];
        let mut query = [
            attribute(CKA_ID, None),
            attribute(CKA_LABEL, Some(&mut label)),
            attribute(CKA_EC_PARAMS, Some(&mut short)),
        ];
        let get = f.C_GetAttributeValue.unwrap();
        assert_eq!(
            get(session, key, query.as_mut_ptr(), 3),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(
            query.map(|a| a.ulValueLen),
            [2, 2, CK_UNAVAILABLE_INFORMATION]
        );
        assert_eq!(&label[..2], b"ec");
        let mut query = [
            attribute(CKA_VALUE, Some(&mut sensitive)),
            attribute(0xdead, None),
        ];
        assert_eq!(
            get(session, key, query.as_mut_ptr(), 2),
            CKR_ATTRIBUTE_SENSITIVE
        );
        assert_eq!(query.map(|a| a.ulValueLen), [CK_UNAVAILABLE_INFORMATION; 2]);
        assert_eq!(
            get(session, 9999, query.as_mut_ptr(), 2),
            CKR_OBJECT_HANDLE_INVALID
        );

        // Signing: nulls, the length convention; the signature itself needs an agent.
        let mut mechanism = CK_MECHANISM {
            mechanism: CKM_ECDSA_SHA256,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        let mut len: CK_ULONG = 0;
        let mut data = *b"data";
        assert_eq!(
            f.C_Sign.unwrap()(session, data.as_mut_ptr(), 4, null_mut(), &mut len),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_SignInit.unwrap()(session, null_mut(), key),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_SignInit.unwrap()(session, &mut mechanism, key), CKR_OK);
        assert_eq!(
            f.C_Sign.unwrap()(session, data.as_mut_ptr(), 4, null_mut(), null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_Sign.unwrap()(session, null_mut(), 4, null_mut(), &mut len),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_Sign.unwrap()(session, data.as_mut_ptr(), 4, null_mut(), &mut len),
            CKR_OK
        );
        assert_eq!(len, 64);
        let mut signature = [0u8; 63];
        len = 63;
        assert_eq!(
            f.C_Sign.unwrap()(
                session,
                data.as_mut_ptr(),
                4,
                signature.as_mut_ptr(),
                &mut len
            ),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(len, 64);
        assert_eq!(
            f.C_SignUpdate.unwrap()(session, null_mut(), 3),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            f.C_SignUpdate.unwrap()(session, data.as_mut_ptr(), 4),
            CKR_OK
        );
        assert_eq!(
            f.C_SignFinal.unwrap()(session, null_mut(), &mut len),
            CKR_OK
        );
        assert_eq!(
            f.C_SignInit.unwrap()(session, &mut mechanism, key),
            CKR_OPERATION_ACTIVE
        );
        // A PSS mechanism with a parameter of the wrong size.
        let mut pss = CK_MECHANISM {
            mechanism: CKM_RSA_PKCS_PSS,
            pParameter: data.as_mut_ptr().cast(),
            ulParameterLen: 4,
        };
        assert_eq!(
            f.C_SignInit.unwrap()(session, null_mut(), key),
            CKR_OK,
            "cancelled"
        );
        assert_eq!(
            f.C_SignInit.unwrap()(session, &mut pss, key),
            CKR_MECHANISM_PARAM_INVALID
        );

        // What the token never does.
        let mut handle: CK_OBJECT_HANDLE = 0;
        assert_eq!(
            f.C_CreateObject.unwrap()(session, template.as_mut_ptr(), 2, &mut handle),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(
            f.C_GenerateKeyPair.unwrap()(
                session,
                &mut mechanism,
                null_mut(),
                0,
                null_mut(),
                0,
                &mut handle,
                &mut handle
            ),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(
            f.C_DestroyObject.unwrap()(session, key),
            CKR_ACTION_PROHIBITED
        );
        assert_eq!(
            f.C_SetAttributeValue.unwrap()(session, key, template.as_mut_ptr(), 2),
            CKR_ACTION_PROHIBITED
        );
        assert_eq!(
            f.C_CopyObject.unwrap()(session, key, null_mut(), 0, &mut handle),
            CKR_ACTION_PROHIBITED
        );
        assert_eq!(
            f.C_VerifyInit.unwrap()(session, &mut mechanism, key),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(
            f.C_EncryptInit.unwrap()(session, &mut mechanism, key),
            CKR_FUNCTION_NOT_SUPPORTED
        );
        assert_eq!(
            f.C_GenerateRandom.unwrap()(session, data.as_mut_ptr(), 4),
            CKR_RANDOM_NO_RNG
        );
        assert_eq!(
            f.C_InitToken.unwrap()(0, null_mut(), 0, null_mut()),
            CKR_FUNCTION_NOT_SUPPORTED
        );

        // Finalize, and everything is uninitialised again; a new C_Initialize starts afresh.
        assert_eq!(
            f.C_Finalize.unwrap()((&raw mut count).cast()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(f.C_Finalize.unwrap()(null_mut()), CKR_OK);
        assert_eq!(
            f.C_Finalize.unwrap()(null_mut()),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_GetSessionInfo.unwrap()(session, &mut session_info),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(
            f.C_CreateObject.unwrap()(session, null_mut(), 0, null_mut()),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(initialize(null_mut()), CKR_OK);
        assert_eq!(
            f.C_GetSessionInfo.unwrap()(session, &mut session_info),
            CKR_SESSION_HANDLE_INVALID
        );
        assert_eq!(f.C_Finalize.unwrap()(null_mut()), CKR_OK);
    }
}

#[test]
fn a_panic_becomes_a_general_error() {
    let rv = guard(|| panic!("a bug"));
    assert_eq!(rv, CKR_GENERAL_ERROR);
}
