//! `keyward-virtual-piv`: a virtual PIV card for the yubikey backend's tests.
//!
//! Nitrokey's PIV applet (`piv-authenticator`) runs on trussed's virtual platform and is attached
//! to `vsmartcard-vpcd` (a pcscd reader driver listening on TCP) with `vpicc`. Two things are
//! rewritten so that the `yubikey` crate accepts the card; tests that use it therefore run on a
//! **shimmed** virtual card, not on a YubiKey:
//!
//! 1. SELECT with the 5-byte PIV RID (`A0 00 00 03 08`), which is what the yubikey crate sends,
//!    is passed to the applet with the full PIV AID;
//! 2. GET VERSION (INS `0xFD`) answers 5.4.3 (the applet says 6.6.6, which the crate refuses).
//!
//! The card also handles command chaining (CLA bit `0x10`) and long responses (`61xx` + GET
//! RESPONSE), as a real card's firmware would. The trussed RNG is seeded with a constant: keys
//! are deterministic, which is what a test wants and what nothing else may use.
//!
//! Usage: `keyward-virtual-piv [--vpcd HOST:PORT] [--state DIR]`. With `--state` the card's
//! persistent storage lives in files in DIR, so a restarted card keeps its keys (like a YubiKey
//! pulled out and plugged in again); without it the card is blank at every start.

use std::{path::PathBuf, process::ExitCode};

use piv_authenticator::{Authenticator, Options};
use trussed::{
    Platform,
    backend::{Backend as _, BackendId},
    serde_extensions::{ExtensionDispatch, ExtensionId, ExtensionImpl},
    service::ServiceResources,
    types::Context,
    virt::{self, StorageConfig, StoreConfig},
};
use trussed_auth::AuthExtension;
use trussed_auth_backend::{AuthBackend, AuthContext, FilesystemLayout};
use trussed_chunked::ChunkedExtension;
use trussed_core::{
    Error,
    api::{Reply, Request, reply, request},
    types::Location,
};
use trussed_hpke::HpkeExtension;
use trussed_rsa_alloc::SoftwareRsa;
use trussed_staging::{StagingBackend, StagingContext};
use trussed_wrap_key_to_file::WrapKeyToFileExtension;

