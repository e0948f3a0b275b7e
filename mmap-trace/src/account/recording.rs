//! What a report is built from: the books, the stacks resolved while the
//! processes lived, and how the recording began and ended. A live session
//! produces one; a trace file replays into one, so `record` and
//! `report FILE` build their reports the same way.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{collector::Collector, timeline::Sample};
use crate::{
    model::{
        ExitStatus, KernelCounters, StackId, StoppedBy, TracerUsage, UnwindCounts, UnwindMode,
    },
    resolve::Resolved,
};

/// How a recording began.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// "mmap-trace/trace".
    pub format: String,
    pub version: u32,
    /// The mmap-trace version that recorded it.
    pub tool: String,
    pub command: Option<Vec<String>>,
    pub unwinder: UnwindMode,
    /// `--interposer` names the recording used.
    pub interposers: Vec<String>,
}

/// How it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordingEnd {
    pub stopped_by: StoppedBy,
    pub command_status: Option<ExitStatus>,
    /// When tracing stopped (CLOCK_MONOTONIC ns): the growth window's end.
    pub time_ns: u64,
    pub kernel: KernelCounters,
    pub unwinding: UnwindCounts,
    pub tracer: TracerUsage,
    pub lost_mapping_records: u64,
    /// Records that arrived too late to be put in order (see
    /// `account::order`); applied as they came.
    #[serde(default)]
    pub out_of_order: u64,
    /// Kernel records that did not decode, or were impossible; dropped.
    #[serde(default)]
    pub malformed: u64,
    /// Main executable of each traced pid.
    pub executables: BTreeMap<u32, String>,
}

#[derive(Debug)]
pub struct Recording {
    pub header: Header,
    pub collector: Collector,
    pub resolved: Resolved,
    /// Resident bytes per stack at the last sample, for the stacks of
    /// processes running then (others: unknown).
    pub resident: HashMap<StackId, u64>,
    pub timeline: Vec<Sample>,
    pub end: RecordingEnd,
}
