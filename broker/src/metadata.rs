//! The broker's view of the cluster metadata: the latest controller image it knows and
//! who the controller is. Controller voters publish from their state machine; other
//! brokers from heartbeat replies. Readers get cheap `Arc` snapshots and can watch for
//! changes.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::controller::state::ClusterState;

/// A versioned metadata image; the version is the controller log position it reflects.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterImage {
    pub version: u64,
    pub state: ClusterState,
}

#[derive(Clone)]
pub struct MetadataCache {
    image: watch::Sender<Arc<ClusterImage>>,
    controller: Arc<RwLock<Option<u64>>>,
}

impl Default for MetadataCache {
    fn default() -> Self {
        MetadataCache {
            image: watch::Sender::new(Arc::new(ClusterImage::default())),
            controller: Arc::new(RwLock::new(None)),
        }
    }
}

impl MetadataCache {
    pub fn image(&self) -> Arc<ClusterImage> {
        self.image.borrow().clone()
    }

    /// A receiver that is notified whenever a newer image is published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterImage>> {
        self.image.subscribe()
    }

    /// Installs `state` as of `version`, unless the cache already holds something newer.
    pub fn publish_state(&self, state: ClusterState, version: u64) {
        self.publish(ClusterImage { version, state });
    }

    pub fn publish(&self, image: ClusterImage) {
        self.image.send_if_modified(|current| {
            if image.version < current.version {
                return false;
            }
            *current = Arc::new(image);
            true
        });
    }

    pub fn controller(&self) -> Option<u64> {
        *self.controller.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_controller(&self, id: Option<u64>) {
        *self.controller.write().unwrap_or_else(|e| e.into_inner()) = id;
    }

    /// The advertised address of broker `id`, if registered.
    pub fn broker_addr(&self, id: u64) -> Option<String> {
        self.image
            .borrow()
            .state
            .brokers
            .get(&id)
            .map(|b| b.addr.clone())
    }
}
