//! Pictures: folded stacks, flame graphs, the HTML report, pprof, each read
//! by a real consumer: an XML parser, headless Chromium (Debian's
//! `chromium`), `go tool pprof` (Debian's `golang-go`). `cargo xtask setup`
//! installs both; without them these tests fail, they never skip.

use std::{
    collections::HashSet,
    ffi::OsStr,
    io::Read as _,
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mmap_trace_tests::{
    PAGE, Run, Waiting, begin, fixture, mmap_trace, mmap_trace_bin, scratch_path, wait_with_timeout,
};

const REGION: u64 = 256 * 1024;

/// A trace of `lab ARGS` (`record -o X.mtrace`).
fn lab_trace(name: &str, args: &[&str]) -> PathBuf {
    let trace = scratch_path(name);
    let lab = fixture("lab");
    let mut all = vec!["record", "-o", trace.to_str().unwrap(), "--"];
    all.push(lab.to_str().unwrap());
    all.extend(args);
    let run = mmap_trace(&all);
    assert!(run.status.success(), "{}", run.stderr);
    trace
}

/// A trace of a fixture traced from `--pid` while it runs: it is let go,
/// its "done" awaited, and tracing ends (by --duration) while it waits to
/// exit, so its resident bytes are known. Not by SIGINT: mmap-trace says
/// "tracing" before its signal handlers are in place, so a SIGINT sent
/// right after the line can kill it.
fn trace_until_done(name: &str) -> PathBuf {
    const DURATION: Duration = Duration::from_secs(4);
    let trace = scratch_path(&format!("{name}.mtrace"));
    let mut fixture = Waiting::start(&fixture(name), &[] as &[&str]);
    let mut child = Command::new(mmap_trace_bin())
        .args(["record", "--interval", "100ms", "--duration", "4s", "-o"])
        .arg(&trace)
        .args(["--pid", &fixture.pid().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmap-trace");
    // Its "tracing" line says it is attached.
    let mut stderr = child.stderr.take().expect("piped");
    let mut said = Vec::new();
    let started = Instant::now();
    while !String::from_utf8_lossy(&said).contains("mmap-trace: tracing") {
        let mut byte = [0u8; 1];
        let read = stderr.read(&mut byte).unwrap_or(0);
        assert!(
            read == 1 && started.elapsed() < Duration::from_secs(120),
            "mmap-trace did not attach: {}",
            String::from_utf8_lossy(&said)
        );
        said.push(byte[0]);
    }
    child.stderr = Some(stderr);
    let attached = Instant::now();
    fixture.go();
    fixture.expect_line("done");
    assert!(
        attached.elapsed() < DURATION / 2,
        "the fixture was too slow to be traced to the end"
    );
    let run = wait_with_timeout(child);
    assert!(run.status.success(), "mmap-trace failed: {}", run.stderr);
    fixture.finish();
    trace
}

/// `mmap-trace report TRACE -f FORMAT -o FILE EXTRA...`: the file's bytes.
fn render(trace: &Path, format: &str, extra: &[&str]) -> Vec<u8> {
    let out = scratch_path(&format!("picture.{format}"));
    let mut args = vec!["report", trace.to_str().unwrap(), "-f", format];
    args.extend(["-o", out.to_str().unwrap()]);
    args.extend(extra);
    let run = mmap_trace(&args);
    assert!(run.status.success(), "{args:?}: {}", run.stderr);
    let bytes = std::fs::read(&out).expect("the picture");
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// Folded lines → (frames, weight).
fn folded(text: &[u8]) -> Vec<(Vec<String>, u64)> {
    String::from_utf8(text.to_vec())
        .expect("folded stacks are text")
        .lines()
        .map(|line| {
            let (stack, weight) = line.rsplit_once(' ').expect("stack and weight");
            let weight: u64 = weight.parse().expect("a whole weight");
            assert!(weight > 0, "weight 0 is left out: {line}");
            (stack.split(';').map(str::to_owned).collect(), weight)
        })
        .collect()
}

/// The summed weight of the folded stacks through `function`.
fn weight_through(lines: &[(Vec<String>, u64)], function: &str) -> u64 {
    lines
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| f == function))
        .map(|(_, weight)| weight)
        .sum()
}

/// Runs a consumer; a missing one fails the test with what installs it.
fn consumer(program: &str, args: &[&OsStr]) -> Run {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): `cargo xtask setup` installs it"));
    wait_with_timeout(child)
}

#[test]
fn folded_stacks_weigh_exactly_what_the_stacks_hold() {
    let _e2e = begin();
    let trace = lab_trace("lab-folded.mtrace", &["64"]);
    let live = folded(&render(&trace, "folded", &[]));
    assert_eq!(
        weight_through(&live, "lab_region_get"),
        16 * REGION,
        "the 16 leaked regions"
    );
    // Root first: the leak's line runs from main down to the syscall.
    let (leak, _) = live
        .iter()
        .find(|(frames, _)| frames.iter().any(|f| f == "lab_region_get"))
        .unwrap();
    let at = |name: &str| leak.iter().position(|f| f == name).unwrap();
    assert!(at("main") < at("cache_register") && at("cache_register") < at("lab_region_get"));
    assert_eq!(leak.last().map(String::as_str), Some("syscall"));
    let mapped = folded(&render(&trace, "folded", &["--weight", "mapped"]));
    assert_eq!(weight_through(&mapped, "lab_region_get"), 64 * REGION);
    let calls = folded(&render(&trace, "folded", &["--weight", "calls"]));
    assert_eq!(weight_through(&calls, "lab_region_get"), 64, "64 mmaps");
    assert_eq!(weight_through(&calls, "lab_region_put"), 48, "48 munmaps");
    // The lab exited: its resident bytes are unknown, so nothing weighs.
    let resident = folded(&render(&trace, "folded", &["--weight", "resident"]));
    assert_eq!(weight_through(&resident, "lab_region_get"), 0);
    std::fs::remove_file(&trace).unwrap();

    // Traced while it runs: the 10 touched pages of 16.
    let trace = trace_until_done("memfd");
    let resident = folded(&render(&trace, "folded", &["--weight", "resident"]));
    assert_eq!(weight_through(&resident, "map_memfd"), 10 * PAGE);
    let live = folded(&render(&trace, "folded", &[]));
    assert_eq!(weight_through(&live, "map_memfd"), 16 * PAGE);
    std::fs::remove_file(&trace).unwrap();
}

/// The `<title>` texts of an SVG, parsed as XML.
fn svg_titles(svg: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(svg).expect("UTF-8");
    // inferno's SVG names SVG 1.1's DTD, as flamegraph.pl's does.
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let document = roxmltree::Document::parse_with_options(text, options).expect("well-formed XML");
    assert_eq!(document.root_element().tag_name().name(), "svg");
    document
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text().map(str::to_owned))
        .collect()
}

