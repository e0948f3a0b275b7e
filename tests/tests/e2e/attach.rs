//! Attaching to running processes the test started: `--pid` (with existing
//! and new children), `--cgroup` (members and processes that move in).

use mmap_trace_tests::{PAGE, Report, TestCgroup, Tracing, Waiting, begin, fixture, sum};

#[test]
fn pid_of_a_running_process_is_traced_from_attach_on() {
    let _e2e = begin();
    let waiter = Waiting::start(&fixture("waiter"), &[] as &[&str]);
    // It waits on stdin: its maps do not change until it is let go.
    let mapped_before = mapped_bytes(waiter.pid());
    let tracing = Tracing::start(&["--pid", &waiter.pid().to_string()]);
    waiter.go_and_wait();
    let report: Report = tracing.finish().report();
    assert_eq!(report.get("stopped_by"), "target exit");

    let maps = report.stacks_through("waiter_map");
    assert_eq!(sum(&maps, "mmap_calls"), 4, "only the calls after attach");
    assert_eq!(sum(&maps, "mapped_bytes"), 24 * PAGE);
    assert_eq!(sum(&maps, "live_bytes"), 24 * PAGE);
    // The early mapping was there before attach: pre-existing, not unknown.
    assert_eq!(report.u64("totals.preexisting_bytes"), mapped_before);
    assert_eq!(report.u64("totals.preexisting_unmapped_bytes"), 2 * PAGE);
    assert_eq!(report.u64("totals.unknown_unmapped_bytes"), 0);
}

#[test]
fn pid_follows_existing_and_new_children() {
    let _e2e = begin();
    let tree = Waiting::start(&fixture("tree"), &[] as &[&str]);
    let parent = tree.pid();
    let tracing = Tracing::start(&["--pid", &parent.to_string()]);
    tree.go_and_wait();
    let report = tracing.finish().report();

    let early = report.stacks_through("early_child_map");
    assert_eq!(
        sum(&early, "mapped_bytes"),
        4 * PAGE,
        "the child that existed at attach"
    );
    let children = report.stacks_through("child_map");
    assert_eq!(sum(&children, "mmap_calls"), 2);
    assert_eq!(sum(&children, "mapped_bytes"), 6 * PAGE);
    let pids = mmap_trace_tests::pids(&children);
    assert_eq!(pids.len(), 2, "two new children");
    for pid in pids {
        let target = report.target(pid as u32).expect("a traced child");
        assert_eq!(target["parent_pid"], parent);
    }
    assert_eq!(
        sum(&report.stacks_through("parent_map"), "mapped_bytes"),
        2 * PAGE
    );
    assert_eq!(report.0["targets"].as_array().unwrap().len(), 4);
}

#[test]
fn cgroup_members_and_newcomers_are_traced_and_nobody_else() {
    let _e2e = begin();
    let cgroup = TestCgroup::create("attach");
    let member = Waiting::start(&fixture("waiter"), &[] as &[&str]);
    cgroup.add(member.pid());
    let outsider = Waiting::start(&fixture("waiter"), &[] as &[&str]);
    let newcomer = Waiting::start(&fixture("waiter"), &[] as &[&str]);
    let (member_pid, outsider_pid, newcomer_pid) = (member.pid(), outsider.pid(), newcomer.pid());

    let tracing = Tracing::start(&["--cgroup", cgroup.path.to_str().unwrap()]);
    cgroup.add(newcomer_pid);
    member.go_and_wait();
    outsider.go_and_wait();
    newcomer.go_and_wait();
    tracing.interrupt();
    let report = tracing.finish().report();
    assert_eq!(report.get("stopped_by"), "SIGINT");

    let maps = report.stacks_through("waiter_map");
    let traced = mmap_trace_tests::pids(&maps);
    assert!(traced.contains(&u64::from(member_pid)), "the member");
    assert!(
        traced.contains(&u64::from(newcomer_pid)),
        "the process that moved in ({newcomer_pid}): targets {}, stacks {:?}",
        report.0["targets"],
        maps.iter()
            .map(|s| (&s["pids"], &s["mmap_calls"]))
            .collect::<Vec<_>>()
    );
    assert!(
        !traced.contains(&u64::from(outsider_pid)),
        "not the outsider"
    );
    assert_eq!(
        sum(&maps, "mmap_calls"),
        8,
        "4 maps each from member and newcomer"
    );
    // Both unmap the 2 pages they mapped before they were traced (the
    // newcomer before it joined, as it went on mapping): pre-existing.
    assert_eq!(
        report.u64("totals.preexisting_unmapped_bytes"),
        4 * PAGE,
        "totals: {}",
        report.0["totals"]
    );
    assert_eq!(report.u64("totals.unknown_unmapped_bytes"), 0);
    drop(cgroup);
}

/// Bytes `pid` has mapped, as /proc/PID/maps says (but the vsyscall page,
/// which no process can unmap).
fn mapped_bytes(pid: u32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter(|line| !line.ends_with("[vsyscall]"))
        .map(|line| {
            let range = line.split_whitespace().next().unwrap();
            let (start, end) = range.split_once('-').unwrap();
            u64::from_str_radix(end, 16).unwrap() - u64::from_str_radix(start, 16).unwrap()
        })
        .sum()
}
