//! Notation end to end: the real `notation` v1.3.2 signs images in a real registry through the
//! `notation-keyward` plugin and verifies them at the strict level against a trust store
//! holding the test CA; envelopes made offline by `keyward notary sign` and pushed by hand
//! verify too; with local, SoftHSM, AWS KMS (local-kms) and Azure Key Vault (lowkey-vault) keys.

use std::fs;

use keyward_tests::cli::{assert_ok, path};
use keyward_tests::localkms::{LocalKms, isolated_aws_env};
use keyward_tests::lowkey::LowkeyVault;
use keyward_tests::notation::{Notation, Registry, Tools, digest_of, tools};
use keyward_tests::peers::{Peer, missing, require};
use keyward_tests::softhsm::{self, SoftHsm};
use keyward_tests::{TestDaemon, run_cli, stderr_text, stdout_text};
use serde_json::Value;

/// (keyward key type, Notary key spec, the signature algorithm notation reports)
const SPECS: [(&str, &str, &str); 6] = [
    ("ec-p256", "EC-256", "ECDSA-SHA-256"),
    ("ec-p384", "EC-384", "ECDSA-SHA-384"),
    ("ec-p521", "EC-521", "ECDSA-SHA-512"),
    ("rsa-2048", "RSA-2048", "RSASSA-PSS-SHA-256"),
    ("rsa-3072", "RSA-3072", "RSASSA-PSS-SHA-384"),
    ("rsa-4096", "RSA-4096", "RSASSA-PSS-SHA-512"),
];

fn subject(key: &str) -> String {
    format!("C=US,ST=WA,O=Example,CN={key}")
}

fn identity(key: &str) -> String {
    format!("x509.subject: C=US, ST=WA, O=Example, CN={key}")
}

fn generate(daemon: &TestDaemon, backend: &str, key_type: &str, id: &str) {
    let output = run_cli(
        daemon,
        [
            "keys",
            "generate",
            "--backend",
            backend,
            "--type",
            key_type,
            id,
        ],
    );
    assert_ok(&output, &format!("keys generate {id}"));
}

/// `keyward cert issue` for `key`: self-signed, a self-signed CA, or signed by `ca`.
fn issue(daemon: &TestDaemon, key: &str, how: Issue<'_>) {
    let subject = subject(key);
    let mut args = vec![
        "cert",
        "issue",
        "--key",
        key,
        "--subject",
        &subject,
        "--days",
        "2",
    ];
    match how {
        Issue::SelfSigned => {}
        Issue::Ca => args.push("--self-signed-ca"),
        Issue::By(ca) => args.extend(["--ca", ca]),
    }
    assert_ok(&run_cli(daemon, &args), &format!("cert issue {key}"));
}

#[derive(Clone, Copy)]
enum Issue<'a> {
    SelfSigned,
    Ca,
    By(&'a str),
}

/// The PEM chain attached to `key`.
fn chain_pem(daemon: &TestDaemon, key: &str) -> String {
    let output = run_cli(daemon, ["cert", "show", "--key", key, "--pem"]);
    assert_ok(&output, "cert show --pem");
    stdout_text(&output)
}

/// The envelope media type and signature algorithm of each signature notation finds on
/// `image`.
fn signatures(notation: &Notation, image: &str) -> Vec<(String, String)> {
    let text = notation.ok(["inspect", image, "-o", "json"]);
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let field = |s: &Value, name: &str| s[name].as_str().unwrap_or_default().to_string();
    json["Signatures"]
        .as_array()
        .unwrap_or_else(|| panic!("no signatures in {text}"))
        .iter()
        .map(|s| (field(s, "mediaType"), field(s, "signatureAlgorithm")))
        .collect()
}

/// A daemon with `test-ca` (EC P-384, self-signed CA certificate) and `other-ca`.
async fn daemon_with_cas() -> TestDaemon {
    let daemon = TestDaemon::start("").await;
    for ca in ["test-ca", "other-ca"] {
        generate(&daemon, "local", "ec-p384", ca);
        issue(&daemon, ca, Issue::Ca);
    }
    daemon
}

fn setup() -> Option<(Tools, Registry)> {
    let tools = tools()?;
    let registry = Registry::start(&tools);
    Some((tools, registry))
}

