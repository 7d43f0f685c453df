//! Unit tests of the socket trust rules, on real directories, sockets and connections. As
//! root (CI), "another user" is `nobody` (the files are chowned to it); otherwise the caller is
//! pretended to be another uid than the files' owner.

use std::os::unix::fs::PermissionsExt;

use super::*;

const NOBODY: u32 = 65534;

fn euid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A private directory with a listening socket, as the caller's own agent makes it.
fn agent_dir() -> (tempfile::TempDir, PathBuf, std::os::unix::net::UnixListener) {
    let dir = tempfile::tempdir().unwrap();
    set_mode(dir.path(), 0o700);
    let socket = dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    (dir, socket, listener)
}

/// Makes `paths` belong to "another user"; returns the caller to check as and that user.
fn owned_by_another(paths: &[&Path]) -> (Owners, u32) {
    if euid() == 0 {
        for path in paths {
            rustix::fs::chown(*path, Some(rustix::fs::Uid::from_raw(NOBODY)), None).unwrap();
        }
        (
            Owners {
                caller: 0,
                trusted: None,
            },
            NOBODY,
        )
    } else {
        (
            Owners {
                caller: euid() + 1,
                trusted: None,
            },
            euid(),
        )
    }
}

fn me() -> Owners {
    Owners {
        caller: euid(),
        trusted: None,
    }
}

fn refusal(result: Result<PathBuf, Error>) -> String {
    match result {
        Err(error @ Error::UntrustedAgent { .. }) => error.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_callers_own_socket_is_accepted_and_resolved() {
    let (dir, socket, _listener) = agent_dir();
    let resolved = check_socket(&socket, &me()).unwrap();
    assert_eq!(
        resolved,
        dir.path().canonicalize().unwrap().join("agent.sock")
    );
}

#[test]
fn a_directory_of_another_user_is_refused_with_what_to_do() {
    let (dir, socket, _listener) = agent_dir();
    let (owners, other) = owned_by_another(&[dir.path(), &socket]);
    let message = refusal(check_socket(&socket, &owners));
    let shown = dir.path().canonicalize().unwrap();
    assert!(
        message.starts_with(&format!("refusing to use the agent socket {}: its directory {} belongs to uid {other}, not to you (uid {}) or root", socket.display(), shown.display(), owners.caller)),
        "{message}"
    );
    assert!(
        message.contains("another user may have created it to intercept your requests"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "set KEYWARD_AGENT_UID={other} if that user runs your agent"
        )),
        "{message}"
    );
    // Trusting that uid (KEYWARD_AGENT_UID or the option) accepts it.
    let trusted = Owners {
        trusted: Some(other),
        ..owners
    };
    check_socket(&socket, &trusted).unwrap();
}

#[test]
fn a_directory_writable_by_others_or_the_group_is_refused() {
    for (mode, who) in [(0o777, "others"), (0o1777, "others"), (0o770, "its group")] {
        let (dir, socket, _listener) = agent_dir();
        set_mode(dir.path(), mode);
        let message = refusal(check_socket(&socket, &me()));
        assert!(
            message.contains(&format!("can be written by {who} (mode {mode:04o})")),
            "{message}"
        );
        assert!(
            message.contains(&format!(
                "chmod go-w {}",
                dir.path().canonicalize().unwrap().display()
            )),
            "{message}"
        );
    }
}

#[test]
fn a_socket_of_another_user_in_a_trusted_directory_is_refused() {
    let (_dir, socket, _listener) = agent_dir();
    let (owners, other) = owned_by_another(&[&socket]);
    if owners.caller == 0 {
        // As root, the directory (root's) is trusted and only the socket is nobody's.
        let message = refusal(check_socket(&socket, &owners));
        assert!(
            message.contains(&format!("the socket belongs to uid {other}")),
            "{message}"
        );
    }
}

#[test]
fn symlinks_are_resolved_before_the_checks() {
    // A link in the caller's private directory to a socket in a directory open to all.
    let (_mine, link_dir_socket, _l) = agent_dir();
    std::fs::remove_file(&link_dir_socket).unwrap();
    let (open, target, _listener) = agent_dir();
    set_mode(open.path(), 0o777);
    std::os::unix::fs::symlink(&target, &link_dir_socket).unwrap();
    let message = refusal(check_socket(&link_dir_socket, &me()));
    assert!(
        message.contains(&format!(
            "its directory {} can be written",
            open.path().canonicalize().unwrap().display()
        )),
        "{message}"
    );

    // A symlinked parent directory is followed too.
    let (real, socket, _listener) = agent_dir();
    let link = tempfile::tempdir().unwrap();
    let via = link.path().join("via");
    std::os::unix::fs::symlink(real.path(), &via).unwrap();
    let resolved = check_socket(&via.join("agent.sock"), &me()).unwrap();
    assert_eq!(resolved, socket.canonicalize().unwrap());
}

#[test]
fn something_that_is_not_a_socket_is_refused_and_a_missing_one_is_not_running() {
    let (_dir, socket, listener) = agent_dir();
    drop(listener);
    std::fs::remove_file(&socket).unwrap();
    match check_socket(&socket, &me()) {
        Err(Error::Connect { reason, .. }) => assert!(reason.contains("not running"), "{reason}"),
        other => panic!("{other:?}"),
    }
    std::fs::write(&socket, b"").unwrap();
    let message = refusal(check_socket(&socket, &me()));
    assert!(message.contains("is not a socket"), "{message}");
}

#[tokio::test]
async fn the_peer_uid_is_checked() {
    let (_dir, socket, listener) = agent_dir();
    listener.set_nonblocking(true).unwrap();
    let _listener = tokio::net::UnixListener::from_std(listener).unwrap();
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    // The listener is this process: the caller's own uid.
    check_peer(&stream, &socket, &me()).unwrap();
    if euid() == 0 {
        // A root-owned agent is trusted by every caller.
        check_peer(
            &stream,
            &socket,
            &Owners {
                caller: 1000,
                trusted: None,
            },
        )
        .unwrap();
    } else {
        let owners = Owners {
            caller: euid() + 1,
            trusted: None,
        };
        let message = check_peer(&stream, &socket, &owners)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(&format!(
                "the process listening on it runs as uid {}",
                euid()
            )),
            "{message}"
        );
        check_peer(
            &stream,
            &socket,
            &Owners {
                trusted: Some(euid()),
                ..owners
            },
        )
        .unwrap();
    }
}

#[test]
fn keyward_agent_uid_is_numeric() {
    use std::ffi::OsStr;
    assert_eq!(parse_agent_uid(None).unwrap(), None);
    assert_eq!(parse_agent_uid(Some(OsStr::new(""))).unwrap(), None);
    assert_eq!(
        parse_agent_uid(Some(OsStr::new("1001"))).unwrap(),
        Some(1001)
    );
    let error = parse_agent_uid(Some(OsStr::new("keyward")))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("KEYWARD_AGENT_UID=\"keyward\" is not a numeric uid")
            && error.contains("id -u"),
        "{error}"
    );
    assert_eq!(
        ConnectOptions::new().agent_uid(7).owners().unwrap().trusted,
        Some(7)
    );
}

#[test]
fn owners_describe_themselves() {
    assert_eq!(
        Owners {
            caller: 1000,
            trusted: None
        }
        .to_string(),
        "you (uid 1000) or root"
    );
    assert_eq!(
        Owners {
            caller: 1000,
            trusted: Some(1001)
        }
        .to_string(),
        "you (uid 1000), root or the agent's uid 1001"
    );
}
