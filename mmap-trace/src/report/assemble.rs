//! Builds the [`Report`] model from what the session collected.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    Events, FrameRow, GrowthRow, InlinedRow, LiveByKind, ObjectRow, Report, SCHEMA, SizeRow,
    StackRow, Target, Totals, TracerUsage, UNKNOWN, Unwinding,
};
use crate::{
    collector::Collector,
    decode::StackSource,
    growth::{Growing, Role, Thresholds},
    loader::KernelCounters,
    patterns::Pattern,
    resolve::{Frame, ResolvedStack},
    stacks::StackId,
    timeline::Sample,
    unwind::copies::UnwindCounts,
};

pub struct ReportInputs<'a> {
    pub collector: &'a Collector,
    pub resolved: &'a HashMap<StackId, ResolvedStack>,
    pub executables: &'a BTreeMap<u32, String>,
    pub lost_mapping_records: u64,
    pub kernel: KernelCounters,
    pub command: Option<Vec<String>>,
    pub command_status: Option<String>,
    pub stopped_by: String,
    pub unwinder: String,
    pub unwinding: UnwindCounts,
    pub tracer: TracerUsage,
    /// Resident bytes per stack (see `trends`).
    pub resident: &'a HashMap<StackId, u64>,
    pub growth: Vec<Growing>,
    pub thresholds: Thresholds,
    pub patterns: &'a [Pattern],
    pub timeline: Vec<Sample>,
}

pub fn build(inputs: &ReportInputs<'_>) -> Report {
    let collector = inputs.collector;
    let live = collector.live_by_stack();
    let stacks = merge_stacks(inputs, &live);
    let growth = growth_rows(inputs, &stacks);
    let mut live_by_pid: BTreeMap<u32, u64> = BTreeMap::new();
    for (id, raw, _, _) in collector.stacks.iter() {
        if let Some((bytes, _)) = live.get(&id) {
            *live_by_pid.entry(raw.pid).or_default() += bytes;
        }
    }
    let counts = &collector.counts;
    let bytes = &collector.bytes;
    Report {
        schema: SCHEMA,
        version: env!("CARGO_PKG_VERSION"),
        command: inputs.command.clone(),
        command_status: inputs.command_status.clone(),
        stopped_by: inputs.stopped_by.clone(),
        duration_s: collector
            .first_event_ns
            .map_or(0.0, |first| (collector.last_event_ns - first) as f64 / 1e9),
        unwinder: inputs.unwinder.clone(),
        targets: collector
            .processes()
            .map(|p| Target {
                pid: p.pid,
                parent_pid: p.parent_pid,
                comm: p.comm.clone(),
                exe: inputs.executables.get(&p.pid).cloned(),
                exited: p.exited(),
                live_bytes: live_by_pid.get(&p.pid).copied().unwrap_or(0),
            })
            .collect(),
        events: Events {
            mmap: counts.mmap,
            munmap: counts.munmap,
            mremap: counts.mremap,
            brk: counts.brk,
            shmat: counts.shmat,
            shmdt: counts.shmdt,
            failed: counts.failed,
            lost: counts.lost + inputs.kernel.lost_records,
            stack_errors: inputs.kernel.stack_errors.max(counts.stack_errors),
            lost_mapping_records: inputs.lost_mapping_records,
        },
        unwinding: Unwinding {
            in_kernel: inputs.unwinding.in_kernel,
            from_copies: inputs.unwinding.from_copies,
            rules_taught: inputs.unwinding.rules_taught,
        },
        tracer: inputs.tracer.clone(),
        totals: Totals {
            mapped_bytes: bytes.mapped,
            unmapped_bytes: bytes.unmapped,
            live_bytes: live.values().map(|(b, _)| b).sum(),
            live_regions: live.values().map(|(_, r)| r).sum(),
            unknown_unmapped_bytes: bytes.unknown_unmapped,
            preexisting_bytes: bytes.preexisting,
            preexisting_unmapped_bytes: bytes.preexisting_unmapped,
            live_by_kind: live_by_kind(&stacks),
        },
        by_issuer: by_object(&stacks, |s| &s.issuer),
        by_requester: by_object(&stacks, |s| &s.requester),
        stacks,
        growth,
        timeline: inputs.timeline.clone(),
    }
}

