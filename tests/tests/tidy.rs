//! The dependency rules of ARCHITECTURE.md, checked on the real `Cargo.toml` files:
//! a plugin depends on keyward-plugin-api alone (never the daemon or another plugin), the CLI
//! on the SDK (and proto) alone, the SDK and plugin-api on proto alone, the PKCS#11 module on
//! the SDK (and proto) alone; `unsafe` nowhere but in the PKCS#11 module's `ffi` module; the
//! daemon links no backend but `local` (and `pkcs11` only as an optional dependency behind the
//! off-by-default `pkcs11-in-process` feature); every plugin crate has a `keyward-plugin-<type>`
//! binary.

use std::path::{Path, PathBuf};

/// Which keyward crates a crate may depend on, by the crate's folder.
fn allowed_keyward_deps(folder: &str) -> Option<&'static [&'static str]> {
    Some(match folder {
        "proto" => &[],
        "plugins/api" => &["keyward-proto"],
        "sdk" => &["keyward-proto"],
        "cli" => &["keyward-sdk", "keyward-proto"],
        "pkcs11-module" => &["keyward-sdk", "keyward-proto"],
        // keyward-plugin-pkcs11 is allowed only as daemon_violations says; keyward-sdk only for
        // its tests.
        "daemon" => &[
            "keyward-proto",
            "keyward-plugin-api",
            "keyward-plugin-local",
            "keyward-plugin-pkcs11",
            "keyward-sdk",
        ],
        f if f.starts_with("plugins/") => &["keyward-plugin-api"],
        _ => return None,
    })
}

/// The keyward crates a manifest depends on (in any dependency table) that it may not.
fn violations(folder: &str, manifest: &str) -> Vec<String> {
    let Some(allowed) = allowed_keyward_deps(folder) else {
        return Vec::new();
    };
    let manifest: toml::Table = toml::from_str(manifest).expect("a valid Cargo.toml");
    let mut tables: Vec<(&str, &toml::Value)> = Vec::new();
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(table) = manifest.get(section) {
            tables.push((section, table));
        }
    }
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        for target in targets.values() {
            for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
                if let Some(table) = target.get(section) {
                    tables.push((section, table));
                }
            }
        }
    }
    let mut bad = Vec::new();
    for (section, table) in tables {
        for (name, spec) in table.as_table().into_iter().flatten() {
            let package = spec.get("package").and_then(|p| p.as_str()).unwrap_or(name);
            if package.starts_with("keyward-") && !allowed.contains(&package) {
                bad.push(format!("{folder}: [{section}] {package}"));
            }
        }
    }
    bad
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn crate_folders(root: &Path) -> Vec<String> {
    let mut folders = vec![
        "proto".to_string(),
        "sdk".to_string(),
        "cli".to_string(),
        "daemon".to_string(),
        "pkcs11-module".to_string(),
    ];
    for entry in std::fs::read_dir(root.join("plugins")).expect("plugins/ exists") {
        let entry = entry.expect("readable plugins/");
        if entry.path().join("Cargo.toml").exists() {
            folders.push(format!("plugins/{}", entry.file_name().to_string_lossy()));
        }
    }
    folders
}

