//! The `yubikey` backend: PIV keys on a YubiKey, over PC/SC with the `yubikey` crate (0.9).
//!
//! - A key's reference is its PIV slot: `9a`, `9c`, `9d`, `9e` or a retired slot `82`..`95`.
//!   Keys are listed from the slot certificates (a generated key gets a self-signed one so that
//!   its public key can be read back on any firmware); policies come from the slot metadata when
//!   the device reports it (firmware 5.3+).
//! - Signing: ECDSA P-256/P-384 (the card returns DER), RSA-2048/3072/4096 with PKCS#1 v1.5 or
//!   PSS padding done on the host ([`padding`]), Ed25519 (firmware 5.7+).
//! - Generate options (`keyward keys generate --slot 9d --pin-policy once --touch-policy
//!   always`): `slot`, `pin_policy`, `touch_policy`; without `slot` the key id names the slot,
//!   else the first empty retired slot is used. A named slot that holds a key is refused.
//! - Keys carry attributes (`keyward keys show`): `slot`, `pin_policy`, `touch_policy` (from
//!   the slot metadata, else as requested at generation, see `policy_source`), `origin`,
//!   `attestation` (PEM, when the device attests the slot). They are cached per slot and
//!   public key.
//! - `keyward yubikey unlock` ([`Backend::unlock`]): a PIN checked on the card, then kept in
//!   memory until its ttl ends; it takes precedence over `pin_env`/`pin_file`.
//! - The card is opened for a burst of operations and released after `idle_release_ms`, so ykman
//!   and gpg can use it in between ([`device`]). A rejected PIN is reported once and never
//!   retried until the PIN source changes. A sign that waits for a touch gives up after
//!   `touch_timeout_secs` with an error that says to touch the YubiKey.
//!
//! Private keys never leave the device.

mod device;
pub mod padding;
mod settings;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyward_plugin_api::{
    Backend, BackendError, EcdsaFormat, KeyDescription, KeySpec, Secret, SignOp, Signature,
};
use openssl::pkey::{Id, PKey};
use x509_cert::der::Encode;
use yubikey::certificate::Certificate;
use yubikey::certificate::yubikey_signer::{Rsa2048, Rsa3072, Rsa4096, YubiRsa};
use yubikey::piv::{self, AlgorithmId, RetiredSlotId, SlotId};
use yubikey::{PinPolicy, TouchPolicy};

use crate::device::{CardResult, Device, Session, card_error, no_pin};
use crate::settings::{PIN_POLICIES, TOUCH_POLICIES};

pub use settings::{ManagementKey, SecretSource, YubikeySettings};

/// The slots keys may live in, in listing order.
pub const SLOTS: [&str; 24] = [
    "9a", "9c", "9d", "9e", "82", "83", "84", "85", "86", "87", "88", "89", "8a", "8b", "8c", "8d",
    "8e", "8f", "90", "91", "92", "93", "94", "95",
];

/// A YubiKey's PIV application as a keyward backend.
#[derive(Debug)]
pub struct YubikeyBackend {
    device: Arc<Device>,
}

fn parse_slot(reference: &str) -> Option<SlotId> {
    let name = reference.strip_prefix("slot-").unwrap_or(reference);
    if !SLOTS.contains(&name.to_ascii_lowercase().as_str()) {
        return None;
    }
    let byte = u8::from_str_radix(name, 16).ok()?;
    match byte {
        0x9a => Some(SlotId::Authentication),
        0x9c => Some(SlotId::Signature),
        0x9d => Some(SlotId::KeyManagement),
        0x9e => Some(SlotId::CardAuthentication),
        _ => RetiredSlotId::try_from(byte).ok().map(SlotId::Retired),
    }
}

fn slot_name(slot: SlotId) -> String {
    format!("{:02x}", u8::from(slot))
}

