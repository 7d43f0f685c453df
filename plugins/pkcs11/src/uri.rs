//! Key references: what a `reference` string names on the token.
//!
//! - a key name (`release`): the private key whose `CKA_LABEL` is that name;
//! - `id-<hex>`: the private key whose `CKA_ID` is those bytes (used for keys whose label is not
//!   a valid key name, or is shared by several keys);
//! - an RFC 7512 URI, `pkcs11:token=<label>;object=<label>;id=%01%02`, from a `[[key]]` table
//!   of the config. `token=` and `serial=` must match the backend's token when present.

use keyward_plugin_api::BackendError;

/// Which private key a reference names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyQuery {
    /// `CKA_LABEL`, when named.
    pub label: Option<Vec<u8>>,
    /// `CKA_ID`, when named.
    pub id: Option<Vec<u8>>,
    /// For a plain name that also looks like `id-<hex>`: the id to try when no label matches.
    pub fallback_id: Option<Vec<u8>>,
    /// The URI's `token=`, checked against the backend's token.
    pub token: Option<String>,
    /// The URI's `serial=`, checked against the backend's token.
    pub serial: Option<String>,
}

/// The `id-<hex>` reference of a key id.
pub(crate) fn id_reference(id: &[u8]) -> String {
    format!("id-{}", hex::encode(id))
}

/// Parses a reference (a key name, `id-<hex>` or a `pkcs11:` URI).
pub(crate) fn parse_reference(reference: &str) -> Result<KeyQuery, BackendError> {
    if reference.is_empty() {
        return Err(BackendError::InvalidInput(
            "the key reference is empty".into(),
        ));
    }
    if let Some(rest) = reference.strip_prefix("pkcs11:") {
        return parse_uri(rest);
    }
    let fallback_id = reference
        .strip_prefix("id-")
        .filter(|h| !h.is_empty())
        .and_then(|h| hex::decode(h).ok());
    Ok(KeyQuery {
        label: Some(reference.as_bytes().to_vec()),
        fallback_id,
        ..KeyQuery::default()
    })
}

fn parse_uri(rest: &str) -> Result<KeyQuery, BackendError> {
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    // The query part is left out of messages: it may hold a PIN.
    let bad = |why: String| {
        BackendError::InvalidInput(format!(
            "the PKCS#11 URI \"pkcs11:{path}\" is invalid: {why}"
        ))
    };
    let mut out = KeyQuery::default();
    for attr in path.split(';').filter(|a| !a.is_empty()) {
        let (name, value) = attr
            .split_once('=')
            .ok_or_else(|| bad(format!("{attr:?} has no '='")))?;
        let value = percent_decode(value).map_err(bad)?;
        let text =
            || String::from_utf8(value.clone()).map_err(|_| bad(format!("{name} is not UTF-8")));
        match name {
            "object" => out.label = Some(value.clone()),
            "id" => out.id = Some(value.clone()),
            "token" => out.token = Some(text()?),
            "serial" => out.serial = Some(text()?),
            "type" if value == b"private" => {}
            "type" => {
                return Err(bad(format!(
                    "type={} cannot sign; name the private key (type=private) or leave type out",
                    String::from_utf8_lossy(&value)
                )));
            }
            // Attributes that describe the module or slot: the config's `module` and
            // `token_label` / `token_serial` already decide those.
            "manufacturer"
            | "model"
            | "library-manufacturer"
            | "library-description"
            | "library-version"
            | "slot-description"
            | "slot-manufacturer"
            | "slot-id" => {}
            other => return Err(bad(format!("unknown attribute {other:?}"))),
        }
    }
    for attr in query.into_iter().flat_map(|q| q.split('&')) {
        let name = attr.split_once('=').map_or(attr, |(name, _)| name);
        if name.starts_with("pin-") {
            return Err(bad(
                "a PIN never goes in a key URI; set pin_env, pin_file or pin_credential on the backend"
                    .into(),
            ));
        }
    }
    if out.label.is_none() && out.id.is_none() {
        return Err(bad(
            "it names no key: add object=<label> or id=<hex bytes as %XX>".into(),
        ));
    }
    Ok(out)
}

/// Decodes `%XX` escapes; other characters stand for themselves.
fn percent_decode(value: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {value:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        let q = parse_reference("release").unwrap();
        assert_eq!(q.label.as_deref(), Some(&b"release"[..]));
        assert_eq!(q.fallback_id, None);
        let q = parse_reference("id-0a1B").unwrap();
        assert_eq!(q.fallback_id, Some(vec![0x0a, 0x1b]));
        assert_eq!(id_reference(&[0x0a, 0x1b]), "id-0a1b");
        assert_eq!(parse_reference("id-xyz").unwrap().fallback_id, None);
    }

    #[test]
    fn uris() {
        let q = parse_reference("pkcs11:token=My%20Token;object=rel%2Fease;id=%01%ff").unwrap();
        assert_eq!(q.token.as_deref(), Some("My Token"));
        assert_eq!(q.label.as_deref(), Some(&b"rel/ease"[..]));
        assert_eq!(q.id, Some(vec![0x01, 0xff]));
        let q = parse_reference("pkcs11:model=SoftHSM%20v2;type=private;id=%02").unwrap();
        assert_eq!((q.label, q.id), (None, Some(vec![2])));
        for (bad, needle) in [
            ("pkcs11:token=T", "names no key"),
            ("pkcs11:object=a;type=public", "cannot sign"),
            ("pkcs11:object=a?pin-value=1234", "never goes"),
            ("pkcs11:object=%zz", "percent"),
            ("pkcs11:object=a;color=red", "unknown attribute"),
            ("", "empty"),
        ] {
            let err = parse_reference(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(!err.contains("1234"), "{err}");
        }
    }
}
