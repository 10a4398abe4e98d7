//! `strait.v1.Admin`: topic creation and deletion, forwarded to the controller.

use strait_proto::v1::admin_server::Admin;
use strait_proto::v1::{
    AlterTopicConfigsRequest, AlterTopicConfigsResponse, CreateTopicRequest, CreateTopicResponse,
    DeleteTopicRequest, DeleteTopicResponse,
};
use tonic::{Request, Response, Status};

use super::convert::topic_metadata;
use super::status::to_status;
use crate::controller::topic_config::TopicConfig;
use crate::controller::{Controller, admin};

pub struct AdminApi {
    pub controller: Controller,
    pub topic_defaults: TopicConfig,
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        let request = request.into_inner();
        let topic = admin::create_topic(
            &self.controller,
            request.name,
            request.partitions,
            request.replication_factor,
            request.configs.into_iter().collect(),
        )
        .await
        .map_err(to_status)?;
        let image = self.controller.cache.image();
        Ok(Response::new(CreateTopicResponse {
            topic: Some(topic_metadata(&image.state, &topic, &self.topic_defaults)),
        }))
    }

    async fn alter_topic_configs(
        &self,
        request: Request<AlterTopicConfigsRequest>,
    ) -> Result<Response<AlterTopicConfigsResponse>, Status> {
        let request = request.into_inner();
        let topic = admin::alter_topic_configs(
            &self.controller,
            request.name,
            request.set.into_iter().collect(),
            request.remove,
        )
        .await
        .map_err(to_status)?;
        let image = self.controller.cache.image();
        Ok(Response::new(AlterTopicConfigsResponse {
            topic: Some(topic_metadata(&image.state, &topic, &self.topic_defaults)),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        admin::delete_topic(&self.controller, request.into_inner().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(DeleteTopicResponse {}))
    }
}