fn spec_of(spki_der: &[u8]) -> Result<KeySpec, BackendError> {
    let key = PKey::public_key_from_der(spki_der)
        .map_err(|e| BackendError::Internal(format!("unreadable public key: {e}")))?;
    match key.id() {
        Id::EC => {
            let ec = key
                .ec_key()
                .map_err(|e| BackendError::Internal(e.to_string()))?;
            match ec.group().curve_name() {
                Some(openssl::nid::Nid::X9_62_PRIME256V1) => Ok(KeySpec::EcP256),
                Some(openssl::nid::Nid::SECP384R1) => Ok(KeySpec::EcP384),
                other => Err(BackendError::Unsupported(format!("curve {other:?}"))),
            }
        }
        Id::RSA => match key.bits() {
            2048 => Ok(KeySpec::Rsa2048),
            3072 => Ok(KeySpec::Rsa3072),
            4096 => Ok(KeySpec::Rsa4096),
            bits => Err(BackendError::Unsupported(format!("RSA-{bits}"))),
        },
        Id::ED25519 => Ok(KeySpec::Ed25519),
        other => Err(BackendError::Unsupported(format!("key type {other:?}"))),
    }
}

fn algorithm_of(spec: KeySpec) -> Option<AlgorithmId> {
    Some(match spec {
        KeySpec::EcP256 => AlgorithmId::EccP256,
        KeySpec::EcP384 => AlgorithmId::EccP384,
        KeySpec::Rsa2048 => AlgorithmId::Rsa2048,
        KeySpec::Rsa3072 => AlgorithmId::Rsa3072,
        KeySpec::Rsa4096 => AlgorithmId::Rsa4096,
        KeySpec::Ed25519 => AlgorithmId::Ed25519,
        KeySpec::EcP521 => return None,
    })
}

fn pin_policy(name: &str) -> PinPolicy {
    match name {
        "never" => PinPolicy::Never,
        "once" => PinPolicy::Once,
        "always" => PinPolicy::Always,
        _ => PinPolicy::Default,
    }
}

fn touch_policy(name: &str) -> TouchPolicy {
    match name {
        "never" => TouchPolicy::Never,
        "always" => TouchPolicy::Always,
        "cached" => TouchPolicy::Cached,
        _ => TouchPolicy::Default,
    }
}

/// The key in `slot` from its certificate, `None` for an empty slot.
/// The PIV data object that holds `slot`'s certificate (NIST SP 800-73-4 part 1, table 3;
/// the yubikey crate keeps its own table private).
fn certificate_object(slot: SlotId) -> Option<u32> {
    Some(match slot {
        SlotId::Authentication => 0x005f_c105,
        SlotId::Signature => 0x005f_c10a,
        SlotId::KeyManagement => 0x005f_c10b,
        SlotId::CardAuthentication => 0x005f_c101,
        // Retired slots 82..95 hold their certificates in 5FC10D..5FC120.
        SlotId::Retired(retired) => 0x005f_c10d + u32::from(u8::from(retired)) - 0x82,
        _ => return None,
    })
}

/// The DER certificate inside a PIV certificate object: the value of its `70` TLV (BER
/// length), or the whole object when it has no such wrapper.
fn certificate_der(object: &[u8]) -> Option<&[u8]> {
    match object {
        [] => None,
        [0x70, rest @ ..] => {
            let (len, value) = match rest {
                [n @ 0..=0x7f, value @ ..] => (usize::from(*n), value),
                [0x81, n, value @ ..] => (usize::from(*n), value),
                [0x82, hi, lo, value @ ..] => (usize::from(*hi) << 8 | usize::from(*lo), value),
                _ => return None,
            };
            value.get(..len)
        }
        whole => Some(whole),
    }
}

