//! ECDSA signature encodings: ASN.1 DER `ECDSA-Sig-Value` and fixed-length `r || s`.
//!
//! Backends return whichever their device or service gives (PKCS#11 and Azure give `r || s`,
//! AWS KMS and the YubiKey give DER); clients ask for whichever their format needs (X.509 and
//! cosign want DER, JOSE, COSE and Notation want `r || s`). Both conversions live here, once.

use std::fmt;

/// A signature that is not a well-formed encoding for the curve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodingError(&'static str);

impl fmt::Display for EncodingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed ECDSA signature: {}", self.0)
    }
}

impl std::error::Error for EncodingError {}

/// Converts a DER `ECDSA-Sig-Value` to `r || s`, each left-padded to `field_len` bytes
/// (32 for P-256, 48 for P-384, 66 for P-521).
pub fn ecdsa_der_to_raw(der: &[u8], field_len: usize) -> Result<Vec<u8>, EncodingError> {
    let (body, rest) = read_tlv(der, 0x30)?;
    if !rest.is_empty() {
        return Err(EncodingError("trailing bytes after the sequence"));
    }
    let (r, body) = read_tlv(body, 0x02)?;
    let (s, body) = read_tlv(body, 0x02)?;
    if !body.is_empty() {
        return Err(EncodingError("trailing bytes inside the sequence"));
    }
    let mut out = Vec::with_capacity(2 * field_len);
    for int in [r, s] {
        let magnitude = strip_integer(int)?;
        if magnitude.len() > field_len {
            return Err(EncodingError("an integer is longer than the curve's field"));
        }
        out.extend(std::iter::repeat_n(0u8, field_len - magnitude.len()));
        out.extend_from_slice(magnitude);
    }
    Ok(out)
}

/// Converts `r || s` (two halves of equal length) to a DER `ECDSA-Sig-Value`.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, EncodingError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(EncodingError("r || s must have an even, non-zero length"));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = Vec::with_capacity(raw.len() + 8);
    for half in [r, s] {
        let first_nonzero = half.iter().position(|&b| b != 0);
        let magnitude = match first_nonzero {
            Some(i) => &half[i..],
            None => return Err(EncodingError("r or s is zero")),
        };
        let pad = magnitude[0] & 0x80 != 0;
        body.push(0x02);
        write_len(&mut body, magnitude.len() + usize::from(pad));
        if pad {
            body.push(0);
        }
        body.extend_from_slice(magnitude);
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    write_len(&mut out, body.len());
    out.extend_from_slice(&body);
    Ok(out)
}

fn write_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

/// Reads one tag-length-value with the expected tag; returns (value, rest).
fn read_tlv(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), EncodingError> {
    let (&got, input) = input.split_first().ok_or(EncodingError("truncated"))?;
    if got != tag {
        return Err(EncodingError("unexpected tag"));
    }
    let (&first, mut input) = input.split_first().ok_or(EncodingError("truncated"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 2 || input.len() < count {
            return Err(EncodingError("bad length"));
        }
        let mut len = 0usize;
        for &b in &input[..count] {
            len = (len << 8) | usize::from(b);
        }
        if len < 0x80 || (count == 2 && len < 0x100) {
            return Err(EncodingError("length is not minimally encoded"));
        }
        input = &input[count..];
        len
    };
    if input.len() < len {
        return Err(EncodingError("truncated"));
    }
    Ok(input.split_at(len))
}

/// The magnitude of a positive DER INTEGER, without its sign byte.
fn strip_integer(int: &[u8]) -> Result<&[u8], EncodingError> {
    match int {
        [] => Err(EncodingError("empty integer")),
        [first, ..] if first & 0x80 != 0 => Err(EncodingError("negative integer")),
        [0] => Err(EncodingError("r or s is zero")),
        [0, second, ..] if second & 0x80 == 0 => {
            Err(EncodingError("integer is not minimally encoded"))
        }
        [0, rest @ ..] => Ok(rest),
        _ => Ok(int),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw_hex: &str, der_hex: &str) {
        let raw = hex(raw_hex);
        let der = hex(der_hex);
        assert_eq!(ecdsa_raw_to_der(&raw).unwrap(), der, "raw -> der");
        assert_eq!(
            ecdsa_der_to_raw(&der, raw.len() / 2).unwrap(),
            raw,
            "der -> raw"
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn round_trips() {
        // small values, high bit set (needs a 0x00 pad), leading zero bytes to strip
        check("00010002", "3006020101020102");
        check("80ff7f01", "300902030080ff02027f01");
        check("00010080", "300702010102020080");
    }

    #[test]
    fn long_form_length_for_p521() {
        let mut raw = vec![0xffu8; 132];
        raw[0] = 0x01;
        raw[66] = 0x01;
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..3], &[0x30, 0x81, 0x88]);
        assert_eq!(ecdsa_der_to_raw(&der, 66).unwrap(), raw);
    }

    #[test]
    fn rejects_garbage() {
        assert!(ecdsa_der_to_raw(&[], 32).is_err());
        assert!(ecdsa_der_to_raw(&hex("3006020101020102ff"), 32).is_err());
        assert!(ecdsa_der_to_raw(&hex("30060201ff020102"), 32).is_err());
        assert!(ecdsa_der_to_raw(&hex("3006020101020102"), 0).is_err());
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
        assert!(ecdsa_raw_to_der(&[0, 0, 1, 1]).is_err());
    }
}