/// Raw stacks that resolve to the same frames become one row (they differ
/// in what the kernel walked beyond them, or in the process they ran in).
fn merge_stacks(inputs: &ReportInputs<'_>, live: &BTreeMap<StackId, (u64, u64)>) -> Vec<StackRow> {
    type Key = Vec<(Option<String>, u64, bool)>;
    let mut rows: HashMap<Key, (StackRow, BTreeSet<u32>)> = HashMap::new();
    for (id, raw, _, stats) in inputs.collector.stacks.iter() {
        let Some(resolved) = inputs.resolved.get(&id) else {
            continue;
        };
        let key: Key = resolved
            .frames
            .iter()
            .map(|f| (f.object.clone(), f.offset, f.recovered))
            .chain(std::iter::once((None, resolved.source as u64, false)))
            .collect();
        let (row, pids) = rows.entry(key).or_insert_with(|| {
            let attribution = &resolved.attribution;
            (
                StackRow {
                    issuer: attribution.issuer.clone().unwrap_or_else(|| UNKNOWN.into()),
                    requester: attribution
                        .requester
                        .clone()
                        .unwrap_or_else(|| UNKNOWN.into()),
                    frames: resolved.frames.iter().map(frame_row).collect(),
                    unwinder: match resolved.source {
                        StackSource::FramePointers => "fp",
                        _ => "dwarf",
                    },
                    truncated: resolved.truncated,
                    ..Default::default()
                },
                BTreeSet::new(),
            )
        });
        pids.insert(raw.pid);
        // The same frames, whether or not the walk then went astray.
        row.truncated |= resolved.truncated;
        row.calls += stats.calls();
        row.mmap_calls += stats.mmap_calls;
        row.munmap_calls += stats.munmap_calls;
        row.mremap_calls += stats.mremap_calls;
        row.brk_calls += stats.brk_calls;
        row.shm_calls += stats.shm_calls;
        row.failed_calls += stats.failed_calls;
        row.mapped_bytes += stats.mapped_bytes;
        row.unmapped_bytes += stats.unmapped_bytes;
        for size in &stats.sizes {
            match row
                .sizes
                .iter_mut()
                .find(|s| s.call == size.call && s.bytes == size.bytes)
            {
                Some(existing) => existing.calls += size.calls,
                None => row.sizes.push(SizeRow {
                    call: size.call,
                    bytes: size.bytes,
                    calls: size.calls,
                }),
            }
        }
        if let Some((bytes, regions)) = live.get(&id) {
            row.live_bytes += bytes;
            row.live_regions += regions;
        }
        row.resident_bytes += inputs.resident.get(&id).copied().unwrap_or(0);
    }
    let mut rows: Vec<StackRow> = rows
        .into_values()
        .map(|(mut row, pids)| {
            row.pids = pids.into_iter().collect();
            row.sizes
                .sort_by(|a, b| (b.calls, a.call, a.bytes).cmp(&(a.calls, b.call, b.bytes)));
            row
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.live_bytes, b.mapped_bytes, b.calls)
            .cmp(&(a.live_bytes, a.mapped_bytes, a.calls))
            .then_with(|| a.issuer.cmp(&b.issuer))
            .then_with(|| frames_key(a).cmp(&frames_key(b)))
    });
    rows
}

