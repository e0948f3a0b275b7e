//! What a sample reads from /proc, for the books.

use std::ops::Range;

use crate::{
    account::MemoryProbe,
    model::ProcessRss,
    sys::{pagemap::Residency, status},
};

/// Reads /proc/PID/status and /proc/PID/pagemap.
pub struct ProcProbe;

impl MemoryProbe for ProcProbe {
    fn rss(&mut self, pid: u32) -> Option<ProcessRss> {
        status::read(pid)
    }

    fn resident(&mut self, pid: u32, ranges: &[Range<u64>]) -> Option<Vec<u64>> {
        Residency::open(pid)?.resident(ranges)
    }
}
