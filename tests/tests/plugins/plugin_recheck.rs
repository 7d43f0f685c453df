//! A plugin executable is checked again before every restart (#16.4): one that became writable
//! by others after the daemon started is refused at its next restart, never run again, and its
//! backend stays down with the reason, while the daemon keeps serving.

use std::time::Duration;

use keyward_proto::v1::SignRequest;
use keyward_proto::v1::sign_request::Input;
use keyward_proto::v1::signer_client::SignerClient;
use keyward_sdk::SignatureAlgorithm as Alg;
use keyward_tests::plugins::{ChildReaper, backend_table, command_toml, write_script};
use keyward_tests::wait;
use keyward_tests::{DaemonBuilder, random_bytes, set_mode, toml_string, uds_channel};
use tonic::Code;

/// What the daemon says of an executable others may write.
const LOOSE: &str = "writable by group or others";

fn runs(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

#[tokio::test]
async fn a_plugin_made_writable_after_start_is_not_run_again() {
    let builder = DaemonBuilder::new();
    let program = builder.dir().join("plugin.sh");
    let ran = builder.dir().join("runs");
    // A plugin that fails at once, so that the daemon keeps restarting it; each run leaves a
    // line in `runs`.
    write_script(
        &program,
        &format!(
            "echo run >> {}\nexit 3",
            toml_string(ran.to_str().expect("UTF-8"))
        ),
        0o755,
    );
    let table = command_toml(&[&program]);
    let daemon = builder
        .extra_toml(&backend_table("bad", "external", &table))
        .extra_toml("[[key]]\nid = \"bad-key\"\nbackend = \"bad\"\nref = \"anything\"")
        .start()
        .await;
    let _reaper = ChildReaper::new(&daemon);
    wait::for_log(
        &daemon,
        &["plugin down:", "bad"],
        1,
        Duration::from_secs(15),
    )
    .await;
    assert!(runs(&ran) >= 1, "the plugin ran at start");

    // Someone loosens the executable while the daemon runs.
    set_mode(&program, 0o777);
    let refused = wait::for_log(
        &daemon,
        &["plugin down:", LOOSE],
        1,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        refused[0].contains(program.to_str().expect("UTF-8")),
        "the refusal names the executable: {}",
        refused[0]
    );
    let runs_at_refusal = runs(&ran);
    // The next restart is refused too, and the program is not run in between.
    wait::for_log(
        &daemon,
        &["plugin down:", LOOSE],
        2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        runs(&ran),
        runs_at_refusal,
        "a loosened plugin was run again"
    );

    // Its key answers UNAVAILABLE with the reason; the daemon serves on.
    let mut raw = SignerClient::new(uds_channel(daemon.socket()).await.expect("channel"));
    let status = raw
        .sign(SignRequest {
            key_id: "bad-key".into(),
            algorithm: Alg::EcdsaSha256 as i32,
            input: Some(Input::Digest(random_bytes(32))),
            ..SignRequest::default()
        })
        .await
        .expect_err("the backend is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains(LOOSE), "{status:?}");
    daemon
        .client()
        .await
        .list_keys()
        .await
        .expect("the daemon serves with a backend down");
}
