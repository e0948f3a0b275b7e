//! Frames placed in objects, symbolized, and attributed: which object made
//! each call (issuer) and which asked for it (requester). Pure, but for
//! reading the objects' files.

pub mod attribute;
pub mod callsite;
pub mod modules;
pub mod objects;
pub mod place;
pub mod symbolize;

use std::collections::{HashMap, HashSet};

pub use attribute::{Attribution, AttributionRules};
pub use modules::{Mapping, ModuleMaps, NewMapping};
pub use objects::{ANONYMOUS_CODE, ObjectInfo};
pub use place::{CodeFiles, Frame};
pub use symbolize::{InlinedInfo, SymbolInfo};

use crate::model::{ObjectId, StackId, StackSource, StackTable, StopReason};

/// A stack ready for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedStack {
    pub frames: Vec<Frame>,
    pub source: StackSource,
    /// Why the stack ends after its last frame.
    pub stop: StopReason,
    pub attribution: Attribution,
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

/// Resolves every stack in `table`.
pub fn resolve_all(table: &StackTable, modules: &ModuleMaps, rules: &AttributionRules) -> Resolved {
    let mut code = CodeFiles::default();
    let mut placed: Vec<(StackId, Vec<Frame>, StopReason, StackSource)> = table
        .iter()
        .map(|entry| {
            let (frames, stop) = place::place(entry.raw, entry.first_seen_ns, modules, &mut code);
            (entry.id, frames, stop, entry.raw.source)
        })
        .collect();
    symbolize(&mut placed, modules);
    let stacks = placed
        .into_iter()
        .map(|(id, frames, stop, source)| {
            let attribution = place::attribute(&frames, stop, modules, rules);
            let stack = ResolvedStack {
                frames,
                source,
                stop,
                attribution,
            };
            (id, stack)
        })
        .collect();
    Resolved {
        objects: modules.objects().infos(),
        stacks,
    }
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
