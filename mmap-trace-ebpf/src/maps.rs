//! Maps shared by the programs, and the globals user space sets at load time.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use mmap_trace_common::counter;

/// The tracer's own process id: never traced, whatever the maps say.
#[unsafe(no_mangle)]
pub static TRACER_TGID: Global<u32> = Global::new(0);

/// Processes to trace (tgid → 1). User space seeds it; forks extend it.
#[map]
pub static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Syscall arguments saved at entry, by thread id, until the exit.
#[map]
pub static PENDING: HashMap<u32, Pending> = HashMap::with_max_entries(65536, 0);

/// Children forked by traced processes that have not yet been seen running
/// (task_struct address → origin). A child is promoted into `TARGETS` the
/// first time it execs, forks or makes a traced call, so no offsets into
/// `task_struct` are needed.
#[map]
pub static FORKED: LruHashMap<u64, ForkOrigin> = LruHashMap::with_max_entries(65536, 0);

/// Records for user space. User space may resize it at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(32 << 20, 0);

/// Per-CPU loss and error counters, indexed by `mmap_trace_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Pending {
    pub nr: u64,
    pub enter_time_ns: u64,
    pub args: [u64; 6],
    pub user_ip: u64,
    pub user_sp: u64,
    pub user_bp: u64,
    pub sp_word: u64,
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct ForkOrigin {
    pub parent_tgid: u32,
    pub _reserved: u32,
    pub time_ns: u64,
}

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *value += 1 };
    }
}
