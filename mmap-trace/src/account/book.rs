//! The books: the one place that turns an event into what it did to live
//! bytes per stack, per object and per process, and samples them over time.
//! A live session and a trace replay both feed events through
//! [`Book::apply`], so both keep the same books.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ops::Range,
};

use super::{
    collector::Collector,
    growth::{GrowthTracker, NameId, Role},
    ledger::Origin,
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
    /// Resident bytes in each of `ranges` of `pid`, in order; `None` if
    /// they cannot be read (the process is gone).
    fn resident(&mut self, pid: u32, ranges: &[Range<u64>]) -> Option<Vec<u64>>;
}

/// A stack's attribution, and its names as the growth fits know them.
#[derive(Clone, Debug)]
struct Attributed {
    issuer: NameId,
    requester: NameId,
}

pub struct Book {
    pub collector: Collector,
    pub growth: GrowthTracker,
    pub timeline: Vec<Sample>,
    /// Resident bytes in each stack's live ranges, at the last sample its
    /// process was alive for.
    pub resident: HashMap<StackId, u64>,
    /// Indexed by stack id; `None` until the stack first holds bytes.
    attributed: Vec<Option<Attributed>>,
    /// Live bytes by object, per process.
    per_process: BTreeMap<u32, ProcessLive>,
    /// The time origin of samples (CLOCK_MONOTONIC ns).
    started_ns: u64,
}

impl Book {
    pub fn new(started_ns: u64) -> Self {
        Book {
            collector: Collector::default(),
            growth: GrowthTracker::default(),
            timeline: Vec::new(),
            resident: HashMap::new(),
            attributed: Vec::new(),
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
        let time_ns = event.time_ns();
        self.collector.handle(event);
        let Book {
            collector,
            growth,
            attributed,
            per_process,
            ..
        } = self;
        for &(id, delta) in collector.last_deltas() {
            if attributed.len() <= id.index() {
                attributed.resize(id.index() + 1, None);
            }
            let names = match &attributed[id.index()] {
                Some(names) => names.clone(),
                None => {
                    let (raw, first_seen_ns) = collector.stacks.get(id);
                    let attribution = attribute(id, raw, first_seen_ns)?;
                    recorder.stack_seen(id, &attribution);
                    let names = Attributed {
                        issuer: growth.name(attribution.issuer.as_deref().unwrap_or(UNKNOWN)),
                        requester: growth.name(attribution.requester.as_deref().unwrap_or(UNKNOWN)),
                    };
                    attributed[id.index()] = Some(names.clone());
                    names
                }
            };
            let pid = collector.stacks.get(id).0.pid;
            let process = per_process.entry(pid).or_insert_with(|| ProcessLive {
                pid,
                ..Default::default()
            });
            process.change(
                growth.name_str(names.issuer),
                growth.name_str(names.requester),
                delta,
            );
            growth.change(time_ns, Role::Issuer, names.issuer, delta);
            growth.change(time_ns, Role::Requester, names.requester, delta);
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
            growth: self.growth,
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

    /// Samples live bytes per object and process, and resident memory, at
    /// `now_ns`.
    pub fn sample(
        &mut self,
        now_ns: u64,
        probe: &mut dyn MemoryProbe,
        recorder: &mut dyn Recorder,
    ) {
        let running: Vec<u32> = self
            .collector
            .processes()
            .filter(|p| !p.exited())
            .map(|p| p.pid)
            .collect();
        let traced_resident = self.measure_residency(probe, &running);
        let rss = running.iter().filter_map(|&pid| probe.rss(pid)).collect();
        let mut sample = timeline::sample(
            now_ns.saturating_sub(self.started_ns) as f64 / 1e9,
            &self.growth,
            self.collector.bytes.mapped,
            self.collector.bytes.unmapped,
            rss,
        );
        sample.processes = self
            .per_process
            .values()
            .filter(|p| p.live_bytes != 0)
            .cloned()
            .collect();
        for rss in &mut sample.rss {
            rss.traced_resident = traced_resident.get(&rss.pid).copied().unwrap_or(0);
            rss.unexplained_anon = rss.rss_anon.saturating_sub(rss.traced_resident);
        }
        recorder.sample(&sample);
        self.timeline.push(sample);
    }

    /// Resident bytes per stack in the live ranges of running processes
    /// (stacks of exited processes keep their last figure); returns the
    /// traced resident bytes per process.
    fn measure_residency(
        &mut self,
        probe: &mut dyn MemoryProbe,
        running: &[u32],
    ) -> HashMap<u32, u64> {
        let running_pids: HashSet<u32> = running.iter().copied().collect();
        let stacks = &self.collector.stacks;
        self.resident
            .retain(|id, _| !running_pids.contains(&stacks.get(*id).0.pid));
        let mut per_process = HashMap::new();
        for process in self
            .collector
            .processes()
            .filter(|p| running_pids.contains(&p.pid))
        {
            let (ids, ranges): (Vec<StackId>, Vec<Range<u64>>) = process
                .space
                .regions()
                .filter_map(|region| match region.origin {
                    Origin::Traced(id) => Some((id, region.start..region.end)),
                    Origin::PreExisting => None,
                })
                .unzip();
            let Some(resident) = probe.resident(process.pid, &ranges) else {
                continue;
            };
            for (id, bytes) in ids.into_iter().zip(&resident) {
                *self.resident.entry(id).or_default() += bytes;
            }
            per_process.insert(process.pid, resident.iter().sum());
        }
        per_process
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::model::{Call, PAGE_SIZE as P, SyscallEvent};

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

    fn mmap(time_ns: u64, len: u64, addr: i64, stack: &[u64]) -> Event {
        Event::Syscall(SyscallEvent::for_test(
            7,
            time_ns,
            Call::anonymous_mmap(len),
            addr,
            stack,
        ))
    }

    fn name_by_first_frame(_: StackId, raw: &RawStack, _: u64) -> Result<Attribution, Infallible> {
        Ok(Attribution {
            issuer: Some(format!("lib{}", raw.frames[0])),
            requester: None,
        })
    }

    #[test]
    fn events_feed_growth_per_object_and_the_recorder_in_order() {
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
        let live: BTreeMap<&str, i64> = book.growth.live(Role::Issuer).collect();
        assert_eq!(
            live,
            BTreeMap::from([("lib1", 3 * P as i64), ("lib2", P as i64)])
        );
        let requesters: Vec<_> = book.growth.live(Role::Requester).collect();
        assert_eq!(requesters, [(UNKNOWN, 4 * P as i64)]);
        let sample = &book.timeline[0];
        assert_eq!(sample.time_s, 1.0);
        assert_eq!(sample.processes[0].by_issuer["lib1"], 3 * P as i64);
        assert_eq!(sample.rss[0].traced_resident, 3 * P, "3 ranges");
        assert_eq!(sample.rss[0].unexplained_anon, (100 << 10) - 3 * P);
        assert_eq!(book.resident[&StackId(0)], 2 * P);
        assert_eq!(book.collector.counts.lost, 3);
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
