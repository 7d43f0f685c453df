//! OpenSC's `pkcs11-tool` lists the agent's keys (local and SoftHSM) and signs with every
//! mechanism family; `openssl` verifies each signature with the public key the agent exports.
//! Without an agent the token says why.

use std::path::Path;

use keyward_tests::pkcs11_module::{
    Agent, HSM_KEYS, LOCAL_KEYS, assert_ok, available, hex_id, openssl_verify, pkcs11_tool,
};
use keyward_tests::{openssl, random_bytes, stderr_text, stdout_text};
use sha2::{Digest, Sha256, Sha384, Sha512};

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
