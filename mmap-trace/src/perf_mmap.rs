//! The kernel's own record of executable mappings, forks, execs and exits.
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

const RECORD_LOST: u32 = 2;
const RECORD_COMM: u32 = 3;
const RECORD_EXIT: u32 = 4;
const RECORD_FORK: u32 = 7;
const RECORD_MMAP2: u32 = 10;
const MISC_COMM_EXEC: u16 = 1 << 13;

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

/// A record the kernel wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PerfRecord {
    Mmap2 {
        pid: u32,
        addr: u64,
        len: u64,
        pgoff: u64,
        inode: u64,
        name: String,
        time_ns: u64,
    },
    Fork {
        pid: u32,
        ppid: u32,
        tid: u32,
        time_ns: u64,
    },
    Exit {
        pid: u32,
        tid: u32,
        time_ns: u64,
    },
    Exec {
        pid: u32,
        time_ns: u64,
    },
    Lost {
        count: u64,
    },
}

/// One per-CPU ring of mapping records.
pub struct PerfRing {
    fd: OwnedFd,
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
            fd,
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
            if size < 8 {
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
        // SAFETY: unmapping the ring mapped in `open`; the fd closes after.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mmap_len) };
        let _ = &self.fd;
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

/// Decodes one record (header included); `None` for kinds we ignore or
/// records too short to be what they claim.
pub fn parse_record(record: &[u8]) -> Option<PerfRecord> {
    let u32_at = |at: usize| Some(u32::from_ne_bytes(record.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_ne_bytes(record.get(at..at + 8)?.try_into().ok()?));
    let kind = u32_at(0)?;
    let misc = u16::from_ne_bytes(record.get(4..6)?.try_into().ok()?);
    // With sample_id_all and TID|TIME, every record ends in {pid, tid, time}.
    let trailer_time = || u64_at(record.len().checked_sub(8)?);
    match kind {
        RECORD_MMAP2 => {
            let name_bytes = record.get(72..record.len().checked_sub(16)?)?;
            let name = name_bytes.split(|&b| b == 0).next().unwrap_or_default();
            Some(PerfRecord::Mmap2 {
                pid: u32_at(8)?,
                addr: u64_at(16)?,
                len: u64_at(24)?,
                pgoff: u64_at(32)?,
                inode: u64_at(48)?,
                name: String::from_utf8_lossy(name).into_owned(),
                time_ns: trailer_time()?,
            })
        }
        RECORD_FORK => Some(PerfRecord::Fork {
            pid: u32_at(8)?,
            ppid: u32_at(12)?,
            tid: u32_at(16)?,
            time_ns: u64_at(24)?,
        }),
        RECORD_EXIT => Some(PerfRecord::Exit {
            pid: u32_at(8)?,
            tid: u32_at(16)?,
            time_ns: u64_at(24)?,
        }),
        RECORD_COMM if misc & MISC_COMM_EXEC != 0 => Some(PerfRecord::Exec {
            pid: u32_at(8)?,
            time_ns: trailer_time()?,
        }),
        RECORD_LOST => Some(PerfRecord::Lost { count: u64_at(16)? }),
        _ => None,
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, misc: u16, body: &[u8]) -> Vec<u8> {
        let size = (8 + body.len()) as u16;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&misc.to_ne_bytes());
        bytes.extend_from_slice(&size.to_ne_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    fn trailer(pid: u32, time: u64) -> Vec<u8> {
        [
            &pid.to_ne_bytes()[..],
            &pid.to_ne_bytes(),
            &time.to_ne_bytes(),
        ]
        .concat()
    }

    #[test]
    fn parses_mmap2() {
        let mut body = Vec::new();
        body.extend_from_slice(&5u32.to_ne_bytes()); // pid
        body.extend_from_slice(&5u32.to_ne_bytes()); // tid
        body.extend_from_slice(&0x7f00u64.to_ne_bytes()); // addr
        body.extend_from_slice(&0x1000u64.to_ne_bytes()); // len
        body.extend_from_slice(&0x2000u64.to_ne_bytes()); // pgoff
        body.extend_from_slice(&[0; 8]); // maj, min
        body.extend_from_slice(&77u64.to_ne_bytes()); // ino
        body.extend_from_slice(&[0; 8]); // ino_generation
        body.extend_from_slice(&[0; 8]); // prot, flags
        body.extend_from_slice(b"/lib/x.so\0\0\0\0\0\0\0");
        body.extend_from_slice(&trailer(5, 99));
        let parsed = parse_record(&record(RECORD_MMAP2, 0, &body)).unwrap();
        assert_eq!(
            parsed,
            PerfRecord::Mmap2 {
                pid: 5,
                addr: 0x7f00,
                len: 0x1000,
                pgoff: 0x2000,
                inode: 77,
                name: "/lib/x.so".into(),
                time_ns: 99
            }
        );
    }

    #[test]
    fn parses_task_records_and_ignores_plain_comm() {
        let body: Vec<u8> = [5u32, 4, 6, 4]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .chain(42u64.to_ne_bytes())
            .chain(trailer(5, 42))
            .collect();
        assert_eq!(
            parse_record(&record(RECORD_FORK, 0, &body)),
            Some(PerfRecord::Fork {
                pid: 5,
                ppid: 4,
                tid: 6,
                time_ns: 42
            })
        );
        let comm: Vec<u8> = [5u32, 5]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .chain(*b"cat\0\0\0\0\0")
            .chain(trailer(5, 7))
            .collect();
        assert_eq!(parse_record(&record(RECORD_COMM, 0, &comm)), None);
        assert_eq!(
            parse_record(&record(RECORD_COMM, MISC_COMM_EXEC, &comm)),
            Some(PerfRecord::Exec { pid: 5, time_ns: 7 })
        );
        assert_eq!(parse_record(&record(RECORD_MMAP2, 0, &[1, 2, 3])), None);
    }

    #[test]
    fn copies_records_that_wrap() {
        let data: Vec<u8> = (0..16).collect();
        let mut scratch = Vec::new();
        assert_eq!(copy_wrapped(&data, 14, 4, &mut scratch), &[14, 15, 0, 1]);
        assert_eq!(copy_wrapped(&data, 2, 3, &mut scratch), &[2, 3, 4]);
    }
}
