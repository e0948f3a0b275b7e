//! Python frames in the stacks of CPython processes: under every CPython
//! 3.10 to 3.13 on the machine, the function and line that asked, on the
//! stacks that hold the exact bytes, and the "By Python caller" rows.

use mmap_trace_tests::{
    PAGE, Report, Tracing, Waiting, begin,
    fixtures::{Python, marked_line, python_script, pythons},
    frames, record_json,
};
use serde_json::Value;

/// The environment the scripts run in: Python's own allocator off and one
/// malloc arena, so that with `--syscalls mmap` the only mmap calls made
/// from their functions are the ones they make on purpose (small objects
/// come from brk, which is not traced here).
const QUIET_ALLOCATORS: [&str; 3] = [
    "PYTHONMALLOC=malloc",
    "MALLOC_ARENA_MAX=1",
    "PYTHONDONTWRITEBYTECODE=1",
];

/// Runs `script` under `python`, traced with `extra` arguments.
fn trace_script(python: &Python, script: &str, python_args: &[&str], extra: &[&str]) -> Report {
    let script = python_script(script);
    let mut command: Vec<String> = vec!["env".into()];
    command.extend(QUIET_ALLOCATORS.iter().map(|s| s.to_string()));
    command.push(python.path.display().to_string());
    command.extend(python_args.iter().map(|s| s.to_string()));
    command.push(script.display().to_string());
    let mut args = vec!["--syscalls", "mmap"];
    args.extend(extra);
    let (report, run) = record_json(&args, &command);
    assert!(
        run.status.success(),
        "{}: {}",
        python.path.display(),
        run.stderr
    );
    report
}

/// A Python frame: (function, file name, line).
fn python_frames(stack: &Value) -> Vec<(&str, &str, u64)> {
    frames(stack)
        .iter()
        .filter(|f| f["kind"] == "python")
        .map(|f| {
            let file = f["file"].as_str().unwrap_or("?");
            (
                f["symbol"].as_str().unwrap_or("?"),
                file.rsplit('/').next().unwrap_or(file),
                f["line"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The stacks whose innermost Python frame is `function` at `line`.
fn stacks_from<'r>(report: &'r Report, function: &str, line: u64) -> Vec<&'r Value> {
    report
        .stacks()
        .iter()
        .filter(|s| {
            python_frames(s)
                .first()
                .is_some_and(|&(f, _, l)| f == function && l == line)
        })
        .collect()
}

/// Every stack's innermost Python frames, stop reason and live bytes: what
/// a failed assertion shows, so that a failure in CI explains itself.
fn python_stacks(report: &Report) -> String {
    report
        .stacks()
        .iter()
        .map(|s| {
            let python = python_frames(s);
            format!(
                "\n  {:?} {} live={} calls={}",
                &python[..python.len().min(3)],
                s["stop_reason"],
                s["live_bytes"],
                s["mmap_calls"]
            )
        })
        .collect()
}

/// The "By Python caller" row of `function`.
fn caller_row<'r>(report: &'r Report, function: &str) -> &'r Value {
    report.0["by_python_caller"]
        .as_array()
        .expect("by_python_caller[]")
        .iter()
        .find(|row| row["function"] == function)
        .unwrap_or_else(|| {
            panic!(
                "no By Python caller row for {function}: {:#}",
                report.0["by_python_caller"]
            )
        })
}

/// `name` as the interpreter names it: qualified from 3.11 on.
fn qualified<'a>(python: &Python, qualname: &'a str) -> &'a str {
    if python.has_qualnames() {
        qualname
    } else {
        qualname.rsplit('.').next().unwrap_or(qualname)
    }
}