/// The full PIV application identifier (NIST SP 800-73-4, with version).
const PIV_AID: [u8; 11] = [
    0xa0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
/// What the yubikey crate selects: the PIV RID alone.
const PIV_RID: [u8; 5] = [0xa0, 0x00, 0x00, 0x03, 0x08];
/// The firmware version reported to GET VERSION: 5.x (below 5.7, so the default management key
/// is the 3DES one, which is what the applet has).
const REPORTED_VERSION: [u8; 3] = [5, 4, 3];
/// Largest response the applet writes (a certificate object fits).
const REPLY_CAPACITY: usize = 7609;

#[derive(Default)]
struct Dispatcher {
    auth: Option<AuthBackend>,
    staging: StagingBackend,
}

impl Dispatcher {
    fn new() -> Self {
        Self {
            auth: Some(AuthBackend::new(Location::Internal, FilesystemLayout::V0)),
            staging: StagingBackend::new(),
        }
    }
}

#[derive(Default)]
struct DispatchContext {
    auth: AuthContext,
    staging: StagingContext,
}

#[derive(Debug)]
enum BackendIds {
    Auth,
    Staging,
    SoftwareRsa,
}

#[derive(Debug)]
enum ExtensionIds {
    Auth,
    Chunked,
    Hpke,
    WrapKeyToFile,
}

impl From<ExtensionIds> for u8 {
    fn from(id: ExtensionIds) -> u8 {
        match id {
            ExtensionIds::Auth => 0,
            ExtensionIds::Chunked => 1,
            ExtensionIds::Hpke => 2,
            ExtensionIds::WrapKeyToFile => 3,
        }
    }
}

impl TryFrom<u8> for ExtensionIds {
    type Error = Error;
    fn try_from(id: u8) -> Result<Self, Error> {
        match id {
            0 => Ok(Self::Auth),
            1 => Ok(Self::Chunked),
            2 => Ok(Self::Hpke),
            3 => Ok(Self::WrapKeyToFile),
            _ => Err(Error::FunctionNotSupported),
        }
    }
}

impl ExtensionId<AuthExtension> for Dispatcher {
    type Id = ExtensionIds;
    const ID: ExtensionIds = ExtensionIds::Auth;
}
impl ExtensionId<ChunkedExtension> for Dispatcher {
    type Id = ExtensionIds;
    const ID: ExtensionIds = ExtensionIds::Chunked;
}
impl ExtensionId<HpkeExtension> for Dispatcher {
    type Id = ExtensionIds;
    const ID: ExtensionIds = ExtensionIds::Hpke;
}
impl ExtensionId<WrapKeyToFileExtension> for Dispatcher {
    type Id = ExtensionIds;
    const ID: ExtensionIds = ExtensionIds::WrapKeyToFile;
}

impl ExtensionDispatch for Dispatcher {
    type BackendId = BackendIds;
    type Context = DispatchContext;
    type ExtensionId = ExtensionIds;

    fn core_request<P: Platform>(
        &mut self,
        backend: &BackendIds,
        ctx: &mut Context<DispatchContext>,
        request: &Request,
        resources: &mut ServiceResources<P>,
    ) -> Result<Reply, Error> {
        match backend {
            BackendIds::SoftwareRsa => {
                SoftwareRsa.request(&mut ctx.core, &mut (), request, resources)
            }
            BackendIds::Staging => {
                self.staging
                    .request(&mut ctx.core, &mut ctx.backends.staging, request, resources)
            }
            BackendIds::Auth => Err(Error::RequestNotAvailable),
        }
    }

    fn extension_request<P: Platform>(
        &mut self,
        backend: &BackendIds,
        extension: &ExtensionIds,
        ctx: &mut Context<DispatchContext>,
        request: &request::SerdeExtension,
        resources: &mut ServiceResources<P>,
    ) -> Result<reply::SerdeExtension, Error> {
        match (backend, extension) {
            (BackendIds::Auth, ExtensionIds::Auth) => {
                let auth = self.auth.as_mut().ok_or(Error::RequestNotAvailable)?;
                ExtensionImpl::<AuthExtension>::extension_request_serialized(
                    auth,
                    &mut ctx.core,
                    &mut ctx.backends.auth,
                    request,
                    resources,
                )
            }
            (BackendIds::Staging, ExtensionIds::Chunked) => {
                ExtensionImpl::<ChunkedExtension>::extension_request_serialized(
                    &mut self.staging,
                    &mut ctx.core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            (BackendIds::Staging, ExtensionIds::Hpke) => {
                ExtensionImpl::<HpkeExtension>::extension_request_serialized(
                    &mut self.staging,
                    &mut ctx.core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            (BackendIds::Staging, ExtensionIds::WrapKeyToFile) => {
                ExtensionImpl::<WrapKeyToFileExtension>::extension_request_serialized(
                    &mut self.staging,
                    &mut ctx.core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            _ => Err(Error::RequestNotAvailable),
        }
    }
}

const BACKENDS: &[BackendId<BackendIds>] = &[
    BackendId::Custom(BackendIds::Auth),
    BackendId::Custom(BackendIds::Staging),
    BackendId::Custom(BackendIds::SoftwareRsa),
    BackendId::Core,
];

/// The applet behind the card reader: APDU framing, chaining, GET RESPONSE and the two shims.
struct Card<T> {
    piv: Authenticator<T>,
    /// Data of a chained command received so far (CLA bit 0x10).
    chained: Vec<u8>,
    /// The rest of a long response, handed out by GET RESPONSE.
    pending: Vec<u8>,
}

fn status(sw: u16) -> Vec<u8> {
    sw.to_be_bytes().to_vec()
}

/// Splits a short or extended APDU into (header, data, le). `None` for a malformed one.
fn parse_apdu(apdu: &[u8]) -> Option<([u8; 4], Vec<u8>, usize)> {
    let header: [u8; 4] = apdu.get(..4)?.try_into().ok()?;
    let body = &apdu[4..];
    match body.len() {
        0 => Some((header, Vec::new(), 0)),
        1 => Some((
            header,
            Vec::new(),
            if body[0] == 0 {
                256
            } else {
                usize::from(body[0])
            },
        )),
        _ if body[0] != 0 => {
            let lc = usize::from(body[0]);
            let data = body.get(1..1 + lc)?.to_vec();
            let le = match body.get(1 + lc) {
                None => 0,
                Some(0) => 256,
                Some(&n) => usize::from(n),
            };
            Some((header, data, le))
        }
        _ => {
            // Extended length: 00 Lc1 Lc2 data [Le1 Le2], or 00 Le1 Le2.
            if body.len() == 3 {
                let le = usize::from(u16::from_be_bytes([body[1], body[2]]));
                return Some((header, Vec::new(), if le == 0 { 65536 } else { le }));
            }
            let lc = usize::from(u16::from_be_bytes([*body.get(1)?, *body.get(2)?]));
            let data = body.get(3..3 + lc)?.to_vec();
            let le = match body.get(3 + lc..3 + lc + 2) {
                Some(b) => {
                    let le = usize::from(u16::from_be_bytes([b[0], b[1]]));
                    if le == 0 { 65536 } else { le }
                }
                None => 0,
            };
            Some((header, data, le))
        }
    }
}

/// Builds an extended-length APDU (the applet parses any length this way).
fn build_apdu(header: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut apdu = header.to_vec();
    if !data.is_empty() {
        let lc = u16::try_from(data.len()).unwrap_or(u16::MAX);
        apdu.push(0);
        apdu.extend_from_slice(&lc.to_be_bytes());
        apdu.extend_from_slice(data);
        apdu.extend_from_slice(&[0, 0]);
    } else {
        apdu.extend_from_slice(&[0, 0, 0]);
    }
    apdu
}

impl<T: piv_authenticator::Client> Card<T> {
    /// Hands out at most 256 bytes (short APDUs) and keeps the rest for GET RESPONSE.
    fn respond_chunk(&mut self, mut data: Vec<u8>, le: usize, sw: u16) -> Vec<u8> {
        let max = if le == 0 || le > 256 { 256 } else { le };
        if data.len() > max {
            self.pending = data.split_off(max);
            let left = u8::try_from(self.pending.len().min(255)).unwrap_or(0);
            data.extend_from_slice(&[0x61, if self.pending.len() >= 256 { 0 } else { left }]);
            data
        } else {
            data.extend_from_slice(&sw.to_be_bytes());
            data
        }
    }

    fn execute_apdu(&mut self, apdu: &[u8]) -> Vec<u8> {
        let Some((mut header, data, le)) = parse_apdu(apdu) else {
            return status(0x6700);
        };
        let [cla, ins, p1, _p2] = header;
        if ins == 0xc0 {
            // GET RESPONSE
            let rest = std::mem::take(&mut self.pending);
            return self.respond_chunk(rest, le, 0x9000);
        }
        self.pending.clear();
        if cla & 0x10 != 0 {
            self.chained.extend_from_slice(&data);
            return status(0x9000);
        }
        let mut data = if self.chained.is_empty() {
            data
        } else {
            let mut all = std::mem::take(&mut self.chained);
            all.extend_from_slice(&data);
            all
        };
        header[0] = cla & !0x10;
        if ins == 0xfd {
            // Shim 2: GET VERSION answers 5.x.
            return self.respond_chunk(REPORTED_VERSION.to_vec(), le, 0x9000);
        }
        if ins == 0xa4 && p1 == 0x04 && data == PIV_RID {
            // Shim 1: select PIV by its RID alone.
            data = PIV_AID.to_vec();
        }
        let full = build_apdu(header, &data);
        let command = match iso7816::command::CommandView::try_from(full.as_slice()) {
            Ok(command) => command,
            Err(_) => return status(0x6700),
        };
        let mut reply = heapless::Vec::<u8, REPLY_CAPACITY>::new();
        match self.piv.respond(command, &mut reply) {
            Ok(()) => self.respond_chunk(reply.to_vec(), le, 0x9000),
            Err(sw) => status(u16::from(sw)),
        }
    }
}

impl<T: piv_authenticator::Client> vpicc::VSmartCard for Card<T> {
    fn execute(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.execute_apdu(apdu)
    }

    fn power_off(&mut self) {
        self.chained.clear();
        self.pending.clear();
    }

    fn reset(&mut self) {
        self.chained.clear();
        self.pending.clear();
    }
}

fn main() -> ExitCode {
    let mut vpcd = format!("{}:{}", vpicc::DEFAULT_HOST, vpicc::DEFAULT_PORT);
    let mut state_dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--vpcd", Some(value)) => vpcd = value,
            ("--state", Some(value)) => state_dir = Some(PathBuf::from(value)),
            _ => {
                eprintln!("usage: keyward-virtual-piv [--vpcd HOST:PORT] [--state DIR]");
                return ExitCode::from(2);
            }
        }
    }

    let store = match &state_dir {
        Some(dir) => {
            if let Err(err) = std::fs::create_dir_all(dir) {
                eprintln!(
                    "keyward-virtual-piv: cannot create {}: {err}",
                    dir.display()
                );
                return ExitCode::FAILURE;
            }
            StoreConfig {
                internal: StorageConfig::filesystem(dir.join("internal.bin")),
                external: StorageConfig::filesystem(dir.join("external.bin")),
                volatile: StorageConfig::ram(),
            }
        }
        None => StoreConfig::ram(),
    };

    let connection = match vpicc::connect_socket(vpcd.as_str()) {
        Ok(connection) => connection,
        Err(err) => {
            eprintln!("keyward-virtual-piv: cannot connect to vpcd at {vpcd}: {err}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "keyward-virtual-piv: shimmed virtual PIV card attached to vpcd at {vpcd} (state: {})",
        state_dir
            .as_ref()
            .map_or_else(|| "in memory".to_owned(), |d| d.display().to_string())
    );

    let result = virt::with_platform(store, |platform| {
        platform.run_client_with_backends("piv", Dispatcher::new(), BACKENDS, |client| {
            let mut card = Card {
                piv: Authenticator::new(client, Options::default()),
                chained: Vec::new(),
                pending: Vec::new(),
            };
            connection.run(&mut card)
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keyward-virtual-piv: vpcd connection ended: {err}");
            ExitCode::FAILURE
        }
    }
}
