//! The report: one model built from a [`Recording`](crate::account::Recording),
//! rendered as text or JSON. The JSON field names are a contract
//! (`docs/report.md`): add fields freely, never rename.

mod build;
pub mod patterns;
mod stacks;
pub mod text;

pub use build::build;
pub use patterns::Pattern;
pub use text::render_text;

use serde::{Serialize, Serializer};

use crate::{
    account::{Role, Sample},
    model::{CallKind, ExitStatus, StackSource, StopReason, StoppedBy, TracerUsage, UnwindMode},
};

pub const SCHEMA: &str = "mmap-trace/report/v1";

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub schema: &'static str,
    pub version: &'static str,
    /// The launched command, if any.
    pub command: Option<Vec<String>>,
    /// How the launched command ended ("exited with status 0", ...).
    pub command_status: Option<ExitStatus>,
    /// Why tracing stopped.
    pub stopped_by: StoppedBy,
    /// Seconds between the first and last traced event.
    pub duration_s: f64,
    /// The `--unwind` mode: "fp", "dwarf" or "auto".
    pub unwinder: UnwindMode,
    pub targets: Vec<Target>,
    /// Who is growing: one entry per issuer and per requester, fastest first.
    pub growth: Vec<GrowthRow>,
    pub events: Events,
    /// How many stacks the kernel unwound itself, and how many user space
    /// unwound from stack copies (auto/dwarf).
    pub unwinding: Unwinding,
    /// What tracing cost mmap-trace itself, until the report was built.
    pub tracer: TracerUsage,
    pub totals: Totals,
    pub by_issuer: Vec<ObjectRow>,
    pub by_requester: Vec<ObjectRow>,
    pub stacks: Vec<StackRow>,
    /// Samples every `--interval`.
    pub timeline: Vec<Sample>,
}

/// One object's trend over the traced window.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GrowthRow {
    pub object: String,
    pub role: Role,
    /// Least-squares slope of its live bytes, per minute.
    pub bytes_per_min: f64,
    /// How well the line fits (0 to 1).
    pub fit_r2: f64,
    pub live_bytes: i64,
    /// Resident bytes in its live ranges (last sample of each process).
    pub resident_bytes: u64,
    /// A sustained climb the line explains: a leak.
    pub flagged: bool,
    /// What to try, from the known patterns that match its stacks.
    pub hints: Vec<String>,
    pub patterns: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Target {
    pub pid: u32,
    pub parent_pid: Option<u32>,
    pub comm: String,
    pub exe: Option<String>,
    pub exited: bool,
    pub live_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Events {
    pub mmap: u64,
    pub munmap: u64,
    pub mremap: u64,
    pub brk: u64,
    pub shmat: u64,
    pub shmdt: u64,
    pub failed: u64,
    /// Records lost anywhere between the kernel and the report.
    pub lost: u64,
    pub stack_errors: u64,
    /// Kernel mapping records (perf) lost: some frames may lack objects.
    pub lost_mapping_records: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Unwinding {
    pub in_kernel: u64,
    pub from_copies: u64,
    /// Unwind rules user space taught the kernel.
    pub rules_taught: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Totals {
    pub mapped_bytes: u64,
    pub unmapped_bytes: u64,
    pub live_bytes: u64,
    pub live_regions: u64,
    pub unknown_unmapped_bytes: u64,
    pub preexisting_bytes: u64,
    pub preexisting_unmapped_bytes: u64,
    /// Live bytes by kind: mapped with mmap/mremap, the brk heap, and
    /// System V shared memory.
    pub live_by_kind: LiveByKind,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LiveByKind {
    pub mmap: u64,
    pub brk: u64,
    pub shm: u64,
}

/// One object's share, as issuer or as requester.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ObjectRow {
    pub object: String,
    pub calls: u64,
    pub mapped_bytes: u64,
    pub unmapped_bytes: u64,
    pub live_bytes: u64,
    pub live_regions: u64,
    pub resident_bytes: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StackRow {
    pub issuer: String,
    pub requester: String,
    pub calls: u64,
    pub mmap_calls: u64,
    pub munmap_calls: u64,
    pub mremap_calls: u64,
    pub brk_calls: u64,
    pub shm_calls: u64,
    pub failed_calls: u64,
    pub mapped_bytes: u64,
    pub unmapped_bytes: u64,
    pub live_bytes: u64,
    pub live_regions: u64,
    pub resident_bytes: u64,
    pub pids: Vec<u32>,
    /// Successful calls by length (page-rounded), most frequent first.
    pub sizes: Vec<SizeRow>,
    /// "fp" (frame pointers) or "dwarf" (call-frame information).
    #[serde(serialize_with = "unwinder_name")]
    pub unwinder: StackSource,
    /// The unwinder lost the stack after the last frame shown.
    pub truncated: bool,
    /// Why the stack ends where it does (`complete` when it reached the
    /// outermost frame).
    pub stop_reason: StopReason,
    /// Innermost first.
    pub frames: Vec<FrameRow>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SizeRow {
    /// "mmap", "munmap", "mremap" (its new length), "brk" (the change),
    /// "shmat" or "shmdt" (the segment's size).
    pub call: CallKind,
    pub bytes: u64,
    pub calls: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FrameRow {
    pub addr: u64,
    /// The object's path as the traced process saw it (inside its
    /// container, if it runs in one).
    pub object: String,
    pub build_id: Option<String>,
    pub offset: u64,
    pub symbol: Option<String>,
    pub symbol_offset: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub inlined: Vec<InlinedRow>,
    /// Recovered from the stack pointer (the walk had skipped it).
    pub recovered: bool,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct InlinedRow {
    pub symbol: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }
}

fn unwinder_name<S: Serializer>(source: &StackSource, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(source.report_name())
}