fn read_slot(session: &mut Session<'_>, slot: SlotId) -> CardResult<Option<KeyDescription>> {
    // One read of the slot's certificate object. (`Certificate::read` reports every failure, a
    // card that did not answer as well as an empty slot, as "no certificate".) Only NOT FOUND
    // means the slot is empty; anything else is the card not answering properly, worth a retry.
    let Some(object) = certificate_object(slot) else {
        return Ok(None);
    };
    let stored = match session.card().fetch_object(object) {
        Ok(stored) => stored,
        Err(yubikey::Error::NotFound) => return Ok(None),
        Err(e) => {
            return Err(BackendError::unavailable(format!(
                "the YubiKey did not answer properly while reading the certificate of slot {}: {e}; retry",
                slot_name(slot)
            )));
        }
    };
    // A certificate that does not parse is treated like none: the slot can be generated again.
    let Some(cert) =
        certificate_der(&stored).and_then(|der| Certificate::from_bytes(der.to_vec()).ok())
    else {
        return Ok(None);
    };
    let der = cert
        .subject_pki()
        .to_der()
        .map_err(|e| BackendError::Internal(format!("certificate public key: {e}")))?;
    let spec = spec_of(&der)?;
    Ok(Some(KeyDescription {
        reference: slot_name(slot),
        spec,
        public_key_der: der,
        version: None,
        openpgp_certificate: None,
        attributes: BTreeMap::new(),
        algorithms: Vec::new(),
    }))
}

/// The key in `slot` with its attributes (see [`slot_attributes`]).
fn describe_slot(session: &mut Session<'_>, slot: SlotId) -> CardResult<Option<KeyDescription>> {
    let Some(mut key) = read_slot(session, slot)? else {
        return Ok(None);
    };
    key.attributes = slot_attributes(session, slot, &key.public_key_der, None)?;
    Ok(Some(key))
}

fn pin_policy_name(policy: PinPolicy) -> &'static str {
    match policy {
        PinPolicy::Default => "default",
        PinPolicy::Never => "never",
        PinPolicy::Once => "once",
        PinPolicy::Always => "always",
    }
}

fn touch_policy_name(policy: TouchPolicy) -> &'static str {
    match policy {
        TouchPolicy::Default => "default",
        TouchPolicy::Never => "never",
        TouchPolicy::Always => "always",
        TouchPolicy::Cached => "cached",
    }
}

/// What is known about the key in `slot` beyond its certificate: `slot`; `pin_policy` and
/// `touch_policy` from the slot metadata (firmware 5.3+, `policy_source = "device"`), else as
/// `requested` at generation (`policy_source = "requested"`, this process only); `origin`;
/// `attestation`, the attestation certificate (PEM) when the device attests the slot. Cached
/// per slot for the public key `spki_der`, so the card is asked once.
fn slot_attributes(
    session: &mut Session<'_>,
    slot: SlotId,
    spki_der: &[u8],
    requested: Option<(&str, &str)>,
) -> CardResult<BTreeMap<String, String>> {
    let id = u8::from(slot);
    if requested.is_none()
        && let Some(cached) = session.cached_attributes(id, spki_der)
    {
        return Ok(cached);
    }
    let gone =
        || BackendError::unavailable("the YubiKey stopped answering while reading slot metadata");
    let mut attributes = BTreeMap::from([("slot".to_string(), slot_name(slot))]);
    match piv::metadata(session.card(), slot) {
        Ok(metadata) => {
            if let Some((pin, touch)) = metadata.policy {
                attributes.insert("pin_policy".into(), pin_policy_name(pin).into());
                attributes.insert("touch_policy".into(), touch_policy_name(touch).into());
                attributes.insert("policy_source".into(), "device".into());
            }
            if let Some(origin) = metadata.origin {
                let origin = match origin {
                    piv::Origin::Generated => "generated",
                    piv::Origin::Imported => "imported",
                };
                attributes.insert("origin".into(), origin.into());
            }
        }
        Err(yubikey::Error::PcscError { .. }) => return Err(gone()),
        Err(e) => {
            tracing::debug!(slot = %slot_name(slot), "no slot metadata: {}", device::describe_error(&e))
        }
    }
    if !attributes.contains_key("pin_policy")
        && let Some((pin, touch)) = requested
    {
        attributes.insert("pin_policy".into(), pin.into());
        attributes.insert("touch_policy".into(), touch.into());
        attributes.insert("policy_source".into(), "requested".into());
    }
    match piv::attest(session.card(), slot) {
        Ok(der) => match openssl::x509::X509::from_der(&der) {
            Ok(_) => {
                attributes.insert(
                    "attestation".into(),
                    keyward_plugin_api::pemfile::encode(
                        keyward_plugin_api::pemfile::CERTIFICATE,
                        &der,
                    ),
                );
            }
            Err(e) => {
                tracing::warn!(slot = %slot_name(slot), "unreadable attestation certificate: {e}")
            }
        },
        Err(yubikey::Error::PcscError { .. }) => return Err(gone()),
        Err(e) => {
            tracing::debug!(slot = %slot_name(slot), "no attestation: {}", device::describe_error(&e))
        }
    }
    session.cache_attributes(id, spki_der.to_vec(), attributes.clone());
    Ok(attributes)
}

