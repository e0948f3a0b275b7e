//! The collector on hand-made events: exact bytes per stack.

use super::*;
use crate::model::{Call, CallKind, PAGE_SIZE as P, prot};

fn syscall(pid: u32, call: Call, ret: i64, stack: &[u64]) -> Event {
    Event::Syscall(SyscallEvent::for_test(pid, 1, call, ret, stack))
}

/// What /proc/PID/maps says of ordinary private memory.
const RW_ANON: (u32, MemoryKind) = (prot::READ | prot::WRITE, MemoryKind::PrivateAnon);

fn mmap(len: u64) -> Call {
    Call::anonymous_mmap(len)
}

fn process_event(pid: u32) -> ProcessEvent {
    ProcessEvent {
        pid,
        tid: pid,
        time_ns: 5,
        parent_pid: 1,
        comm: "x".into(),
    }
}

#[test]
fn counts_bytes_and_live_per_stack() {
    let mut c = Collector::default();
    c.handle(syscall(7, mmap(2 * P), 0x10000, &[1, 2]));
    c.handle(syscall(7, mmap(3 * P), 0x20000, &[1, 3]));
    c.handle(syscall(
        7,
        Call::Munmap {
            addr: 0x20000,
            len: P,
        },
        0,
        &[4],
    ));
    c.handle(syscall(7, mmap(P), -12, &[1, 2]));
    assert_eq!(c.counts.calls[CallKind::Mmap], 3);
    assert_eq!(c.counts.calls[CallKind::Munmap], 1);
    assert_eq!(c.counts.failed, 1);
    assert_eq!(c.bytes.mapped, 5 * P);
    assert_eq!(c.bytes.unmapped, P);
    let live: Vec<_> = c.live_by_stack().into_values().collect();
    assert_eq!(live, vec![(2 * P, 1), (2 * P, 1)]);
    let first = c.stacks.iter().next().unwrap().stats;
    assert_eq!((first.calls[CallKind::Mmap], first.failed_calls), (2, 1));
}

#[test]
fn exit_keeps_live_bytes_and_drops_the_space() {
    let mut c = Collector::default();
    c.handle(syscall(7, mmap(2 * P), 0x10000, &[1]));
    c.handle(Event::Exit(process_event(7)));
    let process = c.processes().next().unwrap();
    assert!(process.exited());
    assert!(process.space.is_empty());
    assert_eq!(
        c.live_by_stack().into_values().collect::<Vec<_>>(),
        vec![(2 * P, 1)]
    );
    // A late record of the exited process changes no bytes.
    c.handle(syscall(
        7,
        Call::Munmap {
            addr: 0x10000,
            len: P,
        },
        0,
        &[1],
    ));
    assert_eq!(c.bytes.unmapped, 0);
}

#[test]
fn exec_starts_a_new_generation() {
    let mut c = Collector::default();
    c.handle(syscall(7, mmap(P), 0x10000, &[1]));
    c.handle(Event::Exec(process_event(7)));
    let Event::Syscall(mut after) = syscall(7, mmap(P), 0x10000, &[1]) else {
        unreachable!()
    };
    after.asid = 2;
    c.handle(Event::Syscall(after));
    assert_eq!(c.stacks.len(), 2, "same addresses, different images");
    assert_eq!(c.processes().next().unwrap().generation, 1);
    let old = c.stacks.iter().next().unwrap().stats;
    assert_eq!(
        old.live_at_exit_bytes, P,
        "the old image's bytes, live at exec"
    );
    assert_eq!(c.processes().next().unwrap().space.live_bytes(), P);
}

#[test]
fn calls_made_before_the_seed_was_read_are_reconciled() {
    let mut c = Collector::default();
    // Read at t=100: holds the region a call at t=1 mapped, and not the
    // one a call at t=1 unmapped (mapped before tracing).
    c.seed_preexisting(7, (0x10000, 0x10000 + 2 * P), RW_ANON, 100);
    c.handle(syscall(7, mmap(2 * P), 0x10000, &[1]));
    c.handle(syscall(
        7,
        Call::Munmap {
            addr: 0x90000,
            len: P,
        },
        0,
        &[1],
    ));
    assert_eq!(
        c.bytes.preexisting, P,
        "only the unmapped page was there before"
    );
    assert_eq!(c.bytes.preexisting_unmapped, P);
    assert_eq!(c.bytes.unknown_unmapped, 0);
    assert_eq!(c.bytes.mapped, 2 * P);
    assert_eq!(
        c.live_by_stack().into_values().collect::<Vec<_>>(),
        vec![(2 * P, 1)]
    );
}

#[test]
fn brk_grows_and_shrinks_the_heap() {
    let mut c = Collector::default();
    let brk = |requested: u64, ret: u64| syscall(7, Call::Brk { requested }, ret as i64, &[1]);
    c.handle(brk(0, 0x50000)); // the query
    c.handle(brk(0x50000 + 3 * P, 0x50000 + 3 * P));
    c.handle(brk(0x50000 + P, 0x50000 + P));
    c.handle(brk(0x9_0000_0000, 0x50000 + P)); // refused: the old break
    assert_eq!(c.counts.calls[CallKind::Brk], 4);
    assert_eq!(c.counts.failed, 1);
    assert_eq!(c.bytes.mapped, 3 * P);
    assert_eq!(c.bytes.unmapped, 2 * P);
    assert_eq!(c.processes().next().unwrap().space.live_bytes(), P);
}

