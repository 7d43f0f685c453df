//! The `awskms` backend when things go wrong, against a real local-kms: KMS down at start,
//! stopped mid-run, frozen (a peer that hangs), a disabled key, a burst over the rate limit,
//! no credentials at all, bad settings, and the backend as a plugin process.

use std::time::{Duration, Instant};

use keyward_sdk::{Client, SignOptions, SignatureAlgorithm as Alg, SignatureFormat};
use keyward_tests::conformance::check_key;
use keyward_tests::localkms::{AWS_ENV_NAMES, LocalKms, isolated_aws_env};
use keyward_tests::{DaemonBuilder, TestDaemon, stderr_text};
use tonic::Code;

/// How long a call may take when KMS is down or hangs before the test calls it a hang.
const NO_HANG: Duration = Duration::from_secs(20);

/// A daemon whose config is `toml`, with the isolated AWS environment.
async fn daemon_with(toml: &str) -> TestDaemon {
    isolated_aws_env(DaemonBuilder::new())
        .extra_toml(toml)
        .start()
        .await
}

fn key_toml(id: &str, backend: &str, reference: &str) -> String {
    format!("[[key]]\nid = \"{id}\"\nbackend = \"{backend}\"\nref = \"{reference}\"\n")
}

/// Signs `message` with ECDSA-SHA256 (DER) and verifies it against the served public key.
async fn sign_and_verify(client: &Client, key_id: &str, message: &[u8]) {
    let options = SignOptions {
        algorithm: Some(Alg::EcdsaSha256),
        ..SignOptions::default()
    };
    let signature = client
        .sign_message(key_id, message, &options)
        .await
        .unwrap_or_else(|e| panic!("sign with {key_id}: {e}"));
    let key = client.public_key(key_id).await.expect("public key");
    keyward_sdk::verify_message(
        &key.der,
        Alg::EcdsaSha256,
        message,
        &signature.bytes,
        SignatureFormat::Der,
    )
    .unwrap_or_else(|e| panic!("{key_id}: {e}"));
}

