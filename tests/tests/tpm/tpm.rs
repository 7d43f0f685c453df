//! Keys created in a (software) TPM through keyward: every spec the backend offers passes the
//! conformance suite (each algorithm verified with openssl and RustCrypto, 64 concurrent
//! signs); the key files are TSS2 PRIVATE KEY files, private to their owner, and the keys come
//! back after the daemon restarts (the storage root key is derived again from its template);
//! specs a TPM has no place for are refused with UNIMPLEMENTED.

use keyward_sdk::{Client, KeySpec};
use keyward_tests::conformance::{check_backend, expected_algorithms};
use keyward_tests::{mode_of, run_cli, stderr_text, stdout_text};

use crate::common::{BACKEND, PIN_ENV, daemon, sign_and_verify, swtpm};

/// The specs the tpm backend creates.
const SPECS: [KeySpec; 4] = [
    KeySpec::EcP256,
    KeySpec::EcP384,
    KeySpec::Rsa2048,
    KeySpec::Rsa3072,
];

async fn generate(client: &Client, key_id: &str, spec: KeySpec) -> Vec<u8> {
    let key = client
        .generate_key(BACKEND, key_id, spec)
        .await
        .unwrap_or_else(|e| panic!("generate {key_id} ({}): {e}", spec.name()));
    assert_eq!(key.info.backend, BACKEND);
    assert_eq!(key.info.backend_type, "tpm");
    assert_eq!(key.info.key_spec(), spec, "{key_id}");
    assert_eq!(
        key.info.algorithms().collect::<Vec<_>>(),
        expected_algorithms(spec),
        "{key_id}"
    );
    key.der
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_created_in_the_tpm_conform_and_survive_a_restart() {
    let Some(tpm) = swtpm() else {
        return;
    };
    let mut daemon = daemon(&tpm, "").start().await;
    let client = daemon.client().await;
    let mut public_keys = Vec::new();
    for spec in SPECS {
        let id = format!("tpm-{}", spec.name());
        public_keys.push((id.clone(), generate(&client, &id, spec).await));
    }
    check_backend(&client, BACKEND).await;

    // The files: TSS2 PRIVATE KEY (the format of ssh-tpm-agent and tpm2-openssl), 0600, in a
    // 0700 directory; no private key material in the clear (the private area is wrapped).
    let dir = daemon.dir().join("tpm-keys");
    assert_eq!(mode_of(&dir), 0o700);
    for (id, _) in &public_keys {
        let path = dir.join(format!("{id}.tpm"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            text.starts_with("-----BEGIN TSS2 PRIVATE KEY-----"),
            "{}: {text}",
            path.display()
        );
        assert_eq!(mode_of(&path), 0o600, "{}", path.display());
    }
    let shown = run_cli(&daemon, ["keys", "show", "tpm-ec-p256"]);
    assert!(shown.status.success(), "{}", stderr_text(&shown));
    assert!(
        stdout_text(&shown).contains("pin") && stdout_text(&shown).contains("no"),
        "keys show: {}",
        stdout_text(&shown)
    );

    // Specs without a place in a TPM are refused before the TPM is asked.
    for spec in [KeySpec::Ed25519, KeySpec::Rsa4096] {
        let err = client
            .generate_key(BACKEND, &format!("no-{}", spec.name()), spec)
            .await
            .expect_err("the tpm backend refuses this spec");
        assert_eq!(err.code(), Some(tonic::Code::Unimplemented), "{err}");
        assert!(err.to_string().contains("ec-p256"), "{err}");
    }
    // A name that is taken stays taken.
    let err = client
        .generate_key(BACKEND, "tpm-ec-p256", KeySpec::EcP256)
        .await
        .expect_err("a second key of the same name");
    assert!(err.to_string().contains("exists"), "{err}");

    // A new plugin process, a new TPM connection: the same keys, the same public keys.
    daemon.restart().await;
    let client = daemon.client().await;
    for (id, der) in &public_keys {
        let again = client
            .public_key(id)
            .await
            .expect("public key after restart");
        assert_eq!(&again.der, der, "{id} changed across a restart");
        sign_and_verify(&client, id)
            .await
            .unwrap_or_else(|e| panic!("{id} after restart: {e}"));
    }
}

/// Keys made while a PIN is configured get it as their authorization value and sign with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_a_pin_conform() {
    let Some(tpm) = swtpm() else {
        return;
    };
    let daemon = daemon(&tpm, &format!("pin_env = \"{PIN_ENV}\""))
        .env(PIN_ENV, "tpm-pin-2468")
        .start()
        .await;
    let client = daemon.client().await;
    for spec in [KeySpec::EcP256, KeySpec::Rsa2048] {
        generate(&client, &format!("pin-{}", spec.name()), spec).await;
    }
    check_backend(&client, BACKEND).await;
    let shown = run_cli(&daemon, ["keys", "show", "pin-ec-p256"]);
    assert!(
        stdout_text(&shown).contains("yes"),
        "keys show: {}",
        stdout_text(&shown)
    );
    assert!(
        !daemon.log().contains("tpm-pin-2468"),
        "the PIN is in the log"
    );
}
