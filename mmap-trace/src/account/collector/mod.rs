//! Applies decoded events to the per-process ledgers and the stack table.
//!
//! Pure: no kernel, no files. The session feeds it; the report reads it.

mod calls;
mod holdings;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use holdings::{Holding, KindTotals};

use super::ledger::{AddressSpace, Attrs, Change, Origin};
use crate::model::{
    CallCounts, Event, MemoryKind, ProcessEvent, RawStack, StackId, StackSource, StackTable,
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
    /// The stack of the last event, if it committed bytes (an mprotect):
    /// it now holds pages, and wants attributing.
    committer: Option<StackId>,
    /// Live, reserved and accessible bytes by kind, of address spaces that
    /// ended (exit, exec).
    pub ended_by_kind: KindTotals,
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
    /// /proc/PID/maps at `read_at_ns`, with its protection and kind. Traced
    /// calls made before that moment whose records come later are
    /// reconciled with it (see `on_syscall`).
    pub fn seed_preexisting(
        &mut self,
        pid: u32,
        (start, end): (u64, u64),
        (prot, kind): (u32, MemoryKind),
        read_at_ns: u64,
    ) {
        let process = self.process(pid, 0);
        process.seeded_at_ns = Some(read_at_ns);
        let attrs = Attrs {
            origin: Origin::PreExisting,
            prot,
            kind,
        };
        let added = process.space.fill(start, end, attrs);
        self.bytes.preexisting += added;
    }

    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.processes.values()
    }

    pub fn processes_mut(&mut self) -> impl Iterator<Item = &mut Process> {
        self.processes.values_mut()
    }

    pub fn process_of(&self, pid: u32) -> Option<&Process> {
        self.processes.get(&pid)
    }

    /// Live-byte changes, by stack, of the last event handled.
    pub fn last_deltas(&self) -> &[(StackId, i64)] {
        &self.deltas
    }

    /// The stack of the last event, if it made reserved bytes accessible.
    pub fn last_committer(&self) -> Option<StackId> {
        self.committer
    }

    pub fn handle(&mut self, event: Event) {
        self.deltas.clear();
        self.committer = None;
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
                python: event.python,
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
        let ret = event.ret as u64;
        // A call made before its process's mappings were read from /proc
        // (the read lags the kernel's record): what it mapped is already in
        // the seed, and what it unmapped is already missing from it.
        let before_seed = self
            .process(event.pid, event.time_ns)
            .seeded_at_ns
            .is_some_and(|seeded| event.time_ns < seeded);
        let process = self.process(event.pid, event.time_ns);
        let effect = calls::apply(process, &event.call, ret, stack, event.shmem);
        let stats = self.stacks.stats_mut(stack);
        if let Some(size) = effect.size {
            stats.count_size(event.call.kind(), page_round_up(size));
        }
        if let Some(protected) = &effect.protected {
            stats.committed_bytes += protected.committed;
            stats.decommitted_bytes += protected.decommitted.iter().map(|(_, b)| b).sum::<u64>();
            if protected.committed > 0 {
                self.committer = Some(stack);
            }
        }
        if let Some(advised) = &effect.advised {
            stats.advised_bytes += advised.bytes;
            // What the session measured before the pages went (the ledger's
            // own estimate is not in a trace), else the ledger's.
            stats.resident_returned_bytes +=
                event.resident_returned.unwrap_or(advised.resident_returned);
        }
        let change = effect.change;
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
        // Seeded bytes this call replaced, up to what it mapped itself, were
        // its own mapping, read into the seed: not pre-existing after all.
        // Beyond that (all of an unmap's), they were there before the call
        // and are released as pre-existing: the read came before the call.
        let mut made_here = change.mapped;
        for (origin, bytes) in &mut change.released {
            if *origin == Origin::PreExisting {
                let own = (*bytes).min(made_here);
                made_here -= own;
                *bytes -= own;
                self.bytes.preexisting = self.bytes.preexisting.saturating_sub(own);
            }
        }
        change.released.retain(|&(_, bytes)| bytes > 0);
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
                    if region.is_reserved() {
                        stats.reserved_at_exit_bytes += region.len();
                    }
                    self.ended_by_kind.add_region(region);
                }
                Origin::PreExisting => preexisting += region.len(),
            }
            if let (Origin::Traced(holder), false) = (region.holder(), region.is_reserved()) {
                self.stacks.stats_mut(holder).accessible_at_exit_bytes += region.len();
            }
        }
        self.process(pid, time_ns).preexisting_live_at_exit += preexisting;
    }
}
