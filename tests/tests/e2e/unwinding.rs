//! Full stacks through code built without frame pointers (--unwind
//! dwarf/auto), checked frame by frame, against gdb where it can say.

use std::process::Command;

use mmap_trace_tests::{
    PAGE, basename, begin, calls_of_size, describe_stacks, fixture, frames, record_json, symbols,
};
use serde_json::Value;

/// (function, object file name) of each frame.
fn named_frames(stack: &Value) -> Vec<(String, String)> {
    frames(stack)
        .iter()
        .map(|f| {
            (
                f["symbol"].as_str().unwrap_or("??").to_owned(),
                basename(f["object"].as_str().unwrap()).to_owned(),
            )
        })
        .collect()
}

fn expect(frames: &[(&str, &str)]) -> Vec<(String, String)> {
    frames
        .iter()
        .map(|(f, o)| (f.to_string(), o.to_string()))
        .collect()
}

#[test]
fn cfi_stacks_are_complete_where_frame_pointers_are_not() {
    let _e2e = begin();
    let full = expect(&[
        ("syscall", "libc.so.6"),
        ("leaf", "libnofpleaf.so"),
        ("mid", "nofp"),
        ("main", "nofp"),
        ("__libc_start_call_main", "libc.so.6"),
        ("__libc_start_main_impl", "libc.so.6"),
        ("_start", "nofp"),
    ]);
    for unwind in ["dwarf", "auto"] {
        let (report, _) = record_json(&["--unwind", unwind], &[fixture("nofp")]);
        let stacks = report.stacks_through("leaf");
        // main calls mid from 3 unrolled call sites: 3 stacks, 1 call each.
        assert_eq!(stacks.len(), 3, "{unwind}");
        for stack in stacks {
            assert_eq!(named_frames(stack), full, "{unwind}");
            assert_eq!(stack["truncated"], false, "{unwind}");
            assert_eq!(stack["unwinder"], "dwarf", "{unwind}");
            assert_eq!(stack["mapped_bytes"], 4 * PAGE);
        }
        assert_eq!(report.get("unwinder"), unwind);
    }
    // Frame pointers: leaf, mid and main keep none, so the walk ends after
    // the caller recovered from the stack pointer (leaf), and says so.
    let (report, _) = record_json(&["--unwind", "fp"], &[fixture("nofp")]);
    let stacks = report.stacks_through("leaf");
    assert_eq!(mmap_trace_tests::sum(&stacks, "mmap_calls"), 3);
    for stack in stacks {
        assert_eq!(symbols(stack), ["syscall", "leaf"]);
        assert_eq!(stack["truncated"], true);
        assert_eq!(stack["unwinder"], "fp");
    }
}

/// gdb's backtrace at the fixture's 7-page mmap syscall, past main, as
/// (function, object) pairs.
fn gdb_backtrace(program: &std::path::Path) -> Vec<(String, String)> {
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set backtrace past-main on"])
        .args([
            "-ex",
            "catch syscall mmap",
            "-ex",
            "condition 1 $rsi == 28672",
        ])
        .args(["-ex", "run", "-ex", "bt"])
        .arg(program)
        .output()
        .expect("gdb (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.starts_with('#'))
        .map(|line| {
            // "#1  0x00007ffff7c78de0 in ucm_orig_mmap_syscall () from /lib/.../libucm.so.0"
            // "#0  syscall () at ../sysdeps/.../syscall.S:38"
            let rest = line.split_once("  ").map_or(line, |(_, r)| r);
            let rest = rest.split_once(" in ").map_or(rest, |(_, r)| r);
            let name = rest.split(" (").next().unwrap_or("??").to_owned();
            let object = rest
                .split_once(" from ")
                .map(|(_, lib)| basename(lib.trim()).to_owned());
            (name, object.unwrap_or_default())
        })
        .collect()
}

/// Debian's UCX in its default hook mode: the frames inside libucm, then the
/// fixture's own, exactly as gdb shows them; the requester is the fixture.
#[test]
fn stacks_through_ucx_hooks_match_gdb() {
    let _e2e = begin();
    let program = fixture("ucx");
    let (report, _) = record_json(&["--unwind", "auto"], &[&program]);
    let len = 7 * PAGE;
    let maps: Vec<&Value> = report
        .stacks()
        .iter()
        .filter(|s| calls_of_size(&[s], "mmap", len) > 0)
        .collect();
    assert_eq!(calls_of_size(&maps, "mmap", len), 5);
    let ours = named_frames(maps[0]);
    let names: Vec<&str> = ours.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        [
            "syscall",
            "ucm_orig_mmap_syscall",
            "??",
            "ucm_event_dispatch",
            "ucm_mmap",
            "ucx_fixture_map",
            "main",
            "__libc_start_call_main",
            "__libc_start_main_impl",
            "_start"
        ]
    );
    for stack in &maps {
        assert_eq!(
            basename(stack["issuer"].as_str().unwrap()),
            "libucm.so.0.0.0"
        );
        assert_eq!(basename(stack["requester"].as_str().unwrap()), "ucx");
        assert_eq!(stack["truncated"], false);
    }
    // gdb names the same functions, in the same order.
    let gdb = gdb_backtrace(&program);
    let gdb_names: Vec<&str> = gdb.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(gdb_names, names, "gdb's backtrace: {gdb:?}");
}

