//! Stack rows: raw stacks that resolve to the same frames, merged, with
//! their frames named.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{FrameRow, InlinedRow, PythonCallerRow, SizeRow, StackRow};
use crate::{
    account::{Recording, UNKNOWN, collector::Holding},
    model::{CallKind, FrameKind, ObjectId, StackId, StackSource},
    resolve::{Frame, Resolved},
};

/// Raw stacks that resolve to the same frames become one row (they differ
/// in what the kernel walked beyond them, or in the process they ran in).
/// Sorted by live bytes, then mapped bytes and calls.
pub(super) fn merge(recording: &Recording, holdings: &BTreeMap<StackId, Holding>) -> Vec<StackRow> {
    type Key<'a> = (Vec<FrameKey<'a>>, StackSource);
    let resolved = &recording.resolved;
    let mut rows: HashMap<Key, (StackRow, BTreeSet<u32>)> = HashMap::new();
    for entry in recording.collector.stacks.iter() {
        let Some(stack) = resolved.stacks.get(&entry.id) else {
            continue;
        };
        let key: Key = (
            stack.frames.iter().map(FrameKey::of).collect(),
            stack.source,
        );
        let (row, pids) = rows.entry(key).or_insert_with(|| {
            let attribution = &stack.attribution;
            let row = StackRow::new(
                attribution.issuer.clone().unwrap_or_else(|| UNKNOWN.into()),
                attribution
                    .requester
                    .clone()
                    .unwrap_or_else(|| UNKNOWN.into()),
                stack.source,
                stack.stop,
                stack
                    .frames
                    .iter()
                    .map(|f| frame_row(f, resolved))
                    .collect(),
            );
            (row, BTreeSet::new())
        });
        pids.insert(entry.raw.pid);
        row.python_truncated |= stack.python_cut;

        // The same frames, whether or not the walk then went astray: the
        // row is cut if any of its stacks is, for the first reason seen.
        if row.stop_reason.is_complete() {
            row.stop_reason = stack.stop;
        }
        row.truncated = !row.stop_reason.is_complete();
        let stats = entry.stats;
        row.calls += stats.calls.total();
        row.mmap_calls += stats.calls[CallKind::Mmap];
        row.munmap_calls += stats.calls[CallKind::Munmap];
        row.mremap_calls += stats.calls[CallKind::Mremap];
        row.brk_calls += stats.calls[CallKind::Brk];
        row.shm_calls += stats.calls[CallKind::Shmat] + stats.calls[CallKind::Shmdt];
        row.mprotect_calls += stats.calls[CallKind::Mprotect];
        row.madvise_calls += stats.calls[CallKind::Madvise];
        row.failed_calls += stats.failed_calls;
        row.mapped_bytes += stats.mapped_bytes;
        row.unmapped_bytes += stats.unmapped_bytes;
        row.committed_bytes += stats.committed_bytes;
        row.decommitted_bytes += stats.decommitted_bytes;
        row.advised_bytes += stats.advised_bytes;
        row.resident_returned_bytes += stats.resident_returned_bytes;
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
        if let Some(holding) = holdings.get(&entry.id) {
            row.live_bytes += holding.live;
            row.live_regions += holding.regions;
            row.reserved_bytes += holding.reserved;
            row.accessible_bytes += holding.accessible;
        }
        if let Some(&resident) = recording.resident.get(&entry.id) {
            *row.resident_bytes.get_or_insert(0) += resident;
        }
    }
    let mut rows: Vec<StackRow> = rows
        .into_values()
        .map(|(mut row, pids)| {
            row.pids = pids.into_iter().collect();
            row.sizes.sort_by(|a, b| {
                (b.calls, a.call.name(), a.bytes).cmp(&(a.calls, b.call.name(), b.bytes))
            });
            row
        })
        .collect();
    // What the process holds in memory first, then what it holds mapped.
    rows.sort_by(|a, b| {
        (
            b.resident_bytes.unwrap_or(0),
            b.live_bytes,
            b.mapped_bytes,
            b.calls,
        )
            .cmp(&(
                a.resident_bytes.unwrap_or(0),
                a.live_bytes,
                a.mapped_bytes,
                a.calls,
            ))
            .then_with(|| a.issuer.cmp(&b.issuer))
            .then_with(|| frames_key(a).cmp(&frames_key(b)))
    });
    rows
}

