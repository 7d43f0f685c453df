//! OpenPGP end to end: `keyward pgp cert create|export|sign` on local and SoftHSM keys, and the
//! `pgp` backend on keys made by `gpg --quick-gen-key` (with and without a passphrase, in the
//! daemon and as a plugin process). Every signature is checked by two independent verifiers,
//! `gpg --verify` (in a temporary GNUPGHOME with the exported certificate imported) and
//! `sq verify --signer-cert`; tampered data and a wrong certificate must be rejected by both.
//! Without gpg or sq the tests print `skipped:` and return.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use keyward_sdk::KeySpec;
use keyward_tests::cli::{assert_cli_error, assert_ok, path};
use keyward_tests::peers::{Peer, require};
use keyward_tests::softhsm::{BACKEND, PIN, SO_PIN, SoftHsm};
use keyward_tests::wait;
use keyward_tests::{
    COMMAND_TIMEOUT, DaemonBuilder, TestDaemon, random_bytes, run_cli, run_with_timeout,
    stderr_text, stdout_text, toml_string,
};

/// Whether gpg and sq are installed ([`require`]: says `skipped:` when not, fails under CI).
fn peers_available() -> bool {
    require(Peer::Gpg).is_some() && require(Peer::Sq).is_some()
}

/// `what` as a file name.
fn slug(what: &str) -> String {
    what.replace([' ', '/', '='], "-")
}

/// A private GNUPGHOME.
fn gnupg_home(parent: &Path, name: &str) -> PathBuf {
    let home = parent.join(name);
    fs::create_dir_all(&home).expect("create GNUPGHOME");
    keyward_tests::set_mode(&home, 0o700);
    home
}

fn gpg(home: &Path, args: &[&str]) -> Output {
    let mut command = Command::new("gpg");
    command
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
        .args(args);
    run_with_timeout(command, None, COMMAND_TIMEOUT)
}

fn sq_verify(cert: &Path, signature: &Path, data: &Path) -> Output {
    let mut command = Command::new("sq");
    command
        .args(["verify", "--signer-cert"])
        .arg(cert)
        .arg("--detached")
        .arg(signature)
        .arg(data);
    run_with_timeout(command, None, COMMAND_TIMEOUT)
}

/// Both verifiers accept `signature` over `data` with `cert` (and gpg names `userid`), and
/// both reject it over tampered data and against `wrong_cert`.
fn check_signature(
    work: &Path,
    what: &str,
    cert: &Path,
    wrong_cert: &Path,
    signature: &Path,
    data: &Path,
    userid: &str,
) {
    let home = gnupg_home(work, &format!("gpg-verify-{}", slug(what)));
    assert_ok(&gpg(&home, &["--import", path(cert)]), "gpg --import");
    let good = gpg(&home, &["--verify", path(signature), path(data)]);
    assert_ok(&good, &format!("{what}: gpg --verify"));
    let said = stderr_text(&good);
    assert!(
        said.contains("Good signature") && said.contains(userid),
        "{what}: gpg said:\n{said}"
    );
    let sq = sq_verify(cert, signature, data);
    assert_ok(&sq, &format!("{what}: sq verify"));
    assert!(
        stderr_text(&sq).contains("1 good signature"),
        "{what}: sq said:\n{}",
        stderr_text(&sq)
    );

    let tampered = work.join(format!("{}-tampered", slug(what)));
    let mut bytes = fs::read(data).expect("read data");
    bytes[0] ^= 1;
    fs::write(&tampered, &bytes).expect("write tampered");
    let bad = gpg(&home, &["--verify", path(signature), path(&tampered)]);
    assert!(!bad.status.success(), "{what}: gpg accepted tampered data");
    assert!(
        stderr_text(&bad).contains("BAD signature"),
        "{what}: {}",
        stderr_text(&bad)
    );
    let bad = sq_verify(cert, signature, &tampered);
    assert!(!bad.status.success(), "{what}: sq accepted tampered data");

    let wrong_home = gnupg_home(work, &format!("gpg-wrong-{}", slug(what)));
    assert_ok(
        &gpg(&wrong_home, &["--import", path(wrong_cert)]),
        "gpg --import wrong",
    );
    let wrong = gpg(&wrong_home, &["--verify", path(signature), path(data)]);
    assert!(
        !wrong.status.success(),
        "{what}: gpg accepted the signature with the wrong certificate"
    );
    assert!(
        !stderr_text(&wrong).contains("Good signature"),
        "{what}: {}",
        stderr_text(&wrong)
    );
    let wrong = sq_verify(wrong_cert, signature, data);
    assert!(
        !wrong.status.success(),
        "{what}: sq accepted the signature with the wrong certificate"
    );
}

