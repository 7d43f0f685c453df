//! SIGHUP reloads the config: backends and keys added, changed and removed take effect; a
//! request in flight finishes on the state it started with; a config with an error is refused
//! with a log line and the running state stays.

use std::path::Path;
use std::time::{Duration, Instant};

use keyward_sdk::{KeySpec, SignOptions, SignatureAlgorithm as Alg};
use keyward_tests::peers::{Peer, require};
use keyward_tests::plugins::{
    ChildReaper, Outcome, TestKey, backend_table, config_head, is_alive, path_line,
    plugin_processes, python_command,
};
use keyward_tests::wait;
use keyward_tests::{DaemonBuilder, TestDaemon, openssl_genpkey};
use rustix::process::{Pid, Signal, kill_process};
use tonic::Code;

const LOCAL_PLUGIN: &str = "keyward-plugin-local";

/// Writes `config` over the daemon's config file and sends SIGHUP; waits for the `count`-th
/// log line that says how the reload ended and returns it.
async fn reload(daemon: &TestDaemon, config: &str, count: usize) -> String {
    std::fs::write(daemon.config_path(), config).expect("write the new config");
    hangup(daemon);
    let lines = wait::for_log(daemon, &["config reload"], count, Duration::from_secs(20)).await;
    lines[count - 1].clone()
}

fn hangup(daemon: &TestDaemon) {
    let pid = Pid::from_raw(daemon.pid() as i32).expect("daemon pid");
    kill_process(pid, Signal::HUP).expect("send SIGHUP");
}

fn local_backend(dir: &Path, name: &str, extra: &str) -> String {
    backend_table(
        name,
        "local",
        &format!(
            "{extra}\n{}",
            path_line("path", &dir.join(format!("{name}-keys")))
        ),
    )
}

async fn signs(client: &keyward_sdk::Client, key_id: &str) -> Outcome {
    let key = TestKey::fetch(client, key_id).await;
    key.sign(client, b"after the reload", Duration::from_secs(10))
        .await
}

fn assert_signed(outcome: Outcome, what: &str) {
    assert!(matches!(outcome, Outcome::Signed), "{what}: {outcome:?}");
}