#[test]
fn flame_graphs_are_svg_naming_the_leak() {
    let _e2e = begin();
    let trace = lab_trace("lab-svg.mtrace", &["64"]);
    let titles = svg_titles(&render(&trace, "svg", &[]));
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("lab_region_get (4,194,304 bytes")),
        "{titles:?}"
    );
    std::fs::remove_file(&trace).unwrap();

    // What the fix changed: 16 rounds leak 4 regions; the fixed lab none.
    let leaking = lab_trace("lab-leaking.mtrace", &["16"]);
    let fixed = lab_trace("lab-fixed.mtrace", &["16", "fixed"]);
    let diff = |format: &str| {
        let run = mmap_trace(&[
            "diff",
            "-f",
            format,
            leaking.to_str().unwrap(),
            fixed.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", run.stderr);
        run.stdout
    };
    let titles = svg_titles(diff("svg").as_bytes());
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("lab_region_get (1,048,576 bytes")),
        "drawn with the widths before the fix: {titles:?}"
    );
    // The differential folded lines: stack, before, after.
    let folded = diff("folded");
    let leak: Vec<&str> = folded
        .lines()
        .filter(|l| l.split(';').any(|f| f == "lab_region_get"))
        .collect();
    assert_eq!(leak.len(), 1, "{folded}");
    assert!(leak[0].ends_with(" 1048576 0"), "{}", leak[0]);
    std::fs::remove_file(&leaking).unwrap();
    std::fs::remove_file(&fixed).unwrap();
}

/// `chromium --headless` with a fresh profile and nothing that reaches
/// the network on its own, on `page`, doing `what`.
fn chromium(page: &Path, what: &str) -> Run {
    let profile = scratch_path("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let user_data = format!("--user-data-dir={}", profile.display());
    let url = format!("file://{}", page.display());
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,2400",
        &user_data,
        what,
        &url,
    ]
    .map(OsStr::new);
    let run = consumer("chromium", &args);
    std::fs::remove_dir_all(&profile).unwrap();
    assert!(run.status.success(), "chromium: {}", run.stderr);
    run
}

