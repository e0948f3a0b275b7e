//! Builds the [`Report`] model from a recording.

use std::collections::BTreeMap;

use super::{
    ByKind, Events, KindRow, LiveByKind, ObjectRow, Report, SCHEMA, StackRow, Target, Totals,
    Unwinding, growth, patterns::Pattern, stacks,
};
use crate::{
    account::{Recording, Thresholds},
    model::{CallKind, MemoryKind},
};

/// When growth is judged, and when it grows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judging {
    pub thresholds: Thresholds,
    /// The shortest window of running processes that gets a verdict.
    pub min_window_s: f64,
    /// The fewest samples of running processes that get a verdict.
    pub min_samples: usize,
}

impl Default for Judging {
    fn default() -> Self {
        Judging {
            thresholds: Thresholds::default(),
            min_window_s: 10.0,
            min_samples: 5,
        }
    }
}

pub fn build(recording: &Recording, patterns: &[Pattern], judging: &Judging) -> Report {
    let collector = &recording.collector;
    let end = &recording.end;
    let holdings = collector.holdings();
    let stacks = stacks::merge(recording, &holdings);
    let verdicts = growth::verdicts(&recording.timeline, &stacks, patterns, judging);
    let mut live_by_pid: BTreeMap<u32, u64> = BTreeMap::new();
    for entry in collector.stacks.iter() {
        if let Some(holding) = holdings.get(&entry.id) {
            *live_by_pid.entry(entry.raw.pid).or_default() += holding.live;
        }
    }
    let last = recording.timeline.last();
    let counts = &collector.counts;
    Report {
        schema: SCHEMA,
        version: env!("CARGO_PKG_VERSION"),
        command: recording.header.command.clone(),
        command_status: end.command_status,
        stopped_by: end.stopped_by,
        complete: counts.lost + end.kernel.lost_records + end.malformed + end.out_of_order == 0,
        duration_s: collector
            .first_event_ns
            .map_or(0.0, |first| (collector.last_event_ns - first) as f64 / 1e9),
        unwinder: recording.header.unwinder,
        targets: collector
            .processes()
            .map(|p| Target {
                pid: p.pid,
                parent_pid: p.parent_pid,
                comm: p.comm.clone(),
                exe: end.executables.get(&p.pid).cloned(),
                exited: p.exited(),
                live_bytes: live_by_pid.get(&p.pid).copied().unwrap_or(0),
                rss_bytes: last
                    .and_then(|s| s.rss.iter().find(|r| r.pid == p.pid))
                    .map(|r| r.vm_rss)
                    .filter(|_| !p.exited()),
            })
            .collect(),
        growth_judged: verdicts.judged,
        growth_note: verdicts.note,
        growth: verdicts.rows,
        rss_growth: verdicts.rss,
        events: Events {
            mmap: counts.calls[CallKind::Mmap],
            munmap: counts.calls[CallKind::Munmap],
            mremap: counts.calls[CallKind::Mremap],
            brk: counts.calls[CallKind::Brk],
            shmat: counts.calls[CallKind::Shmat],
            shmdt: counts.calls[CallKind::Shmdt],
            mprotect: counts.calls[CallKind::Mprotect],
            madvise: counts.calls[CallKind::Madvise],
            failed: counts.failed,
            lost: counts.lost + end.kernel.lost_records,
            stack_errors: end.kernel.stack_errors.max(counts.stack_errors),
            lost_mapping_records: end.lost_mapping_records,
            out_of_order: end.out_of_order,
            malformed: end.malformed,
        },
        unwinding: Unwinding {
            in_kernel: end.unwinding.in_kernel,
            from_copies: end.unwinding.from_copies,
            rules_taught: end.unwinding.rules_taught,
        },
        tracer: end.tracer.clone(),
        totals: totals(recording, &holdings, &stacks),
        by_issuer: by_object(&stacks, |s| &s.issuer),
        by_requester: by_object(&stacks, |s| &s.requester),
        by_python_caller: stacks::by_python_caller(&stacks),
        stacks,

        timeline: recording.timeline.clone(),
    }
}

