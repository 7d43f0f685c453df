//! `keyward completions SHELL` and `keyward man DIR`: shell completions and man pages
//! generated from the same clap definitions that parse the command line (clap_complete,
//! clap_mangen), so they never drift from `--help`. `scripts/install` and the Debian package
//! install what these print.

use std::path::{Path, PathBuf};

use clap::Args;
use clap_complete::Shell;

use crate::output::{EXIT_OK, Failure};

pub const COMPLETIONS_AFTER_HELP: &str = "\
Where to put them (scripts/install and the package do this):
  bash  keyward completions bash > ~/.local/share/bash-completion/completions/keyward
  zsh   keyward completions zsh > ~/.local/share/zsh/site-functions/_keyward  (in $fpath)
  fish  keyward completions fish > ~/.config/fish/completions/keyward.fish";

pub const MAN_AFTER_HELP: &str = "\
Writes keyward.1 and one page per subcommand (keyward-keys-generate.1, ...) into DIR:
  keyward man ~/.local/share/man/man1 && man keyward-sign";

/// `keyward completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `keyward man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write the pages into (created if missing)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Prints the completion script of `shell` for `command` on stdout.
pub fn completions(mut command: clap::Command, args: CompletionsArgs) -> Result<i32, Failure> {
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
    Ok(EXIT_OK)
}

/// Writes the man page of `command` and of every subcommand into `args.dir`.
pub fn man(command: clap::Command, args: ManArgs) -> Result<i32, Failure> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", args.dir.display())))?;
    let mut command = command;
    command.build();
    let written = write_pages(&command, &args.dir)?;
    println!("wrote {written} man page(s) into {}", args.dir.display());
    Ok(EXIT_OK)
}

/// The page of `command` (named after its full path, `keyward-keys-generate.1`) and of its
/// subcommands; returns how many were written.
fn write_pages(command: &clap::Command, dir: &Path) -> Result<usize, Failure> {
    let page = dir.join(format!(
        "{}.1",
        command.get_display_name().unwrap_or(command.get_name())
    ));
    let mut text = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut text)
        .map_err(|e| Failure::new(format!("cannot render {}: {e}", page.display())))?;
    std::fs::write(&page, text)
        .map_err(|e| Failure::new(format!("cannot write {}: {e}", page.display())))?;
    let mut written = 1;
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        written += write_pages(sub, dir)?;
    }
    Ok(written)
}
