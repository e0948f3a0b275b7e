//! Ring-buffer bytes → [`Event`]s, checked field by field.
//!
//! The offsets come from the shared `#[repr(C)]` structs via `offset_of!`, so
//! both sides agree on the layout by construction; nothing is transmuted.
//! Fields are read in native byte order: the eBPF programs run on the same
//! machine and write them that way.

use std::mem::{offset_of, size_of};

use mmap_trace_common::{
    MAX_PYTHON_FRAMES, MAX_STACK_FRAMES, MAX_STACK_WINDOW, ProcessRecord, PyFrame, RecordHeader,
    SyscallRecord, kind, nr, stop, unwind,
};

use crate::model::{
    Call, Event, ProcessEvent, PyFrameRaw, Resume, StackSource, StopReason, SyscallEvent,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record kind {kind} needs {needed} bytes, got {got}")]
    Truncated {
        kind: u32,
        needed: usize,
        got: usize,
    },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("unknown syscall number {0}")]
    UnknownSyscall(u32),
    #[error("stack of {0} frames exceeds the maximum")]
    BadStackLength(u32),
    #[error("stack window of {0} bytes exceeds the maximum")]
    BadWindowLength(u32),
    #[error("{0} Python frames exceed the maximum")]
    BadPythonLength(u32),
    #[error("unknown unwinder {0}")]
    UnknownUnwinder(u32),
    #[error("unknown stack stop reason {0}")]
    UnknownStopReason(u32),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let fields = Fields(bytes);
    if bytes.len() < size_of::<RecordHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let record_kind = fields.u32(offset_of!(RecordHeader, kind));
    match record_kind {
        kind::SYSCALL => decode_syscall(fields).map(Event::Syscall),
        kind::EXEC | kind::EXIT | kind::FORK | kind::JOIN => {
            let event = decode_process(fields)?;
            Ok(match record_kind {
                kind::EXEC => Event::Exec(event),
                kind::EXIT => Event::Exit(event),
                kind::JOIN => Event::Join(event),
                _ => Event::Fork(event),
            })
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// Native-endian field reads at offsets already checked against the length.
#[derive(Clone, Copy)]
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u32(self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }
    fn u64(self, at: usize) -> u64 {
        u64::from_ne_bytes(self.0[at..at + 8].try_into().expect("8 bytes"))
    }
    fn i64(self, at: usize) -> i64 {
        self.u64(at) as i64
    }
    fn require(self, record_kind: u32, needed: usize) -> Result<(), DecodeError> {
        if self.0.len() < needed {
            return Err(DecodeError::Truncated {
                kind: record_kind,
                needed,
                got: self.0.len(),
            });
        }
        Ok(())
    }
}

fn header(fields: Fields<'_>) -> (u32, u32, u64) {
    (
        fields.u32(offset_of!(RecordHeader, pid)),
        fields.u32(offset_of!(RecordHeader, tid)),
        fields.u64(offset_of!(RecordHeader, time_ns)),
    )
}

fn decode_syscall(fields: Fields<'_>) -> Result<SyscallEvent, DecodeError> {
    let data_at = size_of::<SyscallRecord>();
    fields.require(kind::SYSCALL, data_at)?;
    let frames = fields.u32(offset_of!(SyscallRecord, stack_frames));
    if frames as usize > MAX_STACK_FRAMES {
        return Err(DecodeError::BadStackLength(frames));
    }
    let window_bytes = fields.u32(offset_of!(SyscallRecord, window_bytes));
    if window_bytes as usize > MAX_STACK_WINDOW {
        return Err(DecodeError::BadWindowLength(window_bytes));
    }
    let python = fields.u32(offset_of!(SyscallRecord, python_frames));
    if python as usize > MAX_PYTHON_FRAMES {
        return Err(DecodeError::BadPythonLength(python));
    }
    let python_bytes = python as usize * size_of::<PyFrame>();
    let source = match fields.u32(offset_of!(SyscallRecord, unwind)) {
        unwind::FP => StackSource::FramePointers,
        unwind::KERNEL_DWARF => StackSource::Dwarf,
        unwind::WINDOW => StackSource::Window,
        other => return Err(DecodeError::UnknownUnwinder(other)),
    };
    let stop_code = fields.u32(offset_of!(SyscallRecord, stop));
    let stop = match (source, stop_code) {
        // The walk goes on in user space, which gives the final reason.
        (StackSource::Window, stop::MISSING_RULE) => StopReason::Complete,
        (_, code) => StopReason::from_kernel(code).ok_or(DecodeError::UnknownStopReason(code))?,
    };
    fields.require(
        kind::SYSCALL,
        data_at + 8 * frames as usize + python_bytes + window_bytes as usize,
    )?;
    let (pid, tid, time_ns) = header(fields);
    let arg = |i: usize| fields.u64(offset_of!(SyscallRecord, args) + 8 * i);
    let number = fields.u32(offset_of!(SyscallRecord, nr));
    let call = match u64::from(number) {
        nr::MMAP => Call::Mmap {
            addr: arg(0),
            len: arg(1),
            prot: arg(2) as u32,
            flags: arg(3) as u32,
            fd: arg(4) as i32,
            offset: arg(5),
        },
        nr::MUNMAP => Call::Munmap {
            addr: arg(0),
            len: arg(1),
        },
        nr::MREMAP => Call::Mremap {
            old_addr: arg(0),
            old_len: arg(1),
            new_len: arg(2),
            flags: arg(3) as u32,
            new_addr: arg(4),
        },
        nr::BRK => Call::Brk { requested: arg(0) },
        nr::SHMAT => Call::Shmat {
            shmid: arg(0) as i32,
            addr: arg(1),
            flags: arg(2) as u32,
            size: fields.u64(offset_of!(SyscallRecord, mapped_size)),
        },
        nr::SHMDT => Call::Shmdt { addr: arg(0) },
        nr::MPROTECT => Call::Mprotect {
            addr: arg(0),
            len: arg(1),
            prot: arg(2) as u32,
        },
        nr::MADVISE => Call::Madvise {
            addr: arg(0),
            len: arg(1),
            advice: arg(2) as u32,
        },
        _ => return Err(DecodeError::UnknownSyscall(number)),
    };
    let stack = (0..frames as usize)
        .map(|i| fields.u64(data_at + 8 * i))
        .collect();
    let python_at = data_at + 8 * frames as usize;
    let python = (0..python as usize)
        .map(|i| {
            let at = python_at + i * size_of::<PyFrame>();
            PyFrameRaw {
                code: fields.u64(at + offset_of!(PyFrame, code)),
                offset: fields.u32(at + offset_of!(PyFrame, offset)) as i32,
                flags: fields.u32(at + offset_of!(PyFrame, flags)),
                identity: fields.u32(at + offset_of!(PyFrame, identity)),
            }
        })
        .collect();
    let window_at = python_at + python_bytes;
    Ok(SyscallEvent {
        pid,
        tid,
        time_ns,
        enter_ns: fields.u64(offset_of!(SyscallRecord, enter_ns)),
        call,
        ret: fields.i64(offset_of!(SyscallRecord, ret)),
        user_ip: fields.u64(offset_of!(SyscallRecord, user_ip)),
        user_sp: fields.u64(offset_of!(SyscallRecord, user_sp)),
        sp_word: fields.u64(offset_of!(SyscallRecord, sp_word)),
        asid: fields.u64(offset_of!(SyscallRecord, asid)),
        source,
        stack,
        stop,
        python,
        resume: Resume {
            ip: fields.u64(offset_of!(SyscallRecord, resume_ip)),
            sp: fields.u64(offset_of!(SyscallRecord, resume_sp)),
            bp: fields.u64(offset_of!(SyscallRecord, resume_bp)),
        },
        window: fields.0[window_at..window_at + window_bytes as usize].to_vec(),
        stack_error: fields.i64(offset_of!(SyscallRecord, stack_error)),
        shmem: false,
        resident_returned: None,
    })
}

fn decode_process(fields: Fields<'_>) -> Result<ProcessEvent, DecodeError> {
    let record_kind = fields.u32(offset_of!(RecordHeader, kind));
    fields.require(record_kind, size_of::<ProcessRecord>())?;
    let (pid, tid, time_ns) = header(fields);
    let comm_at = offset_of!(ProcessRecord, comm);
    let comm = &fields.0[comm_at..comm_at + 16];
    let comm = comm.split(|&b| b == 0).next().unwrap_or_default();
    Ok(ProcessEvent {
        pid,
        tid,
        time_ns,
        parent_pid: fields.u32(offset_of!(ProcessRecord, parent_pid)),
        comm: String::from_utf8_lossy(comm).into_owned(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes a syscall record exactly as the eBPF side lays it out.
    pub(crate) fn encode_syscall(
        header: RecordHeader,
        number: u64,
        args: [u64; 6],
        ret: i64,
        stack: &[u64],
    ) -> Vec<u8> {
        let mut bytes = vec![0u8; size_of::<SyscallRecord>() + 8 * stack.len()];
        let mut put = |at: usize, value: &[u8]| bytes[at..at + value.len()].copy_from_slice(value);
        put(offset_of!(RecordHeader, kind), &header.kind.to_ne_bytes());
        put(offset_of!(RecordHeader, pid), &header.pid.to_ne_bytes());
        put(offset_of!(RecordHeader, tid), &header.tid.to_ne_bytes());
        put(
            offset_of!(RecordHeader, time_ns),
            &header.time_ns.to_ne_bytes(),
        );
        put(
            offset_of!(SyscallRecord, nr),
            &(number as u32).to_ne_bytes(),
        );
        put(
            offset_of!(SyscallRecord, stack_frames),
            &(stack.len() as u32).to_ne_bytes(),
        );
        for (i, value) in args.iter().enumerate() {
            put(
                offset_of!(SyscallRecord, args) + 8 * i,
                &value.to_ne_bytes(),
            );
        }
        put(offset_of!(SyscallRecord, ret), &ret.to_ne_bytes());
        put(offset_of!(SyscallRecord, sp_word), &0x1234u64.to_ne_bytes());
        put(offset_of!(SyscallRecord, unwind), &unwind::FP.to_ne_bytes());
        for (i, frame) in stack.iter().enumerate() {
            put(size_of::<SyscallRecord>() + 8 * i, &frame.to_ne_bytes());
        }
        bytes
    }

    fn header(record_kind: u32) -> RecordHeader {
        RecordHeader {
            kind: record_kind,
            pid: 42,
            tid: 43,
            _reserved: 0,
            time_ns: 1_000,
        }
    }

    #[test]
    fn decodes_mmap_with_stack() {
        let bytes = encode_syscall(
            header(kind::SYSCALL),
            nr::MMAP,
            [0, 8192, 3, 0x22, u64::MAX, 0],
            0x7f00_0000_0000,
            &[0x401000, 0x402000],
        );
        let Event::Syscall(event) = decode(bytes.as_slice()).unwrap() else {
            panic!("not a syscall")
        };
        assert_eq!(event.pid, 42);
        assert_eq!(event.tid, 43);
        assert_eq!(event.call, Call::anonymous_mmap(8192));
        assert_eq!(event.ret, 0x7f00_0000_0000);
        assert_eq!(event.stack, vec![0x401000, 0x402000]);
        assert_eq!(event.sp_word, 0x1234);
        assert_eq!(event.source, StackSource::FramePointers);
        assert!(event.window.is_empty());
        assert!(!event.failed());
    }

    #[test]
    fn decodes_a_stack_window() {
        let mut bytes = encode_syscall(header(kind::SYSCALL), nr::MUNMAP, [0; 6], 0, &[]);
        bytes[offset_of!(SyscallRecord, unwind)..][..4]
            .copy_from_slice(&unwind::WINDOW.to_ne_bytes());
        bytes[offset_of!(SyscallRecord, window_bytes)..][..4].copy_from_slice(&16u32.to_ne_bytes());
        bytes[offset_of!(SyscallRecord, stop)..][..4]
            .copy_from_slice(&stop::MISSING_RULE.to_ne_bytes());
        bytes.extend_from_slice(&[7; 16]);
        let Event::Syscall(event) = decode(bytes.as_slice()).unwrap() else {
            panic!("not a syscall")
        };
        assert_eq!(event.source, StackSource::Window);
        assert_eq!(event.window, vec![7; 16]);
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn decodes_python_frames_between_the_stack_and_the_window() {
        let mut bytes =
            encode_syscall(header(kind::SYSCALL), nr::MMAP, [0; 6], 0x1000, &[0x401000]);
        bytes[offset_of!(SyscallRecord, python_frames)..][..4].copy_from_slice(&2u32.to_ne_bytes());
        for (code, offset, flags, identity) in [
            (0xc0de_u64, 40i32, 0u32, 0x1d01_u32),
            (0xc0df, -2, 1, 0x1d03),
        ] {
            bytes.extend_from_slice(&code.to_ne_bytes());
            bytes.extend_from_slice(&offset.to_ne_bytes());
            bytes.extend_from_slice(&flags.to_ne_bytes());
            bytes.extend_from_slice(&identity.to_ne_bytes());
            bytes.extend_from_slice(&0u32.to_ne_bytes());
        }
        let Event::Syscall(event) = decode(bytes.as_slice()).unwrap() else {
            panic!("not a syscall")
        };
        assert_eq!(event.stack, vec![0x401000]);
        assert_eq!(
            event.python,
            vec![
                PyFrameRaw {
                    code: 0xc0de,
                    offset: 40,
                    flags: 0,
                    identity: 0x1d01,
                },
                PyFrameRaw {
                    code: 0xc0df,
                    offset: -2,
                    flags: 1,
                    identity: 0x1d03,
                }
            ]
        );
        assert!(event.python[1].ends_group());
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
        bytes[offset_of!(SyscallRecord, python_frames)..][..4]
            .copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(decode(&bytes), Err(DecodeError::BadPythonLength(99)));
    }

    #[test]
    fn failed_calls_are_recognised() {
        let bytes = encode_syscall(
            header(kind::SYSCALL),
            nr::MUNMAP,
            [1, 2, 0, 0, 0, 0],
            -22,
            &[],
        );
        let Event::Syscall(event) = decode(bytes.as_slice()).unwrap() else {
            panic!("not a syscall")
        };
        assert!(event.failed());
        assert_eq!(event.call, Call::Munmap { addr: 1, len: 2 });
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[0u8; 3][..]), Err(DecodeError::Short(3)));
        let mut bytes = encode_syscall(header(kind::SYSCALL), 77, [0; 6], 0, &[]);
        assert_eq!(
            decode(bytes.as_slice()),
            Err(DecodeError::UnknownSyscall(77))
        );
        bytes[offset_of!(SyscallRecord, nr)..][..4]
            .copy_from_slice(&(nr::MMAP as u32).to_ne_bytes());
        bytes[offset_of!(SyscallRecord, stop)..][..4]
            .copy_from_slice(&stop::MISSING_RULE.to_ne_bytes());
        assert_eq!(
            decode(bytes.as_slice()),
            Err(DecodeError::UnknownStopReason(stop::MISSING_RULE)),
            "only a stack copy goes on in user space"
        );
        bytes[0] = 99;
        assert_eq!(decode(bytes.as_slice()), Err(DecodeError::UnknownKind(99)));
        let bytes = encode_syscall(header(kind::SYSCALL), nr::MMAP, [0; 6], 0, &[1, 2, 3]);
        let cut = size_of::<SyscallRecord>() + 8;
        assert!(matches!(
            decode(&bytes[..cut]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn decodes_process_records() {
        let mut bytes = vec![0u8; size_of::<ProcessRecord>()];
        bytes[0..4].copy_from_slice(&kind::FORK.to_ne_bytes());
        bytes[4..8].copy_from_slice(&7u32.to_ne_bytes());
        bytes[offset_of!(ProcessRecord, parent_pid)..][..4].copy_from_slice(&5u32.to_ne_bytes());
        bytes[offset_of!(ProcessRecord, comm)..][..4].copy_from_slice(b"demo");
        let Event::Fork(event) = decode(bytes.as_slice()).unwrap() else {
            panic!("not a fork")
        };
        assert_eq!((event.pid, event.parent_pid), (7, 5));
        assert_eq!(event.comm, "demo");
        assert!(decode(&bytes[..40]).is_err());
    }
}