/// The error of a sign that must fail, within [`NO_HANG`].
async fn sign_error(client: &Client, key_id: &str) -> keyward_sdk::Error {
    let options = SignOptions {
        algorithm: Some(Alg::EcdsaSha256),
        ..SignOptions::default()
    };
    let call = client.sign_message(key_id, b"must fail", &options);
    match tokio::time::timeout(NO_HANG, call).await {
        Err(_) => panic!("signing with {key_id} hung for {NO_HANG:?}"),
        Ok(Ok(_)) => panic!("signing with {key_id} worked although it must fail"),
        Ok(Err(e)) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_or_hung_kms_is_unavailable_until_it_is_back() {
    let Some(mut kms) = LocalKms::start() else {
        return;
    };
    let key = kms.create_signing_key("ECC_NIST_P256");
    kms.create_alias("alias/durable", &key);
    kms.stop();

    // keywardd starts although KMS is down: nothing talks to KMS before the first call.
    let table = kms.backend_toml("awskms", "");
    let daemon = daemon_with(&format!(
        "{table}{}",
        key_toml("durable", "awskms", "alias/durable")
    ))
    .await;
    let client = daemon.client().await;
    let error = sign_error(&client, "durable").await;
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(error.to_string().contains(&kms.endpoint()), "{error}");

    kms.start_again();
    sign_and_verify(&client, "durable", b"KMS is up").await;

    // Stopped while in use, with signatures in flight: every call ends, none hangs.
    let mut calls = Vec::new();
    for i in 0..16 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let options = SignOptions {
                algorithm: Some(Alg::EcdsaSha256),
                ..SignOptions::default()
            };
            let started = Instant::now();
            let result = client
                .sign_message("durable", format!("in flight {i}").as_bytes(), &options)
                .await;
            (started.elapsed(), result)
        }));
        if i == 8 {
            tokio::task::block_in_place(|| kms.stop());
        }
    }
    let mut unavailable = 0;
    for call in calls {
        let (took, result) = tokio::time::timeout(NO_HANG, call)
            .await
            .expect("a call in flight hung")
            .expect("signing task");
        assert!(took < NO_HANG, "{took:?}");
        if let Err(e) = result {
            assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
            unavailable += 1;
        }
    }
    assert!(unavailable > 0, "no call noticed that KMS stopped");
    let started = Instant::now();
    let error = sign_error(&client, "durable").await;
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(error.to_string().contains(&kms.endpoint()), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "{error}");

    // Back on the same port with the same data: signing resumes in the same keywardd.
    kms.start_again();
    sign_and_verify(&client, "durable", b"after the restart").await;

    // Frozen: it accepts connections but never answers. The SDK's timeout ends the call.
    kms.pause();
    let started = Instant::now();
    let error = sign_error(&client, "durable").await;
    kms.resume();
    assert_eq!(error.code(), Some(Code::Unavailable), "{error}");
    assert!(
        error.to_string().contains("did not answer in time"),
        "{error}"
    );
    assert!(started.elapsed() >= Duration::from_secs(5), "{error}");
    sign_and_verify(&client, "durable", b"thawed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_key_is_refused_until_it_is_enabled() {
    let Some(kms) = LocalKms::start() else { return };
    let switch = kms.create_signing_key("ECC_NIST_P256");
    kms.create_alias("alias/switch", &switch);
    let off = kms.create_signing_key("ECC_NIST_P256");
    kms.set_enabled(&off, false);
    let table = kms.backend_toml("awskms", "");
    let daemon = daemon_with(&format!("{table}{}", key_toml("off", "awskms", &off))).await;
    let client = daemon.client().await;

    sign_and_verify(&client, "awskms/switch", b"enabled").await;
    kms.set_enabled(&switch, false);
    let error = sign_error(&client, "awskms/switch").await;
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(
        error.to_string().contains("key state Disabled") && error.to_string().contains("switch"),
        "{error}"
    );
    kms.set_enabled(&switch, true);
    sign_and_verify(&client, "awskms/switch", b"enabled again").await;

    // A key that is disabled when the agent first reads it.
    let error = client.public_key("off").await.expect_err("a disabled key");
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(error.to_string().contains("enable-key"), "{error}");
    kms.set_enabled(&off, true);
    sign_and_verify(&client, "off", b"now enabled").await;
}

