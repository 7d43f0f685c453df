//! Plugin processes that fail: killed under load, hung past the call deadline, unsafe
//! executables, and programs that are not plugins at all. The daemon must stay up, answer
//! UNAVAILABLE or DEADLINE_EXCEEDED with the reason, keep its other backends working, and bring
//! the plugin back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_proto::v1::SignRequest;
use keyward_proto::v1::sign_request::Input;
use keyward_proto::v1::signer_client::SignerClient;
use keyward_sdk::{KeySpec, SignOptions, SignatureAlgorithm as Alg};
use keyward_tests::peers::{Peer, require};
use keyward_tests::plugins::{
    ChildReaper, Outcome, TestKey, backend_table, command_toml, config_head, is_alive, path_line,
    plugin_processes, poll, python_command, wait_for_log, write_script,
};
use keyward_tests::{DaemonBuilder, openssl_genpkey, random_bytes, stderr_text, uds_channel};
use rustix::process::{Pid, Signal, kill_process};
use tonic::Code;

const LOCAL_PLUGIN: &str = "keyward-plugin-local";

/// One signing call: which key, when it started and ended, and what it did.
#[derive(Debug)]
struct Call {
    key: usize,
    started: Instant,
    finished: Instant,
    outcome: Outcome,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_recovers() {
    const TIMEOUT: Duration = Duration::from_secs(5);
    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let config = format!(
        "{}{}{}",
        config_head(&dir),
        backend_table(
            "iso",
            "local",
            &format!(
                "isolation = \"process\"\ntimeout = {}\n{}",
                TIMEOUT.as_secs(),
                path_line("path", &dir.join("iso-keys"))
            )
        ),
        backend_table(
            "inproc",
            "local",
            &format!(
                "isolation = \"none\"\n{}",
                path_line("path", &dir.join("inproc-keys"))
            )
        ),
    );
    let daemon = builder.config(&config).start().await;
    let client = daemon.client().await;
    let mut keys = Vec::new();
    for (id, backend, spec) in [
        ("iso-ec", "iso", KeySpec::EcP256),
        ("iso-ed", "iso", KeySpec::Ed25519),
        ("inproc-ec", "inproc", KeySpec::EcP256),
    ] {
        client
            .generate_key(backend, id, spec)
            .await
            .unwrap_or_else(|e| panic!("generate {id}: {e}"));
        keys.push(TestKey::fetch(&client, id).await);
    }
    let keys = Arc::new(keys);
    let plugins = plugin_processes(&daemon, LOCAL_PLUGIN);
    assert_eq!(plugins.len(), 1, "one plugin process: {plugins:?}");
    let victim = plugins[0].pid;

    let calls = Arc::new(Mutex::new(Vec::<Call>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..32 {
        let (client, keys, calls, stop) =
            (client.clone(), keys.clone(), calls.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = (task + n) % keys.len();
                let message = format!("task {task} call {n}").into_bytes();
                let started = Instant::now();
                let outcome = keys[key]
                    .sign(&client, &message, TIMEOUT + Duration::from_secs(2))
                    .await;
                let failed = !matches!(outcome, Outcome::Signed);
                calls.lock().expect("calls").push(Call {
                    key,
                    started,
                    finished: Instant::now(),
                    outcome,
                });
                if failed {
                    // A real client would honour retry-after-ms; do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                n += 1;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    kill_process(Pid::from_raw(victim as i32).expect("pid"), Signal::KILL).expect("kill -9");
    // Keep signing for 2 s, longer if the plugin is not back yet (at most 6 s).
    let recovered = |calls: &[Call]| {
        calls
            .iter()
            .filter(|c| keys[c.key].backend == "iso" && c.started >= killed_at)
            .filter(|c| matches!(c.outcome, Outcome::Signed))
            .map(|c| c.finished - killed_at)
            .min()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    poll(Duration::from_secs(4), || {
        recovered(&calls.lock().expect("calls"))
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a signing task panicked");
    }

    let calls = std::mem::take(&mut *calls.lock().expect("calls"));
    let count = |backend: &str, signed: bool| {
        calls
            .iter()
            .filter(|c| keys[c.key].backend == backend)
            .filter(|c| matches!(c.outcome, Outcome::Signed) == signed)
            .count()
    };
    let bad: Vec<String> = calls
        .iter()
        .filter_map(|c| {
            let key = &keys[c.key];
            match &c.outcome {
                Outcome::Signed => None,
                Outcome::Failed(Code::Unavailable, message)
                    if key.backend == "iso" && message.contains("plugin \"iso\"") =>
                {
                    None
                }
                Outcome::Failed(code, message) => Some(format!("{}: {code:?}: {message}", key.id)),
                Outcome::Hung => Some(format!(
                    "{}: no answer within {:?}",
                    key.id,
                    c.finished - c.started
                )),
                Outcome::BadSignature(error) => Some(format!("{}: bad signature: {error}", key.id)),
            }
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} call(s) hung, returned a bad signature, or failed other than UNAVAILABLE on `iso`; first:\n{}",
        bad.len(),
        bad[..bad.len().min(5)].join("\n")
    );
    assert_eq!(count("inproc", false), 0);
    assert!(count("inproc", true) > 0, "no inproc signature at all");
    let iso_errors = count("iso", false);
    // How many calls land in the short outage (mid-call, while the plugin is down, while it
    // starts) depends on scheduling, so it is reported, not asserted; the new pid and the log
    // show that the plugin died. `is down (<reason>)` and `retry-after-ms` are checked by the
    // broken-plugin tests below, where the plugin stays down.
    let recovery = recovered(&calls).unwrap_or_else(|| {
        panic!(
            "no iso key signed within 6 s of the kill; log:\n{}",
            daemon.log()
        )
    });
    eprintln!("plugin recovery after kill -9: {} ms", recovery.as_millis());
    eprintln!(
        "({} calls: iso {} signed, {iso_errors} UNAVAILABLE; inproc {} signed)",
        calls.len(),
        count("iso", true),
        count("inproc", true)
    );
    assert!(
        recovery < Duration::from_secs(5),
        "recovery took {recovery:?}"
    );

    assert!(is_alive(daemon.pid()), "the daemon died");
    assert!(!is_alive(victim), "the killed plugin is still there");
    let now = plugin_processes(&daemon, LOCAL_PLUGIN);
    assert!(
        now.len() == 1 && now[0].pid != victim,
        "no new plugin process: {now:?}"
    );
    wait_for_log(&daemon, &["plugin down:", "iso"], 1, Duration::from_secs(1)).await;
    let message = b"after the restart";
    for key in keys.iter() {
        let outcome = key.sign(&client, message, TIMEOUT).await;
        assert!(
            matches!(outcome, Outcome::Signed),
            "{}: {outcome:?}",
            key.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_plugin_is_cut_off_and_restarted() {
    let Some(python) = require(Peer::Python) else {
        return;
    };
    let builder = DaemonBuilder::new();
    let key_file = builder.dir().join("example-key.pem");
    openssl_genpkey(
        &key_file,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let fields = format!(
        "{}\ntimeout = 1\nsign_delay_seconds = 3\n{}",
        python_command(&python),
        path_line("key_file", &key_file)
    );
    let daemon = builder
        .extra_toml(&backend_table("py", "external", &fields))
        .start()
        .await;
    let _reaper = ChildReaper::new(&daemon);
    let client = daemon.client().await;
    let key_id = "py/example-p256";
    let der = client.public_key(key_id).await.expect("public key").der;
    client
        .generate_key("local", "steady", KeySpec::EcP256)
        .await
        .expect("generate");
    let steady = TestKey::fetch(&client, "steady").await;
    let first = plugin_processes(&daemon, "keyward_example_plugin.py");
    assert_eq!(first.len(), 1, "one Python plugin: {first:?}");

    let slow_client = client.clone();
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let options = SignOptions {
            algorithm: Some(Alg::EcdsaSha256),
            ..SignOptions::default()
        };
        let call = slow_client.sign_message(key_id, b"slow", &options);
        let result = tokio::time::timeout(Duration::from_secs(10), call).await;
        (result, started.elapsed())
    });
    // The daemon goes on serving other keys meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outcome = steady
        .sign(&client, b"meanwhile", Duration::from_millis(700))
        .await;
    assert!(
        matches!(outcome, Outcome::Signed),
        "during the hang: {outcome:?}"
    );

    let (result, elapsed) = slow.await.expect("the slow call panicked");
    let error = match result {
        Err(_) => panic!("the call to a hung plugin was not cut off within 10 s"),
        Ok(Ok(_)) => panic!("a sign that takes 3 s succeeded under a 1 s timeout"),
        Ok(Err(e)) => e,
    };
    assert_eq!(error.code(), Some(Code::DeadlineExceeded), "{error}");
    assert!(
        error.to_string().contains("did not answer within"),
        "{error}"
    );
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(2)).contains(&elapsed),
        "the deadline fired after {elapsed:?}"
    );

    wait_for_log(&daemon, &["plugin ready", "py"], 2, Duration::from_secs(20)).await;
    let gone = poll(Duration::from_secs(5), || {
        (!is_alive(first[0].pid)).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the hung plugin {} was not killed",
        first[0].pid
    );
    let back = poll(Duration::from_secs(10), || {
        let now = plugin_processes(&daemon, "keyward_example_plugin.py");
        (now.len() == 1 && now[0].pid != first[0].pid).then_some(())
    })
    .await;
    assert!(back.is_some(), "no new Python plugin process");
    // The restarted plugin answers: its key is listed again, with the same public key.
    let mut listed = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            listed = client.list_keys().await.expect("ListKeys");
            if listed.iter().any(|k| k.key_id == key_id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "{key_id} not listed after the restart: {listed:?}"
    );
    let after = client
        .public_key(key_id)
        .await
        .expect("public key after the restart");
    assert_eq!(after.der, der);
}

/// A config with the default `local` backend and a `bad` external backend running `command`.
fn bad_backend(builder: DaemonBuilder, command: &std::path::Path, fields: &str) -> DaemonBuilder {
    let table = format!("{}\n{fields}", command_toml(&[command]));
    builder
        .extra_toml(&backend_table("bad", "external", &table))
        .extra_toml("[[key]]\nid = \"bad-key\"\nbackend = \"bad\"\nref = \"anything\"")
}

#[tokio::test]
async fn unsafe_plugin_executables_stop_the_daemon() {
    for (what, mode, needle) in [
        ("0644", Some(0o644), "is not executable"),
        ("0777", Some(0o777), "writable by group or others"),
        ("0775", Some(0o775), "writable by group or others"),
        ("a directory", None, "is not a regular file"),
    ] {
        let builder = DaemonBuilder::new();
        let program = builder.dir().join("plugin");
        match mode {
            Some(mode) => write_script(&program, "echo 'keyward-plugin v1 ready'", mode),
            None => std::fs::create_dir(&program).expect("mkdir"),
        }
        let output = bad_backend(builder, &program, "").run_to_exit(Duration::from_secs(20));
        let stderr = stderr_text(&output);
        assert!(
            !output.status.success(),
            "{what}: the daemon started:\n{stderr}"
        );
        assert!(
            stderr.contains(program.to_str().expect("UTF-8")) && stderr.contains(needle),
            "{what}: the error names neither the path nor {needle:?}:\n{stderr}"
        );
    }
}

/// A daemon whose `bad` backend runs `script` (which is no working plugin): it must start,
/// log `plugin down: <reason>` at every failed start, answer UNAVAILABLE with the reason for
/// `bad-key`, and keep its `local` backend working.
async fn check_broken_plugin(script: &str, fields: &str, reason: &[&str]) {
    let builder = DaemonBuilder::new();
    let program = builder.dir().join("not-a-plugin.sh");
    write_script(&program, script, 0o755);
    let mut daemon = bad_backend(builder, &program, fields).start().await;
    let _reaper = ChildReaper::new(&daemon);
    // Three failed starts in a row (about 1 s of backoff), each logged with its own reason,
    // naming this run only once (no stale lines of an earlier run).
    let down = wait_for_log(
        &daemon,
        &["plugin down:", "bad"],
        3,
        Duration::from_secs(15),
    )
    .await;
    for line in &down[..3] {
        for needle in reason {
            assert_eq!(
                line.matches(needle).count(),
                1,
                "{script:?}: want {needle:?} once in the reason:\n{line}"
            );
        }
    }

    let client = daemon.client().await;
    client
        .generate_key("local", "good", KeySpec::EcP256)
        .await
        .expect("the local backend works");
    let good = TestKey::fetch(&client, "good").await;
    let outcome = good
        .sign(&client, b"still works", Duration::from_secs(5))
        .await;
    assert!(
        matches!(outcome, Outcome::Signed),
        "{script:?}: {outcome:?}"
    );
    let listed = client
        .list_keys()
        .await
        .expect("ListKeys with a plugin down");
    assert!(listed.iter().any(|k| k.key_id == "good"), "{listed:?}");

    // `bad-key` answers UNAVAILABLE; while the plugin is down (not restarting) the message
    // holds the reason, and the status carries a retry hint.
    let mut raw = SignerClient::new(uds_channel(daemon.socket()).await.expect("channel"));
    let request = SignRequest {
        key_id: "bad-key".into(),
        algorithm: Alg::EcdsaSha256 as i32,
        input: Some(Input::Digest(random_bytes(32))),
        ..SignRequest::default()
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = match raw.sign(request.clone()).await {
            Ok(_) => panic!("{script:?}: bad-key signed"),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::Unavailable, "{script:?}: {status:?}");
        assert!(status.message().contains("plugin \"bad\""), "{status:?}");
        if status.message().contains("is down (") {
            break status;
        }
        seen.push(status.message().to_string());
        assert!(
            Instant::now() < deadline,
            "{script:?}: never `is down`: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for needle in reason {
        assert!(
            status.message().contains(needle),
            "{script:?}: {needle:?} not in {status:?}"
        );
    }
    let retry = status.metadata().get("retry-after-ms").map(|v| v.to_str());
    assert!(
        matches!(retry, Some(Ok(ms)) if ms.parse::<u64>().is_ok_and(|ms| ms > 0)),
        "{script:?}: retry-after-ms: {retry:?}"
    );
    drop((client, raw));
    assert!(daemon.terminate().await.success(), "{}", daemon.log());
}

#[tokio::test]
async fn a_program_printing_something_else_is_down() {
    check_broken_plugin(
        "echo hello\nexec sleep 60",
        "",
        &["\"hello\" instead of the handshake"],
    )
    .await;
}

#[tokio::test]
async fn a_program_exiting_at_once_is_down() {
    check_broken_plugin(
        "echo boom >&2\nexit 3",
        "",
        &["exited (", "before its handshake", "boom"],
    )
    .await;
}

#[tokio::test]
async fn a_silent_program_is_down() {
    check_broken_plugin(
        "exec sleep 60",
        "startup_timeout = 0.5",
        &["printed no handshake within"],
    )
    .await;
}