fn totals(
    recording: &Recording,
    holdings: &BTreeMap<crate::model::StackId, crate::account::collector::Holding>,
    stacks: &[StackRow],
) -> Totals {
    let collector = &recording.collector;
    let bytes = &collector.bytes;
    // Resident figures are those of the last sample, if a process ran then.
    let resident = recording
        .timeline
        .last()
        .filter(|s| !s.rss.is_empty())
        .map(|s| s.resident_by_kind);
    let kinds = collector.kind_totals();
    let kind_row = |kind: MemoryKind| {
        let held = kinds.get(kind);
        KindRow {
            live_bytes: held.live,
            reserved_bytes: held.reserved,
            accessible_bytes: held.accessible,
            resident_bytes: resident.map(|r| r.get(kind)),
        }
    };
    Totals {
        mapped_bytes: bytes.mapped,
        unmapped_bytes: bytes.unmapped,
        live_bytes: holdings.values().map(|h| h.live).sum(),
        live_regions: holdings.values().map(|h| h.regions).sum(),
        reserved_bytes: holdings.values().map(|h| h.reserved).sum(),
        accessible_bytes: holdings.values().map(|h| h.accessible).sum(),
        resident_bytes: resident.map(|r| r.total()),
        unknown_unmapped_bytes: bytes.unknown_unmapped,
        preexisting_bytes: bytes.preexisting,
        preexisting_unmapped_bytes: bytes.preexisting_unmapped,
        live_by_kind: live_by_kind(stacks),
        by_kind: ByKind {
            private_anon: kind_row(MemoryKind::PrivateAnon),
            shared: kind_row(MemoryKind::Shared),
            file: kind_row(MemoryKind::File),
            heap: kind_row(MemoryKind::Heap),
        },
    }
}

/// A stack's calls are of one kind (one call site).
fn live_by_kind(stacks: &[StackRow]) -> LiveByKind {
    let mut kinds = LiveByKind::default();
    for stack in stacks {
        let kind = if stack.brk_calls > 0 {
            &mut kinds.brk
        } else if stack.shm_calls > 0 {
            &mut kinds.shm
        } else {
            &mut kinds.mmap
        };
        *kind += stack.live_bytes;
    }
    kinds
}

