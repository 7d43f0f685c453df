//! One-shot modes of a plugin executable: checking settings without starting.
//!
//! `keyward-plugin-<type> --check-settings` reads the backend's settings (the same JSON object
//! the daemon writes on stdin when it starts the plugin), checks them, and answers with one
//! line of JSON on stdout, then exits: 0 when the settings are fine, 2 when they are not. It
//! creates nothing, reads no secret and opens no connection: `keywardd --check-config` runs it
//! for every configured backend, and keywardd runs it before it starts a plugin, so that a bad
//! setting is a config error (exit 2) that names the setting's line in the TOML.
//!
//! ```text
//! {"keyward_check":1,"ok":true,"env":["AWS_*"]}
//! {"keyward_check":1,"ok":false,"setting":"region","message":"invalid type: integer `5`, expected a string"}
//! ```
//!
//! `env` lists the variables the plugin needs from the daemon's environment besides those its
//! `*_env` settings name (a name, or a prefix ending in `*`): the credential chain of a cloud
//! SDK, say. A program that prints anything else does not implement the mode; keywardd then
//! checks nothing before starting it (third-party plugins may implement it or not).

use std::io::{Read, Write};
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The argument that selects the settings check.
pub const CHECK_SETTINGS_ARG: &str = "--check-settings";
/// The exit code of a check that found a bad setting (as keywardd's own config errors).
pub const EXIT_BAD_SETTINGS: u8 = 2;

/// The answer of `--check-settings`: one JSON line on stdout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// Always 1: marks the line as an answer of this protocol version.
    pub keyward_check: u32,
    /// Whether the settings are fine.
    pub ok: bool,
    /// The setting at fault (its key in the `[[backend]]` table), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    /// What is wrong and what to do, when something is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Variables (or `PREFIX*` patterns) the plugin needs from the daemon's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

impl CheckAnswer {
    /// Settings that are fine.
    pub fn ok(env: &[&str]) -> Self {
        CheckAnswer {
            keyward_check: 1,
            ok: true,
            env: env.iter().map(|name| name.to_string()).collect(),
            ..CheckAnswer::default()
        }
    }

    /// A bad setting (`setting` when the fault is in one setting) and why.
    pub fn bad(setting: Option<String>, message: impl Into<String>) -> Self {
        CheckAnswer {
            keyward_check: 1,
            ok: false,
            setting,
            message: Some(message.into()),
            ..CheckAnswer::default()
        }
    }

    /// Parses the plugin's stdout; `None` when it is not an answer (the plugin does not
    /// implement the mode).
    pub fn parse(stdout: &[u8]) -> Option<Self> {
        let line = stdout.split(|&b| b == b'\n').find(|l| !l.is_empty())?;
        serde_json::from_slice::<CheckAnswer>(line)
            .ok()
            .filter(|answer| answer.keyward_check == 1)
    }
}

/// Deserializes `json` (the settings object) into `S` and says which setting is at fault when
/// it does not fit.
pub fn check_settings<S: DeserializeOwned>(json: &str) -> Result<S, CheckAnswer> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize::<_, S>(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        // serde's messages without serde_json's position (the JSON is ours, not the user's).
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        let setting = top_level_setting(&path).or_else(|| named_in(&message));
        CheckAnswer::bad(setting, message)
    })
}

/// The first segment of a serde path (`module`, `approle.role_id` -> `approle`).
fn top_level_setting(path: &str) -> Option<String> {
    let first = path.split(['.', '[']).next()?;
    (!first.is_empty() && first != "?").then(|| first.to_string())
}

/// The field serde names in "unknown field `x`" / "missing field `x`".
fn named_in(message: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = message.split(marker).nth(1) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

/// The whole `--check-settings` mode: reads stdin, checks it as `S`, prints the answer and
/// returns the exit code. `env` goes into a good answer.
pub(crate) fn run_check<S: DeserializeOwned>(env: &[&str]) -> ExitCode {
    let mut text = String::new();
    let answer = match std::io::stdin().read_to_string(&mut text) {
        Err(e) => CheckAnswer::bad(None, format!("cannot read the settings on stdin: {e}")),
        Ok(_) => match check_settings::<S>(&text) {
            Ok(_) => CheckAnswer::ok(env),
            Err(bad) => bad,
        },
    };
    let line = serde_json::to_string(&answer).unwrap_or_else(|_| "{}".into());
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    if answer.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_BAD_SETTINGS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        module: String,
        #[serde(default)]
        sessions: Option<u32>,
    }

    fn bad(json: &str) -> (Option<String>, String) {
        let answer = check_settings::<Settings>(json).unwrap_err();
        assert!(!answer.ok);
        (answer.setting, answer.message.unwrap())
    }

    #[test]
    fn the_setting_at_fault_is_named() {
        assert!(check_settings::<Settings>(r#"{"module": "/m.so"}"#).is_ok());
        let (setting, message) = bad(r#"{"module": "/m.so", "sessions": "four"}"#);
        assert_eq!(setting.as_deref(), Some("sessions"));
        assert!(
            message.contains("invalid type") && !message.contains("line 1"),
            "{message}"
        );
        let (setting, message) = bad(r#"{"module": "/m.so", "token": "x"}"#);
        assert_eq!(setting.as_deref(), Some("token"), "{message}");
        let (setting, _) = bad("{}");
        assert_eq!(setting.as_deref(), Some("module"));
    }

    #[test]
    fn answers_round_trip_and_other_output_is_no_answer() {
        let answer = CheckAnswer::bad(Some("region".into()), "bad region");
        let line = serde_json::to_vec(&answer).unwrap();
        assert_eq!(CheckAnswer::parse(&line), Some(answer));
        let ok = CheckAnswer::ok(&["AWS_*"]);
        let line = serde_json::to_string(&ok).unwrap();
        assert_eq!(line, r#"{"keyward_check":1,"ok":true,"env":["AWS_*"]}"#);
        assert_eq!(CheckAnswer::parse(b"keyward-plugin v1 ready\n"), None);
        assert_eq!(CheckAnswer::parse(br#"{"ok":true}"#), None);
    }
}
