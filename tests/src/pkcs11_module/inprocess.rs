//! The module loaded into a process by the `cryptoki` crate (Parsec's PKCS#11 bindings), used
//! the way a multi-threaded application uses it: several threads with a session each signing at
//! once, single-part and multi-part, and a call from inside a tokio runtime. Every signature is
//! verified with the SDK's RustCrypto verifier against the public key the agent exports.
//!
//! The module finds the agent through `KEYWARD_SOCK`, which a test cannot set in its own,
//! multi-threaded process (`std::env::set_var` is `unsafe`), so the test runs itself again as a
//! child process with it set ([`run_in_child`]); the child does the checks ([`in_child`]).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::MechanismType;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyward_sdk::{Client, SignatureAlgorithm, SignatureFormat};

use super::module_path;
use crate::{COMMAND_TIMEOUT, run_with_timeout, stderr_text, stdout_text};

/// Set in the child: the checks run there.
const CHILD_ENV: &str = "KEYWARD_TEST_PKCS11_IN_PROCESS";
/// What the child prints when every check passed (so a child that ran nothing cannot pass).
const DONE: &str = "in-process checks passed:";
/// Threads signing at once, and signatures each.
const THREADS: usize = 8;
const SIGNATURES: usize = 12;

/// Whether this process is the child that runs the checks.
pub fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs the test `test_name` of this test binary again, as a child with `KEYWARD_SOCK` set to
/// `socket`, and asserts that it passed every check.
pub fn run_in_child(test_name: &str, socket: &Path) {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args(["--exact", test_name, "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .env("KEYWARD_SOCK", socket)
        .env_remove("KEYWARD_PKCS11_KEYS");
    let output = run_with_timeout(command, None, COMMAND_TIMEOUT);
    let stdout = stdout_text(&output);
    assert!(
        output.status.success() && stdout.contains(DONE),
        "the in-process checks failed ({}):\n{stdout}{}",
        output.status,
        stderr_text(&output)
    );
}

fn find_private_key(session: &Session, label: &str) -> ObjectHandle {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .expect("C_FindObjects");
    assert_eq!(found.len(), 1, "private key {label}");
    found[0]
}

fn pss_sha256() -> Mechanism<'static> {
    Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    })
}

/// The checks, in the child: needs keys `ec` (P-256) and `rsa` (RSA-2048) in the agent.
pub fn signing_checks() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let public = runtime.block_on(async {
        let client = Client::connect_default().await.expect("connect");
        let ec = client.public_key("ec").await.expect("ec").der;
        let rsa = client.public_key("rsa").await.expect("rsa").der;
        (ec, rsa)
    });
    let public = Arc::new(public);

    let pkcs11 = Pkcs11::new(module_path()).expect("load the module");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = pkcs11.get_slots_with_token().expect("slots")[0];
    assert_eq!(pkcs11.get_token_info(slot).unwrap().label(), "keyward");

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let pkcs11 = pkcs11.clone();
            let public = public.clone();
            std::thread::spawn(move || {
                let session = pkcs11.open_ro_session(slot).expect("C_OpenSession");
                let ec = find_private_key(&session, "ec");
                let rsa = find_private_key(&session, "rsa");
                for i in 0..SIGNATURES {
                    let message = format!("thread {t}, signature {i}").repeat(100);
                    let (key, der, mechanism, algorithm) = if i % 2 == 0 {
                        (
                            ec,
                            &public.0,
                            Mechanism::EcdsaSha256,
                            SignatureAlgorithm::EcdsaSha256,
                        )
                    } else {
                        (
                            rsa,
                            &public.1,
                            pss_sha256(),
                            SignatureAlgorithm::RsaPssSha256,
                        )
                    };
                    let signature = if i % 3 == 0 {
                        session.sign_init(&mechanism, key).expect("C_SignInit");
                        for part in message.as_bytes().chunks(500) {
                            session.sign_update(part).expect("C_SignUpdate");
                        }
                        session.sign_final().expect("C_SignFinal")
                    } else {
                        session
                            .sign(&mechanism, key, message.as_bytes())
                            .expect("C_Sign")
                    };
                    keyward_sdk::verify_message(
                        der,
                        algorithm,
                        message.as_bytes(),
                        &signature,
                        SignatureFormat::Raw,
                    )
                    .unwrap_or_else(|e| panic!("thread {t} signature {i}: {e}"));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a signing thread panicked");
    }

    // From inside a tokio runtime the module cannot block on its own: it runs the call on a
    // thread of its own.
    let signature = runtime.block_on(async {
        let session = pkcs11.open_ro_session(slot).expect("C_OpenSession");
        let ec = find_private_key(&session, "ec");
        session
            .sign(&Mechanism::EcdsaSha256, ec, b"from a runtime")
            .expect("C_Sign")
    });
    keyward_sdk::verify_message(
        &public.0,
        SignatureAlgorithm::EcdsaSha256,
        b"from a runtime",
        &signature,
        SignatureFormat::Raw,
    )
    .expect("the signature made inside a runtime verifies");

    pkcs11.finalize().expect("C_Finalize");
    println!("{DONE} {} signatures", THREADS * SIGNATURES + 1);
}
