//! The checks a timestamp token passes before keyward writes it into a Notary envelope: the
//! ones `notation verify` makes later (specs/trust-store-trust-policy.md, "Validate Authentic
//! Timestamp"; notation-go `verifyTimestamp`, tspclient-go), made at signing time so a bad
//! token is refused while it can still be replaced.
//!
//! - the token is a CMS SignedData over a TSTInfo, whose imprint is the hash of this
//!   envelope's signature, with the hash the Notary Project prescribes for the signing key;
//! - the nonce is the one the request carried (when we know the request);
//! - the TSA's signature verifies (OpenSSL's CMS_verify, with only the certificate the
//!   signer info names) and the ESS signing-certificate-v2 attribute binds that certificate;
//! - the TSA certificate is a timestamping certificate: extended key usage timeStamping only
//!   and critical, key usage digitalSignature, an RSA key of 2048 bits or more or an EC key of
//!   256 bits or more, valid at the time stamped; with a root (`--timestamp-root-cert`) its
//!   chain leads to that root (OpenSSL's chain building with the timestamp-signing purpose, at
//!   the time stamped) and every CA on it has key usage keyCertSign;
//! - the time stamped, widened by the token's accuracy, lies inside the validity of every
//!   certificate of the signing chain.

use der::asn1::OctetString;
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode, Sequence};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509, X509PurposeId, X509StoreContext};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_tsp::TstInfo;

use super::tsp::ImprintHash;

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_AA_SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const ID_CE_SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
/// ETSI's baseline time-stamp policy (RFC 3628): without an accuracy field it means 1 s.
const BASELINE_TIMESTAMP_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("0.4.0.2023.1.1");

/// ESS `SigningCertificateV2` (RFC 5035); `x509-tsp` and `cms` have no type for it.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

/// ESS `ESSCertIDv2`: the hash of the signer's certificate (SHA-256 when no algorithm is given).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertIdV2 {
    #[asn1(optional = "true")]
    hash_algorithm: Option<cms::cert::x509::spki::AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

/// What the token must match.
#[derive(Debug)]
pub struct Expected<'a> {
    /// The envelope's signature bytes (what was timestamped).
    pub signature: &'a [u8],
    /// The imprint hash the Notary Project prescribes for the signing key.
    pub hash: ImprintHash,
    /// The request's nonce, when the request is known.
    pub nonce: Option<&'a [u8]>,
    /// The envelope's certificate chain (DER, leaf first).
    pub signing_chain: &'a [Vec<u8>],
    /// The trusted TSA roots (`--timestamp-root-cert`); empty: the chain is not checked.
    pub roots: &'a [X509],
}

/// A token that passed.
#[derive(Debug)]
pub struct Checked {
    /// The time stamped (TSTInfo genTime), seconds since the Unix epoch.
    pub time: i64,
    /// The token's accuracy in milliseconds.
    pub accuracy_ms: i64,
    /// The TSA certificate's subject.
    pub tsa: String,
    /// The chain was checked up to a given root.
    pub chain_checked: bool,
}