/// What makes two frames the same frame. Machine code is its object and
/// offset (not its address, so that processes with other load addresses
/// share rows); a Python or JIT frame is what it is named: code objects
/// live at other addresses in other processes.
#[derive(PartialEq, Eq, Hash)]
enum FrameKey<'a> {
    Native {
        object: Option<ObjectId>,
        offset: u64,
        recovered: bool,
    },
    Named {
        kind: FrameKind,
        name: Option<&'a str>,
        file: Option<&'a str>,
        line: Option<u32>,
    },
}

impl<'a> FrameKey<'a> {
    fn of(frame: &'a Frame) -> Self {
        let symbol = frame.symbol.as_ref();
        match frame.kind {
            FrameKind::Native => FrameKey::Native {
                object: frame.object,
                offset: frame.offset,
                recovered: frame.recovered,
            },
            kind => FrameKey::Named {
                kind,
                name: symbol.map(|s| s.name.as_str()),
                file: symbol.and_then(|s| s.file.as_deref()),
                line: symbol.and_then(|s| s.line),
            },
        }
    }
}

fn frames_key(row: &StackRow) -> Vec<(&str, u64)> {
    row.frames
        .iter()
        .map(|f| (f.object.as_str(), f.offset))
        .collect()
}

fn frame_row(frame: &Frame, resolved: &Resolved) -> FrameRow {
    let symbol = frame.symbol.as_ref();
    let object = frame.object.map(|id| resolved.object(id));
    FrameRow {
        kind: frame.kind,
        addr: frame.address.address(),
        object: match (frame.kind, object) {
            (FrameKind::Python, _) => PYTHON_OBJECT.to_owned(),
            (_, Some(object)) => object.display.clone(),
            (_, None) => UNKNOWN.to_owned(),
        },
        build_id: object.and_then(|o| o.build_id.clone()),
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

/// The `object` of a Python frame's row.
pub const PYTHON_OBJECT: &str = "[python]";

/// Bytes by the innermost Python frame of each stack (function, file);
/// stacks without one are left out.
pub(super) fn by_python_caller(stacks: &[StackRow]) -> Vec<PythonCallerRow> {
    let mut rows: BTreeMap<(&str, &str), PythonCallerRow> = BTreeMap::new();
    for stack in stacks {
        let Some(frame) = stack.frames.iter().find(|f| f.kind == FrameKind::Python) else {
            continue;
        };
        let function = frame.symbol.as_deref().unwrap_or(UNKNOWN);
        let file = frame.file.as_deref().unwrap_or(UNKNOWN);
        let row = rows
            .entry((function, file))
            .or_insert_with(|| PythonCallerRow {
                function: function.to_owned(),
                file: file.to_owned(),
                ..Default::default()
            });
        row.calls += stack.calls;
        row.mapped_bytes += stack.mapped_bytes;
        row.live_bytes += stack.live_bytes;
        row.live_regions += stack.live_regions;
        if let Some(resident) = stack.resident_bytes {
            *row.resident_bytes.get_or_insert(0) += resident;
        }
    }
    let mut rows: Vec<PythonCallerRow> = rows.into_values().collect();
    rows.sort_by(|a, b| {
        (b.resident_bytes.unwrap_or(0), b.live_bytes, b.mapped_bytes)
            .cmp(&(a.resident_bytes.unwrap_or(0), a.live_bytes, a.mapped_bytes))
            .then_with(|| (&a.function, &a.file).cmp(&(&b.function, &b.file)))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample_report::{LIBC, native, python, stack};

    #[test]
    fn python_callers_are_the_innermost_python_frames() {
        let frames = |function: &str| {
            vec![
                native(LIBC, 0x10, Some("mmap")),
                python(function, "/w.py", 3),
                python("main", "/w.py", 9),
            ]
        };
        let stacks = vec![
            stack(frames("grow"), 3 * 262144, Some(4096)),
            stack(frames("grow"), 262144, None),
            stack(frames("shrink"), 5 * 262144, None),
            stack(vec![native(LIBC, 0x10, Some("mmap"))], 262144, Some(4096)),
        ];
        let rows = by_python_caller(&stacks);
        let summary: Vec<(&str, u64, Option<u64>, u64)> = rows
            .iter()
            .map(|r| (r.function.as_str(), r.live_bytes, r.resident_bytes, r.calls))
            .collect();
        assert_eq!(
            summary,
            [
                ("grow", 4 * 262144, Some(4096), 28),
                ("shrink", 5 * 262144, None, 35),
            ],
            "resident first; native-only stacks have no Python caller"
        );
        assert_eq!(rows[0].file, "/w.py");
    }
}
