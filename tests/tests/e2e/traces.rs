//! Record now, report later: trace files, `report`, `diff`.

use mmap_trace_tests::{basename, begin, fixture, mmap_trace, scratch_path};
use serde_json::Value;

#[test]
fn a_trace_reports_exactly_what_the_live_run_did() {
    let _e2e = begin();
    let trace = scratch_path("basic.mtrace");
    let trace_arg = trace.to_str().unwrap();
    let basic = fixture("basic");
    let live = mmap_trace(&[
        "record",
        "-f",
        "json",
        "-o",
        trace_arg,
        "--",
        basic.to_str().unwrap(),
    ]);
    assert_eq!(
        live.status.code(),
        Some(3),
        "the command's status: {}",
        live.stderr
    );
    let replayed = mmap_trace(&["report", "-f", "json", trace_arg]);
    assert!(replayed.status.success(), "{}", replayed.stderr);
    let live: Value = serde_json::from_str(&live.stdout).expect("live JSON report");
    let replayed: Value = serde_json::from_str(&replayed.stdout).expect("replayed JSON report");
    assert_eq!(live, replayed, "the same report, from the trace");
    assert!(live["stacks"].as_array().unwrap().iter().any(|s| {
        s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["symbol"] == "map_pages")
    }));

    // A compact trace cut short: one clear line.
    let bytes = std::fs::read(&trace).unwrap();
    let cut = scratch_path("cut.mtrace");
    std::fs::write(&cut, &bytes[..bytes.len() - 30]).unwrap();
    let run = mmap_trace(&["report", cut.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    let said = run.stderr.trim();
    assert!(
        said.starts_with(&format!(
            "mmap-trace: {}: ends after record ",
            cut.display()
        )) && said.ends_with("without its final record: the recording was cut short"),
        "{said}"
    );

    // `dump` prints it as JSON lines (version 1), which report the same.
    let dumped = mmap_trace(&["dump", trace_arg]);
    assert!(dumped.status.success(), "{}", dumped.stderr);
    let text = dumped.stdout;
    let v1 = scratch_path("basic-v1.mtrace");
    std::fs::write(&v1, &text).unwrap();
    let from_v1 = mmap_trace(&["report", "-f", "json", v1.to_str().unwrap()]);
    let from_v1: Value = serde_json::from_str(&from_v1.stdout).expect("report of the dump");
    assert_eq!(from_v1, live, "the dump holds the whole trace");
    std::fs::remove_file(&v1).unwrap();

    // Version 1 cut mid-record, then at a record boundary.
    let lines = text.lines().count();
    std::fs::write(&cut, &text[..text.len() - 30]).unwrap();
    let run = mmap_trace(&["report", cut.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        run.stderr.trim(),
        format!(
            "mmap-trace: {}:{lines}: the record is cut short",
            cut.display()
        )
    );
    let without_end: String = text
        .lines()
        .take(lines - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&cut, without_end).unwrap();
    let run = mmap_trace(&["report", cut.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.contains(&format!(
            "ends after line {} without its final record",
            lines - 1
        )),
        "{}",
        run.stderr
    );
    std::fs::remove_file(&cut).unwrap();
    std::fs::remove_file(&trace).unwrap();
}

#[test]
fn diff_shows_the_leak_gone_after_the_fix() {
    let _e2e = begin();
    let lab = fixture("lab");
    // 48 rounds, 100 ms apart: long enough to judge with --min-window 3s.
    let record = |name: &str, variant: &str| {
        let path = scratch_path(name);
        let run = mmap_trace(&[
            "record",
            "--interval",
            "250ms",
            "-o",
            path.to_str().unwrap(),
            "--",
            lab.to_str().unwrap(),
            "48",
            variant,
            "100",
        ]);
        assert!(run.status.success(), "{}", run.stderr);
        path
    };
    let leaking = record("leaking.mtrace", "leaky");
    let fixed = record("fixed.mtrace", "fixed");
    let run = mmap_trace(&[
        "diff",
        "-f",
        "json",
        "--min-window",
        "3s",
        leaking.to_str().unwrap(),
        fixed.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    let diff: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(diff["schema"], "mmap-trace/diff/v1");
    let liblab = diff["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "issuer" && basename(r["object"].as_str().unwrap()) == "liblab.so")
        .expect("liblab's row");
    // 48 rounds leak 12 regions of 256 KiB; the fixed lab leaks none.
    assert_eq!(liblab["live_bytes_before"], 12 * 256 * 1024);
    assert_eq!(liblab["live_bytes_after"], 0);
    assert_eq!(liblab["live_bytes_delta"], -(12 * 256 * 1024));
    // Resident growth: 256 KiB every 400 ms before, none after.
    assert_eq!(liblab["flagged_before"], true, "{liblab}");
    assert_eq!(liblab["flagged_after"], false, "{liblab}");
    let before = liblab["resident_bytes_per_min_before"].as_f64().unwrap();
    let after = liblab["resident_bytes_per_min_after"].as_f64().unwrap();
    let truth = 256.0 * 1024.0 / 0.4 * 60.0;
    assert!((before - truth).abs() < 0.15 * truth, "{before} vs {truth}");
    assert!(after.abs() < 1024.0 * 1024.0, "{after}");
    // The processes exited: their resident bytes at the end are unknown.
    assert!(liblab["resident_bytes_before"].is_null());
    let text = mmap_trace(&[
        "diff",
        "--min-window",
        "3s",
        leaking.to_str().unwrap(),
        fixed.to_str().unwrap(),
    ]);
    assert!(text.stdout.contains("RES. GROWTH BEF"), "{}", text.stdout);
    std::fs::remove_file(&leaking).unwrap();
    std::fs::remove_file(&fixed).unwrap();
}

/// A trace whose records could not have happened is an error naming the
/// record, never a report.
#[test]
fn impossible_records_in_a_trace_are_errors() {
    let _e2e = begin();
    let trace = scratch_path("impossible.mtrace");
    let basic = fixture("basic");
    let live = mmap_trace(&[
        "record",
        "-o",
        trace.to_str().unwrap(),
        "--",
        basic.to_str().unwrap(),
    ]);
    assert_eq!(live.status.code(), Some(3), "{}", live.stderr);
    let dumped = mmap_trace(&["dump", trace.to_str().unwrap()]);
    assert!(dumped.status.success(), "{}", dumped.stderr);
    let text = dumped.stdout;
    let (index, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("\"munmap\":{") && l.contains("\"len\":32768"))
        .expect("the fixture's munmap of 8 pages");
    let edited = scratch_path("impossible-edited.mtrace");
    for (change, says) in [
        (
            // An unmap whose length wraps the address space.
            ("\"len\":32768", "\"len\":18446744073709551000"),
            "runs past the end of user space",
        ),
        (
            ("\"len\":32768", "\"len\":0"),
            "a munmap of 0 bytes succeeded (the kernel refuses it)",
        ),
    ] {
        assert!(line.contains(change.0), "{line}");
        let bad: String = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let l = if i == index {
                    l.replace(change.0, change.1)
                } else {
                    l.to_owned()
                };
                l + "\n"
            })
            .collect();
        std::fs::write(&edited, bad).unwrap();
        let run = mmap_trace(&["report", edited.to_str().unwrap()]);
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        let prefix = format!("mmap-trace: {}:{}: ", edited.display(), index + 1);
        assert!(
            run.stderr.starts_with(&prefix) && run.stderr.trim_end().ends_with(says),
            "{}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stdout.is_empty());
    }
    std::fs::remove_file(&edited).unwrap();
    std::fs::remove_file(&trace).unwrap();
}
