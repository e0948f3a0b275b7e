//! Types shared by the eBPF programs and the user-space tracer.
//!
//! Every record the eBPF side writes to the ring buffer starts with a
//! [`RecordHeader`] whose `kind` says which struct follows. The layouts are
//! `#[repr(C)]` and contain no implicit padding, so the user side can decode
//! them field by field with `core::mem::offset_of!` and never transmute.
#![no_std]

/// Most frames in one stack. One less than a power of two, so that a frame
/// index masked with it stays inside a stack's frame array (the verifier
/// wants to see that bound).
pub const MAX_STACK_FRAMES: usize = 127;
const _: () = assert!((MAX_STACK_FRAMES + 1).is_power_of_two());

/// `RecordHeader::kind` values.
pub mod kind {
    /// A [`crate::SyscallRecord`]: one traced call (see [`crate::nr`]).
    pub const SYSCALL: u32 = 1;
    /// A [`crate::ProcessRecord`]: the process replaced its image (execve).
    pub const EXEC: u32 = 2;
    /// A [`crate::ProcessRecord`]: the last thread of the process exited.
    pub const EXIT: u32 = 3;
    /// A [`crate::ProcessRecord`]: a new process forked from a traced one.
    pub const FORK: u32 = 4;
    /// A [`crate::ProcessRecord`]: a process seen running in the traced
    /// cgroup for the first time (it was there before, or moved in).
    pub const JOIN: u32 = 5;
}

/// x86_64 syscall numbers of the calls we trace.
pub mod nr {
    pub const MMAP: u64 = 9;
    pub const MPROTECT: u64 = 10;
    pub const MUNMAP: u64 = 11;
    pub const BRK: u64 = 12;
    pub const MREMAP: u64 = 25;
    pub const MADVISE: u64 = 28;
    pub const SHMAT: u64 = 30;
    pub const SHMDT: u64 = 67;
}

/// Bits of the `SYSCALLS` global: which families are traced.
pub mod families {
    /// mmap, munmap, mremap.
    pub const MMAP: u32 = 1;
    /// brk (the heap).
    pub const BRK: u32 = 2;
    /// shmat, shmdt (System V shared memory).
    pub const SHM: u32 = 4;
    /// mprotect: reserved address space made accessible, and back.
    pub const MPROTECT: u32 = 8;
    /// madvise with advice that gives pages back (see [`crate::madvise`]).
    pub const MADVISE: u32 = 16;
    pub const ALL: u32 = MMAP | BRK | SHM | MPROTECT | MADVISE;
}

/// The madvise advice that gives resident pages back without unmapping:
/// the only madvise calls traced.
pub mod madvise {
    pub const DONTNEED: u64 = 4;
    pub const FREE: u64 = 8;
    pub const REMOVE: u64 = 9;
    pub const PAGEOUT: u64 = 21;
    pub const DONTNEED_LOCKED: u64 = 24;

    /// Is this advice one that releases pages?
    #[inline(always)]
    pub fn releases(advice: u64) -> bool {
        matches!(advice, DONTNEED | FREE | REMOVE | PAGEOUT | DONTNEED_LOCKED)
    }
}

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Records dropped because the ring buffer was full.
    pub const LOST_RECORDS: u32 = 0;
    /// The user stack could not be read at all.
    pub const STACK_ERRORS: u32 = 1;
    /// Number of counters.
    pub const COUNT: u32 = 2;
}

/// Common prefix of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// One of the [`kind`] constants.
    pub kind: u32,
    /// Thread-group id (the process id user space sees).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub _reserved: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the record was made.
    pub time_ns: u64,
}

