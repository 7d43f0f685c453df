//! Unit tests of policy parsing and decisions.

use std::path::PathBuf;

use super::*;
use crate::auth::{LocalCaller, RemoteCaller};

fn rules(text: &str) -> Result<PolicyRules, String> {
    PolicyRules::parse(text.parse::<toml::Table>().expect("TOML"))
}

fn local(uid: u32, gid: u32) -> Caller {
    Caller::Local(LocalCaller {
        uid,
        gid,
        pid: Some(1),
    })
}

fn remote(ids: &[&str]) -> Caller {
    Caller::Remote(RemoteCaller {
        identities: ids.iter().map(|s| s.to_string()).collect(),
        address: None,
    })
}

fn policies(key: &str, text: &str) -> Policies {
    let mut keys = HashMap::new();
    keys.insert(
        key.to_string(),
        (
            "local".to_string(),
            Arc::new(rules(text).expect("valid policy")),
        ),
    );
    Policies {
        keys,
        ..Policies::default()
    }
}

struct Ask<'a> {
    caller: Caller,
    process: ProcessInfo,
    algorithm: SignatureAlgorithm,
    purpose: &'a str,
}

impl Ask<'_> {
    fn by(caller: Caller) -> Self {
        Ask {
            caller,
            process: ProcessInfo::default(),
            algorithm: SignatureAlgorithm::EcdsaSha256,
            purpose: "",
        }
    }
}

/// The decision on `ask` for key "release"; `Err` holds the message.
fn decide(policies: &Policies, ask: &Ask<'_>) -> Result<(), AgentError> {
    let applied: Vec<Applied> = policies.explicit("release").into_iter().collect();
    policies.check(
        &applied,
        &SignAttempt {
            key_id: "release",
            caller: &ask.caller,
            process: &ask.process,
            algorithm: ask.algorithm,
            purpose: ask.purpose,
        },
    )
}

