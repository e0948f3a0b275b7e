//! End-to-end ledger semantics: each edge case in its own traced process,
//! with the exact live bytes the kernel leaves.

use mmap_trace_tests::{PAGE, begin, fixture, record_json, sum};

/// Runs `edge MODE` traced; returns (live, mapped, failed) over the stacks
/// through `function`.
fn edge(mode: &str) -> mmap_trace_tests::Report {
    let (report, run) = record_json(&[], &[fixture("edge").into_os_string(), mode.into()]);
    assert!(
        run.status.success(),
        "edge {mode} failed: {:?} {}",
        run.status,
        run.stderr
    );
    report
}

fn live(report: &mmap_trace_tests::Report, function: &str) -> u64 {
    sum(&report.stacks_through(function), "live_bytes")
}

/// The stacks of mremap calls. glibc's variadic mremap() sets up a stack
/// frame without a frame pointer, so a frame-pointer walk cannot name
/// edge_remap (its caller); these stacks read mremap → main.
fn remap_stacks(report: &mmap_trace_tests::Report) -> Vec<&serde_json::Value> {
    report
        .stacks()
        .iter()
        .filter(|s| s["mremap_calls"].as_u64() > Some(0))
        .collect()
}

#[test]
fn partial_munmap_in_the_middle_splits_the_range() {
    let _e2e = begin();
    let report = edge("partial");
    assert_eq!(live(&report, "edge_map"), 8 * PAGE);
    assert_eq!(sum(&report.stacks_through("edge_map"), "live_regions"), 2);
    assert_eq!(
        sum(&report.stacks_through("edge_map"), "unmapped_bytes"),
        2 * PAGE
    );
}

#[test]
fn mremap_grow_in_place_attributes_growth_to_the_mremap() {
    let _e2e = begin();
    let report = edge("grow");
    assert_eq!(live(&report, "edge_map"), 2 * PAGE);
    let remaps = remap_stacks(&report);
    assert_eq!(sum(&remaps, "mremap_calls"), 1);
    assert_eq!(sum(&remaps, "live_bytes"), 3 * PAGE);
    assert_eq!(sum(&remaps, "mapped_bytes"), 3 * PAGE);
}

#[test]
fn mremap_move_keeps_the_original_attribution() {
    let _e2e = begin();
    let report = edge("move");
    // p's 2 pages moved over q (whose 3 pages were released); 1 page grew.
    assert_eq!(live(&report, "edge_map"), 2 * PAGE);
    assert_eq!(
        sum(&report.stacks_through("edge_map"), "unmapped_bytes"),
        3 * PAGE
    );
    assert_eq!(sum(&remap_stacks(&report), "live_bytes"), PAGE);
}

#[test]
fn mremap_shrink_releases_the_tail() {
    let _e2e = begin();
    let report = edge("shrink");
    assert_eq!(live(&report, "edge_map"), 2 * PAGE);
    assert_eq!(
        sum(&report.stacks_through("edge_map"), "unmapped_bytes"),
        4 * PAGE
    );
    let remaps = remap_stacks(&report);
    assert_eq!(sum(&remaps, "mremap_calls"), 1);
    assert_eq!(sum(&remaps, "live_bytes"), 0);
}

#[test]
fn map_fixed_over_a_live_range_replaces_it() {
    let _e2e = begin();
    let report = edge("fixed");
    assert_eq!(live(&report, "edge_map"), 4 * PAGE);
    assert_eq!(sum(&report.stacks_through("edge_map"), "live_regions"), 2);
    assert_eq!(live(&report, "edge_map_fixed"), 2 * PAGE);
}

#[test]
fn failed_calls_are_counted_not_applied() {
    let _e2e = begin();
    let report = edge("failed");
    let maps = report.stacks_through("edge_map");
    let unmaps = report.stacks_through("edge_unmap");
    assert_eq!(sum(&maps, "failed_calls") + sum(&unmaps, "failed_calls"), 2);
    assert_eq!(live(&report, "edge_map"), PAGE);
    assert_eq!(sum(&unmaps, "unmapped_bytes"), 0);
    assert_eq!(report.u64("events.failed"), 2, "only the fixture's own");
}

