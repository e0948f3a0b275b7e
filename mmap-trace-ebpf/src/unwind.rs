//! Unwinding in the kernel: with rules user space learned from CFI (or with
//! frame pointers), and the stack copy sent instead when a rule is missing.
//!
//! Most frames of a syscall's stack lie within a few hundred bytes of its
//! stack pointer, so the top NEAR_BYTES of the stack are read once, and
//! frame reads there cost a load instead of a `bpf_probe_read_user` call.
//! Each frame is one `bpf_loop` step, so the verifier checks the step once
//! rather than once per possible frame. Every walk ends with a reason
//! (`mmap_trace_common::stop`).

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_probe_read_user,
    generated::{bpf_loop, bpf_probe_read_user as read_user_raw},
};
use mmap_trace_common::{MAX_STACK_FRAMES, MAX_STACK_WINDOW, rule_kind, rule_slot, stop};

use crate::{
    layout::{
        CHUNK_MASK, FRAME_INDEX_MASK, NEAR_BYTES, PAGE_BYTES, PAGE_MASK, PYTHON_FRAME_BYTES,
        PYTHON_INDEX_MASK, Scratch, WINDOW_MASK,
    },
    maps::{RULES, STACK_BYTES, this_cpu_scratch},
    regs::PtRegs,
};

pub enum Unwound {
    /// `count` frames written; the walk ended for `stop`.
    Frames { count: u32, stop: u32 },
    /// Frame `count` (whose registers these are) had no rule: user space
    /// continues from there with a copy of the stack.
    MissingRule {
        count: u32,
        ip: u64,
        sp: u64,
        bp: u64,
    },
}

/// Reads up to NEAR_BYTES of the user stack from `sp` into `buffer`: first
/// to the end of its page (which is mapped), then the rest if it is mapped
/// too. Returns how many bytes it holds.
#[inline(always)]
pub fn read_near_stack(sp: u64, buffer: &mut [u8; 2 * NEAR_BYTES]) -> u64 {
    let first = (PAGE_BYTES - (sp & PAGE_MASK)).min(NEAR_BYTES as u64);
    let base = buffer.as_mut_ptr();
    // SAFETY: first ≤ NEAR_BYTES bytes into a 2 × NEAR_BYTES buffer; the
    // helper checks the user address.
    if unsafe { read_user_raw(base.cast(), first as u32, sp as *const _) } != 0 {
        return 0;
    }
    let rest = NEAR_BYTES as u64 - first;
    if rest == 0 {
        return first;
    }
    let at = (first as usize) & (NEAR_BYTES - 1);
    let rest = (rest as u32) & (NEAR_BYTES as u32 - 1);
    // SAFETY: at < NEAR_BYTES and rest < NEAR_BYTES: inside the buffer; the
    // helper checks the user address.
    let read = unsafe { read_user_raw(base.add(at).cast(), rest, (sp + first) as *const _) };
    if read == 0 { NEAR_BYTES as u64 } else { first }
}

/// The state one unwinding step reads and advances (`bpf_loop` context).
#[repr(C)]
struct Walk {
    ip: u64,
    sp: u64,
    bp: u64,
    asid: u64,
    near_base: u64,
    near_len: u64,
    tgid: u32,
    /// Frames written so far.
    count: u32,
    /// Why the walk ended (`stop::*`), or RUNNING while it goes on.
    stop: u32,
    /// For the frame-pointer walk: the previous frame's rbp.
    low: u64,
}

/// `Walk::stop` while the walk goes on.
const RUNNING: u32 = u32::MAX;

/// How far one frame-pointer step may move up the stack.
const MAX_FRAME_BYTES: u64 = 8 << 20;

/// The 8 bytes at `address` of the user stack: from the near buffer when
/// they are in it, else read.
#[inline(always)]
fn stack_u64(scratch: &Scratch, walk: &Walk, address: u64) -> Option<u64> {
    let offset = address.wrapping_sub(walk.near_base);
    if offset.wrapping_add(8) <= walk.near_len {
        let at = (offset as usize) & (NEAR_BYTES - 1);
        // SAFETY: at + 8 ≤ NEAR_BYTES + 8, inside the 2 × NEAR_BYTES buffer.
        Some(unsafe { core::ptr::read_unaligned(scratch.near.as_ptr().add(at).cast::<u64>()) })
    } else {
        // SAFETY: a read of user memory through the helper; failure is
        // reported as None.
        unsafe { bpf_probe_read_user(address as *const u64) }.ok()
    }
}

