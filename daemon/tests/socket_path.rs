//! The daemon and the SDK must agree on the default socket path, or `keyward` would not find
//! a `keywardd` started without options.

#[test]
fn daemon_and_sdk_agree_on_the_default_socket() {
    // One process, one environment: both read the same XDG_RUNTIME_DIR / TMPDIR.
    assert_eq!(
        keyward_daemon::paths::default_socket_path().unwrap(),
        keyward_sdk::default_socket_path()
    );
}
