//! OpenSSL's pkcs11 engine (libp11) signs by RFC 7512 URI, verified by `openssl pkeyutl`;
//! `osslsigncode`, which signs through the same engine, signs a PE file that
//! `osslsigncode verify` accepts against the agent CA and refuses against another.

use std::path::Path;

use keyward_tests::pkcs11_module::{
    Agent, LIBP11_KEYS, assert_ok, available, consumer, module_path, run, stranger_ca, tiny_pe, uri,
};
use keyward_tests::{openssl, stdout_text};
use sha2::{Digest, Sha256, Sha384};

#[tokio::test]
async fn openssls_pkcs11_engine_signs_with_agent_keys_by_uri() {
    if !available(&["openssl"], true) {
        return;
    }
    let Some(agent) = Agent::start().await else {
        return;
    };
    let sha256 = agent.write("d.sha256", &Sha256::digest(b"engine test"));
    let sha384 = agent.write("d.sha384", &Sha384::digest(b"engine test"));
    let pss = |digest| [digest, "rsa_padding_mode:pss", "rsa_pss_saltlen:digest"];
    let cases: [(&str, &Path, &[&str]); 5] = [
        ("ec", &sha256, &[]),
        ("hsm-ec", &sha384, &[]),
        ("rsa", &sha256, &["digest:sha256"]),
        ("rsa", &sha256, &pss("digest:sha256")),
        ("hsm-rsa", &sha384, &pss("digest:sha384")),
    ];
    for (n, (key, input, options)) in cases.into_iter().enumerate() {
        let signature = agent.file(&format!("engine-{n}.sig"));
        let mut command = consumer("openssl", agent.socket());
        command
            .env("PKCS11_MODULE_PATH", module_path())
            .env("KEYWARD_PKCS11_KEYS", LIBP11_KEYS)
            .args([
                "pkeyutl", "-sign", "-engine", "pkcs11", "-keyform", "engine", "-inkey",
            ])
            .arg(uri(key, "private"))
            .arg("-in")
            .arg(input)
            .arg("-out")
            .arg(&signature);
        for option in options {
            command.args(["-pkeyopt", option]);
        }
        assert_ok(
            &run(command),
            &format!("openssl pkeyutl -sign -engine pkcs11 {key} {options:?}"),
        );
        let public = agent.file(&format!("{key}.pub"));
        let mut verify: Vec<String> = ["pkeyutl", "-verify", "-pubin", "-inkey"]
            .map(String::from)
            .to_vec();
        verify.extend([
            public.display().to_string(),
            "-in".into(),
            input.display().to_string(),
            "-sigfile".into(),
            signature.display().to_string(),
        ]);
        for option in options {
            verify.extend(["-pkeyopt".into(), option.to_string()]);
        }
        let verified = openssl(&verify);
        assert_ok(
            &verified,
            &format!("openssl pkeyutl -verify {key} {options:?}"),
        );
        assert!(stdout_text(&verified).contains("Signature Verified Successfully"));
    }
}

#[tokio::test]
async fn osslsigncode_signs_a_pe_file_that_verifies_against_the_agent_ca() {
    if !available(&["osslsigncode", "openssl"], true) {
        return;
    }
    let Some(agent) = Agent::start().await else {
        return;
    };
    let unsigned = agent.write("tiny.exe", &tiny_pe());
    // A CA that issued nothing here: verification against it must fail.
    let stranger = stranger_ca(agent.work(), "stranger");

    for key in ["ec", "hsm-rsa"] {
        let signed = agent.file(&format!("tiny-{key}.exe"));
        let mut command = consumer("osslsigncode", agent.socket());
        command
            .env("KEYWARD_PKCS11_KEYS", LIBP11_KEYS)
            .arg("sign")
            .arg("-pkcs11module")
            .arg(module_path())
            .args([
                "-pkcs11cert",
                &uri(key, "cert"),
                "-key",
                &uri(key, "private"),
                "-h",
                "sha256",
                "-n",
                "keyward test",
            ])
            .arg("-in")
            .arg(&unsigned)
            .arg("-out")
            .arg(&signed);
        assert_ok(&run(command), &format!("osslsigncode sign ({key})"));

        let verify = |ca: &Path| {
            let mut command = consumer("osslsigncode", agent.socket());
            command
                .arg("verify")
                .arg("-CAfile")
                .arg(ca)
                .arg("-in")
                .arg(&signed);
            run(command)
        };
        let verified = verify(&agent.file("ca.pem"));
        assert_ok(&verified, &format!("osslsigncode verify ({key})"));
        let text = stdout_text(&verified);
        assert!(text.contains("Signature verification: ok"), "{text}");
        assert!(
            text.contains(&format!("Subject: /C=US/ST=WA/O=Example/CN={key}")),
            "{text}"
        );
        assert!(
            !verify(&stranger).status.success(),
            "{key}: verified against a CA that never issued its certificate"
        );
    }
}
