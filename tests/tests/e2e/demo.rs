//! The bundled lab (what `cargo xtask demo` runs): liblab.so must be the
//! issuer of exactly the bytes the lab leaks.

use mmap_trace_tests::{PAGE, begin, fixture, record_json};

#[test]
fn the_lab_leak_is_attributed_to_liblab() {
    let _e2e = begin();
    let region = 256 * 1024;
    let (report, run) = record_json(&[], &[fixture("lab").into_os_string(), "64".into()]);
    assert!(run.status.success());
    let liblab = report
        .object_row("by_issuer", "liblab.so")
        .expect("liblab row");
    assert_eq!(
        liblab["live_bytes"],
        16 * region,
        "exactly the 16 leaked regions"
    );
    assert_eq!(liblab["live_regions"], 16);
    assert_eq!(liblab["mapped_bytes"], 64 * region);
    assert_eq!(liblab["unmapped_bytes"], 48 * region);
    assert_eq!(liblab["calls"], 64 + 48);
    assert_eq!(
        report.by_issuer_rank("liblab.so"),
        0,
        "the top issuer by live bytes"
    );
    // The balanced libc traffic leaves nothing behind.
    let scratch = report.stacks_through("scratch_work");
    assert_eq!(mmap_trace_tests::sum(&scratch, "live_bytes"), 0);
    assert_eq!(
        mmap_trace_tests::sum(&scratch, "mapped_bytes"),
        64 * 16 * PAGE
    );
}
