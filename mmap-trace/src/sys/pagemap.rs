//! Which bytes of a process's live ranges are resident.
//!
//! From Linux 6.7 the `PAGEMAP_SCAN` ioctl on /proc/PID/pagemap walks a
//! range's page tables in the kernel and returns only the runs of pages
//! that match: one call over the whole span of a process's ranges answers
//! for all of them, however many there are. Older kernels get pagemap read
//! entry by entry (one 64-bit entry per page, bit 63 when present), and
//! where pagemap cannot be read at all, /proc/PID/smaps gives each VMA's
//! resident bytes, shared out in proportion to the overlap.
//!
//! Resident means what the kernel counts in RSS: pages present in memory,
//! not the shared zero page that reading untouched memory maps (the scan
//! leaves it out; the pagemap fallback cannot tell it apart).

use std::{fs::File, ops::Range, os::fd::AsRawFd as _, os::unix::fs::FileExt as _};

use crate::model::PAGE_SIZE;

const PRESENT: u64 = 1 << 63;
/// Entries read at once by the fallback (256 KiB of pagemap for 128 MiB of
/// address space).
const CHUNK_PAGES: u64 = 32 * 1024;

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// Runs of pages returned per call.
const SCAN_REGIONS: usize = 16 * 1024;

/// `struct pm_scan_arg` (include/uapi/linux/fs.h).
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// An open /proc/PID/pagemap.
pub struct Pagemap {
    file: File,
    pid: u32,
    /// The kernel has PAGEMAP_SCAN (until a call says otherwise).
    scan: bool,
}

impl Pagemap {
    pub fn open(pid: u32) -> Option<Self> {
        File::open(format!("/proc/{pid}/pagemap"))
            .ok()
            .map(|file| Pagemap {
                file,
                pid,
                scan: true,
            })
    }

