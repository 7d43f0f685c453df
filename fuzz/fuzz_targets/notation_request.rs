//! The notation-keyward plugin's request parsing (contract 1.0 JSON on stdin): the first byte
//! picks the command, the rest is the request.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../cli/src/bin/notation-keyward/protocol.rs"]
mod protocol;

const COMMANDS: [&str; 5] = [
    "get-plugin-metadata",
    "describe-key",
    "generate-signature",
    "",
    "unknown",
];

fuzz_target!(|data: &[u8]| {
    let Some((first, request)) = data.split_first() else {
        return;
    };
    let command = COMMANDS[usize::from(*first) % COMMANDS.len()];
    match protocol::parse_request(command, request) {
        Ok(protocol::Request::DescribeKey { key_id, .. }) => assert!(!key_id.is_empty()),
        Ok(protocol::Request::GenerateSignature(job)) => assert!(!job.key_id.is_empty()),
        Ok(protocol::Request::Metadata) => assert_eq!(command, "get-plugin-metadata"),
        Err(error) => assert!(!error.message.is_empty()),
    }
});
