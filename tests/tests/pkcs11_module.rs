//! `libkeyward_pkcs11.so` driven by the real PKCS#11 consumers against a real agent whose keys
//! live in the local backend and in SoftHSM (through the agent's own pkcs11 backend): OpenSC's
//! `pkcs11-tool` lists and signs, OpenSSL's pkcs11 engine signs, `osslsigncode` signs a PE file
//! that `osslsigncode verify` accepts against the agent CA, `jarsigner` signs a jar through
//! SunPKCS11 that `jarsigner -verify -strict` accepts. Every signature is verified by `openssl`
//! with the public key the agent exports (or by the consumer's own verifier). A key whose
//! policy refuses the consumer's executable fails with CKR_FUNCTION_REJECTED and is audited.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keyward_sdk::KeySpec;

use keyward_tests::pkcs11_module::{
    Agent, HSM_KEYS, LIBP11_KEYS, LOCAL_KEYS, assert_ok, available, consumer, executable, hex_id,
    in_child, key_with_policy, module_path, openssl_verify, pkcs11_tool, run, run_in_child,
    signing_checks, stranger_ca, sunpkcs11_config, tiny_pe, uri, wait_for_audit_record,
};
use keyward_tests::{DaemonBuilder, openssl, random_bytes, stderr_text, stdout_text, toml_string};
use sha2::{Digest, Sha256, Sha384, Sha512};

const AUDIT_WAIT: Duration = Duration::from_secs(10);

/// One `pkcs11-tool --sign`: key, mechanism, more arguments, input; and the `openssl dgst
/// -verify` that checks it: hash, `-sigopt` options.
type SignCase<'a> = (
    &'a str,
    &'a str,
    &'a [&'a str],
    &'a Path,
    &'a str,
    &'a [&'a str],
);

const PSS: [&str; 2] = ["rsa_padding_mode:pss", "rsa_pss_saltlen:digest"];
/// The DER prefix of a SHA-512 DigestInfo (RFC 8017, section 9.2, note 1).
const SHA512_DIGEST_INFO: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

