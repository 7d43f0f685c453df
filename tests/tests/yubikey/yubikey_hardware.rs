//! The `yubikey` backend on a **physical YubiKey**, when `KEYWARD_TEST_YUBIKEY_SERIAL` names
//! one (and `KEYWARD_TEST_YUBIKEY_PIN` its PIN, default 123456; the management key must be the
//! default). It overwrites the key in slot 82 and does nothing else. Without the variable it
//! says so and does nothing (no `skipped:` line: no hardware in CI is expected, not a missing
//! peer; the virtual-card suite in `yubikey.rs` never skips).

use std::fs;
use std::os::unix::fs::PermissionsExt;

use keyward_sdk::KeySpec;
use keyward_tests::conformance::check_key;
use keyward_tests::{DaemonBuilder, toml_string};

#[tokio::test(flavor = "multi_thread")]
async fn physical_yubikey_generate_and_sign_in_slot_82() {
    let Ok(serial) = std::env::var("KEYWARD_TEST_YUBIKEY_SERIAL") else {
        eprintln!(
            "hardware test not run: KEYWARD_TEST_YUBIKEY_SERIAL is not set (set it to a YubiKey's serial, `ykman list --serials`, to run it; it overwrites slot 82)"
        );
        return;
    };
    let serial: u32 = serial
        .trim()
        .parse()
        .expect("KEYWARD_TEST_YUBIKEY_SERIAL is a number");
    eprintln!("yubikey_hardware.rs: this test overwrites slot 82 of the YubiKey {serial}");
    let pin = std::env::var("KEYWARD_TEST_YUBIKEY_PIN").unwrap_or_else(|_| "123456".into());
    let builder = DaemonBuilder::new();
    let pin_path = builder.dir().join("yubikey.pin");
    fs::write(&pin_path, format!("{pin}\n")).unwrap();
    fs::set_permissions(&pin_path, fs::Permissions::from_mode(0o600)).unwrap();
    let daemon = builder
        .extra_toml(&format!(
            "[[backend]]\nname = \"hw\"\ntype = \"yubikey\"\nserial = {serial}\npin_file = {}\ntimeout = 60\n",
            toml_string(pin_path.to_str().unwrap())
        ))
        .start()
        .await;
    let client = daemon.client().await;
    let key = client
        .generate_key("hw", "82", KeySpec::EcP256)
        .await
        .unwrap_or_else(|e| panic!("generate in slot 82: {e}\n{}", daemon.log()));
    assert_eq!(key.info.key_spec(), KeySpec::EcP256);
    check_key(&client, "82").await;
}