#[test]
fn python_functions_and_lines_that_map_under_every_cpython() {
    let _e2e = begin();
    let script = python_script("frames.py");
    let line = |mark| marked_line(&script, mark);
    for python in pythons() {
        let version = format!("{} (3.{})", python.path.display(), python.minor);
        let report = trace_script(&python, "frames.py", &[], &[]);

        // (a) The main thread, through the mmap module: the whole Python
        // stack, innermost first, and native frames around it to _start.
        let main = stacks_from(&report, "main_thread_maps", line("main"));
        assert_eq!(
            mmap_trace_tests::sum(&main, "live_bytes"),
            15 * PAGE,
            "{version}: {}",
            python_stacks(&report)
        );
        assert_eq!(mmap_trace_tests::sum(&main, "mmap_calls"), 3, "{version}");
        for stack in &main {
            assert_eq!(
                python_frames(stack),
                [
                    ("main_thread_maps", "frames.py", line("main")),
                    ("run", "frames.py", line("run-main")),
                    ("<module>", "frames.py", line("module")),
                ],
                "{version}"
            );
            assert_eq!(stack["stop_reason"], "complete", "{version}");
            assert_eq!(
                frames(stack).last().unwrap()["symbol"],
                "_start",
                "{version}"
            );
            assert_eq!(
                frames(stack)[0]["kind"],
                "native",
                "{version}: the call itself"
            );
        }

        // (c) A method: its qualified name (3.11+), from both call sites.
        let method = qualified(&python, "BlockPool.allocate");
        let allocate = stacks_from(&report, method, line("method"));
        assert_eq!(
            mmap_trace_tests::sum(&allocate, "live_bytes"),
            8 * PAGE,
            "{version}: {}",
            python_stacks(&report)
        );
        let callers: Vec<u64> = allocate.iter().map(|s| python_frames(s)[1].2).collect();
        assert!(
            callers.contains(&line("run-method")) && callers.contains(&line("run-method-again")),
            "{version}: {callers:?}"
        );

        // (b) A thread, through ctypes, with the GIL released.
        let thread = stacks_from(&report, "ctypes_maps", line("thread"));
        assert_eq!(
            mmap_trace_tests::sum(&thread, "live_bytes"),
            14 * PAGE,
            "{version}: {}",
            python_stacks(&report)
        );
        assert_eq!(mmap_trace_tests::sum(&thread, "mmap_calls"), 2, "{version}");
        for stack in &thread {
            let names: Vec<&str> = python_frames(stack).iter().map(|f| f.0).collect();
            assert_eq!(
                names,
                [
                    "ctypes_maps",
                    qualified(&python, "Thread.run"),
                    qualified(&python, "Thread._bootstrap_inner"),
                    qualified(&python, "Thread._bootstrap"),
                ],
                "{version}"
            );
        }

        // (d) Deeper than the kernel records: the innermost 63 frames, then
        // marked as cut.
        let deep = stacks_from(&report, "recurse", line("deep"));
        assert_eq!(deep.len(), 1, "{version}");
        assert_eq!(deep[0]["live_bytes"], 11 * PAGE, "{version}");
        assert_eq!(deep[0]["python_truncated"], true, "{version}");
        let recursion = python_frames(deep[0]);
        assert_eq!(recursion.len(), 63, "{version}");
        assert!(
            recursion[1..]
                .iter()
                .all(|&frame| frame == ("recurse", "frames.py", line("recurse"))),
            "{version}: {recursion:?}"
        );

        // By Python caller: exactly what those functions hold.
        for (function, pages, calls) in [
            ("main_thread_maps", 15, 3),
            (method, 8, 2),
            ("ctypes_maps", 14, 2),
            ("recurse", 11, 1),
        ] {
            let row = caller_row(&report, function);
            assert_eq!(row["live_bytes"], pages * PAGE, "{version}: {function}");
            assert_eq!(row["calls"], calls, "{version}: {function}");
            assert_eq!(
                row["file"].as_str().unwrap(),
                script.display().to_string(),
                "{version}"
            );
        }
    }
}

/// The failure seen once in CI: a module's code object was freed after it
/// ran and a method's was made in its memory; the method's calls were
/// named after the module. Here functions are made in the memory of the
/// one before (the script fails unless at least one is).
#[test]
fn a_code_object_in_the_memory_of_a_freed_one_is_named_after_itself() {
    let _e2e = begin();
    for python in pythons() {
        let version = format!("{} (3.{})", python.path.display(), python.minor);
        let report = trace_script(&python, "reuse.py", &[], &[]);
        let mut generated = 0;
        for n in 1..=3u64 {
            let made = stacks_from(&report, &format!("made_{n}"), 10 * n + 1);
            assert_eq!(
                mmap_trace_tests::sum(&made, "live_bytes"),
                (n + 1) * PAGE,
                "{version}: made_{n}: {}",
                python_stacks(&report)
            );
            assert_eq!(mmap_trace_tests::sum(&made, "mmap_calls"), 1, "{version}");
            generated += made.len();
        }
        let from_generated = report
            .stacks()
            .iter()
            .filter(|s| {
                python_frames(s)
                    .first()
                    .is_some_and(|f| f.1 == "generated.py")
            })
            .count();
        assert_eq!(
            from_generated,
            generated,
            "{version}: no other stack runs generated code: {}",
            python_stacks(&report)
        );
    }
}