/// Records `ip` as frame `walk.count`.
#[inline(always)]
fn push_frame(scratch: &mut Scratch, walk: &mut Walk, ip: u64) {
    let at = (walk.count as usize & FRAME_INDEX_MASK) * 8;
    // SAFETY: at ≤ MAX_STACK_FRAMES × 8, inside the data area.
    unsafe { core::ptr::write_unaligned(scratch.data.as_mut_ptr().add(at).cast::<u64>(), ip) };
    walk.count += 1;
}

/// One frame with the learned rules. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn rules_step(_index: u64, context: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes the Walk the caller gave it, which outlives
    // the loop.
    let walk = unsafe { &mut *context.cast::<Walk>() };
    let Some(scratch) = this_cpu_scratch() else {
        walk.stop = stop::READ_FAILED;
        return 1;
    };
    let ip = walk.ip;
    let Some(rule) = RULES.get(rule_slot(walk.tgid, walk.asid, ip)) else {
        walk.stop = stop::MISSING_RULE;
        return 1;
    };
    if rule.pc != ip || rule.asid != walk.asid || rule.tgid != walk.tgid {
        walk.stop = stop::MISSING_RULE;
        return 1;
    }
    push_frame(scratch, walk, ip);
    let cfa = match rule.kind {
        rule_kind::CFA_RSP => walk.sp.wrapping_add(rule.cfa_offset as i64 as u64),
        rule_kind::CFA_RBP => walk.bp.wrapping_add(rule.cfa_offset as i64 as u64),
        rule_kind::FRAME_POINTER => {
            // No CFI here: a frame-pointer step, if the frame looks like one.
            let bp = walk.bp;
            if bp < walk.sp || bp - walk.sp > MAX_FRAME_BYTES || bp & 7 != 0 {
                walk.stop = stop::FRAME_POINTER_INVALID;
                return 1;
            }
            bp.wrapping_add(rule.cfa_offset as i64 as u64)
        }
        rule_kind::END => {
            walk.stop = stop::COMPLETE;
            return 1;
        }
        rule_kind::STOP => {
            walk.stop = stop::NO_UNWIND_INFO;
            return 1;
        }
        _ => {
            // An empty slot whose key matched: user space sends it anew.
            walk.count -= 1;
            walk.stop = stop::MISSING_RULE;
            return 1;
        }
    };
    let Some(ra) = stack_u64(scratch, walk, cfa.wrapping_sub(8)) else {
        walk.stop = stop::READ_FAILED;
        return 1;
    };
    if rule.rbp_saved != 0 {
        let at = cfa.wrapping_add(rule.rbp_offset as i64 as u64);
        let Some(saved) = stack_u64(scratch, walk, at) else {
            walk.stop = stop::READ_FAILED;
            return 1;
        };
        walk.bp = saved;
    }
    if ra == 0 {
        walk.stop = stop::COMPLETE;
        return 1;
    }
    walk.sp = cfa;
    walk.ip = ra;
    0
}

/// One frame of the frame-pointer walk. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn frame_pointer_step(_index: u64, context: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes the Walk the caller gave it, which outlives
    // the loop.
    let walk = unsafe { &mut *context.cast::<Walk>() };
    let Some(scratch) = this_cpu_scratch() else {
        walk.stop = stop::READ_FAILED;
        return 1;
    };
    let bp = walk.bp;
    if bp == 0 {
        walk.stop = stop::COMPLETE;
        return 1;
    }
    if bp <= walk.low || bp - walk.low > MAX_FRAME_BYTES || bp & 7 != 0 {
        walk.stop = stop::FRAME_POINTER_INVALID;
        return 1;
    }
    let (Some(next), Some(ra)) = (
        stack_u64(scratch, walk, bp),
        stack_u64(scratch, walk, bp + 8),
    ) else {
        walk.stop = stop::READ_FAILED;
        return 1;
    };
    if ra == 0 {
        walk.stop = stop::COMPLETE;
        return 1;
    }
    push_frame(scratch, walk, ra);
    walk.low = bp;
    walk.bp = next;
    0
}