/// One traced syscall, written at syscall exit (`header.time_ns`). The
/// record is followed by its data: `stack_frames` frame addresses (the ip,
/// then return addresses), `python_frames` [`PyFrame`]s, then,
/// when `unwind` is [`unwind::WINDOW`], `window_bytes` bytes of the user
/// stack from `resume_sp`: the kernel unwound the first frames and lacked a
/// rule for the next; user space continues from the `resume_*` registers.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallRecord {
    pub header: RecordHeader,
    /// The syscall number ([`nr`]).
    pub nr: u32,
    /// [`PyFrame`]s that follow the stack frames (a CPython process).
    pub python_frames: u32,
    /// Negative errno if the stack could not be read, or 0.
    pub stack_error: i64,
    /// The six syscall arguments, in order.
    pub args: [u64; 6],
    /// The syscall's return value.
    pub ret: i64,
    /// User registers of the call (the same at entry and exit).
    pub user_ip: u64,
    pub user_sp: u64,
    /// The 8 bytes at the user stack pointer: the return address of a leaf
    /// syscall wrapper (which frame-pointer walking skips), if the wrapper
    /// pushed nothing. 0 when unreadable. User space validates it.
    pub sp_word: u64,
    /// The address space (one per exec image) the call ran in.
    pub asid: u64,
    /// How the data was produced ([`unwind`]).
    pub unwind: u32,
    /// Return addresses that follow, innermost first (frame 0 is the ip).
    pub stack_frames: u32,
    /// Stack bytes that follow the frames (`unwind::WINDOW`).
    pub window_bytes: u32,
    /// Why the kernel's walk ended ([`stop`]).
    pub stop: u32,
    /// `unwind::WINDOW`: registers of the frame the copy starts at (the
    /// first frame the kernel could not unwind).
    pub resume_ip: u64,
    pub resume_sp: u64,
    pub resume_bp: u64,
    /// shmat: the size of the mapping it made (its VMA), 0 otherwise.
    pub mapped_size: u64,
    /// When the call entered the kernel (0: unknown, e.g. it entered before
    /// tracing began, or not noted: a call that only creates a mapping
    /// where the kernel chooses). A call changes its address space
    /// somewhere between entry and exit, and records are written at exit:
    /// user space orders calls that change existing mappings by this (see
    /// `account::order`).
    pub enter_ns: u64,
}

/// Most bytes of user stack copied into one record.
pub const MAX_STACK_WINDOW: usize = 64 * 1024;

/// Most Python frames in one record (an inference server's stacks run 40
/// deep). One less than a power of two, so that every index up to and
/// including it, masked with it, is unchanged: the entry after the last
/// is where the stack window starts.
pub const MAX_PYTHON_FRAMES: usize = 63;
const _: () = assert!((MAX_PYTHON_FRAMES + 1).is_power_of_two());

/// Most bytes of data (frames, Python frames, then a stack window) after a
/// [`SyscallRecord`].
pub const MAX_RECORD_DATA: usize =
    MAX_STACK_FRAMES * 8 + MAX_PYTHON_FRAMES * size_of::<PyFrame>() + MAX_STACK_WINDOW;

/// A Python frame the kernel found at the call: the code object it runs,
/// and where in it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyFrame {
    /// The code object's address in the process (0 for an empty group).
    pub code: u64,
    /// Byte offset of the current instruction in the bytecode (-2 before
    /// the first, 3.11+; -2 from f_lasti -1, 3.10).
    pub offset: i32,
    /// [`py_flags`] bits.
    pub flags: u32,
    /// [`py_code_identity`] of the code object at the call; 0 if it could
    /// not be read.
    pub identity: u32,
    pub _reserved: u32,
}

/// Bytes of a code object that [`py_code_identity`] folds: fields set when
/// the object is made and never changed (counts, the first line, 3.12+'s
/// `co_version`, pointers to its tuples and names), starting at
/// `PyConfig::code_identity`.
pub const PY_IDENTITY_WORDS: usize = 8;

/// Who a code object is, beyond its address. Code objects are freed (a
/// module's once it has run, code made by `exec` or `code.replace`) and
/// their memory reused for others, so an address alone could name a frame
/// after a function that lived there before. Both sides fold the same
/// bytes: the kernel at the call, user space when it reads the object, and
/// a mismatch means the object changed in between. Never 0 (which means
/// "not read").
pub fn py_code_identity(words: &[u64; PY_IDENTITY_WORDS]) -> u32 {
    let mut hash = 0x243f_6a88_85a3_08d3_u64;
    let mut i = 0;
    // A while loop: the eBPF side has no iterators it can verify cheaply.
    while i < PY_IDENTITY_WORDS {
        hash = (hash ^ words[i])
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
        i += 1;
    }
    ((hash >> 32) as u32 ^ hash as u32) | 1
}

/// A Python stack's signature: folded from the process and the code
/// object (address and identity) of each frame, innermost first, by both
/// sides of the kernel boundary. The kernel wakes user space at once for a
/// stack whose signature it has not been told is known, so that user space
/// reads the code objects while they surely exist (a module's code object
/// is freed once the module has run).
pub fn py_signature(tgid: u32) -> u64 {
    u64::from(tgid) | 1 << 63
}

/// The signature with one more frame's code object folded in.
pub fn py_signature_step(signature: u64, code: u64, identity: u32) -> u64 {
    (signature ^ code ^ (u64::from(identity) << 47))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(29)
}

