//! Full stacks through code without frame pointers. Pure: the session
//! hands it stack copies and says where code lives; it hands back frames
//! and the rules it used.
//!
//! `cfi` reads an object's call-frame information (`.eh_frame`, else
//! `.debug_frame`) and answers "how do I find the caller from this pc" as a
//! [`Rule`]. `walk` unwinds a copy of the user stack with those rules.
//! `learn` puts the rules it used into the eBPF side's rule cache, so the
//! next stack through the same code is unwound in the kernel, without a
//! copy: stacks of hot paths cost a few array lookups and user reads.
//! `copies` puts the three together for each stack copy the kernel sends.

pub mod cfi;
pub mod copies;
pub mod learn;
pub mod walk;

use std::path::Path;

use mmap_trace_common::{RuleSlot, rule_kind};

pub use copies::CopyUnwinder;
pub use learn::SlotWriter;

use crate::model::ObjectId;

/// Where the code at an address lives, as the unwinder needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeAt<'a> {
    /// In an object file: its id, where it can be read, and the address's
    /// offset in the file.
    File {
        object: ObjectId,
        path: &'a Path,
        offset: u64,
    },
    /// Executable memory with no file behind it: JIT code, `[vdso]`.
    Anonymous,
    /// A CPython `-X perf` trampoline (named in the perf map): it calls
    /// the eval loop with 8 bytes pushed and no frame pointer of its own.
    PythonTrampoline,
    /// In no mapping we know of.
    Unknown,
}

/// Where the caller's frame is, seen from one pc (x86_64: the return
/// address is at CFA - 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    Frame {
        base: CfaBase,
        /// CFA = base register + offset.
        offset: i32,
        /// The caller's rbp is saved at CFA + this, or rbp is unchanged.
        rbp_at: Option<i32>,
    },
    /// No call-frame information here: one frame-pointer step (CFA =
    /// rbp + 16, the caller's rbp at CFA - 16), taken only if the frame
    /// looks like one (rbp at or above the stack pointer, aligned, within
    /// 8 MiB).
    FramePointer,
    /// The outermost frame (`_start`, a thread's start routine).
    End,
    /// No way past this pc: the stack is cut here.
    Stop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CfaBase {
    Rsp,
    Rbp,
}

/// How far a frame-pointer step may move up the stack (the eBPF side's
/// bound too).
pub const MAX_FRAME_BYTES: u64 = 8 << 20;

impl Rule {
    /// The frame-pointer convention: push rbp; mov rbp, rsp (what CFI says
    /// for such code).
    pub const FRAME_POINTER: Rule = Rule::Frame {
        base: CfaBase::Rbp,
        offset: 16,
        rbp_at: Some(-16),
    };

    /// A `-X perf` trampoline's return address: `sub $8, %rsp; call`.
    pub const PYTHON_TRAMPOLINE: Rule = Rule::Frame {
        base: CfaBase::Rsp,
        offset: 16,
        rbp_at: None,
    };

    /// This rule as a slot of the eBPF rule cache.
    pub fn to_slot(self, tgid: u32, asid: u64, pc: u64) -> RuleSlot {
        let mut slot = RuleSlot {
            pc,
            asid,
            tgid,
            ..Default::default()
        };
        match self {
            Rule::End => slot.kind = rule_kind::END,
            Rule::Stop => slot.kind = rule_kind::STOP,
            Rule::FramePointer => {
                slot.kind = rule_kind::FRAME_POINTER;
                slot.cfa_offset = 16;
                slot.rbp_saved = 1;
                slot.rbp_offset = -16;
            }

            Rule::Frame {
                base,
                offset,
                rbp_at,
            } => {
                slot.kind = match base {
                    CfaBase::Rsp => rule_kind::CFA_RSP,
                    CfaBase::Rbp => rule_kind::CFA_RBP,
                };
                slot.cfa_offset = offset;
                if let Some(at) = rbp_at {
                    slot.rbp_saved = 1;
                    slot.rbp_offset = at;
                }
            }
        }
        slot
    }
}
