//! Watching while tracing: `top`'s live view on a terminal, and `record`'s
//! status line, which only a terminal gets.

use std::process::{Command, Stdio};

use mmap_trace_tests::{Pty, Waiting, begin, fixture, mmap_trace, mmap_trace_bin, scratch_path};

const ROWS: u16 = 40;
const COLUMNS: u16 = 120;

/// Leaving the alternate screen: the last thing `top` writes.
const LEAVE_ALTERNATE_SCREEN: &[u8] = b"\x1b[?1049l";

/// The end of a synchronized update: `top` ends each frame with it.
const FRAME_END: &[u8] = b"\x1b[?2026l";

/// What `top` wrote up to the end of its last whole frame (the terminal
/// hands the test what it reads in pieces: a frame may be half read).
fn whole_frames(output: &[u8]) -> &[u8] {
    let end = output
        .windows(FRAME_END.len())
        .rposition(|window| window == FRAME_END)
        .map_or(0, |at| at + FRAME_END.len());
    &output[..end]
}

/// The screen a terminal of ROWS × COLUMNS shows after `output`.
fn screen(output: &[u8]) -> vt100::Parser {
    let size = |n| std::num::NonZeroU16::new(n).expect("a size");
    let mut terminal = vt100::Parser::new(size(ROWS), size(COLUMNS), 0);
    terminal.process(output);
    terminal
}

/// The screen's lines holding all of `words`.
fn lines_with(terminal: &vt100::Parser, words: &[&str]) -> Vec<String> {
    terminal
        .screen()
        .contents()
        .lines()
        .filter(|line| words.iter().all(|w| line.contains(w)))
        .map(str::to_owned)
        .collect()
}

/// growth's libleak.so leaks 64 KiB it touches every 100 ms: `top`
/// flags it as a growing requester, shows the process, and `q` quits,
/// giving the terminal back (main screen, line mode) and detaching.
#[test]
fn top_flags_the_growing_requester_and_quits_on_q() {
    let _e2e = begin();
    let service = Waiting::start(&fixture("growth"), &["60"]);
    let pid = service.pid().to_string();
    let pty = Pty::open(ROWS, COLUMNS);
    let mut command = Command::new(mmap_trace_bin());
    command
        .args(["top", "--pid", &pid, "--interval", "250ms"])
        .args(["--min-window", "2s"])
        .stdin(pty.stream())
        .stdout(pty.stream())
        .stderr(pty.stream());
    let mut top = pty.spawn(command);
    let growing = ["growing", "requester", "libleak.so"];
    top.wait_until("flagged libleak.so as a growing requester", |output| {
        !lines_with(&screen(whole_frames(output)), &growing).is_empty()
    });
    let shown = screen(whole_frames(&top.output()));
    assert!(
        shown.screen().alternate_screen(),
        "drawn on the alternate screen"
    );
    let row = &lines_with(&shown, &growing)[0];
    assert!(row.contains("MiB/min  resident"), "a resident rate: {row}");
    let process = lines_with(&shown, &[&pid, "growth"]);
    assert_eq!(process.len(), 1, "{}", shown.screen().contents());

    top.type_keys(b"q");
    let status = top.wait();
    service.kill();
    let output = top.output();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output)
    );
    assert!(
        output.ends_with(LEAVE_ALTERNATE_SCREEN),
        "the last bytes: {:?}",
        String::from_utf8_lossy(&output[output.len().saturating_sub(40)..])
    );
    let after = screen(&output);
    assert!(!after.screen().alternate_screen());
    assert!(!after.screen().hide_cursor(), "the cursor is shown again");
    assert!(top.is_cooked(), "raw mode is over");
}

/// Without a terminal to draw on, `top` says so in one line and fails,
/// before loading anything.
#[test]
fn top_needs_a_terminal() {
    let _e2e = begin();
    let run = mmap_trace(&["top", "--pid", &std::process::id().to_string()]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(
        run.stderr,
        "mmap-trace: top draws a live view on a terminal, and stdout is not one \
         (for a report or a trace, use `mmap-trace record`)\n"
    );
    assert_eq!(run.stdout, "");
}

/// What `record --pid <growth> -o FILE <extra>` writes to stderr when
/// stderr is a terminal (stdout is not).
fn record_on_a_terminal(extra: &[&str]) -> String {
    let service = Waiting::start(&fixture("growth"), &["60"]);
    let report = scratch_path("status.json");
    let pty = Pty::open(ROWS, COLUMNS);
    let mut command = Command::new(mmap_trace_bin());
    command
        .args(["record", "--pid", &service.pid().to_string()])
        .args([
            "--duration",
            "2s",
            "--interval",
            "250ms",
            "-f",
            "json",
            "-o",
        ])
        .arg(&report)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(pty.stream());
    let mut record = pty.spawn(command);
    let status = record.wait();
    service.kill();
    let stderr = String::from_utf8_lossy(&record.output()).into_owned();
    assert!(status.success(), "{stderr}");
    let json = std::fs::read_to_string(&report).expect("the report");
    std::fs::remove_file(&report).expect("remove the report");
    assert!(json.starts_with('{'), "a JSON report: {json}");
    stderr
}

/// Carriage return and clear to the end of the line.
const CLEAR_LINE: &str = "\r\x1b[K";

#[test]
fn the_status_line_is_drawn_in_place_on_a_terminal_and_cleared() {
    let _e2e = begin();
    let stderr = record_on_a_terminal(&[]);
    let (said, status) = stderr
        .split_once(CLEAR_LINE)
        .unwrap_or_else(|| panic!("no status line: {stderr:?}"));
    // The terminal turns "\n" into "\r\n".
    assert!(
        said.starts_with("mmap-trace: tracing pid ") && said.ends_with("stop with Ctrl-C\r\n"),
        "the tracing line comes first, whole: {said:?}"
    );
    let lines: Vec<&str> = status.split(CLEAR_LINE).collect();
    let (last, drawn) = lines.split_last().unwrap();
    assert_eq!(*last, "", "cleared before exit: {stderr:?}");
    assert!(drawn.len() >= 2, "refreshed: {drawn:?}");
    for line in drawn {
        assert!(
            line.starts_with("mmap-trace: elapsed 0:0") && line.contains(" events, "),
            "{line:?}"
        );
        assert!(!line.contains('\n'), "one line, in place: {line:?}");
    }
    let end = drawn.last().unwrap();
    assert!(end.contains(", 0 lost, live "), "{end}");
}

#[test]
fn quiet_silences_the_status_line() {
    let _e2e = begin();
    let stderr = record_on_a_terminal(&["-q"]);
    assert!(!stderr.contains("elapsed"), "{stderr:?}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

#[test]
fn a_pipe_gets_no_status_line() {
    let _e2e = begin();
    let service = Waiting::start(&fixture("growth"), &["60"]);
    let report = scratch_path("piped.json");
    let pid = service.pid().to_string();
    let path = report.display().to_string();
    let run = mmap_trace(&["record", "--pid", &pid, "--duration", "1s", "-o", &path]);
    service.kill();
    std::fs::remove_file(&report).expect("remove the report");
    assert!(run.status.success(), "{}", run.stderr);
    assert!(!run.stderr.contains("elapsed"), "{:?}", run.stderr);
    assert!(!run.stderr.contains('\r'), "{:?}", run.stderr);
    assert_eq!(
        run.stderr,
        format!("mmap-trace: tracing pid {pid} (growth); stop with Ctrl-C\n")
    );
}
