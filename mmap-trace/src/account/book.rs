//! The books: the one place that turns an event into what it did to live
//! bytes per stack, per object and per process, and samples them over time.
//! A live session and a trace replay both feed events through
//! [`Book::apply`], so both keep the same books.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Range,
};

use super::{
    collector::Collector,
    ledger::Origin,
    live::{LiveByObject, NameId, Role},
    recorder::Recorder,
    recording::{Header, Recording, RecordingEnd},
    timeline::{self, ProcessLive, Sample},
};
use crate::{
    model::{Event, ProcessRss, RawStack, StackId},
    resolve::{Attribution, Resolved},
};

/// Marks an issuer or requester that cannot be named.
pub const UNKNOWN: &str = "[unknown]";

/// What a sample needs from /proc (`session` reads it; tests fake it).
pub trait MemoryProbe {
    /// `pid`'s resident set as the kernel counts it; `None` once it is gone.
    fn rss(&mut self, pid: u32) -> Option<ProcessRss>;
    /// Resident bytes in each of `ranges` (sorted, not overlapping) of
    /// `pid`, in order; `None` if they cannot be read (the process is gone).
    fn resident(&mut self, pid: u32, ranges: &[Range<u64>]) -> Option<Vec<u64>>;
}

/// What a stack holds in one process at a sample.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    resident: u64,
    /// Live bytes it mapped `PROT_NONE`.
    reserved: u64,
}

/// A stack's issuer and requester, as names the books know.
#[derive(Clone, Copy, Debug)]
struct Names {
    issuer: NameId,
    requester: NameId,
}

/// Names stacks the first time they hold bytes.
struct Naming<'b> {
    names: &'b mut Vec<Option<Names>>,
    live: &'b mut LiveByObject,
    recorder: &'b mut dyn Recorder,
}

impl Naming<'_> {
    fn of<E>(
        &mut self,
        id: StackId,
        collector: &Collector,
        attribute: &mut impl FnMut(StackId, &RawStack, u64) -> Result<Attribution, E>,
    ) -> Result<Names, E> {
        if self.names.len() <= id.index() {
            self.names.resize(id.index() + 1, None);
        }
        if let Some(known) = self.names[id.index()] {
            return Ok(known);
        }
        let (raw, first_seen_ns) = collector.stacks.get(id);
        let attribution = attribute(id, raw, first_seen_ns)?;
        self.recorder.stack_seen(id, &attribution);
        let known = Names {
            issuer: self
                .live
                .name(attribution.issuer.as_deref().unwrap_or(UNKNOWN)),
            requester: self
                .live
                .name(attribution.requester.as_deref().unwrap_or(UNKNOWN)),
        };
        self.names[id.index()] = Some(known);
        Ok(known)
    }
}

pub struct Book {
    pub collector: Collector,
    pub live: LiveByObject,
    pub timeline: Vec<Sample>,
    /// Resident bytes each stack holds (see `Region::holder`), at the last
    /// sample, in the processes running then: a stack of processes that
    /// exited holds an unknown amount, and is absent.
    pub resident: HashMap<StackId, u64>,
    /// Indexed by stack id; `None` until the stack first holds bytes.
    names: Vec<Option<Names>>,
    /// Live bytes by object, per process.
    per_process: BTreeMap<u32, ProcessLive>,
    /// The time origin of samples (CLOCK_MONOTONIC ns).
    started_ns: u64,
}

impl Book {
    pub fn new(started_ns: u64) -> Self {
        Book {
            collector: Collector::default(),
            live: LiveByObject::default(),
            timeline: Vec::new(),
            resident: HashMap::new(),
            names: Vec::new(),
            per_process: BTreeMap::new(),
            started_ns,
        }
    }

    /// Applies one event. `attribute(id, stack, first_seen_ns)` names the
    /// issuer and requester of a stack the first time it holds bytes; the
    /// recorder hears of the event first, then of each stack attributed.
    pub fn apply<E>(
        &mut self,
        event: Event,
        recorder: &mut dyn Recorder,
        mut attribute: impl FnMut(StackId, &RawStack, u64) -> Result<Attribution, E>,
    ) -> Result<(), E> {
        recorder.event(&event);
        self.collector.handle(event);
        let Book {
            collector,
            live,
            names,
            per_process,
            ..
        } = self;
        let mut naming = Naming {
            names,
            live,
            recorder,
        };
        for &(id, delta) in collector.last_deltas() {
            let stack_names = naming.of(id, collector, &mut attribute)?;
            let live = &mut *naming.live;
            let pid = collector.stacks.get(id).0.pid;
            let process = per_process.entry(pid).or_insert_with(|| ProcessLive {
                pid,
                ..Default::default()
            });
            process.change(
                live.name_str(stack_names.issuer),
                live.name_str(stack_names.requester),
                delta,
            );
            live.change(Role::Issuer, stack_names.issuer, delta);
            live.change(Role::Requester, stack_names.requester, delta);
        }
        // A stack that made reserved bytes accessible now holds their pages.
        if let Some(committer) = collector.last_committer() {
            naming.of(committer, collector, &mut attribute)?;
        }
        Ok(())
    }

