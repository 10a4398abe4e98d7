//! The recorded history of a run: every produce with its outcome, what each consumer
//! saw, and every fault with its timing. Written out as JSON when a run fails.

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// How a produce ended, as the client saw it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at this offset: it must be there, forever.
    Acked { offset: u64 },
    /// Refused before anything was written (validation): it must never appear.
    Failed { error: String },
    /// An error after the request may have been written: it may or may not appear.
    Unknown { error: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct ProduceOp {
    pub producer: u32,
    pub partition: u32,
    pub value: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
}

/// What one consumer read from one partition, in order.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ConsumerView {
    pub consumer: u32,
    pub partition: u32,
    pub records: Vec<(u64, String)>,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    pub kind: String,
    pub detail: String,
    pub injected_ms: u64,
    pub healed_ms: u64,
    /// When every partition took a write again after the heal.
    pub recovered_ms: Option<u64>,
}

#[derive(Serialize, Default)]
pub struct HistoryData {
    pub seed: u64,
    pub produces: Vec<ProduceOp>,
    pub consumers: Vec<ConsumerView>,
    pub faults: Vec<FaultEvent>,
}

/// Shared by the workload tasks while the run goes on.
pub struct History {
    epoch: Instant,
    pub data: Mutex<HistoryData>,
}

impl History {
    pub fn new(seed: u64) -> History {
        History {
            epoch: Instant::now(),
            data: Mutex::new(HistoryData {
                seed,
                ..HistoryData::default()
            }),
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, HistoryData> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}
