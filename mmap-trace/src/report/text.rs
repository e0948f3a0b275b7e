//! The human-readable report.

use std::fmt::Write as _;

use super::{FrameRow, ObjectRow, Report, StackRow};

/// Renders `report`, with at most `top_stacks` stacks.
pub fn render_text(report: &Report, top_stacks: usize) -> String {
    let mut out = String::new();
    header(&mut out, report);
    growing(&mut out, report);
    targets(&mut out, report);
    totals(&mut out, report);
    table(
        &mut out,
        "By issuer (the object that made the syscall)",
        &report.by_issuer,
    );
    table(
        &mut out,
        "By requester (the first object that is not libc, ld.so, an allocator or a memory hook)",
        &report.by_requester,
    );
    stacks(&mut out, report, top_stacks);
    out
}

fn header(out: &mut String, report: &Report) {
    let processes = report.targets.len();
    let _ = writeln!(
        out,
        "mmap-trace report: {processes} process{}, {:.3} s of events, {}; stopped by {}",
        if processes == 1 { "" } else { "es" },
        report.duration_s,
        unwinder_name(&report.unwinder),
        report.stopped_by,
    );
    if let Some(command) = &report.command {
        let _ = write!(out, "command: {}", command.join(" "));
        if let Some(status) = &report.command_status {
            let _ = write!(out, " ({status})");
        }
        out.push('\n');
    }
}

/// "Who is growing", first: the verdict.
fn growing(out: &mut String, report: &Report) {
    let flagged: Vec<_> = report.growth.iter().filter(|g| g.flagged).collect();
    if flagged.is_empty() {
        let _ = write!(out, "\nWho is growing: nothing grows steadily");
        if let Some(fastest) = report.growth.first().filter(|g| g.bytes_per_min > 0.0) {
            let _ = write!(
                out,
                " (fastest: {} {}, {}/min, fit r² {:.2})",
                fastest.role,
                basename(&fastest.object),
                bytes(fastest.bytes_per_min as u64),
                fastest.fit_r2
            );
        }
        out.push('\n');
        return;
    }
    let _ = writeln!(
        out,
        "\nWho is growing (live bytes, least-squares over the traced window)"
    );
    for row in flagged {
        let _ = writeln!(
            out,
            "  {:<9} {}  +{}/min (fit r² {:.2}), live {}, resident {}",
            row.role,
            row.object,
            bytes(row.bytes_per_min as u64),
            row.fit_r2,
            bytes(row.live_bytes.max(0) as u64),
            bytes(row.resident_bytes)
        );
        for hint in &row.hints {
            let _ = writeln!(out, "            try: {hint}");
        }
    }
}

fn unwinder_name(unwinder: &str) -> &str {
    match unwinder {
        "fp" => "frame-pointer stacks",
        "dwarf" => "CFI (DWARF) stacks",
        "auto" => "CFI stacks, frame pointers where there is no CFI",
        other => other,
    }
}

fn targets(out: &mut String, report: &Report) {
    if report.targets.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:>8}  {:<16} {:<8} {:>10}  EXE",
        "PID", "COMM", "STATE", "LIVE"
    );
    for target in &report.targets {
        let _ = writeln!(
            out,
            "{:>8}  {:<16} {:<8} {:>10}  {}",
            target.pid,
            target.comm,
            if target.exited { "exited" } else { "running" },
            bytes(target.live_bytes),
            target.exe.as_deref().unwrap_or("?"),
        );
    }
}

/// Resident memory at the last sample, and how much of it traced mappings
/// hold.
fn resident(out: &mut String, report: &Report) {
    let Some(last) = report.timeline.last() else {
        return;
    };
    for rss in &last.rss {
        let _ = writeln!(
            out,
            "rss:    pid {} at {:.1} s: {} ({} anonymous: {} in traced mappings, {} not)",
            rss.pid,
            last.time_s,
            bytes(rss.vm_rss),
            bytes(rss.rss_anon),
            bytes(rss.traced_resident),
            bytes(rss.unexplained_anon)
        );
    }
}