    /// The books, with how the recording began and ended and its stacks
    /// resolved: what a report is built from.
    pub fn into_recording(
        self,
        header: Header,
        resolved: Resolved,
        end: RecordingEnd,
    ) -> Recording {
        Recording {
            header,
            collector: self.collector,
            resolved,
            resident: self.resident,
            timeline: self.timeline,
            end,
        }
    }

    /// Records lost on the way (or that did not decode).
    pub fn lost(&mut self, records: u64, recorder: &mut dyn Recorder) {
        self.collector.add_lost(records);
        recorder.lost(records);
    }

    /// The resident bytes of `[start, start+len)` of `pid` at the last
    /// sample (what a madvise there gives back).
    pub fn resident_in(&self, pid: u32, start: u64, len: u64) -> u64 {
        self.collector
            .process_of(pid)
            .map_or(0, |p| p.space.resident_in(start, len))
    }

    /// Samples live bytes per object and process, and resident memory, at
    /// `now_ns`.
    pub fn sample(
        &mut self,
        now_ns: u64,
        probe: &mut dyn MemoryProbe,
        recorder: &mut dyn Recorder,
    ) {
        let mut sample = timeline::sample(
            now_ns.saturating_sub(self.started_ns) as f64 / 1e9,
            &self.live,
            self.collector.bytes.mapped,
            self.collector.bytes.unmapped,
            Vec::new(),
        );
        sample.processes = self
            .per_process
            .values()
            .filter(|p| p.live_bytes != 0)
            .cloned()
            .collect();
        self.resident.clear();
        let mut probed = Vec::new();
        // Resident and reserved bytes per (pid, stack), for the processes'
        // own rows.
        let mut held: HashMap<(u32, StackId), Held> = HashMap::new();
        let mut rss_of = HashMap::new();
        for process in self.collector.processes_mut().filter(|p| !p.exited()) {
            // A process that is gone or exiting (its exit not applied
            // yet) is not sampled: its pages read as none.
            let Some(rss) = probe.rss(process.pid) else {
                continue;
            };
            let ranges: Vec<Range<u64>> = process
                .space
                .regions()
                .map(|region| region.start..region.end)
                .collect();
            let Some(resident) = probe.resident(process.pid, &ranges) else {
                continue;
            };
            rss_of.insert(process.pid, rss);
            let mut traced = 0;
            for (region, bytes) in process.space.regions_mut().zip(resident) {
                region.resident = bytes;
                if let Origin::Traced(holder) = region.holder() {
                    *self.resident.entry(holder).or_default() += bytes;
                    *sample.resident_by_kind.get_mut(region.kind) += bytes;
                    traced += bytes;
                    held.entry((process.pid, holder)).or_default().resident += bytes;
                }
                if let (Origin::Traced(mapper), true) = (region.origin, region.is_reserved()) {
                    held.entry((process.pid, mapper)).or_default().reserved += region.len();
                }
            }
            probed.push((process.pid, traced));
        }
        // Every stack of a probed process is known, holding pages or not.
        for entry in self.collector.stacks.iter() {
            if probed.iter().any(|&(pid, _)| pid == entry.raw.pid) {
                self.resident.entry(entry.id).or_default();
            }
        }
        self.resident_by_object(&mut sample, &probed);
        self.held_by_process(&mut sample, &held);
        for (pid, traced) in probed {
            if let Some(mut rss) = rss_of.remove(&pid) {
                rss.traced_resident = traced;
                rss.unexplained_anon = rss.rss_anon.saturating_sub(traced);
                sample.rss.push(rss);
                if let Some(process) = self.collector.process_of(pid) {
                    sample.comms.insert(pid, process.comm.clone());
                }
            }
        }
        recorder.sample(&sample);
        self.timeline.push(sample);
    }

