//! `keyward keys list`, `keyward keys show`, `keyward keys generate` and `keyward keys delete`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use keyward_sdk::{Client, KeyInfo, KeySpec};
use serde::Serialize;

use crate::cmd::{Agent, KeyArg, algorithm_names, connect, parse_key_spec};
use crate::output::{EXIT_OK, Failure, pem_text, write_stdout};

const LIST_AFTER_HELP: &str = "\
Examples:
  keyward keys list
  keyward keys list --json | jq -r '.[].key_id'";

const GENERATE_AFTER_HELP: &str = "\
Key types: ed25519, ec-p256, ec-p384, ec-p521, rsa-2048, rsa-3072, rsa-4096.
The private key is created inside the backend and never leaves it; the public key is printed
(PEM) after a summary line.

Backend options: --option KEY=VALUE (repeatable) passes a backend-specific option; a backend
refuses options it does not take. For a `yubikey` backend: --slot (9a, 9c, 9d, 9e, 82..95;
default: the key id if it is a slot, else the first empty retired slot), --pin-policy and
--touch-policy (default: the backend config's), i.e. the options slot, pin_policy and
touch_policy.

Examples:
  keyward keys generate --backend local --type ec-p256 --key release
  keyward keys generate --backend local --type ed25519 --key ci-attest --json
  keyward keys generate --backend yubikey --type ec-p256 --slot 9c --pin-policy once --touch-policy always --key release";

const DELETE_AFTER_HELP: &str = "\
Deletes the key in its backend and makes the agent forget its id, its certificate chain and
OpenPGP certificate. What deleting means depends on the backend, and the answer says which:
  local    the key file is removed
  pkcs11   the private and public key objects are destroyed
  vault    the transit key is deleted, if its deletion_allowed is on (else: how to allow it)
  awskms   the key is scheduled for deletion after deletion_pending_days (7-30, default 30);
           until then `aws kms cancel-key-deletion` keeps it; it cannot sign meanwhile
  azurekv  the key is soft-deleted: recoverable until its purge date (`az keyvault key recover`)
  yubikey, pgp: refused, with how to do it with the device's or keyring's own tools
A key whose policy says `protected = true` is refused. Only the agent's admins may delete.
On a terminal it asks first; elsewhere give --yes.

Examples:
  keyward keys delete --key old-release
  keyward keys delete --key ci-2023 --yes --json";

const SHOW_AFTER_HELP: &str = "\
Prints the key's id, backend, backend type, key type, algorithms, version, whether a
certificate chain is attached, and the attributes its backend reports (for a YubiKey: slot,
pin_policy, touch_policy, policy_source, origin, attestation certificate).

Examples:
  keyward keys show release
  keyward keys show release --json | jq -r .attributes.attestation > attestation.pem";

/// `keyward keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the keys the agent offers (ID, backend, type, algorithms, certificate)
    #[command(after_help = LIST_AFTER_HELP)]
    List(ListArgs),
    /// Show one key: backend, type, algorithms, certificate, backend attributes
    #[command(after_help = SHOW_AFTER_HELP)]
    Show(ShowArgs),
    /// Create a key pair in a backend
    #[command(after_help = GENERATE_AFTER_HELP)]
    Generate(GenerateArgs),
    /// Delete a key from its backend (or schedule its deletion) and forget it
    #[command(after_help = DELETE_AFTER_HELP)]
    Delete(DeleteArgs),
}

/// `keyward keys delete`
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    key: KeyArg,
    /// Delete without asking
    #[arg(long, short)]
    yes: bool,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// `keyward keys show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    key: KeyArg,
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
    /// YubiKey: the PIV slot to generate in (9a, 9c, 9d, 9e, 82..95); the option `slot`
    #[arg(long, value_name = "SLOT")]
    slot: Option<String>,
    /// YubiKey: when the key needs the PIN; the option `pin_policy`
    #[arg(long, value_name = "POLICY", value_parser = ["never", "once", "always"])]
    pin_policy: Option<String>,
    /// YubiKey: when the key needs a touch; the option `touch_policy`
    #[arg(long, value_name = "POLICY", value_parser = ["never", "always", "cached"])]
    touch_policy: Option<String>,
    /// A backend-specific option (repeatable)
    #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_option)]
    options: Vec<(String, String)>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// The new key's id (letters, digits, '.', '_', '-')
    #[command(flatten)]
    key: KeyArg,
}

/// `keys delete` asks on a terminal; elsewhere it needs `--yes`.
fn confirm_delete(args: &DeleteArgs) -> Result<(), Failure> {
    use std::io::{BufRead, IsTerminal, Write};
    if args.yes {
        return Ok(());
    }
    let key = args.key.id();
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(format!(
            "deleting key {key:?} cannot be undone for most backends; add --yes to delete it without asking"
        )));
    }
    eprint!("delete key {key:?} from its backend? this cannot be undone for most backends [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::new(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure::new(format!("key {key:?} was not deleted")))
    }
}

/// Parses `--option KEY=VALUE`.
fn parse_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("{text:?} is not KEY=VALUE (e.g. slot=9c)")),
    }
}

