//! The report's rows. The JSON field names are a contract
//! (`docs/report.md`): add fields freely, never rename. `null` means
//! unknown: resident bytes of processes that exited, growth rates of a
//! window too short to judge.

use serde::{Serialize, Serializer};

pub use crate::model::FrameKind;
use crate::{
    account::{Role, Sample},
    model::{CallKind, ExitStatus, StackSource, StopReason, StoppedBy, TracerUsage, UnwindMode},
};

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
    /// Every record reached the books, in order: no record was lost,
    /// malformed or applied out of order. When false, byte counts are
    /// lower bounds (see `events`).
    pub complete: bool,
    /// Seconds between the first and last traced event.
    pub duration_s: f64,
    /// The `--unwind` mode: "fp", "dwarf" or "auto".
    pub unwinder: UnwindMode,
    pub targets: Vec<Target>,
    /// Whether the window was long enough, with enough samples, to say
    /// what grows; when not, `growth_note` says why and nothing is flagged.
    pub growth_judged: bool,
    pub growth_note: Option<String>,
    /// Who is growing: one entry per issuer and per requester; flagged
    /// (resident memory growing steadily) first, by resident growth.
    pub growth: Vec<GrowthRow>,
    /// The traced processes' RSS growth over the window, and how much of it
    /// the flagged growers explain.
    pub rss_growth: Option<RssGrowth>,
    pub events: Events,
    /// How many stacks the kernel unwound itself, and how many user space
    /// unwound from stack copies (auto/dwarf).
    pub unwinding: Unwinding,
    /// What tracing cost mmap-trace itself, until the report was built.
    pub tracer: TracerUsage,
    pub totals: Totals,
    pub by_issuer: Vec<ObjectRow>,
    pub by_requester: Vec<ObjectRow>,
    /// Bytes by the innermost Python frame of their stacks (Python
    /// processes only; empty otherwise).
    pub by_python_caller: Vec<PythonCallerRow>,
    pub stacks: Vec<StackRow>,
    /// Samples every `--interval`.
    pub timeline: Vec<Sample>,
}

/// One Python function's share: the bytes of the stacks whose innermost
/// Python frame it is.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct PythonCallerRow {
    /// Qualified name (`BlockPool.allocate`; the plain name before 3.11).
    pub function: String,
    pub file: String,
    pub calls: u64,
    pub mapped_bytes: u64,
    pub live_bytes: u64,
    pub live_regions: u64,
    pub resident_bytes: Option<u64>,
}

/// What a growth verdict rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Resident bytes, sampled in running processes.
    Resident,
    /// Live (mapped) bytes only: no resident sample of the object exists.
    Live,
}

/// One object's trend over the traced window.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GrowthRow {
    pub object: String,
    pub role: Role,
    /// Slope of its live (mapped) bytes over the steady part, per minute.
    pub bytes_per_min: Option<f64>,
    /// How well that line fits (0 to 1).
    pub fit_r2: Option<f64>,
    pub live_bytes: i64,
    /// Resident bytes at the last sample, in running processes.
    pub resident_bytes: Option<u64>,
    /// Slope of its resident bytes over the steady part, per minute.
    pub resident_bytes_per_min: Option<f64>,
    pub resident_fit_r2: Option<f64>,
    pub basis: Option<Basis>,
    /// When the steady part the verdict rests on starts (seconds).
    pub since_s: Option<f64>,
    /// Resident memory grows steadily: a leak verdict.
    pub flagged: bool,
    /// Mapped bytes grow steadily and resident bytes do not: address
    /// space, not memory (no leak verdict).
    pub address_space_growing: bool,
    /// What to try, from the known patterns that match its stacks.
    pub hints: Vec<String>,
    pub patterns: Vec<String>,
}

