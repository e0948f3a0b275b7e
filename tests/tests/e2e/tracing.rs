//! End-to-end: the real binary traces fixture programs; exact numbers.

use mmap_trace_tests::{
    PAGE, basename, begin, calls_of_size, fixture, frames, record_json, sum, symbols,
};

#[test]
fn mmap_and_munmap_from_main_are_counted_with_named_frames() {
    let _e2e = begin();
    let (report, run) = record_json(&[], &[fixture("basic")]);
    assert_eq!(
        run.status.code(),
        Some(3),
        "exits with the command's status"
    );

    let maps = report.stacks_through("map_pages");
    assert_eq!(sum(&maps, "mmap_calls"), 3);
    assert_eq!(sum(&maps, "mapped_bytes"), 14 * PAGE);
    assert_eq!(sum(&maps, "unmapped_bytes"), 8 * PAGE);
    assert_eq!(sum(&maps, "live_bytes"), 6 * PAGE);
    assert_eq!(sum(&maps, "live_regions"), 2);
    for stack in &maps {
        let names = symbols(stack);
        assert!(names[0].contains("mmap"), "{names:?}");
        assert_eq!(names[1..3], ["map_pages", "main"], "{names:?}");
        assert_eq!(
            basename(frames(stack)[0]["object"].as_str().unwrap()),
            "libc.so.6"
        );
        assert_eq!(
            frames(stack)[1]["file"].as_str().map(basename),
            Some("basic.c")
        );
    }
    let unmaps = report.stacks_through("unmap_pages");
    assert_eq!(sum(&unmaps, "munmap_calls"), 1);

    let issuer = report
        .object_row("by_issuer", "basic")
        .expect("basic issues its calls");
    assert_eq!(issuer["calls"], 4);
    assert_eq!(issuer["mapped_bytes"], 14 * PAGE);
    assert_eq!(issuer["live_bytes"], 6 * PAGE);
    assert_eq!(report.get("events.lost"), 0);
    assert_eq!(report.get("targets.0.exited"), true);
}

/// Frame-pointer walks skip the caller of libc's `syscall()`; the word at
/// the stack pointer recovers it.
#[test]
fn raw_syscall_in_a_library_is_issued_by_that_library() {
    let _e2e = begin();
    let (report, _) = record_json(&["--unwind", "fp"], &[fixture("rawsys_fp")]);
    let row = report
        .object_row("by_issuer", "librawsys_fp.so")
        .expect("issuer row");
    assert_eq!(row["calls"], 8);
    assert_eq!(row["mapped_bytes"], 18 * PAGE);
    assert_eq!(row["unmapped_bytes"], 6 * PAGE);
    assert_eq!(row["live_bytes"], 12 * PAGE);
    assert_eq!(row["live_regions"], 4);
    let maps = report.stacks_through("raw_map");
    assert_eq!(sum(&maps, "mmap_calls"), 6);
    for stack in &maps {
        assert_eq!(symbols(stack)[..3], ["syscall", "raw_map", "main"]);
        assert_eq!(
            frames(stack)[1]["recovered"],
            true,
            "raw_map comes from the stack pointer"
        );
        // By the design's rule the requester is the first non-interposer,
        // which is the library itself.
        assert_eq!(
            basename(stack["requester"].as_str().unwrap()),
            "librawsys_fp.so"
        );
    }

    // Declared an interposer, the library passes the request on: the
    // program asked for these bytes.
    let (report, _) = record_json(
        &["--unwind", "fp", "--interposer", "librawsys_fp"],
        &[fixture("rawsys_fp")],
    );
    let requester = report
        .object_row("by_requester", "rawsys_fp")
        .expect("requester row");
    assert_eq!(requester["mapped_bytes"], 18 * PAGE);
    assert_eq!(requester["live_bytes"], 12 * PAGE);
}

#[test]
fn raw_syscall_issuer_survives_a_library_without_frame_pointers() {
    let _e2e = begin();
    let (report, _) = record_json(&[], &[fixture("rawsys_nofp")]);
    let row = report
        .object_row("by_issuer", "librawsys_nofp.so")
        .expect("issuer row");
    assert_eq!(row["calls"], 8);
    assert_eq!(row["mapped_bytes"], 18 * PAGE);
    assert_eq!(row["live_bytes"], 12 * PAGE);
    for stack in report.stacks_through("raw_map") {
        assert_eq!(symbols(stack)[..2], ["syscall", "raw_map"]);
    }
}

/// Debian's UCX: loading libucs installs UCM's hooks on libc's mmap/munmap;
/// the fixture's calls are then issued by libucm through raw syscall().
#[test]
fn calls_under_ucx_hooks_are_issued_by_libucm() {
    let _e2e = begin();
    let (report, run) = record_json(&[], &[fixture("ucx")]);
    assert!(run.status.success(), "ucx fixture failed: {}", run.stderr);
    let len = 7 * PAGE;
    let ucm: Vec<_> = report
        .stacks()
        .iter()
        .filter(|s| basename(s["issuer"].as_str().unwrap()).starts_with("libucm"))
        .collect();
    assert_eq!(
        calls_of_size(&ucm, "mmap", len),
        5,
        "all 5 maps issued by libucm"
    );
    assert_eq!(
        calls_of_size(&ucm, "munmap", len),
        2,
        "both unmaps issued by libucm"
    );
    let all: Vec<_> = report.stacks().iter().collect();
    assert_eq!(calls_of_size(&all, "mmap", len), 5, "and by nobody else");
    for stack in ucm.iter().filter(|s| calls_of_size(&[s], "mmap", len) > 0) {
        assert_eq!(symbols(stack)[..2], ["syscall", "ucm_orig_mmap_syscall"]);
    }
}

#[test]
fn a_command_that_exits_at_once_is_still_symbolized() {
    let _e2e = begin();
    let (report, run) = record_json(&[], &[fixture("quick")]);
    assert!(run.status.success());
    let maps = report.stacks_through("quick_map");
    assert_eq!(sum(&maps, "mmap_calls"), 2);
    assert_eq!(sum(&maps, "live_bytes"), 10 * PAGE);
    assert_eq!(symbols(maps[0])[1..3], ["quick_map", "main"]);
    assert_eq!(report.get("targets.0.exited"), true);
}

#[test]
fn forked_children_are_traced() {
    let _e2e = begin();
    let (report, _) = record_json(&[], &[fixture("forker")]);
    let parent = report.stacks_through("parent_map");
    let child = report.stacks_through("child_map");
    assert_eq!(sum(&parent, "mapped_bytes"), 3 * PAGE);
    assert_eq!(sum(&child, "mapped_bytes"), 5 * PAGE);
    assert_eq!(sum(&child, "mmap_calls"), 1);
    let parent_pid = parent[0]["pids"][0].as_u64().unwrap();
    let child_pid = child[0]["pids"][0].as_u64().unwrap();
    assert_ne!(parent_pid, child_pid);
    let target = report
        .target(child_pid as u32)
        .expect("the child is a target");
    assert_eq!(target["parent_pid"], parent_pid);
    assert_eq!(target["exited"], true);
}
