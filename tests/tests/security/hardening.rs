//! Process hardening, seen from outside the daemon: not dumpable (its `/proc` files belong to
//! root and a same-uid process cannot read them), no core files, locked memory (or one warning
//! saying why not); secret files readable by others are refused; and a trace-level log of
//! generating, signing and attaching with passphrase-encrypted keys holds no secret.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyward_sdk::{KeySpec, SignOptions};
use keyward_tests::users::{CliCopy, NOBODY};
use keyward_tests::{
    COMMAND_TIMEOUT, DaemonBuilder, random_bytes, run_cli, run_with_timeout, set_mode, stderr_text,
    toml_string,
};

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A line of `/proc/<pid>/<file>` starting with `prefix`, without the prefix.
fn proc_line(pid: u32, file: &str, prefix: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/{file}")).expect("read /proc");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in /proc/{pid}/{file}:\n{text}"))
        .trim()
        .to_string()
}

/// Runs `setpriv` as nobody (`RLIMIT_MEMLOCK` 64 KiB) with `args`.
fn spawn_as_nobody(args: &[&std::ffi::OsStr], log: &Path) -> Running {
    let log = fs::File::create(log).expect("create log");
    let child = Command::new("prlimit")
        .arg("--memlock=65536:65536")
        .arg("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
        ])
        .args(args)
        .env("KEYWARD_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn prlimit/setpriv");
    Running(child)
}

#[test]
fn a_daemon_of_another_uid_is_not_dumpable_and_makes_no_core_files() {
    let keywardd = CliCopy::of("keywardd");
    // A backend in a plugin process too: execve resets the dumpable flag, so the plugin must
    // set it again itself.
    let plugin = CliCopy::of("keyward-plugin-local");
    let dir = tempfile::tempdir().unwrap();
    set_mode(dir.path(), 0o755);
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    rustix::fs::chown(
        &home,
        Some(rustix::fs::Uid::from_raw(NOBODY)),
        Some(rustix::fs::Gid::from_raw(NOBODY)),
    )
    .expect("chown to nobody");
    set_mode(&home, 0o700);
    let path = |name: &str| toml_string(home.join(name).to_str().unwrap());
    let config = dir.path().join("keywardd.toml");
    fs::write(
        &config,
        format!(
            "socket = {}\nstate_dir = {}\n[[backend]]\nname = \"local\"\ntype = \"local\"\npath = {}\n\
             [[backend]]\nname = \"iso\"\ntype = \"external\"\ncommand = [{}]\npath = {}\n",
            path("agent.sock"),
            path("state"),
            path("keys"),
            toml_string(plugin.path().to_str().unwrap()),
            path("iso-keys")
        ),
    )
    .unwrap();
    set_mode(&config, 0o644);
    let log = dir.path().join("keywardd.log");
    let daemon = spawn_as_nobody(
        &[
            keywardd.path().as_os_str(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        &log,
    );
    let pid = daemon.0.id();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !home.join("agent.sock").exists() {
        assert!(
            Instant::now() < deadline,
            "keywardd did not start:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The process is keywardd, running as nobody.
    assert!(proc_line(pid, "status", "Name:").starts_with("keywardd"));
    assert!(proc_line(pid, "status", "Uid:").starts_with(&NOBODY.to_string()));

    // A control process of the same uid, dumpable as usual.
    let control = spawn_as_nobody(
        &["sleep".as_ref(), "60".as_ref()],
        &dir.path().join("sleep.log"),
    );
    let owner = |pid: u32| fs::metadata(format!("/proc/{pid}/environ")).unwrap().uid();
    let deadline = Instant::now() + Duration::from_secs(5);
    while owner(control.0.id()) != NOBODY && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10)); // until setpriv has switched uid
    }
    assert_eq!(owner(control.0.id()), NOBODY, "the control is dumpable");
    assert_eq!(
        owner(pid),
        0,
        "keywardd's /proc files belong to its uid: it is dumpable"
    );
    // So a process of the same uid cannot read its environment (or memory).
    let read_as_nobody = |pid: u32| {
        let mut command = Command::new("setpriv");
        command
            .args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
            ])
            .args(["cat", &format!("/proc/{pid}/environ")]);
        run_with_timeout(command, None, COMMAND_TIMEOUT)
    };
    assert!(read_as_nobody(control.0.id()).status.success());
    let output = read_as_nobody(pid);
    assert!(
        !output.status.success(),
        "nobody read keywardd's environment"
    );
    assert!(
        stderr_text(&output).contains("Permission denied"),
        "{}",
        stderr_text(&output)
    );

    // The plugin process: not dumpable either, and no core files.
    let plugin_pid = keyward_tests::plugins::children(pid)
        .into_iter()
        .find(|p| p.cmdline.contains("keyward-plugin-local"))
        .unwrap_or_else(|| {
            panic!(
                "no plugin process under keywardd:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .pid;
    assert_eq!(
        owner(plugin_pid),
        0,
        "the plugin's /proc files belong to its uid: it is dumpable"
    );
    assert!(
        !read_as_nobody(plugin_pid).status.success(),
        "nobody read the plugin's environment"
    );
    let plugin_core = proc_line(plugin_pid, "limits", "Max core file size");
    assert!(
        plugin_core.split_whitespace().take(2).eq(["0", "0"]),
        "plugin core limit: {plugin_core}"
    );

    let core = proc_line(pid, "limits", "Max core file size");
    assert!(
        core.split_whitespace().take(2).eq(["0", "0"]),
        "core limit: {core}"
    );
    assert_eq!(proc_line(pid, "status", "VmLck:"), "0 kB");
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches(
            "memory is not locked: RLIMIT_MEMLOCK is 65536 bytes and keywardd lacks CAP_IPC_LOCK"
        )
        .count(),
        1,
        "not one warning about locked memory:\n{text}"
    );
}

/// Whether this process (and so a daemon it starts) may lock all its memory.
fn can_lock_memory() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    const CAP_IPC_LOCK: u32 = 14;
    caps & (1 << CAP_IPC_LOCK) != 0
        || rustix::process::getrlimit(rustix::process::Resource::Memlock)
            .current
            .is_none()
}

