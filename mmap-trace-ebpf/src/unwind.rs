//! Unwinding in the kernel with rules user space learned from CFI, and the
//! stack copy sent instead when a rule is missing.

use aya_ebpf::helpers::{bpf_probe_read_user, generated::bpf_probe_read_user as read_user_raw};
use mmap_trace_common::{MAX_STACK_FRAMES, MAX_STACK_WINDOW, rule_kind, rule_slot};

use crate::{
    maps::{RULES, STACK_BYTES},
    regs::PtRegs,
};

pub enum Unwound {
    /// `count` frames written; `truncated` if the walk stopped early.
    Frames { count: u32, truncated: bool },
    /// Frame `count` (whose registers these are) had no rule: user space
    /// continues from there with a copy of the stack.
    MissingRule {
        count: u32,
        ip: u64,
        sp: u64,
        bp: u64,
    },
}

/// Walks the stack with the learned rules, writing return addresses into
/// `data`. Per frame: one array lookup and one or two user reads.
#[inline(always)]
pub fn unwind_with_rules(tgid: u32, asid: u64, regs: &PtRegs, data: &mut [u8]) -> Unwound {
    let frames = data.as_mut_ptr().cast::<u64>();
    let (mut ip, mut sp, mut bp) = (regs.ip, regs.sp, regs.bp);
    for i in 0..MAX_STACK_FRAMES {
        let missing = Unwound::MissingRule {
            count: i as u32,
            ip,
            sp,
            bp,
        };
        let Some(rule) = RULES.get(rule_slot(tgid, asid, ip)) else {
            return missing;
        };
        if rule.pc != ip || rule.asid != asid || rule.tgid != tgid {
            return missing;
        }
        // SAFETY: i < MAX_STACK_FRAMES, and the data area is larger.
        unsafe { *frames.add(i) = ip };
        let cfa = match rule.kind {
            rule_kind::CFA_RSP => sp.wrapping_add(rule.cfa_offset as i64 as u64),
            rule_kind::CFA_RBP => bp.wrapping_add(rule.cfa_offset as i64 as u64),
            rule_kind::END | rule_kind::STOP => {
                return Unwound::Frames {
                    count: i as u32 + 1,
                    truncated: rule.kind == rule_kind::STOP,
                };
            }
            _ => return missing,
        };
        let count = i as u32 + 1;
        let cut = Unwound::Frames {
            count,
            truncated: true,
        };
        let ra = if rule.rbp_saved != 0 && rule.rbp_offset == -16 {
            // The common frame: saved rbp right below the return address;
            // one read for both.
            // SAFETY: a read of user memory; a failure ends the walk.
            let Ok(pair) = (unsafe { bpf_probe_read_user((cfa - 16) as *const [u64; 2]) }) else {
                return cut;
            };
            bp = pair[0];
            pair[1]
        } else {
            // SAFETY: as above.
            let Ok(ra) = (unsafe { bpf_probe_read_user((cfa - 8) as *const u64) }) else {
                return cut;
            };
            if rule.rbp_saved != 0 {
                let at = cfa.wrapping_add(rule.rbp_offset as i64 as u64);
                // SAFETY: as above.
                let Ok(value) = (unsafe { bpf_probe_read_user(at as *const u64) }) else {
                    return cut;
                };
                bp = value;
            }
            ra
        };
        if ra == 0 {
            return Unwound::Frames {
                count,
                truncated: false,
            };
        }
        sp = cfa;
        ip = ra;
    }
    Unwound::Frames {
        count: MAX_STACK_FRAMES as u32,
        truncated: true,
    }
}

/// Copies up to STACK_BYTES of the user stack from `sp` into `data` after
/// the first `frames` frames, page by page, so a stack shallower than the
/// window (a thread's, near its top) yields what is there. Returns the
/// bytes copied.
#[inline(always)]
pub fn copy_stack_window(sp: u64, frames: u32, data: &mut [u8]) -> u32 {
    let want = (STACK_BYTES.load() as usize).min(MAX_STACK_WINDOW);
    let base = data.as_mut_ptr();
    let start = (frames as usize & 127) * 8;
    let mut copied: usize = 0;
    for _ in 0..(MAX_STACK_WINDOW / 4096 + 1) {
        if copied >= want {
            break;
        }
        let from = sp + copied as u64;
        let to_page_end = 4096 - (from & 4095) as usize;
        let chunk = to_page_end.min(want - copied) & 8191;
        let at = start + (copied & (MAX_STACK_WINDOW - 1));
        // SAFETY: at < 127 * 8 + MAX_STACK_WINDOW and chunk ≤ 4096: inside
        // the data area, which has a page of slack.
        let failed =
            unsafe { read_user_raw(base.add(at).cast(), chunk as u32, from as *const _) } < 0;
        if failed || chunk == 0 {
            break;
        }
        copied += chunk;
    }
    copied as u32
}

/// The frame-pointer walk: frame 0 is the ip, then each frame's saved
/// (rbp, return address) pair at rbp. A null rbp or return address ends the
/// chain (`_start` clears rbp); an implausible rbp (not above the previous
/// one, unaligned, or more than 8 MiB away), which is what code without
/// frame pointers leaves, cuts it. Returns (frames, cut).
#[inline(always)]
pub fn walk_frame_pointers(regs: &PtRegs, data: &mut [u8]) -> (u32, bool) {
    let frames = data.as_mut_ptr().cast::<u64>();
    // SAFETY: the data area holds MAX_STACK_FRAMES frames.
    unsafe { *frames = regs.ip };
    let mut low = regs.sp;
    let mut bp = regs.bp;
    for i in 1..MAX_STACK_FRAMES {
        if bp == 0 {
            return (i as u32, false);
        }
        if bp <= low || bp - low > 8 << 20 || bp & 7 != 0 {
            return (i as u32, true);
        }
        // SAFETY: a read of user memory; a failure ends the walk.
        let Ok([next, ra]) = (unsafe { bpf_probe_read_user(bp as *const [u64; 2]) }) else {
            return (i as u32, true);
        };
        if ra == 0 {
            return (i as u32, false);
        }
        // SAFETY: i < MAX_STACK_FRAMES.
        unsafe { *frames.add(i) = ra };
        low = bp;
        bp = next;
    }
    (MAX_STACK_FRAMES as u32, true)
}
