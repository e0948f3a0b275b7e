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

    // Cut mid-record, then at a record boundary: one clear line each.
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines = text.lines().count();
    let cut = scratch_path("cut.mtrace");
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