/// `keyward pgp cert create` + `export`: returns the fingerprint and the exported file.
fn create_cert(daemon: &TestDaemon, work: &Path, key: &str, userid: &str) -> (String, PathBuf) {
    let created = run_cli(
        daemon,
        ["pgp", "cert", "create", "--key", key, "--userid", userid],
    );
    assert_ok(&created, &format!("pgp cert create {key}"));
    let fingerprint = stdout_text(&created).trim().to_string();
    assert_eq!(fingerprint.len(), 40, "{fingerprint:?}");
    (fingerprint, export(daemon, work, key))
}

fn export(daemon: &TestDaemon, work: &Path, key: &str) -> PathBuf {
    let file = work.join(format!("{}.asc", key.replace('/', "_")));
    let exported = run_cli(
        daemon,
        ["pgp", "export", "--key", key, "--output", path(&file)],
    );
    assert_ok(&exported, &format!("pgp export {key}"));
    let text = fs::read_to_string(&file).expect("read export");
    assert!(
        text.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{text}"
    );
    file
}

/// `keyward pgp sign` (armored or binary) over `data`, to a file.
fn sign(daemon: &TestDaemon, key: &str, data: &Path, armor: bool) -> PathBuf {
    let signature = data.with_extension(format!(
        "{}.{}",
        key.replace('/', "_"),
        if armor { "asc" } else { "sig" }
    ));
    let mut args = vec!["pgp", "sign", "--key", key, "--output", path(&signature)];
    if armor {
        args.push("--armor");
    }
    args.push(path(data));
    assert_ok(&run_cli(daemon, &args), &format!("pgp sign {key}"));
    let bytes = fs::read(&signature).expect("read signature");
    assert_eq!(
        bytes.starts_with(b"-----BEGIN PGP SIGNATURE-----"),
        armor,
        "{key}: armor"
    );
    signature
}

