//! The live mappings of one address space, as an interval map.
//!
//! Every byte of a live range carries the [`Origin`] that mapped it. The
//! operations follow the kernel's semantics: a munmap releases any overlap
//! (splitting ranges), a MAP_FIXED mmap replaces what it overlaps, and an
//! mremap moves bytes with their original attribution while growth belongs
//! to the mremap's own stack. Lengths are rounded up to whole pages.

use std::collections::BTreeMap;

use crate::model::{StackId, page_round_up};

/// `MREMAP_DONTUNMAP`: the old range stays mapped after a move.
pub const MREMAP_DONTUNMAP: u32 = 4;

/// Who mapped a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// A traced call with this stack.
    Traced(StackId),
    /// Already mapped when tracing began (seeded from /proc/PID/maps).
    PreExisting,
}

/// A live range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub origin: Origin,
}

impl Region {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// What one operation did to the ledger.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Bytes newly attributed to the calling origin.
    pub mapped: u64,
    /// Bytes that stopped being live, by the origin that had mapped them.
    pub released: Vec<(Origin, u64)>,
    /// Bytes released that were never seen mapped.
    pub unknown_released: u64,
}

impl Change {
    fn release(&mut self, pieces: &[Region]) {
        for piece in pieces {
            match self.released.iter_mut().find(|(o, _)| *o == piece.origin) {
                Some((_, bytes)) => *bytes += piece.len(),
                None => self.released.push((piece.origin, piece.len())),
            }
        }
    }
}

/// Live ranges of one address space.
#[derive(Clone, Debug, Default)]
pub struct AddressSpace {
    /// start → region, non-overlapping.
    regions: BTreeMap<u64, Region>,
}

impl AddressSpace {
    /// A successful mmap of `[start, start+len)`: whatever it overlapped
    /// (MAP_FIXED) is released first.
    pub fn map(&mut self, start: u64, len: u64, origin: Origin) -> Change {
        let end = start.saturating_add(page_round_up(len));
        let mut change = Change::default();
        change.release(&self.cut(start, end));
        self.insert(start, end, origin);
        change.mapped = end - start;
        change
    }

    /// Records `[start, end)` where nothing is recorded yet (seeding from
    /// /proc/PID/maps never overrides what traced calls said). Returns the
    /// bytes added.
    pub fn fill(&mut self, start: u64, end: u64, origin: Origin) -> u64 {
        let covered = self.overlapping(start, end);
        let mut cursor = start;
        let mut added = 0;
        for piece in covered.iter().chain(std::iter::once(&Region {
            start: end,
            end,
            origin,
        })) {
            if piece.start > cursor {
                self.insert(cursor, piece.start, origin);
                added += piece.start - cursor;
            }
            cursor = cursor.max(piece.end);
        }
        added
    }

    /// A successful munmap of `[start, start+len)`.
    pub fn unmap(&mut self, start: u64, len: u64) -> Change {
        let end = start.saturating_add(page_round_up(len));
        let pieces = self.cut(start, end);
        let mut change = Change::default();
        change.release(&pieces);
        change.unknown_released = (end - start) - pieces.iter().map(Region::len).sum::<u64>();
        change
    }

    /// A successful mremap that returned `result`. Bytes that move keep their
    /// origin; growth and bytes never seen before belong to `origin`.
    pub fn remap(
        &mut self,
        old_start: u64,
        old_len: u64,
        new_len: u64,
        flags: u32,
        result: u64,
        origin: Origin,
    ) -> Change {
        let old_len = page_round_up(old_len);
        let new_len = page_round_up(new_len);
        let mut change = Change::default();
        if old_len == 0 {
            // Duplicates a shared mapping; the old one is untouched.
            change.release(&self.cut(result, result + new_len));
            self.insert(result, result + new_len, origin);
            change.mapped = new_len;
            return change;
        }
        if new_len < old_len {
            // The tail goes first, whether or not the mapping moves.
            change.release(&self.cut(old_start + new_len, old_start + old_len));
        }
        let kept = old_len.min(new_len);
        if result != old_start {
            let moving = if flags & MREMAP_DONTUNMAP != 0 {
                self.overlapping(old_start, old_start + kept)
            } else {
                self.cut(old_start, old_start + kept)
            };
            change.release(&self.cut(result, result + new_len));
            // Bytes we never saw mapped now live at the destination: they
            // are attributed to this call.
            let mut cursor = old_start;
            for piece in moving {
                if piece.start > cursor {
                    self.insert_moved(cursor, piece.start, old_start, result, origin);
                    change.mapped += piece.start - cursor;
                }
                self.insert_moved(piece.start, piece.end, old_start, result, piece.origin);
                cursor = piece.end;
            }
            if cursor < old_start + kept {
                self.insert_moved(cursor, old_start + kept, old_start, result, origin);
                change.mapped += old_start + kept - cursor;
            }
        }
        if new_len > old_len {
            let grown_start = result + old_len;
            change.release(&self.cut(grown_start, result + new_len));
            self.insert(grown_start, result + new_len, origin);
            change.mapped += new_len - old_len;
        }
        change
    }

