//! Raw user stacks, interned once, with what their calls did.

use std::collections::HashMap;

use crate::decode::StackSource;

/// Index of an interned raw stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u32);

/// A stack as captured, in one address space.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawStack {
    pub pid: u32,
    /// The address space (exec image) it ran in.
    pub asid: u64,
    /// The ip, then return addresses, innermost first.
    pub frames: Vec<u64>,
    /// The word at the stack pointer (frame-pointer stacks; see `resolve`).
    pub sp_word: u64,
    pub source: StackSource,
    /// The unwinder stopped before the outermost frame.
    pub truncated: bool,
}

/// What the calls made through one stack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    pub mmap_calls: u64,
    pub munmap_calls: u64,
    pub mremap_calls: u64,
    pub brk_calls: u64,
    /// shmat and shmdt.
    pub shm_calls: u64,
    pub failed_calls: u64,
    /// Bytes this stack's calls mapped (mmap, mremap growth).
    pub mapped_bytes: u64,
    /// Of those, bytes no longer mapped (by any later call).
    pub unmapped_bytes: u64,
    /// Bytes still mapped when their process exited or exec'd.
    pub live_at_exit_bytes: u64,
    pub live_at_exit_regions: u64,
    /// Successful calls by (call name, page-rounded length), for the most
    /// common lengths; calls beyond `MAX_SIZES` distinct ones are not listed.
    pub sizes: Vec<SizeCount>,
}

/// How many successful calls of one kind had one length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeCount {
    pub call: &'static str,
    pub bytes: u64,
    pub calls: u64,
}

/// Distinct lengths remembered per stack.
pub const MAX_SIZES: usize = 32;

impl StackStats {
    pub fn calls(&self) -> u64 {
        self.mmap_calls + self.munmap_calls + self.mremap_calls + self.brk_calls + self.shm_calls
    }

    pub fn count_call(&mut self, call: &crate::decode::Call) {
        use crate::decode::Call;
        match call {
            Call::Mmap { .. } => self.mmap_calls += 1,
            Call::Munmap { .. } => self.munmap_calls += 1,
            Call::Mremap { .. } => self.mremap_calls += 1,
            Call::Brk { .. } => self.brk_calls += 1,
            Call::Shmat { .. } | Call::Shmdt { .. } => self.shm_calls += 1,
        }
    }

    pub fn count_size(&mut self, call: &'static str, bytes: u64) {
        if let Some(size) = self
            .sizes
            .iter_mut()
            .find(|s| s.call == call && s.bytes == bytes)
        {
            size.calls += 1;
        } else if self.sizes.len() < MAX_SIZES {
            self.sizes.push(SizeCount {
                call,
                bytes,
                calls: 1,
            });
        }
    }
}

/// Interned raw stacks and their statistics.
#[derive(Debug, Default)]
pub struct StackTable {
    ids: HashMap<RawStack, StackId>,
    stacks: Vec<(RawStack, u64)>,
    stats: Vec<StackStats>,
}

impl StackTable {
    /// The id of `stack`, interning it (with the time it was first seen).
    pub fn intern(&mut self, stack: RawStack, time_ns: u64) -> StackId {
        if let Some(&id) = self.ids.get(&stack) {
            return id;
        }
        let id = StackId(self.stacks.len() as u32);
        self.ids.insert(stack.clone(), id);
        self.stacks.push((stack, time_ns));
        self.stats.push(StackStats::default());
        id
    }

    /// The stack and the time it was first seen.
    pub fn get(&self, id: StackId) -> (&RawStack, u64) {
        let (stack, time) = &self.stacks[id.0 as usize];
        (stack, *time)
    }

    pub fn stats_mut(&mut self, id: StackId) -> &mut StackStats {
        &mut self.stats[id.0 as usize]
    }

    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// Every stack with the time it was first seen and its statistics.
    pub fn iter(&self) -> impl Iterator<Item = (StackId, &RawStack, u64, &StackStats)> {
        self.stacks
            .iter()
            .zip(&self.stats)
            .enumerate()
            .map(|(i, ((stack, time), stats))| (StackId(i as u32), stack, *time, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_by_value() {
        let mut table = StackTable::default();
        let stack = RawStack {
            pid: 1,
            asid: 0,
            frames: vec![1, 2, 3],
            sp_word: 0,
            source: StackSource::FramePointers,
            truncated: false,
        };
        let a = table.intern(stack.clone(), 10);
        let b = table.intern(stack.clone(), 20);
        let c = table.intern(RawStack { pid: 2, ..stack }, 30);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(table.len(), 2);
        table.stats_mut(a).mmap_calls += 2;
        let first: Vec<_> = table
            .iter()
            .map(|(id, _, t, s)| (id, t, s.calls()))
            .collect();
        assert_eq!(first, vec![(a, 10, 2), (c, 30, 0)]);
    }
}