#[test]
fn the_html_report_opens_offline_in_chromium() {
    let _e2e = begin();
    let trace = lab_trace("lab-html.mtrace", &["64"]);
    let page = scratch_path("report.html");
    std::fs::write(&page, render(&trace, "html", &[])).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&render(&trace, "json", &[])).expect("JSON report");
    let note = json["growth_note"]
        .as_str()
        .expect("a run too short to judge");

    let dom = chromium(&page, "--dump-dom").stdout;
    assert!(dom.contains("lab_region_get"), "{dom}");
    assert!(dom.contains(">Who is growing</h2>"));
    assert!(dom.contains(note), "the verdict: {note}");
    assert!(dom.contains("<svg class=\"chart\""), "the timeline chart");
    assert!(dom.contains("<svg class=\"flame\""), "the flame graph");
    // Only the page's script writes this: it ran.
    let stacks = json["stacks"].as_array().unwrap().len();
    assert!(
        dom.contains(&format!("{stacks} of {stacks} stacks shown")),
        "the filter script ran"
    );

    let png = scratch_path("report.png");
    chromium(&page, &format!("--screenshot={}", png.display()));
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png).expect("the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("its size")];
    let frame = reader.next_frame(&mut pixels).expect("its pixels");
    let channels = frame.color_type.samples();
    let colours: HashSet<&[u8]> = pixels[..frame.buffer_size()].chunks(channels).collect();
    assert!(
        colours.len() > 1,
        "a blank screenshot ({}x{})",
        frame.width,
        frame.height
    );
    for file in [&page, &png, &trace] {
        std::fs::remove_file(file).unwrap();
    }
}

/// `go tool pprof -top -unit=B -sample_index=INDEX FILE`: the cumulative
/// bytes of `function`.
fn pprof_cum_bytes(profile: &Path, index: &str, function: &str) -> String {
    let run = consumer(
        "go",
        &[
            "tool",
            "pprof",
            "-top",
            "-unit=B",
            &format!("-sample_index={index}"),
            profile.to_str().unwrap(),
        ]
        .map(OsStr::new),
    );
    assert!(run.status.success(), "go tool pprof: {}", run.stderr);
    // flat flat% sum% cum cum% name
    let line = run
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(5) == Some(function))
        .unwrap_or_else(|| panic!("{function} is not in\n{}", run.stdout));
    line.split_whitespace().nth(3).unwrap().to_owned()
}

#[test]
fn pprof_profiles_read_in_go_tool_pprof() {
    let _e2e = begin();
    let trace = lab_trace("lab-pprof.mtrace", &["64"]);
    let profile = scratch_path("lab.pb.gz");
    std::fs::write(&profile, render(&trace, "pprof", &[])).unwrap();
    assert_eq!(
        pprof_cum_bytes(&profile, "inuse_space", "lab_region_get"),
        format!("{}B", 16 * REGION)
    );
    assert_eq!(
        pprof_cum_bytes(&profile, "alloc_space", "lab_region_get"),
        format!("{}B", 64 * REGION)
    );
    std::fs::remove_file(&profile).unwrap();
    std::fs::remove_file(&trace).unwrap();

    let trace = trace_until_done("memfd");
    std::fs::write(&profile, render(&trace, "pprof", &[])).unwrap();
    assert_eq!(
        pprof_cum_bytes(&profile, "resident_space", "map_memfd"),
        format!("{}B", 10 * PAGE)
    );
    std::fs::remove_file(&profile).unwrap();

    // Binary to a terminal: refused, in one line.
    let (master, terminal) = pty();
    let run = Command::new(mmap_trace_bin())
        .args(["report", "-f", "pprof", trace.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::from(terminal))
        .stderr(Stdio::piped())
        .output()
        .expect("run mmap-trace");
    drop(master);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&run.stderr),
        "mmap-trace: pprof is binary: write it to a file with -o\n"
    );
    std::fs::remove_file(&trace).unwrap();
}

/// A pseudo-terminal: (master, the terminal end).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut terminal) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the integers we pass;
    // the name, termios and window size are optional (null).
    let result = unsafe {
        libc::openpty(
            &mut master,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(result, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are ours.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(terminal)) }
}