/// The generate options of a `yubikey` backend: the slot (if named) and the policies.
fn generate_options(
    device: &Device,
    name: &str,
    options: &BTreeMap<String, String>,
) -> Result<(Option<SlotId>, String, String), BackendError> {
    let mut slot = None;
    let mut pin = device.settings.pin_policy.clone();
    let mut touch = device.settings.touch_policy.clone();
    for (option, value) in options {
        let value = value.trim().to_ascii_lowercase();
        match option.as_str() {
            "slot" => {
                slot = Some(parse_slot(&value).ok_or_else(|| {
                    BackendError::InvalidInput(format!(
                        "yubikey key {name:?}: slot {value:?} is not a PIV slot; use 9a, 9c, 9d, 9e or 82..95"
                    ))
                })?);
            }
            "pin_policy" if PIN_POLICIES.contains(&value.as_str()) => pin = value,
            "touch_policy" if TOUCH_POLICIES.contains(&value.as_str()) => touch = value,
            "pin_policy" => {
                return Err(BackendError::InvalidInput(format!(
                    "yubikey key {name:?}: pin policy {value:?}: use never, once or always"
                )));
            }
            "touch_policy" => {
                return Err(BackendError::InvalidInput(format!(
                    "yubikey key {name:?}: touch policy {value:?}: use never, always or cached"
                )));
            }
            other => {
                return Err(BackendError::InvalidInput(format!(
                    "yubikey key {name:?}: unknown generate option {other:?}; the yubikey backend takes slot, pin_policy and touch_policy"
                )));
            }
        }
    }
    Ok((slot, pin, touch))
}

impl YubikeyBackend {
    /// Checks the settings. The card is opened at the first call, so the daemon starts without
    /// the YubiKey plugged in (its keys answer `UNAVAILABLE` until it is).
    pub fn new(settings: YubikeySettings) -> Result<Self, BackendError> {
        if let Some(pin) = &settings.pin {
            pin.read("pin")?;
        }
        let backend = YubikeyBackend {
            device: Device::new(settings),
        };
        Ok(backend)
    }

    /// Runs `op` on a blocking thread. With `timeout`, the wait is limited once `op` has the
    /// card (it sends on `started`): a call queued behind others is not a missing touch.
    async fn blocking<T: Send + 'static>(
        &self,
        what: String,
        timeout: Option<Duration>,
        op: impl FnOnce(&Device, Started) -> CardResult<T> + Send + 'static,
    ) -> Result<T, BackendError> {
        let device = self.device.clone();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let mut task = tokio::task::spawn_blocking(move || op(&device, Started(Some(started_tx))));
        let joined = match timeout {
            None => task.await,
            Some(limit) => match async {
                tokio::select! {
                    joined = &mut task => return Ok(joined),
                    _ = started_rx => {}
                }
                tokio::time::timeout(limit, task).await
            }
            .await
            {
                Ok(joined) => joined,
                Err(_) => {
                    return Err(BackendError::Timeout(format!(
                        "{what}: no touch within {}s; touch the YubiKey when its light blinks, then retry (touch_timeout_secs sets the wait)",
                        limit.as_secs()
                    )));
                }
            },
        };
        joined.map_err(|e| BackendError::Internal(format!("{what}: the card task failed: {e}")))?
    }
}

