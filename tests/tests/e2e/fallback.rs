//! Stacks through code without call-frame information: a frame-pointer
//! step per address where CFI has no entry (`--unwind auto`), and JIT code
//! in anonymous executable memory, named from the process's perf map.

use mmap_trace_tests::{PAGE, begin, fixture, record_json, sum, symbols};

/// main → level1 → … → level4 → cfi_map → mmap, where only cfi_map has
/// CFI and keeps no frame pointer.
const CHAIN: [&str; 6] = ["cfi_map", "level4", "level3", "level2", "level1", "main"];

#[test]
fn auto_takes_frame_pointer_steps_where_an_object_has_no_cfi_for_a_pc() {
    let _e2e = begin();
    let command = [fixture("fpchain")];
    let (auto, run) = record_json(&["--unwind", "auto"], &command);
    assert!(run.status.success(), "{}", run.stderr);
    let stacks = auto.stacks_through("cfi_map");
    assert_eq!(sum(&stacks, "live_bytes"), 18 * PAGE);
    assert_eq!(stacks.len(), 1, "one stack, whole");
    let names = symbols(stacks[0]);
    let at = names.iter().position(|&n| n == "cfi_map").expect("cfi_map");
    assert_eq!(names[at..at + CHAIN.len()], CHAIN, "{names:?}");
    assert_eq!(names.last(), Some(&"_start"), "{names:?}");
    assert_eq!(stacks[0]["stop_reason"], "complete");

    // The same run shape with frame pointers only: auto is never less
    // complete (here fp misses level4, which cfi_map's caller-saved rbp
    // hides).
    let (fp, run) = record_json(&["--unwind", "fp"], &command);
    assert!(run.status.success(), "{}", run.stderr);
    let fp_stacks = fp.stacks_through("level3");
    assert_eq!(sum(&fp_stacks, "live_bytes"), 18 * PAGE);
    for stack in fp_stacks {
        let fp_names = symbols(stack);
        assert!(
            fp_names.iter().all(|n| names.contains(n)),
            "fp {fp_names:?} has frames auto {names:?} lacks"
        );
        assert!(
            fp_names.len() < names.len(),
            "fp {fp_names:?} vs auto {names:?}"
        );
    }
}

#[test]
fn jit_frames_are_named_from_the_perf_map_and_walked_through() {
    let _e2e = begin();
    for unwind in ["auto", "fp"] {
        let (report, run) = record_json(&["--unwind", unwind], &[fixture("jit")]);
        assert!(run.status.success(), "{}", run.stderr);
        let pid = report.u64("targets.0.pid");
        std::fs::remove_file(format!("/tmp/perf-{pid}.map")).expect("the fixture's perf map");
        let stacks = report.stacks_through("jit_trampoline");
        assert_eq!(sum(&stacks, "live_bytes"), 18 * PAGE, "{unwind}");
        for stack in stacks {
            let names = symbols(stack);
            let at = names.iter().position(|&n| n == "jit_map").expect("jit_map");
            assert_eq!(
                names[at..at + 3],
                ["jit_map", "jit_trampoline", "main"],
                "{unwind}: {names:?}"
            );
            let jit = &stack["frames"][at + 1];
            assert_eq!(jit["kind"], "jit", "{unwind}");
            assert_eq!(jit["object"], "[anonymous code]", "{unwind}");
            if unwind == "auto" {
                // (fp stops in libc, built without frame pointers.)
                assert_eq!(names.last(), Some(&"_start"), "{unwind}: {names:?}");
                assert_eq!(stack["stop_reason"], "complete", "{unwind}");
            }
        }
    }
}