#[tokio::test]
async fn local_keys_make_certificates_and_gpg_verifiable_signatures() {
    if !peers_available() {
        return;
    }
    let mut daemon = TestDaemon::start("").await;
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("release.tar.gz");
    fs::write(&data, random_bytes(100_000)).expect("write data");
    let keys = [
        ("pgp-p256", KeySpec::EcP256),
        ("pgp-p384", KeySpec::EcP384),
        ("pgp-p521", KeySpec::EcP521),
        ("pgp-ed", KeySpec::Ed25519),
        ("pgp-rsa", KeySpec::Rsa2048),
    ];
    let mut certs = Vec::new();
    for (key, spec) in keys {
        let made = run_cli(
            &daemon,
            [
                "keys",
                "generate",
                "--backend",
                "local",
                "--type",
                spec.name(),
                key,
            ],
        );
        assert_ok(&made, "keys generate");
        // Before a certificate exists, signing says what to do.
        let none = run_cli(&daemon, ["pgp", "sign", "--key", key, path(&data)]);
        assert_cli_error(
            &none,
            "sign without certificate",
            &["has no OpenPGP certificate", "keyward pgp cert create"],
        );
        let userid = format!("Release {key} <{key}@example.com>");
        let (fingerprint, cert) = create_cert(&daemon, work.path(), key, &userid);
        certs.push((key, userid, fingerprint, cert));
    }
    for (n, (key, userid, _, cert)) in certs.iter().enumerate() {
        let wrong = &certs[(n + 1) % certs.len()].3;
        for armor in [true, false] {
            let signature = sign(&daemon, key, &data, armor);
            let what = format!("{key} armor={armor}");
            check_signature(work.path(), &what, cert, wrong, &signature, &data, userid);
        }
    }

    // The fingerprint is stable: making the certificate again (another user id) reuses the
    // key's creation time, and the attached certificate survives a restart.
    let (key, _, fingerprint, _) = &certs[0];
    let again = run_cli(
        &daemon,
        [
            "pgp",
            "cert",
            "create",
            "--key",
            key,
            "--userid",
            "Again <again@example.com>",
        ],
    );
    assert_ok(&again, "cert create again");
    assert_eq!(stdout_text(&again).trim(), fingerprint);
    daemon.restart().await;
    let after = export(&daemon, work.path(), key);
    let listed = gpg(
        &gnupg_home(work.path(), "gpg-after-restart"),
        &["--show-keys", "--with-colons", path(&after)],
    );
    assert_ok(&listed, "gpg --show-keys");
    assert!(stdout_text(&listed).contains(fingerprint.as_str()));
    assert!(stdout_text(&listed).contains("Again <again@example.com>"));

    // A certificate that is not for the key is refused by the daemon.
    let other_cert = &certs[1].3;
    let refused = run_cli(
        &daemon,
        ["pgp", "cert", "attach", "--key", key, path(other_cert)],
    );
    assert_cli_error(
        &refused,
        "attach another key's certificate",
        &["neither the primary key nor a signing subkey", key],
    );

    // An expired certificate: signing refuses it and says so.
    let made = run_cli(
        &daemon,
        [
            "keys",
            "generate",
            "--backend",
            "local",
            "--type",
            "ec-p256",
            "pgp-expiring",
        ],
    );
    assert_ok(&made, "keys generate");
    let short = run_cli(
        &daemon,
        [
            "pgp",
            "cert",
            "create",
            "--key",
            "pgp-expiring",
            "--userid",
            "Short <short@example.com>",
            "--expires-in",
            "2s",
        ],
    );
    assert_ok(&short, "cert create --expires-in 2s");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let expired = run_cli(
        &daemon,
        ["pgp", "sign", "--key", "pgp-expiring", path(&data)],
    );
    assert_cli_error(
        &expired,
        "sign with an expired certificate",
        &["has expired"],
    );
}

#[tokio::test]
async fn softhsm_key_signs_a_release_tarball_gpg_verifies() {
    if !peers_available() || require(Peer::SoftHsm).is_none() {
        return;
    }
    let hsm = SoftHsm::new();
    hsm.init_token("pgp", SO_PIN, PIN);
    hsm.keypairgen("pgp", PIN, "EC:prime256v1", "release", "01");
    hsm.keypairgen("pgp", PIN, "rsa:2048", "release-rsa", "02");
    let tables = format!(
        "{}[[key]]\nid = \"release\"\nbackend = \"{BACKEND}\"\nref = \"pkcs11:object=release\"\n\n[[key]]\nid = \"release-rsa\"\nbackend = \"{BACKEND}\"\nref = \"pkcs11:object=release-rsa\"\n",
        hsm.backend_toml("pgp", "")
    );
    let daemon = hsm.daemon(&tables, PIN).start().await;
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("app-1.0.tar.gz");
    fs::write(&data, random_bytes(50_000)).expect("write data");
    let (_, cert) = create_cert(
        &daemon,
        work.path(),
        "release",
        "Release <release@example.com>",
    );
    let (_, rsa_cert) = create_cert(
        &daemon,
        work.path(),
        "release-rsa",
        "Release RSA <release-rsa@example.com>",
    );
    let signature = sign(&daemon, "release", &data, true);
    check_signature(
        work.path(),
        "softhsm p256",
        &cert,
        &rsa_cert,
        &signature,
        &data,
        "Release <release@example.com>",
    );
    let signature = sign(&daemon, "release-rsa", &data, false);
    check_signature(
        work.path(),
        "softhsm rsa",
        &rsa_cert,
        &cert,
        &signature,
        &data,
        "Release RSA <release-rsa@example.com>",
    );
}