/// Runs every check on `token` (a DER `TimeStampToken`); the error names the check that failed.
pub fn check(token: &[u8], expected: &Expected<'_>) -> Result<Checked, String> {
    let content = cms::content_info::ContentInfo::from_der(token)
        .map_err(|e| format!("the token is not a DER CMS ContentInfo ({e})"))?;
    if content.content_type != ID_SIGNED_DATA {
        return Err(format!(
            "the token is a CMS {} where RFC 3161 requires SignedData",
            content.content_type
        ));
    }
    let signed: cms::signed_data::SignedData = content
        .content
        .decode_as()
        .map_err(|e| format!("the token's SignedData cannot be read ({e})"))?;
    let info = tst_info(&signed)?;

    // The imprint: the hash of this envelope's signature, with the prescribed hash.
    let imprint = &info.message_imprint;
    let hash = ImprintHash::from_oid(&imprint.hash_algorithm.oid).ok_or_else(|| {
        format!(
            "message imprint check failed: the token hashes with {}, which Notary timestamps do not use",
            imprint.hash_algorithm.oid
        )
    })?;
    if hash != expected.hash {
        return Err(format!(
            "message imprint check failed: the token hashes with {} but the Notary Project timestamps this key's signatures with {}",
            hash.name(),
            expected.hash.name()
        ));
    }
    if imprint.hashed_message.as_bytes() != expected.hash.digest(expected.signature).as_slice() {
        return Err(
            "message imprint check failed: the token is not over this envelope's signature (it answers another request)"
                .into(),
        );
    }
    if let Some(nonce) = expected.nonce {
        let answered = info.nonce.as_ref().map(|n| n.as_bytes());
        if answered != Some(nonce) {
            return Err(
                "nonce check failed: the token does not carry the nonce of the request (a replayed or mismatched response)"
                    .into(),
            );
        }
    }
    let time = info.gen_time.to_unix_duration().as_secs() as i64;
    let accuracy_ms = accuracy_ms(&info);

    // The TSA's signature, by the certificate its signer info names.
    let [signer_info] = signed.signer_infos.0.as_slice() else {
        return Err(format!(
            "signature check failed: the token has {} signer infos; an RFC 3161 token has one",
            signed.signer_infos.0.len()
        ));
    };
    let signer_der = signer_certificate(&signed, signer_info)?;
    check_ess_binding(signer_info, &signer_der)?;
    check_cms_signature(token, &signer_der)?;
    let (_, signer) = X509Certificate::from_der(&signer_der)
        .map_err(|e| format!("TSA certificate check failed: it cannot be parsed ({e})"))?;
    let tsa = signer.subject().to_string();
    check_tsa_leaf(&signer, &signer_der, time)?;

    let chain_checked = !expected.roots.is_empty();
    if chain_checked {
        check_chain(&signed, &signer_der, expected.roots, time)?;
    }
    check_signing_chain_validity(expected.signing_chain, time, accuracy_ms)?;
    Ok(Checked {
        time,
        accuracy_ms,
        tsa,
        chain_checked,
    })
}

fn tst_info(signed: &cms::signed_data::SignedData) -> Result<TstInfo, String> {
    let encapsulated = &signed.encap_content_info;
    if encapsulated.econtent_type != ID_CT_TST_INFO {
        return Err(format!(
            "the token signs a {} where RFC 3161 requires a TSTInfo",
            encapsulated.econtent_type
        ));
    }
    let octets: OctetString = encapsulated
        .econtent
        .as_ref()
        .ok_or("the token's TSTInfo is missing")?
        .decode_as()
        .map_err(|e| format!("the token's TSTInfo cannot be read ({e})"))?;
    TstInfo::from_der(octets.as_bytes())
        .map_err(|e| format!("the token's TSTInfo cannot be read ({e})"))
}

/// The accuracy the Notary Project uses: the token's, else 1 s under the baseline policy, else 0.
fn accuracy_ms(info: &TstInfo) -> i64 {
    match &info.accuracy {
        Some(accuracy) => {
            accuracy.seconds.unwrap_or(0) as i64 * 1000
                + i64::from(accuracy.millis.unwrap_or(0))
                + i64::from(accuracy.micros.unwrap_or(0)) / 1000
        }
        None if info.policy == BASELINE_TIMESTAMP_POLICY => 1000,
        None => 0,
    }
}

