//! The gRPC side of the daemon (tonic): the caller layer in front of the services, and the
//! `Signer`, `KeyAdmin` and `Agent` services as thin adapters over the transport-independent parts
//! ([`crate::signing`], [`crate::keys`], [`crate::audited`]). The listeners are in
//! [`crate::server`], the error -> status table in [`crate::error`].

pub mod admin;
pub mod agent;
pub mod layer;
pub mod signer;

use tonic::{Request, Status};

use crate::auth::{AdminCaller, AdminVerdict, Caller};
use crate::error::AgentError;

/// The caller the caller layer put into `request`. Its absence is a bug: every service is
/// installed behind the layer.
pub fn caller_of<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("internal error: the request passed no caller layer"))
}

/// The caller layer's decision whether the caller of a `KeyAdmin` request may manage keys.
pub fn admin_of<T>(request: &Request<T>) -> Result<Result<AdminCaller, AgentError>, Status> {
    let verdict: &AdminVerdict = request
        .extensions()
        .get::<AdminVerdict>()
        .ok_or_else(|| Status::internal("internal error: the request passed no admin layer"))?;
    Ok(verdict.clone().map_err(AgentError::PermissionDenied))
}