/// Makes a key with `gpg --quick-gen-key` in `home` and exports it as a TSK file (0600).
/// Returns the certificate's fingerprint.
fn gpg_key(home: &Path, userid: &str, algo: &str, passphrase: &str, tsk: &Path) -> String {
    let made = gpg(
        home,
        &[
            "--passphrase",
            passphrase,
            "--quick-gen-key",
            userid,
            algo,
            "sign",
            "never",
        ],
    );
    assert_ok(&made, &format!("gpg --quick-gen-key {algo}"));
    let listed = gpg(home, &["--with-colons", "--list-secret-keys", userid]);
    let fingerprint = stdout_text(&listed)
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .map(|l| l.trim_matches(':').to_string())
        .expect("a fingerprint");
    let exported = gpg(
        home,
        &[
            "--passphrase",
            passphrase,
            "--armor",
            "--export-secret-keys",
            userid,
        ],
    );
    assert_ok(&exported, "gpg --export-secret-keys");
    fs::write(tsk, &exported.stdout).expect("write TSK");
    keyward_tests::set_mode(tsk, 0o600);
    fingerprint
}

fn pgp_backend(name: &str, keyring: &Path, extra: &str) -> String {
    format!(
        "[[backend]]\nname = \"{name}\"\ntype = \"pgp\"\nkeyring = {}\n{extra}\n",
        toml_string(path(keyring))
    )
}

