//! Unwinding a copy of the user stack with per-pc [`Rule`]s.

use super::{CfaBase, MAX_FRAME_BYTES, Rule};
use crate::model::StopReason;

/// Registers of the traced call, and the stack copied from `sp` upwards.
#[derive(Clone, Copy, Debug)]
pub struct Start<'a> {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub window: &'a [u8],
}

/// The result of a walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walked {
    /// The ip, then return addresses, innermost first.
    pub frames: Vec<u64>,
    /// The rule used at each frame, to teach the kernel (pc, rule).
    pub learned: Vec<(u64, Rule)>,
    /// Why it ended: `Complete` when it reached the outermost frame.
    pub stop: StopReason,
}

/// Walks from `start`; `rule_for(pc, is_first_frame)` gives each frame's
/// rule, or why there is none.
pub fn walk(
    start: Start<'_>,
    max_frames: usize,
    mut rule_for: impl FnMut(u64, bool) -> Result<Rule, StopReason>,
) -> Walked {
    let mut walked = Walked {
        frames: Vec::new(),
        learned: Vec::new(),
        stop: StopReason::Complete,
    };
    let (mut ip, mut sp, mut bp) = (start.ip, start.sp, start.bp);
    let read = |address: u64| -> Option<u64> {
        let at = usize::try_from(address.checked_sub(start.sp)?).ok()?;
        let bytes = start.window.get(at..at.checked_add(8)?)?;
        Some(u64::from_ne_bytes(bytes.try_into().ok()?))
    };
    loop {
        if walked.frames.len() == max_frames {
            walked.stop = StopReason::FrameLimit;
            return walked;
        }
        let first = walked.frames.is_empty();
        walked.frames.push(ip);
        let rule = match rule_for(ip, first) {
            Ok(rule) => rule,
            Err(stop) => {
                walked.stop = stop;
                return walked;
            }
        };
        walked.learned.push((ip, rule));
        let (base, offset, rbp_at) = match rule {
            Rule::Frame {
                base,
                offset,
                rbp_at,
            } => (base, offset, rbp_at),
            Rule::FramePointer => {
                if bp < sp || bp - sp > MAX_FRAME_BYTES || bp & 7 != 0 {
                    walked.stop = StopReason::FramePointerInvalid;
                    return walked;
                }
                (CfaBase::Rbp, 16, Some(-16))
            }

            Rule::End => return walked,
            Rule::Stop => {
                walked.stop = StopReason::NoUnwindInfo;
                return walked;
            }
        };
        let cfa = match base {
            CfaBase::Rsp => sp,
            CfaBase::Rbp => bp,
        }
        .wrapping_add(offset as i64 as u64);
        let Some(return_address) = read(cfa.wrapping_sub(8)) else {
            walked.stop = StopReason::CopyExhausted;
            return walked;
        };
        if let Some(at) = rbp_at {
            match read(cfa.wrapping_add(at as i64 as u64)) {
                Some(value) => bp = value,
                None => {
                    walked.stop = StopReason::CopyExhausted;
                    return walked;
                }
            }
        }
        if return_address == 0 {
            return walked;
        }
        sp = cfa;
        ip = return_address;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: u64 = 0x7ffd_0000_1000;

    /// A stack: leaf (rsp+8 CFA, nothing pushed), mid (pushed rbp: CFA =
    /// rsp+16, rbp saved at CFA-16), main (CFA = rbp+16), then _start.
    fn stack() -> Vec<u8> {
        let words: [u64; 6] = [
            0x1111, // sp+0:  leaf's return address into mid
            0xAAAA, // sp+8:  mid's saved rbp (main's frame)
            0x2222, // sp+16: mid's return address into main
            0,      // sp+24: main's locals
            0xBBBB, // sp+32: main's saved rbp (at main's rbp)
            0x3333, // sp+40: main's return address into _start
        ];
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    fn rules(pc: u64, _: bool) -> Result<Rule, StopReason> {
        Ok(match pc {
            0x9000 => Rule::Frame {
                base: CfaBase::Rsp,
                offset: 8,
                rbp_at: None,
            },
            0x1111 => Rule::Frame {
                base: CfaBase::Rsp,
                offset: 16,
                rbp_at: Some(-16),
            },
            0x2222 => Rule::FRAME_POINTER,
            0x3333 => Rule::End,
            _ => return Err(StopReason::NoUnwindInfo),
        })
    }

    #[test]
    fn a_restored_rbp_pointing_elsewhere_is_reported_not_followed() {
        // mid saved rbp = 0xAAAA, so main's rbp-based CFA lies outside the
        // copied stack: the walk stops there and says so.
        let window = stack();
        let start = Start {
            ip: 0x9000,
            sp: SP,
            bp: 0,
            window: &window,
        };
        let walked = walk(start, 64, rules);
        assert_eq!(walked.frames, vec![0x9000, 0x1111, 0x2222]);
        assert_eq!(walked.stop, StopReason::CopyExhausted);
    }

    #[test]
    fn rbp_based_frames_use_the_restored_rbp() {
        let mut window = stack();
        // Make mid's saved rbp point at main's frame (sp + 32).
        window[8..16].copy_from_slice(&(SP + 32).to_ne_bytes());
        let start = Start {
            ip: 0x9000,
            sp: SP,
            bp: 0xdead,
            window: &window,
        };
        let walked = walk(start, 64, rules);
        assert_eq!(walked.frames, vec![0x9000, 0x1111, 0x2222, 0x3333]);
        assert_eq!(walked.stop, StopReason::Complete, "ends at the End rule");
        assert_eq!(walked.learned.last(), Some(&(0x3333, Rule::End)));
    }

    #[test]
    fn a_short_window_cuts_the_walk() {
        let window = stack();
        let start = Start {
            ip: 0x9000,
            sp: SP,
            bp: 0,
            window: &window[..16],
        };
        let walked = walk(start, 64, rules);
        assert_eq!(walked.frames, vec![0x9000, 0x1111]);
        assert_eq!(walked.stop, StopReason::CopyExhausted);
    }

    #[test]
    fn frame_pointer_steps_are_taken_only_where_the_frame_looks_sane() {
        // From main's frame on: its locals, then (at rbp = SP + 32) its
        // saved rbp and its return address into _start.
        let mut window = stack()[16..].to_vec();
        window[16..24].copy_from_slice(&0u64.to_ne_bytes());

        let fallback = |pc: u64, _: bool| match pc {
            0x3333 => Ok(Rule::End),
            _ => Ok(Rule::FramePointer),
        };
        let start = Start {
            ip: 0x2222,
            sp: SP + 16,
            bp: SP + 32,
            window: &window,
        };
        let walked = walk(start, 64, fallback);
        assert_eq!(walked.frames, vec![0x2222, 0x3333]);
        assert_eq!(walked.stop, StopReason::Complete);
        // An rbp below the stack pointer is no frame.
        let below = Start { bp: SP, ..start };
        assert_eq!(
            walk(below, 64, fallback).stop,
            StopReason::FramePointerInvalid
        );
        let unaligned = Start {
            bp: SP + 33,
            ..start
        };
        assert_eq!(
            walk(unaligned, 64, fallback).stop,
            StopReason::FramePointerInvalid
        );
    }

    #[test]
    fn depth_limit_and_missing_rules_cut_the_walk() {
        let window = stack();
        let start = Start {
            ip: 0x9000,
            sp: SP,
            bp: 0,
            window: &window,
        };
        assert_eq!(walk(start, 1, rules).stop, StopReason::FrameLimit);
        let start = Start {
            ip: 0x4444,
            ..start
        };
        let walked = walk(start, 64, rules);
        assert_eq!(walked.frames, vec![0x4444]);
        assert_eq!(walked.stop, StopReason::NoUnwindInfo);
    }
}
