//! What an `executables` policy costs the daemon (#16.4): the uid rule is checked before any
//! `/proc` read or hash, an executable is hashed once however many callers ask at once, one
//! larger than `max_executable_bytes` (a sparse file too) is never read, and none of it holds
//! up the audit log or other callers.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use keyward_sdk::SignOptions;
use keyward_tests::users::CliCopy;
use keyward_tests::wait::log_lines;
use keyward_tests::{
    DaemonBuilder, openssl_genpkey, run_with_timeout, set_mode, stderr_text, toml_string,
};
use sha2::{Digest, Sha256};

/// What the daemon logs when it reads an executable to hash it.
const HASHING: &str = "hashing a caller's executable";
/// How long a refusal may take. Hashing the 16 GiB file would take minutes.
const QUICK: Duration = Duration::from_secs(20);

/// A P-256 key file `<dir>/keys/<id>.pem` and its `[[key]]` with `policy`.
fn key_toml(dir: &Path, id: &str, policy: &str) -> String {
    let keys = dir.join("keys");
    if !keys.exists() {
        std::fs::create_dir(&keys).expect("mkdir keys");
        set_mode(&keys, 0o700);
    }
    openssl_genpkey(
        &keys.join(format!("{id}.pem")),
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let mut toml = format!("[[key]]\nid = \"{id}\"\nbackend = \"local\"\nref = \"{id}\"\n");
    if !policy.is_empty() {
        toml.push_str(&format!("[key.policy]\n{policy}\n"));
    }
    toml
}

fn pinned(path: &Path, sha256: &str) -> String {
    format!(
        "executables = [{{ path = {}, sha256 = \"{sha256}\" }}]",
        toml_string(path.to_str().expect("UTF-8"))
    )
}

/// `PROGRAM --socket SOCKET sign --key KEY --digest ...`, given `limit` to finish.
fn sign_with(program: &Path, socket: &Path, key: &str, limit: Duration) -> Output {
    let digest = hex::encode(Sha256::digest(b"executables"));
    let mut command = Command::new(program);
    command
        .arg("--socket")
        .arg(socket)
        .args(["sign", "--key", key, "--digest", &digest])
        .env_remove("KEYWARD_SOCK");
    run_with_timeout(command, None, limit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executables_are_hashed_once_within_a_cap_and_never_before_the_uid_rule() {
    let cli = CliCopy::new();
    let normal = cli.path().to_path_buf();
    let normal_hash = hex::encode(Sha256::digest(
        std::fs::read(&normal).expect("read the CLI"),
    ));
    // The same program, followed by 16 GiB of nothing: a sparse file the size of which alone
    // tells that it must not be read.
    let huge = normal.with_file_name("keyward-huge");
    std::fs::copy(&normal, &huge).expect("copy the CLI");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&huge)
        .expect("open the copy");
    file.set_len(file.metadata().unwrap().len() + (16 << 30))
        .expect("extend it sparsely");
    drop(file);
    set_mode(&huge, 0o755);
    let me = rustix::process::getuid().as_raw();

    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let audit = dir.join("audit.log");
    let mut keys = String::new();
    keys.push_str(&key_toml(
        &dir,
        "normal",
        &format!("uids = [{me}]\n{}", pinned(&normal, &normal_hash)),
    ));
    keys.push_str(&key_toml(
        &dir,
        "huge",
        &format!("uids = [{me}]\n{}", pinned(&huge, &"0".repeat(64))),
    ));
    keys.push_str(&key_toml(
        &dir,
        "other-uid",
        &format!("uids = [{}]\n{}", me + 4242, pinned(&huge, &"0".repeat(64))),
    ));
    keys.push_str(&key_toml(&dir, "plain", ""));
    let daemon = builder
        .top_level(&format!(
            "[limits]\nmax_executable_bytes = 1073741824\n[audit]\npath = {}\n",
            toml_string(audit.to_str().expect("UTF-8"))
        ))
        .extra_toml(&keys)
        .start()
        .await;

    // Eight callers of one pinned executable at once: one read of the file.
    let socket = daemon.socket().to_path_buf();
    let signers: Vec<_> = (0..8)
        .map(|_| {
            let (normal, socket) = (normal.clone(), socket.clone());
            std::thread::spawn(move || {
                sign_with(&normal, &socket, "normal", Duration::from_secs(120))
            })
        })
        .collect();
    for signer in signers {
        let output = signer.join().expect("signer thread");
        assert!(output.status.success(), "{}", stderr_text(&output));
    }
    assert_eq!(
        log_lines(&daemon, &[HASHING]).len(),
        1,
        "eight callers, one hash:\n{}",
        daemon.log()
    );

    // A caller the uid rule refuses costs no hash, however big its executable.
    let started = Instant::now();
    let output = sign_with(&huge, &socket, "other-uid", QUICK);
    assert_eq!(output.status.code(), Some(3), "{}", stderr_text(&output));
    assert!(
        stderr_text(&output).contains(&format!("uid {me} is not in uids [{}]", me + 4242)),
        "{}",
        stderr_text(&output)
    );
    assert_eq!(log_lines(&daemon, &[HASHING]).len(), 1, "{}", daemon.log());
    eprintln!("uid refusal in {:?}", started.elapsed());

    // An executable over the cap is refused unread, while another caller keeps signing with
    // an audited key, every signature within 5 s (hashing the file would take minutes).
    let client = daemon.client().await;
    let refusals: Vec<_> = (0..4)
        .map(|_| {
            let (huge, socket) = (huge.clone(), socket.clone());
            std::thread::spawn(move || sign_with(&huge, &socket, "huge", QUICK))
        })
        .collect();
    let options = SignOptions::default();
    for n in 0..20 {
        let digest = Sha256::digest(format!("plain {n}"));
        let call = client.sign_digest("plain", &digest, &options);
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .unwrap_or_else(|_| panic!("signature {n} took over 5 s"))
            .expect("plain signs");
    }
    for refusal in refusals {
        let output = refusal.join().expect("refusal thread");
        let stderr = stderr_text(&output);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains("cannot be hashed: it is ")
                && stderr.contains("larger than the 1073741824 bytes keywardd hashes (max_executable_bytes in [limits])"),
            "{stderr}"
        );
    }
    assert_eq!(log_lines(&daemon, &[HASHING]).len(), 1, "{}", daemon.log());
    let records = std::fs::read_to_string(&audit).expect("audit log");
    assert_eq!(
        records
            .lines()
            .filter(|l| l.contains("\"key\":\"plain\""))
            .count(),
        40,
        "every signature of plain has its attempt and ok records"
    );
}