fn denied(policies: &Policies, ask: &Ask<'_>) -> String {
    match decide(policies, ask) {
        Err(AgentError::PermissionDenied(message)) => message,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn parse_errors_name_the_field() {
    for (text, needle) in [
        ("uidz = [1]", "unknown field `uidz`"),
        ("algorithms = [\"md5\"]", "unknown algorithm \"md5\""),
        ("purpose = \"(\"", "not a valid regular expression"),
        ("executables = [\"bin/x\"]", "not an absolute path"),
        (
            "executables = [{ path = \"/bin/x\", sha256 = \"abc\" }]",
            "must be 64 hex digits",
        ),
        (
            "executables = [{ path = \"/bin/x\", sha = \"abc\" }]",
            "unknown field `sha`",
        ),
        ("executables = [1]", "each entry is a path or"),
        (
            "rate_limit = { per_second = 0, burst = 1 }",
            "must be a number above 0",
        ),
        (
            "caller_rate_limit = { per_second = 1, burst = 0 }",
            "burst must be at least 1",
        ),
        ("mtls_identities = [\" \"]", "an identity is empty"),
    ] {
        let error = rules(text).expect_err(text);
        assert!(error.contains(needle), "{text}: {error}");
    }
    let pinned = rules(&format!(
        "executables = [\"/bin/a\", {{ path = \"/bin/b\", sha256 = \"{}\" }}]",
        "ab".repeat(32)
    ))
    .expect("valid");
    assert!(pinned.pins_executables());
    assert_eq!(pinned.executables.unwrap()[1].sha256, Some([0xab; 32]));
    assert!(rules("").unwrap().allows_nobody());
    assert!(!rules("gids = [5]").unwrap().allows_nobody());
}

#[test]
fn uids_and_gids_must_all_match() {
    let policies = policies("release", "uids = [1000]\ngids = [100, 200]");
    assert!(decide(&policies, &Ask::by(local(1000, 200))).is_ok());
    assert_eq!(
        denied(&policies, &Ask::by(local(1001, 200))),
        "policy of key \"release\": uid 1001 is not in uids [1000]"
    );
    assert_eq!(
        denied(&policies, &Ask::by(local(1000, 300))),
        "policy of key \"release\": gid 300 is not in gids [100, 200]"
    );
}

#[test]
fn a_policy_that_names_no_local_caller_denies_local_callers() {
    let policies = policies("release", "algorithms = [\"ecdsa-sha256\"]");
    let message = denied(&policies, &Ask::by(local(0, 0)));
    assert!(
        message.contains("local callers are not allowed"),
        "{message}"
    );
}

#[test]
fn remote_callers_need_a_listed_identity() {
    let none = Policies::default();
    let message = denied(&none, &Ask::by(remote(&["CN=a"])));
    assert!(message.contains("has no policy"), "{message}");
    assert!(
        decide(&none, &Ask::by(local(5, 5))).is_ok(),
        "keys without a policy stay open to local callers"
    );

    let uids_only = policies("release", "uids = [0]");
    let message = denied(&uids_only, &Ask::by(remote(&["CN=a"])));
    assert!(message.contains("no mtls_identities"), "{message}");

    let policies = policies(
        "release",
        "mtls_identities = [\"spiffe://example.org/ci\", \"CN=build-bot\"]",
    );
    assert!(
        decide(
            &policies,
            &Ask::by(remote(&["spiffe://example.org/ci", "CN=x"]))
        )
        .is_ok()
    );
    assert!(decide(&policies, &Ask::by(remote(&["CN=build-bot"]))).is_ok());
    let message = denied(&policies, &Ask::by(remote(&["CN=intruder"])));
    assert_eq!(
        message,
        "policy of key \"release\": mTLS identity \"CN=intruder\" is not in mtls_identities [\"spiffe://example.org/ci\", \"CN=build-bot\"]"
    );
    let message = denied(&policies, &Ask::by(local(0, 0)));
    assert!(
        message.contains("local callers are not allowed"),
        "{message}"
    );
}

#[test]
fn algorithms_and_purpose() {
    let policies = policies(
        "release",
        "uids = [0]\nalgorithms = [\"ecdsa-sha256\"]\npurpose = \"release [0-9]+\"",
    );
    let ask = |algorithm, purpose| Ask {
        algorithm,
        purpose,
        ..Ask::by(local(0, 0))
    };
    assert!(
        decide(
            &policies,
            &ask(SignatureAlgorithm::EcdsaSha256, "release 12")
        )
        .is_ok()
    );
    let message = denied(
        &policies,
        &ask(SignatureAlgorithm::EcdsaSha384, "release 12"),
    );
    assert_eq!(
        message,
        "policy of key \"release\": algorithm ecdsa-sha384 is not in algorithms [ecdsa-sha256]"
    );
    // Anchored at both ends.
    for purpose in ["release 12 and more", "a release 12", "release", ""] {
        let message = denied(&policies, &ask(SignatureAlgorithm::EcdsaSha256, purpose));
        assert!(message.contains("does not match the pattern"), "{message}");
    }
}

#[test]
fn executables_by_path_and_hash() {
    let good = [7u8; 32];
    let text = format!(
        "executables = [\"/usr/bin/tool\", {{ path = \"/usr/bin/pinned\", sha256 = \"{}\" }}]",
        hex::encode(good)
    );
    let policies = policies("release", &text);
    let ask = |exe: Result<&str, &str>, sha256: Option<[u8; 32]>| Ask {
        process: ProcessInfo {
            exe: Some(exe.map(PathBuf::from).map_err(str::to_string)),
            sha256: sha256.map(Ok),
        },
        ..Ask::by(local(0, 0))
    };
    assert!(decide(&policies, &ask(Ok("/usr/bin/tool"), None)).is_ok());
    assert!(decide(&policies, &ask(Ok("/usr/bin/pinned"), Some(good))).is_ok());
    let message = denied(&policies, &ask(Ok("/usr/bin/pinned"), Some([8; 32])));
    assert!(message.contains("has sha256 0808"), "{message}");
    let message = denied(&policies, &ask(Ok("/usr/bin/other"), None));
    assert!(
        message.contains(
            "executable /usr/bin/other is not in executables [/usr/bin/tool, /usr/bin/pinned]"
        ),
        "{message}"
    );
    let message = denied(&policies, &ask(Err("no pid"), None));
    assert!(message.contains("unknown (no pid)"), "{message}");
}

#[test]
fn rate_limits_answer_resource_exhausted_with_a_wait() {
    let policies = policies(
        "release",
        "uids = [0, 1]\ncaller_rate_limit = { per_second = 0.5, burst = 2 }",
    );
    for _ in 0..2 {
        assert!(decide(&policies, &Ask::by(local(0, 0))).is_ok());
    }
    match decide(&policies, &Ask::by(local(0, 0))) {
        Err(AgentError::RateLimited {
            message,
            retry_after,
        }) => {
            assert!(
                message.contains("uid 0 exceeded its caller_rate_limit (0.5 per second, burst 2)"),
                "{message}"
            );
            assert!(
                retry_after > Duration::from_millis(1900) && retry_after <= Duration::from_secs(2),
                "{retry_after:?}"
            );
            let status = crate::error::to_status(&AgentError::RateLimited {
                message,
                retry_after,
            });
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            assert!(status.metadata().get("retry-after-ms").is_some());
        }
        other => panic!("the third request was not rate limited: {other:?}"),
    }
    // Another uid has its own bucket; a denied request takes no token.
    assert!(decide(&policies, &Ask::by(local(1, 0))).is_ok());
    assert!(denied(&policies, &Ask::by(local(2, 0))).contains("uid 2 is not in uids"));
}

#[test]
fn the_default_policy_names_itself() {
    let policies = Policies {
        default: Some(Arc::new(rules("uids = [7]").unwrap())),
        ..Policies::default()
    };
    let applied: Vec<Applied> = policies.default_for("gen").into_iter().collect();
    let error = policies
        .check(
            &applied,
            &SignAttempt {
                key_id: "gen",
                caller: &local(8, 8),
                process: &ProcessInfo::default(),
                algorithm: SignatureAlgorithm::Ed25519,
                purpose: "",
            },
        )
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "policy of key \"gen\" (default_policy): uid 8 is not in uids [7]"
    );
}

#[tokio::test]
async fn inspecting_a_process_reads_and_hashes_its_executable() {
    use sha2::Digest;
    let cache = ExeHashCache::default();
    let pid = std::process::id() as i32;
    let info = inspect_process(Some(pid), true, &cache).await;
    let exe = std::env::current_exe().unwrap();
    assert_eq!(info.exe.unwrap().unwrap(), exe.canonicalize().unwrap());
    let want: [u8; 32] = sha2::Sha256::digest(std::fs::read(&exe).unwrap()).into();
    assert_eq!(info.sha256.unwrap().unwrap(), want);
    assert_eq!(cache.known.lock().unwrap().len(), 1);
    let again = inspect_process(Some(pid), true, &cache).await;
    assert_eq!(again.sha256.unwrap().unwrap(), want);
    assert_eq!(
        cache.files_hashed(),
        1,
        "the second time comes from the cache"
    );
    let unhashed = inspect_process(Some(pid), false, &cache).await;
    assert!(unhashed.sha256.is_none() && unhashed.exe.unwrap().is_ok());
    let missing = inspect_process(None, false, &cache).await;
    assert!(missing.exe.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_hashes_of_one_file_are_one_read() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("program");
    let content = vec![7u8; 8 << 20];
    std::fs::write(&path, &content).unwrap();
    let want: [u8; 32] = sha2::Sha256::digest(&content).into();
    let cache = Arc::new(ExeHashCache::default());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (cache, path) = (cache.clone(), path.clone());
        tasks.spawn(async move {
            let file = std::fs::File::open(&path).unwrap();
            cache.hash(file, "program").await
        });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.unwrap().unwrap(), want);
    }
    assert_eq!(cache.files_hashed(), 1, "16 concurrent asks, one read");
}