#[test]
fn thread_stacks_and_stacks_deeper_than_the_copy() {
    let _e2e = begin();
    // A 2 KiB copy holds about 40 of the deep threads' 3000 frames.
    let (report, run) = record_json(
        &["--unwind", "auto", "--stack-bytes", "2K"],
        &[fixture("threads")],
    );
    assert!(run.status.success(), "{}", run.stderr);
    let through = report.stacks_through("thread_map");
    assert_eq!(
        calls_of_size(&through, "mmap", 5 * PAGE),
        2,
        "shallow threads"
    );
    assert_eq!(calls_of_size(&through, "mmap", 6 * PAGE), 2, "deep threads");
    for stack in &through {
        let named = named_frames(stack);
        if calls_of_size(&[stack], "mmap", 5 * PAGE) > 0 {
            // Near the top of its stack mapping, the copy is short; the
            // stack is still complete.
            assert_eq!(
                named[1..],
                expect(&[
                    ("thread_map", "threads"),
                    ("shallow", "threads"),
                    ("start_thread", "libc.so.6"),
                    ("clone3", "libc.so.6"),
                ])[..]
            );
            assert_eq!(stack["truncated"], false);
        } else {
            assert_eq!(named[1].0, "thread_map");
            assert!(named.len() > 10 && named.len() <= 127, "{}", named.len());
            assert!(
                named[2..]
                    .iter()
                    .all(|(f, o)| f == "recurse" && o == "threads")
            );
            assert_eq!(
                stack["truncated"], true,
                "cut by the copy or the depth limit"
            );
        }
    }
}

#[test]
fn libraries_loaded_with_dlopen_are_unwound() {
    let _e2e = begin();
    let (report, _) = record_json(&["--unwind", "auto"], &[fixture("dlopener")]);
    let stacks = report.stacks_through("dlo_inner");
    assert_eq!(calls_of_size(&stacks, "mmap", 3 * PAGE), 2);
    for stack in stacks {
        let named = named_frames(stack);
        assert_eq!(
            named[1..],
            expect(&[
                ("dlo_inner", "libdlo.so"),
                ("dlo_map", "libdlo.so"),
                ("main", "dlopener"),
                ("__libc_start_call_main", "libc.so.6"),
                ("__libc_start_main_impl", "libc.so.6"),
                ("_start", "dlopener"),
            ])[..]
        );
        assert_eq!(stack["truncated"], false);
    }
}

/// Hot paths are unwound in the kernel with the rules user space learned,
/// and give exactly the stacks user space computed: one row for the loop.
#[test]
fn kernel_unwinding_matches_user_unwinding() {
    let _e2e = begin();
    // A path's calls send stack copies until user space has learned its
    // rules: a time, not a number of calls (about 100 calls here, thousands
    // under emulation, where user space is ten times slower). The loop runs
    // long enough for that to be a small part of it.
    const PAIRS: u64 = 20_000;
    let (report, run) = record_json(
        &["--unwind", "auto"],
        &[
            fixture("workload").into_os_string(),
            PAIRS.to_string().into(),
        ],
    );
    assert!(run.status.success());
    let kernel = report.u64("unwinding.in_kernel");
    let copies = report.u64("unwinding.from_copies");
    let calls: u64 = [
        "mmap", "munmap", "mremap", "brk", "shmat", "shmdt", "mprotect", "madvise",
    ]
    .iter()
    .map(|call| report.u64(&format!("events.{call}")))
    .sum();
    assert_eq!(
        kernel + copies,
        calls,
        "every stack is unwound exactly once"
    );
    // The mmap and the munmap path are half of the calls each: over three
    // quarters in the kernel means both ended up there.
    assert!(
        kernel * 4 > calls * 3,
        "both loop paths unwound in the kernel: {kernel} of {calls} calls ({copies} copies)"
    );
    let loop_stacks = report.stacks_through("level1");
    let stacks = describe_stacks(&report);
    assert_eq!(
        loop_stacks.len(),
        2,
        "one mmap stack, one munmap stack: {stacks}"
    );
    for stack in loop_stacks {
        assert_eq!(stack["calls"], PAIRS, "{stacks}");
        assert_eq!(stack["truncated"], false);
        let names = symbols(stack);
        if stack["mmap_calls"] == PAIRS {
            assert_eq!(names[1..5], ["level3", "level2", "level1", "main"]);
        } else {
            // level3 tail-calls munmap: its frame is gone, as gdb shows too.
            assert_eq!(stack["munmap_calls"], PAIRS);
            assert_eq!(names[1..4], ["level2", "level1", "main"]);
        }
    }
}
