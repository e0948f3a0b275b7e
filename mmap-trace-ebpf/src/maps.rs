//! Maps shared by the programs, and the globals user space sets at load time.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use mmap_trace_common::{PyConfig, RULE_SLOTS, RuleSlot, counter, families};

use crate::layout::Scratch;

/// The tracer's own process id: never traced, whatever the maps say.
#[unsafe(no_mangle)]
pub static TRACER_TGID: Global<u32> = Global::new(0);

/// Pending bytes in EVENTS past which a record wakes the reader.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: Global<u32> = Global::new(1 << 20);

/// Which syscall families are traced (`mmap_trace_common::families`).
#[unsafe(no_mangle)]
pub static SYSCALLS: Global<u32> = Global::new(families::ALL);

/// 0: our frame-pointer walk; 1: CFI rules, else a stack copy.
#[unsafe(no_mangle)]
pub static UNWIND_MODE: Global<u32> = Global::new(0);

/// Bytes of user stack to copy when a rule is missing (≤ MAX_STACK_WINDOW).
#[unsafe(no_mangle)]
pub static STACK_BYTES: Global<u32> = Global::new(32 * 1024);

/// With `--cgroup`: the cgroup (v2) whose processes are traced, and its
/// depth in the hierarchy (0: no cgroup).
#[unsafe(no_mangle)]
pub static CGROUP_ID: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
pub static CGROUP_LEVEL: Global<u32> = Global::new(0);

/// Offset of `thread.fsbase` in `struct task_struct` (from the kernel's
/// BTF; 0: unknown, no Python frames).
#[unsafe(no_mangle)]
pub static TASK_FSBASE: Global<u32> = Global::new(0);

/// CPython processes: tgid → how to walk their frames (user space fills it
/// when it sees the interpreter mapped).
#[map]
pub static PYTHON: HashMap<u32, PyConfig> = HashMap::with_max_entries(4096, 0);

/// Each Python thread's thread state, found once: tid → `PyThreadState*`
/// (0: the thread has none). Checked against the thread's FS base on use.
#[map]
pub static PY_THREADS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(65536, 0);

/// Signatures of the Python stacks whose code objects user space has read
/// (`mmap_trace_common::py_signature`): a record with another one wakes
/// user space at once.
#[map]
pub static PY_STACKS_SEEN: LruHashMap<u64, u8> = LruHashMap::with_max_entries(16384, 0);

/// When each thread's current mapping call entered the kernel, in the slot
/// `tid % ENTERED_SLOTS`: written at entry, taken (and cleared) at exit. An
/// array, not a hash: a slot is a pointer away, with no lock and no
/// allocation, which matters on a path every traced call takes twice (a
/// hash map takes a bucket lock and an element at entry, and a lookup and
/// a delete at exit). The slot keeps its thread id: two
/// threads whose ids share a slot and are in a traced call at once leave
/// the second to return without an entry time, and it is then ordered by
/// its return, as a call always was.
#[map]
pub static ENTERED: Array<EnterSlot> = Array::with_max_entries(ENTERED_SLOTS, 0);

pub const ENTERED_SLOTS: u32 = 1 << 16;

#[repr(C)]
pub struct EnterSlot {
    pub tid: u32,
    pub _reserved: u32,
    pub time_ns: u64,
}

/// Processes to trace: tgid → address-space id (a fresh one per exec).
/// User space seeds it; forks extend it.
#[map]
pub static TARGETS: HashMap<u32, u64> = HashMap::with_max_entries(65536, 0);

/// Children forked by traced processes that have not yet been seen running
/// (task_struct address → origin). A child is promoted into `TARGETS` the
/// first time it execs, forks or makes a traced call, so no offsets into
/// `task_struct` are needed.
#[map]
pub static FORKED: LruHashMap<u64, ForkOrigin> = LruHashMap::with_max_entries(65536, 0);

/// Records for user space. User space sizes it at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(32 << 20, 0);

/// Per-CPU loss and error counters, indexed by `mmap_trace_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Unwind rules by `rule_slot(tgid, asid, pc)`, written by user space.
#[map]
pub static RULES: Array<RuleSlot> = Array::with_max_entries(RULE_SLOTS, 0);

/// One scratch slot per CPU (user space sizes it): too large for the stack
/// or a per-CPU array.
#[map]
pub static SCRATCH: Array<Scratch> = Array::with_max_entries(1, 0);

#[derive(Clone, Copy)]
#[repr(C)]
pub struct ForkOrigin {
    pub parent_tgid: u32,
    pub _reserved: u32,
    pub time_ns: u64,
}

/// This CPU's scratch slot.
#[inline(always)]
pub fn this_cpu_scratch() -> Option<&'static mut Scratch> {
    // SAFETY: the helper has no preconditions.
    let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() };
    // SAFETY: this CPU's slot; programs on one CPU do not interleave here,
    // so this is the only reference to it while the caller runs.
    SCRATCH.get_ptr_mut(cpu).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: this CPU's slot of a per-CPU array; programs on one CPU
        // do not run concurrently, so nothing else writes it meanwhile.
        unsafe { *value += 1 };
    }
}
