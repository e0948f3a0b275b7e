//! Leak hunting over time: growth verdicts from a live process, and the
//! resident bytes inside traced ranges.

use mmap_trace_tests::{PAGE, Tracing, Waiting, basename, begin, fixture};
use serde_json::Value;

fn growth_rows<'a>(report: &'a mmap_trace_tests::Report, object: &str) -> Vec<&'a Value> {
    report.0["growth"]
        .as_array()
        .expect("growth[]")
        .iter()
        .filter(|row| basename(row["object"].as_str().unwrap()) == object)
        .collect()
}

#[test]
fn the_leaking_library_is_named_first_with_its_rate() {
    let _e2e = begin();
    // Started first, traced a few seconds after: a running service.
    let mut service = std::process::Command::new(fixture("growth"))
        .arg("30")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the growth fixture");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let tracing = Tracing::start(&["--pid", &service.id().to_string(), "--duration", "4s"]);
    let run = tracing.finish();
    service.kill().unwrap();
    service.wait().unwrap();
    let report = run.report();

    let first = &report.0["growth"][0];
    assert_eq!(
        basename(first["object"].as_str().unwrap()),
        "libleak.so",
        "{first}"
    );
    // 64 KiB every 100 ms.
    let true_rate = 64.0 * 1024.0 * 10.0 * 60.0;
    for row in growth_rows(&report, "libleak.so") {
        let rate = row["bytes_per_min"].as_f64().unwrap();
        assert!(
            (rate - true_rate).abs() / true_rate < 0.10,
            "{} rate {rate} vs {true_rate}",
            row["role"]
        );
        assert_eq!(row["flagged"], true);
        assert!(row["fit_r2"].as_f64().unwrap() > 0.9);
    }
    let balanced = growth_rows(&report, "libbalanced.so");
    assert_eq!(balanced.len(), 2, "issuer and requester rows");
    for row in balanced {
        assert_eq!(row["flagged"], false, "{row}");
    }
    // The timeline sampled the process about every second.
    let timeline = report.0["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 4, "{} samples", timeline.len());
    assert!(
        timeline
            .iter()
            .all(|s| s["rss"][0]["vm_rss"].as_u64() > Some(0))
    );
}

#[test]
fn resident_bytes_are_the_touched_pages() {
    let _e2e = begin();
    let fixture = Waiting::start(&fixture("resident"), &[] as &[&str]);
    let tracing = Tracing::start(&["--pid", &fixture.pid().to_string(), "--interval", "100ms"]);
    fixture.go_and_wait();
    let report = tracing.finish().report();
    let stacks = report.stacks_through("resident_map");
    assert_eq!(stacks.len(), 1);
    assert_eq!(stacks[0]["live_bytes"], 64 * PAGE);
    assert_eq!(
        stacks[0]["resident_bytes"],
        10 * PAGE,
        "exactly the touched pages"
    );
    let issuer = report
        .object_row("by_issuer", "resident")
        .expect("issuer row");
    assert_eq!(issuer["resident_bytes"], 10 * PAGE);
}

fn pattern_rows(report: &mmap_trace_tests::Report, pattern: &str) -> Vec<Value> {
    report.0["growth"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| {
            row["patterns"]
                .as_array()
                .is_some_and(|p| p.iter().any(|name| name == pattern))
        })
        .cloned()
        .collect()
}

/// The UCX rule fires where UCX's registration cache grows through its
/// hooks, and not for a program that merely loads UCX and maps memory.
#[test]
fn the_ucx_rule_fires_on_a_growing_registration_cache_only() {
    let _e2e = begin();
    let (report, run) = mmap_trace_tests::record_json(&[], &[fixture("ucx_rcache")]);
    assert!(run.status.success(), "{}", run.stderr);
    let rows = pattern_rows(&report, "ucx-registration-cache");
    assert!(!rows.is_empty(), "growth: {}", report.0["growth"]);
    for row in &rows {
        assert_eq!(row["flagged"], true);
        let hints: Vec<&str> = row["hints"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            hints
                .iter()
                .any(|h| h.contains("UCX_RCACHE_MAX_UNRELEASED=1024")),
            "{hints:?}"
        );
        assert!(
            hints
                .iter()
                .any(|h| h.contains("UCX_MEM_MMAP_HOOK_MODE=none")),
            "{hints:?}"
        );
    }
    // The growth goes through libucm (the hooks) on behalf of libucs.
    let libucs = rows
        .iter()
        .find(|row| row["role"] == "requester")
        .expect("a requester row");
    assert!(basename(libucs["object"].as_str().unwrap()).starts_with("libucs"));

    let (plain, run) = mmap_trace_tests::record_json(&[], &[fixture("ucx")]);
    assert!(run.status.success());
    assert!(
        pattern_rows(&plain, "ucx-registration-cache").is_empty(),
        "no hint for a plain program: {}",
        plain.0["growth"]
    );
}
