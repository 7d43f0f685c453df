//! The Sign request path before any backend: arbitrary bytes decoded as a
//! `keyward.v1.SignRequest` (as tonic decodes them), then the daemon's input checks
//! (`keyward_daemon::grpc::signer::validate`) against every key spec.
#![no_main]

use keyward_plugin_api::{KeySpec, SignOp};
use keyward_proto::v1::SignRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = SignRequest::decode(data) else {
        return;
    };
    for spec in KeySpec::ALL {
        if let Ok(valid) = keyward_daemon::grpc::signer::validate(spec, spec.algorithms(), &request) {
            // What passes the checks is something the key can sign.
            let algorithm = valid.op.algorithm();
            assert!(spec.supports(algorithm));
            match valid.op {
                SignOp::Prehashed(prehashed) => {
                    assert_eq!(Some(prehashed.hash()), algorithm.hash());
                    assert_eq!(prehashed.digest().len(), prehashed.hash().digest_len());
                }
                SignOp::Ed25519 { .. } => assert_eq!(algorithm.hash(), None),
            }
            assert!(request.purpose.len() <= 256);
        }
    }
});