fn totals(out: &mut String, report: &Report) {
    let e = &report.events;
    let t = &report.totals;
    let _ = writeln!(
        out,
        "\nevents: {} mmap, {} munmap, {} mremap, {} brk, {} shmat, {} shmdt ({} failed); lost {} records, {} stacks unavailable, {} mapping records lost",
        e.mmap,
        e.munmap,
        e.mremap,
        e.brk,
        e.shmat,
        e.shmdt,
        e.failed,
        e.lost,
        e.stack_errors,
        e.lost_mapping_records
    );
    let _ = writeln!(
        out,
        "bytes:  mapped {}, unmapped {}, live {} in {} regions (an exited process's mappings count as live at exit)",
        bytes(t.mapped_bytes),
        bytes(t.unmapped_bytes),
        bytes(t.live_bytes),
        t.live_regions
    );
    let kinds = &t.live_by_kind;
    if kinds.brk > 0 || kinds.shm > 0 {
        let _ = writeln!(
            out,
            "        live by kind: mmap {}, brk heap {}, System V shm {}",
            bytes(kinds.mmap),
            bytes(kinds.brk),
            bytes(kinds.shm)
        );
    }
    let u = &report.unwinding;
    if u.in_kernel + u.from_copies > 0 {
        let _ = writeln!(
            out,
            "stacks: {} unwound in the kernel, {} from stack copies ({} unwind rules learned)",
            u.in_kernel, u.from_copies, u.rules_taught
        );
    }
    resident(out, report);
    if t.preexisting_bytes > 0 || t.unknown_unmapped_bytes > 0 {
        let _ = writeln!(
            out,
            "        mapped before tracing began {} (of which unmapped since {}); unmapped but never seen mapped {}",
            bytes(t.preexisting_bytes),
            bytes(t.preexisting_unmapped_bytes),
            bytes(t.unknown_unmapped_bytes)
        );
    }
    if e.lost > 0 {
        let _ = writeln!(
            out,
            "warning: {} records were lost; byte counts are incomplete (try a larger --buffer-size)",
            e.lost
        );
    }
}

fn table(out: &mut String, title: &str, rows: &[ObjectRow]) {
    let _ = writeln!(out, "\n{title}");
    let _ = writeln!(
        out,
        "{:>10} {:>8} {:>8} {:>10} {:>10}  OBJECT",
        "LIVE", "REGIONS", "CALLS", "MAPPED", "UNMAPPED"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:>10} {:>8} {:>8} {:>10} {:>10}  {}",
            bytes(row.live_bytes),
            row.live_regions,
            row.calls,
            bytes(row.mapped_bytes),
            bytes(row.unmapped_bytes),
            row.object
        );
    }
}

fn stacks(out: &mut String, report: &Report, top: usize) {
    let shown = report.stacks.len().min(top);
    let _ = writeln!(
        out,
        "\nTop {shown} of {} stacks, by live bytes",
        report.stacks.len()
    );
    for (i, stack) in report.stacks.iter().take(top).enumerate() {
        let _ = writeln!(
            out,
            "\n#{} live {} in {} regions; {}; mapped {}, unmapped {}",
            i + 1,
            bytes(stack.live_bytes),
            stack.live_regions,
            calls(stack),
            bytes(stack.mapped_bytes),
            bytes(stack.unmapped_bytes)
        );
        let _ = writeln!(
            out,
            "   issuer {}, requester {}",
            basename(&stack.issuer),
            basename(&stack.requester)
        );
        for (n, frame) in stack.frames.iter().enumerate() {
            frame_line(out, n, frame);
        }
        if stack.truncated {
            let _ = writeln!(
                out,
                "   ... the stack walk was lost here (code without frame pointers)"
            );
        }
    }
}

fn calls(stack: &StackRow) -> String {
    let mut parts = Vec::new();
    for (count, name) in [
        (stack.mmap_calls, "mmap"),
        (stack.munmap_calls, "munmap"),
        (stack.mremap_calls, "mremap"),
        (stack.brk_calls, "brk"),
        (stack.shm_calls, "shmat/shmdt"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {name}"));
        }
    }
    let mut text = parts.join(", ");
    if stack.failed_calls > 0 {
        let _ = write!(text, " ({} failed)", stack.failed_calls);
    }
    text
}

