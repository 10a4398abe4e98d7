//! The openraft type configuration of the controller group.

use super::state::{ControllerCommand, ControllerReply};

openraft::declare_raft_types!(
    /// Controller group: entries carry [`ControllerCommand`]s.
    pub ControllerRaftConfig:
        D = ControllerCommand,
        R = ControllerReply,
);

/// The controller group's Raft handle.
pub type ControllerRaft =
    openraft::Raft<ControllerRaftConfig, super::state_machine::ControllerStateMachine>;
