//! Malformed sign requests, as a table, and the status codes they must get.

use keyward_proto::v1::SignRequest;
use keyward_proto::v1::sign_request::Input;
use keyward_sdk::{KeySpec, SignOptions, SignatureAlgorithm as Alg};
use tonic::Code;

use super::{ALL_ALGORITHMS, Subject, digest_len};
use crate::random_bytes;

/// A request that must be refused, and the status codes that are acceptable for it.
struct Rejection {
    what: String,
    request: SignRequest,
    expect: &'static [Code],
}

/// The table of malformed requests for this key.
fn rejections(s: &Subject<'_>) -> Vec<Rejection> {
    const INVALID: &[Code] = &[Code::InvalidArgument];
    let supported: Vec<Alg> = s.public_key.info.algorithms().collect();
    let request = |key_id: &str, alg: i32, input: Option<Input>| SignRequest {
        key_id: key_id.to_string(),
        algorithm: alg,
        input,
        ..SignRequest::default()
    };
    let right_input = |alg: Alg| match digest_len(alg) {
        Some(len) => Input::Digest(random_bytes(len)),
        None => Input::Message(random_bytes(32)),
    };
    let mut table = Vec::new();
    for &alg in &supported {
        match digest_len(alg) {
            Some(len) => {
                for wrong in [0, len - 1, len + 1] {
                    table.push(Rejection {
                        what: format!("{} with a {wrong}-byte digest", alg.name()),
                        request: request(
                            s.key_id,
                            alg as i32,
                            Some(Input::Digest(random_bytes(wrong))),
                        ),
                        expect: INVALID,
                    });
                }
                table.push(Rejection {
                    what: format!("{} with a message instead of a digest", alg.name()),
                    request: request(
                        s.key_id,
                        alg as i32,
                        Some(Input::Message(random_bytes(len))),
                    ),
                    expect: INVALID,
                });
            }
            None => {
                for len in [32, 64] {
                    table.push(Rejection {
                        what: format!("ed25519 with a {len}-byte digest"),
                        request: request(
                            s.key_id,
                            alg as i32,
                            Some(Input::Digest(random_bytes(len))),
                        ),
                        expect: INVALID,
                    });
                }
            }
        }
        table.push(Rejection {
            what: format!("{} without input", alg.name()),
            request: request(s.key_id, alg as i32, None),
            expect: INVALID,
        });
    }
    for alg in ALL_ALGORITHMS
        .into_iter()
        .filter(|a| !supported.contains(a))
    {
        table.push(Rejection {
            what: format!("{} does not fit a {} key", alg.name(), s.spec.name()),
            request: request(s.key_id, alg as i32, Some(right_input(alg))),
            expect: INVALID,
        });
    }
    if s.spec == KeySpec::Ed25519 {
        table.push(Rejection {
            what: "unspecified algorithm with a digest on an ed25519 key".into(),
            request: request(s.key_id, 0, Some(Input::Digest(random_bytes(32)))),
            expect: INVALID,
        });
    }
    table.push(Rejection {
        what: "an algorithm number outside the enum".into(),
        request: request(s.key_id, 99, Some(Input::Digest(random_bytes(32)))),
        expect: INVALID,
    });
    let default = supported.first().copied().unwrap_or(Alg::EcdsaSha256);
    let missing = format!("no-such-key-{}", hex::encode(random_bytes(6)));
    table.push(Rejection {
        what: format!("unknown key {missing}"),
        request: request(&missing, default as i32, Some(right_input(default))),
        expect: &[Code::NotFound],
    });
    table.push(Rejection {
        what: "a path as key id".into(),
        request: request(
            "../../etc/passwd",
            default as i32,
            Some(right_input(default)),
        ),
        expect: &[Code::NotFound, Code::InvalidArgument],
    });
    table
}

pub(super) async fn check_rejections(s: &mut Subject<'_>) {
    for case in rejections(s) {
        match s.raw_sign(case.request).await {
            Ok(response) => s.fail(format!(
                "{}: accepted ({} signature bytes), expected {:?}",
                case.what,
                response.signature.len(),
                case.expect
            )),
            Err(status) => s.check(case.expect.contains(&status.code()), || {
                format!(
                    "{}: got {:?} ({}), expected {:?}",
                    case.what,
                    status.code(),
                    status.message(),
                    case.expect
                )
            }),
        }
    }
    // The SDK surfaces the agent's code through Error::code().
    let missing = format!("no-such-key-{}", hex::encode(random_bytes(6)));
    let result = s
        .client
        .sign_message(&missing, b"x", &SignOptions::default())
        .await;
    let code = result.as_ref().err().and_then(keyward_sdk::Error::code);
    s.check(code == Some(Code::NotFound), || {
        format!("SDK sign with unknown key {missing}: {result:?}")
    });
}