    /// Resident and reserved bytes per issuer and requester in each probed
    /// process (`ProcessLive::resident_by_issuer` and the like).
    fn held_by_process(&self, sample: &mut Sample, held: &HashMap<(u32, StackId), Held>) {
        let mut processes: HashMap<u32, &mut ProcessLive> =
            sample.processes.iter_mut().map(|p| (p.pid, p)).collect();
        for (&(pid, stack), bytes) in held {
            let (Some(process), Some(Some(names))) =
                (processes.get_mut(&pid), self.names.get(stack.index()))
            else {
                continue;
            };
            for (map, name, bytes) in [
                (
                    &mut process.resident_by_issuer,
                    names.issuer,
                    bytes.resident,
                ),
                (
                    &mut process.resident_by_requester,
                    names.requester,
                    bytes.resident,
                ),
                (
                    &mut process.reserved_by_issuer,
                    names.issuer,
                    bytes.reserved,
                ),
                (
                    &mut process.reserved_by_requester,
                    names.requester,
                    bytes.reserved,
                ),
            ] {
                if bytes == 0 {
                    continue;
                }
                let object = self.live.name_str(name);
                match map.get_mut(object) {
                    Some(total) => *total += bytes,
                    None => {
                        map.insert(object.to_owned(), bytes);
                    }
                }
            }
        }
    }

