//! Certificate chains attached to keys: every Notary Project rule broken once is refused with
//! the rule named (INVALID_ARGUMENT, or FAILED_PRECONDITION for a chain that is not the key's
//! or has expired); good chains are stored, served with the public key and reloaded after a
//! restart; a `certificate_chain` file in the config is checked at load.
//!
//! Bad certificates are made with the `openssl` CLI (and rcgen for an expired one) from the
//! local backend's key file, so the leaf really holds the agent key's public key.

use std::fs;
use std::path::{Path, PathBuf};

use keyward_sdk::x509::rcgen;
use keyward_sdk::{Client, Code};
use keyward_tests::cli::{assert_cli_error, assert_ok, path};
use keyward_tests::{TestDaemon, openssl, openssl_genpkey, run_cli, stderr_text, stdout_text};

/// Makes certificates with openssl in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

/// Minimal openssl config: no default extensions, only those given.
fn config(exts: &[&str]) -> String {
    format!(
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n[ext]\n{}\n",
        exts.join("\n")
    )
}

const LEAF: &[&str] = &[
    "basicConstraints = critical, CA:FALSE",
    "keyUsage = critical, digitalSignature",
    "extendedKeyUsage = codeSigning",
];
const CA: &[&str] = &[
    "basicConstraints = critical, CA:TRUE",
    "keyUsage = critical, keyCertSign, cRLSign",
];

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) {
        let output = openssl(args);
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            stderr_text(&output)
        );
    }

    /// A new private key file (`genpkey` arguments, e.g. `-algorithm EC -pkeyopt ...`).
    fn key(&self, name: &str, args: &[&str]) -> PathBuf {
        let key = self.file(&format!("{name}.key"));
        openssl_genpkey(&key, args);
        key
    }

    /// A self-signed certificate for `key` with `exts`; `digest` is `-sha256`, `-sha1` or
    /// nothing (Ed25519).
    fn self_signed(&self, name: &str, key: &Path, exts: &[&str], digest: Option<&str>) -> String {
        let cfg = self.file(&format!("{name}.cnf"));
        fs::write(&cfg, config(exts)).unwrap();
        let out = self.file(&format!("{name}.pem"));
        let subject = format!("/C=US/ST=WA/O=Example/CN={name}");
        let mut args = vec!["req", "-x509", "-new", "-key", path(key), "-subj", &subject];
        args.extend(["-days", "2", "-config", path(&cfg), "-extensions", "ext"]);
        args.extend(digest);
        args.extend(["-out", path(&out)]);
        self.run(&args);
        fs::read_to_string(out).unwrap()
    }

    /// A certificate for `key` signed by `ca_cert`/`ca_key` with `exts`.
    fn signed(&self, name: &str, key: &Path, ca: (&str, &Path), exts: &[&str]) -> String {
        let cfg = self.file(&format!("{name}.cnf"));
        fs::write(&cfg, config(exts)).unwrap();
        let csr = self.file(&format!("{name}.csr"));
        let subject = format!("/C=US/ST=WA/O=Example/CN={name}");
        self.run(&[
            "req",
            "-new",
            "-key",
            path(key),
            "-subj",
            &subject,
            "-config",
            path(&cfg),
            "-out",
            path(&csr),
        ]);
        let ca_file = self.file(&format!("{name}.issuer.pem"));
        fs::write(&ca_file, ca.0).unwrap();
        let out = self.file(&format!("{name}.pem"));
        self.run(&[
            "x509",
            "-req",
            "-in",
            path(&csr),
            "-CA",
            path(&ca_file),
            "-CAkey",
            path(ca.1),
            "-set_serial",
            "7",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            path(&cfg),
            "-extensions",
            "ext",
            "-out",
            path(&out),
        ]);
        fs::read_to_string(out).unwrap()
    }
}

const EC: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// A CA rule case: what, the CA's extensions, its `genpkey` arguments, the needles.
type CaCase<'a> = (&'a str, &'a [&'a str], &'a [&'a str], Vec<&'a str>);