/// Growth fits as rows, with resident bytes and the hints of matching
/// patterns.
fn growth_rows(inputs: &ReportInputs<'_>, stacks: &[StackRow]) -> Vec<GrowthRow> {
    inputs
        .growth
        .iter()
        .map(|growing| {
            let of_object = |stack: &&StackRow| match growing.role {
                Role::Issuer => stack.issuer == growing.object,
                Role::Requester => stack.requester == growing.object,
            };
            let flagged = inputs.thresholds.flags(growing);
            let mut row = GrowthRow {
                object: growing.object.clone(),
                role: match growing.role {
                    Role::Issuer => "issuer",
                    Role::Requester => "requester",
                },
                bytes_per_min: growing.fit.bytes_per_s * 60.0,
                fit_r2: growing.fit.r2,
                live_bytes: growing.live_bytes,
                resident_bytes: stacks
                    .iter()
                    .filter(of_object)
                    .map(|s| s.resident_bytes)
                    .sum(),
                flagged,
                ..Default::default()
            };
            if flagged {
                for pattern in inputs.patterns {
                    let holds = stacks
                        .iter()
                        .filter(of_object)
                        .any(|stack| stack.live_bytes > 0 && pattern.matches(stack));
                    if holds {
                        row.patterns.push(pattern.name.clone());
                        row.hints.extend(pattern.hints.iter().cloned());
                    }
                }
            }
            row
        })
        .collect()
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

fn frames_key(row: &StackRow) -> Vec<(&str, u64)> {
    row.frames
        .iter()
        .map(|f| (f.object.as_str(), f.offset))
        .collect()
}

fn frame_row(frame: &Frame) -> FrameRow {
    let symbol = frame.symbol.as_ref();
    FrameRow {
        addr: frame.addr,
        object: frame.object.clone().unwrap_or_else(|| UNKNOWN.into()),
        build_id: frame.build_id.clone(),
        offset: frame.offset,
        symbol: symbol.map(|s| s.name.clone()),
        symbol_offset: symbol.map(|s| s.offset),
        file: symbol.and_then(|s| s.file.clone()),
        line: symbol.and_then(|s| s.line),
        inlined: symbol
            .map(|s| {
                s.inlined
                    .iter()
                    .map(|i| InlinedRow {
                        symbol: i.name.clone(),
                        file: i.file.clone(),
                        line: i.line,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        recovered: frame.recovered,
    }
}

/// Sums stack rows per object (issuer or requester), sorted by live bytes.
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
        row.resident_bytes += stack.resident_bytes;
    }
    let mut rows: Vec<ObjectRow> = rows.into_values().collect();
    rows.sort_by(|a, b| {
        (b.live_bytes, b.mapped_bytes)
            .cmp(&(a.live_bytes, a.mapped_bytes))
            .then_with(|| a.object.cmp(&b.object))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribute::Rules,
        decode::{Call, Event, SyscallEvent},
        ledger::PAGE_SIZE as P,
        modules::{Mapping, ModuleMaps},
        resolve::resolve_all,
    };

    /// A process with two objects: /app at 0x1000 and /lib/liba.so at 0x9000.
    fn scenario() -> (Collector, ModuleMaps) {
        let mut modules = ModuleMaps::default();
        for (start, name) in [
            (0x1000, "/app"),
            (0x9000, "/lib/liba.so"),
            (0x20000, "/lib/libc.so.6"),
        ] {
            modules.on_mmap(
                7,
                Mapping {
                    start,
                    end: start + 0x1000,
                    file_offset: 0,
                    name: name.into(),
                    inode: 1,
                    time_ns: 0,
                },
            );
        }
        let mut collector = Collector::default();
        let mut call = |call: Call, ret: i64, stack: &[u64]| {
            collector.handle(Event::Syscall(SyscallEvent::for_test(
                7, 10, call, ret, stack,
            )))
        };
        let mmap = Call::anonymous_mmap;
        // liba leaks 3 pages through libc; the app maps 2 and unmaps them.
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
        (collector, modules)
    }

    #[test]
    fn tables_attribute_live_bytes_to_the_issuer() {
        let (collector, modules) = scenario();
        let resolved = resolve_all(&collector.stacks, &modules, &Rules::default());
        let report = build(&ReportInputs {
            collector: &collector,
            resolved: &resolved,
            executables: &BTreeMap::new(),
            lost_mapping_records: 0,
            kernel: KernelCounters::default(),
            command: None,
            command_status: None,
            stopped_by: "test".into(),
            unwinder: "fp".into(),
            unwinding: UnwindCounts::default(),
            tracer: TracerUsage::default(),
            resident: &HashMap::new(),
            growth: Vec::new(),
            thresholds: Thresholds::default(),
            patterns: &[],
            timeline: Vec::new(),
        });
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
        assert_eq!(sizes, vec![("mmap", P, 1), ("mmap", 2 * P, 1)]);
        assert_eq!(report.targets[0].live_bytes, 3 * P);
        assert!(
            report
                .to_json()
                .contains("\"schema\": \"mmap-trace/report/v1\"")
        );
    }
}