fn start(regs: &PtRegs, near_len: u64, tgid: u32, asid: u64) -> Walk {
    Walk {
        ip: regs.ip,
        sp: regs.sp,
        bp: regs.bp,
        asid,
        near_base: regs.sp,
        near_len,
        tgid,
        count: 0,
        stop: RUNNING,
        low: regs.sp,
    }
}

/// The stop reason of a walk the loop ended: still running means it used
/// every iteration.
#[inline(always)]
fn final_stop(walk: &Walk) -> u32 {
    if walk.stop == RUNNING {
        stop::FRAME_LIMIT
    } else {
        walk.stop
    }
}

/// Walks the stack with the learned rules into the scratch slot's data.
/// Per frame: one array lookup and (usually) two loads.
#[inline(always)]
pub fn unwind_with_rules(tgid: u32, asid: u64, regs: &PtRegs, near_len: u64) -> Unwound {
    let mut walk = start(regs, near_len, tgid, asid);
    // SAFETY: the callback and its context are valid for the call.
    unsafe {
        bpf_loop(
            MAX_STACK_FRAMES as u32,
            rules_step as *mut c_void,
            (&raw mut walk).cast(),
            0,
        )
    };
    match final_stop(&walk) {
        stop::MISSING_RULE => Unwound::MissingRule {
            count: walk.count,
            ip: walk.ip,
            sp: walk.sp,
            bp: walk.bp,
        },
        stop => Unwound::Frames {
            count: walk.count,
            stop,
        },
    }
}

/// The frame-pointer walk: frame 0 is the ip, then each frame's saved
/// (rbp, return address) pair at rbp. A null rbp or return address ends the
/// chain (`_start` clears rbp); an implausible rbp (not above the previous
/// one, unaligned, or more than MAX_FRAME_BYTES away), which is what code
/// without frame pointers leaves, cuts it. Returns (frames, stop reason).
#[inline(always)]
pub fn walk_frame_pointers(regs: &PtRegs, near_len: u64, scratch: &mut Scratch) -> (u32, u32) {
    let mut walk = start(regs, near_len, 0, 0);
    push_frame(scratch, &mut walk, regs.ip);
    // SAFETY: the callback and its context are valid for the call.
    unsafe {
        bpf_loop(
            MAX_STACK_FRAMES as u32 - 1,
            frame_pointer_step as *mut c_void,
            (&raw mut walk).cast(),
            0,
        )
    };
    (walk.count, final_stop(&walk))
}

/// Copies up to STACK_BYTES of the user stack from `sp` into `data` after
/// the first `frames` frames and `python` Python frames, page by page, so a
/// stack shallower than the window (a thread's, near its top) yields what
/// is there. Returns the bytes copied.
#[inline(always)]
pub fn copy_stack_window(sp: u64, frames: u32, python: u32, data: &mut [u8]) -> u32 {
    let want = (STACK_BYTES.load() as usize).min(MAX_STACK_WINDOW);
    let base = data.as_mut_ptr();
    let start = (frames as usize & FRAME_INDEX_MASK) * 8
        + (python as usize & PYTHON_INDEX_MASK) * PYTHON_FRAME_BYTES;
    let mut copied: usize = 0;
    for _ in 0..(MAX_STACK_WINDOW / PAGE_BYTES as usize + 1) {
        if copied >= want {
            break;
        }
        let from = sp + copied as u64;
        let to_page_end = (PAGE_BYTES - (from & PAGE_MASK)) as usize;
        let chunk = to_page_end.min(want - copied) & CHUNK_MASK;
        let at = start + (copied & WINDOW_MASK);
        // SAFETY: at < MAX_STACK_FRAMES × 8 + the Python frames +
        // MAX_STACK_WINDOW and chunk ≤ a page: inside the data area, which
        // has a page of slack (see `layout`); the helper checks the user
        // address.
        let failed =
            unsafe { read_user_raw(base.add(at).cast(), chunk as u32, from as *const _) } < 0;
        if failed || chunk == 0 {
            break;
        }
        copied += chunk;
    }
    copied as u32
}
