//! Stopping a traced command: at --duration, or on a signal to mmap-trace.
//! The report is still written, the command's fate is recorded, and nothing
//! stays attached.

use mmap_trace_tests::{Tracing, begin, record_json};

#[test]
fn duration_ends_a_command_with_sigterm() {
    let _e2e = begin();
    let (report, run) = record_json(&["--duration", "300ms"], &["sleep", "30"]);
    assert_eq!(
        run.status.code(),
        Some(128 + 15),
        "the command's fate is our exit"
    );
    assert_eq!(report.get("stopped_by"), "duration");
    assert_eq!(report.get("command_status"), "killed by signal 15");
}

#[test]
fn sigterm_to_mmap_trace_is_forwarded_and_the_report_written() {
    let _e2e = begin();
    let tracing = Tracing::launch(&[], &["sleep", "30"]);
    tracing.signal(libc::SIGTERM);
    let run = tracing.wait();
    assert_eq!(run.status.code(), Some(128 + 15), "stderr: {}", run.stderr);
    let report = run.report();
    assert_eq!(report.get("stopped_by"), "SIGTERM");
    assert_eq!(report.get("command_status"), "killed by signal 15");
    assert_eq!(report.get("targets.0.comm"), "sleep");
}