#[test]
fn shmdt_releases_the_whole_attachment() {
    let mut c = Collector::default();
    let attach = Call::Shmat {
        shmid: 3,
        addr: 0,
        flags: 0,
        size: 5 * P,
    };
    c.handle(syscall(7, attach, 0x70000, &[1]));
    c.handle(syscall(7, Call::Shmdt { addr: 0x70000 }, 0, &[2]));
    assert_eq!(c.bytes.mapped, 5 * P);
    assert_eq!(c.bytes.unmapped, 5 * P);
}

#[test]
fn preexisting_ranges_are_not_unknown() {
    let mut c = Collector::default();
    c.seed_preexisting(7, (0x10000, 0x10000 + 4 * P), RW_ANON, 0);
    c.handle(syscall(
        7,
        Call::Munmap {
            addr: 0x10000,
            len: 4 * P,
        },
        0,
        &[1],
    ));
    assert_eq!(c.bytes.preexisting_unmapped, 4 * P);
    assert_eq!(c.bytes.unknown_unmapped, 0);
    c.handle(syscall(
        7,
        Call::Munmap {
            addr: 0x90000,
            len: P,
        },
        0,
        &[1],
    ));
    assert_eq!(c.bytes.unknown_unmapped, P);
}

#[test]
fn reserved_and_accessible_bytes_per_stack_and_kind() {
    let mut c = Collector::default();
    let reserve = Call::Mmap {
        addr: 0,
        len: 8 * P,
        prot: prot::NONE,
        flags: 0x22,
        fd: -1,
        offset: 0,
    };
    let shared = Call::Mmap {
        addr: 0,
        len: 2 * P,
        prot: prot::READ | prot::WRITE,
        flags: 0x21,
        fd: -1,
        offset: 0,
    };
    let commit = Call::Mprotect {
        addr: 0x100000,
        len: 3 * P,
        prot: prot::READ | prot::WRITE,
    };
    let advise = Call::Madvise {
        addr: 0x100000,
        len: P,
        advice: 4,
    };
    c.handle(syscall(7, reserve, 0x100000, &[1]));
    c.handle(syscall(7, shared, 0x200000, &[2]));
    c.handle(syscall(7, commit, 0, &[3]));
    c.handle(syscall(7, advise, 0, &[4]));
    assert_eq!(c.counts.calls[CallKind::Mprotect], 1);
    assert_eq!(c.counts.calls[CallKind::Madvise], 1);
    let holdings = c.holdings();
    let (reserver, sharer, committer, adviser) = (StackId(0), StackId(1), StackId(2), StackId(3));
    assert_eq!(
        (holdings[&reserver].live, holdings[&reserver].reserved),
        (8 * P, 5 * P)
    );
    assert_eq!(holdings[&reserver].accessible, 0);
    assert_eq!(holdings[&committer].accessible, 3 * P);
    assert_eq!(holdings[&committer].live, 0, "it mapped nothing");
    assert_eq!(holdings[&sharer].accessible, 2 * P);
    assert!(!holdings.contains_key(&adviser));
    let stats = |id: StackId| c.stacks.iter().find(|e| e.id == id).unwrap().stats.clone();
    assert_eq!(stats(committer).committed_bytes, 3 * P);
    assert_eq!(stats(adviser).advised_bytes, P);
    let kinds = c.kind_totals();
    assert_eq!(kinds.get(MemoryKind::Shared).live, 2 * P);
    assert_eq!(kinds.get(MemoryKind::PrivateAnon).reserved, 5 * P);
    assert_eq!(kinds.get(MemoryKind::PrivateAnon).accessible, 3 * P);
    // At exit the same figures stay.
    c.handle(Event::Exit(process_event(7)));
    assert_eq!(c.holdings(), holdings);
    assert_eq!(c.kind_totals(), kinds);
}

#[test]
fn calls_made_while_the_seed_was_read_are_reconciled_by_what_it_holds() {
    let mut c = Collector::default();
    // Read from t=50 to t=100, stamped 100. The munmap at t=60 came after
    // the read had passed its region (still in the seed); the mmap at t=70
    // came before the read reached its region (not in the seed).
    c.seed_preexisting(7, (0x10000, 0x10000 + 2 * P), RW_ANON, 100);
    c.handle(syscall(
        7,
        Call::Munmap {
            addr: 0x10000,
            len: 2 * P,
        },
        0,
        &[1],
    ));
    c.handle(syscall(7, mmap(3 * P), 0x40000, &[2]));
    assert_eq!(c.bytes.preexisting, 2 * P);
    assert_eq!(
        c.bytes.preexisting_unmapped,
        2 * P,
        "released as pre-existing"
    );
    assert_eq!(c.bytes.unknown_unmapped, 0);
    assert_eq!(c.bytes.mapped, 3 * P);
}
