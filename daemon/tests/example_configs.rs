//! Every annotated config under examples/config/ must be accepted by `keywardd --check-config`
//! (which has every backend's plugin, built next to keywardd, check its settings), so the
//! examples cannot drift from what the daemon and the plugins parse.

use std::process::Command;

#[test]
fn example_configs_pass_check_config() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/config exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let output = Command::new(env!("CARGO_BIN_EXE_keywardd"))
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .output()
            .expect("keywardd runs");
        assert!(
            output.status.success(),
            "{} was rejected: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1, "no example config found in {}", dir.display());
}

#[test]
fn check_config_names_the_line_of_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[backend]]\nname = \"local\"\ntype = \"local\"\npath = \"/x\"\nsocket_mode = 1\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_keywardd"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The line of the setting at fault, not only of its table.
    assert!(stderr.contains("bad.toml line 5: "), "{stderr}");
    assert!(stderr.contains("unknown field `socket_mode`"), "{stderr}");
}
