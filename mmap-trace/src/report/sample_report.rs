//! Reports made up for the renderers' unit tests (folded, SVG, pprof,
//! HTML): a lab-like one with every kind of frame, and large ones.

use super::{
    FrameKind, FrameRow, GrowthRow, InlinedRow, ObjectRow, Report, SizeRow, StackRow,
    tests_support::empty_report,
};
use crate::{
    account::{Role, Sample},
    model::{CallKind, ExitStatus, ProcessRss, StackSource, StopReason, StoppedBy},
};

pub(crate) const LIBLAB: &str = "/lab/liblab.so";
pub(crate) const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
pub(crate) const LAB: &str = "/lab/lab";

pub(crate) fn native(object: &str, offset: u64, symbol: Option<&str>) -> FrameRow {
    FrameRow {
        addr: 0x7f00_0000_0000 + offset,
        object: object.into(),
        build_id: Some("abcdef01".into()),
        offset,
        symbol: symbol.map(Into::into),
        symbol_offset: symbol.map(|_| 0x10),
        file: symbol.map(|_| "/src/liblab.c".into()),
        line: symbol.map(|_| 13),
        ..FrameRow::default()
    }
}

pub(crate) fn python(function: &str, file: &str, line: u32) -> FrameRow {
    FrameRow {
        kind: FrameKind::Python,
        object: "[python]".into(),
        offset: 42,
        symbol: Some(function.into()),
        file: Some(file.into()),
        line: Some(line),
        ..FrameRow::default()
    }
}

/// A stack row, innermost frame first.
pub(crate) fn stack(frames: Vec<FrameRow>, live: u64, resident: Option<u64>) -> StackRow {
    let mut row = StackRow::new(
        LIBLAB.into(),
        LIBLAB.into(),
        StackSource::Dwarf,
        StopReason::Complete,
        frames,
    );
    row.live_bytes = live;
    row.live_regions = live / 262144;
    row.mapped_bytes = live * 4;
    row.unmapped_bytes = live * 3;
    row.mmap_calls = 4 * row.live_regions;
    row.munmap_calls = 3 * row.live_regions;
    row.calls = row.mmap_calls + row.munmap_calls;
    row.resident_bytes = resident;
    row.pids = vec![100];
    row.sizes = vec![SizeRow {
        call: CallKind::Mmap,
        bytes: 262144,
        calls: row.mmap_calls,
    }];
    row
}

/// The lab's leak (through an inlined helper), a Python caller, an
/// unsymbolized frame and a JIT frame; with a timeline of two samples.
pub(crate) fn lab_report() -> Report {
    let mut leak_frame = native(LIBLAB, 0x1138, Some("lab_region_get"));
    leak_frame.inlined = vec![
        InlinedRow {
            symbol: "region_alloc".into(),
            file: Some("/src/region.h".into()),
            line: Some(7),
        },
        InlinedRow {
            symbol: "raw_mmap".into(),
            file: Some("/src/raw.h".into()),
            line: Some(3),
        },
    ];
    let leak = stack(
        vec![
            native(LIBC, 0x10a00, Some("syscall")),
            leak_frame,
            native(LAB, 0x1200, Some("cache_register")),
            native(LAB, 0x1300, Some("main")),
        ],
        16 * 262144,
        Some(10 * 4096),
    );
    let from_python = stack(
        vec![
            native(LIBC, 0x10b00, Some("mmap64")),
            native(LIBLAB, 0x2000, None),
            FrameRow {
                kind: FrameKind::Jit,
                object: "[anon]".into(),
                addr: 0x5000,
                symbol: Some("jitted_fn".into()),
                ..FrameRow::default()
            },
            python("BlockPool.allocate", "/app/pool.py", 88),
            python("<module>", "/app/main.py", 3),
        ],
        2 * 262144,
        None,
    );
    let balanced = stack(vec![native(LIBC, 0x10c00, Some("munmap"))], 0, None);
    let mut report = empty_report();
    report.command = Some(vec!["./lab".into(), "64".into()]);
    report.command_status = Some(ExitStatus::Code(0));
    report.stopped_by = StoppedBy::CommandExit;
    report.duration_s = 1.5;
    report.growth_note = Some("the window (1.5 s) is shorter than --min-window (10 s)".into());
    report.stacks = vec![leak, from_python, balanced];
    report.by_issuer = vec![ObjectRow {
        object: LIBLAB.into(),
        calls: 112,
        mapped_bytes: 64 * 262144,
        unmapped_bytes: 48 * 262144,
        live_bytes: 16 * 262144,
        live_regions: 16,
        ..ObjectRow::default()
    }];
    report.by_requester = report.by_issuer.clone();
    let mut growth = GrowthRow::new(Role::Issuer, LIBLAB.into());
    growth.live_bytes = 16 * 262144;
    report.growth = vec![growth];
    report.timeline = (0..2)
        .map(|i| {
            let mut sample = Sample {
                time_s: i as f64,
                live_bytes: 262144 * (i + 1),
                ..Sample::default()
            };
            sample.rss.push(ProcessRss {
                pid: 100,
                vm_rss: 1 << 20,
                ..ProcessRss::default()
            });
            sample
                .resident_by_issuer
                .insert(LIBLAB.into(), 4096 * (i as u64 + 1));
            sample
        })
        .collect();
    report
}

/// `n` distinct stacks of `depth` frames each, with long realistic names:
/// a few shared outer frames, then frames of their own (so a flame graph
/// of them has no shared prefix to merge below the fourth level).
pub(crate) fn many_stacks(n: usize, depth: usize) -> Report {
    let mut report = lab_report();
    report.stacks = (0..n)
        .map(|i| {
            let frames = (0..depth)
                .rev()
                .map(|d| {
                    let symbol = if d < 4 {
                        format!("app::layer{d}::run")
                    } else {
                        format!(
                            "std::collections::hash::map::HashMap<K,V,S>::insert::h{:016x}",
                            (i * depth + d) as u64 * 0x9e37_79b9
                        )
                    };
                    native(LIBLAB, (i * depth + d) as u64 * 16, Some(&symbol))
                })
                .collect();
            // Heavy-tailed, as real ones are: every 33rd stack holds 2000
            // pages, wide enough to be drawn; the rest 1 to 50 pages.
            let pages = if i % 33 == 0 { 2000 } else { 1 + i as u64 % 50 };
            stack(frames, 4096 * pages, Some(4096))
        })
        .collect();
    report
}
