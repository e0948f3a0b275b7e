//! Syscall entry and exit: save arguments, then emit one record per call.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_stack, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::warn;
use mmap_trace_common::{MAX_STACK_FRAMES, RecordHeader, SyscallRecord, counter, kind, nr};

use crate::{
    maps::{EVENTS, PENDING, Pending, bump},
    process::is_traced,
    regs::PtRegs,
};

#[inline(always)]
fn is_mapping_call(id: u64) -> bool {
    id == nr::MMAP || id == nr::MUNMAP || id == nr::MREMAP
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn mmtrace_enter(ctx: RawTracePointContext) -> u32 {
    let id: u64 = ctx.arg(1);
    if !is_mapping_call(id) {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_traced(&ctx, (pid_tgid >> 32) as u32) {
        return 0;
    }
    let regs: *const PtRegs = ctx.arg(0);
    // SAFETY: the tracepoint passes the task's user register frame.
    let Ok(regs) = (unsafe { bpf_probe_read_kernel(regs) }) else {
        return 0;
    };
    // SAFETY: a read of user memory; failure is reported as 0.
    let sp_word = unsafe { bpf_probe_read_user(regs.sp as *const u64) }.unwrap_or(0);
    let pending = Pending {
        nr: id,
        enter_time_ns: unsafe { bpf_ktime_get_ns() },
        args: regs.syscall_args(),
        user_ip: regs.ip,
        user_sp: regs.sp,
        user_bp: regs.bp,
        sp_word,
    };
    if PENDING.insert(pid_tgid as u32, pending, 0).is_err() {
        bump(counter::LOST_ENTRIES);
        warn!(
            &ctx,
            "mmap-trace: no room to save syscall entry of tid {}", pid_tgid as u32
        );
    }
    0
}

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
    let tid = pid_tgid as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING.get(tid) }).copied() else {
        if is_traced(&ctx, (pid_tgid >> 32) as u32) {
            bump(counter::UNPAIRED_EXITS);
        }
        return 0;
    };
    let _ = PENDING.remove(tid);
    if pending.nr != id {
        bump(counter::UNPAIRED_EXITS);
        return 0;
    }
    let ret: i64 = ctx.arg(1);

    let Some(mut entry) = EVENTS.reserve::<SyscallRecord>(0) else {
        bump(counter::LOST_RECORDS);
        return 0;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to a reserved, writable SyscallRecord; every
    // field user space reads is written below.
    unsafe {
        (*record).header = RecordHeader {
            kind: kind::SYSCALL,
            pid: (pid_tgid >> 32) as u32,
            tid,
            _reserved: 0,
            time_ns: bpf_ktime_get_ns(),
        };
        (*record).nr = id as u32;
        (*record).enter_time_ns = pending.enter_time_ns;
        (*record).args = pending.args;
        (*record).ret = ret;
        (*record).user_ip = pending.user_ip;
        (*record).user_sp = pending.user_sp;
        (*record).user_bp = pending.user_bp;
        (*record).sp_word = pending.sp_word;
        let stack = (*record).stack.as_mut_ptr();
        let got = bpf_get_stack(
            ctx.as_ptr(),
            stack.cast(),
            (MAX_STACK_FRAMES * 8) as u32,
            u64::from(BPF_F_USER_STACK),
        );
        if got < 0 {
            (*record).stack_frames = 0;
            (*record).stack_error = got;
            bump(counter::STACK_ERRORS);
        } else {
            (*record).stack_frames = (got as u32) / 8;
            (*record).stack_error = 0;
        }
    }
    entry.submit(0);
    0
}