    /// Resident bytes per issuer and requester, over the probed processes:
    /// every object such a process holds live bytes of is in, 0 or not.
    fn resident_by_object(&self, sample: &mut Sample, probed: &[(u32, u64)]) {
        for (pid, _) in probed {
            if let Some(process) = self.per_process.get(pid) {
                for object in process.by_issuer.keys() {
                    sample.resident_by_issuer.entry(object.clone()).or_default();
                }
                for object in process.by_requester.keys() {
                    sample
                        .resident_by_requester
                        .entry(object.clone())
                        .or_default();
                }
            }
        }
        for (&stack, &bytes) in &self.resident {
            let Some(Some(names)) = self.names.get(stack.index()) else {
                continue;
            };
            for (map, name) in [
                (&mut sample.resident_by_issuer, names.issuer),
                (&mut sample.resident_by_requester, names.requester),
            ] {
                let object = self.live.name_str(name);
                match map.get_mut(object) {
                    Some(total) => *total += bytes,
                    None => {
                        map.insert(object.to_owned(), bytes);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::model::{Call, PAGE_SIZE as P, SyscallEvent, prot};

    /// A fake /proc: every process has 100 KiB of RSS, and the first page
    /// of every range is resident.
    struct FakeProc;

    impl MemoryProbe for FakeProc {
        fn rss(&mut self, pid: u32) -> Option<ProcessRss> {
            Some(ProcessRss {
                pid,
                vm_rss: 100 << 10,
                rss_anon: 100 << 10,
                ..Default::default()
            })
        }

        fn resident(&mut self, _: u32, ranges: &[Range<u64>]) -> Option<Vec<u64>> {
            Some(ranges.iter().map(|_| P).collect())
        }
    }

    /// Remembers what it heard, in order.
    #[derive(Default)]
    struct Heard(Vec<String>);

    impl Recorder for Heard {
        fn event(&mut self, event: &Event) {
            self.0.push(format!("event {}", event.time_ns()));
        }
        fn stack_seen(&mut self, id: StackId, attribution: &Attribution) {
            self.0.push(format!(
                "stack {} {}",
                id.0,
                attribution.issuer.as_deref().unwrap_or("?")
            ));
        }
        fn lost(&mut self, records: u64) {
            self.0.push(format!("lost {records}"));
        }
        fn sample(&mut self, sample: &Sample) {
            self.0.push(format!("sample {}", sample.live_bytes));
        }
    }

    fn call(time_ns: u64, call: Call, ret: i64, stack: &[u64]) -> Event {
        Event::Syscall(SyscallEvent::for_test(7, time_ns, call, ret, stack))
    }

    fn mmap(time_ns: u64, len: u64, addr: i64, stack: &[u64]) -> Event {
        call(time_ns, Call::anonymous_mmap(len), addr, stack)
    }

    fn name_by_first_frame(_: StackId, raw: &RawStack, _: u64) -> Result<Attribution, Infallible> {
        Ok(Attribution {
            issuer: Some(format!("lib{}", raw.frames[0])),
            requester: None,
        })
    }

    #[test]
    fn events_feed_live_bytes_per_object_and_the_recorder_in_order() {
        let mut book = Book::new(0);
        let mut heard = Heard::default();
        let apply = |book: &mut Book, heard: &mut Heard, event| {
            book.apply(event, heard, name_by_first_frame).unwrap()
        };
        apply(&mut book, &mut heard, mmap(10, 2 * P, 0x10000, &[1]));
        apply(&mut book, &mut heard, mmap(20, P, 0x20000, &[1]));
        apply(&mut book, &mut heard, mmap(30, P, 0x30000, &[2]));
        book.lost(3, &mut heard);
        book.sample(1_000_000_000, &mut FakeProc, &mut heard);
        assert_eq!(
            heard.0,
            [
                "event 10",
                "stack 0 lib1",
                "event 20",
                "event 30",
                "stack 1 lib2",
                "lost 3",
                "sample 16384"
            ]
        );
        let live: BTreeMap<&str, i64> = book.live.live(Role::Issuer).collect();
        assert_eq!(
            live,
            BTreeMap::from([("lib1", 3 * P as i64), ("lib2", P as i64)])
        );
        let requesters: Vec<_> = book.live.live(Role::Requester).collect();
        assert_eq!(requesters, [(UNKNOWN, 4 * P as i64)]);
        let sample = &book.timeline[0];
        assert_eq!(sample.time_s, 1.0);
        assert_eq!(sample.processes[0].by_issuer["lib1"], 3 * P as i64);
        assert_eq!(sample.rss[0].traced_resident, 3 * P, "3 ranges");
        assert_eq!(sample.rss[0].unexplained_anon, (100 << 10) - 3 * P);
        assert_eq!(sample.resident_by_issuer["lib1"], 2 * P);
        assert_eq!(sample.resident_by_kind.private_anon, 3 * P);
        assert_eq!(book.resident[&StackId(0)], 2 * P);
        assert_eq!(book.collector.counts.lost, 3);
    }

    /// 16 pages reserved (PROT_NONE), and the 2 at 0x100000 made
    /// accessible.
    fn reserve_and_commit() -> (Call, Call) {
        let reserve = Call::Mmap {
            addr: 0,
            len: 16 * P,
            prot: prot::NONE,
            flags: 0x22,
            fd: -1,
            offset: 0,
        };
        let commit = Call::Mprotect {
            addr: 0x100000,
            len: 2 * P,
            prot: prot::READ | prot::WRITE,
        };
        (reserve, commit)
    }

    #[test]
    fn committed_pages_belong_to_the_committing_stack() {
        let mut book = Book::new(0);
        let (reserve, commit) = reserve_and_commit();
        for event in [call(10, reserve, 0x100000, &[1]), call(20, commit, 0, &[2])] {
            book.apply(event, &mut (), name_by_first_frame).unwrap();
        }
        book.sample(1_000_000_000, &mut FakeProc, &mut ());
        let sample = &book.timeline[0];
        // Two regions (committed, reserved): one page each.
        assert_eq!(sample.resident_by_issuer["lib2"], P, "the committed range");
        assert_eq!(sample.resident_by_issuer["lib1"], P);
        let holdings = book.collector.holdings();
        assert_eq!(holdings[&StackId(0)].reserved, 14 * P);
        assert_eq!(holdings[&StackId(1)].accessible, 2 * P);
    }

    #[test]
    fn each_process_has_its_resident_and_reserved_bytes_per_object_and_its_name() {
        let mut book = Book::new(0);
        book.collector.add_target(7, "server", 0);
        let (reserve, commit) = reserve_and_commit();
        for event in [
            call(10, reserve, 0x100000, &[1]),
            call(20, commit, 0, &[2]),
            mmap(30, 3 * P, 0x200000, &[2]),
        ] {
            book.apply(event, &mut (), name_by_first_frame).unwrap();
        }
        book.sample(1_000_000_000, &mut FakeProc, &mut ());
        let sample = &book.timeline[0];
        assert_eq!(sample.comms, BTreeMap::from([(7, "server".to_owned())]));
        let process = &sample.processes[0];
        assert_eq!(process.pid, 7);
        // Three regions (committed, reserved, mapped): one page each; the
        // committed one is lib2's.
        assert_eq!(
            process.resident_by_issuer,
            BTreeMap::from([("lib1".to_owned(), P), ("lib2".to_owned(), 2 * P)])
        );
        assert_eq!(
            process.resident_by_requester,
            BTreeMap::from([(UNKNOWN.to_owned(), 3 * P)])
        );
        assert_eq!(
            process.reserved_by_issuer,
            BTreeMap::from([("lib1".to_owned(), 14 * P)]),
            "lib2 reserved nothing: it is left out"
        );
        assert_eq!(process.reserved_by_requester[UNKNOWN], 14 * P);
    }

    #[test]
    fn an_attribution_that_fails_stops_the_event() {
        let mut book = Book::new(0);
        let result = book.apply(mmap(10, P, 0x10000, &[1]), &mut (), |id, _, _| {
            Err(format!("stack {} unknown", id.0))
        });
        assert_eq!(result, Err("stack 0 unknown".to_owned()));
    }
}
