//! Backends as plugin processes: the local backend with `isolation = "process"` against the
//! same keys in the daemon, the Python example plugin, the plugin's minimal environment, and
//! plugins stopping with the daemon. Crashes, hangs and broken plugins: `plugins_faults.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use keyward_sdk::{Client, KeyInfo, KeySpec, SignatureAlgorithm as Alg, SignatureFormat};
use keyward_tests::cli::{assert_ok, path};
use keyward_tests::conformance::{ALL_SPECS, check_backend, check_key, expected_algorithms};
use keyward_tests::peers::{Peer, require};
use keyward_tests::plugins::{
    ChildReaper, Outcome, TestKey, backend_table, command_toml, is_alive, path_line,
    plugin_processes, python_command, write_script,
};
use keyward_tests::wait::{self, poll};
use keyward_tests::{
    DaemonBuilder, TestDaemon, binary, openssl, openssl_genpkey, random_bytes, run_cli,
    stderr_text, stdout_text,
};

const LOCAL_PLUGIN: &str = "keyward-plugin-local";

/// Every key the daemon lists, by id, with its public key.
async fn snapshot(client: &Client) -> BTreeMap<String, (KeyInfo, Vec<u8>)> {
    let mut keys = BTreeMap::new();
    for info in client.list_keys().await.expect("ListKeys") {
        let der = client
            .public_key(&info.key_id)
            .await
            .unwrap_or_else(|e| panic!("public key of {}: {e}", info.key_id))
            .der;
        keys.insert(info.key_id.clone(), (info, der));
    }
    keys
}