#[test]
fn brk_and_shared_memory_are_traced_and_kept_apart() {
    let _e2e = begin();
    let (report, run) = record_json(&[], &[fixture("heapshm")]);
    assert!(run.status.success(), "{:?} {}", run.status, run.stderr);
    let heap = report.stacks_through("heap_grow");
    // sbrk asks brk(0) first, then 3 grows and a shrink.
    assert_eq!(sum(&heap, "brk_calls"), 5);
    assert_eq!(sum(&heap, "mapped_bytes"), 3 * 16 * PAGE);
    assert_eq!(sum(&heap, "live_bytes"), 2 * 16 * PAGE);
    let attached = report.stacks_through("shm_attach");
    assert_eq!(sum(&attached, "shm_calls"), 2);
    assert_eq!(sum(&attached, "mapped_bytes"), 13 * PAGE);
    assert_eq!(sum(&attached, "live_bytes"), 5 * PAGE);
    assert_eq!(sum(&report.stacks_through("shm_detach"), "shm_calls"), 1);
    assert_eq!(report.u64("events.shmat"), 2);
    assert_eq!(report.u64("events.shmdt"), 1);
    // The heap's live bytes by kind are those of every brk stack: the
    // fixture's, and malloc's own.
    let brk_stacks: Vec<_> = report
        .stacks()
        .iter()
        .filter(|s| s["brk_calls"].as_u64() > Some(0))
        .collect();
    assert_eq!(
        report.u64("totals.live_by_kind.brk"),
        sum(&brk_stacks, "live_bytes")
    );
    assert!(sum(&brk_stacks, "live_bytes") >= 2 * 16 * PAGE);
    assert_eq!(report.u64("totals.live_by_kind.shm"), 5 * PAGE);

    // --syscalls chooses.
    let (report, _) = record_json(&["--syscalls", "mmap"], &[fixture("heapshm")]);
    assert_eq!(report.u64("events.brk"), 0);
    assert_eq!(report.u64("events.shmat"), 0);
}

/// 8 threads racing on one address space (tests/fixtures/hammer.c): ranges
/// freed by one thread are mapped by another before the first thread's
/// call has returned. Calls applied in the order they took effect leave
/// exactly the fixture's final state, and no unmap of a range never seen
/// mapped. (A large buffer: the debug build's user space is slow, and the
/// question here is order, not speed; `cargo xtask bench` measures the
/// default buffer at this rate.)
#[test]
fn racing_threads_leave_the_exact_final_state() {
    let _e2e = begin();
    let (threads, iterations) = (8u64, 20_000u64);
    let (report, run) = record_json(
        &["--syscalls", "mmap", "--buffer-size", "512"],
        &[
            fixture("hammer").into_os_string(),
            threads.to_string().into(),
            iterations.to_string().into(),
        ],
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(report.u64("events.lost"), 0, "nothing lost");
    assert_eq!(report.u64("events.out_of_order"), 0);
    assert_eq!(
        report.u64("events.mmap"),
        threads * (iterations + iterations / 1000) + mmaps_before_main(&report)
    );
    assert_eq!(
        report.u64("totals.unknown_unmapped_bytes"),
        0,
        "no unmap of a range never seen mapped"
    );
    let hammer = report.stacks_through("hammer_map");
    assert_eq!(
        sum(&hammer, "mapped_bytes"),
        threads * iterations * 4 * PAGE
    );
    assert_eq!(sum(&hammer, "live_bytes"), 0, "every page unmapped");
    let kept = report.stacks_through("keep_map");
    assert_eq!(
        sum(&kept, "live_bytes"),
        threads * iterations / 1000 * 2 * PAGE
    );
    assert_eq!(sum(&kept, "live_regions"), threads * iterations / 1000);
}

/// The mmap calls not made by the fixture's own code (the loader, libc,
/// thread stacks).
fn mmaps_before_main(report: &mmap_trace_tests::Report) -> u64 {
    report
        .stacks()
        .iter()
        .filter(|s| {
            !mmap_trace_tests::symbols(s)
                .iter()
                .any(|&f| f == "hammer_map" || f == "keep_map")
        })
        .map(|s| s["mmap_calls"].as_u64().unwrap_or(0))
        .sum()
}
