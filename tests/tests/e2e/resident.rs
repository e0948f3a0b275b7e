//! Resident truth: the pages a process holds, exactly; reserved against
//! accessible bytes; pages given back without unmapping; kinds of memory;
//! and exited processes, whose resident bytes are unknown.

use mmap_trace_tests::{PAGE, Report, Tracing, Waiting, basename, begin, fixture, sum};

/// Traces a fixture from `--pid`: lets it go, waits for its "done", and
/// stops tracing while it still runs (so its pages can be read), then lets
/// it exit.
fn traced_until_done(name: &str, args: &[&str], extra: &[&str]) -> Report {
    let mut fixture = Waiting::start(&fixture(name), args);
    let pid = fixture.pid().to_string();
    let mut tracing_args = vec!["--pid", &pid];
    tracing_args.extend(extra);
    let tracing = Tracing::start(&tracing_args);
    fixture.go();
    fixture.expect_line("done");
    tracing.interrupt();
    let run = tracing.finish();
    fixture.finish();
    run.report()
}

#[test]
fn resident_bytes_are_the_touched_pages_and_unknown_after_exit() {
    let _e2e = begin();
    // Exact while it runs: 16 pages mapped, 10 touched.
    let report = traced_until_done("memfd", &[], &["--interval", "100ms"]);
    let stacks = report.stacks_through("map_memfd");
    assert_eq!(stacks.len(), 1);
    assert_eq!(stacks[0]["live_bytes"], 16 * PAGE);
    assert_eq!(
        stacks[0]["resident_bytes"],
        10 * PAGE,
        "exactly the touched pages"
    );

    // After exit: unknown, said as such, never 0.
    let fixture = Waiting::start(&fixture("resident"), &[] as &[&str]);
    let tracing = Tracing::start(&["--pid", &fixture.pid().to_string(), "--interval", "100ms"]);
    fixture.go_and_wait();
    let report = tracing.finish().report();
    let stacks = report.stacks_through("resident_map");
    assert_eq!(stacks[0]["live_bytes"], 64 * PAGE);
    assert!(stacks[0]["resident_bytes"].is_null(), "{}", stacks[0]);
    let issuer = report
        .object_row("by_issuer", "resident")
        .expect("issuer row");
    assert!(issuer["resident_bytes"].is_null());
    assert!(report.get("totals.resident_bytes").is_null());
    // While it ran, the samples saw its 10 pages.
    let seen = report.0["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let by_issuer = s["resident_by_issuer"].as_object()?;
            let (_, bytes) = by_issuer.iter().find(|(o, _)| basename(o) == "resident")?;
            bytes.as_u64()
        })
        .max();
    assert_eq!(seen, Some(10 * PAGE));
}

/// 64 GiB reserved PROT_NONE, then 16 MiB chunks made accessible with
/// mprotect and touched: exact reserved and accessible bytes; the resident
/// growth is flagged on the committing stack; the reservation is no rate.
#[test]
fn reserved_address_space_is_not_growth_and_commits_keep_their_stack() {
    let _e2e = begin();
    let chunks = 24u64;
    let chunk = 16u64 << 20;
    let report = traced_until_done(
        "reserve",
        &[&chunks.to_string()],
        &["--interval", "250ms", "--min-window", "4s"],
    );
    let reserve = report.stacks_through("reserve_space");
    let commit = report.stacks_through("commit_chunk");
    assert_eq!(sum(&reserve, "live_bytes"), 64 << 30);
    assert_eq!(sum(&reserve, "reserved_bytes"), (64 << 30) - chunks * chunk);
    assert_eq!(
        sum(&reserve, "accessible_bytes"),
        0,
        "the commits hold those"
    );
    assert_eq!(sum(&commit, "mprotect_calls"), chunks);
    assert_eq!(sum(&commit, "committed_bytes"), chunks * chunk);
    assert_eq!(sum(&commit, "accessible_bytes"), chunks * chunk);
    assert_eq!(
        sum(&commit, "resident_bytes"),
        chunks * chunk,
        "every page touched"
    );
    assert_eq!(
        report.u64("totals.reserved_bytes"),
        (64 << 30) - chunks * chunk
    );
    assert_eq!(report.u64("events.mprotect"), chunks, "only the commits");

    let rows: Vec<&serde_json::Value> = report.0["growth"].as_array().unwrap().iter().collect();
    let flagged: Vec<_> = rows.iter().filter(|r| r["flagged"] == true).collect();
    assert!(!flagged.is_empty(), "{}", report.0["growth"]);
    for row in &flagged {
        assert_eq!(
            row["object"].as_str().map(mmap_trace_tests::basename),
            Some("reserve")
        );
        // 16 MiB every 250 ms.
        let rate = row["resident_bytes_per_min"].as_f64().unwrap();
        let truth = 64.0 * 60.0 * 1048576.0;
        assert!((rate - truth).abs() < 0.1 * truth, "{rate} vs {truth}");
    }
    // The 64 GiB reservation is one step, not a rate: no mapped growth
    // anywhere beyond a few MiB/min.
    for row in rows {
        let mapped = row["bytes_per_min"].as_f64().unwrap();
        assert!(mapped.abs() < 5.0 * 1048576.0, "{row}");
        assert_eq!(row["address_space_growing"], false, "{row}");
    }
}

/// Pages given back with MADV_DONTNEED: resident goes back to 0 while the
/// mapping stays live, no growth is seen, and the call is on its stack.
#[test]
fn pages_given_back_with_madvise_are_no_longer_resident() {
    let _e2e = begin();
    let report = traced_until_done(
        "dontneed",
        &[],
        &["--interval", "100ms", "--min-window", "2s"],
    );
    let mapped = report.stacks_through("touched_map");
    assert_eq!(sum(&mapped, "live_bytes"), 64 * PAGE, "still mapped");
    assert_eq!(sum(&mapped, "resident_bytes"), 0, "but nothing resident");
    let given = report.stacks_through("give_back");
    assert_eq!(sum(&given, "madvise_calls"), 1);
    assert_eq!(sum(&given, "advised_bytes"), 64 * PAGE);
    assert_eq!(
        sum(&given, "resident_returned_bytes"),
        64 * PAGE,
        "all 64 touched pages were resident at the sample before"
    );
    assert_eq!(report.get("growth_judged"), true);
    assert!(
        report.0["growth"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["flagged"] == false),
        "{}",
        report.0["growth"]
    );
}

/// A memfd mapping is shared memory, with its resident pages counted
/// exactly.
#[test]
fn a_memfd_mapping_is_shared_memory() {
    let _e2e = begin();
    let report = traced_until_done("memfd", &[], &["--interval", "100ms"]);
    assert_eq!(report.u64("totals.by_kind.shared.live_bytes"), 16 * PAGE);
    assert_eq!(
        report.u64("totals.by_kind.shared.resident_bytes"),
        10 * PAGE
    );
    assert_eq!(report.u64("totals.by_kind.file.live_bytes"), 0);
}
