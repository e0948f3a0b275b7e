//! The eBPF unwinder's rule cache, written through the bpf syscall.

use aya::maps::{Array, MapData};
use mmap_trace_common::RuleSlot;

use crate::unwind::SlotWriter;

/// The `RULES` array of the loaded programs.
pub struct RulesMap(pub(super) Array<MapData, RuleSlot>);

impl SlotWriter for RulesMap {
    fn write(&mut self, index: u32, slot: RuleSlot) {
        // A failed write leaves the slot as it was: the kernel then misses
        // and sends a stack copy, which is slower but still right.
        if let Err(error) = self.0.set(index, slot, 0) {
            log::debug!("cannot write unwind rule {index}: {error}");
        }
    }
}
