//! `Agent.Status`: how the agent is (`keyward status`, `keyward doctor`).

use keyward_proto::v1::{StatusRequest, StatusResponse};

use crate::{Client, Error};

impl Client {
    /// The agent's version, pid, uptime and each backend's state (up, down, locked, starting,
    /// and why), key count and plugin restarts. An admin of the agent (its own uid and
    /// `admin_uids`) also gets [`StatusResponse::details`]: where the agent keeps its files;
    /// with `checks`, also the config file checked again and the named keys that do not
    /// resolve (this takes longer: plugins check their settings).
    pub async fn status(&self, checks: bool) -> Result<StatusResponse, Error> {
        let response = self.agent.clone().status(StatusRequest { checks }).await?;
        Ok(response.into_inner())
    }
}