#[tokio::test]
async fn a_daemon_allowed_to_lock_memory_locks_it() {
    let daemon = DaemonBuilder::new().start().await;
    let pid = daemon.pid();
    let core = proc_line(pid, "limits", "Max core file size");
    assert!(core.split_whitespace().take(2).eq(["0", "0"]), "{core}");
    let locked = proc_line(pid, "status", "VmLck:");
    let warned = daemon.log().contains("memory is not locked");
    if can_lock_memory() {
        assert_ne!(locked, "0 kB", "no locked memory:\n{}", daemon.log());
        assert!(!warned, "{}", daemon.log());
    } else {
        assert_eq!(locked, "0 kB");
        assert!(warned, "no warning:\n{}", daemon.log());
    }
}

#[test]
fn a_passphrase_file_readable_by_others_is_refused() {
    let builder = DaemonBuilder::new();
    let file = builder.dir().join("passphrase");
    fs::write(&file, "a passphrase\n").unwrap();
    set_mode(&file, 0o644);
    let output = builder
        .extra_toml(&format!(
            "passphrase_file = {}",
            toml_string(file.to_str().unwrap())
        ))
        .run_to_exit(Duration::from_secs(10));
    let stderr = stderr_text(&output);
    assert!(
        !output.status.success(),
        "started with a 0644 passphrase file"
    );
    assert!(
        stderr.contains(&format!("chmod 600 {}", file.display())),
        "{stderr}"
    );
}

/// Every base64 body line of every PEM file in `dirs`.
fn pem_bodies(dirs: &[PathBuf]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for dir in dirs {
        for entry in fs::read_dir(dir).expect("read key dir") {
            let path = entry.unwrap().path();
            let text = fs::read_to_string(&path).unwrap_or_default();
            for line in text
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
            {
                found.push((path.clone(), line.to_string()));
            }
        }
    }
    found
}

#[tokio::test]
async fn a_trace_log_holds_no_passphrase_or_key_bytes() {
    let in_process = format!("pw-env-{}", hex::encode(random_bytes(12)));
    let in_plugin = format!("pw-file-{}", hex::encode(random_bytes(12)));
    let builder = DaemonBuilder::new();
    let plugin_keys = builder.dir().join("plugin-keys");
    let passphrase_file = builder.dir().join("plugin-passphrase");
    fs::write(&passphrase_file, format!("{in_plugin}\n")).unwrap();
    set_mode(&passphrase_file, 0o600);
    let toml = format!(
        "passphrase_env = \"TRACE_TEST_PASSPHRASE\"\n\n[[backend]]\nname = \"isolated\"\ntype = \"local\"\nisolation = \"process\"\npath = {}\npassphrase_file = {}\n",
        toml_string(plugin_keys.to_str().unwrap()),
        toml_string(passphrase_file.to_str().unwrap())
    );
    let mut daemon = builder
        .extra_toml(&toml)
        .env("TRACE_TEST_PASSPHRASE", &in_process)
        .env("KEYWARD_LOG", "trace")
        .start()
        .await;
    let client = daemon.client().await;
    for backend in ["local", "isolated"] {
        for spec in [KeySpec::EcP256, KeySpec::Rsa2048, KeySpec::Ed25519] {
            let id = format!("{backend}-{}", spec.name());
            client
                .generate_key(backend, &id, spec)
                .await
                .expect("generate");
            client
                .sign_message(&id, b"trace me not", &SignOptions::default())
                .await
                .expect("sign");
        }
        let id = format!("{backend}-ec-p256");
        let output = run_cli(
            &daemon,
            [
                "cert",
                "issue",
                "--key",
                &id,
                "--subject",
                "C=US,ST=WA,O=Example,CN=trace",
            ],
        );
        assert!(
            output.status.success(),
            "cert issue: {}",
            stderr_text(&output)
        );
    }
    drop(client);
    daemon.restart().await;
    daemon
        .client()
        .await
        .sign_message(
            "isolated-ed25519",
            b"after restart",
            &SignOptions::default(),
        )
        .await
        .expect("sign after restart (keys decrypted again)");
    assert!(daemon.terminate().await.success());

    let log = daemon.log();
    assert!(
        log.contains(" TRACE "),
        "KEYWARD_LOG=trace logged nothing at trace level"
    );
    for secret in [&in_process, &in_plugin] {
        assert!(!log.contains(secret.as_str()), "the log holds a passphrase");
    }
    let bodies = pem_bodies(&[daemon.keys_dir(), plugin_keys]);
    let files: std::collections::BTreeSet<_> = bodies.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(files.len(), 6, "key files: {files:?}");
    for (file, line) in bodies {
        assert!(
            !log.contains(&line),
            "the log holds a line of {}: {line}",
            file.display()
        );
    }
    for (file, _) in pem_bodies(&[daemon.keys_dir()]) {
        let text = fs::read_to_string(&file).unwrap();
        assert!(
            text.contains("ENCRYPTED PRIVATE KEY"),
            "{} is not encrypted",
            file.display()
        );
    }
}
