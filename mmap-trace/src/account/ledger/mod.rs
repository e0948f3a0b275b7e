//! The live mappings of one address space, as an interval map.
//!
//! Every byte of a live range carries the [`Origin`] that mapped it, its
//! protection, its kind of memory, the stack that made it accessible (if
//! that was a later mprotect), and an estimate of its resident bytes. The
//! operations follow the kernel's semantics: a munmap releases any overlap
//! (splitting ranges), a MAP_FIXED mmap replaces what it overlaps, an
//! mremap moves bytes with their original attribution while growth belongs
//! to the mremap's own stack, an mprotect changes protection in place
//! (`protect`), and madvise gives pages back without unmapping (`advise`).
//! Lengths are rounded up to whole pages; arithmetic saturates at the top
//! of the address space rather than wrapping.

mod protect;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use protect::{Advised, Protected};

use crate::model::{MemoryKind, StackId, page_round_up, prot};

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

/// What a new range is: who mapped it, with which protection, of which
/// kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub origin: Origin,
    pub prot: u32,
    pub kind: MemoryKind,
}

/// A live range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub origin: Origin,
    pub prot: u32,
    pub kind: MemoryKind,
    /// The stack that made the range accessible after it was mapped
    /// reserved (`PROT_NONE`), when an mprotect did: its pages are that
    /// stack's doing.
    pub committed_by: Option<StackId>,
    /// Resident bytes at the last sample; between samples an estimate
    /// (a split shares them out in proportion to length).
    pub resident: u64,
}

impl Region {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Reserved address space: mapped `PROT_NONE`, nothing can be touched.
    pub fn is_reserved(&self) -> bool {
        self.prot == prot::NONE
    }

    /// Whose doing its accessible and resident bytes are: the stack that
    /// committed it, else the one that mapped it.
    pub fn holder(&self) -> Origin {
        self.committed_by.map_or(self.origin, Origin::Traced)
    }

    fn attrs(&self) -> Attrs {
        Attrs {
            origin: self.origin,
            prot: self.prot,
            kind: self.kind,
        }
    }

    /// The part `[start, end)` of this region, with its share of resident
    /// bytes.
    fn piece(&self, start: u64, end: u64) -> Region {
        let len = self.len().max(1);
        Region {
            start,
            end,
            resident: (u128::from(self.resident) * u128::from(end - start) / u128::from(len))
                as u64,
            ..*self
        }
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

/// `[start, start + len)` page-rounded, clamped to the address space.
fn span(start: u64, len: u64) -> (u64, u64) {
    (start, start.saturating_add(page_round_up(len)))
}

impl AddressSpace {
    /// A successful mmap of `[start, start+len)`: whatever it overlapped
    /// (MAP_FIXED) is released first.
    pub fn map(&mut self, start: u64, len: u64, attrs: Attrs) -> Change {
        let (start, end) = span(start, len);
        let mut change = Change::default();
        change.release(&self.cut(start, end));
        self.insert(start, end, attrs);
        change.mapped = end - start;
        change
    }

    /// Records `[start, end)` where nothing is recorded yet (seeding from
    /// /proc/PID/maps never overrides what traced calls said). Returns the
    /// bytes added.
    pub fn fill(&mut self, start: u64, end: u64, attrs: Attrs) -> u64 {
        let covered = self.overlapping(start, end);
        let mut cursor = start;
        let mut added = 0;
        let ends = covered
            .iter()
            .map(|piece| (piece.start, piece.end))
            .chain(std::iter::once((end, end)));
        for (piece_start, piece_end) in ends {
            if piece_start > cursor {
                self.insert(cursor, piece_start, attrs);
                added += piece_start - cursor;
            }
            cursor = cursor.max(piece_end);
        }
        added
    }

    /// A successful munmap of `[start, start+len)`.
    pub fn unmap(&mut self, start: u64, len: u64) -> Change {
        let (start, end) = span(start, len);
        let pieces = self.cut(start, end);
        let mut change = Change::default();
        change.release(&pieces);
        change.unknown_released = (end - start) - pieces.iter().map(Region::len).sum::<u64>();
        change
    }

    /// A successful mremap that returned `result`. Bytes that move keep their
    /// origin and attributes; growth and bytes never seen before belong to
    /// `origin`, with the attributes of the mapping they extend.
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
        let old_end = old_start.saturating_add(old_len);
        let new_end = result.saturating_add(new_len);
        // What the grown or never-seen bytes are: like the mapping's last
        // byte, else (never seen) ordinary private memory.
        let extended = self
            .overlapping(old_start, old_end)
            .last()
            .map(Region::attrs)
            .unwrap_or(Attrs {
                origin,
                prot: prot::READ | prot::WRITE,
                kind: MemoryKind::PrivateAnon,
            });
        let new_attrs = Attrs { origin, ..extended };
        let mut change = Change::default();
        if old_len == 0 {
            // Duplicates a shared mapping; the old one is untouched.
            change.release(&self.cut(result, new_end));
            self.insert(result, new_end, new_attrs);
            change.mapped = new_end - result;
            return change;
        }
        if new_len < old_len {
            // The tail goes first, whether or not the mapping moves.
            change.release(&self.cut(old_start.saturating_add(new_len), old_end));
        }
        let kept_end = old_start.saturating_add(old_len.min(new_len));
        if result != old_start {
            let moving = if flags & MREMAP_DONTUNMAP != 0 {
                self.overlapping(old_start, kept_end)
            } else {
                self.cut(old_start, kept_end)
            };
            change.release(&self.cut(result, new_end));
            let shift = |a: u64| (a - old_start).saturating_add(result);
            // Bytes we never saw mapped now live at the destination: they
            // are attributed to this call.
            let mut cursor = old_start;
            for piece in moving {
                if piece.start > cursor {
                    self.insert(shift(cursor), shift(piece.start), new_attrs);
                    change.mapped += piece.start - cursor;
                }
                self.put(Region {
                    start: shift(piece.start),
                    end: shift(piece.end),
                    ..piece
                });
                cursor = piece.end;
            }
            if cursor < kept_end {
                self.insert(shift(cursor), shift(kept_end), new_attrs);
                change.mapped += kept_end - cursor;
            }
        }
        if new_len > old_len {
            let grown_start = result.saturating_add(old_len);
            change.release(&self.cut(grown_start, new_end));
            self.insert(grown_start, new_end, new_attrs);
            change.mapped += new_end - grown_start;
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

    /// Live regions in address order, to update their resident bytes.
    pub fn regions_mut(&mut self) -> impl Iterator<Item = &mut Region> {
        self.regions.values_mut()
    }

    pub fn live_bytes(&self) -> u64 {
        self.regions.values().map(Region::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    fn insert(&mut self, start: u64, end: u64, attrs: Attrs) {
        self.put(Region {
            start,
            end,
            origin: attrs.origin,
            prot: attrs.prot,
            kind: attrs.kind,
            committed_by: None,
            resident: 0,
        });
    }

    fn put(&mut self, region: Region) {
        if region.start < region.end {
            self.regions.insert(region.start, region);
        }
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
            .map(|(_, r)| r.piece(r.start.max(start), r.end.min(end)))
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
            let head = region.piece(region.start, at);
            let tail = Region {
                start: at,
                resident: region.resident - head.resident,
                ..*region
            };
            *region = head;
            self.regions.insert(at, tail);
        }
    }
}
