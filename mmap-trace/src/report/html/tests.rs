//! The HTML page: its sections, escaping, self-containment and size.

use super::*;
use crate::report::{
    FrameRow,
    sample_report::{lab_report, many_stacks, native, stack},
};

#[test]
fn has_every_section() {
    let report = lab_report();
    let page = render_html(&report, Weight::Live).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<title>mmap-trace: ./lab 64</title>"));
    assert!(page.contains("exited with status 0"));
    assert!(page.contains("Stopped by command exit"));
    // Not judged: the note, as the text report says it.
    assert!(
        page.contains(
            "<p class=\"note\">the window (1.5 s) is shorter than --min-window (10 s).</p>"
        )
    );
    for section in ["By issuer", "By requester", "By Python caller", "Timeline"] {
        assert!(page.contains(&format!(">{section}</h2>")), "{section}");
    }
    assert!(page.contains("<svg class=\"chart\""));
    // The chart: the process's RSS and liblab's resident bytes.
    assert!(page.contains("pid 100 RSS (VmRSS)"));
    assert!(page.contains("liblab.so resident (issuer /lab/liblab.so)"));
    assert!(page.contains("<svg class=\"flame\""));
    assert!(page.contains("lab_region_get (4,194,304 bytes, 88.89%)"));
    // Every stack, with its frames; inlined ones marked.
    assert_eq!(page.matches("<li class=\"stack\">").count(), 3);
    assert!(page.contains("lab_region_get+0x10 <span class=\"loc\">(liblab.c:13)</span>"));
    assert!(page.contains("raw_mmap <span class=\"loc\">(raw.h:3)</span> [inlined]"));
    assert!(page.contains("BlockPool.allocate <span class=\"loc\">(pool.py:88)</span>"));
    assert!(page.contains("<input id=\"filter\""));
    assert!(page.contains("stacks shown"), "the filter script");
}

#[test]
fn verdicts_and_hints_are_shown_when_judged() {
    let mut report = lab_report();
    report.growth_judged = true;
    report.growth_note = None;
    let grower = &mut report.growth[0];
    grower.flagged = true;
    grower.resident_bytes_per_min = Some(3.0 * 1048576.0);
    grower.resident_fit_r2 = Some(0.97);
    grower.hints = vec!["set UCX_MEM_EVENTS=no".into()];
    report.rss_growth = Some(RssGrowth {
        bytes_per_min: 4.0 * 1048576.0,
        fit_r2: 0.9,
        since_s: 1.0,
        explained_bytes_per_min: 3.0 * 1048576.0,
        explained_fraction: Some(0.75),
        file_bytes_per_min: 0.0,
        untraced_anon_bytes_per_min: 1048576.0,
    });
    let page = render_html(&report, Weight::Resident).unwrap();
    assert!(page.contains("Resident memory grows steadily in:"));
    assert!(page.contains("<b>issuer /lab/liblab.so</b>: +3.0 MiB/min resident (fit r² 0.97"));
    assert!(page.contains("try: set UCX_MEM_EVENTS=no"));
    assert!(page.contains("These explain 75% of the RSS growth (+3.0 MiB/min of +4.0 MiB/min)"));
    assert!(page.contains("Widths: Resident bytes (at the last sample)"));
}

#[test]
fn what_the_traced_program_names_is_escaped() {
    let evil = "/tmp/</td><script>alert(1)</script>&\"'.so";
    let mut report = lab_report();
    report.command = Some(vec!["<img src=x onerror=alert(2)>".into()]);
    report.growth_note = Some("<b>not bold</b>".into());
    report.by_issuer[0].object = evil.into();
    let mut frame: FrameRow = native(evil, 0x10, Some("<script>alert(3)</script>"));
    frame.file = Some("/src/<i>.c".into());
    let mut row = stack(vec![frame], 4096, None);
    row.issuer = evil.into();
    report.stacks.push(row);
    let page = render_html(&report, Weight::Live).unwrap();
    for raw in [
        "<script>alert",
        "<img src",
        "<b>not bold</b>",
        "</td><script>",
        "<i>.c",
    ] {
        assert!(!page.contains(raw), "{raw} is not escaped");
    }
    assert!(
        page.contains("/tmp/&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#39;.so")
    );
    assert!(page.contains("&lt;img src=x onerror=alert(2)&gt;"));
    assert!(page.contains("&lt;script&gt;alert(3)&lt;/script&gt;"));
    // Our own script is the only one.
    assert_eq!(page.matches("<script").count(), 1);
}

#[test]
fn needs_nothing_from_the_network() {
    let page = render_html(&lab_report(), Weight::Live).unwrap();
    assert!(page.contains("Content-Security-Policy\" content=\"default-src 'none'"));
    for fetches in [
        " src=", "href=", "<link", "url(http", "@import", "<iframe", "<img",
    ] {
        assert!(!page.contains(fetches), "{fetches}");
    }
}

#[test]
fn ten_thousand_stacks_stay_under_five_megabytes() {
    let report = many_stacks(10_000, 24);
    let page = render_html(&report, Weight::Live).unwrap();
    let flame_start = page.find("<svg class=\"flame\"").unwrap();
    let flame_end = flame_start + page[flame_start..].find("</div>").unwrap();
    eprintln!(
        "html for 10k stacks of 24 frames: {} bytes (flame graph {} bytes, {} frames drawn)",
        page.len(),
        flame_end - flame_start,
        page[flame_start..flame_end].matches("<g>").count()
    );
    assert!(page.len() < 5_000_000, "{} bytes", page.len());
    // The top stacks, not all of them, and it says so.
    let listed = page.matches("<li class=\"stack\">").count();
    assert!((100..=1000).contains(&listed), "{listed}");
    assert!(page.contains(&format!("The top {listed} of 10000 stacks")));

    // The worst case for the flame graph: every stack as wide as the next,
    // each just wide enough to be drawn at first.
    let mut even = many_stacks(2_000, 24);
    for row in &mut even.stacks {
        row.live_bytes = 4096;
    }
    let page = render_html(&even, Weight::Live).unwrap();
    eprintln!("html for 2k equal stacks: {} bytes", page.len());
    assert!(page.len() < 5_000_000, "{} bytes", page.len());
}
