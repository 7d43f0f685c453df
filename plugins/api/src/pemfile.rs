//! PEM as keyward reads and writes it itself: one parser and one writer (the `pem` crate) for
//! certificate bundles (chains, CA files), public keys and certificates shown to people.
//!
//! Private key files are not read here: the `local` backend's keys are OpenSSL-compatible
//! encrypted PKCS#8, which OpenSSL itself reads and writes.

/// PEM label of an X.509 certificate.
pub const CERTIFICATE: &str = "CERTIFICATE";
/// PEM label of a SubjectPublicKeyInfo.
pub const PUBLIC_KEY: &str = "PUBLIC KEY";

fn lf() -> pem::EncodeConfig {
    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)
}

/// The DER certificates of a PEM bundle, in order. Text outside the PEM blocks is ignored; a
/// block that is not a certificate, or no certificate at all, is an error (the message numbers
/// the block and says what to give instead).
pub fn certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(text)
        .map_err(|e| format!("the PEM text cannot be read ({e}); give certificates as PEM"))?;
    let mut chain = Vec::with_capacity(blocks.len());
    for (number, block) in blocks.into_iter().enumerate() {
        if block.tag() != CERTIFICATE {
            return Err(format!(
                "PEM block {} is a {:?}, not a CERTIFICATE; give only certificates",
                number + 1,
                block.tag()
            ));
        }
        chain.push(block.into_contents());
    }
    if chain.is_empty() {
        return Err(
            "no certificate found: give a PEM bundle (-----BEGIN CERTIFICATE-----)".to_string(),
        );
    }
    Ok(chain)
}

/// The DER certificates of a CA bundle file named by the setting `setting` (`ca_file`), for a
/// backend's TLS client; the error names the setting and the file and says what is wrong.
pub fn ca_file(setting: &str, path: &std::path::Path) -> Result<Vec<Vec<u8>>, crate::BackendError> {
    let shown = path.display();
    let text = std::fs::read(path).map_err(|e| {
        crate::BackendError::InvalidInput(format!("cannot read {setting} {shown}: {e}"))
    })?;
    certificates(&text).map_err(|e| {
        let e = e.replace("no certificate found", "it holds no certificate");
        crate::BackendError::InvalidInput(format!("{setting} {shown}: {e}"))
    })
}

/// DER certificates as a PEM bundle (LF line endings), in order.
pub fn encode_certificates(chain: &[Vec<u8>]) -> String {
    chain
        .iter()
        .map(|der| pem::encode_config(&pem::Pem::new(CERTIFICATE, der.clone()), lf()))
        .collect()
}

/// One DER value as a PEM block with `label` (LF line endings).
pub fn encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), lf())
}

/// The DER contents of the first `label` block of `text` (another block first is skipped).
pub fn decode(label: &str, text: &[u8]) -> Result<Vec<u8>, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("the PEM text cannot be read ({e})"))?;
    blocks
        .into_iter()
        .find(|block| block.tag() == label)
        .map(pem::Pem::into_contents)
        .ok_or_else(|| format!("no -----BEGIN {label}----- block in the PEM text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_round_trip_and_other_blocks_are_named() {
        let chain = vec![vec![0x30, 0x03, 0x02, 0x01, 0x01], vec![0x30, 0x00]];
        let text = encode_certificates(&chain);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(!text.contains('\r'));
        let with_noise = format!("subject=CN=leaf\n{text}trailing words\n");
        assert_eq!(certificates(with_noise.as_bytes()).unwrap(), chain);

        let key = encode("PRIVATE KEY", &[1, 2, 3]);
        let err = certificates(format!("{text}{key}").as_bytes()).unwrap_err();
        assert!(err.contains("PEM block 3 is a \"PRIVATE KEY\""), "{err}");
        let err = certificates(b"nothing here").unwrap_err();
        assert!(err.contains("no certificate found"), "{err}");
    }

    #[test]
    fn ca_files_name_the_setting() {
        let dir = std::env::temp_dir().join(format!("keyward-pemfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let err = ca_file("ca_file", &empty).unwrap_err().to_string();
        assert!(
            err.contains("ca_file") && err.contains("holds no certificate"),
            "{err}"
        );
        let missing = ca_file("ca_file", &dir.join("missing.pem")).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read ca_file"),
            "{missing}"
        );
        let good = dir.join("good.pem");
        std::fs::write(&good, encode_certificates(&[vec![0x30, 0x00]])).unwrap();
        assert_eq!(ca_file("ca_file", &good).unwrap(), [vec![0x30, 0x00]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_block_by_label() {
        let text = format!("{}{}", encode("X", &[9]), encode("PUBLIC KEY", &[1, 2]));
        assert_eq!(decode("PUBLIC KEY", text.as_bytes()).unwrap(), [1, 2]);
        assert!(decode("CERTIFICATE", text.as_bytes()).is_err());
    }
}
