//! Faults: the target killed or replaced, a fork storm, the tracer killed,
//! a ring buffer too small for the rate. Each ends with an exact outcome,
//! and nothing of mmap-trace's left loaded (`begin()` checks).

use mmap_trace_tests::{
    PAGE, Tracing, Waiting, assert_nothing_attached, begin, fixture, record_json, sum,
};

#[test]
fn a_target_killed_mid_run_is_reported_as_killed() {
    let _e2e = begin();
    let hammer = fixture("hammer");
    let tracing = Tracing::launch(
        &["--syscalls", "mmap", "--buffer-size", "256"],
        &[hammer.to_str().unwrap(), "2", "100000000"],
    );
    let pid = tracing.child_named("hammer");
    // It is mapping as fast as it can: kill it in the middle.
    std::thread::sleep(std::time::Duration::from_secs(1));
    // SAFETY: kill has no memory-safety preconditions; the fixture is ours.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let run = tracing.wait();
    assert_eq!(
        run.status.code(),
        Some(128 + 9),
        "mmap-trace exits as its command did"
    );
    let report = run.report();
    assert_eq!(report.get("command_status"), "killed by signal 9");
    assert_eq!(report.get("stopped_by"), "command exit");
    assert!(report.u64("events.mmap") > 100, "it ran a while");
    assert_eq!(report.u64("events.lost"), 0);
    // With every record in order (not a given under emulation), nothing
    // was unmapped that was never mapped.
    if report.get("complete") == true {
        assert_eq!(report.u64("totals.unknown_unmapped_bytes"), 0);
    }
}

#[test]
fn a_target_that_execs_is_followed_into_its_new_image() {
    let _e2e = begin();
    let basic = fixture("basic");
    let (report, run) = record_json(&[], &["sh", "-c", &format!("exec {}", basic.display())]);
    assert_eq!(
        run.status.code(),
        Some(3),
        "basic's own status: {}",
        run.stderr
    );
    assert_eq!(
        report.0["targets"].as_array().unwrap().len(),
        1,
        "one process, two images"
    );
    let maps = report.stacks_through("map_pages");
    assert_eq!(sum(&maps, "live_bytes"), 6 * PAGE);
    assert_eq!(sum(&maps, "mmap_calls"), 3);
}

#[test]
fn a_fork_storm_is_traced_child_by_child() {
    let _e2e = begin();
    let storm = fixture("storm");
    let (report, run) = record_json(&["--syscalls", "mmap"], &[storm.to_str().unwrap(), "1000"]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(report.u64("events.lost"), 0);
    assert_eq!(report.0["targets"].as_array().unwrap().len(), 1001);
    let maps = report.stacks_through("storm_map");
    assert_eq!(sum(&maps, "mmap_calls"), 1000, "every child's call");
    assert_eq!(
        sum(&maps, "live_bytes"),
        1000 * 3 * PAGE,
        "each left at exit"
    );
    assert_eq!(mmap_trace_tests::pids(&maps).len(), 1000);
}

#[test]
fn a_tracer_killed_outright_leaves_nothing_attached() {
    let _e2e = begin();
    let waiter = Waiting::start(&fixture("waiter"), &[] as &[&str]);
    let tracing = Tracing::start(&["--pid", &waiter.pid().to_string()]);
    tracing.signal(libc::SIGKILL);
    let run = tracing.wait();
    assert_eq!(run.status.code(), None, "killed by a signal");
    // The kernel detaches the programs with the last descriptor.
    assert_nothing_attached();
    // The target goes on as if nothing happened.
    waiter.go_and_wait();
}

#[test]
fn a_ring_buffer_too_small_loses_records_and_says_so() {
    let _e2e = begin();
    let hammer = fixture("hammer");
    let (report, run) = record_json(
        &["--syscalls", "mmap", "--buffer-size", "1"],
        &[hammer.to_str().unwrap(), "8", "20000"],
    );
    assert!(run.status.success(), "{}", run.stderr);
    let lost = report.u64("events.lost");
    assert!(lost > 0, "8 threads overrun a 1 MiB buffer");
    assert_eq!(report.get("complete"), false);
    // Every record either arrived or was counted lost.
    let calls = report.u64("events.mmap") + report.u64("events.munmap");
    assert!(calls < 8 * 20_000 * 4 + 1000);
    let text = mmap_trace_tests::mmap_trace(&[
        "record",
        "--syscalls",
        "mmap",
        "--buffer-size",
        "1",
        "--",
        hammer.to_str().unwrap(),
        "8",
        "20000",
    ]);
    let second = text.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        second.starts_with("INCOMPLETE: ")
            && second.contains("the byte counts below are lower bounds"),
        "{}",
        text.stdout
    );
}
