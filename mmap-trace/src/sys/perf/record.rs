//! The records the kernel writes into a perf ring (see `ring`): a pure
//! parser, tested without the kernel.

use std::{ffi::OsStr, os::unix::ffi::OsStrExt as _, path::PathBuf};

const RECORD_LOST: u32 = 2;
const RECORD_COMM: u32 = 3;
const RECORD_EXIT: u32 = 4;
const RECORD_FORK: u32 = 7;
const RECORD_MMAP2: u32 = 10;
const MISC_COMM_EXEC: u16 = 1 << 13;

/// A record the kernel wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PerfRecord {
    Mmap2 {
        pid: u32,
        addr: u64,
        len: u64,
        pgoff: u64,
        inode: u64,
        /// The path (bytes as the kernel has them: not always UTF-8).
        name: PathBuf,
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
                name: PathBuf::from(OsStr::from_bytes(name)),
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
                name: PathBuf::from("/lib/x.so"),
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
}
