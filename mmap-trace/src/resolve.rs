//! Raw stacks → frames with objects, file offsets, symbols and attribution.
//!
//! Frame-pointer walking cannot see the immediate caller of a leaf syscall
//! wrapper such as libc's `syscall()` or `mmap()`: the wrapper builds no
//! frame, so the walk jumps from the wrapper straight to the caller's caller.
//! At syscall entry the eBPF side saved the word at the stack pointer; when
//! that word points into mapped code right after a `call` instruction, it is
//! the missing return address and is put back as frame 1.

use std::{collections::HashMap, fs::File, os::unix::fs::FileExt as _};

use crate::{
    attribute::{Attribution, FrameObject, Rules},
    callsite,
    decode::StackSource,
    modules::ModuleMaps,
    stacks::{RawStack, StackId, StackTable},
    symbolize::{SymbolInfo, Symbols},
};

/// One resolved frame.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    /// The return address (or, for frame 0, the syscall's instruction pointer).
    pub addr: u64,
    /// The object mapped there (its path as the process saw it), if any
    /// mapping we know holds it.
    pub object: Option<String>,
    /// Where the object can be read (see `objects`), and its build id.
    pub access: Option<String>,
    pub build_id: Option<String>,
    /// File offset of `addr` in `object` (or `addr` itself when unknown).
    pub offset: u64,
    /// Recovered from the stack pointer rather than the frame-pointer walk.
    pub recovered: bool,
    pub symbol: Option<SymbolInfo>,
}

/// A stack ready for the report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedStack {
    pub frames: Vec<Frame>,
    pub source: StackSource,
    /// The walk went astray (a "return address" in no executable mapping)
    /// and the frames from there on were dropped.
    pub truncated: bool,
    pub attribution: Attribution,
}

/// Resolves every stack in `table`.
pub fn resolve_all(
    table: &StackTable,
    modules: &ModuleMaps,
    rules: &Rules,
) -> HashMap<StackId, ResolvedStack> {
    let mut code = CodeFiles::default();
    let mut placed: Vec<(StackId, Vec<Frame>)> = table
        .iter()
        .map(|(id, raw, time, _)| (id, place(raw, time, modules, &mut code)))
        .collect();
    let truncated: Vec<bool> = placed
        .iter_mut()
        .zip(table.iter())
        .map(|((_, frames), (_, raw, _, _))| drop_astray_frames(frames) || raw.truncated)
        .collect();
    symbolize(&mut placed);
    placed
        .into_iter()
        .zip(truncated)
        .zip(table.iter().map(|(_, raw, _, _)| raw.source))
        .map(|(((id, frames), truncated), source)| {
            let attribution = attribute_frames(&frames, truncated, rules);
            (
                id,
                ResolvedStack {
                    frames,
                    source,
                    truncated,
                    attribution,
                },
            )
        })
        .collect()
}

/// Issuer and requester of one stack, without symbolizing it (cheap enough
/// to do as stacks appear).
pub fn attribute_raw(
    raw: &RawStack,
    time_ns: u64,
    modules: &ModuleMaps,
    rules: &Rules,
    code: &mut CodeFiles,
) -> Attribution {
    let mut frames = place(raw, time_ns, modules, code);
    let truncated = drop_astray_frames(&mut frames) || raw.truncated;
    attribute_frames(&frames, truncated, rules)
}

fn attribute_frames(frames: &[Frame], truncated: bool, rules: &Rules) -> Attribution {
    let objects: Vec<FrameObject<'_>> = frames
        .iter()
        .map(|f| match &f.object {
            Some(object) => FrameObject::Known(object),
            None => FrameObject::Unknown,
        })
        .collect();
    rules.attribute(&objects, !truncated)
}

/// Places each frame in its object, recovering the wrapper's caller.
fn place(raw: &RawStack, time_ns: u64, modules: &ModuleMaps, code: &mut CodeFiles) -> Vec<Frame> {
    let frame = |addr: u64, recovered: bool| {
        let mapping = modules.lookup(raw.pid, addr, time_ns);
        Frame {
            addr,
            object: mapping.map(|m| m.name.clone()),
            access: mapping
                .filter(|m| m.is_file())
                .map(|m| modules.access_path(m).display().to_string()),
            build_id: mapping.and_then(|m| modules.build_id(m)).map(str::to_owned),
            offset: mapping.map_or(addr, |m| m.file_offset_of(addr)),
            recovered,
            symbol: None,
        }
    };
    let mut frames: Vec<Frame> = raw.frames.iter().map(|&addr| frame(addr, false)).collect();
    if raw.source == StackSource::FramePointers
        && let Some(recovered) = recover_caller(raw, time_ns, modules, code)
    {
        frames.insert(1, frame(recovered, true));
    }
    frames
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
    if !mapping.is_file() {
        return None;
    }
    let offset = mapping.file_offset_of(candidate);
    let before = code.bytes_before(&modules.access_path(mapping).display().to_string(), offset)?;
    callsite::ends_with_call(&before).then_some(candidate)
}

/// Looks symbols up per object, in one batch each.
fn symbolize(placed: &mut [(StackId, Vec<Frame>)]) {
    let mut symbols = Symbols::default();
    let mut wanted: HashMap<String, Vec<u64>> = HashMap::new();
    for frame in placed.iter().flat_map(|(_, frames)| frames) {
        if let Some(access) = &frame.access {
            wanted
                .entry(access.clone())
                .or_default()
                .push(lookup_offset(frame.offset));
        }
    }
    let mut found: HashMap<(String, u64), SymbolInfo> = HashMap::new();
    for (object, offsets) in wanted {
        for (offset, info) in offsets.iter().zip(symbols.lookup(&object, &offsets)) {
            if let Some(info) = info {
                found.insert((object.clone(), *offset), info);
            }
        }
    }
    for frame in placed.iter_mut().flat_map(|(_, frames)| frames) {
        if let Some(access) = &frame.access {
            frame.symbol = found
                .get(&(access.clone(), lookup_offset(frame.offset)))
                .cloned();
        }
    }
}

/// A return address points after the call; the call itself is one byte
/// earlier, which keeps the right function and line for calls at the very
/// end of a function.
fn lookup_offset(offset: u64) -> u64 {
    offset.saturating_sub(1)
}

/// Object files opened on demand, to read code bytes.
#[derive(Default)]
pub struct CodeFiles {
    files: HashMap<String, Option<File>>,
}

impl CodeFiles {
    fn bytes_before(&mut self, path: &str, offset: u64) -> Option<Vec<u8>> {
        let file = self
            .files
            .entry(path.to_owned())
            .or_insert_with(|| File::open(path).ok())
            .as_ref()?;
        let len = (callsite::WINDOW as u64).min(offset) as usize;
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, offset - len as u64).ok()?;
        Some(bytes)
    }
}
