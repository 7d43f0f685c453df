//! cosign signs and verifies with agent keys through `sigstore-kms-keyward`: the real cosign
//! CLI (v2.6.5) with `--key keyward://KEY_ID`, for keys in the local backend, in SoftHSM (a
//! `pkcs11` plugin process) and in OpenBao transit (`vault`), each ECDSA P-256, P-384 and
//! RSA-2048. Every key makes a blob signature and an image signature in a real registry;
//! cosign verifies them with the exported public key and through the plugin, `openssl`
//! verifies the blob signatures too, and a changed blob or signature fails. A key policy that
//! names notation's plugin refuses cosign, and the audit log records it.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyward_sdk::{Client, KeySpec};
use keyward_tests::cosign::{self, Cosign};
use keyward_tests::notation::{Registry, run_plugin};
use keyward_tests::openbao::OpenBao;
use keyward_tests::peers::{Peer, require};
use keyward_tests::softhsm::{self, PIN, SoftHsm};
use keyward_tests::{
    DaemonBuilder, TestDaemon, binary, openssl, random_bytes, run_cli, stderr_text,
};

/// Checks everything cosign does with `key_id` (`keyward://<key_id>`); `repo` names its image.
async fn exercise(cosign: &Cosign, client: &Client, registry: &Registry, key_id: &str, repo: &str) {
    let dir = cosign.dir();
    let reference = format!("keyward://{key_id}");
    let file = |name: &str| dir.join(format!("{repo}.{name}"));
    let path = |name: &str| file(name).to_str().expect("UTF-8").to_string();

    // The public key cosign exports is the agent's.
    cosign.ok(["public-key", "--key", &reference, "--outfile", &path("pub")]);
    let exported = std::fs::read_to_string(file("pub")).expect("the exported public key");
    let agent = client
        .public_key(key_id)
        .await
        .expect("the agent's public key");
    assert_eq!(
        squash(&exported),
        squash(&agent.pem),
        "{key_id}: exported public key"
    );

    // A blob: signed through the agent, verified by cosign (public key file and plugin) and
    // by openssl.
    std::fs::write(file("blob"), random_bytes(100_000)).expect("write the blob");
    cosign.ok([
        "sign-blob",
        "--key",
        &reference,
        "--tlog-upload=false",
        "--output-signature",
        &path("sig"),
        &path("blob"),
    ]);
    let signature_b64 = std::fs::read_to_string(file("sig")).expect("the signature file");
    let signature = STANDARD
        .decode(signature_b64.trim())
        .expect("base64 signature");
    std::fs::write(file("sig.der"), &signature).expect("write the raw signature");
    for key in [path("pub"), reference.clone()] {
        let out = cosign.ok([
            "verify-blob",
            "--key",
            &key,
            "--insecure-ignore-tlog=true",
            "--signature",
            &path("sig"),
            &path("blob"),
        ]);
        assert!(out.contains("Verified OK"), "{key_id} with {key}: {out}");
    }
    let checked = openssl([
        "dgst",
        "-sha256",
        "-verify",
        &path("pub"),
        "-signature",
        &path("sig.der"),
        &path("blob"),
    ]);
    assert!(
        checked.status.success(),
        "openssl rejects {key_id}'s signature: {}",
        stderr_text(&checked)
    );

    // A changed blob and a changed signature do not verify, with either kind of key.
    let mut blob = std::fs::read(file("blob")).expect("read the blob");
    blob[5_000] ^= 1;
    std::fs::write(file("tampered"), &blob).expect("write the changed blob");
    let mut bad = signature.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x40;
    std::fs::write(file("badsig"), STANDARD.encode(&bad)).expect("write the changed signature");
    for key in [path("pub"), reference.clone()] {
        cosign.fails([
            "verify-blob",
            "--key",
            &key,
            "--insecure-ignore-tlog=true",
            "--signature",
            &path("sig"),
            &path("tampered"),
        ]);
        cosign.fails([
            "verify-blob",
            "--key",
            &key,
            "--insecure-ignore-tlog=true",
            "--signature",
            &path("badsig"),
            &path("blob"),
        ]);
    }

    // An image in the registry: signed through the agent, verified with the public key.
    let (_, image) = registry.push_image(repo);
    let registry_flags = ["--allow-insecure-registry", "--allow-http-registry"];
    let mut sign = vec!["sign", "--key", &reference, "--tlog-upload=false"];
    sign.extend(registry_flags);
    sign.push(&image);
    cosign.ok(&sign);
    let mut verify = vec!["verify", "--key", "PUB", "--insecure-ignore-tlog=true"];
    verify.extend(registry_flags);
    let pub_path = path("pub");
    verify[2] = &pub_path;
    let mut verify_image = verify.clone();
    verify_image.push(&image);
    let out = cosign.ok(&verify_image);
    assert!(
        out.contains("The signatures were verified against the specified public key"),
        "{out}"
    );
    // An image nobody signed does not verify.
    let (_, unsigned) = registry.push_image(&format!("{repo}-unsigned"));
    let mut verify_unsigned = verify.clone();
    verify_unsigned.push(&unsigned);
    cosign.fails(&verify_unsigned);
}