    /// The live region that starts at `start`, if any.
    pub fn region_at(&self, start: u64) -> Option<&Region> {
        self.regions.get(&start)
    }

    /// Live regions in address order.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.values()
    }

    pub fn live_bytes(&self) -> u64 {
        self.regions.values().map(Region::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    fn insert(&mut self, start: u64, end: u64, origin: Origin) {
        if start < end {
            self.regions.insert(start, Region { start, end, origin });
        }
    }

    fn insert_moved(&mut self, start: u64, end: u64, from: u64, to: u64, origin: Origin) {
        let shifted = |a: u64| a - from + to;
        self.insert(shifted(start), shifted(end), origin);
    }

    /// Copies of the parts of live regions inside `[start, end)`.
    fn overlapping(&self, start: u64, end: u64) -> Vec<Region> {
        let first = self
            .regions
            .range(..start)
            .next_back()
            .filter(|(_, r)| r.end > start)
            .map(|(&k, _)| k)
            .unwrap_or(start);
        self.regions
            .range(first..end)
            .map(|(_, r)| Region {
                start: r.start.max(start),
                end: r.end.min(end),
                origin: r.origin,
            })
            .filter(|r| r.start < r.end)
            .collect()
    }

    /// Removes `[start, end)` from the map, splitting regions that straddle
    /// its edges, and returns the removed pieces in address order.
    fn cut(&mut self, start: u64, end: u64) -> Vec<Region> {
        if start >= end {
            return Vec::new();
        }
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self.regions.range(start..end).map(|(&k, _)| k).collect();
        keys.into_iter()
            .filter_map(|k| self.regions.remove(&k))
            .collect()
    }

    /// Makes `at` a region boundary if a region straddles it.
    fn split_at(&mut self, at: u64) {
        let Some((_, region)) = self.regions.range_mut(..at).next_back() else {
            return;
        };
        if region.end > at {
            let tail = Region {
                start: at,
                end: region.end,
                origin: region.origin,
            };
            region.end = at;
            self.regions.insert(at, tail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PAGE_SIZE;

    const P: u64 = PAGE_SIZE;
    const A: Origin = Origin::Traced(StackId(1));
    const B: Origin = Origin::Traced(StackId(2));

    fn ranges(space: &AddressSpace) -> Vec<(u64, u64, Origin)> {
        space
            .regions()
            .map(|r| (r.start, r.end, r.origin))
            .collect()
    }

    #[test]
    fn map_rounds_to_pages() {
        let mut space = AddressSpace::default();
        let change = space.map(0x10000, 100, A);
        assert_eq!(change.mapped, P);
        assert_eq!(space.live_bytes(), P);
    }

    #[test]
    fn fill_only_covers_gaps() {
        let mut space = AddressSpace::default();
        space.map(0x10000 + P, P, A);
        let added = space.fill(0x10000, 0x10000 + 3 * P, Origin::PreExisting);
        assert_eq!(added, 2 * P);
        assert_eq!(
            ranges(&space),
            vec![
                (0x10000, 0x10000 + P, Origin::PreExisting),
                (0x10000 + P, 0x10000 + 2 * P, A),
                (0x10000 + 2 * P, 0x10000 + 3 * P, Origin::PreExisting)
            ]
        );
    }

    #[test]
    fn partial_munmap_in_the_middle_splits() {
        let mut space = AddressSpace::default();
        space.map(0x10000, 10 * P, A);
        let change = space.unmap(0x10000 + 3 * P, 2 * P);
        assert_eq!(change.released, vec![(A, 2 * P)]);
        assert_eq!(change.unknown_released, 0);
        assert_eq!(space.live_bytes(), 8 * P);
        assert_eq!(
            ranges(&space),
            vec![
                (0x10000, 0x10000 + 3 * P, A),
                (0x10000 + 5 * P, 0x10000 + 10 * P, A)
            ]
        );
    }

    #[test]
    fn munmap_across_regions_and_holes() {
        let mut space = AddressSpace::default();
        space.map(0x10000, 2 * P, A);
        space.map(0x10000 + 3 * P, 2 * P, B);
        let change = space.unmap(0x10000 + P, 3 * P);
        assert_eq!(change.released, vec![(A, P), (B, P)]);
        assert_eq!(change.unknown_released, P);
        assert_eq!(space.live_bytes(), 2 * P);
    }

    #[test]
    fn map_fixed_replaces_overlap() {
        let mut space = AddressSpace::default();
        space.map(0x10000, 4 * P, A);
        let change = space.map(0x10000 + P, 2 * P, B);
        assert_eq!(change.released, vec![(A, 2 * P)]);
        assert_eq!(change.mapped, 2 * P);
        assert_eq!(space.live_bytes(), 4 * P);
        assert_eq!(
            ranges(&space),
            vec![
                (0x10000, 0x10000 + P, A),
                (0x10000 + P, 0x10000 + 3 * P, B),
                (0x10000 + 3 * P, 0x10000 + 4 * P, A)
            ]
        );
    }

    #[test]
    fn mremap_grow_in_place() {
        let mut space = AddressSpace::default();
        space.map(0x10000, 2 * P, A);
        let change = space.remap(0x10000, 2 * P, 5 * P, 0, 0x10000, B);
        assert_eq!(change.mapped, 3 * P);
        assert!(change.released.is_empty());
        assert_eq!(
            ranges(&space),
            vec![
                (0x10000, 0x10000 + 2 * P, A),
                (0x10000 + 2 * P, 0x10000 + 5 * P, B)
            ]
        );
    }

    #[test]
    fn mremap_shrink_releases_tail() {
        let mut space = AddressSpace::default();
        space.map(0x10000, 4 * P, A);
        let change = space.remap(0x10000, 4 * P, P, 0, 0x10000, B);
        assert_eq!(change.released, vec![(A, 3 * P)]);
        assert_eq!(change.mapped, 0);
        assert_eq!(space.live_bytes(), P);
    }

    #[test]
    fn mremap_move_keeps_attribution_and_grows() {
        let mut space = AddressSpace::default();
        space.map(0x10000, 2 * P, A);
        let change = space.remap(0x10000, 2 * P, 3 * P, 1, 0x80000, B);
        assert_eq!(change.mapped, P);
        assert!(change.released.is_empty());
        assert_eq!(
            ranges(&space),
            vec![
                (0x80000, 0x80000 + 2 * P, A),
                (0x80000 + 2 * P, 0x80000 + 3 * P, B)
            ]
        );
    }

    #[test]
    fn mremap_move_with_shrink() {
        let mut space = AddressSpace::default();
        space.map(0x10000, 4 * P, A);
        let change = space.remap(0x10000, 4 * P, P, 1, 0x80000, B);
        assert_eq!(change.released, vec![(A, 3 * P)]);
        assert_eq!(ranges(&space), vec![(0x80000, 0x80000 + P, A)]);
    }

    #[test]
    fn mremap_dontunmap_keeps_old_range() {
        let mut space = AddressSpace::default();
        space.map(0x10000, 2 * P, A);
        space.remap(0x10000, 2 * P, 2 * P, 1 | MREMAP_DONTUNMAP, 0x80000, B);
        assert_eq!(
            ranges(&space),
            vec![(0x10000, 0x10000 + 2 * P, A), (0x80000, 0x80000 + 2 * P, A)]
        );
    }

    #[test]
    fn mremap_of_unseen_range_attributes_to_caller() {
        let mut space = AddressSpace::default();
        let change = space.remap(0x10000, 2 * P, 2 * P, 1, 0x80000, B);
        assert_eq!(change.mapped, 2 * P);
        assert_eq!(ranges(&space), vec![(0x80000, 0x80000 + 2 * P, B)]);
    }

    #[test]
    fn mremap_fixed_over_live_range_releases_it() {
        let mut space = AddressSpace::default();
        space.map(0x10000, P, A);
        space.map(0x80000, 2 * P, B);
        let change = space.remap(0x10000, P, P, 3, 0x80000, A);
        assert_eq!(change.released, vec![(B, P)]);
        assert_eq!(
            ranges(&space),
            vec![(0x80000, 0x80000 + P, A), (0x80000 + P, 0x80000 + 2 * P, B)]
        );
    }
}