impl GenerateArgs {
    /// The backend options: `--option`s plus the named flags; an option given twice is an
    /// error.
    fn backend_options(&self) -> Result<BTreeMap<String, String>, Failure> {
        let named = [
            ("slot", &self.slot),
            ("pin_policy", &self.pin_policy),
            ("touch_policy", &self.touch_policy),
        ];
        let given = self.options.iter().map(|(k, v)| (k.as_str(), v)).chain(
            named
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v))),
        );
        let mut options = BTreeMap::new();
        for (key, value) in given {
            if options.insert(key.to_string(), value.clone()).is_some() {
                return Err(Failure::new(format!(
                    "the option {key:?} is given twice; give it once (--{} is --option {key}=...)",
                    key.replace('_', "-")
                )));
            }
        }
        Ok(options)
    }
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
    let options = match &command {
        KeysCommand::Generate(args) => args.backend_options()?,
        KeysCommand::Delete(args) => {
            confirm_delete(args)?;
            BTreeMap::new()
        }
        _ => BTreeMap::new(),
    };
    let client = connect(agent).await?;
    match command {
        KeysCommand::List(args) => list(&client, args).await,
        KeysCommand::Show(args) => show(&client, args).await,
        KeysCommand::Generate(args) => generate(&client, args, &options).await,
        KeysCommand::Delete(args) => {
            super::keys_delete::delete(&client, args.key.id(), args.json).await
        }
    }
}

/// One key in `keys show --json`.
#[derive(Debug, Serialize)]
struct ShowJson<'a> {
    #[serde(flatten)]
    key: KeyJson<'a>,
    attributes: BTreeMap<&'a str, &'a str>,
}

async fn show(client: &Client, args: ShowArgs) -> Result<i32, Failure> {
    let key = client.public_key(args.key.id()).await?;
    let text = if args.json {
        let json = ShowJson {
            key: KeyJson::from(&key.info),
            attributes: key
                .info
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&json)
            .map_err(|e| Failure::new(format!("cannot encode the key as JSON: {e}")))?;
        text.push('\n');
        text
    } else {
        show_text(&key.info)
    };
    write_stdout(text.as_bytes())?;
    Ok(EXIT_OK)
}

/// `keys show` as `name: value` lines; attributes sorted, multi-line values (PEM) indented.
fn show_text(key: &KeyInfo) -> String {
    let version = if key.key_version.is_empty() {
        "-"
    } else {
        &key.key_version
    };
    let lines = [
        ("id", key.key_id.clone()),
        ("backend", key.backend.clone()),
        ("backend_type", key.backend_type.clone()),
        ("type", key.key_spec().name().to_string()),
        ("algorithms", algorithm_names(key.algorithms())),
        ("version", version.to_string()),
        (
            "has_certificate",
            if key.has_certificate { "yes" } else { "no" }.to_string(),
        ),
    ];
    let attributes: BTreeMap<&String, &String> = key.attributes.iter().collect();
    let mut text = String::new();
    for (name, value) in lines {
        text.push_str(&format!("{name}: {value}\n"));
    }
    if !attributes.is_empty() {
        text.push_str("attributes:\n");
    }
    for (name, value) in attributes {
        if value.contains('\n') {
            text.push_str(&format!("  {name}: |\n"));
            for line in value.trim_end().lines() {
                text.push_str(&format!("    {line}\n"));
            }
        } else {
            text.push_str(&format!("  {name}: {value}\n"));
        }
    }
    text
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
    super::table(&header, &rows, "")
}

async fn generate(
    client: &Client,
    args: GenerateArgs,
    options: &BTreeMap<String, String>,
) -> Result<i32, Failure> {
    let key_id = args.key.id();
    let key = client
        .generate_key_with(&args.backend, key_id, args.key_type, options)
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
    if args.json {
        #[derive(Serialize)]
        struct GeneratedJson<'a> {
            #[serde(flatten)]
            key: KeyJson<'a>,
            attributes: BTreeMap<&'a str, &'a str>,
            public_key_pem: &'a str,
        }
        crate::json::print(&GeneratedJson {
            key: KeyJson::from(&key.info),
            attributes: key
                .info
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            public_key_pem: &key.pem,
        })?;
        return Ok(EXIT_OK);
    }
    let text = format!(
        "generated {} key {:?} in backend {:?}{}\n{}",
        spec.name(),
        key_id,
        backend,
        key.info
            .attributes
            .get("slot")
            .map(|slot| format!(" (slot {slot})"))
            .unwrap_or_default(),
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
            attributes: Default::default(),
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
    fn generate_options_merge_flags_and_refuse_duplicates() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cmd {
            #[command(flatten)]
            args: GenerateArgs,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec!["keys", "--backend", "yk", "--type", "ec-p256"];
            argv.extend_from_slice(extra);
            argv.extend(["--key", "id"]);
            Cmd::try_parse_from(argv).map(|c| c.args)
        };
        let args = parse(&[
            "--slot",
            "9c",
            "--touch-policy",
            "cached",
            "--option",
            "x=1",
        ])
        .unwrap();
        let options = args.backend_options().unwrap();
        assert_eq!(options.get("slot").map(String::as_str), Some("9c"));
        assert_eq!(
            options.get("touch_policy").map(String::as_str),
            Some("cached")
        );
        assert_eq!(options.get("x").map(String::as_str), Some("1"));
        let twice = parse(&["--slot", "9c", "--option", "slot=9d"]).unwrap();
        assert!(twice.backend_options().is_err());
        assert!(parse(&["--pin-policy", "sometimes"]).is_err());
        assert!(parse(&["--option", "novalue"]).is_err());
    }

    #[test]
    fn show_text_indents_multiline_attributes() {
        let mut info = key("yk", false);
        info.attributes.insert("slot".into(), "9c".into());
        info.attributes.insert(
            "attestation".into(),
            "-----BEGIN CERTIFICATE-----\nAAA\n".into(),
        );
        let text = show_text(&info);
        assert!(text.contains("id: yk\n"), "{text}");
        assert!(text.contains("attributes:\n  attestation: |\n    -----BEGIN CERTIFICATE-----\n    AAA\n  slot: 9c\n"), "{text}");
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