/// The traced processes' RSS over the steady part of the window.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RssGrowth {
    /// Slope of their summed VmRSS, per minute.
    pub bytes_per_min: f64,
    pub fit_r2: f64,
    pub since_s: f64,
    /// The flagged issuers' resident growth, per minute, and its share of
    /// the RSS growth (`null` when RSS does not grow).
    pub explained_bytes_per_min: f64,
    pub explained_fraction: Option<f64>,
    /// What the rest could be: file pages (RssFile) and anonymous memory
    /// outside traced mappings (the heap before tracing, pre-existing and
    /// untraced mappings), per minute.
    pub file_bytes_per_min: f64,
    pub untraced_anon_bytes_per_min: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Target {
    pub pid: u32,
    pub parent_pid: Option<u32>,
    pub comm: String,
    pub exe: Option<String>,
    pub exited: bool,
    pub live_bytes: u64,
    /// VmRSS at the last sample; `null` once exited.
    pub rss_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Events {
    pub mmap: u64,
    pub munmap: u64,
    pub mremap: u64,
    pub brk: u64,
    pub shmat: u64,
    pub shmdt: u64,
    pub mprotect: u64,
    pub madvise: u64,
    pub failed: u64,
    /// Records lost anywhere between the kernel and the report.
    pub lost: u64,
    pub stack_errors: u64,
    /// Kernel mapping records (perf) lost: some frames may lack objects.
    pub lost_mapping_records: u64,
    /// Records that arrived after the reorder window, applied out of
    /// order: live figures may be off where such calls raced.
    pub out_of_order: u64,
    /// Kernel records that did not decode or could not be (a range past
    /// user space, a call the kernel refuses that succeeded): dropped.
    pub malformed: u64,
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
    /// Of the live bytes, reserved (`PROT_NONE`) and accessible ones.
    pub reserved_bytes: u64,
    pub accessible_bytes: u64,
    /// Resident bytes of traced mappings at the last sample, in running
    /// processes; `null` when none ran then.
    pub resident_bytes: Option<u64>,
    pub unknown_unmapped_bytes: u64,
    pub preexisting_bytes: u64,
    pub preexisting_unmapped_bytes: u64,
    /// Live bytes by the call that mapped them: mmap/mremap, the brk heap,
    /// System V shared memory.
    pub live_by_kind: LiveByKind,
    /// Live, reserved, accessible and resident bytes by kind of memory.
    pub by_kind: ByKind,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LiveByKind {
    pub mmap: u64,
    pub brk: u64,
    pub shm: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ByKind {
    pub private_anon: KindRow,
    pub shared: KindRow,
    pub file: KindRow,
    pub heap: KindRow,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct KindRow {
    pub live_bytes: u64,
    pub reserved_bytes: u64,
    pub accessible_bytes: u64,
    pub resident_bytes: Option<u64>,
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
    pub reserved_bytes: u64,
    pub accessible_bytes: u64,
    pub resident_bytes: Option<u64>,
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
    pub mprotect_calls: u64,
    pub madvise_calls: u64,
    pub failed_calls: u64,
    pub mapped_bytes: u64,
    pub unmapped_bytes: u64,
    pub live_bytes: u64,
    pub live_regions: u64,
    /// Of its live bytes, reserved (`PROT_NONE`).
    pub reserved_bytes: u64,
    /// Accessible bytes that are its doing: mapped accessible by it, or
    /// made accessible by it (mprotect) after another stack reserved them.
    pub accessible_bytes: u64,
    /// Resident bytes in those, at the last sample; `null` once its
    /// processes exited.
    pub resident_bytes: Option<u64>,
    /// mprotect: reserved bytes it made accessible, accessible bytes it
    /// made reserved again.
    pub committed_bytes: u64,
    pub decommitted_bytes: u64,
    /// madvise: live bytes it advised away, and the resident bytes they
    /// held at the sample before each call.
    pub advised_bytes: u64,
    pub resident_returned_bytes: u64,
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
    /// The process ran deeper Python code than the kernel records (63
    /// frames): the outermost Python frames are missing, and the eval-loop
    /// frames that ran them show as native frames.
    pub python_truncated: bool,
    /// Innermost first.
    pub frames: Vec<FrameRow>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SizeRow {
    /// "mmap", "munmap", "mremap" (its new length), "brk" (the change),
    /// "shmat" or "shmdt" (the segment's size), "mprotect", "madvise".
    pub call: CallKind,
    pub bytes: u64,
    pub calls: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FrameRow {
    pub kind: FrameKind,
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

impl StackRow {
    /// A row with these frames and no calls yet.
    pub fn new(
        issuer: String,
        requester: String,
        unwinder: StackSource,
        stop_reason: StopReason,
        frames: Vec<FrameRow>,
    ) -> Self {
        StackRow {
            issuer,
            requester,
            calls: 0,
            mmap_calls: 0,
            munmap_calls: 0,
            mremap_calls: 0,
            brk_calls: 0,
            shm_calls: 0,
            mprotect_calls: 0,
            madvise_calls: 0,
            failed_calls: 0,
            mapped_bytes: 0,
            unmapped_bytes: 0,
            live_bytes: 0,
            live_regions: 0,
            reserved_bytes: 0,
            accessible_bytes: 0,
            resident_bytes: None,
            committed_bytes: 0,
            decommitted_bytes: 0,
            advised_bytes: 0,
            resident_returned_bytes: 0,
            pids: Vec::new(),
            sizes: Vec::new(),
            unwinder,
            truncated: !stop_reason.is_complete(),
            stop_reason,
            python_truncated: false,
            frames,
        }
    }
}

impl GrowthRow {
    /// A row with nothing known yet.
    pub fn new(role: Role, object: String) -> Self {
        GrowthRow {
            object,
            role,
            bytes_per_min: None,
            fit_r2: None,
            live_bytes: 0,
            resident_bytes: None,
            resident_bytes_per_min: None,
            resident_fit_r2: None,
            basis: None,
            since_s: None,
            flagged: false,
            address_space_growing: false,
            hints: Vec::new(),
            patterns: Vec::new(),
        }
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }

    /// Is anything flagged (resident memory growing steadily)?
    pub fn any_flagged(&self) -> bool {
        self.growth.iter().any(|row| row.flagged)
    }
}

fn unwinder_name<S: Serializer>(source: &StackSource, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(source.report_name())
}
