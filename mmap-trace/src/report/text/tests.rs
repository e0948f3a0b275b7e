//! The text report, section by section.

use super::*;
use crate::{
    account::Role,
    model::{ExitStatus, StackSource, StopReason, StoppedBy, UnwindMode},
    report::{Events, SCHEMA, Target, Totals},
};

#[test]
fn byte_units() {
    assert_eq!(bytes(0), "0 B");
    assert_eq!(bytes(1023), "1023 B");
    assert_eq!(bytes(4096), "4.0 KiB");
    assert_eq!(bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
}

#[test]
fn renders_every_section() {
    let mut growth = GrowthRow::new(Role::Issuer, "/x/liblab.so".into());
    growth.resident_bytes_per_min = Some(3.0 * 1048576.0);
    growth.resident_fit_r2 = Some(0.98);
    growth.since_s = Some(2.0);
    growth.resident_bytes = Some(4096);
    growth.flagged = true;
    growth.hints = vec!["set X=1".into()];
    let mut stack = StackRow::new(
        "/x/liblab.so".into(),
        "/x/lab".into(),
        StackSource::FramePointers,
        StopReason::FramePointerInvalid,
        vec![FrameRow {
            addr: 0x7f00,
            object: "/x/liblab.so".into(),
            offset: 0x1234,
            symbol: Some("lab_grab".into()),
            symbol_offset: Some(0x22),
            file: Some("/src/liblab.c".into()),
            line: Some(17),
            recovered: true,
            ..Default::default()
        }],
    );
    stack.calls = 3;
    stack.mmap_calls = 3;
    stack.live_bytes = 8192;
    let report = Report {
        schema: SCHEMA,
        version: "0",
        command: Some(vec!["./lab".into(), "8".into()]),
        command_status: Some(ExitStatus::Code(0)),
        stopped_by: StoppedBy::CommandExit,
        complete: false,
        duration_s: 0.25,
        unwinder: UnwindMode::Fp,
        unwinding: Default::default(),
        tracer: Default::default(),
        growth_judged: true,
        growth_note: None,
        growth: vec![growth],
        rss_growth: Some(RssGrowth {
            bytes_per_min: 4.0 * 1048576.0,
            fit_r2: 0.9,
            since_s: 1.0,
            explained_bytes_per_min: 3.0 * 1048576.0,
            explained_fraction: Some(0.75),
            file_bytes_per_min: 0.0,
            untraced_anon_bytes_per_min: 1048576.0,
        }),
        timeline: vec![],
        targets: vec![Target {
            pid: 42,
            parent_pid: None,
            comm: "lab".into(),
            exe: Some("/x/lab".into()),
            exited: true,
            live_bytes: 8192,
            rss_bytes: None,
        }],
        events: Events {
            mmap: 3,
            lost: 2,
            ..Default::default()
        },
        totals: Totals {
            live_bytes: 8192,
            ..Default::default()
        },
        by_issuer: vec![ObjectRow {
            object: "/x/liblab.so".into(),
            calls: 3,
            live_bytes: 8192,
            live_regions: 2,
            ..Default::default()
        }],
        by_requester: vec![],
        by_python_caller: vec![],
        stacks: vec![stack],
    };
    let text = render_text(&report, 10);
    assert!(
        text.contains("command: ./lab 8 (exited with status 0)"),
        "{text}"
    );
    assert!(text.contains("lost 2 records"), "{text}");
    assert!(
        text.lines().nth(1).unwrap().starts_with(
            "INCOMPLETE: 2 records lost, 0 malformed, 0 out of order: the byte counts below are lower bounds"
        ),
        "said second, right after the title: {text}"
    );
    assert!(
        text.contains("   8.0 KiB     exited        0 B        2        3"),
        "{text}"
    );
    assert!(text.contains("issuer liblab.so, requester lab"), "{text}");
    assert!(
        text.contains("issuer    /x/liblab.so  +3.0 MiB/min resident (fit r² 0.98, since 2.0 s)"),
        "{text}"
    );
    assert!(
        text.contains("These explain 75% of the RSS growth (+3.0 MiB/min of +4.0 MiB/min)"),
        "{text}"
    );
    assert!(
        text.contains("lab_grab+0x22 (liblab.c:17)  liblab.so+0x1234  [from stack pointer]"),
        "{text}"
    );
    assert!(
        text.contains("... the stack walk stopped here: the frame-pointer chain broke"),
        "{text}"
    );
}

#[test]
fn a_short_run_gets_no_verdict_and_no_rate() {
    let mut report = crate::report::tests_support::empty_report();
    report.growth_note = Some("growth cannot be judged yet: 0.1 s".into());
    let mut row = GrowthRow::new(Role::Issuer, "/lib/ld.so".into());
    row.live_bytes = 1 << 20;
    report.growth = vec![row];
    let text = render_text(&report, 10);
    assert!(
        text.contains("Who is growing: growth cannot be judged yet: 0.1 s."),
        "{text}"
    );
    assert!(!text.contains("/min"), "no per-minute figure: {text}");
}

#[test]
fn python_and_jit_frames_read_as_users_name_them() {
    use crate::report::{
        sample_report::{LIBC, native, python, stack},
        tests_support::empty_report,
    };
    let jit = FrameRow {
        kind: FrameKind::Jit,
        addr: 0x7f00_0000_1040,
        object: "[anonymous code]".into(),
        offset: 0x1040,
        symbol: Some("jit_trampoline".into()),
        symbol_offset: Some(0),
        ..Default::default()
    };
    let mut row = stack(
        vec![
            native(LIBC, 0x1019b3, Some("__mmap64")),
            python("BlockPool.allocate", "/srv/worker.py", 88),
            jit,
        ],
        262144,
        Some(8192),
    );
    row.python_truncated = true;
    let mut report = empty_report();
    report.stacks = vec![row.clone()];
    report.by_python_caller = crate::report::stacks::by_python_caller(&report.stacks);
    let text = render_text(&report, 5);
    assert!(
        text.contains("BlockPool.allocate (worker.py:88)  [python]"),
        "{text}"
    );
    assert!(text.contains("jit_trampoline+0x0  [jit]"), "{text}");
    assert!(text.contains("deeper Python code than 63 frames"), "{text}");
    let callers = text
        .lines()
        .skip_while(|l| !l.starts_with("By Python caller"))
        .nth(2)
        .expect("a By Python caller row");
    assert_eq!(
        callers.split_whitespace().collect::<Vec<_>>(),
        [
            "256.0",
            "KiB",
            "8.0",
            "KiB",
            "1",
            "7",
            "1.0",
            "MiB",
            "BlockPool.allocate",
            "(/srv/worker.py)"
        ]
    );
}
