//! A key whose policy refuses the consumer's executable: `pkcs11-tool` and OpenSSL's engine
//! get CKR_FUNCTION_REJECTED with the agent's reason on stderr, and the audit log records each
//! refusal and signature with the executable and the mechanism.

use std::path::PathBuf;
use std::time::Duration;

use keyward_tests::pkcs11_module::{
    assert_ok, available, consumer, executable, hex_id, key_with_policy, module_path, pkcs11_tool,
    run, uri, wait_for_audit_record,
};
use keyward_tests::{DaemonBuilder, stderr_text, toml_string};

const AUDIT_WAIT: Duration = Duration::from_secs(10);

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
