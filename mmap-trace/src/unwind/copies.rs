//! Unwinding the stack copies the kernel sends when it lacks a rule, and
//! teaching it the rules used.

use super::{
    Mode, Rule,
    cfi::{CfiCache, NoRule},
    learn::{RuleCache, SlotWriter},
    walk::{Cut, Start, walk},
};
use crate::{
    decode::{StackSource, SyscallEvent},
    modules::ModuleMaps,
};
use mmap_trace_common::MAX_STACK_FRAMES;

/// How many stacks each side unwound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnwindCounts {
    /// Unwound by the eBPF program with learned rules.
    pub in_kernel: u64,
    /// Unwound here, from a copy of the stack.
    pub from_copies: u64,
    /// Rules written into the kernel's cache.
    pub rules_taught: u64,
}

pub struct CopyUnwinder<W> {
    mode: Mode,
    cfi: CfiCache,
    rules: RuleCache<W>,
    pub counts: UnwindCounts,
}

impl<W: SlotWriter> CopyUnwinder<W> {
    pub fn new(mode: Mode, writer: W) -> Self {
        CopyUnwinder {
            mode,
            cfi: CfiCache::default(),
            rules: RuleCache::new(writer),
            counts: UnwindCounts::default(),
        }
    }

    /// Turns a stack copy into frames (in place), and teaches the kernel.
    pub fn unwind(&mut self, event: &mut SyscallEvent, modules: &ModuleMaps) {
        match event.source {
            StackSource::Window => {}
            StackSource::Dwarf => {
                self.counts.in_kernel += 1;
                return;
            }
            StackSource::FramePointers => return,
        }
        self.counts.from_copies += 1;
        let start = Start {
            ip: event.resume.ip,
            sp: event.resume.sp,
            bp: event.resume.bp,
            window: &event.window,
        };
        let (mode, cfi) = (self.mode, &mut self.cfi);
        // The kernel unwound the frames before `resume`: the first one we
        // see is a return address unless the kernel unwound nothing.
        let kernel_frames = event.stack.len();
        let mut walked = walk(start, MAX_STACK_FRAMES - kernel_frames, |pc, first| {
            let is_return_address = !first || kernel_frames > 0;
            let mapping = modules
                .lookup(event.pid, pc, event.time_ns)
                .ok_or(Cut::NoObject)?;
            if !mapping.is_file() {
                return fallback(mode);
            }
            // A return address follows its call; the call's own address
            // has the caller's rule (the next function may start right at
            // a return address after a call that does not return).
            let offset = mapping.file_offset_of(pc) - u64::from(is_return_address);
            match cfi.rule(&modules.access_path(mapping).display().to_string(), offset) {
                Ok(rule) => Ok(rule),
                Err(NoRule::NoCfi) => fallback(mode),
                Err(_) => Err(Cut::NoUnwindInfo),
            }
        });
        // Where we cannot go on, the kernel should stop too, rather than
        // send a copy of this stack every time.
        if let (Some(Cut::NoObject | Cut::NoUnwindInfo), Some(&pc)) =
            (walked.cut, walked.frames.last())
        {
            walked.learned.push((pc, Rule::Stop));
        }
        self.rules.teach(event.pid, event.asid, &walked.learned);
        self.counts.rules_taught = self.rules.written;
        event.stack.extend_from_slice(&walked.frames);
        event.truncated = walked.cut.is_some();
        event.source = StackSource::Dwarf;
        event.window = Vec::new();
    }
}

/// What to do in code without CFI: frame pointers in `auto`, stop in `dwarf`.
fn fallback(mode: Mode) -> Result<Rule, Cut> {
    match mode {
        Mode::Auto => Ok(Rule::FRAME_POINTER),
        _ => Err(Cut::NoUnwindInfo),
    }
}
