//! What the kernel tells us: traced calls and process life-cycle events.

use super::{CallKind, PyFrameRaw, StopReason};

/// One decoded record, from the ring buffer or from a trace file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Syscall(SyscallEvent),
    Exec(ProcessEvent),
    Exit(ProcessEvent),
    Fork(ProcessEvent),
    /// A process of the traced cgroup, seen for the first time.
    Join(ProcessEvent),
}

impl Event {
    /// When it happened (CLOCK_MONOTONIC ns).
    pub fn time_ns(&self) -> u64 {
        match self {
            Event::Syscall(e) => e.time_ns,
            Event::Exec(e) | Event::Exit(e) | Event::Fork(e) | Event::Join(e) => e.time_ns,
        }
    }

    pub fn pid(&self) -> u32 {
        match self {
            Event::Syscall(e) => e.pid,
            Event::Exec(e) | Event::Exit(e) | Event::Fork(e) | Event::Join(e) => e.pid,
        }
    }
}

/// One traced call: mmap, munmap, mremap, brk, shmat or shmdt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallEvent {
    pub pid: u32,
    pub tid: u32,
    /// When the call returned (CLOCK_MONOTONIC ns).
    pub time_ns: u64,
    /// When it entered the kernel; 0 when unknown.
    pub enter_ns: u64,
    pub call: Call,
    /// The raw return value: an address, 0, or a negative errno.
    pub ret: i64,
    pub user_ip: u64,
    pub user_sp: u64,
    /// The 8 bytes at the user stack pointer (see `resolve::place`).
    pub sp_word: u64,
    /// The address space (exec image) the call ran in.
    pub asid: u64,
    /// How `stack` was produced.
    pub source: StackSource,
    /// The ip, then return addresses, innermost first.
    pub stack: Vec<u64>,
    /// Why the walk ended where `stack` ends.
    pub stop: StopReason,
    /// Python frames, innermost first (CPython processes).
    pub python: Vec<PyFrameRaw>,
    /// With `StackSource::Window`: the registers of the frame after the
    /// last one in `stack`, and the user stack from its sp.
    pub resume: Resume,
    pub window: Vec<u8>,
    /// Negative errno when the kernel could not read the stack at all.
    pub stack_error: i64,
    /// A shared file mapping whose file lives in memory (memfd, /dev/shm):
    /// shared memory rather than file-backed. Found from /proc when the
    /// event arrives.
    pub shmem: bool,
    /// madvise: the resident bytes the advised range held at the last
    /// sample, measured when the event arrived (a trace keeps it, since a
    /// replay has no samples of its own to measure with).
    pub resident_returned: Option<u64>,
}

impl SyscallEvent {
    /// A frame-pointer event with the given stack, for tests.
    pub fn for_test(pid: u32, time_ns: u64, call: Call, ret: i64, stack: &[u64]) -> Self {
        SyscallEvent {
            pid,
            tid: pid,
            time_ns,
            enter_ns: 0,
            call,
            ret,
            user_ip: stack.first().copied().unwrap_or(0),
            user_sp: 0,
            sp_word: 0,
            asid: 1,
            source: StackSource::FramePointers,
            stack: stack.to_vec(),
            stop: StopReason::Complete,
            python: Vec::new(),
            resume: Resume::default(),
            window: Vec::new(),
            stack_error: 0,
            shmem: false,
            resident_returned: None,
        }
    }

    /// Did the call fail (MAP_FAILED / -errno; for brk, a break other than
    /// the one asked for)?
    pub fn failed(&self) -> bool {
        match self.call {
            Call::Brk { requested } => requested != 0 && self.ret as u64 != requested,
            _ => (-4095..0).contains(&self.ret),
        }
    }
}

/// Where user space takes over unwinding from the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resume {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

impl Resume {
    pub fn is_default(&self) -> bool {
        *self == Resume::default()
    }
}

/// Who produced a stack.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum StackSource {
    /// The kernel's frame-pointer walk.
    FramePointers,
    /// CFI rules, in the kernel or (from a window) in user space.
    Dwarf,
    /// Not unwound yet: the record carries a copy of the stack.
    Window,
}

impl StackSource {
    /// The report's name for the unwinder: "fp" or "dwarf".
    pub fn report_name(self) -> &'static str {
        match self {
            StackSource::FramePointers => "fp",
            StackSource::Dwarf | StackSource::Window => "dwarf",
        }
    }
}

/// The call and its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    Mmap {
        addr: u64,
        len: u64,
        prot: u32,
        flags: u32,
        fd: i32,
        offset: u64,
    },
    Munmap {
        addr: u64,
        len: u64,
    },
    Mremap {
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u32,
        new_addr: u64,
    },
    /// brk(requested); the result is the new program break (the old one
    /// when the request failed; brk(0) only asks).
    Brk {
        requested: u64,
    },
    /// shmat; `size` is the mapping it made (its VMA, measured in the
    /// kernel at exit).
    Shmat {
        shmid: i32,
        addr: u64,
        flags: u32,
        size: u64,
    },
    Shmdt {
        addr: u64,
    },
    /// mprotect: `prot` 0 (PROT_NONE) reserves, anything else makes
    /// accessible.
    Mprotect {
        addr: u64,
        len: u64,
        prot: u32,
    },
    /// madvise with advice that gives pages back (DONTNEED, FREE, REMOVE,
    /// PAGEOUT, DONTNEED_LOCKED; the kernel side traces no other).
    Madvise {
        addr: u64,
        len: u64,
        advice: u32,
    },
}

impl Call {
    /// A private anonymous read-write mmap of `len` bytes (for tests).
    pub fn anonymous_mmap(len: u64) -> Self {
        Call::Mmap {
            addr: 0,
            len,
            prot: 3,
            flags: 0x22,
            fd: -1,
            offset: 0,
        }
    }

    /// An mmap of a file's code (a library being loaded): what the kernel
    /// wakes user space for at once, so that an interpreter is known
    /// before it runs far.
    pub fn maps_code(&self) -> bool {
        matches!(
            *self,
            Call::Mmap { prot, flags, .. }
                if mmap_trace_common::maps_file_code(prot.into(), flags.into())
        )
    }

    pub fn kind(&self) -> CallKind {
        match self {
            Call::Mmap { .. } => CallKind::Mmap,
            Call::Munmap { .. } => CallKind::Munmap,
            Call::Mremap { .. } => CallKind::Mremap,
            Call::Brk { .. } => CallKind::Brk,
            Call::Shmat { .. } => CallKind::Shmat,
            Call::Shmdt { .. } => CallKind::Shmdt,
            Call::Mprotect { .. } => CallKind::Mprotect,
            Call::Madvise { .. } => CallKind::Madvise,
        }
    }
}

/// exec, exit, fork or join of a traced process.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessEvent {
    pub pid: u32,
    pub tid: u32,
    pub time_ns: u64,
    /// FORK: the parent's pid.
    pub parent_pid: u32,
    pub comm: String,
}
