//! Records that cannot be. Every record is checked before it reaches the
//! books, whether it comes from the kernel (defensively: a decoding bug, a
//! layout mismatch) or from a trace file (which anyone can edit): a call
//! the kernel would have refused cannot have succeeded, and a range past
//! the end of user space cannot be mapped. A trace with such a record is
//! an error naming it; a kernel record is counted as malformed.
//!
//! Failed calls changed nothing and are not held to these rules: their
//! arguments are whatever the program passed.

use crate::model::{Call, CallKind, Event, PAGE_SIZE, SyscallEvent};

/// The end of user space on x86_64 with 5-level page tables (4-level ends
/// at 1 << 47): no mapping reaches past it.
pub const USER_SPACE_END: u64 = 1 << 56;

/// Process ids are below this (`PID_MAX_LIMIT` on 64-bit).
pub const PID_LIMIT: u32 = 1 << 22;

/// How far back in time a record may seem to go in a trace. Records are
/// written in the order calls took effect, which is their entry time for
/// calls that change existing mappings; a call that blocked longer than
/// the reorder window is written late. None blocks for a minute.
pub const BACKWARDS_LIMIT_NS: u64 = 60_000_000_000;

/// Why a record is impossible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Impossible {
    #[error("{call} of {len:#x} bytes at {addr:#x} runs past the end of user space")]
    PastUserSpace { call: CallKind, addr: u64, len: u64 },
    #[error("a {call} of 0 bytes succeeded (the kernel refuses it)")]
    ZeroLength { call: CallKind },
    #[error("a {call} at {addr:#x}, not page-aligned, succeeded (the kernel refuses it)")]
    Unaligned { call: CallKind, addr: u64 },
    #[error("{call} returned {ret:#x}, which is not a page-aligned user address")]
    BadResult { call: CallKind, ret: i64 },
    #[error("pid {0} is not a process id (they are below {PID_LIMIT})")]
    BadPid(u32),
    #[error("time runs backwards: {now_ns} ns comes after {before_ns} ns")]
    Backwards { before_ns: u64, now_ns: u64 },
}

/// Checks one record on its own.
pub fn check(event: &Event) -> Result<(), Impossible> {
    let pid = event.pid();
    if pid == 0 || pid >= PID_LIMIT {
        return Err(Impossible::BadPid(pid));
    }
    match event {
        Event::Syscall(call) => check_call(call),
        _ => Ok(()),
    }
}

/// A successful call's arguments and result, as the kernel would have
/// them.
pub fn check_call(event: &SyscallEvent) -> Result<(), Impossible> {
    if event.tid == 0 || event.tid >= PID_LIMIT {
        return Err(Impossible::BadPid(event.tid));
    }
    if event.failed() {
        return Ok(());
    }
    let call = event.call.kind();
    let ret = event.ret;
    let result = || {
        let address = u64::try_from(ret).map_err(|_| Impossible::BadResult { call, ret })?;
        if !address.is_multiple_of(PAGE_SIZE) || address >= USER_SPACE_END {
            return Err(Impossible::BadResult { call, ret });
        }
        Ok(address)
    };
    match event.call {
        Call::Mmap { len, .. } => {
            nonzero(call, len)?;
            range(call, result()?, len)
        }
        Call::Munmap { addr, len } => {
            nonzero(call, len)?;
            aligned_range(call, addr, len)
        }
        Call::Mremap {
            old_addr,
            old_len,
            new_len,
            ..
        } => {
            nonzero(call, new_len)?;
            aligned_range(call, old_addr, old_len)?;
            range(call, result()?, new_len)
        }
        Call::Brk { requested } => {
            if requested >= USER_SPACE_END {
                return Err(Impossible::PastUserSpace {
                    call,
                    addr: requested,
                    len: 0,
                });
            }
            // The break need not be page-aligned.
            match u64::try_from(ret) {
                Ok(end) if end < USER_SPACE_END => Ok(()),
                _ => Err(Impossible::BadResult { call, ret }),
            }
        }
        Call::Shmat { size, .. } => range(call, result()?, size),
        Call::Shmdt { addr } => aligned_range(call, addr, 0),
        Call::Mprotect { addr, len, .. } | Call::Madvise { addr, len, .. } => {
            aligned_range(call, addr, len)
        }
    }
}

fn nonzero(call: CallKind, len: u64) -> Result<(), Impossible> {
    if len == 0 {
        return Err(Impossible::ZeroLength { call });
    }
    Ok(())
}

fn aligned_range(call: CallKind, addr: u64, len: u64) -> Result<(), Impossible> {
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Impossible::Unaligned { call, addr });
    }
    range(call, addr, len)
}

