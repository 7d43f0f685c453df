//! Tests of sessions, login, searches and the signing state machine on a module whose objects
//! are fixtures (no agent is asked: only the final signature would need one).

use super::*;
use crate::fixtures;
use crate::mechanism::{MechanismParams, pss};
use crate::signing::Output;

fn module() -> Module {
    Module::for_tests(fixtures::objects())
}

fn find(
    module: &Module,
    session: CK_SESSION_HANDLE,
    label: &str,
    class: CK_OBJECT_CLASS,
) -> CK_OBJECT_HANDLE {
    let class = class.to_ne_bytes();
    module
        .find_init(
            session,
            &[(CKA_LABEL, label.as_bytes()), (CKA_CLASS, &class)],
        )
        .unwrap();
    let found = module.find_next(session, 10).unwrap();
    module.find_final(session).unwrap();
    assert_eq!(found.len(), 1, "{label} {class:?}");
    found[0]
}

#[test]
fn sessions_need_the_serial_flag_and_valid_handles() {
    let module = module();
    assert_eq!(
        module.open_session(SLOT_ID, 0),
        Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED)
    );
    assert_eq!(
        module.open_session(7, CKF_SERIAL_SESSION),
        Err(CKR_SLOT_ID_INVALID)
    );
    let ro = module.open_session(SLOT_ID, CKF_SERIAL_SESSION).unwrap();
    let rw = module
        .open_session(SLOT_ID, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .unwrap();
    assert_ne!(ro, rw);
    assert_eq!(lock(&module.sessions).counts(), (2, 1));
    assert_eq!(
        module.session_info(ro).unwrap().state,
        CKS_RO_PUBLIC_SESSION
    );
    assert_eq!(
        module.session_info(rw).unwrap().state,
        CKS_RW_PUBLIC_SESSION
    );
    module.close_session(ro).unwrap();
    assert_eq!(module.close_session(ro), Err(CKR_SESSION_HANDLE_INVALID));
    assert_eq!(
        module.session_info(ro).unwrap_err(),
        CKR_SESSION_HANDLE_INVALID
    );
    assert_eq!(
        module.find_next(ro, 1).unwrap_err(),
        CKR_SESSION_HANDLE_INVALID
    );
    module.close_all_sessions(SLOT_ID).unwrap();
    assert_eq!(
        module.session_info(rw).unwrap_err(),
        CKR_SESSION_HANDLE_INVALID
    );
}

