//! Running a plugin executable once, in one of its one-shot modes: `--check-settings` (every
//! plugin; see `keyward_plugin_api::plugin::check`) and the pgp plugin's `--check-openpgp-cert`
//! ([`crate::openpgp`]).
//!
//! The program gets the same minimal environment a plugin process gets (but no variable its
//! settings name: a check reads no secret), its input on stdin, and a deadline; it is killed if
//! it overruns it. Its output is read up to a bound.

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use keyward_plugin_api::plugin::check::{CHECK_SETTINGS_ARG, CheckAnswer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::config::{BackendConfig, ConfigError};

/// How long a one-shot mode may take.
pub const ONE_SHOT_DEADLINE: Duration = Duration::from_secs(10);
/// The most a one-shot mode may print on stdout.
const MAX_OUTPUT: u64 = 4 << 20;

/// What a one-shot run printed and how it ended.
#[derive(Debug)]
pub struct OneShotOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout (at most 4 MiB).
    pub stdout: Vec<u8>,
    /// The last line of its stderr, for messages.
    pub stderr_tail: String,
}

/// Runs `program args...` with `input` on stdin, within `deadline`.
pub async fn run_one_shot(
    program: &Path,
    args: &[String],
    input: &[u8],
    deadline: Duration,
) -> Result<OneShotOutput, String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(base_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = program.display();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(format!("cannot talk to {shown}: no pipes"));
    };
    let run = async {
        // A program that does not read its stdin must not block the write: ignore EPIPE.
        let write = async {
            let _ = stdin.write_all(input).await;
            drop(stdin);
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut stdout = stdout.take(MAX_OUTPUT);
        let mut stderr = stderr.take(64 << 10);
        let read_out = stdout.read_to_end(&mut out);
        let read_err = stderr.read_to_end(&mut err);
        let (_, _, _) = tokio::join!(write, read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    match tokio::time::timeout(deadline, run).await {
        Ok((Ok(status), stdout, stderr)) => Ok(OneShotOutput {
            status,
            stdout,
            stderr_tail: String::from_utf8_lossy(&stderr)
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .chars()
                .take(300)
                .collect(),
        }),
        Ok((Err(e), _, _)) => Err(format!("waiting for {shown} failed: {e}")),
        // kill_on_drop stops it.
        Err(_) => Err(format!(
            "{shown} did not answer within {:.0}s",
            deadline.as_secs_f64()
        )),
    }
}

/// PATH, HOME and KEYWARD_LOG: what every plugin process gets.
pub fn base_env() -> Vec<(OsString, OsString)> {
    let mut env = vec![(
        OsString::from("PATH"),
        OsString::from("/usr/local/bin:/usr/bin:/bin"),
    )];
    for name in ["HOME", "KEYWARD_LOG"] {
        if let Some(value) = std::env::var_os(name) {
            env.push((OsString::from(name), value));
        }
    }
    env
}

/// The outcome of a settings check that did not find a bad setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The plugin checked the settings; it needs these variables (or `PREFIX*` patterns) from
    /// the daemon's environment.
    Fine {
        /// Names and patterns.
        env: Vec<String>,
    },
    /// The settings could not be checked before the start (the program does not implement the
    /// mode, or could not be run); why.
    Unchecked(String),
}

/// Runs `program args... --check-settings` for `config`'s settings. A bad setting is a
/// [`ConfigError`] at that setting's line.
pub async fn check_settings(
    config: &BackendConfig,
    program: &Path,
    args: &[String],
) -> Result<Checked, ConfigError> {
    let settings = serde_json::to_vec(&config.settings)
        .map_err(|e| config.error(format!("cannot encode the settings: {e}")))?;
    let mut args = args.to_vec();
    args.push(CHECK_SETTINGS_ARG.to_string());
    let output = match run_one_shot(program, &args, &settings, ONE_SHOT_DEADLINE).await {
        Ok(output) => output,
        Err(why) => return Ok(Checked::Unchecked(why)),
    };
    let Some(answer) = CheckAnswer::parse(&output.stdout) else {
        return Ok(Checked::Unchecked(format!(
            "{} does not implement {CHECK_SETTINGS_ARG} (it exited {}{})",
            program.display(),
            output.status,
            if output.stderr_tail.is_empty() {
                String::new()
            } else {
                format!(": {}", output.stderr_tail)
            }
        )));
    };
    if answer.ok {
        return Ok(Checked::Fine { env: answer.env });
    }
    let message = answer
        .message
        .unwrap_or_else(|| "the plugin refused the settings without saying why".into());
    // A setting the table does not have (a missing one) is reported at the table's line.
    Err(config.setting_error(answer.setting.as_deref(), message))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("plugin");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn backend(text: &str) -> BackendConfig {
        let text = format!("state_dir = \"/tmp/keyward-check-test\"\n{text}");
        let source = crate::config::ConfigSource::text("test.toml", text);
        crate::config::parse(&source, &Default::default())
            .unwrap()
            .backends
            .remove(0)
    }

    #[tokio::test]
    async fn a_bad_setting_is_reported_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let config = backend(
            "[[backend]]\nname = \"x\"\ntype = \"external\"\ncommand = [\"/bin/true\"]\nregion = 5\n",
        );
        let program = script(
            dir.path(),
            r#"cat >/dev/null; echo '{"keyward_check":1,"ok":false,"setting":"region","message":"not a region"}'; exit 2"#,
        );
        let err = check_settings(&config, &program, &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.toml line 6: "), "{err}");
        assert!(err.contains("`region`: not a region"), "{err}");

        let program = script(
            dir.path(),
            r#"cat >/dev/null; echo '{"keyward_check":1,"ok":true,"env":["CLOUD_*"]}'"#,
        );
        assert_eq!(
            check_settings(&config, &program, &[]).await.unwrap(),
            Checked::Fine {
                env: vec!["CLOUD_*".into()]
            }
        );
    }

    #[tokio::test]
    async fn a_program_without_the_mode_is_unchecked() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            backend("[[backend]]\nname = \"x\"\ntype = \"external\"\ncommand = [\"/bin/true\"]\n");
        let program = script(dir.path(), "echo 'usage: plugin' >&2; exit 1");
        let checked = check_settings(&config, &program, &[]).await.unwrap();
        assert!(
            matches!(&checked, Checked::Unchecked(why) if why.contains("usage: plugin")),
            "{checked:?}"
        );
        // One that never answers is killed at the deadline.
        let program = script(dir.path(), "exec sleep 60");
        let slow = run_one_shot(&program, &[], b"", Duration::from_millis(300)).await;
        assert!(slow.unwrap_err().contains("did not answer"));
    }
}
