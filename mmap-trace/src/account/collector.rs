//! Applies decoded events to the per-process ledgers and the stack table.
//!
//! Pure: no kernel, no files. The session feeds it; the report reads it.

use std::collections::BTreeMap;

use super::ledger::{AddressSpace, Change, Origin};
use crate::model::{
    Call, CallCounts, Event, ProcessEvent, RawStack, StackId, StackSource, StackTable,
    SyscallEvent, page_round_up,
};

/// Counts of traced calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    pub calls: CallCounts,
    /// Calls that returned an error (never applied to the ledger).
    pub failed: u64,
    /// Records the kernel could not deliver (ring buffer full, entry map
    /// full) or that did not decode.
    pub lost: u64,
    /// Calls whose user stack the kernel could not capture.
    pub stack_errors: u64,
}

/// Byte totals over all traced processes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByteTotals {
    pub mapped: u64,
    pub unmapped: u64,
    /// munmap'd bytes that were never seen mapped.
    pub unknown_unmapped: u64,
    /// Bytes mapped before tracing began (seeded from /proc/PID/maps).
    pub preexisting: u64,
    pub preexisting_unmapped: u64,
}

/// Whether a traced process still runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    /// The last thread exited (status known only for a launched command).
    Exited {
        time_ns: u64,
    },
}

/// What a successful call did to its process's address space, and the
/// length to count in its stack's sizes.
fn apply(process: &mut Process, call: &Call, ret: u64, origin: Origin) -> (Change, Option<u64>) {
    let space = &mut process.space;
    match *call {
        Call::Mmap { len, .. } => (space.map(ret, len, origin), Some(len)),
        Call::Munmap { addr, len } => (space.unmap(addr, len), Some(len)),
        Call::Mremap {
            old_addr,
            old_len,
            new_len,
            flags,
            ..
        } => (
            space.remap(old_addr, old_len, new_len, flags, ret, origin),
            Some(new_len),
        ),
        Call::Brk { requested } => {
            let previous = process.brk.replace(ret);
            let (Some(previous), true) = (previous, requested != 0) else {
                // brk(0) asks; a first break we cannot compare with.
                return (Change::default(), None);
            };
            let (old_end, new_end) = (page_round_up(previous), page_round_up(ret));
            if new_end > old_end {
                let change = space.map(old_end, new_end - old_end, origin);
                (change, Some(new_end - old_end))
            } else {
                let change = space.unmap(new_end, old_end - new_end);
                (change, Some(old_end - new_end))
            }
        }
        Call::Shmat { size, .. } => (space.map(ret, size, origin), Some(size)),
        Call::Shmdt { addr } => {
            let length = space.region_at(addr).map_or(0, |r| r.len());
            (space.unmap(addr, length), Some(length))
        }
    }
}

/// One traced process (one pid; an exec starts a new generation).
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: u32,
    pub parent_pid: Option<u32>,
    pub comm: String,
    pub generation: u32,
    pub first_seen_ns: u64,
    pub state: ProcessState,
    pub space: AddressSpace,
    /// Pre-existing bytes still mapped when the process exited or exec'd.
    pub preexisting_live_at_exit: u64,
    /// When its mappings were read from /proc (attach, or joining a cgroup).
    pub seeded_at_ns: Option<u64>,
    /// The program break, once known (brk(0), or [heap] at attach).
    pub brk: Option<u64>,
}

impl Process {
    fn new(pid: u32, time_ns: u64) -> Self {
        Process {
            pid,
            parent_pid: None,
            comm: String::new(),
            generation: 0,
            first_seen_ns: time_ns,
            state: ProcessState::Running,
            space: AddressSpace::default(),
            preexisting_live_at_exit: 0,
            seeded_at_ns: None,
            brk: None,
        }
    }

    pub fn exited(&self) -> bool {
        matches!(self.state, ProcessState::Exited { .. })
    }
}

#[derive(Debug, Default)]
pub struct Collector {
    processes: BTreeMap<u32, Process>,
    pub stacks: StackTable,
    pub counts: EventCounts,
    pub bytes: ByteTotals,
    pub first_event_ns: Option<u64>,
    pub last_event_ns: u64,
    /// What the last event did to each stack's live bytes.
    deltas: Vec<(StackId, i64)>,
}

