//! The syscall exit program: one record per traced call.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
        generated::{bpf_find_vma, bpf_get_current_task_btf},
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use mmap_trace_common::{
    MAX_RECORD_DATA, RecordHeader, SyscallRecord, counter, families, kind, madvise, maps_file_code,
    nr, stop, unwind,
};

use crate::{
    layout::{PYTHON_FRAME_BYTES, Scratch},
    maps::{
        ENTERED, ENTERED_SLOTS, EVENTS, PY_STACKS_SEEN, SCRATCH, SYSCALLS, TARGETS, UNWIND_MODE,
        WAKEUP_BYTES, bump,
    },
    process::traced_asid,
    python::{PyStack, walk_python},
    regs::PtRegs,
    unwind::{Unwound, copy_stack_window, read_near_stack, unwind_with_rules, walk_frame_pointers},
};

#[inline(always)]
fn is_mapping_call(id: u64) -> bool {
    let family = match id {
        nr::MMAP | nr::MUNMAP | nr::MREMAP => families::MMAP,
        nr::BRK => families::BRK,
        nr::SHMAT | nr::SHMDT => families::SHM,
        nr::MPROTECT => families::MPROTECT,
        nr::MADVISE => families::MADVISE,
        _ => return false,
    };
    SYSCALLS.load() & family != 0
}

/// `sys_enter(regs, id)`: when a mapping call of a traced process entered
/// the kernel. Its effect on the address space lies between entry and
/// exit; user space needs both ends to put concurrent calls in order.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn mmtrace_enter(ctx: RawTracePointContext) -> u32 {
    let id: u64 = ctx.arg(1);
    if !is_mapping_call(id) || !may_change_existing(&ctx, id) {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // A plain lookup: a forked child becomes traced at its first exit (or
    // fork, or exec), so its very first call has no entry time.
    // SAFETY: only the key's presence is looked at.
    if unsafe { TARGETS.get((pid_tgid >> 32) as u32) }.is_none() {
        return 0;
    }
    let tid = pid_tgid as u32;
    let Some(slot) = ENTERED.get_ptr_mut(tid % ENTERED_SLOTS) else {
        return 0;
    };
    // SAFETY: the helper has no preconditions; the slot is a valid array
    // element, written whole by this thread (another thread sharing the
    // slot is caught by the tid at exit).
    unsafe {
        (*slot).time_ns = bpf_ktime_get_ns();
        (*slot).tid = tid;
    }
    0
}

/// `sys_exit(regs, ret)`. Everything is read at exit: x86_64 syscalls
/// preserve every register but rax, rcx and r11, so the saved user
/// registers still hold the arguments, the stack pointer and the ip. One
/// program per traced call, no per-thread state.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn mmtrace_exit(ctx: RawTracePointContext) -> u32 {
    let regs: *const PtRegs = ctx.arg(0);
    // SAFETY: the tracepoint passes the task's user register frame.
    let Ok(id) = (unsafe { bpf_probe_read_kernel(&(*regs).orig_ax) }) else {
        return 0;
    };
    if !is_mapping_call(id) {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(asid) = traced_asid(&ctx, tgid) else {
        return 0;
    };
    // SAFETY: as above.
    let Ok(regs) = (unsafe { bpf_probe_read_kernel(regs) }) else {
        return 0;
    };
    // Taken before any early return: the entry must not outlive its call.
    let enter_ns = take_enter_time(pid_tgid as u32);
    // Only the advice that gives pages back changes what a process holds.
    if id == nr::MADVISE && !madvise::releases(regs.syscall_args()[2]) {
        return 0;
    }
    // SAFETY: the helper has no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(scratch) = SCRATCH.get_ptr_mut(cpu) else {
        return 0;
    };
    // The unwinding steps reach the slot through the map themselves, so it
    // is only borrowed in short scopes here.
    let near_len = {
        // SAFETY: this CPU's slot; programs on one CPU do not interleave
        // here, and no other reference to it is live in this scope.
        let Scratch { record, near, .. } = unsafe { &mut *scratch };
        *record = SyscallRecord {
            header: RecordHeader {
                kind: kind::SYSCALL,
                pid: tgid,
                tid: pid_tgid as u32,
                _reserved: 0,
                // SAFETY: the helper has no preconditions.
                time_ns: unsafe { bpf_ktime_get_ns() },
            },
            nr: id as u32,
            python_frames: 0,
            stack_error: 0,
            args: regs.syscall_args(),
            ret: ctx.arg(1),
            user_ip: regs.ip,
            user_sp: regs.sp,
            sp_word: 0,
            asid,
            unwind: unwind::FP,
            stack_frames: 0,
            window_bytes: 0,
            stop: stop::COMPLETE,
            resume_ip: 0,
            resume_sp: 0,
            resume_bp: 0,
            mapped_size: 0,
            enter_ns,
        };
        read_near_stack(regs.sp, near)
    };
    if id == nr::SHMAT {
        let ret: i64 = ctx.arg(1);
        if ret > 0 {
            // SAFETY: this CPU's slot, as above; no reference to it is live.
            unsafe { (*scratch).record.mapped_size = vma_size(ret as u64) };
        }
    }
    // Set by each branch: whether user space should read this at once. A
    // library's code mapped is read at once too (`maps_file_code`).
    let args = regs.syscall_args();
    let maps_code = id == nr::MMAP && maps_file_code(args[2], args[3]);
    let mut wake;
    let data_bytes = if UNWIND_MODE.load() == 0 {
        // SAFETY: this CPU's slot, as above; the walk's steps reach it only
        // through this reference.
        let slot = unsafe { &mut *scratch };
        if near_len >= 8 {
            // SAFETY: 8 bytes were read into the near buffer.
            slot.record.sp_word = unsafe { core::ptr::read_unaligned(slot.near.as_ptr().cast()) };
        }
        let (count, stop) = walk_frame_pointers(&regs, near_len, slot);
        slot.record.stack_frames = count;
        slot.record.stop = stop;
        let python = walk_python(tgid, pid_tgid as u32, asid, count);
        wake = is_new_python_stack(&python);
        // SAFETY: this CPU's slot, as above; the Python walk is over.
        unsafe { (*scratch).record.python_frames = python.count };
        count * 8 + python.count * PYTHON_FRAME_BYTES as u32
    } else {
        let unwound = unwind_with_rules(tgid, asid, &regs, near_len);
        let native = match unwound {
            Unwound::Frames { count, .. } | Unwound::MissingRule { count, .. } => count,
        };
        let python_stack = walk_python(tgid, pid_tgid as u32, asid, native);
        wake = is_new_python_stack(&python_stack);
        let python = python_stack.count;
        // SAFETY: this CPU's slot, as above; the walks are over, so this is
        // the only reference.
        let Scratch { record, data, .. } = unsafe { &mut *scratch };
        record.python_frames = python;
        let python_bytes = python * PYTHON_FRAME_BYTES as u32;

        match unwound {
            Unwound::Frames { count, stop } => {
                record.unwind = unwind::KERNEL_DWARF;
                record.stack_frames = count;
                record.stop = stop;
                count * 8 + python_bytes
            }
            Unwound::MissingRule { count, ip, sp, bp } => {
                let copied = copy_stack_window(sp, count, python, data);
                if copied == 0 {
                    bump(counter::STACK_ERRORS);
                }
                record.unwind = unwind::WINDOW;
                record.stop = stop::MISSING_RULE;
                record.stack_frames = count;
                record.window_bytes = copied;
                record.resume_ip = ip;
                record.resume_sp = sp;
                record.resume_bp = bp;
                // User space learns the rules this stack needs: the sooner,
                // the fewer copies follow.
                wake = true;
                count * 8 + python_bytes + copied
            }
        }
    };
    let size = size_of::<SyscallRecord>() + (data_bytes as usize).min(MAX_RECORD_DATA);
    // SAFETY: `size` is at most the scratch slot's size, and the record and
    // its data are contiguous at its start (`layout::Scratch`).
    let bytes =
        unsafe { core::slice::from_raw_parts((scratch as *const Scratch).cast::<u8>(), size) };
    let flags = if wake || maps_code {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        wakeup_flags()
    };
    if EVENTS.output::<[u8]>(bytes, flags).is_err() {
        bump(counter::LOST_RECORDS);
    }
    0
}