/// An mmap of a file's code (`PROT_EXEC`, not `MAP_ANONYMOUS`: a library
/// being loaded), from its `prot` and `flags`. The kernel wakes user space
/// at once for it, and user space reads the mapping records at once, so
/// that a Python interpreter is known before it runs far.
pub fn maps_file_code(prot: u64, flags: u64) -> bool {
    const PROT_EXEC: u64 = 4;
    const MAP_ANONYMOUS: u64 = 0x20;
    prot & PROT_EXEC != 0 && flags & MAP_ANONYMOUS == 0
}

/// `PyFrame::flags` bits.
pub mod py_flags {
    /// The last (outermost) frame run by one C call of the eval loop
    /// (`_PyEval_EvalFrameDefault`): the next frame belongs to the next
    /// eval-loop frame on the native stack.
    pub const GROUP_END: u32 = 1;
    /// Not a frame: an eval-loop call that was running no Python frame of
    /// its own (two boundaries in a row).
    pub const EMPTY_GROUP: u32 = 2;
    /// The walk stopped here with more frames beyond (the frame limit, or
    /// a read that failed).
    pub const CUT: u32 = 4;
}

/// What the eBPF side needs to walk one CPython process's frames: where
/// `_PyRuntime` is and the offsets of the fields it follows (they differ by
/// minor version). User space fills the `PYTHON` map per traced process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyConfig {
    /// The address space this holds for (a new image needs a new one).
    pub asid: u64,
    /// `&_PyRuntime` in the process.
    pub runtime: u64,
    /// `_PyRuntime.interpreters.head`.
    pub interpreters_head: u32,
    /// `PyInterpreterState.next`.
    pub interpreter_next: u32,
    /// `PyInterpreterState.threads.head` (3.10: `tstate_head`).
    pub threads_head: u32,
    /// `PyThreadState.next`.
    pub thread_next: u32,
    /// `PyThreadState.thread_id`: `pthread_self()`, the thread's FS base.
    pub thread_id: u32,
    /// `PyThreadState` → its current frame: `frame` (3.10), `cframe`
    /// (3.11, 3.12), `current_frame` (3.13).
    pub thread_frame: u32,
    /// 3.11/3.12: `_PyCFrame.current_frame`; [`py_style::NO_FIELD`] when
    /// `thread_frame` leads to the frame itself.
    pub cframe_frame: u32,
    /// In a frame: the code object (`f_code`/`f_executable`), the caller
    /// (`f_back`/`previous`), the position (`f_lasti` 3.10; `prev_instr`
    /// or `instr_ptr` later), the entry marker (`is_entry` 3.11; `owner`
    /// 3.12+).
    pub frame_code: u32,
    pub frame_previous: u32,
    pub frame_position: u32,
    pub frame_marker: u32,
    /// `co_code_adaptive`: where the bytecode starts in a code object
    /// (3.11+).
    pub code_adaptive: u32,
    /// [`py_style`]: how positions and eval-loop boundaries are kept.
    pub style: u32,
    /// Where in a code object the [`PY_IDENTITY_WORDS`] words that
    /// [`py_code_identity`] folds begin.
    pub code_identity: u32,
}

/// `PyConfig::style` values.
pub mod py_style {
    /// 3.10: `f_lasti` is an `int` in code units; every frame is run by its
    /// own eval-loop call.
    pub const LASTI: u32 = 0;
    /// 3.11: a pointer to the last instruction; the frame whose `is_entry`
    /// byte is set ends an eval-loop call's run.
    pub const IS_ENTRY: u32 = 1;
    /// 3.12+: a pointer; a frame whose `owner` byte is
    /// `FRAME_OWNED_BY_CSTACK` separates eval-loop calls (and is no Python
    /// frame).
    pub const CSTACK_OWNER: u32 = 2;
    /// `FRAME_OWNED_BY_CSTACK`.
    pub const OWNED_BY_CSTACK: u8 = 3;
    /// A field that does not exist in this version.
    pub const NO_FIELD: u32 = u32::MAX;
}

/// `SyscallRecord::unwind` values.
pub mod unwind {
    /// The eBPF program's own frame-pointer walk.
    pub const FP: u32 = 1;
    /// Unwound in the kernel with CFI rules user space learned.
    pub const KERNEL_DWARF: u32 = 2;
    /// A rule was missing: the record carries a copy of the stack instead.
    pub const WINDOW: u32 = 3;
}

/// `SyscallRecord::stop` values: why the kernel's stack walk ended.
pub mod stop {
    /// The outermost frame (a null return address or frame pointer, or an
    /// END rule).
    pub const COMPLETE: u32 = 0;
    /// `MAX_STACK_FRAMES` frames.
    pub const FRAME_LIMIT: u32 = 1;
    /// Reading the stack failed.
    pub const READ_FAILED: u32 = 2;
    /// A STOP rule: user space found no unwind information for this pc.
    pub const NO_UNWIND_INFO: u32 = 3;
    /// The frame-pointer chain moved backwards, was unaligned or jumped
    /// too far.
    pub const FRAME_POINTER_INVALID: u32 = 4;
    /// No rule for a pc: the record carries a stack copy, and user space
    /// finishes the walk (`unwind::WINDOW`).
    pub const MISSING_RULE: u32 = 5;
}

