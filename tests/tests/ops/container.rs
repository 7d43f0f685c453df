//! The Containerfile, checked without a container engine (there is none on the test machine):
//! every path it copies from the build context exists, the build stage's `scripts/install`
//! prefix is what the runtime stage copies and holds the entrypoint and the plugins, the
//! runtime stage installs a Debian package for every library the binaries link, it runs as a
//! user that is not root, and the entrypoint binary runs with the entrypoint's arguments
//! (`--check-config` on the container's config).

use std::collections::BTreeSet;
use std::process::Command;

use keyward_tests::{stderr_text, stdout_text};

use crate::common;

/// The Containerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let text = std::fs::read_to_string(common::repo().join("Containerfile")).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// The Debian package that holds `lib` (as ldd names it), trying the path with and without
/// the /usr of a merged-/usr system.
fn package_of(lib: &str) -> Option<String> {
    let other = match lib.strip_prefix("/usr") {
        Some(rest) => rest.to_string(),
        None => format!("/usr{lib}"),
    };
    [lib, other.as_str()].iter().find_map(|path| {
        let output = Command::new("dpkg").args(["-S", path]).output().ok()?;
        output.status.success().then(|| {
            stdout_text(&output)
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
    })
}

#[test]
fn the_containerfile_copies_what_exists_installs_what_the_binaries_link_and_runs_unprivileged() {
    if !common::have("ldd", "Debian libc-bin") || !common::have("dpkg", "Debian dpkg") {
        return;
    }
    let steps = instructions();
    let repo = common::repo();
    // The build context's paths.
    for step in steps
        .iter()
        .filter(|s| s.starts_with("COPY ") && !s.contains("--from="))
    {
        let parts: Vec<&str> = step.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                repo.join(source).exists(),
                "{step}: {source} is not in the repository"
            );
        }
    }
    // The build stage installs into the prefix the runtime stage copies.
    let install = steps
        .iter()
        .find(|s| s.starts_with("RUN scripts/install --prefix "))
        .expect("the build stage runs scripts/install --prefix");
    let prefix = install
        .trim_start_matches("RUN scripts/install --prefix ")
        .trim();
    let copy = steps
        .iter()
        .find(|s| s.starts_with("COPY --from=build "))
        .expect("the runtime stage copies the install");
    let parts: Vec<&str> = copy.split_whitespace().collect();
    assert_eq!(parts[2].trim_end_matches('/'), prefix, "{copy}");
    let destination = parts[3].trim_end_matches('/');

    // What scripts/install puts into that prefix holds the entrypoint and the plugins.
    let root = tempfile::tempdir().unwrap();
    let staged = root.path().join("prefix");
    let mut command = Command::new(repo.join("scripts/install"));
    command
        .arg("--prefix")
        .arg(&staged)
        .arg("--from")
        .arg(common::bin_dir());
    common::ok(command, "scripts/install");
    let entrypoint = steps
        .iter()
        .find(|s| s.starts_with("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let args: Vec<String> =
        serde_json::from_str(entrypoint.trim_start_matches("ENTRYPOINT ")).expect("exec form");
    let inside = args[0]
        .strip_prefix(&format!("{destination}/"))
        .unwrap_or_else(|| panic!("{} is not under {destination}", args[0]));
    let keywardd = staged.join(inside);
    assert!(keywardd.is_file(), "{}", keywardd.display());
    assert!(
        staged
            .join("libexec/keyward/keyward-plugin-pkcs11")
            .is_file()
    );

    // The runtime packages cover every library of every binary and plugin.
    let apt = steps
        .iter()
        .find(|s| s.contains("apt-get install"))
        .expect("the runtime stage installs packages");
    let installed: BTreeSet<&str> = apt.split_whitespace().collect();
    // In every Debian base image.
    let base = ["libc6", "libgcc-s1", "libstdc++6", "zlib1g"];
    let mut missing = BTreeSet::new();
    let binaries = std::fs::read_dir(staged.join("bin"))
        .unwrap()
        .chain(std::fs::read_dir(staged.join("libexec/keyward")).unwrap())
        .flatten()
        .map(|e| e.path());
    for binary in binaries {
        let output = Command::new("ldd").arg(&binary).output().unwrap();
        for line in stdout_text(&output).lines() {
            let Some(lib) = line
                .split("=>")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            else {
                continue;
            };
            let package = package_of(lib).unwrap_or_else(|| panic!("no package holds {lib}"));
            let package = package.split(',').next().unwrap().trim().to_string();
            let arch_free = package.split(':').next().unwrap().to_string();
            if !installed.contains(arch_free.as_str()) && !base.contains(&arch_free.as_str()) {
                missing.insert(format!("{arch_free} ({lib}, for {})", binary.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the Containerfile does not install: {missing:?}"
    );

    // It runs as a user of its own.
    let user = steps
        .iter()
        .rfind(|s| s.starts_with("USER "))
        .expect("a USER");
    assert!(
        !matches!(user.trim_start_matches("USER ").trim(), "root" | "0"),
        "{user}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("VOLUME ") && s.contains("/run/keyward"))
    );

    // The entrypoint, with its arguments and the container's config in place of
    // /etc/keyward/keywardd.toml, accepts the config.
    let config_copy = steps
        .iter()
        .find(|s| s.starts_with("COPY ") && s.ends_with(&args[2]))
        .unwrap_or_else(|| panic!("no COPY puts {}", args[2]));
    let config = repo.join(config_copy.split_whitespace().nth(1).unwrap());
    let output = keyward_tests::run_with_timeout(
        {
            let mut c = Command::new(&keywardd);
            c.args(&args[1..2]).arg(&config).arg("--check-config");
            c
        },
        None,
        common::DEADLINE,
    );
    assert!(
        output.status.success() && stdout_text(&output).contains("config OK"),
        "{}{}",
        stdout_text(&output),
        stderr_text(&output)
    );
}
