//! Which bytes of a live range are resident: /proc/PID/pagemap has one
//! 64-bit entry per page, bit 63 set when the page is in memory.

use std::{fs::File, os::unix::fs::FileExt as _};

use crate::ledger::PAGE_SIZE;

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
}