/// Signs with the SDK and checks the signature with the SDK's verifier.
async fn sign_and_verify(client: &Client, key_id: &str) {
    let key = TestKey::fetch(client, key_id).await;
    let outcome = key
        .sign(client, &random_bytes(80), Duration::from_secs(30))
        .await;
    assert!(matches!(outcome, Outcome::Signed), "{key_id}: {outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_isolation_conforms_like_in_process() {
    let mut daemon = TestDaemon::start("isolation = \"process\"").await;
    let plugins = plugin_processes(&daemon, LOCAL_PLUGIN);
    assert_eq!(plugins.len(), 1, "one {LOCAL_PLUGIN} child: {plugins:?}");
    let client = daemon.client().await;
    for spec in ALL_SPECS {
        let id = format!("iso-{}", spec.name());
        let key = client
            .generate_key("local", &id, spec)
            .await
            .unwrap_or_else(|e| panic!("generate {id} in the plugin: {e}"));
        assert_eq!(key.info.key_spec(), spec, "{id}");
    }
    check_backend(&client, "local").await;
    let in_plugin = snapshot(&client).await;
    assert_eq!(in_plugin.len(), ALL_SPECS.len(), "{in_plugin:?}");
    for spec in ALL_SPECS {
        let (info, _) = &in_plugin[&format!("iso-{}", spec.name())];
        assert_eq!(info.key_spec(), spec);
        assert_eq!(
            info.algorithms().collect::<Vec<_>>(),
            expected_algorithms(spec)
        );
    }
    drop(client);

    // The same key directory and state, served inside the daemon.
    let config = fs::read_to_string(daemon.config_path()).expect("read the config");
    let changed = config.replace("isolation = \"process\"", "isolation = \"none\"");
    assert_ne!(config, changed);
    fs::write(daemon.config_path(), changed).expect("write the config");
    daemon.restart().await;
    let plugins = plugin_processes(&daemon, LOCAL_PLUGIN);
    assert!(plugins.is_empty(), "isolation = \"none\" runs {plugins:?}");
    let client = daemon.client().await;
    let in_daemon = snapshot(&client).await;
    assert_eq!(
        in_plugin, in_daemon,
        "the plugin process and the daemon list the same key directory differently"
    );
    check_backend(&client, "local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_plugin_signs_and_conforms() {
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
        "{}\n{}",
        python_command(&python),
        path_line("key_file", &key_file)
    );
    let mut daemon = builder
        .extra_toml(&backend_table("py", "external", &fields))
        .start()
        .await;
    let _reaper = ChildReaper::new(&daemon);
    let client = daemon.client().await;
    let key_id = "py/example-p256";
    let listed = client.list_keys().await.expect("ListKeys");
    assert!(
        listed
            .iter()
            .any(|k| k.key_id == key_id && k.backend == "py"),
        "{key_id} is not listed: {listed:?}\nlog:\n{}",
        daemon.log()
    );
    let key = client.public_key(key_id).await.expect("public key");
    assert_eq!(key.info.key_spec(), KeySpec::EcP256);
    let file_pub = openssl(["pkey", "-in", path(&key_file), "-pubout", "-outform", "DER"]);
    assert!(file_pub.status.success(), "{}", stderr_text(&file_pub));
    assert_eq!(key.der, file_pub.stdout, "not the key file's public key");

    // Signed through the CLI, checked with the openssl CLI.
    let work = tempfile::tempdir().expect("temp dir");
    let (msg, sig, pem) = (
        work.path().join("msg"),
        work.path().join("sig"),
        work.path().join("pub.pem"),
    );
    let message = random_bytes(200);
    fs::write(&msg, &message).expect("write msg");
    fs::write(&pem, &key.pem).expect("write pub.pem");
    let output = run_cli(
        &daemon,
        [
            "sign",
            "--key",
            key_id,
            "--input",
            path(&msg),
            "--output",
            path(&sig),
        ],
    );
    assert_ok(&output, "keyward sign with the Python plugin's key");
    let verify = |message_path: &std::path::Path| {
        openssl([
            "dgst",
            "-sha256",
            "-verify",
            path(&pem),
            "-signature",
            path(&sig),
            path(message_path),
        ])
    };
    let verified = verify(&msg);
    assert!(
        verified.status.success() && stdout_text(&verified).contains("Verified OK"),
        "openssl: {}{}",
        stdout_text(&verified),
        stderr_text(&verified)
    );
    let tampered = work.path().join("tampered");
    let mut other = message.clone();
    other[0] ^= 1;
    fs::write(&tampered, &other).expect("write");
    assert!(
        !verify(&tampered).status.success(),
        "openssl accepts a tampered message"
    );
    let signature = fs::read(&sig).expect("read sig");
    keyward_sdk::verify_message(
        &key.der,
        Alg::EcdsaSha256,
        &message,
        &signature,
        SignatureFormat::Der,
    )
    .expect("the SDK verifies the CLI's signature");

    // Through the SDK, every ECDSA hash and format, and the whole contract.
    sign_and_verify(&client, key_id).await;
    check_key(&client, key_id).await;
    drop(client);
    assert!(daemon.terminate().await.success(), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_get_a_minimal_environment() {
    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let dump = dir.join("plugin-env.txt");
    let script = dir.join("env-plugin.sh");
    // Written under another name and renamed, so that the file is whole once it exists.
    write_script(
        &script,
        &format!(
            "env > '{dump}.part' && mv '{dump}.part' '{dump}'\nexec '{}'",
            binary(LOCAL_PLUGIN).display(),
            dump = dump.display(),
        ),
        0o755,
    );
    let fields = format!(
        "{}\nenv = [\"KEYWARD_TEST_PASSED\"]\n{}",
        command_toml(&[&script]),
        path_line("path", &dir.join("ext-keys"))
    );
    let daemon = builder
        .extra_toml(&backend_table("ext", "external", &fields))
        .env("KEYWARD_TEST_SECRET_NOT_PASSED", "x")
        .env("KEYWARD_TEST_PASSED", "y")
        .start()
        .await;
    let _reaper = ChildReaper::new(&daemon);
    // The daemon answers before its plugin has necessarily run that far (issue #22).
    let text = wait::until_async(
        "the plugin to write its environment",
        Duration::from_secs(20),
        async || fs::read_to_string(&dump).map_err(|e| format!("{}: {e}", dump.display())),
    )
    .await;
    let env: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let socket = env
        .get("KEYWARD_PLUGIN_SOCKET")
        .copied()
        .unwrap_or_default();
    assert!(
        socket.ends_with(".sock"),
        "KEYWARD_PLUGIN_SOCKET in:\n{text}"
    );
    assert_eq!(env.get("KEYWARD_PLUGIN_NAME"), Some(&"ext"), "{text}");
    assert_eq!(env.get("KEYWARD_PLUGIN_PROTOCOL"), Some(&"1"), "{text}");
    assert_eq!(env.get("KEYWARD_TEST_PASSED"), Some(&"y"), "{text}");
    assert_eq!(
        env.get("PATH"),
        Some(&"/usr/local/bin:/usr/bin:/bin"),
        "{text}"
    );
    // The harness sets these for the daemon; none may reach the plugin.
    for name in [
        "KEYWARD_TEST_SECRET_NOT_PASSED",
        "RUST_BACKTRACE",
        "XDG_RUNTIME_DIR",
    ] {
        assert!(
            !env.contains_key(name),
            "{name} reached the plugin:\n{text}"
        );
    }
    assert!(!text.contains("KEYWARD_TEST_SECRET_NOT_PASSED"), "{text}");

    // The plugin the script became serves keys.
    let client = daemon.client().await;
    client
        .generate_key("ext", "ext-ec", KeySpec::EcP256)
        .await
        .expect("generate in the external plugin");
    sign_and_verify(&client, "ext-ec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_stop_with_the_daemon() {
    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let script = dir.join("wrapped-plugin.sh");
    write_script(
        &script,
        &format!("exec '{}'", binary(LOCAL_PLUGIN).display()),
        0o755,
    );
    let fields = format!(
        "{}\n{}",
        command_toml(&[&script]),
        path_line("path", &dir.join("ext-keys"))
    );
    let mut daemon = builder
        .extra_toml("isolation = \"process\"")
        .extra_toml(&backend_table("ext", "external", &fields))
        .start()
        .await;
    let _reaper = ChildReaper::new(&daemon);
    let client = daemon.client().await;
    for backend in ["local", "ext"] {
        let id = format!("{backend}-key");
        client
            .generate_key(backend, &id, KeySpec::Ed25519)
            .await
            .unwrap_or_else(|e| panic!("generate in {backend}: {e}"));
        sign_and_verify(&client, &id).await;
    }
    let plugins = plugin_processes(&daemon, LOCAL_PLUGIN);
    assert_eq!(plugins.len(), 2, "two plugin processes: {plugins:?}");
    drop(client);

    let status = daemon.terminate().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status; log:\n{}",
        daemon.log()
    );
    let left = poll(Duration::from_secs(10), || {
        plugins.iter().all(|p| !is_alive(p.pid)).then_some(())
    })
    .await;
    let alive: Vec<_> = plugins.iter().filter(|p| is_alive(p.pid)).collect();
    assert!(left.is_some(), "plugins outlived the daemon: {alive:?}");
    wait::for_log(&daemon, &["plugin stopped"], 2, Duration::from_secs(1)).await;
}