impl Collector {
    /// Starts tracking `pid` (a `--pid` target or a launched command).
    pub fn add_target(&mut self, pid: u32, comm: &str, time_ns: u64) {
        let process = self.process(pid, time_ns);
        if process.comm.is_empty() {
            process.comm = comm.to_owned();
        }
    }

    /// Records a range that was mapped before tracing began, as read from
    /// /proc/PID/maps at `read_at_ns`. Traced calls made before that moment
    /// whose records come later are reconciled with it (see `on_syscall`).
    pub fn seed_preexisting(&mut self, pid: u32, start: u64, end: u64, read_at_ns: u64) {
        let process = self.process(pid, 0);
        process.seeded_at_ns = Some(read_at_ns);
        let added = process.space.fill(start, end, Origin::PreExisting);
        self.bytes.preexisting += added;
    }

    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.processes.values()
    }

    /// Live-byte changes, by stack, of the last event handled.
    pub fn last_deltas(&self) -> &[(StackId, i64)] {
        &self.deltas
    }

    pub fn handle(&mut self, event: Event) {
        self.deltas.clear();
        let time = event.time_ns();
        self.first_event_ns.get_or_insert(time);
        self.last_event_ns = self.last_event_ns.max(time);
        match event {
            Event::Syscall(event) => self.on_syscall(event),
            Event::Fork(event) => self.on_fork(event),
            Event::Exec(event) => self.on_exec(event),
            Event::Exit(event) => self.on_exit(event),
            Event::Join(event) => self.on_join(event),
        }
    }

    pub fn add_lost(&mut self, records: u64) {
        self.counts.lost += records;
    }

    fn process(&mut self, pid: u32, time_ns: u64) -> &mut Process {
        self.processes
            .entry(pid)
            .or_insert_with(|| Process::new(pid, time_ns))
    }

    fn on_syscall(&mut self, event: SyscallEvent) {
        self.counts.calls[event.call.kind()] += 1;
        if event.stack_error != 0 {
            self.counts.stack_errors += 1;
        }
        let failed = event.failed();
        if self.process(event.pid, event.time_ns).exited() {
            // A late record of a process that already ended: count the
            // call, but its address space is gone.
            return;
        }
        let stack = self.stacks.intern(
            RawStack {
                pid: event.pid,
                asid: event.asid,
                frames: event.stack,
                // Only frame-pointer stacks need the stack-pointer word.
                sp_word: match event.source {
                    StackSource::FramePointers => event.sp_word,
                    _ => 0,
                },
                source: event.source,
                stop: event.stop,
            },
            event.time_ns,
        );
        let stats = self.stacks.stats_mut(stack);
        stats.count_call(&event.call);
        if failed {
            stats.failed_calls += 1;
            self.counts.failed += 1;
            return;
        }
        let origin = Origin::Traced(stack);
        let ret = event.ret as u64;
        // A call made before its process's mappings were read from /proc
        // (the read lags the kernel's record): what it mapped is already in
        // the seed, and what it unmapped is already missing from it.
        let before_seed = self
            .process(event.pid, event.time_ns)
            .seeded_at_ns
            .is_some_and(|seeded| event.time_ns < seeded);
        let process = self.process(event.pid, event.time_ns);
        let (change, length) = apply(process, &event.call, ret, origin);
        if let Some(length) = length {
            self.stacks
                .stats_mut(stack)
                .count_size(event.call.kind(), page_round_up(length));
        }
        self.stacks.stats_mut(stack).mapped_bytes += change.mapped;
        self.bytes.mapped += change.mapped;
        if change.mapped > 0 {
            self.deltas.push((stack, change.mapped as i64));
        }
        if before_seed {
            self.reconcile_with_seed(change);
        } else {
            self.account_released(&change);
        }
    }

    /// Sets what a process's program break is, when seeding finds [heap].
    pub fn seed_brk(&mut self, pid: u32, brk: u64) {
        self.process(pid, 0).brk.get_or_insert(brk);
    }

    fn reconcile_with_seed(&mut self, mut change: Change) {
        change.released.retain(|&(origin, bytes)| {
            if origin == Origin::PreExisting {
                // Not pre-existing after all: this call made it.
                self.bytes.preexisting = self.bytes.preexisting.saturating_sub(bytes);
                false
            } else {
                true
            }
        });
        // Unmapped before the read, so absent from it, yet mapped before we
        // traced the process: pre-existing.
        self.bytes.preexisting_unmapped += change.unknown_released;
        self.bytes.preexisting += change.unknown_released;
        change.unknown_released = 0;
        self.account_released(&change);
    }

    fn account_released(&mut self, change: &Change) {
        for &(origin, bytes) in &change.released {
            match origin {
                Origin::Traced(id) => {
                    self.stacks.stats_mut(id).unmapped_bytes += bytes;
                    self.bytes.unmapped += bytes;
                    self.deltas.push((id, -(bytes as i64)));
                }
                Origin::PreExisting => self.bytes.preexisting_unmapped += bytes,
            }
        }
        self.bytes.unknown_unmapped += change.unknown_released;
    }

    fn on_fork(&mut self, event: ProcessEvent) {
        let process = self.process(event.pid, event.time_ns);
        if process.exited() {
            *process = Process::new(event.pid, event.time_ns);
        }
        process.parent_pid = Some(event.parent_pid);
        process.comm = event.comm;
    }

    fn on_join(&mut self, event: ProcessEvent) {
        let process = self.process(event.pid, event.time_ns);
        if process.exited() {
            *process = Process::new(event.pid, event.time_ns);
        }
        process.comm = event.comm;
    }

    fn on_exec(&mut self, event: ProcessEvent) {
        self.end_address_space(event.pid, event.time_ns);
        let process = self.process(event.pid, event.time_ns);
        if process.exited() {
            *process = Process::new(event.pid, event.time_ns);
        }
        process.generation += 1;
        process.comm = event.comm;
    }

    fn on_exit(&mut self, event: ProcessEvent) {
        self.end_address_space(event.pid, event.time_ns);
        self.process(event.pid, event.time_ns).state = ProcessState::Exited {
            time_ns: event.time_ns,
        };
    }

    /// What was live when an address space ended stays in the report as live
    /// at exit; the ledger itself forgets it.
    fn end_address_space(&mut self, pid: u32, time_ns: u64) {
        let space = std::mem::take(&mut self.process(pid, time_ns).space);
        let mut preexisting = 0;
        for region in space.regions() {
            match region.origin {
                Origin::Traced(id) => {
                    let stats = self.stacks.stats_mut(id);
                    stats.live_at_exit_bytes += region.len();
                    stats.live_at_exit_regions += 1;
                }
                Origin::PreExisting => preexisting += region.len(),
            }
        }
        self.process(pid, time_ns).preexisting_live_at_exit += preexisting;
    }

    /// Live bytes and regions per stack: still mapped, or live at exit.
    pub fn live_by_stack(&self) -> BTreeMap<StackId, (u64, u64)> {
        let mut live: BTreeMap<StackId, (u64, u64)> = BTreeMap::new();
        for entry in self.stacks.iter() {
            let stats = entry.stats;
            if stats.live_at_exit_bytes > 0 {
                live.insert(
                    entry.id,
                    (stats.live_at_exit_bytes, stats.live_at_exit_regions),
                );
            }
        }
        for process in self.processes.values() {
            for region in process.space.regions() {
                if let Origin::Traced(id) = region.origin {
                    let entry = live.entry(id).or_default();
                    entry.0 += region.len();
                    entry.1 += 1;
                }
            }
        }
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CallKind, PAGE_SIZE as P};

    fn syscall(pid: u32, call: Call, ret: i64, stack: &[u64]) -> Event {
        Event::Syscall(SyscallEvent::for_test(pid, 1, call, ret, stack))
    }

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
        c.seed_preexisting(7, 0x10000, 0x10000 + 2 * P, 100);
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
        c.seed_preexisting(7, 0x10000, 0x10000 + 4 * P, 0);
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
}