#[tokio::test(flavor = "multi_thread")]
async fn notation_signs_and_verifies_every_key_spec_in_jws_and_cose() {
    let Some((tools, registry)) = setup() else {
        return;
    };
    let daemon = daemon_with_cas().await;
    let notation = Notation::new(&tools);
    notation.install_plugin(&daemon);
    notation.trust_ca("test-ca", &chain_pem(&daemon, "test-ca"));
    notation.trust_ca("other-ca", &chain_pem(&daemon, "other-ca"));

    let mut signed = Vec::new();
    for (key_type, notary_spec, algorithm) in SPECS {
        let key = format!("signer-{key_type}");
        generate(&daemon, "local", key_type, &key);
        issue(&daemon, &key, Issue::By("test-ca"));
        notation.add_key(&key, &key, daemon.socket());
        for format in ["jws", "cose"] {
            let repo = format!("{key_type}-{format}");
            let (_, image) = registry.push_image(&repo);
            let output =
                notation.run(["sign", "--key", &key, "--signature-format", format, &image]);
            assert!(
                output.status.success(),
                "{notary_spec} {format}: notation sign failed:\n{}{}\ndaemon log:\n{}",
                stdout_text(&output),
                stderr_text(&output),
                daemon.log()
            );
            let expected = if format == "jws" {
                "application/jose+json"
            } else {
                "application/cose"
            };
            assert_eq!(
                signatures(&notation, &image),
                vec![(expected.to_string(), algorithm.to_string())],
                "{notary_spec} {format}"
            );
            signed.push((repo, image, key.clone()));
        }
    }

    // Strict verification against the test CA, each repository trusting its own signer only.
    let policies: Vec<(String, String)> = signed
        .iter()
        .map(|(repo, _, key)| (repo.clone(), identity(key)))
        .collect();
    let trusting = |store: &'static str| -> Vec<(&str, &str, &str)> {
        policies
            .iter()
            .map(|(repo, id)| (repo.as_str(), store, id.as_str()))
            .collect()
    };
    notation.policy(&registry, &trusting("test-ca"));
    for (repo, image, _) in &signed {
        let output = notation.run(["verify", image]);
        assert!(
            output.status.success(),
            "{repo}: notation verify failed:\n{}{}",
            stdout_text(&output),
            stderr_text(&output)
        );
        assert!(
            stdout_text(&output).contains("Successfully verified"),
            "{repo}"
        );
    }

    // A policy that trusts another CA refuses every one of them.
    notation.policy(&registry, &trusting("other-ca"));
    for (repo, image, _) in &signed {
        let output = notation.run(["verify", image]);
        assert!(
            !output.status.success(),
            "{repo}: verified against a CA that did not issue the signer:\n{}",
            stdout_text(&output)
        );
        assert!(
            stderr_text(&output).contains("signature verification failed"),
            "{repo}: {}",
            stderr_text(&output)
        );
    }

    // The right CA but another signer's identity is refused too.
    let (repo, image, _) = &signed[0];
    notation.policy(
        &registry,
        &[(repo.as_str(), "test-ca", &identity("someone-else"))],
    );
    assert!(!notation.run(["verify", image]).status.success(), "{repo}");
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_envelopes_attached_by_hand_verify_with_notation() {
    let Some((tools, registry)) = setup() else {
        return;
    };
    let daemon = TestDaemon::start("").await;
    generate(&daemon, "local", "ec-p256", "offline");
    issue(&daemon, "offline", Issue::SelfSigned);
    generate(&daemon, "local", "rsa-3072", "offline-rsa");
    issue(&daemon, "offline-rsa", Issue::SelfSigned);
    let notation = Notation::new(&tools);
    notation.trust_ca("offline", &chain_pem(&daemon, "offline"));
    notation.trust_ca("offline", &chain_pem(&daemon, "offline-rsa"));
    let work = tempfile::tempdir().expect("temp dir");

    // (repo, key, envelope, use a descriptor file and an expiry)
    let cases = [
        ("air-jws", "offline", "jws", false),
        ("air-cose", "offline", "cose", true),
        ("air-rsa-jws", "offline-rsa", "jws", true),
        ("air-rsa-cose", "offline-rsa", "cose", false),
    ];
    let mut policies = Vec::new();
    let mut images = Vec::new();
    for (repo, key, format, descriptor) in cases {
        let (manifest, image) = registry.push_image(repo);
        let digest = digest_of(&manifest);
        let manifest_file = work.path().join(format!("{repo}.json"));
        fs::write(&manifest_file, &manifest).unwrap();
        let target = if descriptor {
            let file = work.path().join(format!("{repo}.desc.json"));
            let desc = serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": manifest.len(),
            });
            fs::write(&file, desc.to_string()).unwrap();
            ["--descriptor".to_string(), path(&file).to_string()]
        } else {
            ["--manifest".to_string(), path(&manifest_file).to_string()]
        };
        let envelope = work.path().join(format!("{repo}.sig"));
        let sig_manifest = work.path().join(format!("{repo}.sigman.json"));
        let mut args = vec![
            "notary".to_string(),
            "sign".into(),
            "--key".into(),
            key.into(),
            "--envelope".into(),
            format.into(),
            "--output".into(),
            path(&envelope).into(),
            "--signature-manifest".into(),
            path(&sig_manifest).into(),
        ];
        args.extend(target);
        if descriptor {
            args.extend(["--expiry".to_string(), "1d".to_string()]);
        }
        let output = run_cli(&daemon, &args);
        assert_ok(&output, &format!("notary sign {repo}"));
        assert!(
            stdout_text(&output).contains(&digest),
            "{}",
            stdout_text(&output)
        );
        registry.attach_signature(
            repo,
            &digest,
            &fs::read(&envelope).unwrap(),
            &fs::read(&sig_manifest).unwrap(),
        );
        let media_type = if format == "jws" {
            "application/jose+json"
        } else {
            "application/cose"
        };
        let found = signatures(&notation, &image);
        assert_eq!(found.len(), 1, "{repo}: {found:?}");
        assert_eq!(found[0].0, media_type, "{repo}");
        policies.push((repo, identity(key)));
        images.push((
            repo,
            image,
            fs::read(&envelope).unwrap(),
            fs::read(&sig_manifest).unwrap(),
        ));
    }
    let policy: Vec<(&str, &str, &str)> = policies
        .iter()
        .map(|(repo, id)| (*repo, "offline", id.as_str()))
        .collect();
    notation.policy(&registry, &policy);
    for (repo, image, _, _) in &images {
        let output = notation.run(["verify", image]);
        assert!(
            output.status.success(),
            "{repo}: notation verify of the offline envelope failed:\n{}{}",
            stdout_text(&output),
            stderr_text(&output)
        );
    }

    // An envelope made for one image and attached to another does not verify.
    let (manifest, image) = registry.push_image("air-moved");
    let digest = digest_of(&manifest);
    let (_, _, envelope, sig_manifest) = &images[0];
    let mut moved: Value = serde_json::from_slice(sig_manifest).unwrap();
    moved["subject"]["digest"] = Value::String(digest.clone());
    moved["subject"]["size"] = Value::from(manifest.len());
    let moved = serde_json::to_vec(&moved).unwrap();
    registry.attach_signature("air-moved", &digest, envelope, &moved);
    notation.policy(&registry, &[("air-moved", "offline", "*")]);
    let output = notation.run(["verify", &image]);
    assert!(
        !output.status.success(),
        "an envelope for another manifest verified:\n{}",
        stdout_text(&output)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn softhsm_keys_sign_with_notation() {
    let Some((tools, registry)) = setup() else {
        return;
    };
    if require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    hsm.init_token("notary", softhsm::SO_PIN, softhsm::PIN);
    let started = hsm
        .daemon(&hsm.backend_toml("notary", ""), softhsm::PIN)
        .try_start()
        .await;
    let daemon = match started {
        Ok(daemon) => daemon,
        Err(failure)
            if failure
                .log
                .contains("keyward-plugin-pkcs11 is not installed") =>
        {
            missing(
                "keyward-plugin-pkcs11 is not built",
                "build the plugins: cargo build --workspace --bins",
            );
            return;
        }
        Err(failure) => panic!("keywardd with SoftHSM did not start:\n{}", failure.log),
    };
    let notation = Notation::new(&tools);
    notation.install_plugin(&daemon);
    let mut policies = Vec::new();
    let mut images = Vec::new();
    for (key_type, format) in [("ec-p256", "jws"), ("rsa-2048", "cose")] {
        let key = format!("hsm-{key_type}");
        generate(&daemon, softhsm::BACKEND, key_type, &key);
        issue(&daemon, &key, Issue::SelfSigned);
        notation.trust_ca("hsm", &chain_pem(&daemon, &key));
        notation.add_key(&key, &key, daemon.socket());
        let (_, image) = registry.push_image(&key);
        notation.ok(["sign", "--key", &key, "--signature-format", format, &image]);
        policies.push((key.clone(), identity(&key)));
        images.push(image);
    }
    let policy: Vec<(&str, &str, &str)> = policies
        .iter()
        .map(|(repo, id)| (repo.as_str(), "hsm", id.as_str()))
        .collect();
    notation.policy(&registry, &policy);
    for image in &images {
        notation.ok(["verify", image]);
    }
}

/// An EC P-256 key held by AWS KMS (local-kms): its certificate comes from `keyward cert issue`
/// (the TBS is signed by KMS through the agent), and notation signs and verifies with it in
/// both envelope formats. (RSA is left out: local-kms signs PSS with the maximum salt, which
/// keyward refuses by design.)
#[tokio::test(flavor = "multi_thread")]
async fn aws_kms_keys_sign_with_notation() {
    let Some((tools, registry)) = setup() else {
        return;
    };
    let Some(kms) = LocalKms::start() else {
        return;
    };
    let daemon = isolated_aws_env(TestDaemon::builder().extra_toml(&kms.backend_toml("aws", "")))
        .start()
        .await;
    let key = "kms-ec-p256";
    generate(&daemon, "aws", "ec-p256", key);
    issue(&daemon, key, Issue::SelfSigned);
    let notation = Notation::new(&tools);
    notation.install_plugin(&daemon);
    notation.trust_ca("kms", &chain_pem(&daemon, key));
    notation.add_key(key, key, daemon.socket());
    let (_, image) = registry.push_image(key);
    for format in ["jws", "cose"] {
        notation.ok(["sign", "--key", key, "--signature-format", format, &image]);
    }
    notation.policy(&registry, &[(key, "kms", &identity(key))]);
    notation.ok(["verify", &image]);
    let found = signatures(&notation, &image);
    assert_eq!(
        found.len(),
        2,
        "expected a JWS and a COSE signature: {found:?}"
    );
    assert!(
        found.iter().all(|(_, alg)| alg == "ECDSA-SHA-256"),
        "{found:?}"
    );
}

/// Keys held by Azure Key Vault (lowkey-vault, through the azurekv backend in its default
/// place): an EC P-256 and an RSA-2048 key, each certified by `keyward cert issue` (the TBS is
/// signed by the vault through the agent); notation signs with both in both envelope formats
/// and verifies each signature at the strict level.
#[tokio::test(flavor = "multi_thread")]
async fn azure_key_vault_keys_sign_with_notation() {
    let Some((tools, registry)) = setup() else {
        return;
    };
    let Some(vault) = LowkeyVault::shared() else {
        return;
    };
    let mut builder = TestDaemon::builder().extra_toml(&vault.backend_toml("azure", ""));
    for (name, value) in vault.identity_env() {
        builder = builder.env(name, &value);
    }
    let daemon = builder.start().await;
    let notation = Notation::new(&tools);
    notation.install_plugin(&daemon);
    let mut policies = Vec::new();
    for (key_type, algorithm) in [
        ("ec-p256", "ECDSA-SHA-256"),
        ("rsa-2048", "RSASSA-PSS-SHA-256"),
    ] {
        let key = format!("azure-{key_type}");
        generate(&daemon, "azure", key_type, &key);
        issue(&daemon, &key, Issue::SelfSigned);
        notation.trust_ca("azure", &chain_pem(&daemon, &key));
        notation.add_key(&key, &key, daemon.socket());
        let (_, image) = registry.push_image(&key);
        for format in ["jws", "cose"] {
            notation.ok(["sign", "--key", &key, "--signature-format", format, &image]);
        }
        let found = signatures(&notation, &image);
        assert_eq!(
            found.len(),
            2,
            "{key}: a JWS and a COSE signature: {found:?}"
        );
        assert!(
            found.iter().all(|(_, alg)| alg == algorithm),
            "{key}: {found:?}"
        );
        policies.push((key.clone(), identity(&key), image));
    }
    let policy: Vec<(&str, &str, &str)> = policies
        .iter()
        .map(|(repo, id, _)| (repo.as_str(), "azure", id.as_str()))
        .collect();
    notation.policy(&registry, &policy);
    for (key, _, image) in &policies {
        let output = notation.run(["verify", image]);
        assert!(
            output.status.success() && stdout_text(&output).contains("Successfully verified"),
            "{key}: notation verify failed:\n{}{}",
            stdout_text(&output),
            stderr_text(&output)
        );
    }
}