/// The size of the current task's VMA that contains `address`, or 0.
#[inline(always)]
fn vma_size(address: u64) -> u64 {
    let mut size: u64 = 0;
    // SAFETY: the callback and its context are valid for the call; the task
    // pointer comes from the kernel.
    unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            address,
            vma_size_callback as *mut c_void,
            (&raw mut size).cast(),
            0,
        )
    };
    size
}

/// `vm_start` and `vm_end` open `struct vm_area_struct`.
#[inline(never)]
extern "C" fn vma_size_callback(_task: *mut c_void, vma: *mut c_void, context: *mut c_void) -> i64 {
    // SAFETY: the kernel passes a valid VMA and our context.
    unsafe {
        let bounds = vma.cast::<u64>();
        let (start, end) = (core::ptr::read(bounds), core::ptr::read(bounds.add(1)));
        *context.cast::<u64>() = end.wrapping_sub(start);
    }
    0
}

/// Waking the reader for every record costs the traced thread more than the
/// record itself; the reader polls on a short timer instead, and is woken
/// only when the ring buffer fills past WAKEUP_BYTES.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let pending = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    if pending >= u64::from(WAKEUP_BYTES.load()) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// `MAP_FIXED | MAP_FIXED_NOREPLACE`: an mmap that names its address.
const MAP_FIXED_ANY: u64 = 0x10 | 0x10_0000;

/// Only calls that change mappings that exist before them are ordered by
/// their entry (`mmap-trace/src/account/order.rs`); a mapping the kernel
/// places (mmap without a fixed address, brk, shmat) is ordered by its
/// return, and its entry is not worth noting. Half the calls of a program
/// that maps and unmaps skip the rest of the entry program.
#[inline(always)]
fn may_change_existing(ctx: &RawTracePointContext, id: u64) -> bool {
    match id {
        nr::BRK | nr::SHMAT => false,
        nr::MMAP => {
            let regs: *const PtRegs = ctx.arg(0);
            // SAFETY: the tracepoint passes the task's user register frame;
            // mmap's flags are its fourth argument (r10). Unreadable: note
            // the entry, as for any other call.
            let flags = unsafe { bpf_probe_read_kernel(&(*regs).r10) }.unwrap_or(MAP_FIXED_ANY);
            flags & MAP_FIXED_ANY != 0
        }
        _ => true,
    }
}

/// When this thread's call entered (0: unknown), forgotten now.
#[inline(always)]
fn take_enter_time(tid: u32) -> u64 {
    let Some(slot) = ENTERED.get_ptr_mut(tid % ENTERED_SLOTS) else {
        return 0;
    };
    // SAFETY: a valid array element; cleared so that a later call of a
    // thread that reuses this id is not given this time.
    unsafe {
        if (*slot).tid != tid {
            return 0;
        }
        (*slot).tid = 0;
        (*slot).time_ns
    }
}

/// Python frames whose code objects user space has not read yet: it should
/// read them now, while they exist.
#[inline(always)]
fn is_new_python_stack(python: &PyStack) -> bool {
    // SAFETY: only the presence of the key is looked at.
    python.count > 0 && unsafe { PY_STACKS_SEEN.get(python.signature) }.is_none()
}
