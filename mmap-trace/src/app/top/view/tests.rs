use ratatui::{Terminal, backend::TestBackend, buffer::Buffer};

use super::*;
use crate::{
    app::top::model::{
        Screen,
        tests::{growing_book, moment},
    },
    report::Judging,
};

fn render(screen: &Screen, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, screen)).unwrap();
    terminal.backend().buffer().clone()
}

/// The screen's lines, without trailing blanks.
fn lines(buffer: &Buffer) -> Vec<String> {
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            let line: String = (0..area.width).map(|x| buffer[(x, y)].symbol()).collect();
            line.trim_end().to_owned()
        })
        .collect()
}

/// The one line that contains all of `words`, with where it is.
fn line_with(lines: &[String], words: &[&str]) -> (u16, String) {
    let found: Vec<(u16, &String)> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| words.iter().all(|w| line.contains(w)))
        .map(|(y, line)| (y as u16, line))
        .collect();
    assert_eq!(found.len(), 1, "{words:?} in:\n{}", lines.join("\n"));
    (found[0].0, found[0].1.clone())
}

/// A table row without its right border and the blanks before it.
fn inside(line: &str) -> &str {
    line.trim_end_matches('│').trim_end()
}

fn judged_screen() -> Screen {
    Screen::build(&growing_book(12), moment(), &Judging::default())
}

#[test]
fn the_verdict_the_processes_and_both_tables_fit_a_large_terminal() {
    let buffer = render(&judged_screen(), 120, 40);
    let lines = lines(&buffer);
    assert_eq!(
        lines[0],
        "mmap-trace top  elapsed 0:12  14 events (2/s)  5 lost  13 samples, every 1s"
    );
    let (_, verdict) = line_with(&lines, &["growing", "requester"]);
    assert_eq!(
        verdict.split_whitespace().collect::<Vec<_>>(),
        [
            "│growing",
            "requester",
            "+60.0",
            "MiB/min",
            "resident",
            "0.0",
            "s",
            "13.0",
            "MiB",
            "13.0",
            "MiB",
            "app",
            "│"
        ]
    );
    line_with(
        &lines,
        &["The traced processes' RSS does not grow (+0 B/min)."],
    );
    let (_, process) = line_with(&lines, &["50.0 MiB"]);
    assert_eq!(
        process.split_whitespace().collect::<Vec<_>>(),
        ["│", "7", "50.0", "MiB", "13.1", "MiB", "app", "│"]
    );
    let (requesters, _) = line_with(&lines, &["By requester"]);
    let (issuers, _) = line_with(&lines, &["By issuer"]);
    assert!(requesters < issuers);
    // Largest resident first; the flagged one in the growth colour.
    let app = &lines[requesters as usize + 2];
    assert_eq!(
        inside(app),
        "│  13.0 MiB    13.0 MiB    +60.0 MiB/min  app",
        "{app}"
    );
    let x = app.find("app").unwrap() as u16;
    assert_eq!(buffer[(x, requesters + 2)].fg, Color::Red);
    let other = &lines[requesters as usize + 3];
    assert_eq!(
        inside(other),
        "│  64.0 KiB    64.0 KiB         +0 B/min  other"
    );
    assert_eq!(buffer[(x, requesters + 3)].fg, Color::Reset);
    assert!(lines[issuers as usize + 2].contains("liba.so"));
    assert_eq!(lines[39], " q quit (tracing stops, everything is detached)");
}

#[test]
fn a_small_terminal_keeps_the_requesters_and_drops_the_issuers() {
    let lines = lines(&render(&judged_screen(), 80, 20));
    line_with(&lines, &["By requester"]);
    assert!(!lines.iter().any(|l| l.contains("By issuer")), "{lines:#?}");
    line_with(&lines, &["+60.0 MiB/min", "app"]);
}

#[test]
fn before_a_verdict_the_view_says_why() {
    let screen = Screen::build(&growing_book(2), moment(), &Judging::default());
    let lines = lines(&render(&screen, 120, 40));
    let (y, first) = line_with(&lines, &["growth cannot be judged yet"]);
    assert!(
        first.starts_with("│growth cannot be judged yet: 2.0 s and 3 samples"),
        "{first}"
    );
    assert!(
        lines[y as usize + 1].contains("(see --min-window)."),
        "{lines:#?}"
    );
}

#[test]
fn long_paths_keep_their_file_names() {
    assert_eq!(fit_left("/usr/lib/libfoo.so", 30), "/usr/lib/libfoo.so");
    assert_eq!(fit_left("/usr/lib/libfoo.so", 10), "…libfoo.so");
    assert_eq!(fit_left("/usr/lib/libfoo.so", 0), "");
    let mut screen = judged_screen();
    screen.requesters[0].object = format!("/opt/{}libdeep.so", "very/".repeat(30));
    let lines = lines(&render(&screen, 100, 40));
    let (_, row) = line_with(&lines, &["…", "libdeep.so"]);
    let tail = format!("{}/libdeep.so│", "/very".repeat(9));
    assert!(row.ends_with(&format!("+60.0 MiB/min  …{tail}")), "{row}");
    assert_eq!(row.chars().count(), 100, "the path fills its column");
}

#[test]
fn intervals_read_as_typed() {
    assert_eq!(interval(std::time::Duration::from_secs(1)), "1s");
    assert_eq!(interval(std::time::Duration::from_millis(250)), "250ms");
    assert_eq!(interval(std::time::Duration::from_millis(1500)), "1.5s");
}