/// A PEM or base64 text without line breaks.
fn squash(text: &str) -> String {
    text.split_whitespace().collect()
}

fn read_pub(dir: &Path, repo: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{repo}.pub"))).expect("public key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_keys_sign_blobs_and_images() {
    let Some(bin) = cosign::binary() else { return };
    let Some(tools) = cosign::registry_tools() else {
        return;
    };
    let daemon = TestDaemon::start("").await;
    let cosign = Cosign::new(&bin, daemon.socket());
    let client = daemon.client().await;
    let registry = Registry::start(&tools);
    // P-256 through cosign's own key creation (createKey), the others through the CLI.
    let out = cosign.ok(["generate-key-pair", "--kms", "keyward://local-p256"]);
    assert!(out.contains("Public key written to cosign.pub"), "{out}");
    let created = client
        .public_key("local-p256")
        .await
        .expect("the created key");
    assert_eq!(created.info.key_spec(), KeySpec::EcP256);
    assert_eq!(
        squash(&read_pub(cosign.dir(), "cosign")),
        squash(&created.pem)
    );
    // Creating it again is harmless; as another type it is refused.
    cosign.ok(["generate-key-pair", "--kms", "keyward://local-p256"]);
    let plugin = std::process::Command::new(cosign.plugin_path())
        .args([
            "v1",
            r#"{"initOptions":{"protocolVersion":"v1","keyResourceID":"local-p256","hashFunc":5},"methodName":"createKey","createKey":{"algorithm":"rsa-2048"}}"#,
        ])
        .env("KEYWARD_SOCK", daemon.socket())
        .output()
        .expect("run the plugin");
    let answer = String::from_utf8_lossy(&plugin.stdout);
    assert!(
        answer.contains("already exists as ec-p256, not rsa-2048"),
        "{answer}"
    );
    for (id, kind) in [("local-p384", "ec-p384"), ("local-rsa", "rsa-2048")] {
        let output = run_cli(
            &daemon,
            ["keys", "generate", "--backend", "local", "--type", kind, id],
        );
        keyward_tests::cli::assert_ok(&output, "keyward keys generate");
    }
    for id in ["local-p256", "local-p384", "local-rsa"] {
        exercise(&cosign, &client, &registry, id, id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_keys_sign_blobs_and_images() {
    let Some(bin) = cosign::binary() else { return };
    let Some(tools) = cosign::registry_tools() else {
        return;
    };
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    hsm.init_token("cosign", softhsm::SO_PIN, PIN);
    let daemon = DaemonBuilder::new()
        .extra_toml(&hsm.backend_toml("cosign", ""))
        .env("SOFTHSM2_CONF", hsm.conf().to_str().expect("UTF-8"))
        .env(softhsm::PIN_ENV, PIN)
        .start()
        .await;
    let cosign = Cosign::new(&bin, daemon.socket());
    let client = daemon.client().await;
    let registry = Registry::start(&tools);
    // Keys made inside the token through cosign (createKey with ?backend=) and the SDK.
    cosign.ok([
        "generate-key-pair",
        "--kms",
        "keyward://hsm-p256?backend=hsm",
    ]);
    client
        .generate_key("hsm", "hsm-p384", KeySpec::EcP384)
        .await
        .expect("generate P-384");
    client
        .generate_key("hsm", "hsm-rsa", KeySpec::Rsa2048)
        .await
        .expect("generate RSA");
    let objects = hsm.private_objects("cosign", PIN);
    assert!(
        objects.matches("Private Key Object").count() >= 3,
        "{objects}"
    );
    for id in ["hsm-p256", "hsm-p384", "hsm-rsa"] {
        exercise(&cosign, &client, &registry, id, id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_keys_sign_blobs_and_images() {
    let Some(bin) = cosign::binary() else { return };
    let Some(tools) = cosign::registry_tools() else {
        return;
    };
    let Some(bao) = OpenBao::dev() else { return };
    for (name, kind) in [
        ("p256", "ecdsa-p256"),
        ("p384", "ecdsa-p384"),
        ("rsa", "rsa-2048"),
    ] {
        bao.create_key(name, kind);
    }
    let table = bao.backend_toml("vault", "token_env = \"VAULT_TEST_TOKEN\"");
    let daemon = DaemonBuilder::new()
        .extra_toml(&table)
        .env("VAULT_TEST_TOKEN", bao.root_token())
        .start()
        .await;
    let cosign = Cosign::new(&bin, daemon.socket());
    let client = daemon.client().await;
    let registry = Registry::start(&tools);
    // Transit keys the backend discovers, as <backend>/<name>.
    for name in ["p256", "p384", "rsa"] {
        exercise(
            &cosign,
            &client,
            &registry,
            &format!("vault/{name}"),
            &format!("vault-{name}"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_name_the_key_and_what_to_do() {
    let Some(bin) = cosign::binary() else { return };
    let daemon = TestDaemon::start("").await;
    let cosign = Cosign::new(&bin, daemon.socket());
    std::fs::write(cosign.dir().join("blob"), b"data").expect("write");
    let out = cosign.fails([
        "sign-blob",
        "--key",
        "keyward://no-such-key",
        "--tlog-upload=false",
        "blob",
    ]);
    assert!(
        out.contains("keyward://no-such-key") && out.contains("no-such-key"),
        "{out}"
    );
    // No agent at all: the plugin says how to start or find one.
    let out = cosign.run_with(
        ["public-key", "--key", "keyward://anything"],
        &[("KEYWARD_SOCK", "/nonexistent/agent.sock")],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_text(&out)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("keywardd") && text.contains("KEYWARD_SOCK"),
        "{text}"
    );
}

/// "Beyond the anchors": one key that notation (through notation-keyward) and the keyward CLI
/// may use and cosign may not, by executable; the refusal is in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refuses_cosign_for_a_key_notation_may_use() {
    let Some(bin) = cosign::binary() else { return };
    let notation_plugin = binary("notation-keyward")
        .canonicalize()
        .expect("canonical path");
    let cli = binary("keyward").canonicalize().expect("canonical path");
    let builder = DaemonBuilder::new();
    let audit = builder.dir().join("audit/audit.log");
    let daemon = builder
        .top_level(&format!(
            "[audit]\npath = {}\n\n[default_policy]\nexecutables = [{}, {}]\n",
            keyward_tests::toml_string(audit.to_str().expect("UTF-8")),
            keyward_tests::toml_string(notation_plugin.to_str().expect("UTF-8")),
            keyward_tests::toml_string(cli.to_str().expect("UTF-8")),
        ))
        .start()
        .await;
    let key = "release";
    for args in [
        vec![
            "keys",
            "generate",
            "--backend",
            "local",
            "--type",
            "ec-p256",
            key,
        ],
        vec![
            "cert",
            "issue",
            "--key",
            key,
            "--subject",
            "C=US,ST=WA,O=Example,CN=release",
        ],
    ] {
        keyward_tests::cli::assert_ok(&run_cli(&daemon, &args), "keyward (allowed by the policy)");
    }
    // notation's plugin signs.
    let socket = daemon.socket().to_str().expect("UTF-8");
    let request = format!(
        r#"{{"contractVersion":"1.0","keyId":"{key}","keySpec":"EC-256","hashAlgorithm":"SHA-256","payload":"aGVsbG8=","pluginConfig":{{"socket":"{socket}"}}}}"#
    );
    let signed = run_plugin("generate-signature", request.as_bytes(), &[]);
    assert!(
        signed.status.success(),
        "notation-keyward: {}",
        stderr_text(&signed)
    );
    // cosign does not, and says why.
    let cosign = Cosign::new(&bin, daemon.socket());
    std::fs::write(cosign.dir().join("blob"), b"release").expect("write");
    let out = cosign.fails([
        "sign-blob",
        "--key",
        "keyward://release",
        "--tlog-upload=false",
        "blob",
    ]);
    assert!(
        out.contains("keyward://release") && out.contains("is not in executables"),
        "{out}"
    );
    // Public keys stay public: cosign may still export it and verify notation's world.
    cosign.ok(["public-key", "--key", "keyward://release"]);
    // The audit log has the refusal, naming the plugin cosign ran.
    let plugin = cosign.plugin_path().to_str().expect("UTF-8").to_string();
    let log = std::fs::read_to_string(&audit).expect("the audit log");
    let denied = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|record| record["result"] == "denied" && record["key"] == key)
        .unwrap_or_else(|| panic!("no denied record for {key}:\n{log}"));
    assert_eq!(denied["caller"]["exe"], plugin.as_str(), "{denied}");
    let allowed = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .any(|record| {
            record["result"] == "ok"
                && record["caller"]["exe"] == notation_plugin.to_str().expect("UTF-8")
        });
    assert!(allowed, "no ok record for notation-keyward:\n{log}");
    let verified = run_cli(&daemon, ["audit", "verify", audit.to_str().expect("UTF-8")]);
    keyward_tests::cli::assert_ok(&verified, "keyward audit verify");
}
