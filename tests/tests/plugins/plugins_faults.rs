//! Plugin processes that fail: killed under load, and hung past the call deadline. The daemon
//! must stay up, answer UNAVAILABLE or DEADLINE_EXCEEDED with the reason, keep its other
//! backends working, and bring the plugin back. Unsafe executables and programs that are not
//! plugins at all are in `bad_plugins.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_sdk::{KeySpec, SignOptions, SignatureAlgorithm as Alg};
use keyward_tests::peers::{Peer, require};
use keyward_tests::plugins::{
    ChildReaper, Outcome, TestKey, backend_table, config_head, is_alive, path_line,
    plugin_processes, python_command,
};
use keyward_tests::wait::{self, poll};
use keyward_tests::{DaemonBuilder, openssl_genpkey};
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

/// How long a killed plugin may take to sign again (restart and start-up, on a busy machine).
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

/// The delay in a "plugin down: <reason>; restarting in <delay>" log line (`Duration`'s
/// `Debug` form: `87.123ms`, `1.5s`, `950µs`).
fn restart_delay(line: &str) -> Duration {
    let text = line
        .split("restarting in ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no restart delay in: {line}"));
    let unit_at = text
        .find(|c: char| c.is_alphabetic() || c == 'µ')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let value: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("no restart delay in: {line}"));
    let seconds = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "µs" | "us" => value / 1e6,
        "ns" => value / 1e9,
        _ => panic!("unknown unit {unit:?} in: {line}"),
    };
    Duration::from_secs_f64(seconds)
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
    // Keep signing for 2 s, longer if the plugin is not back yet (a deadline of 30 s: how long
    // a restart takes depends on the machine's load; the delay the daemon chose does not, and
    // is checked below).
    let recovered = |calls: &[Call]| {
        calls
            .iter()
            .filter(|c| keys[c.key].backend == "iso" && c.started >= killed_at)
            .filter(|c| matches!(c.outcome, Outcome::Signed))
            .map(|c| c.finished - killed_at)
            .min()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    poll(RECOVERY_DEADLINE, || {
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
            "no iso key signed within {RECOVERY_DEADLINE:?} of the kill; log:\n{}",
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

    assert!(is_alive(daemon.pid()), "the daemon died");
    assert!(!is_alive(victim), "the killed plugin is still there");
    let now = plugin_processes(&daemon, LOCAL_PLUGIN);
    assert!(
        now.len() == 1 && now[0].pid != victim,
        "no new plugin process: {now:?}"
    );
    let down = wait::for_log(
        &daemon,
        &["plugin down:", "iso"],
        1,
        Duration::from_secs(10),
    )
    .await;
    // The daemon restarted the plugin after its first backoff (100 ms +-50%), not later.
    let delay = restart_delay(&down[0]);
    assert!(
        delay <= Duration::from_millis(150),
        "restarting after {delay:?}, not the first backoff: {}",
        down[0]
    );
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
        "{}\ntimeout = 3\nsign_delay_seconds = 10\n{}",
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
    // The daemon goes on serving other keys meanwhile: once the plugin holds the slow call,
    // another key signs before the slow call ends (its 3 s deadline).
    wait::for_log(
        &daemon,
        &["py", "sign: waiting"],
        1,
        Duration::from_secs(20),
    )
    .await;
    let outcome = steady
        .sign(&client, b"meanwhile", Duration::from_secs(10))
        .await;
    assert!(
        matches!(outcome, Outcome::Signed),
        "during the hang: {outcome:?}"
    );
    assert!(
        !slow.is_finished(),
        "the other key answered only after the hung call had ended"
    );

    let (result, elapsed) = slow.await.expect("the slow call panicked");
    let error = match result {
        Err(_) => panic!("the call to a hung plugin was not cut off within 10 s"),
        Ok(Ok(_)) => panic!("a sign that takes 10 s succeeded under a 3 s timeout"),
        Ok(Err(e)) => e,
    };
    assert_eq!(error.code(), Some(Code::DeadlineExceeded), "{error}");
    // The configured deadline ended it (the message names it; how much later the answer came
    // depends on the machine's load, so only "not before the deadline" is checked by time).
    assert!(
        error.to_string().contains("did not answer within 3.0s"),
        "{error}"
    );
    assert!(
        elapsed >= Duration::from_millis(2900),
        "the deadline fired early, after {elapsed:?}"
    );

    wait::for_log(&daemon, &["plugin ready", "py"], 2, Duration::from_secs(20)).await;
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
