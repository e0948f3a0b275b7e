//! Teaching the eBPF unwinder: rules user space used go into its cache.

use mmap_trace_common::{RULE_SLOTS, RuleSlot, rule_slot};

use super::Rule;

/// Where rule slots are written (the eBPF `RULES` array, or a test double).
pub trait SlotWriter {
    fn write(&mut self, index: u32, slot: RuleSlot);
}

/// A mirror of the kernel's direct-mapped rule cache, so each rule is
/// written once, and again only after a collision evicted it.
pub struct RuleCache<W> {
    writer: W,
    mirror: Vec<RuleSlot>,
    pub written: u64,
}

impl<W: SlotWriter> RuleCache<W> {
    pub fn new(writer: W) -> Self {
        RuleCache {
            writer,
            mirror: vec![RuleSlot::default(); RULE_SLOTS as usize],
            written: 0,
        }
    }

    pub fn teach(&mut self, tgid: u32, asid: u64, learned: &[(u64, Rule)]) {
        for &(pc, rule) in learned {
            let index = rule_slot(tgid, asid, pc);
            let slot = rule.to_slot(tgid, asid, pc);
            if self.mirror[index as usize] != slot {
                self.writer.write(index, slot);
                self.mirror[index as usize] = slot;
                self.written += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmap_trace_common::rule_kind;

    #[derive(Default)]
    struct Recorder(Vec<(u32, RuleSlot)>);

    impl SlotWriter for &mut Recorder {
        fn write(&mut self, index: u32, slot: RuleSlot) {
            self.0.push((index, slot));
        }
    }

    #[test]
    fn writes_each_rule_once() {
        let mut recorder = Recorder::default();
        {
            let mut cache = RuleCache::new(&mut recorder);
            let learned = [(0x1000, Rule::FRAME_POINTER), (0x2000, Rule::End)];
            cache.teach(7, 99, &learned);
            cache.teach(7, 99, &learned);
            assert_eq!(cache.written, 2);
            // Another address space is another key.
            cache.teach(7, 100, &learned[..1]);
            assert_eq!(cache.written, 3);
        }
        let (index, slot) = recorder.0[0];
        assert_eq!(index, rule_slot(7, 99, 0x1000));
        assert_eq!((slot.pc, slot.asid, slot.tgid), (0x1000, 99, 7));
        assert_eq!(slot.kind, rule_kind::CFA_RBP);
        assert_eq!(
            (slot.cfa_offset, slot.rbp_saved, slot.rbp_offset),
            (16, 1, -16)
        );
        assert_eq!(recorder.0[1].1.kind, rule_kind::END);
    }
}
