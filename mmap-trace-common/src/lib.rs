//! Types shared by the eBPF programs and the user-space tracer.
//!
//! Every record the eBPF side writes to the ring buffer starts with a
//! [`RecordHeader`] whose `kind` says which struct follows. The layouts are
//! `#[repr(C)]` and contain no implicit padding, so the user side can decode
//! them field by field with `core::mem::offset_of!` and never transmute.
#![no_std]

/// Most frames `bpf_get_stack` returns for one user stack.
pub const MAX_STACK_FRAMES: usize = 127;

/// `RecordHeader::kind` values.
pub mod kind {
    /// A [`crate::SyscallRecord`]: one mmap, munmap or mremap call.
    pub const SYSCALL: u32 = 1;
    /// A [`crate::ProcessRecord`]: the process replaced its image (execve).
    pub const EXEC: u32 = 2;
    /// A [`crate::ProcessRecord`]: the last thread of the process exited.
    pub const EXIT: u32 = 3;
    /// A [`crate::ProcessRecord`]: a new process forked from a traced one.
    pub const FORK: u32 = 4;
}

/// x86_64 syscall numbers of the calls we trace.
pub mod nr {
    pub const MMAP: u64 = 9;
    pub const MUNMAP: u64 = 11;
    pub const MREMAP: u64 = 25;
}

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Records dropped because the ring buffer was full.
    pub const LOST_RECORDS: u32 = 0;
    /// `bpf_get_stack` failed; the record carries no stack.
    pub const STACK_ERRORS: u32 = 1;
    /// A syscall entry could not be saved (the per-thread map was full).
    pub const LOST_ENTRIES: u32 = 2;
    /// A syscall exit had no saved entry (tracing began mid-call).
    pub const UNPAIRED_EXITS: u32 = 3;
    /// Number of counters.
    pub const COUNT: u32 = 4;
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

/// One traced syscall, written at syscall exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallRecord {
    pub header: RecordHeader,
    /// The syscall number ([`nr`]).
    pub nr: u32,
    /// Valid entries at the start of `stack`.
    pub stack_frames: u32,
    /// Negative errno from `bpf_get_stack`, or 0.
    pub stack_error: i64,
    /// When the syscall was entered.
    pub enter_time_ns: u64,
    /// The six syscall arguments, in order.
    pub args: [u64; 6],
    /// The syscall's return value.
    pub ret: i64,
    /// User registers at syscall entry.
    pub user_ip: u64,
    pub user_sp: u64,
    pub user_bp: u64,
    /// The 8 bytes at the user stack pointer at entry: the return address of
    /// a leaf syscall wrapper (which frame-pointer walking skips), if the
    /// wrapper pushed nothing. 0 when unreadable. User space validates it.
    pub sp_word: u64,
    /// User return addresses, innermost first (`frames[0]` is the syscall's ip).
    pub stack: [u64; MAX_STACK_FRAMES],
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

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<RecordHeader>(), 24);
        assert_eq!(offset_of!(SyscallRecord, nr), 24);
        assert_eq!(offset_of!(SyscallRecord, stack_error), 32);
        assert_eq!(offset_of!(SyscallRecord, args), 48);
        assert_eq!(offset_of!(SyscallRecord, ret), 96);
        assert_eq!(offset_of!(SyscallRecord, sp_word), 128);
        assert_eq!(offset_of!(SyscallRecord, stack), 136);
        assert_eq!(size_of::<SyscallRecord>(), 136 + 8 * MAX_STACK_FRAMES);
        assert_eq!(size_of::<ProcessRecord>(), 48);
    }
}
