//! What a report is built from: the collector's state, the stacks resolved
//! while the processes lived, the growth fits and the time series. A live
//! session produces one; a trace file replays into one, so `record` and
//! `report FILE` build their reports the same way.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::{
    collector::Collector,
    growth::{GrowthTracker, Thresholds},
    loader::KernelCounters,
    patterns::Pattern,
    report::{self, Report, ReportInputs, TracerUsage},
    resolve::ResolvedStack,
    stacks::StackId,
    timeline::Sample,
    unwind::copies::UnwindCounts,
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
    pub unwinder: String,
    /// `--interposer` names the recording used.
    pub interposers: Vec<String>,
}

/// How it ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ending {
    pub stopped_by: String,
    pub command_status: Option<String>,
    /// When tracing stopped (CLOCK_MONOTONIC ns): the growth window's end.
    pub time_ns: u64,
    pub kernel: KernelCounters,
    pub unwinding: UnwindCounts,
    pub tracer: TracerUsage,
    pub lost_mapping_records: u64,
    /// Main executable of each traced pid.
    pub executables: BTreeMap<u32, String>,
}

#[derive(Debug)]
pub struct Recording {
    pub header: Header,
    pub collector: Collector,
    pub stacks: HashMap<StackId, ResolvedStack>,
    pub growth: GrowthTracker,
    pub resident: HashMap<StackId, u64>,
    pub timeline: Vec<Sample>,
    pub ending: Ending,
}

impl Recording {
    pub fn report(&self, patterns: &[Pattern], thresholds: Thresholds) -> Report {
        report::build(&ReportInputs {
            collector: &self.collector,
            resolved: &self.stacks,
            executables: &self.ending.executables,
            lost_mapping_records: self.ending.lost_mapping_records,
            kernel: self.ending.kernel,
            command: self.header.command.clone(),
            command_status: self.ending.command_status.clone(),
            stopped_by: self.ending.stopped_by.clone(),
            unwinder: self.header.unwinder.clone(),
            unwinding: self.ending.unwinding,
            tracer: self.ending.tracer.clone(),
            resident: &self.resident,
            growth: self.growth.fits(self.ending.time_ns),
            thresholds,
            patterns,
            timeline: self.timeline.clone(),
        })
    }
}