    /// Resident bytes in each of `ranges` (sorted, not overlapping); `None`
    /// if the process is gone.
    pub fn resident(&mut self, ranges: &[Range<u64>]) -> Option<Vec<u64>> {
        if self.scan {
            match self.scan(ranges) {
                Ok(resident) => return Some(resident),
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP)
                    ) =>
                {
                    self.scan = false;
                }
                Err(_) => return None,
            }
        }
        // Entry by entry costs 8 bytes a page of address space: 128 MiB
        // for a 64 GiB reservation, every sample. VMAs that smaps says hold
        // no page at all are skipped.
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", self.pid)).ok()?;
        let empty: Vec<VmaRss> = parse_smaps(&smaps)
            .into_iter()
            .filter(|v| v.rss == 0)
            .collect();
        ranges
            .iter()
            .map(|range| {
                let mut total = 0;
                let mut from = range.start;
                for vma in empty
                    .iter()
                    .filter(|v| v.start < range.end && range.start < v.end)
                {
                    if vma.start > from {
                        total += self.resident_bytes(from, vma.start)?;
                    }
                    from = from.max(vma.end);
                }
                if from < range.end {
                    total += self.resident_bytes(from, range.end)?;
                }
                Some(total)
            })
            .collect()
    }

    /// PAGEMAP_SCAN over the span of `ranges`, then each range's share.
    fn scan(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<u64>> {
        let mut resident = vec![0; ranges.len()];
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return Ok(resident);
        };
        let mut runs = vec![PageRegion::default(); SCAN_REGIONS];
        let mut next_range = 0;
        let mut from = first.start;
        while from < last.end {
            let mut arg = PmScanArg {
                size: size_of::<PmScanArg>() as u64,
                start: from,
                end: last.end,
                vec: runs.as_mut_ptr() as u64,
                vec_len: runs.len() as u64,
                category_inverted: PAGE_IS_PFNZERO,
                category_mask: PAGE_IS_PRESENT | PAGE_IS_PFNZERO,
                return_mask: PAGE_IS_PRESENT,
                ..Default::default()
            };
            // SAFETY: the argument and the output vector are valid for the
            // call, and the vector holds `vec_len` entries.
            let found = unsafe {
                libc::ioctl(
                    self.file.as_raw_fd(),
                    PAGEMAP_SCAN,
                    &mut arg as *mut PmScanArg,
                )
            };
            if found < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for run in &runs[..found as usize] {
                // Both lists are in address order: walk them together.
                while next_range < ranges.len() && ranges[next_range].end <= run.start {
                    next_range += 1;
                }
                let mut i = next_range;
                while i < ranges.len() && ranges[i].start < run.end {
                    let overlap = run
                        .end
                        .min(ranges[i].end)
                        .saturating_sub(run.start.max(ranges[i].start));
                    resident[i] += overlap;
                    i += 1;
                }
            }
            if arg.walk_end <= from {
                break;
            }
            from = arg.walk_end;
        }
        Ok(resident)
    }

    /// Resident bytes in `[start, end)`, read entry by entry; `None` if the
    /// process is gone.
    pub fn resident_bytes(&self, start: u64, end: u64) -> Option<u64> {
        let mut page = start / PAGE_SIZE;
        let last = end.div_ceil(PAGE_SIZE);
        if page >= last {
            return Some(0);
        }
        let mut buffer = vec![0u8; (CHUNK_PAGES.min(last - page) * 8) as usize];
        let mut resident = 0;
        while page < last {
            let count = CHUNK_PAGES.min(last - page);
            let bytes = &mut buffer[..(count * 8) as usize];
            self.file.read_exact_at(bytes, page * 8).ok()?;
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

    /// Resident bytes in each of `ranges` (sorted, not overlapping); `None`
    /// if the process is gone.
    pub fn resident(&mut self, ranges: &[Range<u64>]) -> Option<Vec<u64>> {
        match self {
            Residency::Pagemap(pagemap) => pagemap.resident(ranges),
            Residency::Smaps(vmas) => Some(
                ranges
                    .iter()
                    .map(|range| smaps_share(vmas, range.start, range.end))
                    .collect(),
            ),
        }
    }
}

fn smaps_share(vmas: &[VmaRss], start: u64, end: u64) -> u64 {
    vmas.iter()
        .filter(|v| v.start < end && start < v.end && v.end > v.start)
        .map(|v| {
            let overlap = end.min(v.end) - start.max(v.start);
            (u128::from(v.rss) * u128::from(overlap) / u128::from(v.end - v.start)) as u64
        })
        .sum()
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

    /// Maps `pages` pages of our own, touches `touched` of them, and reads
    /// the first page (mapping the zero page there, which is not RSS).
    fn own_mapping(pages: usize, touched: &[usize]) -> (*mut libc::c_void, usize) {
        let len = pages * PAGE_SIZE as usize;
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
        for &page in touched {
            // SAFETY: inside the mapping.
            unsafe { *(p.cast::<u8>().add(page * PAGE_SIZE as usize)) = 1 };
        }
        (p, len)
    }

    #[test]
    fn counts_touched_pages_of_our_own_mapping() {
        let (p, len) = own_mapping(16, &[0, 3, 4, 15]);
        let start = p as u64;
        let mut pagemap = Pagemap::open(std::process::id()).unwrap();
        let each = pagemap.resident_bytes(start, start + len as u64);
        let ranges = [
            start..start + 4 * PAGE_SIZE,
            start + 4 * PAGE_SIZE..start + len as u64,
        ];
        let scanned = pagemap.resident(&ranges);
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p, len) };
        assert_eq!(each, Some(4 * PAGE_SIZE));
        assert_eq!(scanned, Some(vec![2 * PAGE_SIZE, 2 * PAGE_SIZE]));
    }

    #[test]
    fn the_fallback_skips_vmas_without_pages() {
        let (touched, len) = own_mapping(8, &[2, 5]);
        let (untouched, untouched_len) = own_mapping(8, &[]);
        // SAFETY: our own mapping; another protection keeps it its own VMA.
        unsafe { libc::mprotect(untouched, untouched_len, libc::PROT_READ) };
        let mut ranges = [touched as u64, untouched as u64].map(|s| s..s + len as u64);
        ranges.sort_by_key(|r| r.start);
        let mut pagemap = Pagemap::open(std::process::id()).unwrap();
        pagemap.scan = false;
        let resident = pagemap.resident(&ranges);
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(touched, len) };
        // SAFETY: as above.
        unsafe { libc::munmap(untouched, untouched_len) };
        let mut expected = vec![2 * PAGE_SIZE, 0];
        if ranges[0].start == untouched as u64 {
            expected.reverse();
        }
        assert_eq!(resident, Some(expected));
    }

    #[test]
    fn the_zero_page_is_not_resident() {
        let (p, len) = own_mapping(8, &[1]);
        // SAFETY: reading inside the mapping (maps the zero page).
        let read = unsafe { std::ptr::read_volatile(p.cast::<u8>().add(5 * PAGE_SIZE as usize)) };
        let start = p as u64;
        let whole = [Range {
            start,
            end: start + len as u64,
        }];
        let scanned = Pagemap::open(std::process::id()).unwrap().resident(&whole);
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p, len) };
        assert_eq!(read, 0);
        assert_eq!(scanned, Some(vec![PAGE_SIZE]), "the written page only");
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
        let mut residency = Residency::Smaps(parse_smaps(smaps));
        // Half of the first VMA holds half its 16 KiB; the second is whole.
        let resident = residency.resident(&[0x7f0000008000..0x7f0000011000, 0x1000..0x2000]);
        assert_eq!(resident, Some(vec![8 * 1024 + 4 * 1024, 0]));
    }
}