#[tokio::test]
async fn pkcs11_tool_lists_the_agents_keys_and_signs_with_local_and_softhsm_keys() {
    if !available(&["pkcs11-tool", "openssl"], false) {
        return;
    }
    let Some(agent) = Agent::start().await else {
        return;
    };

    let listing = pkcs11_tool(agent.socket(), ["--list-objects"]);
    assert_ok(&listing, "pkcs11-tool --list-objects");
    let listing = stdout_text(&listing);
    let blocks: Vec<&str> = listing.split("Object;").collect();
    for (id, _) in LOCAL_KEYS.iter().chain(&HSM_KEYS) {
        let of_key: Vec<&&str> = blocks
            .iter()
            .filter(|b| b.contains(&format!("label:      {id}\n")))
            .collect();
        let private = of_key
            .iter()
            .find(|b| b.contains("Usage:      sign"))
            .unwrap_or_else(|| panic!("no private key {id} in:\n{listing}"));
        assert!(
            private.contains(&format!("ID:         {}\n", hex_id(id))),
            "{private}"
        );
        assert!(
            private.contains("Access:     sensitive, always sensitive, never extractable"),
            "{private}"
        );
        let certificate = of_key.iter().any(|b| b.starts_with(" type = X.509 cert"));
        assert_eq!(
            certificate,
            *id == "ec" || *id == "hsm-rsa" || *id == "ca",
            "{id}: {of_key:?}"
        );
    }

    // Larger than pkcs11-tool's 1 KiB buffer: the hashing mechanisms go through C_SignUpdate.
    let data = agent.write("data", &random_bytes(64 << 10));
    let sha256 = agent.write(
        "data.sha256",
        &Sha256::digest(std::fs::read(&data).unwrap()),
    );
    let sha384 = agent.write(
        "data.sha384",
        &Sha384::digest(std::fs::read(&data).unwrap()),
    );
    let mut digest_info = SHA512_DIGEST_INFO.to_vec();
    digest_info.extend(Sha512::digest(std::fs::read(&data).unwrap()));
    let digest_info = agent.write("data.sha512-digestinfo", &digest_info);
    let ecdsa_der = ["--signature-format", "openssl"];
    let pss_sha256 = ["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"];
    let cases: [SignCase; 9] = [
        ("ec", "ECDSA-SHA256", &ecdsa_der, &data, "sha256", &[]),
        ("ec", "ECDSA", &ecdsa_der, &sha384, "sha384", &[]),
        ("rsa", "SHA256-RSA-PKCS", &[], &data, "sha256", &[]),
        ("rsa", "RSA-PKCS", &[], &digest_info, "sha512", &[]),
        ("rsa", "SHA384-RSA-PKCS-PSS", &[], &data, "sha384", &PSS),
        ("rsa", "RSA-PKCS-PSS", &pss_sha256, &sha256, "sha256", &PSS),
        ("hsm-ec", "ECDSA-SHA384", &ecdsa_der, &data, "sha384", &[]),
        ("hsm-rsa", "SHA512-RSA-PKCS", &[], &data, "sha512", &[]),
        ("hsm-rsa", "SHA256-RSA-PKCS-PSS", &[], &data, "sha256", &PSS),
    ];
    for (key, mechanism, extra, input, hash, sigopts) in cases {
        let signature = agent.file(&format!("{key}.{mechanism}.sig"));
        let id = hex_id(key);
        let mut args = vec!["--sign", "--id", &id, "--mechanism", mechanism];
        args.extend(extra);
        args.extend([
            "--input-file",
            input.to_str().unwrap(),
            "--output-file",
            signature.to_str().unwrap(),
        ]);
        assert_ok(
            &pkcs11_tool(agent.socket(), &args),
            &format!("pkcs11-tool {key} {mechanism}"),
        );
        let verified = openssl_verify(&agent, key, hash, sigopts, &signature, &data);
        assert_ok(&verified, &format!("openssl verify {key} {mechanism}"));
    }
    // The verifier is not a formality: the same signature over other data fails.
    let other = agent.write("other", b"other data");
    let signature = agent.file("rsa.SHA256-RSA-PKCS.sig");
    assert!(
        !openssl_verify(&agent, "rsa", "sha256", &[], &signature, &other)
            .status
            .success()
    );

    // Pure Ed25519 over a message (single-part, as CKM_EDDSA is).
    let message = agent.write("message", b"a message for Ed25519");
    let signature = agent.file("ed.sig");
    let args = [
        "--sign",
        "--id",
        &hex_id("ed"),
        "--mechanism",
        "EDDSA",
        "--input-file",
        message.to_str().unwrap(),
        "--output-file",
        signature.to_str().unwrap(),
    ];
    assert_ok(&pkcs11_tool(agent.socket(), args), "pkcs11-tool EDDSA");
    let public = agent.file("ed.pub");
    let verified = openssl([
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        public.to_str().unwrap(),
        "-rawin",
        "-in",
        message.to_str().unwrap(),
        "-sigfile",
        signature.to_str().unwrap(),
    ]);
    assert_ok(&verified, "openssl pkeyutl -verify (Ed25519)");

    // A PSS salt other than the hash length is refused before anything is signed.
    let args = [
        "--sign",
        "--id",
        &hex_id("rsa"),
        "--mechanism",
        "RSA-PKCS-PSS",
        "--hash-algorithm",
        "SHA256",
        "--mgf",
        "MGF1-SHA256",
        "--salt-len",
        "20",
        "--input-file",
        sha256.to_str().unwrap(),
    ];
    let refused = pkcs11_tool(agent.socket(), args);
    assert!(!refused.status.success());
    assert!(
        stderr_text(&refused).contains("CKR_MECHANISM_PARAM_INVALID"),
        "{}",
        stderr_text(&refused)
    );
}

#[tokio::test]
async fn without_an_agent_the_token_says_why_it_cannot_list_keys() {
    if !available(&["pkcs11-tool"], false) {
        return;
    }
    let nowhere = tempfile::tempdir().unwrap();
    let socket = nowhere.path().join("agent.sock");
    let output = pkcs11_tool(&socket, ["--list-objects"]);
    assert!(!output.status.success());
    let stderr = stderr_text(&output);
    assert!(stderr.contains("CKR_DEVICE_ERROR"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "keyward-pkcs11: listing the agent's keys: cannot connect to the keyward agent at {}",
            socket.display()
        )),
        "{stderr}"
    );
}

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

