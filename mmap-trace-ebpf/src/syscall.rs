//! The syscall exit program: one record per traced mmap, munmap or mremap.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use mmap_trace_common::{
    MAX_RECORD_DATA, RecordHeader, SyscallRecord, counter, flags, kind, nr, unwind,
};

use crate::{
    maps::{EVENTS, SCRATCH, Scratch, UNWIND_MODE, WAKEUP_BYTES, bump},
    process::traced_asid,
    regs::PtRegs,
    unwind::{Unwound, copy_stack_window, unwind_with_rules, walk_frame_pointers},
};

#[inline(always)]
fn is_mapping_call(id: u64) -> bool {
    id == nr::MMAP || id == nr::MUNMAP || id == nr::MREMAP
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
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(scratch) = SCRATCH.get_ptr_mut(cpu) else {
        return 0;
    };
    // SAFETY: this CPU's slot; programs on one CPU do not interleave here.
    let scratch: &mut Scratch = unsafe { &mut *scratch };
    let record = &mut scratch.record;
    record.header = RecordHeader {
        kind: kind::SYSCALL,
        pid: tgid,
        tid: pid_tgid as u32,
        _reserved: 0,
        time_ns: unsafe { bpf_ktime_get_ns() },
    };
    record.nr = id as u32;
    record.flags = 0;
    record.stack_error = 0;
    record.args = regs.syscall_args();
    record.ret = ctx.arg(1);
    record.user_ip = regs.ip;
    record.user_sp = regs.sp;
    record.sp_word = 0;
    record.asid = asid;
    record.stack_frames = 0;
    record.window_bytes = 0;
    record._reserved = 0;
    record.resume_ip = 0;
    record.resume_sp = 0;
    record.resume_bp = 0;

    let mut wake = false;
    let data_bytes = if UNWIND_MODE.load() == 0 {
        record.unwind = unwind::FP;
        // SAFETY: a read of user memory; failure is reported as 0.
        record.sp_word = unsafe { bpf_probe_read_user(regs.sp as *const u64) }.unwrap_or(0);
        let (count, cut) = walk_frame_pointers(&regs, &mut scratch.data);
        scratch.record.stack_frames = count;
        if cut {
            scratch.record.flags |= flags::TRUNCATED;
        }
        count * 8
    } else {
        match unwind_with_rules(tgid, asid, &regs, &mut scratch.data) {
            Unwound::Frames { count, truncated } => {
                scratch.record.unwind = unwind::KERNEL_DWARF;
                scratch.record.stack_frames = count;
                if truncated {
                    scratch.record.flags |= flags::TRUNCATED;
                }
                count * 8
            }
            Unwound::MissingRule { count, ip, sp, bp } => {
                let copied = copy_stack_window(sp, count, &mut scratch.data);
                if copied == 0 {
                    bump(counter::STACK_ERRORS);
                }
                let record = &mut scratch.record;
                record.unwind = unwind::WINDOW;
                record.stack_frames = count;
                record.window_bytes = copied;
                record.resume_ip = ip;
                record.resume_sp = sp;
                record.resume_bp = bp;
                // User space learns the rules this stack needs: the sooner,
                // the fewer copies follow.
                wake = true;
                count * 8 + copied
            }
        }
    };
    let size = size_of::<SyscallRecord>() + (data_bytes as usize).min(MAX_RECORD_DATA);
    // SAFETY: `size` is at most the scratch slot's size.
    let bytes =
        unsafe { core::slice::from_raw_parts((scratch as *const Scratch).cast::<u8>(), size) };
    let flags = if wake {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        wakeup_flags()
    };
    if EVENTS.output::<[u8]>(bytes, flags).is_err() {
        bump(counter::LOST_RECORDS);
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