/// Attaches `pem` to `key` and expects a refusal with `code` and every needle in the message.
async fn refused(client: &Client, key: &str, pem: &str, code: Code, needles: &[&str]) {
    let error = client
        .attach_certificate_chain(key, pem)
        .await
        .expect_err(&format!("a chain breaking {needles:?} was accepted"));
    let message = error.to_string();
    assert_eq!(error.code(), Some(code), "{message}");
    assert!(
        message.contains(&format!("key {key:?}")),
        "the key is not named: {message}"
    );
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in: {message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_notary_rule_broken_once_is_refused_by_name() {
    let mut daemon = TestDaemon::start("").await;
    for (id, key_type) in [("leaf", "ec-p256"), ("ed", "ed25519")] {
        let output = run_cli(
            &daemon,
            [
                "keys",
                "generate",
                "--backend",
                "local",
                "--type",
                key_type,
                id,
            ],
        );
        assert_ok(&output, id);
    }
    let leaf_key = daemon.keys_dir().join("leaf.pem");
    let ed_key = daemon.keys_dir().join("ed.pem");
    let client = daemon.client().await;
    let pki = Pki::new();
    let ca_key = pki.key("ca", EC);
    let ca = pki.self_signed("ca", &ca_key, CA, Some("-sha256"));
    let sha256 = Some("-sha256");

    use Code::{FailedPrecondition as Pre, InvalidArgument as Inv};
    // (what, key, chain, code, needles)
    let cases: Vec<(&str, &str, String, Code, Vec<&str>)> = vec![
        (
            "no keyUsage",
            "leaf",
            pki.self_signed(
                "noku",
                &leaf_key,
                &["basicConstraints = critical, CA:FALSE"],
                sha256,
            ),
            Inv,
            vec!["rule leaf keyUsage", "no keyUsage"],
        ),
        (
            "keyUsage not critical",
            "leaf",
            pki.self_signed("kunc", &leaf_key, &["keyUsage = digitalSignature"], sha256),
            Inv,
            vec!["rule leaf keyUsage", "not critical"],
        ),
        (
            "keyEncipherment",
            "leaf",
            pki.self_signed(
                "kuenc",
                &leaf_key,
                &["keyUsage = critical, digitalSignature, keyEncipherment"],
                sha256,
            ),
            Inv,
            vec!["rule leaf keyUsage", "keyEncipherment"],
        ),
        (
            "leaf with CA:TRUE",
            "leaf",
            pki.self_signed(
                "leafca",
                &leaf_key,
                &[
                    "basicConstraints = critical, CA:TRUE",
                    "keyUsage = critical, digitalSignature",
                ],
                sha256,
            ),
            Inv,
            vec!["rule leaf basicConstraints", "CA:FALSE"],
        ),
        (
            "EKU serverAuth",
            "leaf",
            pki.self_signed(
                "tls",
                &leaf_key,
                &[
                    "keyUsage = critical, digitalSignature",
                    "extendedKeyUsage = codeSigning, serverAuth",
                ],
                sha256,
            ),
            Inv,
            vec!["rule leaf extendedKeyUsage", "serverAuth"],
        ),
        (
            "SHA-1",
            "leaf",
            pki.self_signed("sha1", &leaf_key, LEAF, Some("-sha1")),
            Inv,
            vec!["SHA-1"],
        ),
        (
            "Ed25519 key",
            "ed",
            pki.self_signed("ed", &ed_key, LEAF, None),
            Inv,
            vec!["rule key size", "Ed25519"],
        ),
        (
            "a chain without its root",
            "leaf",
            pki.signed("noroot", &leaf_key, (&ca, &ca_key), LEAF),
            Inv,
            vec!["rule chain order", "self-signed root"],
        ),
        (
            "root first",
            "leaf",
            format!(
                "{ca}{}",
                pki.signed("reversed", &leaf_key, (&ca, &ca_key), LEAF)
            ),
            Inv,
            vec!["rule chain order", "is not issued by"],
        ),
        (
            "the leaf's certificate is for another key",
            "leaf",
            {
                let other = pki.key("other", EC);
                pki.self_signed("other", &other, LEAF, sha256)
            },
            Pre,
            vec!["rule leaf public key"],
        ),
        (
            "garbage",
            "leaf",
            "hello".to_string(),
            Inv,
            vec!["no certificate found"],
        ),
        (
            "a private key",
            "leaf",
            fs::read_to_string(pki.key("pk", EC)).unwrap(),
            Inv,
            vec!["not a CERTIFICATE"],
        ),
    ];
    for (what, key, pem, code, needles) in &cases {
        eprintln!("case: {what}");
        refused(&client, key, pem, *code, needles).await;
    }

    // CA rules, each on a chain leaf <- CA.
    // (what, CA extensions, CA key generation, needles)
    let ca_cases: Vec<CaCase<'_>> = vec![
        (
            "CA basicConstraints not critical",
            &[
                "basicConstraints = CA:TRUE",
                "keyUsage = critical, keyCertSign",
            ],
            EC,
            vec!["rule CA basicConstraints", "not critical"],
        ),
        (
            "CA without basicConstraints",
            &["keyUsage = critical, keyCertSign"],
            EC,
            vec!["rule CA basicConstraints", "CA:TRUE"],
        ),
        (
            "CA without keyCertSign",
            &[
                "basicConstraints = critical, CA:TRUE",
                "keyUsage = critical, cRLSign",
            ],
            EC,
            vec!["rule CA keyUsage", "keyCertSign"],
        ),
        (
            "CA keyUsage not critical",
            &[
                "basicConstraints = critical, CA:TRUE",
                "keyUsage = keyCertSign",
            ],
            EC,
            vec!["rule CA keyUsage", "not critical"],
        ),
        (
            "RSA-1024 CA",
            CA,
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
            vec!["rule key size", "1024"],
        ),
    ];
    for (i, (what, exts, keygen, needles)) in ca_cases.iter().enumerate() {
        eprintln!("case: {what}");
        let name = format!("badca{i}");
        let key = pki.key(&name, keygen);
        let root = pki.self_signed(&name, &key, exts, sha256);
        let leaf = pki.signed(&format!("leaf{i}"), &leaf_key, (&root, &key), LEAF);
        refused(&client, "leaf", &format!("{leaf}{root}"), Inv, needles).await;
    }

    // Path length: the root allows no intermediate, but one follows it.
    let root_key = pki.key("plroot", EC);
    let root = pki.self_signed(
        "plroot",
        &root_key,
        &[
            "basicConstraints = critical, CA:TRUE, pathlen:0",
            "keyUsage = critical, keyCertSign",
        ],
        sha256,
    );
    let mid_key = pki.key("plmid", EC);
    let mid = pki.signed("plmid", &mid_key, (&root, &root_key), CA);
    let leaf = pki.signed("plleaf", &leaf_key, (&mid, &mid_key), LEAF);
    refused(
        &client,
        "leaf",
        &format!("{leaf}{mid}{root}"),
        Inv,
        &["rule CA basicConstraints", "path length of 0"],
    )
    .await;

    // Expired (rcgen with the key file, dates in the past).
    let key_pair = rcgen::KeyPair::from_pem(&fs::read_to_string(&leaf_key).unwrap()).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "expired");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 12, 31);
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let expired = params.self_signed(&key_pair).unwrap().pem();
    refused(
        &client,
        "leaf",
        &expired,
        Pre,
        &["rule validity", "expired"],
    )
    .await;

    // Nothing was attached by the refusals.
    assert!(
        client
            .public_key("leaf")
            .await
            .unwrap()
            .certificate_chain
            .is_empty()
    );

    // The CLI reports a refusal as one error line.
    let bad = pki.file("sha1.pem");
    let output = run_cli(&daemon, ["cert", "attach", "--key", "leaf", path(&bad)]);
    assert_cli_error(&output, "cert attach", &["SHA-1", "leaf"]);

    // A good chain (leaf <- intermediate <- root) attaches, is served and survives a restart.
    let mid = pki.signed("goodmid", &mid_key, (&ca, &ca_key), CA);
    let good_leaf = pki.signed("goodleaf", &leaf_key, (&mid, &mid_key), LEAF);
    let good = pki.file("good.pem");
    fs::write(&good, format!("{good_leaf}{mid}{ca}")).unwrap();
    let output = run_cli(&daemon, ["cert", "attach", "--key", "leaf", path(&good)]);
    assert_ok(&output, "cert attach good chain");
    assert!(
        stdout_text(&output).contains("3 certificate"),
        "{}",
        stdout_text(&output)
    );
    let stored = daemon.dir().join("state/certs/leaf.pem");
    assert_eq!(keyward_tests::mode_of(&stored), 0o600);
    let chain = client.public_key("leaf").await.unwrap().certificate_chain;
    assert_eq!(chain.len(), 3);
    daemon.restart().await;
    let client = daemon.client().await;
    let public = client.public_key("leaf").await.unwrap();
    assert_eq!(public.certificate_chain, chain, "reloaded after a restart");
    assert!(public.info.has_certificate);
    let keys = client.list_keys().await.unwrap();
    let listed = keys.iter().find(|k| k.key_id == "leaf").unwrap();
    assert!(listed.has_certificate);
    let signature = client
        .sign_message("leaf", b"x", &keyward_sdk::SignOptions::default())
        .await
        .unwrap();
    assert_eq!(signature.certificate_chain, chain, "Sign returns the chain");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_certificate_chain_is_checked_at_load() {
    let pki = Pki::new();
    let key = pki.key("cfg", EC);
    let good = pki.self_signed("cfg", &key, LEAF, Some("-sha256"));
    let bad = pki.self_signed(
        "cfgbad",
        &key,
        &["keyUsage = digitalSignature"],
        Some("-sha256"),
    );
    let start = |chain: &str| {
        let builder = TestDaemon::builder();
        let keys = builder.dir().join("keys");
        fs::create_dir_all(&keys).unwrap();
        keyward_tests::set_mode(&keys, 0o700);
        fs::copy(&key, keys.join("cfgkey.pem")).unwrap();
        keyward_tests::set_mode(&keys.join("cfgkey.pem"), 0o600);
        let chain_file = builder.dir().join("chain.pem");
        fs::write(&chain_file, chain).unwrap();
        builder.extra_toml(&format!(
            "\n[[key]]\nid = \"cfg\"\nbackend = \"local\"\nref = \"cfgkey\"\ncertificate_chain = {}\n",
            keyward_tests::toml_string(path(&chain_file))
        ))
    };
    let output = start(&bad).run_to_exit(std::time::Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(2), "{}", stderr_text(&output));
    let stderr = stderr_text(&output);
    assert!(
        stderr.contains("line ")
            && stderr.contains("certificate_chain")
            && stderr.contains("rule leaf keyUsage"),
        "{stderr}"
    );

    let daemon = start(&good).start().await;
    let client = daemon.client().await;
    let public = client.public_key("cfg").await.unwrap();
    assert_eq!(public.certificate_chain.len(), 1);
    // A chain from the config is not replaced through the API.
    let error = client
        .attach_certificate_chain("cfg", &good)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::FailedPrecondition), "{error}");
    assert!(error.to_string().contains("config"), "{error}");
}
