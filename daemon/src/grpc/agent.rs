//! The `keyward.v1.Agent` service: `Status`, for `keyward status` and `keyward doctor`.
//!
//! Served to every caller the agent serves (behind the caller layer, like `Signer`): the
//! version, uptime and each backend's state tell no secret and no more than `ListKeys` does.
//! Where the agent keeps its files, and the slower `checks` (which start plugin executables to
//! check their settings), are for its admins only: the caller layer's admin decision says who
//! that is, and others simply get the public part.

use std::sync::Arc;

use keyward_proto::v1::agent_server::Agent;
use keyward_proto::v1::{StatusRequest, StatusResponse};
use tonic::{Request, Response, Status};

use super::{admin_of, caller_of};
use crate::status::StatusSource;

/// The `Agent` service.
#[derive(Debug, Clone)]
pub struct AgentService {
    source: Arc<StatusSource>,
}

impl AgentService {
    /// The service over one generation's status source.
    pub fn new(source: Arc<StatusSource>) -> Self {
        AgentService { source }
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        caller_of(&request)?;
        let admin = admin_of(&request)?.is_ok();
        let checks = request.get_ref().checks && admin;
        Ok(Response::new(self.source.status(checks, admin).await))
    }
}
