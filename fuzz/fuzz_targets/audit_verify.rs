//! The audit log verifier (`keyward_sdk::audit`) on arbitrary file contents: it must accept or
//! name a line, never panic.
#![no_main]

use keyward_sdk::audit::{ChainVerifier, verify_chain};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lines = data.iter().filter(|b| **b == b'\n').count() + 1;
    let mut verifier = ChainVerifier::new();
    match verifier.push_file(data) {
        Ok(records) => assert_eq!(records, verifier.records()),
        Err(error) => assert!((1..=lines).contains(&error.line), "{error}"),
    }
    if let Err(error) = verify_chain(data.split(|b| *b == b'\n')) {
        assert!((1..=lines).contains(&error.line), "{error}");
    }
});
