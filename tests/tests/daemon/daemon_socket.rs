//! The socket's mode is set without following a symlink: when something replaces the socket
//! with a symlink (in a directory others can write), a reload that changes the mode must not
//! chmod the symlink's target.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use keyward_tests::users::NOBODY;
use keyward_tests::wait;
use keyward_tests::{DaemonBuilder, mode_of, set_mode};
use rustix::process::{Pid, Signal, kill_process};

#[tokio::test]
async fn a_reload_does_not_chmod_through_a_symlink_swapped_in_for_the_socket() {
    let builder = DaemonBuilder::new();
    let daemon = builder.start().await;
    let socket = daemon.socket().to_path_buf();
    assert_eq!(mode_of(&socket), 0o600);

    // A file that must stay private, and a symlink to it in the socket's place.
    let precious = daemon.dir().join("precious");
    std::fs::write(&precious, b"secret").unwrap();
    set_mode(&precious, 0o600);
    std::fs::remove_file(&socket).unwrap();
    std::os::unix::fs::symlink(&precious, &socket).unwrap();

    // allow_uids makes the socket 0666 on reload.
    let config = std::fs::read_to_string(daemon.config_path()).unwrap();
    std::fs::write(
        daemon.config_path(),
        format!("allow_uids = [{NOBODY}]\n{config}"),
    )
    .unwrap();
    let pid = Pid::from_raw(daemon.pid() as i32).expect("pid");
    kill_process(pid, Signal::HUP).expect("SIGHUP");
    let lines = wait::for_log(
        &daemon,
        &["cannot set the socket's mode after reload"],
        1,
        Duration::from_secs(20),
    )
    .await;
    assert!(lines[0].contains("a symbolic link"), "{}", lines[0]);
    let mode = std::fs::metadata(&precious).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the reload changed the symlink's target");
}