#[tokio::test]
async fn a_policy_that_refuses_the_consumers_executable_fails_the_sign_and_is_audited() {
    if !available(&["pkcs11-tool", "openssl"], true) {
        return;
    }
    let tool = executable("pkcs11-tool").unwrap();
    let openssl_exe = executable("openssl").unwrap();
    let builder = DaemonBuilder::new();
    let audit = builder.dir().join("audit").join("audit.log");
    let builder = builder.top_level(&format!(
        "[audit]\npath = {}",
        toml_string(audit.to_str().unwrap())
    ));
    let builder = key_with_policy(builder, "guarded", "executables = [\"/usr/bin/true\"]");
    let allowed = format!(
        "executables = [{}, {}]",
        toml_string(tool.to_str().unwrap()),
        toml_string(openssl_exe.to_str().unwrap())
    );
    let builder = key_with_policy(builder, "allowed", &allowed);
    let daemon = builder.start().await;
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::write(&data, b"policy test").unwrap();

    let sign = |key: &str| {
        let args = [
            "--sign",
            "--id",
            &hex_id(key),
            "--mechanism",
            "ECDSA-SHA256",
            "--input-file",
            data.to_str().unwrap(),
        ];
        pkcs11_tool(daemon.socket(), args)
    };
    assert_ok(&sign("allowed"), "pkcs11-tool sign with the allowed key");
    let refused = sign("guarded");
    assert!(!refused.status.success());
    let stderr = stderr_text(&refused);
    // CKR_FUNCTION_REJECTED; OpenSC 0.23 has no name for it and prints only the number.
    assert!(stderr.contains("(0x200)"), "{stderr}");
    // The module says why on stderr: the agent's message, naming the key and the rule.
    assert!(
        stderr.contains("keyward-pkcs11: signing with key \"guarded\": "),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "executable {} is not in executables",
            tool.display()
        )),
        "{stderr}"
    );

    // The same through OpenSSL's engine.
    let mut engine = consumer("openssl", daemon.socket());
    engine
        .env("PKCS11_MODULE_PATH", module_path())
        .args([
            "dgst", "-sha256", "-engine", "pkcs11", "-keyform", "engine", "-sign",
        ])
        .arg(uri("guarded", "private"))
        .arg(&data);
    let refused = run(engine);
    assert!(
        !refused.status.success(),
        "openssl signed with a key its policy refuses it"
    );
    let stderr = stderr_text(&refused);
    assert!(
        stderr.contains(&format!(
            "executable {} is not in executables",
            openssl_exe.display()
        )),
        "{stderr}"
    );

    // Both refusals and the signature are in the audit log, with the executable and the
    // mechanism that asked.
    let exe_of = |record: &serde_json::Value| record["caller"]["exe"].as_str().map(PathBuf::from);
    for (key, result, exe) in [
        ("allowed", "ok", &tool),
        ("guarded", "denied", &tool),
        ("guarded", "denied", &openssl_exe),
    ] {
        let record = wait_for_audit_record(
            &audit,
            |r| r["key"] == key && r["result"] == result && exe_of(r).as_ref() == Some(exe),
            AUDIT_WAIT,
        )
        .await;
        assert_eq!(record["event"], "sign");
        let purpose = record["purpose"].as_str().unwrap();
        assert!(purpose.starts_with("pkcs11:CKM_ECDSA"), "{record}");
    }
}

#[test]
fn one_process_signs_from_many_threads_at_once_and_from_inside_a_tokio_runtime() {
    if in_child() {
        signing_checks();
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let daemon = runtime.block_on(async {
        let daemon = DaemonBuilder::new().start().await;
        let client = daemon.client().await;
        for (id, spec) in [("ec", KeySpec::EcP256), ("rsa", KeySpec::Rsa2048)] {
            client
                .generate_key("local", id, spec)
                .await
                .expect("generate");
        }
        daemon
    });
    run_in_child(
        "one_process_signs_from_many_threads_at_once_and_from_inside_a_tokio_runtime",
        daemon.socket(),
    );
}
