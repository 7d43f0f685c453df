//! Java 17's SunPKCS11: `keytool -list` shows the agent's keys with certificates, `jarsigner`
//! signs a jar with an EC and an RSA key, and `jarsigner -verify -strict` accepts it against the
//! agent CA and refuses it against another.

use std::path::Path;

use keyward_tests::pkcs11_module::{
    Agent, assert_ok, available, consumer, run, stranger_ca, sunpkcs11_config,
};
use keyward_tests::stdout_text;

#[tokio::test]
async fn jarsigner_signs_a_jar_through_sunpkcs11_and_the_signature_verifies() {
    if !available(&["jarsigner", "keytool", "jar"], false) {
        return;
    }
    let Some(agent) = Agent::start().await else {
        return;
    };
    let config = sunpkcs11_config(agent.work());
    let token = |tool: &str| {
        let mut command = consumer(tool, agent.socket());
        command
            .args([
                "-keystore",
                "NONE",
                "-storetype",
                "PKCS11",
                "-providerClass",
                "sun.security.pkcs11.SunPKCS11",
                "-providerArg",
            ])
            .arg(&config)
            // No PIN is needed; Java asks for a store password all the same and it is ignored.
            .args(["-storepass", "ignored"]);
        command
    };
    let mut list = token("keytool");
    list.arg("-list");
    let listed = run(list);
    assert_ok(&listed, "keytool -list");
    for id in ["ec", "hsm-rsa", "ca"] {
        assert!(
            stdout_text(&listed).contains(&format!("{id}, PrivateKeyEntry")),
            "{}",
            stdout_text(&listed)
        );
    }

    let content = agent.work().join("content");
    std::fs::create_dir(&content).unwrap();
    std::fs::write(content.join("hello.txt"), b"signed through keyward\n").unwrap();
    let jar = agent.file("app.jar");
    let mut make = consumer("jar", agent.socket());
    make.arg("cf")
        .arg(&jar)
        .arg("-C")
        .arg(&content)
        .arg("hello.txt");
    assert_ok(&run(make), "jar cf");

    let trust = |name: &str, ca: &Path| {
        let store = agent.file(name);
        let mut import = consumer("keytool", agent.socket());
        import
            .args([
                "-importcert",
                "-noprompt",
                "-alias",
                "ca",
                "-storetype",
                "PKCS12",
                "-storepass",
                "changeit",
                "-file",
            ])
            .arg(ca)
            .arg("-keystore")
            .arg(&store);
        assert_ok(&run(import), "keytool -importcert");
        store
    };
    let trusted = trust("trust.p12", &agent.file("ca.pem"));
    let stranger = stranger_ca(agent.work(), "stranger");
    let untrusted = trust("stranger.p12", &stranger);

    for (alias, algorithm) in [("ec", "SHA256withECDSA"), ("hsm-rsa", "SHA256withRSA")] {
        let signed = agent.file(&format!("app-{alias}.jar"));
        let mut sign = token("jarsigner");
        sign.arg("-signedjar").arg(&signed).arg(&jar).arg(alias);
        assert_ok(&run(sign), &format!("jarsigner ({alias})"));
        let verify = |store: &Path| {
            let mut verify = consumer("jarsigner", agent.socket());
            verify
                .args([
                    "-verify",
                    "-strict",
                    "-verbose",
                    "-certs",
                    "-storepass",
                    "changeit",
                    "-keystore",
                ])
                .arg(store)
                .arg(&signed);
            run(verify)
        };
        let verified = verify(&trusted);
        assert_ok(&verified, &format!("jarsigner -verify ({alias})"));
        let text = stdout_text(&verified);
        assert!(text.contains("jar verified."), "{text}");
        assert!(
            text.contains(&format!("Signature algorithm: {algorithm}")),
            "{text}"
        );
        assert!(
            !verify(&untrusted).status.success(),
            "{alias}: -strict accepted a chain to an untrusted CA"
        );
    }
}
