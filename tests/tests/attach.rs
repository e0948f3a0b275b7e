//! `--pid`: attach to a running process the test started.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mmap_trace_tests::{
    PAGE, Report, assert_nothing_attached, fixture, mmap_trace_bin, require_root, serial, sum,
    wait_with_timeout,
};

#[test]
fn pid_of_a_running_process_is_traced_from_attach_on() {
    let _serial = serial();
    require_root();
    let mut waiter = Command::new(fixture("waiter"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the waiter fixture");
    let mut waiter_out = BufReader::new(waiter.stdout.take().unwrap());
    let mut line = String::new();
    waiter_out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");

    let mut tracer = Command::new(mmap_trace_bin())
        .args([
            "record",
            "--format",
            "json",
            "--pid",
            &waiter.id().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmap-trace");
    // mmap-trace says on stderr when it is attached.
    let mut stderr = tracer.stderr.take().unwrap();
    let mut said = Vec::new();
    let started = Instant::now();
    while !String::from_utf8_lossy(&said).contains("tracing pid") {
        let mut byte = [0u8; 1];
        if stderr.read(&mut byte).unwrap() == 0 || started.elapsed() > Duration::from_secs(60) {
            panic!(
                "mmap-trace did not attach: {}",
                String::from_utf8_lossy(&said)
            );
        }
        said.push(byte[0]);
    }
    tracer.stderr = Some(stderr);

    waiter.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(waiter.wait().unwrap().success());
    let run = wait_with_timeout(tracer);
    assert!(run.status.success(), "mmap-trace failed: {}", run.stderr);
    let report: Report = run.report();
    assert_eq!(report.get("stopped_by"), "target exit");

    let maps = report.stacks_through("waiter_map");
    assert_eq!(sum(&maps, "mmap_calls"), 4, "only the calls after attach");
    assert_eq!(sum(&maps, "mapped_bytes"), 24 * PAGE);
    assert_eq!(sum(&maps, "live_bytes"), 24 * PAGE);
    // The early mapping was there before attach: pre-existing, not unknown.
    assert!(report.u64("totals.preexisting_bytes") >= 2 * PAGE);
    assert_eq!(report.u64("totals.preexisting_unmapped_bytes"), 2 * PAGE);
    assert_eq!(report.u64("totals.unknown_unmapped_bytes"), 0);
    assert_nothing_attached();
}
