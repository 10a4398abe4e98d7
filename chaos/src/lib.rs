//! Strait's fault-injection suite, in the spirit of Jepsen's analyses of Kafka, Redpanda
//! and NATS: real `strait-broker` processes, every broker-to-broker link through a
//! fault-injecting proxy, a concurrent workload whose every operation is recorded, faults
//! injected and healed, and a checker that judges the whole history (TESTING.md).
//!
//! - [`proxy`] / [`net`]: the links and the topologies faults ask for;
//! - [`faults`]: what can go wrong, and how each fault is healed;
//! - [`workload`] / [`history`]: producers and consumers, and what they recorded;
//! - [`checker`] / [`replicas`]: the checks on the history and on the replicas' files;
//! - [`run`] / [`report`]: one run, and its summary.

pub mod checker;
pub mod faults;
pub mod history;
pub mod net;
pub mod proxy;
pub mod replicas;
pub mod report;
pub mod run;
pub mod workload;

pub use faults::FaultKind;
pub use report::Report;
pub use run::{RunConfig, run};
