//! What each stack holds, and what each kind of memory holds: live bytes
//! (mapped, to the stack that mapped them), reserved (`PROT_NONE`) and
//! accessible bytes (to the stack that made them accessible), in running
//! processes and at the exit of those that ended.

use std::collections::BTreeMap;

use super::Collector;
use crate::{
    account::ledger::{Origin, Region},
    model::{MemoryKind, StackId},
};

/// What one stack holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    /// Bytes it mapped that are still mapped (or were at exit).
    pub live: u64,
    pub regions: u64,
    /// Of `live`, bytes reserved (`PROT_NONE`).
    pub reserved: u64,
    /// Accessible bytes whose pages are its doing: mapped accessible by it,
    /// or made accessible by it (mprotect) after another stack reserved
    /// them.
    pub accessible: u64,
}

/// Live, reserved and accessible bytes per kind of memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindTotals {
    by_kind: [Holding; MemoryKind::ALL.len()],
}

impl KindTotals {
    pub fn get(&self, kind: MemoryKind) -> Holding {
        self.by_kind[kind as usize]
    }

    /// Adds a traced region.
    pub(super) fn add_region(&mut self, region: &Region) {
        let totals = &mut self.by_kind[region.kind as usize];
        totals.live += region.len();
        totals.regions += 1;
        if region.is_reserved() {
            totals.reserved += region.len();
        } else {
            totals.accessible += region.len();
        }
    }

    fn add(&mut self, other: &KindTotals) {
        for (mine, theirs) in self.by_kind.iter_mut().zip(&other.by_kind) {
            mine.live += theirs.live;
            mine.regions += theirs.regions;
            mine.reserved += theirs.reserved;
            mine.accessible += theirs.accessible;
        }
    }
}

impl Collector {
    /// What each stack holds: in running processes, and at the exit of the
    /// processes that ended.
    pub fn holdings(&self) -> BTreeMap<StackId, Holding> {
        let mut holdings: BTreeMap<StackId, Holding> = BTreeMap::new();
        for entry in self.stacks.iter() {
            let stats = entry.stats;
            if stats.live_at_exit_bytes > 0 || stats.accessible_at_exit_bytes > 0 {
                holdings.insert(
                    entry.id,
                    Holding {
                        live: stats.live_at_exit_bytes,
                        regions: stats.live_at_exit_regions,
                        reserved: stats.reserved_at_exit_bytes,
                        accessible: stats.accessible_at_exit_bytes,
                    },
                );
            }
        }
        for process in self.processes.values() {
            for region in process.space.regions() {
                if let Origin::Traced(id) = region.origin {
                    let holding = holdings.entry(id).or_default();
                    holding.live += region.len();
                    holding.regions += 1;
                    if region.is_reserved() {
                        holding.reserved += region.len();
                    }
                }
                if let (Origin::Traced(holder), false) = (region.holder(), region.is_reserved()) {
                    holdings.entry(holder).or_default().accessible += region.len();
                }
            }
        }
        holdings
    }

    /// Live bytes and regions per stack: still mapped, or live at exit.
    pub fn live_by_stack(&self) -> BTreeMap<StackId, (u64, u64)> {
        self.holdings()
            .into_iter()
            .filter(|(_, h)| h.live > 0)
            .map(|(id, h)| (id, (h.live, h.regions)))
            .collect()
    }

    /// Traced bytes by kind of memory: in running processes, and at the
    /// exit of those that ended.
    pub fn kind_totals(&self) -> KindTotals {
        let mut totals = KindTotals::default();
        for process in self.processes.values() {
            for region in process.space.regions() {
                if let Origin::Traced(_) = region.origin {
                    totals.add_region(region);
                }
            }
        }
        totals.add(&self.ended_by_kind);
        totals
    }
}
