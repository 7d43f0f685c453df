//! `--json` output read by `jq` as a script would, and `keyward verify --public-key` with no
//! agent running (PEM and DER, the algorithm taken from the key), checked against `openssl`.

use std::fs;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward_tests::cli::{assert_ok, exit};
use keyward_tests::peers::{Peer, require};
use keyward_tests::{
    COMMAND_TIMEOUT, TestDaemon, openssl, run_cli, run_cli_at, run_with_timeout, stderr_text,
    stdout_text,
};

use crate::common::{assert_exit, generate, path};

/// `jq -e -r FILTER` on `input`: its output (panics when jq fails or the filter is false).
fn jq(jq: &Path, filter: &str, input: &[u8]) -> String {
    let mut command = Command::new(jq);
    command.args(["-e", "-r", filter]);
    let output = run_with_timeout(command, Some(input), COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "jq {filter:?} failed ({}): {}\ninput: {}",
        output.status,
        stderr_text(&output),
        String::from_utf8_lossy(input)
    );
    stdout_text(&output).trim_end().to_string()
}

/// `keyward ARGS` that must succeed; its stdout.
fn ok(daemon: &TestDaemon, args: &[&str]) -> Vec<u8> {
    let output = run_cli(daemon, args);
    assert_ok(&output, &args.join(" "));
    output.stdout
}

#[tokio::test]
async fn json_output_reads_with_jq_and_verify_needs_no_agent() {
    let Some(jq_bin) = require(Peer::Jq) else {
        return;
    };
    let mut daemon = TestDaemon::start("").await;
    generate(&daemon, "local", "ec-p256", "js-ec");
    generate(&daemon, "local", "ed25519", "js-ed");
    let dir = daemon.dir().to_path_buf();
    let data = dir.join("data.txt");
    fs::write(&data, b"signed with keyward, checked without it\n").expect("write data");

    // keys list / show / pubkey / sign / status / cert show: one JSON document each.
    let list = ok(&daemon, &["keys", "list", "--json"]);
    assert_eq!(
        jq(&jq_bin, "[.[].key_id] | sort | join(\",\")", &list),
        "js-ec,js-ed"
    );
    let show = ok(&daemon, &["keys", "show", "--key", "js-ec", "--json"]);
    assert_eq!(jq(&jq_bin, ".backend", &show), "local");
    let shown_positional = ok(&daemon, &["keys", "show", "js-ec", "--json"]);
    assert_eq!(show, shown_positional, "the positional form is --key");
    let status = ok(&daemon, &["status", "--json"]);
    assert_eq!(jq(&jq_bin, ".backends[0].key_count", &status), "2");
    let pubkey = ok(&daemon, &["pubkey", "--key", "js-ec", "--json"]);
    let pem_path = dir.join("js-ec.pem");
    fs::write(&pem_path, jq(&jq_bin, ".public_key_pem", &pubkey)).expect("write the PEM");
    assert_eq!(jq(&jq_bin, ".jwk.crv", &pubkey), "P-256");
    let signed = ok(
        &daemon,
        &["sign", "--key", "js-ec", "--input", path(&data), "--json"],
    );
    assert_eq!(jq(&jq_bin, ".algorithm", &signed), "ecdsa-sha256");
    let signature_b64 = jq(&jq_bin, ".signature", &signed);
    let der = STANDARD
        .decode(&signature_b64)
        .expect("the signature is base64");
    let sig_path = dir.join("data.sig");
    fs::write(&sig_path, &der).expect("write the signature");
    // An independent verifier agrees.
    let checked = openssl([
        "dgst",
        "-sha256",
        "-verify",
        path(&pem_path),
        "-signature",
        path(&sig_path),
        path(&data),
    ]);
    assert_ok(&checked, "openssl dgst -verify");

    let ed_pem = dir.join("js-ed.pem");
    fs::write(&ed_pem, ok(&daemon, &["pubkey", "--key", "js-ed"])).expect("write the PEM");
    let ed_sig = dir.join("ed.sig.b64");
    fs::write(
        &ed_sig,
        ok(&daemon, &["sign", "--key", "js-ed", "--input", path(&data)]),
    )
    .expect("write the Ed25519 signature");

    // No agent from here on.
    daemon.terminate().await;
    let socket = daemon.socket().to_path_buf();
    let verify = |args: &[&str]| run_cli_at(&socket, args, None);

    let good = verify(&[
        "verify",
        "--public-key",
        path(&pem_path),
        "--input",
        path(&data),
        "--signature",
        path(&sig_path),
    ]);
    assert_ok(&good, "verify --public-key with no agent");
    assert_eq!(stdout_text(&good), "signature OK\n");

    // DER SubjectPublicKeyInfo, and --json read by jq.
    let der_path = dir.join("js-ec.der");
    let converted = openssl([
        "pkey",
        "-pubin",
        "-in",
        path(&pem_path),
        "-outform",
        "DER",
        "-out",
        path(&der_path),
    ]);
    assert_ok(&converted, "openssl pkey -outform DER");
    let json = verify(&[
        "verify",
        "--public-key",
        path(&der_path),
        "--input",
        path(&data),
        "--signature",
        path(&sig_path),
        "--json",
    ]);
    assert_ok(&json, "verify --public-key DER --json");
    assert_eq!(jq(&jq_bin, ".valid", &json.stdout), "true");
    assert_eq!(jq(&jq_bin, ".algorithm", &json.stdout), "ecdsa-sha256");

    // Ed25519: the algorithm follows from the key.
    let ed = verify(&[
        "verify",
        "--public-key",
        path(&ed_pem),
        "--input",
        path(&data),
        "--signature",
        path(&ed_sig),
    ]);
    assert_ok(&ed, "verify --public-key Ed25519");

    // Other data: invalid, exit 1, and JSON says why.
    let other = dir.join("other.txt");
    fs::write(&other, b"not what was signed\n").expect("write other data");
    let bad = verify(&[
        "verify",
        "--public-key",
        path(&pem_path),
        "--input",
        path(&other),
        "--signature",
        path(&sig_path),
        "--json",
    ]);
    assert_exit(&bad, exit::INVALID_SIGNATURE, "verify other data");
    assert_eq!(jq(&jq_bin, ".valid == false", &bad.stdout), "true");
    assert!(!jq(&jq_bin, ".reason", &bad.stdout).is_empty());

    // A file that is not a public key: a clear error, not a panic.
    let not_a_key = verify(&[
        "verify",
        "--public-key",
        path(&data),
        "--input",
        path(&data),
        "--signature",
        path(&sig_path),
    ]);
    keyward_tests::cli::assert_cli_error(
        &not_a_key,
        "a text file as --public-key",
        &["data.txt", "SubjectPublicKeyInfo"],
    );
}