/// Signs 30 messages at once with `key_id`; all must verify. Returns how long they took.
async fn burst(client: &Client, key_id: &str) -> Duration {
    let key = client.public_key(key_id).await.expect("public key");
    // Let the bucket fill up again after the public key's requests.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (client, key_id) = (client.clone(), key_id.to_string());
        tasks.push(tokio::spawn(async move {
            let message = format!("burst {i}").into_bytes();
            let options = SignOptions {
                algorithm: Some(Alg::EcdsaSha256),
                ..SignOptions::default()
            };
            let result = client.sign_message(&key_id, &message, &options).await;
            (message, result)
        }));
    }
    for task in tasks {
        let (message, result) = task.await.expect("signing task");
        let signature = result.unwrap_or_else(|e| panic!("{key_id}: a queued sign failed: {e}"));
        keyward_sdk::verify_message(
            &key.der,
            Alg::EcdsaSha256,
            &message,
            &signature.bytes,
            signature.format,
        )
        .expect("a queued signature verifies");
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_queues_a_burst_instead_of_failing() {
    let Some(kms) = LocalKms::start() else { return };
    let key = kms.create_signing_key("ECC_NIST_P256");
    kms.create_alias("alias/burst", &key);
    let tables = [
        kms.backend_toml("limited", "rate_limit = 5"),
        kms.backend_toml("unlimited", ""),
    ]
    .concat();
    let daemon = daemon_with(&tables).await;
    let client = daemon.client().await;

    // 5 requests go at once, the other 25 one every 200 ms: about 5 s in all. A slow or busy
    // machine only makes that longer, so the bound holds under load. The unlimited run shows
    // the 5 s come from the limit: 30 signatures take a fraction of a second on local-kms (1.5 s
    // for 60 on a fully loaded 2-core machine), far below half the limited time.
    let limited = burst(&client, "limited/burst").await;
    assert!(limited >= Duration::from_millis(4800), "{limited:?}");
    let unlimited = burst(&client, "unlimited/burst").await;
    assert!(
        unlimited < limited / 2,
        "30 signatures take {unlimited:?} without the rate limit and {limited:?} with it, so the limit's effect is not measurable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_runs_as_a_plugin_process() {
    let Some(kms) = LocalKms::start() else { return };
    let key = kms.create_signing_key("ECC_NIST_P521");
    kms.create_alias("alias/isolated", &key);
    let env: Vec<String> = AWS_ENV_NAMES.iter().map(|n| format!("\"{n}\"")).collect();
    let table = kms.backend_toml(
        "awskms",
        &format!("isolation = \"process\"\nenv = [{}]", env.join(", ")),
    );
    let daemon = daemon_with(&table).await;
    let client = daemon.client().await;
    let made = client
        .generate_key("awskms", "made-by-plugin", keyward_sdk::KeySpec::EcP256)
        .await
        .expect("generate through the plugin");
    assert_eq!(made.der, kms.public_key_der("alias/made-by-plugin"));
    check_key(&client, "awskms/isolated").await;
    check_key(&client, "made-by-plugin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_are_explained() {
    let Some(kms) = LocalKms::start() else { return };
    let key = kms.create_signing_key("ECC_NIST_P256");
    kms.create_alias("alias/k", &key);
    // A plugin gets only the variables its `env` names: here no credentials, no shared config
    // files, no instance metadata. The SDK's whole chain comes up empty without leaving
    // the machine.
    let builder = DaemonBuilder::new();
    let missing = builder
        .dir()
        .join("missing")
        .to_str()
        .expect("UTF-8")
        .to_string();
    let home = builder.dir().to_str().expect("UTF-8").to_string();
    let table = kms.backend_toml(
        "awskms",
        "isolation = \"process\"\nenv = [\"AWS_CONFIG_FILE\", \"AWS_SHARED_CREDENTIALS_FILE\", \"AWS_EC2_METADATA_DISABLED\"]",
    );
    let daemon = builder
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", &missing)
        .env("AWS_SHARED_CREDENTIALS_FILE", &missing)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .extra_toml(&format!("{table}{}", key_toml("k", "awskms", "alias/k")))
        .start()
        .await;
    let client = daemon.client().await;
    let error = sign_error(&client, "k").await;
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("no usable AWS credentials") && text.contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_by_check_config() {
    for (setting, want) in [
        ("rate_limit = 0", "rate_limit = 0"),
        ("access_key_id = \"AKIA\"", "unknown field `access_key_id`"),
        ("endpoint = \"kms.local:4599\"", "https://"),
    ] {
        let table = format!(
            "[[backend]]\nname = \"awskms\"\ntype = \"awskms\"\nregion = \"eu-west-1\"\n{setting}\n"
        );
        let output = DaemonBuilder::new()
            .extra_toml(&table)
            .arg("--check-config")
            .run_to_exit(Duration::from_secs(20));
        assert_eq!(output.status.code(), Some(2), "{setting}: {output:?}");
        assert!(
            stderr_text(&output).contains(want),
            "{setting}: {}",
            stderr_text(&output)
        );
    }
    let good = "[[backend]]\nname = \"awskms\"\ntype = \"awskms\"\nregion = \"eu-west-1\"\nrate_limit = 50\n";
    let output = DaemonBuilder::new()
        .extra_toml(good)
        .arg("--check-config")
        .run_to_exit(Duration::from_secs(20));
    assert!(output.status.success(), "{}", stderr_text(&output));
}
