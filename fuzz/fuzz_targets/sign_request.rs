//! The Sign request path before any backend: arbitrary bytes decoded as a
//! `keyward.v1.SignRequest` (as tonic decodes them), then the daemon's input checks
//! (`keyward_daemon::signer::validate`) against every key spec.
#![no_main]

use keyward_plugin_api::{KeySpec, SignInput};
use keyward_proto::v1::SignRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = SignRequest::decode(data) else {
        return;
    };
    for spec in KeySpec::ALL {
        if let Ok(valid) = keyward_daemon::signer::validate(spec, &request) {
            // What passes the checks is something the key can sign.
            assert!(spec.supports(valid.algorithm));
            match (valid.algorithm.hash(), valid.input) {
                (Some(hash), SignInput::Digest(digest)) => {
                    assert_eq!(digest.len(), hash.digest_len())
                }
                (None, SignInput::Message(_)) => {}
                (hash, input) => panic!("{hash:?} accepted {input:?}"),
            }
            assert!(request.purpose.len() <= 256);
        }
    }
});
