//! Raw user stacks, interned once, with what their calls did.

use std::collections::HashMap;

use super::{Call, CallCounts, CallKind, PyFrameRaw, StackSource, StopReason};

/// Index of an interned raw stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u32);

impl StackId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A stack as captured, in one address space.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawStack {
    pub pid: u32,
    /// The address space (exec image) it ran in.
    pub asid: u64,
    /// The ip, then return addresses, innermost first.
    pub frames: Vec<u64>,
    /// The word at the stack pointer (frame-pointer stacks; see
    /// `resolve::place`), 0 otherwise.
    pub sp_word: u64,
    pub source: StackSource,
    /// Why the walk ended after the last frame.
    pub stop: StopReason,
    /// Python frames, innermost first (CPython processes).
    pub python: Vec<PyFrameRaw>,
}

/// What the calls made through one stack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    pub calls: CallCounts,
    pub failed_calls: u64,
    /// Bytes this stack's calls mapped (mmap, mremap growth).
    pub mapped_bytes: u64,
    /// Of those, bytes no longer mapped (by any later call).
    pub unmapped_bytes: u64,
    /// Bytes still mapped when their process exited or exec'd.
    pub live_at_exit_bytes: u64,
    pub live_at_exit_regions: u64,
    /// Of those, reserved (`PROT_NONE`) ones.
    pub reserved_at_exit_bytes: u64,
    /// Accessible bytes this stack held at exit (see `Region::holder`).
    pub accessible_at_exit_bytes: u64,
    /// mprotect: reserved bytes it made accessible, and accessible bytes
    /// it made reserved again.
    pub committed_bytes: u64,
    pub decommitted_bytes: u64,
    /// madvise: live bytes it advised away, and the resident bytes they
    /// held at the sample before (an estimate: pages touched since the
    /// sample are not counted).
    pub advised_bytes: u64,
    pub resident_returned_bytes: u64,
    /// Successful calls by (call, page-rounded length), for the most common
    /// lengths; calls beyond `MAX_SIZES` distinct ones are not listed.
    pub sizes: Vec<SizeCount>,
}

/// How many successful calls of one kind had one length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeCount {
    pub call: CallKind,
    pub bytes: u64,
    pub calls: u64,
}

/// Distinct lengths remembered per stack.
pub const MAX_SIZES: usize = 32;

impl StackStats {
    pub fn count_call(&mut self, call: &Call) {
        self.calls[call.kind()] += 1;
    }

    pub fn count_size(&mut self, call: CallKind, bytes: u64) {
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

/// One interned stack, as [`StackTable::iter`] yields it.
#[derive(Clone, Copy, Debug)]
pub struct StackEntry<'a> {
    pub id: StackId,
    pub raw: &'a RawStack,
    /// When it was first seen (CLOCK_MONOTONIC ns).
    pub first_seen_ns: u64,
    pub stats: &'a StackStats,
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
        let (stack, time) = &self.stacks[id.index()];
        (stack, *time)
    }

    pub fn contains(&self, id: StackId) -> bool {
        id.index() < self.stacks.len()
    }

    pub fn stats_mut(&mut self, id: StackId) -> &mut StackStats {
        &mut self.stats[id.index()]
    }

    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// Every stack, in the order they were first seen.
    pub fn iter(&self) -> impl Iterator<Item = StackEntry<'_>> {
        self.stacks
            .iter()
            .zip(&self.stats)
            .enumerate()
            .map(|(i, ((raw, first_seen_ns), stats))| StackEntry {
                id: StackId(i as u32),
                raw,
                first_seen_ns: *first_seen_ns,
                stats,
            })
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
            stop: StopReason::Complete,
            python: Vec::new(),
        };
        let a = table.intern(stack.clone(), 10);
        let b = table.intern(stack.clone(), 20);
        let c = table.intern(RawStack { pid: 2, ..stack }, 30);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(table.len(), 2);
        table.stats_mut(a).calls[CallKind::Mmap] += 2;
        let first: Vec<_> = table
            .iter()
            .map(|e| (e.id, e.first_seen_ns, e.stats.calls.total()))
            .collect();
        assert_eq!(first, vec![(a, 10, 2), (c, 30, 0)]);
    }

    #[test]
    fn sizes_are_counted_per_call_and_length() {
        let mut stats = StackStats::default();
        stats.count_size(CallKind::Mmap, 4096);
        stats.count_size(CallKind::Mmap, 4096);
        stats.count_size(CallKind::Munmap, 4096);
        assert_eq!(
            stats.sizes,
            vec![
                SizeCount {
                    call: CallKind::Mmap,
                    bytes: 4096,
                    calls: 2
                },
                SizeCount {
                    call: CallKind::Munmap,
                    bytes: 4096,
                    calls: 1
                }
            ]
        );
    }
}