async fn code_of_sign(client: &keyward_sdk::Client, key_id: &str) -> (Code, String) {
    let options = SignOptions {
        algorithm: Some(Alg::EcdsaSha256),
        ..SignOptions::default()
    };
    match client.sign_message(key_id, b"x", &options).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(e) => (e.code().unwrap_or(Code::Unknown), e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_and_keys_follow_the_config() {
    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let head = config_head(&dir);
    let a = local_backend(&dir, "a", "isolation = \"process\"");
    let daemon = builder.config(&format!("{head}{a}")).start().await;
    let _reaper = ChildReaper::new(&daemon);
    let client = daemon.client().await;
    client
        .generate_key("a", "ka", KeySpec::EcP256)
        .await
        .expect("generate ka");
    let a_plugin = plugin_processes(&daemon, LOCAL_PLUGIN);
    assert_eq!(a_plugin.len(), 1, "one plugin for `a`: {a_plugin:?}");

    // Add a backend (in-process) and a [[key]] naming a key file in it.
    let b = local_backend(&dir, "b", "isolation = \"none\"");
    std::fs::create_dir_all(dir.join("b-keys")).unwrap();
    std::fs::set_permissions(
        dir.join("b-keys"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    openssl_genpkey(
        &dir.join("b-keys/imported.pem"),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    let key = "\n[[key]]\nid = \"named\"\nbackend = \"b\"\nref = \"imported\"\n";
    let line = reload(&daemon, &format!("{head}{a}{b}{key}"), 1).await;
    assert!(line.contains("config reloaded"), "{line}");
    assert!(line.contains("added=[\"b\"]"), "{line}");
    let ids: Vec<String> = client
        .list_keys()
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert!(
        ids.contains(&"ka".to_string()) && ids.contains(&"named".to_string()),
        "{ids:?}"
    );
    assert_signed(signs(&client, "named").await, "the new [[key]]");
    assert_signed(signs(&client, "ka").await, "ka on the unchanged backend");
    // The unchanged plugin process was taken over, not restarted.
    assert_eq!(
        plugin_processes(&daemon, LOCAL_PLUGIN)
            .iter()
            .map(|p| p.pid)
            .collect::<Vec<_>>(),
        a_plugin.iter().map(|p| p.pid).collect::<Vec<_>>(),
        "the plugin of the unchanged backend `a` was restarted"
    );
    // Keys can be created in the new backend.
    client
        .generate_key("b", "kb", KeySpec::Ed25519)
        .await
        .expect("generate kb in the added backend");
    let kb = TestKey::fetch(&client, "kb").await;
    assert_signed(kb.sign(&client, b"kb", Duration::from_secs(10)).await, "kb");

    // Change `a` (a longer call timeout): its plugin is replaced and its keys keep signing.
    let a2 = local_backend(&dir, "a", "isolation = \"process\"\ntimeout = 9");
    let line = reload(&daemon, &format!("{head}{a2}{b}{key}"), 2).await;
    assert!(line.contains("changed=[\"a\"]"), "{line}");
    assert_signed(signs(&client, "ka").await, "ka after its backend changed");
    let old_pid = a_plugin[0].pid;
    let gone = wait::poll(Duration::from_secs(15), || {
        (!is_alive(old_pid)).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the retired plugin {old_pid} is still running"
    );

    // Remove `a` and the [[key]]: their keys are no longer served, `b`'s still are.
    let line = reload(&daemon, &format!("{head}{b}"), 3).await;
    assert!(line.contains("removed=[\"a\"]"), "{line}");
    let (code, message) = code_of_sign(&client, "ka").await;
    assert_eq!(code, Code::NotFound, "ka after `a` was removed: {message}");
    let (code, message) = code_of_sign(&client, "named").await;
    assert_eq!(code, Code::NotFound, "the removed [[key]]: {message}");
    assert_signed(
        kb.sign(&client, b"kb still", Duration::from_secs(10)).await,
        "kb",
    );
    let stopped = wait::poll(Duration::from_secs(15), || {
        plugin_processes(&daemon, LOCAL_PLUGIN)
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(
        stopped.is_some(),
        "the plugin of the removed backend still runs"
    );

    // Put `a` back: the key created in it before is served again (the state kept it).
    let line = reload(&daemon, &format!("{head}{a}{b}"), 4).await;
    assert!(line.contains("added=[\"a\"]"), "{line}");
    assert_signed(signs(&client, "ka").await, "ka after `a` came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_refused_and_the_running_one_stays() {
    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let head = config_head(&dir);
    let a = local_backend(&dir, "a", "");
    let daemon = builder.config(&format!("{head}{a}")).start().await;
    let client = daemon.client().await;
    client
        .generate_key("a", "ka", KeySpec::EcP256)
        .await
        .expect("generate");

    let bad = [
        // Not TOML.
        (format!("{head}{a}\n[[backend]\nname = "), "line"),
        // An unknown backend type: no plugin executable for it.
        (
            format!("{head}{a}{}", backend_table("x", "no-such-type", "")),
            "keyward-plugin-no-such-type is not installed",
        ),
        // A plugin that cannot be run.
        (
            format!(
                "{head}{a}{}",
                backend_table(
                    "x",
                    "external",
                    "command = [\"/nonexistent/keyward-plugin-x\"]"
                )
            ),
            "/nonexistent/keyward-plugin-x",
        ),
        // A [[key]] naming a backend that does not exist.
        (
            format!("{head}{a}\n[[key]]\nid = \"k\"\nbackend = \"nope\"\nref = \"k\"\n"),
            "nope",
        ),
    ];
    for (n, (config, says)) in bad.iter().enumerate() {
        let line = reload(&daemon, config, n + 1).await;
        assert!(
            line.contains("config reload refused") && line.contains(says),
            "reload {n} should be refused naming {says:?}: {line}"
        );
        assert_signed(signs(&client, "ka").await, "ka after a refused reload");
    }
    // The daemon still runs the first config: `x` does not exist.
    let (code, _) = code_of_sign(&client, "x/anything").await;
    assert_eq!(code, Code::NotFound);
    assert!(
        !daemon.log().contains("config reloaded"),
        "a bad config was applied:\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_change_on_reload() {
    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let head = config_head(&dir);
    let a = local_backend(&dir, "a", "");
    let daemon = builder.config(&format!("{head}{a}")).start().await;
    let client = daemon.client().await;
    client
        .generate_key("a", "ka", KeySpec::EcP256)
        .await
        .expect("generate");
    assert_signed(signs(&client, "ka").await, "before any policy");

    // A default policy that serves only uid 4242 (not us).
    let policy = "[default_policy]\nuids = [4242]\n";
    reload(&daemon, &format!("{head}{policy}{a}"), 1).await;
    let (code, message) = code_of_sign(&client, "ka").await;
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(message.contains("uid"), "{message}");

    reload(&daemon, &format!("{head}{a}"), 2).await;
    assert_signed(signs(&client, "ka").await, "after the policy was removed");
}

/// A sign that is running on a plugin when a reload removes that plugin's backend completes
/// with a good signature; the plugin is stopped only afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_old_state() {
    let Some(python) = require(Peer::Python) else {
        return;
    };
    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let key_file = dir.join("example-key.pem");
    openssl_genpkey(
        &key_file,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let head = config_head(&dir);
    let a = local_backend(&dir, "a", "");
    let py = backend_table(
        "py",
        "external",
        &format!(
            "{}\ntimeout = 20\nsign_delay_seconds = 6\n{}",
            python_command(&python),
            path_line("key_file", &key_file)
        ),
    );
    let daemon = builder.config(&format!("{head}{a}{py}")).start().await;
    let _reaper = ChildReaper::new(&daemon);
    let client = daemon.client().await;
    let slow_key = TestKey::fetch(&client, "py/example-p256").await;
    let plugin = plugin_processes(&daemon, "keyward_example_plugin.py");
    assert_eq!(plugin.len(), 1, "{plugin:?}");

    let slow_client = client.clone();
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let outcome = slow_key
            .sign(&slow_client, b"in flight", Duration::from_secs(30))
            .await;
        (outcome, started.elapsed())
    });
    // In flight: the plugin holds it (for 6 s, time for the reload and the checks below).
    wait::for_log(
        &daemon,
        &["py", "sign: waiting"],
        1,
        Duration::from_secs(20),
    )
    .await;
    let line = reload(&daemon, &format!("{head}{a}"), 1).await;
    assert!(line.contains("removed=[\"py\"]"), "{line}");
    // New requests no longer see the removed backend...
    let (code, message) = code_of_sign(&client, "py/example-p256").await;
    assert_eq!(code, Code::NotFound, "{message}");
    // ...and its plugin is still running for the request in flight.
    assert!(
        is_alive(plugin[0].pid),
        "the plugin was stopped under a request in flight"
    );
    let (outcome, took) = slow.await.expect("the slow call");
    assert_signed(outcome, "the request that was in flight during the reload");
    assert!(took >= Duration::from_secs(6), "it really waited: {took:?}");
    let stopped = wait::poll(Duration::from_secs(15), || {
        (!is_alive(plugin[0].pid)).then_some(())
    })
    .await;
    assert!(stopped.is_some(), "the retired plugin was not stopped");
}