#[tokio::test]
async fn a_file_over_the_cap_is_not_read_even_when_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge");
    let file = std::fs::File::create(&path).unwrap();
    // 64 GiB of nothing: reading it would take minutes.
    file.set_len(64 << 30).unwrap();
    let cache = ExeHashCache::with_max_bytes(1 << 20);
    let error = cache
        .hash(std::fs::File::open(&path).unwrap(), "huge")
        .await
        .unwrap_err();
    assert!(
        error.contains("it is 68719476736 bytes, larger than the 1048576 bytes keywardd hashes (max_executable_bytes in [limits])"),
        "{error}"
    );
    assert_eq!(cache.files_hashed(), 0);
}

#[test]
fn identity_rules_are_checked_without_the_process() {
    let policies = policies(
        "release",
        "uids = [7]\nexecutables = [{ path = \"/usr/bin/x\", sha256 = \"00000000000000000000000000000000000000000000000000000000000000aa\" }]",
    );
    let applied: Vec<Applied> = policies.explicit("release").into_iter().collect();
    let error = policies
        .check_identity(&applied, &local(8, 8), "release")
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "policy of key \"release\": uid 8 is not in uids [7]"
    );
    // The right uid passes this step; its executable is checked with the rest.
    policies
        .check_identity(&applied, &local(7, 7), "release")
        .unwrap();
    let message = denied(&policies, &Ask::by(local(7, 7)));
    assert!(message.contains("executable is unknown"), "{message}");
}
