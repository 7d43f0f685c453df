//! `keyward notation install`: puts the `notation-keyward` plugin where notation finds it.
//!
//! Notation looks for `<plugins>/<name>/notation-<name>`, a regular executable file (symlinks
//! are not supported), where `<plugins>` is `$NOTATION_LIBEXEC/plugins`, else the config
//! directory's `plugins` (`$NOTATION_CONFIG`, else `$XDG_CONFIG_HOME/notation`, else
//! `~/.config/notation`). The plugin binary is found next to the running `keyward`.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::output::{EXIT_OK, Failure, io_reason, quoted, write_stdout};

/// The plugin's name: notation runs `notation-keyward` from `<plugins>/keyward/`.
pub const PLUGIN_NAME: &str = "keyward";
/// The plugin executable's file name.
pub const PLUGIN_EXECUTABLE: &str = "notation-keyward";

pub const AFTER_HELP: &str = "\
The plugin directory is $NOTATION_LIBEXEC/plugins, else $NOTATION_CONFIG/plugins, else
$XDG_CONFIG_HOME/notation/plugins, else ~/.config/notation/plugins (or --dir).

Then register an agent key with notation and sign:
  keyward notation install
  notation key add --plugin keyward --id signer --plugin-config socket=$KEYWARD_SOCK --default signer
  notation sign registry.example.com/app@sha256:...";

/// `keyward notation ...`
#[derive(Debug, Subcommand)]
pub enum NotationCommand {
    /// Install the notation-keyward plugin into notation's plugin directory
    #[command(after_help = AFTER_HELP)]
    Install(InstallArgs),
}

/// `keyward notation install`
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The plugin directory [default: see below]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The plugin binary to install [default: notation-keyward next to this keyward]
    #[arg(long, value_name = "FILE")]
    plugin: Option<PathBuf>,
}

/// Runs `keyward notation ...`.
pub fn run(command: NotationCommand) -> Result<i32, Failure> {
    match command {
        NotationCommand::Install(args) => install(args),
    }
}

/// Notation's plugin directory from the environment (`var` reads a variable).
pub fn plugin_dir(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, Failure> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(libexec) = set("NOTATION_LIBEXEC") {
        return Ok(libexec.join("plugins"));
    }
    if let Some(config) = set("NOTATION_CONFIG") {
        return Ok(config.join("plugins"));
    }
    if let Some(xdg) = set("XDG_CONFIG_HOME") {
        return Ok(xdg.join("notation").join("plugins"));
    }
    match set("HOME") {
        Some(home) => Ok(home.join(".config").join("notation").join("plugins")),
        None => Err(Failure::new(
            "cannot find notation's plugin directory: HOME, XDG_CONFIG_HOME and NOTATION_LIBEXEC are unset; give --dir",
        )),
    }
}

fn install(args: InstallArgs) -> Result<i32, Failure> {
    let source = match args.plugin {
        Some(path) => path,
        None => {
            let exe = std::env::current_exe().map_err(|e| {
                Failure::new(format!(
                    "cannot find the running keyward executable ({}); give --plugin",
                    io_reason(&e)
                ))
            })?;
            exe.with_file_name(PLUGIN_EXECUTABLE)
        }
    };
    let bytes = std::fs::read(&source).map_err(|e| {
        Failure::new(format!(
            "cannot read the plugin {}: {}; build it (cargo build --bins) or give --plugin",
            quoted(&source),
            io_reason(&e)
        ))
    })?;
    let root = match args.dir {
        Some(dir) => dir,
        None => plugin_dir(|name| std::env::var_os(name))?,
    };
    let dir = root.join(PLUGIN_NAME);
    let target = copy_into(&bytes, &dir)?;
    let text = format!(
        "installed {} (plugin {PLUGIN_NAME:?}); next: notation key add --plugin {PLUGIN_NAME} --id KEY_ID [--plugin-config socket=PATH] NAME\n",
        target.display()
    );
    write_stdout(text.as_bytes())?;
    Ok(EXIT_OK)
}

/// Writes `bytes` to `<dir>/notation-keyward` as a regular 0755 file, replacing any earlier
/// one atomically (temporary file, rename).
fn copy_into(bytes: &[u8], dir: &Path) -> Result<PathBuf, Failure> {
    let failed = |what: &str, path: &Path, e: std::io::Error| {
        Failure::new(format!("cannot {what} {}: {}", quoted(path), io_reason(&e)))
    };
    std::fs::create_dir_all(dir).map_err(|e| failed("create the directory", dir, e))?;
    let target = dir.join(PLUGIN_EXECUTABLE);
    let tmp = dir.join(format!(".{PLUGIN_EXECUTABLE}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&tmp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        // The umask may have taken bits away: notation needs it executable.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed("write", &target, e));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_dir_follows_notation() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| OsString::from(v))
            }
        }
        let all: [(&str, &str); 4] = [
            ("NOTATION_LIBEXEC", "/lx"),
            ("NOTATION_CONFIG", "/cfg"),
            ("XDG_CONFIG_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(plugin_dir(env(&all)).unwrap(), Path::new("/lx/plugins"));
        assert_eq!(
            plugin_dir(env(&all[1..])).unwrap(),
            Path::new("/cfg/plugins")
        );
        assert_eq!(
            plugin_dir(env(&all[2..])).unwrap(),
            Path::new("/xdg/notation/plugins")
        );
        assert_eq!(
            plugin_dir(env(&all[3..])).unwrap(),
            Path::new("/home/u/.config/notation/plugins")
        );
        assert_eq!(
            plugin_dir(env(&[("NOTATION_LIBEXEC", ""), ("HOME", "/h")])).unwrap(),
            Path::new("/h/.config/notation/plugins")
        );
        assert!(plugin_dir(env(&[])).is_err());
    }

    #[test]
    fn copy_makes_a_0755_regular_file_and_replaces() {
        let dir = tempfile_dir();
        let target = copy_into(b"one", &dir.join("keyward")).unwrap();
        let target2 = copy_into(b"two", &dir.join("keyward")).unwrap();
        assert_eq!(target, target2);
        let meta = std::fs::symlink_metadata(&target).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "keyward-notation-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