#[test]
fn login_accepts_any_pin_once_and_ends_with_the_last_session() {
    let module = module();
    let a = module.open_session(SLOT_ID, CKF_SERIAL_SESSION).unwrap();
    let b = module
        .open_session(SLOT_ID, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .unwrap();
    assert_eq!(module.logout(a), Err(CKR_USER_NOT_LOGGED_IN));
    assert_eq!(module.login(a, CKU_SO), Err(CKR_USER_TYPE_INVALID));
    assert_eq!(
        module.login(a, CKU_CONTEXT_SPECIFIC),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    module.login(a, CKU_USER).unwrap();
    // Login is per application, so every session is logged in.
    assert_eq!(module.session_info(b).unwrap().state, CKS_RW_USER_FUNCTIONS);
    assert_eq!(module.login(b, CKU_USER), Err(CKR_USER_ALREADY_LOGGED_IN));
    module.close_session(a).unwrap();
    assert_eq!(module.session_info(b).unwrap().state, CKS_RW_USER_FUNCTIONS);
    module.close_session(b).unwrap();
    let c = module.open_session(SLOT_ID, CKF_SERIAL_SESSION).unwrap();
    assert_eq!(module.session_info(c).unwrap().state, CKS_RO_PUBLIC_SESSION);
}

#[test]
fn searches_return_batches_and_must_be_finished() {
    let module = module();
    let s = module.open_session(SLOT_ID, CKF_SERIAL_SESSION).unwrap();
    assert_eq!(
        module.find_next(s, 1).unwrap_err(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        module.find_final(s).unwrap_err(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    module.find_init(s, &[]).unwrap();
    assert_eq!(module.find_init(s, &[]).unwrap_err(), CKR_OPERATION_ACTIVE);
    let mut all = Vec::new();
    loop {
        let batch = module.find_next(s, 4).unwrap();
        assert!(batch.len() <= 4);
        if batch.is_empty() {
            break;
        }
        all.extend(batch);
    }
    assert_eq!(all.len(), 9);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "handle order: {all:?}");
    module.find_final(s).unwrap();
    let too_big: Vec<(CK_ATTRIBUTE_TYPE, &[u8])> = vec![(CKA_LABEL, b"x"); MAX_TEMPLATE + 1];
    assert_eq!(module.find_init(s, &too_big), Err(CKR_ARGUMENTS_BAD));
}

#[test]
fn attributes_follow_the_length_convention() {
    let module = module();
    let s = module.open_session(SLOT_ID, CKF_SERIAL_SESSION).unwrap();
    let key = module
        .object(s, find(&module, s, "ec", CKO_PRIVATE_KEY))
        .unwrap();
    assert_eq!(attribute_into(&key, CKA_LABEL, None), AttrOutcome::Ok(2));
    let mut short = [0u8; 1];
    assert_eq!(
        attribute_into(&key, CKA_LABEL, Some(&mut short)),
        AttrOutcome::TooSmall
    );
    let mut room = [0u8; 8];
    assert_eq!(
        attribute_into(&key, CKA_LABEL, Some(&mut room)),
        AttrOutcome::Ok(2)
    );
    assert_eq!(&room[..2], b"ec");
    assert_eq!(
        attribute_into(&key, CKA_VALUE, Some(&mut room)),
        AttrOutcome::Sensitive
    );
    assert_eq!(
        attribute_into(&key, CKA_MODULUS, None),
        AttrOutcome::Invalid
    );
    assert_eq!(
        module.object(s, 9999).unwrap_err(),
        CKR_OBJECT_HANDLE_INVALID
    );
    let cert = find(&module, s, "ec", CKO_CERTIFICATE);
    assert_eq!(module.change_object(s, cert), Err(CKR_ACTION_PROHIBITED));
    assert_eq!(
        module.change_object(s, 9999),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
}

#[test]
fn sign_init_checks_the_key_object_and_the_mechanism() {
    let module = module();
    let s = module.open_session(SLOT_ID, CKF_SERIAL_SESSION).unwrap();
    let ecdsa = Some((CKM_ECDSA, MechanismParams::None));
    let ec_public = find(&module, s, "ec", CKO_PUBLIC_KEY);
    let ec_cert = find(&module, s, "ec", CKO_CERTIFICATE);
    let rsa = find(&module, s, "rsa", CKO_PRIVATE_KEY);
    let ec = find(&module, s, "ec", CKO_PRIVATE_KEY);
    assert_eq!(
        module.sign_init(s, ecdsa, ec_public),
        Err(CKR_KEY_FUNCTION_NOT_PERMITTED)
    );
    assert_eq!(
        module.sign_init(s, ecdsa, ec_cert),
        Err(CKR_KEY_HANDLE_INVALID)
    );
    assert_eq!(
        module.sign_init(s, ecdsa, 9999),
        Err(CKR_KEY_HANDLE_INVALID)
    );
    assert_eq!(
        module.sign_init(s, ecdsa, rsa),
        Err(CKR_KEY_TYPE_INCONSISTENT)
    );
    assert_eq!(
        module.sign_init(s, Some((CKM_SHA256_HMAC, MechanismParams::None)), ec),
        Err(CKR_MECHANISM_INVALID)
    );
    let salt_20 = MechanismParams::Pss {
        hash: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        salt_len: 20,
    };
    assert_eq!(
        module.sign_init(s, Some((CKM_RSA_PKCS_PSS, salt_20)), rsa),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    assert_eq!(
        module.sign_init(s, None, ec),
        Err(CKR_ARGUMENTS_BAD),
        "nothing to cancel"
    );
    module.sign_init(s, ecdsa, ec).unwrap();
    assert_eq!(module.sign_init(s, ecdsa, ec), Err(CKR_OPERATION_ACTIVE));
    module.login(s, CKU_CONTEXT_SPECIFIC).unwrap();
    module.sign_init(s, None, ec).unwrap();
    module.sign_init(s, ecdsa, ec).unwrap();
}

#[test]
fn length_queries_and_short_buffers_keep_the_operation_going() {
    let module = module();
    let s = module.open_session(SLOT_ID, CKF_SERIAL_SESSION).unwrap();
    assert_eq!(
        module.sign(s, b"x", None),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    for (label, mechanism, params, len) in [
        ("ec", CKM_ECDSA_SHA256, MechanismParams::None, 64),
        ("p521", CKM_ECDSA, MechanismParams::None, 132),
        (
            "rsa",
            CKM_SHA256_RSA_PKCS_PSS,
            pss(crate::mechanism::Hash::Sha256),
            256,
        ),
        ("ed", CKM_EDDSA, MechanismParams::None, 64),
    ] {
        let key = find(&module, s, label, CKO_PRIVATE_KEY);
        module.sign_init(s, Some((mechanism, params)), key).unwrap();
        assert_eq!(module.sign(s, b"data", None), Ok(Output::Length(len)));
        let mut short = vec![0u8; len - 1];
        assert_eq!(
            module.sign(s, b"data", Some(&mut short)),
            Ok(Output::TooSmall(len))
        );
        assert_eq!(
            module.sign(s, b"data", None),
            Ok(Output::Length(len)),
            "still active"
        );
        module.sign_init(s, None, key).unwrap();
    }
}

#[test]
fn a_wrong_step_ends_the_operation() {
    let module = module();
    let s = module.open_session(SLOT_ID, CKF_SERIAL_SESSION).unwrap();
    let ec = find(&module, s, "ec", CKO_PRIVATE_KEY);
    // C_SignUpdate on a single-part mechanism.
    module
        .sign_init(s, Some((CKM_ECDSA, MechanismParams::None)), ec)
        .unwrap();
    assert_eq!(
        module.sign_update(s, b"x"),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    assert_eq!(
        module.sign(s, b"x", None),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    // C_SignFinal on a single-part mechanism.
    module
        .sign_init(s, Some((CKM_ECDSA, MechanismParams::None)), ec)
        .unwrap();
    assert_eq!(
        module.sign_final(s, None),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    assert_eq!(
        module.sign(s, b"x", None),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    // C_Sign after C_SignUpdate.
    module
        .sign_init(s, Some((CKM_ECDSA_SHA256, MechanismParams::None)), ec)
        .unwrap();
    module.sign_update(s, b"part").unwrap();
    assert_eq!(module.sign_final(s, None), Ok(Output::Length(64)));
    let mut out = [0u8; 64];
    assert_eq!(
        module.sign(s, b"x", Some(&mut out)),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    assert_eq!(
        module.sign_final(s, None),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
    // Bad input ends it too, before any agent is asked.
    module
        .sign_init(s, Some((CKM_ECDSA, MechanismParams::None)), ec)
        .unwrap();
    assert_eq!(
        module.sign(s, &[1; 20], Some(&mut out)),
        Err(CKR_DATA_LEN_RANGE)
    );
    assert_eq!(
        module.sign(s, &[1; 32], None),
        Err(CKR_OPERATION_NOT_INITIALIZED)
    );
}
