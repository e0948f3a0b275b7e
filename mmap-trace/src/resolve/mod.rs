//! Frames placed in objects, symbolized, and attributed: which object made
//! each call (issuer) and which asked for it (requester). Pure, but for
//! reading the objects' files.

pub mod attribute;
pub mod callsite;
pub mod jit;
pub mod modules;
pub mod objects;
pub mod place;
pub mod python;
pub mod symbolize;

use std::collections::{HashMap, HashSet};

pub use attribute::{Attribution, AttributionRules};
pub use modules::{Mapping, ModuleMaps, NewMapping};
pub use objects::{ANONYMOUS_CODE, ObjectInfo};
pub use place::{CodeFiles, Frame};
pub use symbolize::{InlinedInfo, SymbolInfo};

pub use jit::JitMaps;
pub use python::PythonInfo;

use crate::model::{FrameKind, ObjectId, PyFrameRaw, StackId, StackSource, StackTable, StopReason};

/// What a live session learned of its processes' runtimes, beyond their
/// objects: Python code objects and JIT perf maps. A replay has none (its
/// trace holds stacks already named).
#[derive(Default)]
pub struct Runtimes {
    pub python: PythonInfo,
    pub jit: JitMaps,
}

/// A stack ready for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedStack {
    pub frames: Vec<Frame>,
    pub source: StackSource,
    /// Why the stack ends after its last frame.
    pub stop: StopReason,
    pub attribution: Attribution,
    /// The process ran more Python frames than the kernel records: the
    /// outermost are missing.
    pub python_cut: bool,
}

/// Every stack resolved, and the objects their frames refer to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Indexed by [`ObjectId`].
    pub objects: Vec<ObjectInfo>,
    pub stacks: HashMap<StackId, ResolvedStack>,
}

impl Resolved {
    pub fn object(&self, id: ObjectId) -> &ObjectInfo {
        &self.objects[id.index()]
    }
}

/// Resolves every stack in `table`: native frames placed and symbolized,
/// JIT frames named from perf maps, Python frames put in place of the
/// eval-loop frames that ran them. Attribution is by native frames only.
pub fn resolve_all(
    table: &StackTable,
    modules: &ModuleMaps,
    rules: &AttributionRules,
    runtimes: &Runtimes,
) -> Resolved {
    let mut code = CodeFiles::default();
    let mut placed: Vec<(StackId, Vec<Frame>, StopReason, StackSource)> = table
        .iter()
        .map(|entry| {
            let (frames, stop) = place::place(entry.raw, entry.first_seen_ns, modules, &mut code);
            (entry.id, frames, stop, entry.raw.source)
        })
        .collect();
    symbolize(&mut placed, modules);
    let raws: HashMap<StackId, _> = table.iter().map(|entry| (entry.id, entry.raw)).collect();
    let stacks = placed
        .into_iter()
        .map(|(id, mut frames, stop, source)| {
            let attribution = place::attribute(&frames, stop, modules, rules);
            let raw = raws[&id];
            name_jit(&mut frames, raw.pid, modules, &runtimes.jit);
            let frames = merge_python(frames, raw, &runtimes.python);
            let stack = ResolvedStack {
                frames,
                source,
                stop,
                attribution,
                python_cut: raw.python.last().is_some_and(PyFrameRaw::is_cut),
            };
            (id, stack)
        })
        .collect();
    Resolved {
        objects: modules.objects().infos(),
        stacks,
    }
}

/// Names frames in anonymous code from their process's perf map.
fn name_jit(frames: &mut [Frame], pid: u32, modules: &ModuleMaps, jit: &JitMaps) {
    for frame in frames.iter_mut() {
        let anonymous = frame.object.is_some_and(|o| !modules.object(o).is_file());
        if !anonymous || frame.symbol.is_some() {
            continue;
        }
        if let Some(symbol) = jit.lookup(pid, frame.address.lookup_address()) {
            frame.kind = FrameKind::Jit;
            frame.symbol = Some(SymbolInfo {
                name: symbol.name.clone(),
                offset: frame.address.lookup_address() - symbol.start,
                ..Default::default()
            });
        }
    }
}

/// Puts a stack's Python frames in place of its eval-loop frames. CPython's
/// `-X perf` trampolines go: the Python frames they stand for are there.
fn merge_python(
    frames: Vec<Frame>,
    raw: &crate::model::RawStack,
    python: &PythonInfo,
) -> Vec<Frame> {
    if raw.python.is_empty() {
        return frames;
    }
    let frames: Vec<Frame> = frames
        .into_iter()
        .filter(|f| {
            !(f.kind == FrameKind::Jit
                && f.symbol
                    .as_ref()
                    .is_some_and(|s| s.name.starts_with("py::")))
        })
        .collect();
    let is_eval = |frame: &Frame| {
        frame
            .object
            .and_then(|object| python.interpreters.get(&object))
            .is_some_and(|interpreter| interpreter.is_eval_loop(frame.lookup_offset()))
    };
    python::merge(frames, &raw.python, (raw.pid, raw.asid), python, is_eval)
}

/// Looks symbols up per object, in one batch each.
fn symbolize(placed: &mut [(StackId, Vec<Frame>, StopReason, StackSource)], modules: &ModuleMaps) {
    let mut symbols = symbolize::Symbols::default();
    let mut wanted: HashMap<ObjectId, HashSet<u64>> = HashMap::new();
    for frame in placed.iter().flat_map(|(_, frames, _, _)| frames) {
        if let Some(object) = frame.object.filter(|&o| modules.object(o).is_file()) {
            wanted
                .entry(object)
                .or_default()
                .insert(frame.lookup_offset());
        }
    }
    let mut found: HashMap<(ObjectId, u64), SymbolInfo> = HashMap::new();
    for (object, offsets) in wanted {
        let offsets: Vec<u64> = offsets.into_iter().collect();
        let path = modules.objects().access_path(object);
        for (offset, info) in offsets.iter().zip(symbols.lookup(object, path, &offsets)) {
            if let Some(info) = info {
                found.insert((object, *offset), info);
            }
        }
    }
    for frame in placed.iter_mut().flat_map(|(_, frames, _, _)| frames) {
        if let Some(object) = frame.object {
            frame.symbol = found.get(&(object, frame.lookup_offset())).cloned();
        }
    }
}
