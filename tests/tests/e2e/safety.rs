//! The tracer takes nothing it does not need and changes nothing in its
//! targets: it runs with three capabilities as an unprivileged user, and a
//! program whose libc UCX patches at run time behaves identically, every
//! time, under tracing.

use std::process::Command;

use mmap_trace_tests::{
    PAGE, Report, Tracing, Waiting, basename, begin, calls_of_size, fixture, record_json,
};

/// `kernel.perf_event_paranoid` at most 2 while it lives: Debian's
/// kernels default to 3, which reserves perf events to CAP_SYS_ADMIN
/// whatever else a process holds (the README says so).
struct PerfEventsForPerfmon(Option<String>);

impl PerfEventsForPerfmon {
    const PATH: &str = "/proc/sys/kernel/perf_event_paranoid";

    fn set() -> Self {
        let before = std::fs::read_to_string(Self::PATH).unwrap();
        if before.trim().parse::<i32>().unwrap() > 2 {
            std::fs::write(Self::PATH, "2").unwrap();
            return PerfEventsForPerfmon(Some(before));
        }
        PerfEventsForPerfmon(None)
    }
}

impl Drop for PerfEventsForPerfmon {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            std::fs::write(Self::PATH, before.trim()).unwrap();
        }
    }
}

#[test]
fn runs_as_an_unprivileged_user_with_bpf_perfmon_and_ptrace_only() {
    let _e2e = begin();
    let _perf = PerfEventsForPerfmon::set();
    let run = mmap_trace_tests::run_as_nobody(
        "+bpf,+perfmon,+sys_ptrace",
        &[fixture("basic")],
        &["record", "--format", "json", "--", "{}"],
    );
    assert_eq!(run.status.code(), Some(3), "basic's status: {}", run.stderr);
    let report = run.report();
    let maps = report.stacks_through("map_pages");
    assert_eq!(mmap_trace_tests::sum(&maps, "live_bytes"), 6 * PAGE);
    assert_eq!(report.get("complete"), true);
}

/// What an untraced run of the UCX fixture prints, and how it ends.
fn untraced_ucx() -> (String, Option<i32>) {
    let output = Command::new(fixture("ucx"))
        .output()
        .expect("run the ucx fixture");
    (
        String::from_utf8(output.stdout).unwrap(),
        output.status.code(),
    )
}

fn issued_by_libucm(report: &Report) -> u64 {
    let ucm: Vec<_> = report
        .stacks()
        .iter()
        .filter(|s| basename(s["issuer"].as_str().unwrap()).starts_with("libucm"))
        .collect();
    calls_of_size(&ucm, "mmap", 7 * PAGE)
}

#[test]
fn a_program_under_ucx_hooks_behaves_the_same_twenty_times() {
    let _e2e = begin();
    let (expected, status) = untraced_ucx();
    assert_eq!(status, Some(0));
    assert!(
        expected.starts_with("ucx fixture: 5 regions, checksum "),
        "{expected}"
    );
    for run in 1..=20 {
        let (report, traced) = record_json(&[], &[fixture("ucx")]);
        assert_eq!(traced.status.code(), status, "run {run}: {}", traced.stderr);
        assert_eq!(traced.stdout, expected, "run {run}: the same output");
        assert_eq!(issued_by_libucm(&report), 5, "run {run}");
    }
}

/// The tracer raises its own priority so that it drains the ring buffer
/// when traced threads take every CPU; the command it runs keeps the
/// priority the tracer was started with (`nice` prints its own).
#[test]
fn the_command_runs_at_the_priority_it_would_have_untraced() {
    let _e2e = begin();
    for niceness in ["0", "5"] {
        let traced = Command::new("nice")
            .args(["-n", niceness])
            .arg(mmap_trace_tests::mmap_trace_bin())
            .args([
                "record",
                "--format",
                "json",
                "--output",
                "/dev/null",
                "--",
                "nice",
            ])
            .output()
            .expect("run mmap-trace under nice");
        assert!(
            traced.status.success(),
            "{}",
            String::from_utf8_lossy(&traced.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&traced.stdout),
            format!("{niceness}\n"),
            "the command's own niceness, as mmap-trace was started"
        );
    }
}

/// Only raw tracepoints: no uprobe (which would write a breakpoint into
/// the target's code), no kprobe.
#[test]
fn the_tracer_attaches_to_raw_tracepoints_only() {
    let _e2e = begin();
    let waiter = Waiting::start(&fixture("waiter"), &[] as &[&str]);
    let tracing = Tracing::start(&["--pid", &waiter.pid().to_string()]);
    let ours: Vec<_> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("mmtrace_")))
        .collect();
    assert!(ours.len() >= 5, "{} programs", ours.len());
    for program in &ours {
        // BPF_PROG_TYPE_RAW_TRACEPOINT (linux/bpf.h; aya does not export
        // the enum).
        assert_eq!(
            program.program_type() as u32,
            17,
            "{:?} is a {:?}",
            program.name_as_str(),
            program.program_type()
        );
    }
    waiter.go_and_wait();
    tracing.finish();
}
