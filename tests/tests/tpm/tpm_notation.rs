//! Notation signs with a key held by the TPM: `keyward cert issue` certifies it under a CA
//! whose key is a local one (the TBS is signed by the TPM key's CA; the leaf's own signature is
//! the TPM's), and the real `notation` CLI signs an image in a real registry with it through
//! `notation-keyward` and verifies it at the strict level.

use keyward_tests::TestDaemon;
use keyward_tests::cli::assert_ok;
use keyward_tests::notation::{Notation, Registry, tools};
use keyward_tests::{run_cli, stdout_text};

use crate::common::{BACKEND, daemon, swtpm};

fn cli_ok(daemon: &TestDaemon, args: &[&str]) -> String {
    let output = run_cli(daemon, args);
    assert_ok(&output, &args.join(" "));
    stdout_text(&output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notation_signs_and_verifies_with_a_tpm_key() {
    let Some(tools) = tools() else {
        return;
    };
    let Some(tpm) = swtpm() else {
        return;
    };
    let registry = Registry::start(&tools);
    let daemon = daemon(&tpm, "").start().await;
    cli_ok(
        &daemon,
        &[
            "keys",
            "generate",
            "--backend",
            "local",
            "--type",
            "ec-p384",
            "tpm-ca",
        ],
    );
    cli_ok(
        &daemon,
        &[
            "cert",
            "issue",
            "--key",
            "tpm-ca",
            "--subject",
            "C=US,O=Example,CN=TPM test CA",
            "--self-signed-ca",
            "--days",
            "2",
        ],
    );
    let ca_pem = cli_ok(&daemon, &["cert", "show", "--key", "tpm-ca", "--pem"]);

    let notation = Notation::new(&tools);
    notation.install_plugin(&daemon);
    notation.trust_ca("tpm", &ca_pem);
    let mut policies = Vec::new();
    let mut images = Vec::new();
    for (key_type, format) in [("ec-p256", "jws"), ("rsa-2048", "cose")] {
        let key = format!("tpm-{key_type}");
        cli_ok(
            &daemon,
            &[
                "keys",
                "generate",
                "--backend",
                BACKEND,
                "--type",
                key_type,
                &key,
            ],
        );
        let subject = format!("C=US,ST=WA,O=Example,CN={key}");
        cli_ok(
            &daemon,
            &[
                "cert",
                "issue",
                "--key",
                &key,
                "--subject",
                &subject,
                "--ca",
                "tpm-ca",
                "--days",
                "2",
            ],
        );
        notation.add_key(&key, &key, daemon.socket());
        let (_, image) = registry.push_image(&key);
        notation.ok(["sign", "--key", &key, "--signature-format", format, &image]);
        policies.push((
            key.clone(),
            format!("x509.subject: C=US, ST=WA, O=Example, CN={key}"),
        ));
        images.push(image);
    }
    let policy: Vec<(&str, &str, &str)> = policies
        .iter()
        .map(|(repo, id)| (repo.as_str(), "tpm", id.as_str()))
        .collect();
    notation.policy(&registry, &policy);
    for image in &images {
        notation.ok(["verify", image]);
    }
}
