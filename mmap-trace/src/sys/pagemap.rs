//! Which bytes of a live range are resident: /proc/PID/pagemap has one
//! 64-bit entry per page, bit 63 set when the page is in memory. Where
//! pagemap cannot be read (a kernel built without it), /proc/PID/smaps gives
//! each VMA's resident bytes, shared out in proportion to the overlap.

use std::{fs::File, os::unix::fs::FileExt as _};

use crate::model::PAGE_SIZE;

const PRESENT: u64 = 1 << 63;
/// Entries read at once (256 KiB of pagemap for 128 MiB of address space).
const CHUNK_PAGES: u64 = 32 * 1024;

/// An open /proc/PID/pagemap.
pub struct Pagemap(File);

impl Pagemap {
    pub fn open(pid: u32) -> Option<Self> {
        File::open(format!("/proc/{pid}/pagemap")).ok().map(Pagemap)
    }

    /// Resident bytes in `[start, end)`; `None` if the process is gone.
    pub fn resident_bytes(&self, start: u64, end: u64) -> Option<u64> {
        let mut page = start / PAGE_SIZE;
        let last = end.div_ceil(PAGE_SIZE);
        let mut buffer = vec![0u8; (CHUNK_PAGES.min(last - page) * 8) as usize];
        let mut resident = 0;
        while page < last {
            let count = CHUNK_PAGES.min(last - page);
            let bytes = &mut buffer[..(count * 8) as usize];
            self.0.read_exact_at(bytes, page * 8).ok()?;
            resident += bytes
                .chunks_exact(8)
                .filter(|e| u64::from_ne_bytes((*e).try_into().expect("8 bytes")) & PRESENT != 0)
                .count() as u64;
            page += count;
        }
        Some(resident * PAGE_SIZE)
    }
}

/// A VMA of /proc/PID/smaps and its resident bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaRss {
    start: u64,
    end: u64,
    rss: u64,
}

/// Resident memory of one process, however the kernel lets us see it.
pub enum Residency {
    Pagemap(Pagemap),
    Smaps(Vec<VmaRss>),
}

impl Residency {
    pub fn open(pid: u32) -> Option<Self> {
        if let Some(pagemap) = Pagemap::open(pid) {
            return Some(Residency::Pagemap(pagemap));
        }
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
        Some(Residency::Smaps(parse_smaps(&smaps)))
    }

    /// Resident bytes in `[start, end)`; `None` if the process is gone.
    pub fn resident_bytes(&self, start: u64, end: u64) -> Option<u64> {
        match self {
            Residency::Pagemap(pagemap) => pagemap.resident_bytes(start, end),
            Residency::Smaps(vmas) => Some(
                vmas.iter()
                    .filter(|v| v.start < end && start < v.end)
                    .map(|v| {
                        let overlap = end.min(v.end) - start.max(v.start);
                        (v.rss as u128 * overlap as u128 / (v.end - v.start) as u128) as u64
                    })
                    .sum(),
            ),
        }
    }
}

fn parse_smaps(text: &str) -> Vec<VmaRss> {
    let mut vmas: Vec<VmaRss> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Rss:") {
            let kib: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if let Some(last) = vmas.last_mut() {
                last.rss = kib * 1024;
            }
        } else if let Some((range, _)) = line.split_once(' ')
            && let Some((start, end)) = range.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            vmas.push(VmaRss { start, end, rss: 0 });
        }
    }
    vmas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_touched_pages_of_our_own_mapping() {
        let len = 16 * PAGE_SIZE as usize;
        // SAFETY: a fresh anonymous mapping we own until munmap.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        for page in [0usize, 3, 4, 15] {
            // SAFETY: inside the mapping.
            unsafe { *(p.cast::<u8>().add(page * PAGE_SIZE as usize)) = 1 };
        }
        let start = p as u64;
        let resident = Pagemap::open(std::process::id())
            .unwrap()
            .resident_bytes(start, start + len as u64);
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p, len) };
        assert_eq!(resident, Some(4 * PAGE_SIZE));
    }

    #[test]
    fn smaps_shares_a_vma_rss_in_proportion() {
        let smaps = "\
7f0000000000-7f0000010000 rw-p 00000000 00:00 0
Size:                 64 kB
Rss:                  16 kB
Pss:                  16 kB
7f0000010000-7f0000011000 r--p 00000000 00:00 0
Rss:                   4 kB
";
        let residency = Residency::Smaps(parse_smaps(smaps));
        // Half of the first VMA holds half its 16 KiB; the second is whole.
        let resident = residency.resident_bytes(0x7f0000008000, 0x7f0000011000);
        assert_eq!(resident, Some(8 * 1024 + 4 * 1024));
        assert_eq!(residency.resident_bytes(0x1000, 0x2000), Some(0));
    }
}