/// `len` bytes (rounded up to pages, as the kernel rounds them) from
/// `addr` stay in user space.
fn range(call: CallKind, addr: u64, len: u64) -> Result<(), Impossible> {
    let end = len
        .checked_add(PAGE_SIZE - 1)
        .map(|l| l & !(PAGE_SIZE - 1))
        .and_then(|l| addr.checked_add(l));
    match end {
        Some(end) if end <= USER_SPACE_END => Ok(()),
        _ => Err(Impossible::PastUserSpace { call, addr, len }),
    }
}

/// Checks that a sequence of records (a trace) keeps time: each record's
/// order key (see `account::order`) may fall behind the newest one seen by
/// at most [`BACKWARDS_LIMIT_NS`].
#[derive(Default)]
pub struct Timekeeper {
    newest_ns: u64,
}

impl Timekeeper {
    pub fn check(&mut self, event: &Event) -> Result<(), Impossible> {
        let key = super::order::order_key(event);
        if key.saturating_add(BACKWARDS_LIMIT_NS) < self.newest_ns {
            return Err(Impossible::Backwards {
                before_ns: self.newest_ns,
                now_ns: key,
            });
        }
        self.newest_ns = self.newest_ns.max(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    fn ok(call: Call, ret: i64) -> Result<(), Impossible> {
        check(&Event::Syscall(SyscallEvent::for_test(
            7,
            1,
            call,
            ret,
            &[0x1000],
        )))
    }

    #[test]
    fn what_the_kernel_does_passes() {
        assert_eq!(ok(Call::anonymous_mmap(3 * P), 0x7f00_0000_0000), Ok(()));
        assert_eq!(
            ok(
                Call::Munmap {
                    addr: 0x10000,
                    len: 1
                },
                0
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                Call::Brk {
                    requested: 0x5000_1234
                },
                0x5000_1234
            ),
            Ok(())
        );
        let mprotect = Call::Mprotect {
            addr: 0x10000,
            len: 0,
            prot: 0,
        };
        assert_eq!(ok(mprotect, 0), Ok(()), "an empty mprotect succeeds");
        // A failed call is whatever the program passed.
        assert_eq!(ok(Call::Munmap { addr: 3, len: 0 }, -22), Ok(()));
    }

    #[test]
    fn ranges_past_user_space_and_wrapping_lengths_are_impossible() {
        let mremap = Call::Mremap {
            old_addr: 0x10000,
            old_len: P,
            new_len: u64::MAX - 10,
            flags: 1,
            new_addr: 0,
        };
        assert_eq!(
            ok(mremap, 0x20000),
            Err(Impossible::PastUserSpace {
                call: CallKind::Mremap,
                addr: 0x20000,
                len: u64::MAX - 10
            })
        );
        let munmap = Call::Munmap {
            addr: USER_SPACE_END - P,
            len: 2 * P,
        };
        assert!(matches!(
            ok(munmap, 0),
            Err(Impossible::PastUserSpace { .. })
        ));
        assert!(
            matches!(
                ok(Call::anonymous_mmap(P), -4096),
                Err(Impossible::BadResult { .. })
            ),
            "a result outside user space that is no errno"
        );
    }

    #[test]
    fn calls_the_kernel_refuses_cannot_have_succeeded() {
        assert_eq!(
            ok(
                Call::Munmap {
                    addr: 0x10001,
                    len: P
                },
                0
            ),
            Err(Impossible::Unaligned {
                call: CallKind::Munmap,
                addr: 0x10001
            })
        );
        assert_eq!(
            ok(Call::anonymous_mmap(0), 0x10000),
            Err(Impossible::ZeroLength {
                call: CallKind::Mmap
            })
        );
        assert!(matches!(
            ok(Call::anonymous_mmap(P), 0x10010),
            Err(Impossible::BadResult { .. })
        ));
    }

    #[test]
    fn process_ids_are_in_range() {
        let mut event = SyscallEvent::for_test(0, 1, Call::anonymous_mmap(P), 0x10000, &[]);
        assert_eq!(
            check(&Event::Syscall(event.clone())),
            Err(Impossible::BadPid(0))
        );
        event.pid = 9;
        event.tid = PID_LIMIT;
        assert_eq!(
            check(&Event::Syscall(event)),
            Err(Impossible::BadPid(PID_LIMIT))
        );
    }

    #[test]
    fn time_may_lag_a_little_but_not_run_backwards() {
        let at = |ms: u64| {
            Event::Syscall(SyscallEvent::for_test(
                7,
                ms * 1_000_000,
                Call::anonymous_mmap(P),
                0x10000,
                &[],
            ))
        };
        let mut clock = Timekeeper::default();
        assert_eq!(clock.check(&at(120_000)), Ok(()));
        assert_eq!(clock.check(&at(119_000)), Ok(()), "a late record");
        assert_eq!(
            clock.check(&at(1_000)),
            Err(Impossible::Backwards {
                before_ns: 120_000_000_000,
                now_ns: 1_000_000_000
            })
        );
    }
}
