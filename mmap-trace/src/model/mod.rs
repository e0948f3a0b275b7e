//! Plain data shared by every layer: events and calls, stacks and their
//! ids, counters. No I/O, no policy.

mod counts;
mod ending;
mod event;
mod frame;
mod memory;
mod object;
mod process;
mod stack;

pub use counts::{CallCounts, CallKind, KernelCounters, TracerUsage, UnwindCounts};
pub use ending::{ExitStatus, StoppedBy};
pub use event::{Call, Event, ProcessEvent, Resume, StackSource, SyscallEvent};
pub use frame::{CodeKey, FrameAddress, FrameKind, PyFrameRaw, StopReason, UnwindMode};
pub use memory::{MemoryKind, is_shmem_path, map_flags, prot};
pub use object::ObjectId;
pub use process::ProcessRss;
pub use stack::{MAX_SIZES, RawStack, SizeCount, StackEntry, StackId, StackStats, StackTable};

/// The page size of x86_64 Linux: mapping lengths are rounded up to it.
pub const PAGE_SIZE: u64 = 4096;

/// `len` rounded up to whole pages (saturating at the top of the address
/// space).
pub fn page_round_up(len: u64) -> u64 {
    len.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}