/// The DER certificate the signer info names (issuer and serial, or subject key identifier).
fn signer_certificate(
    signed: &cms::signed_data::SignedData,
    signer: &cms::signed_data::SignerInfo,
) -> Result<Vec<u8>, String> {
    use cms::cert::CertificateChoices;
    use cms::signed_data::SignerIdentifier;
    let certificates = signed.certificates.iter().flat_map(|set| set.0.iter());
    for choice in certificates {
        let CertificateChoices::Certificate(cert) = choice else {
            continue;
        };
        let tbs = &cert.tbs_certificate;
        let matches = match &signer.sid {
            SignerIdentifier::IssuerAndSerialNumber(id) => {
                tbs.issuer == id.issuer && tbs.serial_number == id.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => tbs
                .extensions
                .iter()
                .flatten()
                .filter(|ext| ext.extn_id == ID_CE_SUBJECT_KEY_IDENTIFIER)
                .any(|ext| {
                    OctetString::from_der(ext.extn_value.as_bytes())
                        .is_ok_and(|id| id.as_bytes() == ski.0.as_bytes())
                }),
        };
        if matches {
            return cert
                .to_der()
                .map_err(|e| format!("cannot encode the TSA certificate: {e}"));
        }
    }
    Err("signature check failed: the token does not carry the TSA's certificate (the request must set certReq, and the TSA must honour it)".into())
}

/// ESS signing-certificate-v2 must name the signer's certificate by its hash (RFC 5035; notation
/// refuses tokens without it).
fn check_ess_binding(
    signer: &cms::signed_data::SignerInfo,
    signer_der: &[u8],
) -> Result<(), String> {
    let attribute = signer
        .signed_attrs
        .iter()
        .flat_map(|attrs| attrs.iter())
        .find(|attr| attr.oid == ID_AA_SIGNING_CERTIFICATE_V2)
        .ok_or(
            "signing-certificate check failed: the token has no ESS signing-certificate-v2 attribute (RFC 5035), which notation requires",
        )?;
    let value: SigningCertificateV2 = attribute
        .values
        .get(0)
        .ok_or("signing-certificate check failed: the attribute is empty")?
        .decode_as()
        .map_err(|e| format!("signing-certificate check failed: unreadable attribute ({e})"))?;
    let first = value
        .certs
        .first()
        .ok_or("signing-certificate check failed: the attribute names no certificate")?;
    let hash = match &first.hash_algorithm {
        None => ImprintHash::Sha256,
        Some(algorithm) => ImprintHash::from_oid(&algorithm.oid).ok_or_else(|| {
            format!(
                "signing-certificate check failed: the certificate is hashed with {}, not SHA-2",
                algorithm.oid
            )
        })?,
    };
    if first.cert_hash.as_bytes() != hash.digest(signer_der).as_slice() {
        return Err("signing-certificate check failed: the ESS attribute names another certificate than the one that signed".into());
    }
    Ok(())
}

/// OpenSSL checks the signature over the signed attributes and their message digest of the
/// TSTInfo, with the signer's certificate only (the chain is checked separately).
fn check_cms_signature(token: &[u8], signer_der: &[u8]) -> Result<(), String> {
    let failed = |e: openssl::error::ErrorStack| format!("signature check failed: {e}");
    let mut cms = CmsContentInfo::from_der(token).map_err(failed)?;
    let mut certs = Stack::new().map_err(failed)?;
    certs
        .push(X509::from_der(signer_der).map_err(failed)?)
        .map_err(failed)?;
    cms.verify(
        Some(&certs),
        None,
        None,
        None,
        CMSOptions::NOINTERN | CMSOptions::NO_SIGNER_CERT_VERIFY,
    )
    .map_err(|e| {
        format!("signature check failed: the TSA's signature over the token does not verify ({e})")
    })
}

/// A timestamping certificate as the Notary Project defines one, valid at the time stamped.
fn check_tsa_leaf(cert: &X509Certificate<'_>, der: &[u8], time: i64) -> Result<(), String> {
    let subject = cert.subject().to_string();
    let bad = |what: &str| format!("TSA certificate check failed: {subject:?} {what}");
    match cert.extended_key_usage() {
        Ok(Some(eku))
            if eku.critical
                && eku.value.time_stamping
                && eku.value.other.is_empty()
                && !(eku.value.any
                    || eku.value.server_auth
                    || eku.value.client_auth
                    || eku.value.code_signing
                    || eku.value.email_protection
                    || eku.value.ocsp_signing) => {}
        _ => {
            return Err(bad(
                "must have a critical extended key usage of timeStamping only",
            ));
        }
    }
    match cert.key_usage() {
        Ok(Some(ku))
            if ku.value.digital_signature()
                && !(ku.value.key_encipherment()
                    || ku.value.data_encipherment()
                    || ku.value.key_agreement()
                    || ku.value.key_cert_sign()
                    || ku.value.crl_sign()
                    || ku.value.encipher_only()
                    || ku.value.decipher_only()) => {}
        _ => {
            return Err(bad(
                "must have key usage digitalSignature (and no encipherment or CA usage)",
            ));
        }
    }
    if let Ok(Some(bc)) = cert.basic_constraints()
        && bc.value.ca
    {
        return Err(bad("is a CA certificate; a TSA signs with a leaf"));
    }
    let key = X509::from_der(der)
        .and_then(|c| c.public_key())
        .map_err(|e| bad(&format!("has an unreadable key ({e})")))?;
    let minimum = match key.id() {
        openssl::pkey::Id::RSA => 2048,
        openssl::pkey::Id::EC => 256,
        _ => return Err(bad("has a key that is neither RSA nor EC")),
    };
    if key.bits() < minimum {
        return Err(bad(&format!(
            "has a {}-bit key; the Notary Project requires at least {minimum}",
            key.bits()
        )));
    }
    let validity = cert.validity();
    if time < validity.not_before.timestamp() || time > validity.not_after.timestamp() {
        return Err(bad(&format!(
            "was not valid at the time stamped ({}; valid {} to {})",
            super::envelope::rfc3339(time),
            validity.not_before,
            validity.not_after
        )));
    }
    Ok(())
}

/// The TSA's chain leads to one of `roots`, checked at the time stamped with OpenSSL's
/// timestamp-signing purpose; every CA on it may sign certificates.
fn check_chain(
    signed: &cms::signed_data::SignedData,
    signer_der: &[u8],
    roots: &[X509],
    time: i64,
) -> Result<(), String> {
    let failed = |e: openssl::error::ErrorStack| format!("chain check failed: {e}");
    let mut store = X509StoreBuilder::new().map_err(failed)?;
    for root in roots {
        store.add_cert(root.clone()).map_err(failed)?;
    }
    let mut param = X509VerifyParam::new().map_err(failed)?;
    param
        .set_purpose(X509PurposeId::TIMESTAMP_SIGN)
        .map_err(failed)?;
    param.set_time(time as _);
    store.set_param(&param).map_err(failed)?;
    let store = store.build();
    let mut untrusted = Stack::new().map_err(failed)?;
    for choice in signed.certificates.iter().flat_map(|set| set.0.iter()) {
        if let cms::cert::CertificateChoices::Certificate(cert) = choice {
            let der = cert
                .to_der()
                .map_err(|e| format!("chain check failed: {e}"))?;
            untrusted
                .push(X509::from_der(&der).map_err(failed)?)
                .map_err(failed)?;
        }
    }
    let signer = X509::from_der(signer_der).map_err(failed)?;
    let mut context = X509StoreContext::new().map_err(failed)?;
    let chain = context
        .init(&store, &signer, &untrusted, |ctx| {
            if ctx.verify_cert()? {
                let chain = ctx.chain().map(|chain| {
                    chain
                        .iter()
                        .filter_map(|cert| cert.to_der().ok())
                        .collect::<Vec<_>>()
                });
                Ok(Ok(chain.unwrap_or_default()))
            } else {
                Ok(Err(ctx.error().error_string()))
            }
        })
        .map_err(failed)?
        .map_err(|reason| {
            format!(
                "chain check failed: the TSA's certificate does not lead to the given --timestamp-root-cert ({reason}); the response comes from another TSA, or the root file is not this TSA's root"
            )
        })?;
    for der in chain.iter().skip(1) {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("chain check failed: unreadable CA certificate ({e})"))?;
        let signs_certificates =
            matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
        if !signs_certificates {
            return Err(format!(
                "chain check failed: CA certificate {:?} must have key usage keyCertSign",
                cert.subject().to_string()
            ));
        }
    }
    Ok(())
}

/// The time stamped, widened by the accuracy, inside every signing certificate's validity.
fn check_signing_chain_validity(
    chain: &[Vec<u8>],
    time: i64,
    accuracy_ms: i64,
) -> Result<(), String> {
    let lower_ms = time * 1000 - accuracy_ms;
    let upper_ms = time * 1000 + accuracy_ms;
    for der in chain {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("time check failed: unreadable signing certificate ({e})"))?;
        let validity = cert.validity();
        if lower_ms < validity.not_before.timestamp() * 1000
            || upper_ms > validity.not_after.timestamp() * 1000
        {
            return Err(format!(
                "time check failed: the time stamped ({} ± {} ms) is outside the validity of signing certificate {:?} ({} to {})",
                super::envelope::rfc3339(time),
                accuracy_ms,
                cert.subject().to_string(),
                validity.not_before,
                validity.not_after
            ));
        }
    }
    Ok(())
}
