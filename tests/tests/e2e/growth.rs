//! Who is growing: verdicts about the resident memory that grows, not the
//! address space; a steady part after a start-up burst; no verdict without
//! evidence; the RSS growth the verdict explains.

use mmap_trace_tests::{
    Report, Tracing, Waiting, basename, begin, fixture, mmap_trace, record_json, scratch_path,
};
use serde_json::Value;

const MIB: f64 = 1024.0 * 1024.0;

fn growth_rows<'a>(report: &'a Report, object: &str) -> Vec<&'a Value> {
    report.0["growth"]
        .as_array()
        .expect("growth[]")
        .iter()
        .filter(|row| basename(row["object"].as_str().unwrap()) == object)
        .collect()
}

fn number(row: &Value, field: &str) -> f64 {
    row[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number: {row}"))
}

/// Within `tolerance` (a fraction) of `truth`.
fn near(value: f64, truth: f64, tolerance: f64) -> bool {
    (value - truth).abs() <= tolerance * truth
}

/// The resident bytes a sample gives the issuer whose file name is `name`.
fn resident_of(sample: &Value, name: &str) -> Option<u64> {
    sample["resident_by_issuer"]
        .as_object()?
        .iter()
        .find(|(object, _)| basename(object) == name)?
        .1
        .as_u64()
}

/// The RSS growth the flagged objects explain, as a fraction.
fn explained(report: &Report) -> f64 {
    report.0["rss_growth"]["explained_fraction"]
        .as_f64()
        .unwrap_or_else(|| panic!("rss_growth: {}", report.0["rss_growth"]))
}

/// One process, three libraries: libleak touches what it maps (resident
/// memory grows), libhoard never does (only the address space grows),
/// libbalanced gives back what it takes.
#[test]
fn resident_growth_is_flagged_and_address_space_growth_is_not() {
    let _e2e = begin();
    let service = Waiting::start(&fixture("growth"), &["30"]);
    let pid = service.pid().to_string();
    let tracing = Tracing::start(&[
        "--pid",
        &pid,
        "--duration",
        "6s",
        "--interval",
        "250ms",
        "--min-window",
        "4s",
    ]);
    let report = tracing.finish().report();
    service.kill();
    assert_eq!(report.get("growth_judged"), true);

    let first = &report.0["growth"][0];
    assert_eq!(
        basename(first["object"].as_str().unwrap()),
        "libleak.so",
        "{first}"
    );
    // 64 KiB every 100 ms, all of it touched.
    let truth = 64.0 * 1024.0 * 10.0 * 60.0;
    for row in growth_rows(&report, "libleak.so") {
        assert_eq!(row["flagged"], true, "{row}");
        assert_eq!(row["basis"], "resident");
        let rate = number(row, "resident_bytes_per_min");
        assert!(
            near(rate, truth, 0.10),
            "{} resident {rate} vs {truth}",
            row["role"]
        );
        assert!(number(row, "resident_fit_r2") > 0.9, "{row}");
    }
    // 1 MiB every 100 ms, never touched.
    for row in growth_rows(&report, "libhoard.so") {
        assert_eq!(row["flagged"], false, "{row}");
        assert_eq!(row["address_space_growing"], true, "{row}");
        assert!(
            near(number(row, "bytes_per_min"), 10.0 * 60.0 * MIB, 0.10),
            "{row}"
        );
        assert!(number(row, "resident_bytes_per_min").abs() < MIB, "{row}");
    }
    for row in growth_rows(&report, "libbalanced.so") {
        assert_eq!(row["flagged"], false, "{row}");
        assert_eq!(row["address_space_growing"], false, "{row}");
    }
    let fraction = explained(&report);
    assert!(
        fraction >= 0.9,
        "libleak explains {fraction} of the RSS growth"
    );
}

/// 128 MiB at start, then 1 MiB every 100 ms: the rate is the steady one,
/// and the steady part starts after the burst.
#[test]
fn a_warm_up_burst_does_not_hide_the_steady_climb() {
    let _e2e = begin();
    let (report, run) = record_json(
        &["--interval", "250ms", "--min-window", "4s"],
        &[fixture("warmup").into_os_string(), "60".into()],
    );
    assert!(run.status.success(), "{}", run.stderr);
    let rows = growth_rows(&report, "warmup");
    assert_eq!(rows.len(), 2, "issuer and requester");
    // The burst lies between the first samples; the growth after it.
    let truth = 10.0 * 60.0 * MIB;
    for row in rows {
        assert_eq!(row["flagged"], true, "{row}");
        let rate = number(row, "resident_bytes_per_min");
        assert!(near(rate, truth, 0.10), "{rate} vs {truth}: {row}");
        let since = number(row, "since_s");
        let burst_seen = report.0["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| resident_of(s, "warmup") >= Some(128 << 20))
            .map(|s| s["time_s"].as_f64().unwrap())
            .expect("a sample after the burst");
        assert!(
            since >= burst_seen - 0.3,
            "since {since}, burst seen at {burst_seen}"
        );
    }
    assert_eq!(report.get("growth.0.role"), "issuer");
    let fraction = explained(&report);
    assert!(
        fraction >= 0.9,
        "the climb explains {fraction} of the RSS growth"
    );
}

/// A 0.1 s command gets no verdict: nothing flagged, no rate, and the text
/// says so.
#[test]
fn a_short_command_cannot_be_judged() {
    let _e2e = begin();
    let (report, run) = record_json(&[], &["true"]);
    assert!(run.status.success());
    assert_eq!(report.get("growth_judged"), false);
    let note = report.get("growth_note").as_str().unwrap();
    assert!(note.starts_with("growth cannot be judged yet"), "{note}");
    for row in report.0["growth"].as_array().unwrap() {
        assert_eq!(row["flagged"], false);
        assert!(row["bytes_per_min"].is_null() && row["resident_bytes_per_min"].is_null());
    }
    // A compile: the dynamic loader and the compiler map a lot, quickly.
    let source = scratch_path("short.c");
    std::fs::write(&source, "int main(void) { return 0; }\n").unwrap();
    let object = scratch_path("short.o");
    let run = mmap_trace(&[
        "record".as_ref(),
        "--".as_ref(),
        "gcc".as_ref(),
        "-c".as_ref(),
        source.as_os_str(),
        "-o".as_ref(),
        object.as_os_str(),
    ]);
    std::fs::remove_file(&source).unwrap();
    std::fs::remove_file(&object).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("Who is growing: growth cannot be judged yet"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("/min"),
        "no per-minute figure: {}",
        run.stdout
    );
}

/// A UCX registration cache that grows (Debian's libucs), traced from
/// `--pid`: flagged by resident growth, with the UCX hint.
#[test]
fn a_growing_ucx_registration_cache_is_flagged_with_the_hint() {
    let _e2e = begin();
    let cache = Waiting::start(&fixture("ucx_rcache"), &["30"]);
    let pid = cache.pid().to_string();
    let tracing = Tracing::start(&[
        "--pid",
        &pid,
        "--duration",
        "6s",
        "--interval",
        "250ms",
        "--min-window",
        "4s",
    ]);
    let report = tracing.finish().report();
    cache.kill();
    let rows: Vec<&Value> = report.0["growth"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["flagged"] == true)
        .collect();
    let hinted: Vec<&&Value> = rows
        .iter()
        .filter(|row| {
            row["patterns"]
                .as_array()
                .is_some_and(|p| p.iter().any(|name| name == "ucx-registration-cache"))
        })
        .collect();
    assert!(!hinted.is_empty(), "growth: {}", report.0["growth"]);
    for row in &hinted {
        assert_eq!(row["basis"], "resident");
        assert!(number(row, "resident_bytes_per_min") > MIB, "{row}");
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
    let requester = hinted
        .iter()
        .find(|row| row["role"] == "requester")
        .expect("a requester row");
    assert!(basename(requester["object"].as_str().unwrap()).starts_with("libucs"));

    // A program that merely loads UCX and maps memory gets no hint.
    let (plain, run) = record_json(&[], &[fixture("ucx")]);
    assert!(run.status.success());
    assert!(
        plain.0["growth"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["patterns"].as_array().unwrap().is_empty()),
        "{}",
        plain.0["growth"]
    );
}

/// `--fail-on-growth` turns a verdict into an exit status, for CI gates;
/// `report` gives the same verdict from the trace.
#[test]
fn fail_on_growth_exits_with_its_own_status() {
    let _e2e = begin();
    let trace = scratch_path("growing.mtrace");
    let warmup = fixture("warmup");
    let args = ["--interval", "250ms", "--min-window", "4s"];
    let mut record = vec!["record", "--fail-on-growth", "-o", trace.to_str().unwrap()];
    record.extend(args);
    record.extend(["--", warmup.to_str().unwrap(), "50"]);
    let run = mmap_trace(&record);
    assert_eq!(run.status.code(), Some(10), "{}", run.stderr);
    let run = mmap_trace(&[
        "report",
        "--fail-on-growth",
        "--min-window",
        "4s",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(10), "{}", run.stderr);
    let run = mmap_trace(&["report", "--fail-on-growth", trace.to_str().unwrap()]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "a 10 s window is not judged: {}",
        run.stdout
    );
    std::fs::remove_file(&trace).unwrap();
}
