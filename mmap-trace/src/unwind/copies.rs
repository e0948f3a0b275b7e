//! Unwinding the stack copies the kernel sends when it lacks a rule, and
//! teaching it the rules used.

use mmap_trace_common::MAX_STACK_FRAMES;

use super::{
    CodeAt, Rule,
    cfi::{CfiCache, NoRule},
    learn::{RuleCache, SlotWriter},
    walk::{Start, walk},
};
use crate::model::{FrameAddress, StackSource, StopReason, SyscallEvent, UnwindCounts, UnwindMode};

pub struct CopyUnwinder<W> {
    mode: UnwindMode,
    cfi: CfiCache,
    rules: RuleCache<W>,
    pub counts: UnwindCounts,
}

impl<W: SlotWriter> CopyUnwinder<W> {
    pub fn new(mode: UnwindMode, writer: W) -> Self {
        CopyUnwinder {
            mode,
            cfi: CfiCache::default(),
            rules: RuleCache::new(writer),
            counts: UnwindCounts::default(),
        }
    }

    /// Turns a stack copy into frames (in place), and teaches the kernel.
    /// `code_at(address)` says where the code at an address lives in the
    /// event's process at the time of the call.
    pub fn unwind<'p>(
        &mut self,
        event: &mut SyscallEvent,
        mut code_at: impl FnMut(u64) -> CodeAt<'p>,
    ) {
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
        // The kernel unwound the frames before `resume`, so the first pc
        // here is a return address unless the kernel unwound nothing.
        let kernel_frames = event.stack.len();
        let mut walked = walk(start, MAX_STACK_FRAMES - kernel_frames, |pc, first| {
            let address = FrameAddress::of_frame(usize::from(!first) + kernel_frames, pc);
            // A return address follows its call; the call's own address
            // has the caller's rule (the next function may start right at
            // a return address after a call that does not return).
            match code_at(address.lookup_address()) {
                CodeAt::Unknown => Err(StopReason::NoObject),
                CodeAt::Anonymous => fallback(mode),
                CodeAt::PythonTrampoline => Ok(Rule::PYTHON_TRAMPOLINE),
                CodeAt::File {
                    object,
                    path,
                    offset,
                } => match cfi.rule(object, path, offset) {
                    Ok(rule) => Ok(rule),
                    // Per address, not per object: large binaries built
                    // with frame pointers often carry CFI for a sliver of
                    // their code only.
                    Err(NoRule::NoCfi | NoRule::NotCovered | NoRule::OutsideSegments) => {
                        fallback(mode)
                    }
                    Err(NoRule::Unsupported) => Err(StopReason::NoUnwindInfo),
                },
            }
        });
        // Where we cannot go on, the kernel should stop too, rather than
        // send a copy of this stack every time. (A frame-pointer step that
        // failed its check is learned as such: the kernel checks it too.)
        if let (StopReason::NoObject | StopReason::NoUnwindInfo, Some(&pc)) =
            (walked.stop, walked.frames.last())
        {
            walked.learned.push((pc, Rule::Stop));
        }

        self.rules.teach(event.pid, event.asid, &walked.learned);
        self.counts.rules_taught = self.rules.written;
        event.stack.extend_from_slice(&walked.frames);
        event.stop = walked.stop;
        event.source = StackSource::Dwarf;
        event.window = Vec::new();
    }
}

/// What to do where no CFI covers a pc: a (checked) frame-pointer step in
/// `auto`, stop in `dwarf`.
fn fallback(mode: UnwindMode) -> Result<Rule, StopReason> {
    match mode {
        UnwindMode::Auto => Ok(Rule::FramePointer),
        _ => Err(StopReason::NoUnwindInfo),
    }
}