fn frame_line(out: &mut String, n: usize, frame: &FrameRow) {
    for inlined in frame.inlined.iter().rev() {
        let _ = writeln!(
            out,
            "   {:>3} {:>18}  {}{}  [inlined]",
            "",
            "",
            inlined.symbol,
            location(inlined.file.as_deref(), inlined.line)
        );
    }
    let symbol = match (&frame.symbol, frame.symbol_offset) {
        (Some(name), Some(offset)) => format!("{name}+{offset:#x}"),
        (Some(name), None) => name.clone(),
        (None, _) => "[unknown]".to_owned(),
    };
    let _ = writeln!(
        out,
        "   #{n:<2} {:#18x}  {symbol}{}  {}+{:#x}{}",
        frame.addr,
        location(frame.file.as_deref(), frame.line),
        basename(&frame.object),
        frame.offset,
        if frame.recovered {
            "  [from stack pointer]"
        } else {
            ""
        }
    );
}

fn location(file: Option<&str>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(file), Some(line)) => format!(" ({}:{line})", basename(file)),
        (Some(file), None) => format!(" ({})", basename(file)),
        _ => String::new(),
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Bytes in binary units: `512 B`, `12.0 KiB`, `3.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Events, SCHEMA, Target, Totals};

    #[test]
    fn byte_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
    }

    #[test]
    fn renders_every_section() {
        let report = Report {
            schema: SCHEMA,
            version: "0",
            command: Some(vec!["./lab".into(), "8".into()]),
            command_status: Some("exited with status 0".into()),
            stopped_by: "command exit".into(),
            duration_s: 0.25,
            unwinder: "fp".into(),
            unwinding: Default::default(),
            tracer: Default::default(),
            growth: vec![crate::report::GrowthRow {
                object: "/x/liblab.so".into(),
                role: "issuer",
                bytes_per_min: 3.0 * 1048576.0,
                fit_r2: 0.98,
                flagged: true,
                hints: vec!["set X=1".into()],
                ..Default::default()
            }],
            timeline: vec![],
            targets: vec![Target {
                pid: 42,
                parent_pid: None,
                comm: "lab".into(),
                exe: Some("/x/lab".into()),
                exited: true,
                live_bytes: 8192,
            }],
            events: Events {
                mmap: 3,
                lost: 2,
                ..Default::default()
            },
            totals: Totals {
                live_bytes: 8192,
                ..Default::default()
            },
            by_issuer: vec![ObjectRow {
                object: "/x/liblab.so".into(),
                calls: 3,
                live_bytes: 8192,
                live_regions: 2,
                ..Default::default()
            }],
            by_requester: vec![],
            stacks: vec![StackRow {
                issuer: "/x/liblab.so".into(),
                requester: "/x/lab".into(),
                mmap_calls: 3,
                calls: 3,
                live_bytes: 8192,
                frames: vec![FrameRow {
                    addr: 0x7f00,
                    object: "/x/liblab.so".into(),
                    offset: 0x1234,
                    symbol: Some("lab_grab".into()),
                    symbol_offset: Some(0x22),
                    file: Some("/src/liblab.c".into()),
                    line: Some(17),
                    recovered: true,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let text = render_text(&report, 10);
        assert!(
            text.contains("command: ./lab 8 (exited with status 0)"),
            "{text}"
        );
        assert!(text.contains("lost 2 records"), "{text}");
        assert!(text.contains("warning: 2 records were lost"), "{text}");
        assert!(text.contains("8.0 KiB        2        3"), "{text}");
        assert!(text.contains("issuer liblab.so, requester lab"), "{text}");
        assert!(
            text.contains("lab_grab+0x22 (liblab.c:17)  liblab.so+0x1234  [from stack pointer]"),
            "{text}"
        );
    }
}