#[tokio::test]
async fn gpg_made_keys_sign_through_the_pgp_backend() {
    if !peers_available() {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let home = gnupg_home(work.path(), "gpg-maker");
    let alice_tsk = work.path().join("alice.tsk.asc");
    let alice = gpg_key(
        &home,
        "Alice <alice@example.com>",
        "rsa3072",
        "correct horse",
        &alice_tsk,
    );
    let bob_tsk = work.path().join("bob.tsk");
    let bob = gpg_key(&home, "Bob <bob@example.com>", "ed25519", "", &bob_tsk);
    let carol_tsk = work.path().join("carol.tsk");
    gpg_key(
        &home,
        "Carol <carol@example.com>",
        "nistp384",
        "",
        &carol_tsk,
    );

    let tables = format!(
        "{}{}{}[[key]]\nid = \"alice\"\nbackend = \"alice\"\nref = \"{alice}\"\n",
        pgp_backend("alice", &alice_tsk, "passphrase_env = \"ALICE_PASSPHRASE\""),
        pgp_backend("bob", &bob_tsk, "isolation = \"process\""),
        pgp_backend("carol", &carol_tsk, ""),
    );
    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let config = format!(
        "socket = {}\nstate_dir = {}\n\n{tables}",
        toml_string(path(&dir.join("run/agent.sock"))),
        toml_string(path(&dir.join("state")))
    );
    let daemon = builder
        .config(&config)
        .env("ALICE_PASSPHRASE", "correct horse")
        .start()
        .await;
    let client = daemon.client().await;
    let keys = client.list_keys().await.expect("list keys");
    let ids: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
    let bob_id = format!("bob/{bob}");
    assert!(
        ids.contains(&"alice") && ids.contains(&bob_id.as_str()),
        "{ids:?}"
    );
    let carol_id = keys
        .iter()
        .find(|k| k.backend == "carol")
        .map(|k| k.key_id.clone())
        .expect("carol's key");
    let spec = |id: &str| keys.iter().find(|k| k.key_id == id).unwrap().key_spec();
    assert_eq!(spec("alice"), KeySpec::Rsa3072);
    assert_eq!(spec(&bob_id), KeySpec::Ed25519);
    assert_eq!(spec(&carol_id), KeySpec::EcP384);

    // The backend never changes its keyring: deleting is refused, with the gpg way to do it.
    let delete = run_cli(&daemon, ["keys", "delete", "--key", "alice", "--yes"]);
    assert_cli_error(
        &delete,
        "keys delete on a pgp key",
        &["gpg --delete-secret-keys", "reload keywardd"],
    );
    assert!(
        client
            .list_keys()
            .await
            .expect("list keys")
            .iter()
            .any(|k| k.key_id == "alice"),
        "alice stays"
    );

    // GetPublicKey carries the certificate: the one gpg made, same fingerprint.
    let public = client.public_key("alice").await.expect("public key");
    assert!(public.openpgp_certificate.is_some());

    let data = work.path().join("data.bin");
    fs::write(&data, random_bytes(10_000)).expect("write data");
    let certs: Vec<(String, PathBuf, &str)> = vec![
        (
            "alice".into(),
            export(&daemon, work.path(), "alice"),
            "Alice <alice@example.com>",
        ),
        (
            bob_id.clone(),
            export(&daemon, work.path(), &bob_id),
            "Bob <bob@example.com>",
        ),
        (
            carol_id.clone(),
            export(&daemon, work.path(), &carol_id),
            "Carol <carol@example.com>",
        ),
    ];
    let shown = gpg(
        &gnupg_home(work.path(), "gpg-show"),
        &["--show-keys", "--with-colons", path(&certs[0].1)],
    );
    assert!(
        stdout_text(&shown).contains(&alice),
        "{}",
        stdout_text(&shown)
    );
    for (n, (key, cert, userid)) in certs.iter().enumerate() {
        let wrong = &certs[(n + 1) % certs.len()].1;
        let signature = sign(&daemon, key, &data, n % 2 == 0);
        check_signature(work.path(), key, cert, wrong, &signature, &data, userid);
        // The key's maker verifies too, with its own keyring.
        assert_ok(
            &gpg(&home, &["--verify", path(&signature), path(&data)]),
            "gpg --verify in the maker's home",
        );
    }
    // The plain agent signature works on pgp keys too (RSA-PSS, not possible in OpenPGP).
    let plain = run_cli(&daemon, ["sign", "--key", "alice", "--input", path(&data)]);
    assert_ok(&plain, "keyward sign with a pgp key");

    let log = daemon.log();
    assert!(
        !log.contains("correct horse"),
        "the passphrase is in the log"
    );
}

#[tokio::test]
async fn pgp_backend_errors_are_clear() {
    if !peers_available() {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let home = gnupg_home(work.path(), "gpg-maker");
    let tsk = work.path().join("dave.tsk");
    gpg_key(
        &home,
        "Dave <dave@example.com>",
        "ed25519",
        "open sesame",
        &tsk,
    );

    // The pgp backend runs as a plugin process: one that cannot start leaves keywardd serving
    // its other backends, says why in keywardd's log, and answers UNAVAILABLE with the reason.
    let start = |backend: String, env: Option<(&'static str, &'static str)>| async move {
        let mut builder = DaemonBuilder::new();
        let dir = builder.dir().to_path_buf();
        let config = format!(
            "socket = {}\nstate_dir = {}\n\n{backend}",
            toml_string(path(&dir.join("run/agent.sock"))),
            toml_string(path(&dir.join("state")))
        );
        builder = builder.config(&config);
        if let Some((name, value)) = env {
            builder = builder.env(name, value);
        }
        let daemon = builder.start().await;
        wait::for_log(
            &daemon,
            &["plugin down", "cannot start the backend"],
            1,
            Duration::from_secs(20),
        )
        .await;
        let listed = daemon.client().await.list_keys().await;
        assert!(
            listed.is_ok_and(|keys| keys.is_empty()),
            "the daemon serves, without the failed plugin's keys"
        );
        let text = daemon.log();
        assert!(
            !text.contains("open sesame"),
            "the passphrase leaked:\n{text}"
        );
        text
    };
    let wrong = start(
        pgp_backend("dave", &tsk, "passphrase_env = \"DAVE_PASS\""),
        Some(("DAVE_PASS", "not it")),
    )
    .await;
    assert!(
        wrong.contains("the passphrase does not unlock the OpenPGP key"),
        "{wrong}"
    );
    let missing = start(pgp_backend("dave", &tsk, ""), None).await;
    assert!(
        missing.contains("is protected by a passphrase; set passphrase_env or passphrase_file"),
        "{missing}"
    );

    // A revoked certificate: import gpg's own revocation certificate, export again.
    let fingerprint = gpg(&home, &["--with-colons", "--list-keys", "dave@example.com"]);
    let fingerprint = stdout_text(&fingerprint)
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .map(|l| l.trim_matches(':').to_string())
        .expect("fingerprint");
    let rev = home
        .join("openpgp-revocs.d")
        .join(format!("{fingerprint}.rev"));
    let text = fs::read_to_string(&rev).expect("gpg's revocation certificate");
    let armored = &text[text.find(":-----BEGIN").expect("armored") + 1..];
    let rev_file = work.path().join("dave.rev");
    fs::write(&rev_file, armored).expect("write revocation");
    assert_ok(
        &gpg(&home, &["--import", path(&rev_file)]),
        "import revocation",
    );
    let revoked_tsk = work.path().join("dave-revoked.tsk");
    let exported = gpg(
        &home,
        &[
            "--passphrase",
            "open sesame",
            "--export-secret-keys",
            "dave@example.com",
        ],
    );
    assert_ok(&exported, "export revoked");
    fs::write(&revoked_tsk, &exported.stdout).expect("write");
    keyward_tests::set_mode(&revoked_tsk, 0o600);
    let revoked = start(
        pgp_backend("dave", &revoked_tsk, "passphrase_env = \"DAVE_PASS\""),
        Some(("DAVE_PASS", "open sesame")),
    )
    .await;
    assert!(revoked.contains("is revoked"), "{revoked}");

    // A key type keyward cannot express (brainpool).
    let odd_tsk = work.path().join("erin.tsk");
    gpg_key(
        &home,
        "Erin <erin@example.com>",
        "brainpoolP256r1",
        "",
        &odd_tsk,
    );
    let odd = start(pgp_backend("erin", &odd_tsk, ""), None).await;
    assert!(odd.contains("which keyward cannot use"), "{odd}");

    // A keyring others can read is refused, as key files are.
    keyward_tests::set_mode(&tsk, 0o644);
    let open = start(
        pgp_backend("dave", &tsk, "passphrase_env = \"DAVE_PASS\""),
        Some(("DAVE_PASS", "open sesame")),
    )
    .await;
    assert!(open.contains("chmod 600"), "{open}");
}

#[tokio::test]
async fn one_key_one_id_whatever_its_spelling() {
    if !peers_available() {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let home = gnupg_home(work.path(), "gpg-maker");
    let tsk = work.path().join("frank.tsk");
    let fingerprint = gpg_key(&home, "Frank <frank@example.com>", "ed25519", "", &tsk);
    // One token in the default policy's bucket: a second signature within the minute is refused,
    // whatever the spelling of the key, because every spelling is one key.
    let builder = DaemonBuilder::new();
    let dir = builder.dir().to_path_buf();
    let config = format!(
        "socket = {}\nstate_dir = {}\n\n[default_policy]\nuids = [{}]\nrate_limit = {{ per_second = 0.01, burst = 1 }}\n\n{}",
        toml_string(path(&dir.join("run/agent.sock"))),
        toml_string(path(&dir.join("state"))),
        rustix::process::getuid().as_raw(),
        pgp_backend("frank", &tsk, "")
    );
    let daemon = builder.config(&config).start().await;
    let client = daemon.client().await;
    let canonical = format!("frank/{}", fingerprint.to_uppercase());
    let key_id = &fingerprint[fingerprint.len() - 16..];
    let spellings = [
        canonical.clone(),
        format!("frank/{}", fingerprint.to_lowercase()),
        format!("frank/0x{fingerprint}"),
        format!("frank/{}", key_id.to_lowercase()),
    ];
    let first = client.public_key(&spellings[0]).await.expect("public key");
    for spelling in &spellings {
        let key = client
            .public_key(spelling)
            .await
            .unwrap_or_else(|e| panic!("{spelling}: {e}"));
        assert_eq!(key.info.key_id, canonical, "{spelling}");
        assert_eq!(key.der, first.der, "{spelling}");
    }
    let listed: Vec<String> = client
        .list_keys()
        .await
        .expect("ListKeys")
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&canonical));
    let unknown = client
        .public_key("frank/0xDEADBEEFDEADBEEF")
        .await
        .expect_err("no such key");
    assert_eq!(unknown.code(), Some(tonic::Code::NotFound), "{unknown}");

    let options = keyward_sdk::SignOptions::default();
    let signed = client
        .sign_message(&spellings[1], b"once", &options)
        .await
        .expect("the first signature takes the bucket's token");
    assert!(!signed.bytes.is_empty());
    let again = client
        .sign_message(&spellings[2], b"twice", &options)
        .await
        .expect_err("another spelling has no bucket of its own");
    assert_eq!(
        again.code(),
        Some(tonic::Code::ResourceExhausted),
        "{again}"
    );
    assert!(
        again
            .to_string()
            .contains(&format!("policy of key \"{canonical}\"")),
        "{again}"
    );
}
