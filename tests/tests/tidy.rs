//! The dependency rules of ARCHITECTURE.md, checked on the real `Cargo.toml` files:
//! a plugin depends on keyward-plugin-api alone (never the daemon or another plugin), the CLI
//! on the SDK (and proto) alone, the SDK and plugin-api on proto alone, the PKCS#11 module on
//! the SDK (and proto) alone; and `unsafe` nowhere but in the PKCS#11 module's `ffi` module.

use std::path::{Path, PathBuf};

/// Which keyward crates a crate may depend on, by the crate's folder.
fn allowed_keyward_deps(folder: &str) -> Option<&'static [&'static str]> {
    Some(match folder {
        "proto" => &[],
        "plugins/api" => &["keyward-proto"],
        "sdk" => &["keyward-proto"],
        "cli" => &["keyward-sdk", "keyward-proto"],
        "pkcs11-module" => &["keyward-sdk", "keyward-proto"],
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
