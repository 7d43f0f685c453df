//! The sigstore-kms-keyward plugin's argument parsing (protocol v1: argv[1] the version,
//! argv[2] the JSON): the first byte picks the version, the rest is the JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../cli/src/bin/sigstore-kms-keyward/protocol.rs"]
mod protocol;

const VERSIONS: [Option<&str>; 4] = [Some("v1"), Some("v1"), Some("v2"), None];

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let version = VERSIONS[usize::from(*first) % VERSIONS.len()];
    let json = String::from_utf8_lossy(rest);
    match protocol::parse(version, Some(&json)) {
        Ok(invocation) => {
            assert_eq!(version, Some("v1"));
            assert!(!invocation.key.key_id.is_empty());
            if let protocol::Method::SignMessage(input) = &invocation.method
                && let Some(digest) = &input.digest
            {
                assert!(!digest.is_empty());
            }
        }
        Err(protocol::ProtocolError(message)) => assert!(!message.is_empty()),
    }
});
