//! Changing a range without unmapping it: protection (reserved and
//! accessible bytes) and advice that gives resident pages back.

use super::{AddressSpace, Origin, span};
use crate::model::{StackId, prot};

/// What an mprotect did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Protected {
    /// Reserved bytes it made accessible: they are now this call's.
    pub committed: u64,
    /// Accessible bytes it made reserved again, by who held them.
    pub decommitted: Vec<(Origin, u64)>,
}

/// What a madvise that gives pages back did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advised {
    /// Live bytes in the advised range.
    pub bytes: u64,
    /// Resident bytes the range held at the last sample: what the call gave
    /// back, as far as the last sample knew.
    pub resident_returned: u64,
}

impl AddressSpace {
    /// A successful mprotect of `[start, start+len)` to `new_prot`, made by
    /// `stack`. Bytes that go from reserved to accessible are committed by
    /// that stack (their pages are its doing); bytes that go back to
    /// reserved are decommitted.
    pub fn protect(&mut self, start: u64, len: u64, new_prot: u32, stack: StackId) -> Protected {
        let (start, end) = span(start, len);
        let mut result = Protected::default();
        if start >= end {
            return result;
        }
        self.split_at(start);
        self.split_at(end);
        for region in self.regions.range_mut(start..end).map(|(_, r)| r) {
            let was_reserved = region.is_reserved();
            let now_reserved = new_prot == prot::NONE;
            match (was_reserved, now_reserved) {
                (true, false) => {
                    region.committed_by = Some(stack);
                    result.committed += region.len();
                }
                (false, true) => {
                    let holder = region.holder();
                    match result.decommitted.iter_mut().find(|(o, _)| *o == holder) {
                        Some((_, bytes)) => *bytes += region.len(),
                        None => result.decommitted.push((holder, region.len())),
                    }
                    region.committed_by = None;
                    // A reserved range holds no pages.
                    region.resident = 0;
                }
                _ => {}
            }
            region.prot = new_prot;
        }
        result
    }

    /// Resident bytes in `[start, start+len)` at the last sample.
    pub fn resident_in(&self, start: u64, len: u64) -> u64 {
        let (start, end) = span(start, len);
        self.overlapping(start, end)
            .iter()
            .map(|r| r.resident)
            .sum()
    }

    /// A successful madvise of `[start, start+len)` with advice that gives
    /// the pages back: the range stays mapped and holds no resident pages.
    pub fn advise(&mut self, start: u64, len: u64) -> Advised {
        let (start, end) = span(start, len);
        let mut result = Advised::default();
        if start >= end {
            return result;
        }
        self.split_at(start);
        self.split_at(end);
        for region in self.regions.range_mut(start..end).map(|(_, r)| r) {
            result.bytes += region.len();
            result.resident_returned += region.resident;
            region.resident = 0;
        }
        result
    }
}
