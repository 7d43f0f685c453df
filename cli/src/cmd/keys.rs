//! `keyward keys list` and `keyward keys generate`.

use clap::{Args, Subcommand};
use keyward_sdk::{Client, KeyInfo, KeySpec};
use serde::Serialize;

use crate::cmd::{Agent, algorithm_names, connect, parse_key_spec};
use crate::output::{EXIT_OK, Failure, pem_text, write_stdout};

const LIST_AFTER_HELP: &str = "\
Examples:
  keyward keys list
  keyward keys list --json | jq -r '.[].key_id'";

const GENERATE_AFTER_HELP: &str = "\
Key types: ed25519, ec-p256, ec-p384, ec-p521, rsa-2048, rsa-3072, rsa-4096.
The private key is created inside the backend and never leaves it; the public key is printed
(PEM) after a summary line.

Examples:
  keyward keys generate --backend local --type ec-p256 release
  keyward keys generate --backend local --type ed25519 ci-attest";

/// `keyward keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the keys the agent offers (ID, backend, type, algorithms, certificate)
    #[command(after_help = LIST_AFTER_HELP)]
    List(ListArgs),
    /// Create a key pair in a backend
    #[command(after_help = GENERATE_AFTER_HELP)]
    Generate(GenerateArgs),
}

/// `keyward keys list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array instead of a table
    #[arg(long)]
    json: bool,
}

/// `keyward keys generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The backend to create the key in (a `[[backend]]` name of the agent's config)
    #[arg(long, value_name = "NAME")]
    backend: String,
    /// The key type: ed25519, ec-p256, ec-p384, ec-p521, rsa-2048, rsa-3072 or rsa-4096
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_key_spec)]
    key_type: KeySpec,
    /// The new key's id (letters, digits, '.', '_', '-')
    #[arg(value_name = "KEY_ID")]
    key_id: String,
}

/// One key in `keys list --json`.
#[derive(Debug, Serialize)]
struct KeyJson<'a> {
    key_id: &'a str,
    backend: &'a str,
    backend_type: &'a str,
    key_spec: &'static str,
    algorithms: Vec<&'static str>,
    has_certificate: bool,
    key_version: &'a str,
}

impl<'a> From<&'a KeyInfo> for KeyJson<'a> {
    fn from(key: &'a KeyInfo) -> Self {
        KeyJson {
            key_id: &key.key_id,
            backend: &key.backend,
            backend_type: &key.backend_type,
            key_spec: key.key_spec().name(),
            algorithms: key.algorithms().map(|a| a.name()).collect(),
            has_certificate: key.has_certificate,
            key_version: &key.key_version,
        }
    }
}

/// Runs `keyward keys ...`.
pub async fn run(agent: &Agent, command: KeysCommand) -> Result<i32, Failure> {
    let client = connect(agent).await?;
    match command {
        KeysCommand::List(args) => list(&client, args).await,
        KeysCommand::Generate(args) => generate(&client, args).await,
    }
}

async fn list(client: &Client, args: ListArgs) -> Result<i32, Failure> {
    let keys = client.list_keys().await?;
    let text = if args.json {
        let keys: Vec<KeyJson<'_>> = keys.iter().map(KeyJson::from).collect();
        let mut text = serde_json::to_string_pretty(&keys)
            .map_err(|e| Failure::new(format!("cannot encode the key list as JSON: {e}")))?;
        text.push('\n');
        text
    } else {
        table(&keys)
    };
    write_stdout(text.as_bytes())?;
    Ok(EXIT_OK)
}

/// The key list as an aligned text table.
fn table(keys: &[KeyInfo]) -> String {
    let header = ["ID", "BACKEND", "TYPE", "ALGORITHMS", "CERT"].map(String::from);
    let rows: Vec<[String; 5]> = keys
        .iter()
        .map(|key| {
            [
                key.key_id.clone(),
                key.backend.clone(),
                key.key_spec().name().to_string(),
                algorithm_names(key.algorithms()),
                if key.has_certificate { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

async fn generate(client: &Client, args: GenerateArgs) -> Result<i32, Failure> {
    let key = client
        .generate_key(&args.backend, &args.key_id, args.key_type)
        .await?;
    let spec = match key.info.key_spec() {
        KeySpec::Unspecified => args.key_type,
        spec => spec,
    };
    let backend = if key.info.backend.is_empty() {
        &args.backend
    } else {
        &key.info.backend
    };
    let text = format!(
        "generated {} key {:?} in backend {:?}\n{}",
        spec.name(),
        args.key_id,
        backend,
        pem_text(&key.pem)
    );
    write_stdout(text.as_bytes())?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use keyward_sdk::SignatureAlgorithm;

    use super::*;

    fn key(id: &str, cert: bool) -> KeyInfo {
        KeyInfo {
            key_id: id.into(),
            backend: "local".into(),
            backend_type: "local".into(),
            key_spec: KeySpec::EcP256 as i32,
            algorithms: vec![SignatureAlgorithm::EcdsaSha256 as i32],
            has_certificate: cert,
            key_version: String::new(),
        }
    }

    #[test]
    fn table_aligns_columns() {
        let text = table(&[key("release", true), key("a", false)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID       BACKEND  TYPE     ALGORITHMS    CERT");
        assert_eq!(lines[1], "release  local    ec-p256  ecdsa-sha256  yes");
        assert_eq!(lines[2], "a        local    ec-p256  ecdsa-sha256  no");
    }

    #[test]
    fn json_uses_names() {
        let info = key("release", false);
        let json = serde_json::to_value(KeyJson::from(&info)).unwrap();
        assert_eq!(json["key_spec"], "ec-p256");
        assert_eq!(json["algorithms"][0], "ecdsa-sha256");
        assert_eq!(json["has_certificate"], false);
    }
}
