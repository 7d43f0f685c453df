//! Unknown key ids cost no backend call twice, and a flood of random ids does not reach the
//! backend (#16.4): an id that named no key is remembered as unknown for
//! `unknown_key_seconds`, and look-ups of uncached ids are rate-limited per backend
//! (`key_lookups`, RESOURCE_EXHAUSTED with `retry-after-ms`), while keys in use go on.

use std::time::Instant;

use keyward_sdk::{Code, KeySpec, SignOptions};
use keyward_tests::wait::log_lines;
use keyward_tests::{DaemonBuilder, openssl_genpkey, random_bytes, set_mode};
use sha2::{Digest, Sha256};

/// What the daemon logs before it asks a backend about an id it has not cached.
const ASKING: &str = "the key is not cached; asking its backend";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_ids_does_not_reach_the_backend() {
    let builder = DaemonBuilder::new();
    let keys = builder.dir().join("keys");
    std::fs::create_dir(&keys).unwrap();
    set_mode(&keys, 0o700);
    // A key the backend lists that no id names: served as `local/found`.
    openssl_genpkey(
        &keys.join("found.pem"),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let daemon = builder
        .top_level(
            "[limits]\nunknown_key_seconds = 300\nkey_lookups = { per_second = 2, burst = 5 }\n",
        )
        .start()
        .await;
    let client = daemon.client().await;
    client
        .generate_key("local", "known", KeySpec::EcP256)
        .await
        .expect("generate");
    client
        .public_key("local/found")
        .await
        .expect("the discovered key, now cached");
    let asked_before = log_lines(&daemon, &[ASKING]).len();

    // 200 random ids, 20 at a time.
    let started = Instant::now();
    let mut not_found = Vec::new();
    let mut exhausted = 0;
    for batch in 0..10 {
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..20 {
            let client = client.clone();
            let id = format!("local/random-{batch}-{n}-{}", hex::encode(random_bytes(8)));
            calls.spawn(async move { (client.public_key(&id).await.map(drop), id) });
        }
        while let Some(done) = calls.join_next().await {
            let (result, id) = done.expect("task");
            let error = result.expect_err("a random id names no key");
            match error.code() {
                Some(Code::NotFound) => not_found.push(id),
                Some(Code::ResourceExhausted) => {
                    exhausted += 1;
                    let text = error.to_string();
                    assert!(
                        text.contains("backend \"local\" is asked about keys it may not have faster than key_lookups"),
                        "{text}"
                    );
                }
                other => panic!("{id}: {other:?}: {error}"),
            }
        }
        // Keys in use are served from the cache throughout.
        client
            .sign_digest("known", &Sha256::digest(b"during"), &SignOptions::default())
            .await
            .expect("a named key signs during the flood");
        client
            .public_key("local/found")
            .await
            .expect("a cached discovered key is served during the flood");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 5 + (2.0 * elapsed).ceil() as usize + 1;
    assert!(
        exhausted > 0,
        "no look-up was refused: {} not found",
        not_found.len()
    );
    assert!(
        not_found.len() <= allowed,
        "{} look-ups reached the backend in {elapsed:.1}s (at most {allowed})",
        not_found.len()
    );
    let asked = log_lines(&daemon, &[ASKING]).len() - asked_before;
    assert_eq!(
        asked,
        not_found.len(),
        "one backend question per answered id"
    );

    // An id found unknown is answered from memory, without asking again.
    let unknown = not_found.first().expect("some ids got an answer").clone();
    for _ in 0..50 {
        let error = client.public_key(&unknown).await.expect_err("unknown");
        assert_eq!(error.code(), Some(Code::NotFound), "{error}");
    }
    assert_eq!(
        log_lines(&daemon, &[ASKING]).len() - asked_before,
        asked,
        "the unknown id was asked about again"
    );
}