/// How to find the caller's frame from a pc, learned by user space from the
/// object's CFI (`.eh_frame`) and used by the eBPF unwinder. On x86_64 the
/// return address is always at CFA - 8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleSlot {
    /// The address this rule is for (a return address, or frame 0's ip).
    pub pc: u64,
    /// The address space it is valid in.
    pub asid: u64,
    pub tgid: u32,
    /// [`rule_kind`].
    pub kind: u8,
    /// 1 if the caller's rbp is saved at CFA + `rbp_offset`.
    pub rbp_saved: u8,
    pub _reserved: u16,
    /// CFA = (rsp or rbp) + `cfa_offset`.
    pub cfa_offset: i32,
    pub rbp_offset: i32,
}

pub mod rule_kind {
    pub const EMPTY: u8 = 0;
    pub const CFA_RSP: u8 = 1;
    pub const CFA_RBP: u8 = 2;
    /// The outermost frame: there is no caller.
    pub const END: u8 = 3;
    /// Unwinding cannot go past this pc (no unwind information): stop with
    /// `stop::NO_UNWIND_INFO`.
    pub const STOP: u8 = 4;
    /// No CFI covers this pc: take one frame-pointer step (CFA = rbp + 16,
    /// rbp saved at CFA - 16) if the frame looks sane (rbp above the stack
    /// pointer, aligned, within reach), else stop with
    /// `stop::FRAME_POINTER_INVALID`.
    pub const FRAME_POINTER: u8 = 5;
}

/// Slots in the direct-mapped rule cache (a power of two).
pub const RULE_SLOTS: u32 = 1 << 16;

/// The slot a rule lives in. A collision evicts; the eBPF side then misses
/// and sends a stack copy, and user space puts the rule back.
#[inline(always)]
pub fn rule_slot(tgid: u32, asid: u64, pc: u64) -> u32 {
    let mixed = (pc ^ asid.rotate_left(17) ^ u64::from(tgid)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 48) as u32 & (RULE_SLOTS - 1)
}

/// A process life-cycle event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessRecord {
    pub header: RecordHeader,
    /// FORK: the parent's pid. Otherwise 0.
    pub parent_pid: u32,
    pub _reserved: u32,
    /// The thread's `comm` at the time of the event (NUL padded).
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain integers, no padding (see `layouts_have_no_padding`).
    unsafe impl aya::Pod for super::RuleSlot {}
    // SAFETY: plain integers, no padding (see `layouts_have_no_padding`).
    unsafe impl aya::Pod for super::PyConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<RecordHeader>(), 24);
        assert_eq!(offset_of!(SyscallRecord, nr), 24);
        assert_eq!(offset_of!(SyscallRecord, stack_error), 32);
        assert_eq!(offset_of!(SyscallRecord, args), 40);
        assert_eq!(offset_of!(SyscallRecord, ret), 88);
        assert_eq!(offset_of!(SyscallRecord, sp_word), 112);
        assert_eq!(offset_of!(SyscallRecord, asid), 120);
        assert_eq!(offset_of!(SyscallRecord, window_bytes), 136);
        assert_eq!(offset_of!(SyscallRecord, stop), 140);
        assert_eq!(offset_of!(SyscallRecord, resume_ip), 144);
        assert_eq!(offset_of!(SyscallRecord, enter_ns), 176);
        assert_eq!(size_of::<SyscallRecord>(), 184);
        assert_eq!(size_of::<ProcessRecord>(), 48);
        assert_eq!(size_of::<RuleSlot>(), 32);
        assert_eq!(size_of::<PyFrame>(), 24);
        assert_eq!(offset_of!(PyFrame, identity), 16);
        assert_eq!(offset_of!(PyConfig, interpreters_head), 16);
        assert_eq!(offset_of!(PyConfig, code_identity), 68);
        assert_eq!(size_of::<PyConfig>(), 72);
    }

    #[test]
    fn rule_slots_spread_and_stay_in_range() {
        let a = rule_slot(10, 1, 0x7f00_0000_1234);
        let b = rule_slot(10, 1, 0x7f00_0000_1235);
        let c = rule_slot(11, 1, 0x7f00_0000_1234);
        assert!(a < RULE_SLOTS && b < RULE_SLOTS && c < RULE_SLOTS);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
