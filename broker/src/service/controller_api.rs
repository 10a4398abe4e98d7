//! `strait.internal.v1.Controller`: identify, heartbeat and forwarded proposals.

use std::sync::Arc;

use strait_proto::internal::controller_server::Controller as ControllerService;
use strait_proto::internal::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, IdentifyRequest, IdentifyResponse,
    ProposeRequest, ProposeResponse,
};
use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::controller::Controller;
use crate::controller::liveness::{Heartbeat, Liveness, handle_heartbeat};
use crate::controller::state::{ControllerCommand, LeaderUpdate};
use crate::error::BrokerError;
use crate::storage::{decode, encode};

pub struct ControllerApi {
    pub broker_id: u64,
    pub advertise: String,
    pub controller: Controller,
    pub liveness: Arc<Liveness>,
}

#[tonic::async_trait]
impl ControllerService for ControllerApi {
    async fn identify(
        &self,
        _request: Request<IdentifyRequest>,
    ) -> Result<Response<IdentifyResponse>, Status> {
        Ok(Response::new(IdentifyResponse {
            broker_id: self.broker_id,
            advertised_addr: self.advertise.clone(),
        }))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<BrokerHeartbeatRequest>,
    ) -> Result<Response<BrokerHeartbeatResponse>, Status> {
        let r = request.into_inner();
        let beat = Heartbeat {
            broker_id: r.broker_id,
            addr: r.advertised_addr,
            roles: r.roles,
            rack: r.rack,
            leaders: r
                .leaders
                .into_iter()
                .map(|l| LeaderUpdate {
                    group_id: l.group_id,
                    leader: r.broker_id,
                    term: l.term,
                    isr: l.isr,
                })
                .collect(),
            metadata_version: r.metadata_version,
            want_metadata: r.want_metadata,
        };
        let reply = handle_heartbeat(&self.controller, &self.liveness, beat)
            .await
            .map_err(to_status)?;
        let metadata_image = match reply.image {
            Some(image) => Some(encode(&*image).map_err(|e| to_status(e.into()))?.into()),
            None => None,
        };
        Ok(Response::new(BrokerHeartbeatResponse {
            controller_id: reply.controller_id,
            metadata_image,
        }))
    }

    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeResponse>, Status> {
        let command: ControllerCommand = decode(&request.into_inner().command).map_err(|e| {
            to_status(BrokerError::InvalidRequest(format!(
                "undecodable command: {e}"
            )))
        })?;
        let reply = self
            .controller
            .propose_local(command)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ProposeResponse {
            reply: encode(&reply).map_err(|e| to_status(e.into()))?.into(),
        }))
    }
}
