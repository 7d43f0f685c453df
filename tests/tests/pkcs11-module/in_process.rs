//! The module in one process with many threads (`cryptoki`), and called from inside a tokio
//! runtime.

use keyward_sdk::KeySpec;
use keyward_tests::DaemonBuilder;
use keyward_tests::pkcs11_module::{in_child, run_in_child, signing_checks};

#[test]
fn one_process_signs_from_many_threads_at_once_and_from_inside_a_tokio_runtime() {
    if in_child() {
        signing_checks();
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let daemon = runtime.block_on(async {
        let daemon = DaemonBuilder::new().start().await;
        let client = daemon.client().await;
        for (id, spec) in [("ec", KeySpec::EcP256), ("rsa", KeySpec::Rsa2048)] {
            client
                .generate_key("local", id, spec)
                .await
                .expect("generate");
        }
        daemon
    });
    run_in_child(
        "in_process::one_process_signs_from_many_threads_at_once_and_from_inside_a_tokio_runtime",
        daemon.socket(),
    );
}
