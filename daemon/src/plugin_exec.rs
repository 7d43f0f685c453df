//! Whether a plugin executable is safe to run: a regular executable file, owned by root or the
//! daemon's uid, writable by nobody else, in directories nobody else can write. Checked when a
//! backend is built (and by `--check-config`) and again before every start of its process
//! ([`crate::plugin_host`]), so a binary swapped or loosened while the daemon runs is refused
//! and its backend stays down.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Refuses a plugin executable that is not a regular executable file owned by root or the
/// daemon's user, or that others could write, or that lies in a directory others could write
/// (see [`check_directories`]). Run at start-up and again before every restart, so a binary
/// swapped or loosened while the daemon runs is never started.
pub fn check_executable(program: &Path) -> Result<PathBuf, String> {
    let resolved = if program.components().count() == 1 {
        find_in_path(program).ok_or_else(|| {
            format!(
                "plugin executable {} is not on PATH; give its absolute path",
                program.display()
            )
        })?
    } else {
        program.to_path_buf()
    };
    let shown = resolved.display();
    let meta =
        std::fs::metadata(&resolved).map_err(|e| format!("plugin executable {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("plugin executable {shown} is not a regular file"));
    }
    if meta.mode() & 0o111 == 0 {
        return Err(format!(
            "plugin executable {shown} is not executable (chmod +x it)"
        ));
    }
    let own_uid = rustix::process::getuid().as_raw();
    if meta.uid() != 0 && meta.uid() != own_uid {
        return Err(format!(
            "plugin executable {shown} belongs to uid {}; it must belong to root or to this daemon's uid {own_uid}",
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "plugin executable {shown} is writable by group or others (mode {:04o}); run `chmod go-w {shown}`",
            meta.permissions().mode() & 0o7777
        ));
    }
    check_directories(&resolved, own_uid)?;
    Ok(resolved)
}

/// Every directory above `program`, as written and with symlinks resolved, must belong to root
/// or `own_uid` and be writable by nobody else (a sticky directory such as `/tmp` is fine:
/// others cannot rename or remove what they do not own in it); otherwise someone else could
/// put another program in its place.
fn check_directories(program: &Path, own_uid: u32) -> Result<(), String> {
    let absolute = if program.is_absolute() {
        program.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("plugin executable {}: {e}", program.display()))?
            .join(program)
    };
    let canonical = std::fs::canonicalize(&absolute)
        .map_err(|e| format!("plugin executable {}: {e}", program.display()))?;
    for path in [&absolute, &canonical] {
        for dir in path.ancestors().skip(1) {
            let meta = std::fs::metadata(dir).map_err(|e| {
                format!(
                    "plugin executable {}: its directory {}: {e}",
                    program.display(),
                    dir.display()
                )
            })?;
            let mode = meta.permissions().mode();
            if meta.uid() != 0 && meta.uid() != own_uid {
                return Err(format!(
                    "plugin executable {} is in {}, which belongs to uid {}; its directories must belong to root or to this daemon's uid {own_uid}",
                    program.display(),
                    dir.display(),
                    meta.uid()
                ));
            }
            if mode & 0o022 != 0 && mode & 0o1000 == 0 {
                return Err(format!(
                    "plugin executable {} is in {}, which is writable by group or others (mode {:04o}); run `chmod go-w {}`",
                    program.display(),
                    dir.display(),
                    mode & 0o7777,
                    dir.display()
                ));
            }
        }
    }
    Ok(())
}

fn find_in_path(program: &Path) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            check_executable(&path)
                .unwrap_err()
                .contains("not executable")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o757)).unwrap();
        assert!(
            check_executable(&path)
                .unwrap_err()
                .contains("writable by group or others")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_executable(&path).unwrap(), path);
        assert!(
            check_executable(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
        assert!(
            check_executable(Path::new("surely-not-on-path-xyz"))
                .unwrap_err()
                .contains("not on PATH")
        );
    }

    #[test]
    fn directories_others_can_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("plugins");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("p");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_executable(&path).unwrap(), path);
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = check_executable(&path).unwrap_err();
        assert!(
            error.contains(&format!(
                "is in {}, which is writable by group or others (mode 0777)",
                sub.display()
            )),
            "{error}"
        );
        // Sticky, like /tmp: others cannot replace what is not theirs.
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(check_executable(&path).unwrap(), path);
        // Through a symlink in a safe directory to a file in an unsafe one.
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o775)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let error = check_executable(&link).unwrap_err();
        assert!(error.contains("(mode 0775)"), "{error}");
    }
}
