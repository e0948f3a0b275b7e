//! The kernel's own record of executable mappings, forks, execs and exits:
//! the per-CPU perf rings it writes them into (the records themselves are
//! parsed in `record`).
//!
//! One "dummy" software perf event per CPU, system-wide, asks the kernel to
//! write `MMAP2` (with the file path), `FORK`, `COMM` (exec) and `EXIT`
//! records into a ring buffer at the moment they happen. That is how stacks
//! of a process that exits in milliseconds can still be symbolized: its
//! mappings were recorded while it lived. This is the mechanism `perf record`
//! uses; it needs no tracefs and no kprobes.

use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use super::record::{PerfRecord, parse_record};

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_DUMMY: u64 = 9;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_TIME: u64 = 1 << 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

// perf_event_attr flag bits.
const ATTR_MMAP: u64 = 1 << 8;
const ATTR_COMM: u64 = 1 << 9;
const ATTR_TASK: u64 = 1 << 13;
const ATTR_WATERMARK: u64 = 1 << 14;
const ATTR_SAMPLE_ID_ALL: u64 = 1 << 18;
const ATTR_MMAP2: u64 = 1 << 23;
const ATTR_COMM_EXEC: u64 = 1 << 24;
const ATTR_USE_CLOCKID: u64 = 1 << 25;

/// Data pages per CPU (a power of two): 512 KiB.
const DATA_PAGES: usize = 128;

/// `struct perf_event_attr` (PERF_ATTR_SIZE_VER8, 136 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_watermark: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
    aux_sample_size: u32,
    reserved_3: u32,
    sig_data: u64,
    config3: u64,
}

/// One per-CPU ring of mapping records.
pub struct PerfRing {
    /// The event: kept open while the ring is mapped.
    _fd: OwnedFd,
    base: NonNull<u8>,
    mmap_len: usize,
    data_offset: usize,
    data_size: usize,
    scratch: Vec<u8>,
}

// SAFETY: the mapping is owned by this value and only touched through &mut.
unsafe impl Send for PerfRing {}

impl PerfRing {
    /// Opens the system-wide mapping-record event on `cpu`.
    pub fn open(cpu: u32) -> io::Result<Self> {
        let page = page_size();
        let data_size = DATA_PAGES * page;
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_DUMMY,
            sample_period: 1,
            sample_type: PERF_SAMPLE_TID | PERF_SAMPLE_TIME,
            flags: ATTR_MMAP
                | ATTR_MMAP2
                | ATTR_COMM
                | ATTR_COMM_EXEC
                | ATTR_TASK
                | ATTR_WATERMARK
                | ATTR_SAMPLE_ID_ALL
                | ATTR_USE_CLOCKID,
            wakeup_watermark: (data_size / 4) as u32,
            clockid: libc::CLOCK_MONOTONIC,
            ..Default::default()
        };
        // SAFETY: a valid attr; pid -1 with a cpu is a system-wide event.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                -1 as libc::pid_t,
                cpu as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mmap_len = page + data_size;
        // SAFETY: mapping a perf ring: one metadata page plus the data pages.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mmap_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).expect("mmap returned a mapping");
        Ok(PerfRing {
            _fd: fd,
            base,
            mmap_len,
            data_offset: page,
            data_size,
            scratch: Vec::new(),
        })
    }

    fn meta(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: data_head (1024) and data_tail (1032) lie in the metadata
        // page, are 8-byte aligned, and the kernel updates them atomically.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    /// Hands every record written since the last call to `sink`.
    pub fn drain(&mut self, sink: &mut impl FnMut(PerfRecord)) {
        let head = self.meta(1024).load(Ordering::Acquire);
        let mut tail = self.meta(1032).load(Ordering::Relaxed);
        // SAFETY: the data area is mapped for data_size bytes.
        let data = unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(self.data_offset), self.data_size)
        };
        while tail < head {
            let at = (tail as usize) % self.data_size;
            let header = copy_wrapped(data, at, 8, &mut self.scratch);
            let size = u16::from_ne_bytes([header[6], header[7]]) as usize;
            if size < 8 || size > self.data_size {
                // Not a record the kernel writes: stop rather than misread.
                break;
            }
            let record = copy_wrapped(data, at, size, &mut self.scratch);
            if let Some(record) = parse_record(record) {
                sink(record);
            }
            tail += size as u64;
        }
        self.meta(1032).store(tail, Ordering::Release);
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: unmapping the ring mapped in `open`, which nothing else
        // refers to; the descriptor (a field) is closed after this.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mmap_len) };
    }
}

/// `len` bytes of the ring at `at`, copied out when they wrap around.
fn copy_wrapped<'a>(data: &'a [u8], at: usize, len: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    if at + len <= data.len() {
        return &data[at..at + len];
    }
    scratch.clear();
    let first = data.len() - at;
    scratch.extend_from_slice(&data[at..]);
    scratch.extend_from_slice(&data[..len - first]);
    scratch
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_records_that_wrap() {
        let data: Vec<u8> = (0..16).collect();
        let mut scratch = Vec::new();
        assert_eq!(copy_wrapped(&data, 14, 4, &mut scratch), &[14, 15, 0, 1]);
        assert_eq!(copy_wrapped(&data, 2, 3, &mut scratch), &[2, 3, 4]);
    }
}
