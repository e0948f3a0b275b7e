//! Which processes are traced: the target set, fork following, exec and exit.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        generated::bpf_get_current_ancestor_cgroup_id,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::debug;
use mmap_trace_common::{ProcessRecord, RecordHeader, counter, kind};

use crate::maps::{
    CGROUP_ID, CGROUP_LEVEL, EVENTS, FORKED, ForkOrigin, TARGETS, TRACER_TGID, bump,
};

/// The address-space id of `tgid` if it is traced. A child forked by a
/// traced process becomes traced here, the first time it is seen running,
/// and a FORK record announces it; so does a process running in the traced
/// cgroup (or below it), with a JOIN record.
#[inline(always)]
pub fn traced_asid<C: EbpfContext>(ctx: &C, tgid: u32) -> Option<u64> {
    if tgid == TRACER_TGID.load() {
        return None;
    }
    // SAFETY: the value is copied out before anything can remove it.
    if let Some(&asid) = unsafe { TARGETS.get(tgid) } {
        return Some(asid);
    }
    // SAFETY: the helper has no preconditions.
    let task = unsafe { bpf_get_current_task() };
    // SAFETY: copied out before removal.
    let Some(origin) = (unsafe { FORKED.get(task) }).copied() else {
        return joined_cgroup(tgid);
    };
    // Promoted below; if the removal fails, the LRU map evicts it later.
    FORKED.remove(task).ok();
    // A fork shares its parent's layout but is a new address space.
    // SAFETY: the helper has no preconditions.
    let asid = unsafe { bpf_ktime_get_ns() };
    TARGETS.insert(tgid, asid, 0).ok()?;
    debug!(
        ctx,
        "mmap-trace: following pid {} (child of {})", tgid, origin.parent_tgid
    );
    emit(kind::FORK, origin.parent_tgid, origin.time_ns);
    Some(asid)
}

/// Traces `tgid` if it runs in the traced cgroup (the one whose id is
/// CGROUP_ID, at depth CGROUP_LEVEL of the hierarchy).
#[inline(always)]
fn joined_cgroup(tgid: u32) -> Option<u64> {
    let cgroup = CGROUP_ID.load();
    if cgroup == 0 {
        return None;
    }
    // SAFETY: the helper takes any ancestor level (0 for a level deeper
    // than the task's cgroup).
    let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(CGROUP_LEVEL.load() as i32) };
    if ancestor != cgroup {
        return None;
    }
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    TARGETS.insert(tgid, now, 0).ok()?;
    // User space reads its maps at once, while it surely still runs.
    emit_with(kind::JOIN, 0, now, u64::from(BPF_RB_FORCE_WAKEUP));
    Some(now)
}

/// A process record, read at once: user space sets up what the kernel
/// needs for the new process or image (where a Python interpreter keeps
/// its state) before it runs far. Such records are rare next to calls.
fn emit(record_kind: u32, parent_pid: u32, time_ns: u64) {
    emit_with(
        record_kind,
        parent_pid,
        time_ns,
        u64::from(BPF_RB_FORCE_WAKEUP),
    )
}

fn emit_with(record_kind: u32, parent_pid: u32, time_ns: u64, flags: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let record = ProcessRecord {
        header: RecordHeader {
            kind: record_kind,
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            _reserved: 0,
            time_ns,
        },
        parent_pid,
        _reserved: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if EVENTS.output::<ProcessRecord>(&record, flags).is_err() {
        bump(counter::LOST_RECORDS);
    }
}

/// `sched_process_fork(parent, child)`, run by the parent.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn mmtrace_fork(ctx: RawTracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if traced_asid(&ctx, tgid).is_none() {
        return 0;
    }
    // New threads land here too; their entry is never looked up (their
    // tgid is already traced) and goes when they exit.
    let child: u64 = ctx.arg(1);
    let origin = ForkOrigin {
        parent_tgid: tgid,
        _reserved: 0,
        // SAFETY: the helper has no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
    };
    // An LRU map: insertion only fails on a malformed request.
    FORKED.insert(child, origin, 0).ok();
    0
}

/// `sched_process_exec(task, old_pid, bprm)`, run by the task after the new
/// image is in place.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn mmtrace_exec(ctx: RawTracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if traced_asid(&ctx, tgid).is_some() {
        // SAFETY: the helper has no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        // A new image: rules learned for the old one must not apply.
        if let Some(asid) = TARGETS.get_ptr_mut(tgid) {
            // SAFETY: the map value of a present key.
            unsafe { *asid = now };
        }
        emit(kind::EXEC, 0, now);
    }
    0
}

/// `sched_process_exit(task, group_dead)`, run by each exiting thread.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn mmtrace_pexit(ctx: RawTracePointContext) -> u32 {
    let group_dead: u64 = ctx.arg(1);
    on_exit(group_dead as u8 != 0)
}

/// The same for kernels whose `sched_process_exit` has no `group_dead`
/// argument (before 6.16): the process ends with its leader thread.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn mmtrace_pexit_old(_ctx: RawTracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    on_exit(pid_tgid >> 32 == pid_tgid & 0xffff_ffff)
}

#[inline(always)]
fn on_exit(group_dead: bool) -> u32 {
    // A child that exits before it was seen running: forget it (absent for
    // most threads, which is fine).
    // SAFETY: the helper has no preconditions.
    FORKED.remove(unsafe { bpf_get_current_task() }).ok();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: presence test only.
    if unsafe { TARGETS.get(tgid) }.is_none() {
        return 0;
    }
    if group_dead {
        // SAFETY: the helper has no preconditions.
        emit(kind::EXIT, 0, unsafe { bpf_ktime_get_ns() });
        // Present: checked above.
        TARGETS.remove(tgid).ok();
    }
    0
}