#[test]
fn python_off_leaves_the_interpreter_frames() {
    let _e2e = begin();
    let python = &pythons()[0];
    let report = trace_script(python, "frames.py", &[], &["--python", "off"]);
    assert!(
        report
            .stacks()
            .iter()
            .flat_map(frames)
            .all(|f| f["kind"] == "native"),
        "no Python frames with --python off"
    );
    assert_eq!(report.0["by_python_caller"], serde_json::json!([]));
}

#[test]
fn attach_to_a_running_python_process_and_its_threads() {
    let _e2e = begin();
    let script = python_script("attach.py");
    for python in pythons() {
        let version = format!("{} (3.{})", python.path.display(), python.minor);
        let mut args: Vec<String> = QUIET_ALLOCATORS.iter().map(|s| s.to_string()).collect();
        args.push(python.path.display().to_string());
        args.push(script.display().to_string());
        let mut process = Waiting::start(std::path::Path::new("/usr/bin/env"), &args);
        let tracing = Tracing::start(&["--syscalls", "mmap", "--pid", &process.pid().to_string()]);
        process.go();
        let report = tracing.finish().report();
        process.finish();
        let thread = stacks_from(
            &report,
            "early_thread",
            marked_line(&script, "attach-thread"),
        );
        assert_eq!(
            mmap_trace_tests::sum(&thread, "live_bytes"),
            3 * PAGE,
            "{version}: the thread that ran before attach"
        );
        let main = stacks_from(&report, "main_maps", marked_line(&script, "attach-main"));
        assert_eq!(
            mmap_trace_tests::sum(&main, "live_bytes"),
            2 * PAGE,
            "{version}"
        );
        assert_eq!(
            python_frames(main[0]),
            [
                (
                    "main_maps",
                    "attach.py",
                    marked_line(&script, "attach-main")
                ),
                ("<module>", "attach.py", marked_line(&script, "attach-call")),
            ],
            "{version}"
        );
    }
}

#[test]
fn perf_trampolines_are_named_and_walked_through() {
    let _e2e = begin();
    let script = python_script("perf_trampolines.py");
    let line = marked_line(&script, "perf");
    let mut tested = 0;
    for python in pythons().into_iter().filter(|p| p.minor >= 12) {
        let version = format!("{} (3.{})", python.path.display(), python.minor);
        // Without Python frames: the trampolines are JIT frames named from
        // the perf map, and the walk goes on through them to _start.
        let report = trace_script(
            &python,
            "perf_trampolines.py",
            &["-X", "perf"],
            &["--python", "off"],
        );
        remove_perf_maps(&report);
        let stacks: Vec<&Value> = report
            .stacks()
            .iter()
            .filter(|s| {
                frames(s).iter().any(|f| {
                    f["kind"] == "jit"
                        && f["symbol"]
                            .as_str()
                            .unwrap_or("")
                            .starts_with("py::perf_worker:")
                })
            })
            .collect();
        assert_eq!(
            mmap_trace_tests::sum(&stacks, "live_bytes"),
            6 * PAGE,
            "{version}"
        );
        for stack in &stacks {
            assert_eq!(stack["stop_reason"], "complete", "{version}");
            assert_eq!(
                frames(stack).last().unwrap()["symbol"],
                "_start",
                "{version}"
            );
        }
        // With them: Python frames in their place, the stack still whole.
        let report = trace_script(&python, "perf_trampolines.py", &["-X", "perf"], &[]);
        remove_perf_maps(&report);
        let stacks = stacks_from(&report, "perf_worker", line);
        assert_eq!(
            mmap_trace_tests::sum(&stacks, "live_bytes"),
            6 * PAGE,
            "{version}"
        );
        for stack in &stacks {
            assert_eq!(stack["stop_reason"], "complete", "{version}");
            assert!(
                frames(stack).iter().all(|f| f["kind"] != "jit"),
                "{version}: trampolines give way to the Python frames they run"
            );
        }
        tested += 1;
    }
    assert!(tested > 0, "no CPython 3.12+ on this machine for -X perf");
}

/// Removes the perf maps the traced processes wrote.
pub fn remove_perf_maps(report: &Report) {
    for target in report.0["targets"].as_array().expect("targets[]") {
        let path = format!("/tmp/perf-{}.map", target["pid"]);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {path}: {e}"),
        }
    }
}
