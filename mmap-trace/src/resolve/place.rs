//! Raw stacks → frames placed in objects, with the caller a frame-pointer
//! walk misses put back.
//!
//! Frame-pointer walking cannot see the immediate caller of a leaf syscall
//! wrapper such as libc's `syscall()` or `mmap()`: the wrapper builds no
//! frame, so the walk jumps from the wrapper straight to the caller's caller.
//! At the syscall the eBPF side saved the word at the stack pointer; when
//! that word points into mapped code right after a `call` instruction, it is
//! the missing return address and is put back as frame 1.

use std::{collections::HashMap, fs::File, os::unix::fs::FileExt as _};

use super::{
    attribute::{Attribution, AttributionRules, FrameObject},
    callsite,
    modules::ModuleMaps,
    symbolize::SymbolInfo,
};
use crate::model::{FrameAddress, FrameKind, ObjectId, RawStack, StackSource, StopReason};

/// One frame, placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub address: FrameAddress,
    /// The object mapped there, if any mapping we know holds it.
    pub object: Option<ObjectId>,
    /// File offset of the address in `object` (the address itself when
    /// there is no object).
    pub offset: u64,
    /// Recovered from the stack pointer rather than the frame-pointer walk.
    pub recovered: bool,
    pub symbol: Option<SymbolInfo>,
    pub kind: FrameKind,
}

impl Frame {
    /// The offset to look symbols up by (see [`FrameAddress`]).
    pub fn lookup_offset(&self) -> u64 {
        self.address.lookup_offset(self.offset)
    }
}

/// Places each frame of `raw` in its object, recovering the wrapper's
/// caller, and cuts the stack where it went astray. Returns the frames and
/// why the stack ends where they do.
pub fn place(
    raw: &RawStack,
    time_ns: u64,
    modules: &ModuleMaps,
    code: &mut CodeFiles,
) -> (Vec<Frame>, StopReason) {
    let frame = |address: FrameAddress, recovered: bool| {
        let mapping = modules.lookup(raw.pid, address.lookup_address(), time_ns);
        Frame {
            address,
            object: mapping.map(|m| m.object),
            offset: mapping.map_or(address.address(), |m| m.file_offset_of(address.address())),
            recovered,
            symbol: None,
            kind: FrameKind::Native,
        }
    };

    let mut frames: Vec<Frame> = raw
        .frames
        .iter()
        .enumerate()
        .map(|(i, &addr)| frame(FrameAddress::of_frame(i, addr), false))
        .collect();
    if raw.source == StackSource::FramePointers
        && let Some(recovered) = recover_caller(raw, time_ns, modules, code)
    {
        frames.insert(1, frame(FrameAddress::ReturnAddress(recovered), true));
    }
    let stop = if drop_astray_frames(&mut frames) {
        StopReason::NoObject
    } else {
        raw.stop
    };
    (frames, stop)
}

/// Issuer and requester of placed frames.
pub fn attribute(
    frames: &[Frame],
    stop: StopReason,
    modules: &ModuleMaps,
    rules: &AttributionRules,
) -> Attribution {
    let objects: Vec<FrameObject<'_>> = frames
        .iter()
        .map(|f| match f.object {
            Some(object) => FrameObject::Known(&modules.object(object).display),
            None => FrameObject::Unknown,
        })
        .collect();
    rules.attribute(&objects, stop.is_complete())
}

/// Issuer and requester of one stack, without symbolizing it (cheap enough
/// to do as stacks appear).
pub fn attribute_raw(
    raw: &RawStack,
    time_ns: u64,
    modules: &ModuleMaps,
    rules: &AttributionRules,
    code: &mut CodeFiles,
) -> Attribution {
    let (frames, stop) = place(raw, time_ns, modules, code);
    attribute(&frames, stop, modules, rules)
}

/// A frame-pointer walk that meets code without frame pointers reads data as
/// return addresses. Code is always mapped executable (JIT code too, as
/// anonymous executable memory), so the first "return address" outside every
/// executable mapping ends the real stack. Returns whether frames were cut.
/// (CFI walks never go astray like this, but a mapping record lost on the
/// way would leave a frame without an object; it is cut the same way.)
fn drop_astray_frames(frames: &mut Vec<Frame>) -> bool {
    match frames.iter().position(|f| f.object.is_none()) {
        Some(at) => {
            frames.truncate(at);
            true
        }
        None => false,
    }
}

/// The return address at the stack pointer, if it is one the walk missed.
fn recover_caller(
    raw: &RawStack,
    time_ns: u64,
    modules: &ModuleMaps,
    code: &mut CodeFiles,
) -> Option<u64> {
    let candidate = raw.sp_word;
    if raw.frames.is_empty() || raw.frames.get(1) == Some(&candidate) {
        return None;
    }
    let mapping = modules.lookup(raw.pid, candidate, time_ns)?;
    if !modules.object(mapping.object).is_file() {
        return None;
    }
    let offset = mapping.file_offset_of(candidate);
    let before = code.bytes_before(modules, mapping.object, offset)?;
    callsite::ends_with_call(&before).then_some(candidate)
}

/// Object files opened on demand, to read code bytes.
#[derive(Default)]
pub struct CodeFiles {
    files: HashMap<ObjectId, Option<File>>,
}

impl CodeFiles {
    fn bytes_before(
        &mut self,
        modules: &ModuleMaps,
        object: ObjectId,
        offset: u64,
    ) -> Option<Vec<u8>> {
        let file = self
            .files
            .entry(object)
            .or_insert_with(|| File::open(modules.objects().access_path(object)).ok())
            .as_ref()?;
        let len = (callsite::WINDOW as u64).min(offset) as usize;
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, offset - len as u64).ok()?;
        Some(bytes)
    }
}
