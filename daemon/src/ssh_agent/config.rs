//! `[ssh_agent]`: the socket and the keys it offers.
//!
//! ```toml
//! [ssh_agent]
//! socket = "/run/user/1000/keyward/ssh-agent.sock"  # default: ssh-agent.sock next to `socket`
//! keys = ["git-signing", "login"]                    # offered in this order
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The longest key id accepted in `keys` (discovered ids are `<backend>/<reference>`).
const MAX_KEY_ID_LEN: usize = 512;

/// `[ssh_agent]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshAgentConfig {
    /// The ssh-agent socket (`SSH_AUTH_SOCK` for clients).
    pub socket: PathBuf,
    /// Whether it is the default path (next to the agent socket, whose directory keywardd
    /// creates and locks down).
    pub socket_is_default: bool,
    /// The key ids offered, in this order.
    pub keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSshAgent {
    socket: Option<PathBuf>,
    keys: Vec<String>,
}

impl SshAgentConfig {
    /// Parses `[ssh_agent]`. A relative `socket` is relative to `dir` (the config file's
    /// directory); without one, the socket is `ssh-agent.sock` next to `agent_socket`.
    pub fn parse(
        table: toml::Table,
        dir: Option<&Path>,
        agent_socket: &Path,
        agent_socket_is_default: bool,
    ) -> Result<SshAgentConfig, String> {
        let raw = RawSshAgent::deserialize(toml::Value::Table(table))
            .map_err(|e| e.message().trim_end().to_string())?;
        let mut seen = HashSet::new();
        for id in &raw.keys {
            if id.is_empty() || id.len() > MAX_KEY_ID_LEN || id.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "keys: {id:?} is not a key id (1-{MAX_KEY_ID_LEN} characters, no control characters); use the ids `keyward keys list` shows"
                ));
            }
            if !seen.insert(id.as_str()) {
                return Err(format!("keys: {id:?} is listed twice"));
            }
        }
        let (socket, socket_is_default) = match raw.socket {
            Some(socket) => match dir {
                Some(dir) if socket.is_relative() => (dir.join(socket), false),
                _ => (socket, false),
            },
            None => (
                agent_socket.with_file_name("ssh-agent.sock"),
                agent_socket_is_default,
            ),
        };
        if socket == agent_socket {
            return Err(format!(
                "socket {} is the agent's gRPC socket; give the ssh-agent socket its own path",
                socket.display()
            ));
        }
        if socket.file_name().is_none() {
            return Err(format!("socket {} does not name a file", socket.display()));
        }
        if raw.keys.is_empty() {
            tracing::warn!("[ssh_agent] keys is empty: the ssh-agent socket offers no keys");
        }
        Ok(SshAgentConfig {
            socket,
            socket_is_default,
            keys: raw.keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SshAgentConfig, String> {
        SshAgentConfig::parse(
            toml::from_str(text).unwrap(),
            Some(Path::new("/etc/keyward")),
            Path::new("/run/k/agent.sock"),
            true,
        )
    }

    #[test]
    fn the_table_is_checked() {
        let config = parse("keys = [\"a\", \"pkcs11/b\"]").unwrap();
        assert_eq!(config.socket, Path::new("/run/k/ssh-agent.sock"));
        assert!(config.socket_is_default);
        assert_eq!(config.keys, ["a", "pkcs11/b"]);
        let config = parse("socket = \"ssh.sock\"\nkeys = []").unwrap();
        assert_eq!(config.socket, Path::new("/etc/keyward/ssh.sock"));
        assert!(!config.socket_is_default);
        for (text, needle) in [
            ("keys = [\"a\", \"a\"]", "listed twice"),
            ("keys = [\"\"]", "is not a key id"),
            ("keys = [\"a\\nb\"]", "is not a key id"),
            (
                "socket = \"/run/k/agent.sock\"\nkeys = []",
                "the agent's gRPC socket",
            ),
            ("sockets = \"x\"\nkeys = []", "unknown field `sockets`"),
            ("socket = \"x\"", "missing field `keys`"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