/// Tells [`YubikeyBackend::blocking`] that the operation holds the card now.
#[derive(Debug)]
struct Started(Option<tokio::sync::oneshot::Sender<()>>);

impl Started {
    fn now(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

fn key_error(reference: &str, e: BackendError) -> BackendError {
    let name = |m: String| format!("yubikey key {reference:?}: {m}");
    match e {
        BackendError::NotFound(m) => BackendError::NotFound(name(m)),
        BackendError::Unsupported(m) => BackendError::Unsupported(name(m)),
        BackendError::InvalidInput(m) => BackendError::InvalidInput(name(m)),
        BackendError::PermissionDenied(m) => BackendError::PermissionDenied(name(m)),
        BackendError::Unavailable {
            message,
            retry_after,
        } => BackendError::Unavailable {
            message: name(message),
            retry_after,
        },
        BackendError::Timeout(m) => BackendError::Timeout(name(m)),
        BackendError::Internal(m) => BackendError::Internal(name(m)),
        other => BackendError::Other(name(other.to_string()).into()),
    }
}

fn slot_or_error(reference: &str) -> Result<SlotId, BackendError> {
    parse_slot(reference).ok_or_else(|| {
        BackendError::NotFound(format!(
            "yubikey key {reference:?}: not a PIV slot; name a slot: 9a, 9c, 9d, 9e or 82..95"
        ))
    })
}

#[async_trait]
impl Backend for YubikeyBackend {
    fn backend_type(&self) -> &str {
        "yubikey"
    }

    async fn list_keys(&self) -> Result<Vec<KeyDescription>, BackendError> {
        self.blocking("list keys".into(), None, |device, _| {
            device.with_card(|session| {
                let mut keys = Vec::new();
                for name in SLOTS {
                    if let Some(slot) = parse_slot(name)
                        && let Some(key) = describe_slot(session, slot)?
                    {
                        keys.push(key);
                    }
                }
                Ok(keys)
            })
        })
        .await
    }

    async fn describe_key(&self, reference: &str) -> Result<KeyDescription, BackendError> {
        let slot = slot_or_error(reference)?;
        let reference = reference.to_owned();
        self.blocking(format!("describe {reference}"), None, move |device, _| {
            device
                .with_card(|session| describe_slot(session, slot))
                .and_then(|key| {
                    key.ok_or_else(|| {
                        BackendError::NotFound(format!(
                            "slot {} of {} holds no key (no certificate); generate one with `keyward keys generate --backend <name>`",
                            slot_name(slot),
                            device.describe()
                        ))
                    })
                })
                .map_err(|e| key_error(&reference, e))
        })
        .await
    }

    async fn sign(&self, reference: &str, op: SignOp<'_>) -> Result<Signature, BackendError> {
        let slot = slot_or_error(reference)?;
        let reference = reference.to_owned();
        let op = op.to_owned();
        let touch = self.device.settings.touch_timeout;
        let shown = reference.clone();
        let started = std::time::Instant::now();
        let result = self
            .blocking(
                format!("yubikey key {shown:?}"),
                Some(touch),
                move |device, mut started| {
                    device
                        .with_card(|session| {
                            started.now();
                            let key = read_slot(session, slot)?.ok_or_else(|| {
                                BackendError::NotFound(format!(
                                    "slot {} holds no key",
                                    slot_name(slot)
                                ))
                            })?;
                            let (card_input, alg_id) = card_input(&key, op.as_op())?;
                            let verified = session.verify_pin(false)?;
                            let sig = piv::sign_data(session.card(), &card_input, alg_id, slot)
                                .map_err(|e| match e {
                                    // The key wants the PIN and there is none to give.
                                    yubikey::Error::AuthenticationError
                                        if !verified && !session.has_pin() =>
                                    {
                                        no_pin(device)
                                    }
                                    e => card_error(device, "sign", &e),
                                })?;
                            Ok(Signature {
                                bytes: sig.to_vec(),
                                ecdsa_format: EcdsaFormat::Der,
                                key_version: None,
                            })
                        })
                        .map_err(|e| key_error(&reference, e))
                },
            )
            .await;
        if started.elapsed() > Duration::from_secs(1) {
            tracing::info!(key = %shown, elapsed_ms = started.elapsed().as_millis() as u64, "the yubikey sign waited (touch?)");
        }
        result
    }

    async fn generate_key(
        &self,
        name: &str,
        spec: KeySpec,
    ) -> Result<KeyDescription, BackendError> {
        self.generate_key_with(name, spec, &BTreeMap::new()).await
    }

    /// Options: `slot` (else the key id if it is a slot, else the first empty retired slot),
    /// `pin_policy`, `touch_policy` (else the backend config's).
    async fn generate_key_with(
        &self,
        name: &str,
        spec: KeySpec,
        options: &BTreeMap<String, String>,
    ) -> Result<KeyDescription, BackendError> {
        let (slot, pin, touch) = generate_options(&self.device, name, options)?;
        let alg = algorithm_of(spec).ok_or_else(|| {
            BackendError::Unsupported(format!(
                "yubikey key {name:?}: a YubiKey has no {spec} keys; use ec-p256, ec-p384, rsa-2048 (rsa-3072, rsa-4096, ed25519 on firmware 5.7+)"
            ))
        })?;
        let explicit = slot.is_some();
        let requested = slot.or_else(|| parse_slot(name));
        let name = name.to_owned();
        self.blocking(format!("generate {name}"), None, move |device, _| {
            device
                .with_card(|session| {
                    let new = NewKey {
                        name: &name,
                        slot: requested,
                        explicit,
                        spec,
                        alg,
                        pin_policy: &pin,
                        touch_policy: &touch,
                    };
                    generate(device, session, new)
                })
                .map_err(|e| key_error(&name, e))
        })
        .await
    }

    async fn unlock(&self, secret: Secret, ttl: Option<Duration>) -> Result<(), BackendError> {
        self.blocking("unlock".into(), None, move |device, _| {
            device.unlock(secret, ttl)
        })
        .await?;
        match ttl {
            Some(ttl) => tracing::info!(
                ttl_secs = ttl.as_secs(),
                "unlocked: the PIN is kept in memory"
            ),
            None => {
                tracing::info!("unlocked: the PIN is kept in memory until the backend restarts")
            }
        }
        Ok(())
    }
}

/// What to generate (see [`generate`]).
struct NewKey<'a> {
    name: &'a str,
    /// The slot named by the `slot` option or the key id; `None`: the first empty retired one.
    slot: Option<SlotId>,
    /// The slot came from the `slot` option: a key in it is not overwritten.
    explicit: bool,
    spec: KeySpec,
    alg: AlgorithmId,
    pin_policy: &'a str,
    touch_policy: &'a str,
}

/// What the card signs for `op` with `key`: PIV does raw RSA and raw ECDSA, so RSA padding
/// and the ECDSA digest's fit to the curve happen here ([`padding`]).
fn card_input(key: &KeyDescription, op: SignOp<'_>) -> CardResult<(Vec<u8>, AlgorithmId)> {
    let algorithm = op.algorithm();
    let alg = algorithm_of(key.spec)
        .ok_or_else(|| BackendError::Unsupported(format!("{} keys", key.spec)))?;
    if !key.spec.supports(algorithm) {
        return Err(BackendError::InvalidInput(format!(
            "a {} key cannot sign with {algorithm}",
            key.spec
        )));
    }
    let data = match op {
        SignOp::Ed25519 { message } => message.to_vec(),
        SignOp::Prehashed(prehashed) => match (key.spec.rsa_bits(), key.spec.ecdsa_field_len()) {
            (_, Some(field_len)) => padding::ecdsa_input(prehashed.digest(), field_len),
            (Some(bits), _) if algorithm.is_rsa_pss() => {
                padding::pss(prehashed.digest(), prehashed.hash(), bits as usize)?
            }
            (Some(bits), _) => {
                padding::pkcs1_v15(prehashed.digest(), prehashed.hash(), bits as usize / 8)?
            }
            (None, None) => {
                return Err(BackendError::InvalidInput(format!(
                    "a {} key cannot sign with {algorithm}",
                    key.spec
                )));
            }
        },
    };
    Ok((data, alg))
}

fn generate(
    device: &Device,
    session: &mut Session<'_>,
    new: NewKey<'_>,
) -> CardResult<KeyDescription> {
    let NewKey {
        name, spec, alg, ..
    } = new;
    let slot = match new.slot {
        Some(slot) => {
            if new.explicit && read_slot(session, slot)?.is_some() {
                return Err(BackendError::InvalidInput(format!(
                    "slot {} of {} already holds a key; keyward never overwrites one: choose another slot, or delete it first (`ykman piv keys delete {0}`, `ykman piv certificates delete {0}`)",
                    slot_name(slot),
                    device.describe()
                )));
            }
            slot
        }
        None => {
            let mut free = None;
            for candidate in SLOTS[4..].iter().filter_map(|s| parse_slot(s)) {
                if read_slot(session, candidate)?.is_none() {
                    free = Some(candidate);
                    break;
                }
            }
            free.ok_or_else(|| {
                BackendError::InvalidInput(format!(
                    "every retired slot (82..95) of {} holds a key; free one with `ykman piv keys delete` or name a slot as the key id (e.g. 9c)",
                    device.describe()
                ))
            })?
        }
    };
    session.authenticate()?;
    let spki = piv::generate(
        session.card(),
        slot,
        alg,
        pin_policy(new.pin_policy),
        touch_policy(new.touch_policy),
    )
    .map_err(|e| card_error(device, "generate a key", &e))?;
    tracing::info!(slot = %slot_name(slot), %spec, pin_policy = new.pin_policy, touch_policy = new.touch_policy, "generated a key on the yubikey");
    // A self-signed certificate makes the public key readable from the slot on every firmware
    // (ykman does the same); signing it needs the PIN.
    session.verify_pin(true)?;
    let subject = x509_cert::name::Name::from_str(&format!("CN=keyward {name}"))
        .map_err(|e| BackendError::InvalidInput(format!("certificate subject: {e}")))?;
    let serial = x509_cert::serial_number::SerialNumber::new(&[0x01])
        .map_err(|e| BackendError::Internal(e.to_string()))?;
    let validity = x509_cert::time::Validity::from_now(Duration::from_secs(20 * 365 * 86400))
        .map_err(|e| BackendError::Internal(e.to_string()))?;
    let card = session.card();
    let written = match spec {
        KeySpec::EcP256 => Certificate::generate_self_signed::<_, p256_yk::NistP256>(
            card,
            slot,
            serial,
            validity,
            subject,
            spki,
            |_| Ok(()),
        ),
        KeySpec::EcP384 => Certificate::generate_self_signed::<_, p384_yk::NistP384>(
            card,
            slot,
            serial,
            validity,
            subject,
            spki,
            |_| Ok(()),
        ),
        KeySpec::Rsa2048 => Certificate::generate_self_signed::<_, YubiRsa<Rsa2048>>(
            card,
            slot,
            serial,
            validity,
            subject,
            spki,
            |_| Ok(()),
        ),
        KeySpec::Rsa3072 => Certificate::generate_self_signed::<_, YubiRsa<Rsa3072>>(
            card,
            slot,
            serial,
            validity,
            subject,
            spki,
            |_| Ok(()),
        ),
        KeySpec::Rsa4096 => Certificate::generate_self_signed::<_, YubiRsa<Rsa4096>>(
            card,
            slot,
            serial,
            validity,
            subject,
            spki,
            |_| Ok(()),
        ),
        _ => {
            return Err(BackendError::Unsupported(format!(
                "generating {spec} keys is not supported yet"
            )));
        }
    };
    written.map_err(|e| card_error(device, "write the slot certificate", &e))?;
    let mut key = read_slot(session, slot)?.ok_or_else(|| {
        BackendError::Internal(format!(
            "slot {} is empty after generation",
            slot_name(slot)
        ))
    })?;
    key.attributes = slot_attributes(
        session,
        slot,
        &key.public_key_der,
        Some((new.pin_policy, new.touch_policy)),
    )?;
    if key.attributes.contains_key("attestation") {
        tracing::info!(slot = %slot_name(slot), "the yubikey attested the new key");
    } else {
        tracing::info!(slot = %slot_name(slot), "no attestation for the new key (the device gave none)");
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_der_unwraps_the_cert_tlv() {
        assert_eq!(
            certificate_der(&[0x70, 2, 0x30, 0x00, 0x71, 1, 0]),
            Some(&[0x30, 0x00][..])
        );
        let long = [vec![0x70, 0x82, 0x01, 0x00], vec![7; 256], vec![0x71, 1, 0]].concat();
        assert_eq!(certificate_der(&long), Some(&[7u8; 256][..]));
        assert_eq!(certificate_der(&[0x70, 0x81, 5, 1]), None, "truncated");
        assert_eq!(certificate_der(&[0x30, 0x00]), Some(&[0x30, 0x00][..]));
        assert_eq!(certificate_der(&[]), None);
    }

    #[test]
    fn certificate_objects_follow_the_piv_table() {
        let object = |name: &str| certificate_object(parse_slot(name).unwrap());
        assert_eq!(object("9a"), Some(0x005f_c105));
        assert_eq!(object("9c"), Some(0x005f_c10a));
        assert_eq!(object("9d"), Some(0x005f_c10b));
        assert_eq!(object("9e"), Some(0x005f_c101));
        assert_eq!(object("82"), Some(0x005f_c10d));
        assert_eq!(object("95"), Some(0x005f_c120));
    }

    #[test]
    fn slots_parse_both_ways() {
        for name in SLOTS {
            let slot = parse_slot(name).unwrap();
            assert_eq!(slot_name(slot), name);
        }
        assert_eq!(parse_slot("slot-9c"), Some(SlotId::Signature));
        assert_eq!(parse_slot("9b"), None);
        assert_eq!(parse_slot("release-key"), None);
    }

    #[test]
    fn generate_options_are_checked() {
        let settings: YubikeySettings =
            serde_json::from_str(r#"{"touch_policy":"always"}"#).unwrap();
        let device = Device::new(settings);
        let options = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let (slot, pin, touch) = generate_options(
            &device,
            "k",
            &options(&[("slot", "9D"), ("pin_policy", "once")]),
        )
        .unwrap();
        assert_eq!(
            (slot, pin.as_str(), touch.as_str()),
            (Some(SlotId::KeyManagement), "once", "always")
        );
        for (pairs, needle) in [
            (&[("slot", "9b")][..], "not a PIV slot"),
            (&[("pin_policy", "sometimes")][..], "pin policy"),
            (&[("touch_policy", "once")][..], "touch policy"),
            (
                &[("colour", "red")][..],
                "unknown generate option \"colour\"",
            ),
        ] {
            let err = generate_options(&device, "k", &options(pairs)).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
            assert!(matches!(err, BackendError::InvalidInput(_)));
        }
    }
}