/// Sums stack rows per object (issuer or requester), sorted by resident
/// bytes, then live bytes.
fn by_object(stacks: &[StackRow], object: impl Fn(&StackRow) -> &String) -> Vec<ObjectRow> {
    let mut rows: BTreeMap<&str, ObjectRow> = BTreeMap::new();
    for stack in stacks {
        let name = object(stack);
        let row = rows.entry(name).or_insert_with(|| ObjectRow {
            object: name.clone(),
            ..Default::default()
        });
        row.calls += stack.calls;
        row.mapped_bytes += stack.mapped_bytes;
        row.unmapped_bytes += stack.unmapped_bytes;
        row.live_bytes += stack.live_bytes;
        row.live_regions += stack.live_regions;
        row.reserved_bytes += stack.reserved_bytes;
        row.accessible_bytes += stack.accessible_bytes;
        if let Some(resident) = stack.resident_bytes {
            *row.resident_bytes.get_or_insert(0) += resident;
        }
    }
    let mut rows: Vec<ObjectRow> = rows.into_values().collect();
    rows.sort_by(|a, b| {
        (b.resident_bytes.unwrap_or(0), b.live_bytes, b.mapped_bytes)
            .cmp(&(a.resident_bytes.unwrap_or(0), a.live_bytes, a.mapped_bytes))
            .then_with(|| a.object.cmp(&b.object))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        account::{Book, Header, RecordingEnd},
        model::{
            Call, Event, KernelCounters, PAGE_SIZE as P, StoppedBy, SyscallEvent, TracerUsage,
            UnwindCounts, UnwindMode,
        },
        resolve::{AttributionRules, CodeFiles, ModuleMaps, NewMapping, place, resolve_all},
    };

    /// A process with /app at 0x1000, /lib/liba.so at 0x9000 and libc at
    /// 0x20000: liba leaks 3 pages through libc; the app maps 2 and unmaps
    /// them.
    fn scenario() -> Recording {
        let mut modules = ModuleMaps::default();
        for (start, name) in [
            (0x1000, "/app"),
            (0x9000, "/lib/liba.so"),
            (0x20000, "/lib/libc.so.6"),
        ] {
            modules.on_mmap(
                7,
                NewMapping {
                    start,
                    end: start + 0x1000,
                    file_offset: 0,
                    name: std::path::Path::new(name),
                    inode: 1,
                    time_ns: 0,
                },
            );
        }
        let rules = AttributionRules::default();
        let mut code = CodeFiles::default();
        let mut book = Book::new(0);
        let mut call = |call: Call, ret: i64, stack: &[u64]| {
            let event = Event::Syscall(SyscallEvent::for_test(7, 10, call, ret, stack));
            book.apply(event, &mut (), |_, raw, time| {
                Ok::<_, std::convert::Infallible>(place::attribute_raw(
                    raw, time, &modules, &rules, &mut code,
                ))
            })
            .unwrap();
        };
        let mmap = Call::anonymous_mmap;
        call(mmap(P), 0x100000, &[0x20010, 0x9010, 0x1010]);
        call(mmap(2 * P), 0x200000, &[0x20010, 0x9010, 0x1010]);
        call(mmap(2 * P), 0x300000, &[0x20010, 0x1020]);
        call(
            Call::Munmap {
                addr: 0x300000,
                len: 2 * P,
            },
            0,
            &[0x20020, 0x1030],
        );
        let resolved = resolve_all(
            &book.collector.stacks,
            &modules,
            &rules,
            &Default::default(),
        );
        let header = Header {
            format: "mmap-trace/trace".into(),
            version: 1,
            tool: "test".into(),
            command: None,
            unwinder: UnwindMode::Fp,
            interposers: Vec::new(),
        };
        let end = RecordingEnd {
            stopped_by: StoppedBy::TargetExit,
            command_status: None,
            time_ns: 10,
            kernel: KernelCounters::default(),
            unwinding: UnwindCounts::default(),
            tracer: TracerUsage::default(),
            lost_mapping_records: 0,
            out_of_order: 0,
            malformed: 0,
            executables: BTreeMap::new(),
        };
        book.into_recording(header, resolved, end)
    }

    #[test]
    fn tables_attribute_live_bytes_to_the_issuer() {
        let report = build(&scenario(), &[], &Judging::default());
        assert_eq!(report.totals.mapped_bytes, 5 * P);
        assert_eq!(report.totals.unmapped_bytes, 2 * P);
        assert_eq!(report.totals.live_bytes, 3 * P);
        assert_eq!(report.totals.live_regions, 2);
        let issuer = &report.by_issuer[0];
        assert_eq!(issuer.object, "/lib/liba.so");
        assert_eq!(
            (issuer.calls, issuer.live_bytes, issuer.live_regions),
            (2, 3 * P, 2)
        );
        assert_eq!(report.by_issuer[1].object, "/app");
        assert_eq!(report.by_issuer[1].unmapped_bytes, 2 * P);
        assert_eq!(report.by_requester[0].object, "/lib/liba.so");
        let top = &report.stacks[0];
        assert_eq!(top.mmap_calls, 2, "the two liba calls share one stack");
        assert_eq!(top.frames.len(), 3);
        assert_eq!(top.frames[1].object, "/lib/liba.so");
        assert_eq!(top.frames[1].offset, 0x10);
        let sizes: Vec<_> = top
            .sizes
            .iter()
            .map(|s| (s.call, s.bytes, s.calls))
            .collect();
        assert_eq!(
            sizes,
            vec![(CallKind::Mmap, P, 1), (CallKind::Mmap, 2 * P, 1)]
        );
        assert_eq!(report.targets[0].live_bytes, 3 * P);
        let json = report.to_json();
        assert!(json.contains("\"schema\": \"mmap-trace/report/v1\""));
        assert!(json.contains("\"unwinder\": \"fp\""), "{json}");
        assert!(json.contains("\"stop_reason\": \"complete\""), "{json}");
        assert!(json.contains("\"stopped_by\": \"target exit\""), "{json}");
        assert!(json.contains("\"call\": \"mmap\""), "{json}");
        assert!(!report.growth_judged, "no samples: nothing judged");
        assert_eq!(report.totals.resident_bytes, None, "no sample: unknown");
    }
}
