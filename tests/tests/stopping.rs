//! Stopping a traced command: at --duration, or on a signal to mmap-trace.
//! The report is still written, the command's fate is recorded, and nothing
//! stays attached.

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use mmap_trace_tests::{
    assert_nothing_attached, mmap_trace_bin, record_json, require_root, scratch_path, serial,
    wait_with_timeout,
};

#[test]
fn duration_ends_a_command_with_sigterm() {
    let _serial = serial();
    require_root();
    let (report, run) = record_json(&["--duration", "300ms"], &["sleep", "30"]);
    assert_eq!(
        run.status.code(),
        Some(128 + 15),
        "the command's fate is our exit"
    );
    assert_eq!(report.get("stopped_by"), "duration");
    assert_eq!(report.get("command_status"), "killed by signal 15");
    assert_nothing_attached();
}

#[test]
fn sigterm_to_mmap_trace_is_forwarded_and_the_report_written() {
    let _serial = serial();
    require_root();
    let output = scratch_path("sigterm.json");
    let child = Command::new(mmap_trace_bin())
        .args(["record", "--format", "json", "--output"])
        .arg(&output)
        .args(["--", "sleep", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it attach and start the command.
    thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut run = wait_with_timeout(child);
    run.output = std::fs::read_to_string(&output).ok();
    let _ = std::fs::remove_file(&output);
    assert_eq!(run.status.code(), Some(128 + 15), "stderr: {}", run.stderr);
    let report = run.report();
    assert_eq!(report.get("stopped_by"), "SIGTERM");
    assert_eq!(report.get("command_status"), "killed by signal 15");
    assert_eq!(report.get("targets.0.comm"), "sleep");
    assert_nothing_attached();
}
