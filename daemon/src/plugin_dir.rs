//! Where keywardd finds `keyward-plugin-<type>` executables.
//!
//! In the config's `plugin_dir` when it is set; otherwise in the directory of the running
//! keywardd (a build tree, `cargo install`, a tarball), then in `<prefix>/libexec/keyward`
//! when keywardd is `<prefix>/bin/keywardd` (`/usr/local/bin/keywardd` ->
//! `/usr/local/libexec/keyward`, the layout an install uses: issue #19). The type
//! is checked to be a plain name when the config is read, so the file name cannot leave the
//! directory.

use std::path::{Path, PathBuf};

/// The executable of backend type `backend_type`.
pub fn executable_name(backend_type: &str) -> String {
    format!("keyward-plugin-{backend_type}")
}

/// The directories to look in, in order.
pub fn search_dirs(configured: Option<&Path>) -> Vec<PathBuf> {
    match configured {
        Some(dir) => vec![dir.to_path_buf()],
        None => match std::env::current_exe().ok() {
            Some(exe) => default_dirs(&exe),
            None => vec![PathBuf::from(".")],
        },
    }
}

/// The default directories for a keywardd at `exe`.
fn default_dirs(exe: &Path) -> Vec<PathBuf> {
    let Some(dir) = exe.parent() else {
        return vec![PathBuf::from(".")];
    };
    let mut dirs = vec![dir.to_path_buf()];
    if dir.file_name().is_some_and(|name| name == "bin")
        && let Some(prefix) = dir.parent()
    {
        dirs.push(prefix.join("libexec/keyward"));
    }
    dirs
}

/// The first `keyward-plugin-<type>` in `dirs`; the error names the executable, where it was
/// looked for and how to install it.
pub fn find(backend_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, String> {
    let name = executable_name(backend_type);
    dirs.iter()
        .map(|dir| dir.join(&name))
        .find(|path| path.exists())
        .ok_or_else(|| {
            let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            format!(
                "{name} is not installed (looked in {}); install {name} (scripts/install, or the keyward-plugins package), or set plugin_dir to the directory that holds it",
                looked.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_to_keywardd_then_libexec_under_the_prefix() {
        assert_eq!(
            default_dirs(Path::new("/usr/local/bin/keywardd")),
            [
                PathBuf::from("/usr/local/bin"),
                PathBuf::from("/usr/local/libexec/keyward")
            ]
        );
        assert_eq!(
            default_dirs(Path::new("/home/me/target/debug/keywardd")),
            [PathBuf::from("/home/me/target/debug")]
        );
        assert_eq!(
            search_dirs(Some(Path::new("/opt/kw/plugins"))),
            [PathBuf::from("/opt/kw/plugins")]
        );
    }

    #[test]
    fn a_missing_plugin_names_the_binary_and_the_places() {
        let dir = tempfile::tempdir().unwrap();
        let err = find("pkcs11", &[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            err.starts_with("keyward-plugin-pkcs11 is not installed"),
            "{err}"
        );
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains("install keyward-plugin-pkcs11 (scripts/install"),
            "{err}"
        );
        let plugin = dir.path().join("keyward-plugin-pkcs11");
        std::fs::write(&plugin, "").unwrap();
        assert_eq!(find("pkcs11", &[dir.path().to_path_buf()]).unwrap(), plugin);
    }
}