#[test]
fn crates_keep_the_dependency_rules() {
    let root = workspace_root();
    let mut bad = Vec::new();
    let mut checked = 0;
    for folder in crate_folders(&root) {
        let manifest = std::fs::read_to_string(root.join(&folder).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{folder}/Cargo.toml: {e}"));
        if allowed_keyward_deps(&folder).is_some() {
            checked += 1;
        }
        bad.extend(violations(&folder, &manifest));
    }
    assert!(
        checked >= 5,
        "expected to check at least 5 crates, checked {checked}"
    );
    assert!(
        bad.is_empty(),
        "forbidden dependencies:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_crate_inherits_the_workspace_lints() {
    let root = workspace_root();
    let mut folders = crate_folders(&root);
    folders.extend(["tests".to_string(), "bench".to_string()]);
    for folder in folders {
        let manifest: toml::Table = toml::from_str(
            &std::fs::read_to_string(root.join(&folder).join("Cargo.toml")).unwrap(),
        )
        .unwrap();
        if folder == PKCS11_MODULE {
            check_pkcs11_module_lints(&root, &manifest);
            continue;
        }
        let inherits = manifest
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(|w| w.as_bool())
            == Some(true);
        assert!(
            inherits,
            "{folder}/Cargo.toml lacks `[lints] workspace = true`"
        );
    }
}

/// What breaks the daemon's rule: it links `local` and the plugin host; `pkcs11` only as an
/// optional dependency that the `pkcs11-in-process` feature alone enables and no default
/// feature turns on; the SDK only for its tests.
fn daemon_violations(manifest: &str) -> Vec<String> {
    let manifest: toml::Table = toml::from_str(manifest).expect("a valid Cargo.toml");
    let mut bad = Vec::new();
    let empty = toml::Table::new();
    let deps = manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .unwrap_or(&empty);
    for (name, spec) in deps {
        let package = spec.get("package").and_then(|p| p.as_str()).unwrap_or(name);
        let optional = spec.get("optional").and_then(|o| o.as_bool()) == Some(true);
        match package {
            "keyward-proto" | "keyward-plugin-api" | "keyward-plugin-local" => {}
            "keyward-plugin-pkcs11" if optional => {}
            "keyward-plugin-pkcs11" => bad.push(
                "daemon: keyward-plugin-pkcs11 must be optional (feature pkcs11-in-process)".into(),
            ),
            other if other.starts_with("keyward-") => {
                bad.push(format!("daemon: [dependencies] {other}"))
            }
            _ => {}
        }
    }
    let features = manifest
        .get("features")
        .and_then(|f| f.as_table())
        .unwrap_or(&empty);
    for (feature, enables) in features {
        let enables: Vec<&str> = enables
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let links_pkcs11 = enables.iter().any(|e| e.contains("keyward-plugin-pkcs11"));
        if links_pkcs11 && feature != "pkcs11-in-process" {
            bad.push(format!(
                "daemon: feature {feature} links keyward-plugin-pkcs11"
            ));
        }
        if feature == "default" && enables.contains(&"pkcs11-in-process") {
            bad.push("daemon: pkcs11-in-process is on by default".into());
        }
    }
    bad
}

#[test]
fn the_daemon_links_no_backend_but_local() {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("daemon/Cargo.toml")).unwrap();
    let bad = daemon_violations(&manifest);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let dev_only = manifest
        .split("[dev-dependencies]")
        .next()
        .is_some_and(|before| !before.contains("keyward-sdk"));
    assert!(dev_only, "daemon: keyward-sdk outside [dev-dependencies]");

    let checks = [
        ("[dependencies]\nkeyward-plugin-vault = \"0.1\"\n", 1),
        ("[dependencies]\nkeyward-plugin-pkcs11 = \"0.1\"\n", 1),
        (
            "[dependencies]\nkeyward-plugin-pkcs11 = { version = \"0.1\", optional = true }\n\
             [features]\ndefault = [\"pkcs11-in-process\"]\npkcs11-in-process = [\"dep:keyward-plugin-pkcs11\"]\n",
            1,
        ),
        (
            "[dependencies]\nkeyward-plugin-pkcs11 = { version = \"0.1\", optional = true }\n\
             [features]\nhsm = [\"dep:keyward-plugin-pkcs11\"]\n",
            1,
        ),
        (
            "[dependencies]\nkeyward-plugin-local = \"0.1\"\nkeyward-plugin-pkcs11 = { version = \"0.1\", optional = true }\n\
             [features]\npkcs11-in-process = [\"dep:keyward-plugin-pkcs11\"]\n",
            0,
        ),
    ];
    for (manifest, errors) in checks {
        assert_eq!(daemon_violations(manifest).len(), errors, "{manifest}");
    }
}

#[test]
fn every_plugin_crate_has_its_plugin_binary() {
    let root = workspace_root();
    let mut plugins = 0;
    for folder in crate_folders(&root) {
        if !folder.starts_with("plugins/") || folder == "plugins/api" {
            continue;
        }
        let manifest: toml::Table = toml::from_str(
            &std::fs::read_to_string(root.join(&folder).join("Cargo.toml")).unwrap(),
        )
        .unwrap();
        let package = manifest["package"]["name"].as_str().unwrap().to_string();
        assert!(
            package.starts_with("keyward-plugin-"),
            "{folder}: a plugin crate is named keyward-plugin-<type>, not {package}"
        );
        let bin = manifest
            .get("bin")
            .and_then(|b| b.as_array())
            .into_iter()
            .flatten()
            .find(|b| b.get("name").and_then(|n| n.as_str()) == Some(package.as_str()));
        let path = bin
            .and_then(|b| b.get("path").and_then(|p| p.as_str()))
            .unwrap_or_else(|| panic!("{folder}: no [[bin]] named {package}"));
        assert!(
            root.join(&folder).join(path).is_file(),
            "{folder}: the {package} binary's source {path} is missing"
        );
        plugins += 1;
    }
    assert!(
        plugins >= 7,
        "expected at least 7 plugin crates, found {plugins}"
    );
}

#[test]
fn the_checker_catches_forbidden_dependencies() {
    let plugin_on_daemon = "[dependencies]\nkeyward-plugin-api = \"0.1\"\nkeyward-daemon = { path = \"../../daemon\" }\n";
    assert_eq!(
        violations("plugins/pkcs11", plugin_on_daemon),
        vec!["plugins/pkcs11: [dependencies] keyward-daemon"]
    );
    let cli_on_plugin =
        "[dev-dependencies]\nlocal = { package = \"keyward-plugin-local\", path = \"x\" }\n";
    assert_eq!(
        violations("cli", cli_on_plugin),
        vec!["cli: [dev-dependencies] keyward-plugin-local"]
    );
    let plugin_on_other_plugin =
        "[target.'cfg(unix)'.dependencies]\nkeyward-plugin-local = \"0.1\"\n";
    assert_eq!(violations("plugins/vault", plugin_on_other_plugin).len(), 1);
    assert!(violations("cli", "[dependencies]\nkeyward-sdk = \"0.1\"\n").is_empty());
}

/// The one crate allowed `unsafe` (a PKCS#11 module exports C functions), and only in its
/// `ffi` module.
const PKCS11_MODULE: &str = "pkcs11-module";

/// The PKCS#11 module's `[lints]` are the workspace's with `unsafe_code = "deny"` instead of
/// `"forbid"` (a module may then allow it), and nothing else differs.
fn check_pkcs11_module_lints(root: &Path, manifest: &toml::Table) {
    let workspace: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let mut expected = workspace["workspace"]["lints"].clone();
    expected["rust"]["unsafe_code"] = toml::Value::String("deny".into());
    assert_eq!(
        manifest.get("lints"),
        Some(&expected),
        "{PKCS11_MODULE}/Cargo.toml: [lints] must be the workspace's with unsafe_code = \"deny\""
    );
}

/// Rust files under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn unsafe_code_lives_only_in_the_pkcs11_modules_ffi_module_with_a_safety_comment() {
    let src = workspace_root().join(PKCS11_MODULE).join("src");
    let in_ffi = |path: &Path| {
        path == src.join("ffi.rs")
            || path.starts_with(src.join("ffi"))
            || path == src.join("ffi_tests.rs")
    };
    let mut bad = Vec::new();
    let mut unsafe_blocks = 0;
    for path in rust_files(&src) {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let uses_unsafe = code.contains("unsafe") || code.contains("allow(unsafe_code)");
            if uses_unsafe && !in_ffi(&path) {
                bad.push(format!(
                    "{}:{}: unsafe outside the ffi module",
                    path.display(),
                    i + 1
                ));
            }
            // Every unsafe block says why it is sound, on one of the lines just above it.
            if code.contains("unsafe {") {
                unsafe_blocks += 1;
                let justified = lines[i.saturating_sub(3)..i]
                    .iter()
                    .chain(std::iter::once(line))
                    .any(|l| l.contains("SAFETY"));
                if !justified {
                    bad.push(format!(
                        "{}:{}: unsafe block without a SAFETY comment",
                        path.display(),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(
        unsafe_blocks > 0,
        "expected the ffi module to have unsafe blocks"
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
